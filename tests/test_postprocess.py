"""The unsupervised embedding levers on small synthetic data whose answers can be checked by hand."""

import numpy as np
import pytest

from recommender.features.postprocess import (
    CatalogPostprocessor,
    PCAWhitening,
    average_query_expansion,
    build_feature_model,
    database_side_augmentation,
    flip_tta,
    knn,
)


def _deg(*angles):
    """Unit 2-D vectors at the given angles (degrees)."""
    a = np.deg2rad(np.asarray(angles, dtype=np.float64))
    return np.stack([np.cos(a), np.sin(a)], axis=1).astype(np.float32)


@pytest.fixture()
def correlated():
    rng = np.random.default_rng(0)
    mix = np.array([[3.0, 0.0, 0.0], [2.0, 1.0, 0.0], [0.5, 0.2, 0.1]])
    return (rng.normal(size=(2000, 3)) @ mix + [5.0, -2.0, 1.0]).astype(np.float32)


def test_whitening_decorrelates_and_equalises_variances(correlated):
    assert abs(np.corrcoef(correlated.T)[0, 1]) > 0.5  # clearly correlated to begin with
    w = PCAWhitening(power=0.5, eps=0.0).fit(correlated)
    z = ((correlated - w.mean_) @ w.components_.T) * w.scale_  # before the final L2 normalisation
    np.testing.assert_allclose(np.cov(z.T), np.eye(3), atol=1e-3)
    out = w.transform(correlated)
    assert out.dtype == np.float32 and out.shape == (2000, 3)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    c = np.corrcoef(out.T)
    assert np.abs(c[np.triu_indices(3, 1)]).max() < 0.1


def test_whitening_power_zero_is_a_rotation_of_the_centred_vectors(correlated):
    w = PCAWhitening(power=0.0).fit(correlated)
    centred = correlated - correlated.mean(0)
    centred /= np.linalg.norm(centred, axis=1, keepdims=True)
    out = w.transform(correlated)
    np.testing.assert_allclose(out @ out[:20].T, centred @ centred[:20].T, atol=1e-4)  # same cosines


def test_whitening_components_int_fraction_and_randomized_path(correlated):
    assert PCAWhitening(2).fit(correlated).transform(correlated).shape == (2000, 2)
    w = PCAWhitening(0.9).fit(correlated)
    assert w.explained_variance_ratio_.sum() >= 0.9 and w.explained_variance_ratio_[:-1].sum() < 0.9
    assert PCAWhitening(10).fit(correlated).n_components_ == 3  # capped at the rank
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 60)) * np.linspace(10, 1, 60)  # well-separated variances
    fast = PCAWhitening(5).fit(x)  # 5 < 60 // 4: randomized SVD
    exact = PCAWhitening(None).fit(x)
    np.testing.assert_allclose(fast.explained_variance_, exact.explained_variance_[:5], rtol=1e-3)
    np.testing.assert_allclose(np.abs(np.sum(fast.components_ * exact.components_[:5], 1)), 1.0, atol=1e-3)
    with pytest.raises(ValueError, match="identical"):
        PCAWhitening().fit(np.ones((5, 3)))
    with pytest.raises(ValueError, match="at least 2"):
        PCAWhitening().fit(np.ones((1, 3)))
    with pytest.raises(ValueError, match="n_components"):
        PCAWhitening(0).fit(correlated)


def test_knn_skips_self_and_breaks_ties_by_lower_id():
    x = _deg(0, 10, 90, 10)  # rows 1 and 3 identical
    scores, ids = knn(x, x, 2, self_ids=np.arange(4))
    assert ids.tolist() == [[1, 3], [3, 0], [1, 3], [1, 0]]
    np.testing.assert_allclose(scores[0], np.cos(np.deg2rad(10)), rtol=1e-6)
    _, ids = knn(x[:1], x, 4)
    assert ids.tolist() == [[0, 1, 3, 2]]  # without self_ids the query finds itself first


def test_dba_by_hand_moves_towards_neighbours_and_keeps_unit_norm():
    x = _deg(0, 10, 90)
    out = database_side_augmentation(x, k=1)
    # 0 deg and 10 deg are each other's neighbour -> both become 5 deg; 90 deg's neighbour is 10 deg -> 50 deg.
    np.testing.assert_allclose(out, _deg(5, 5, 50), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-6)
    x = _deg(0, 20, 30, 100, 115)
    out = database_side_augmentation(x, k=2, alpha=3.0)
    assert out[0] @ x[1] > x[0] @ x[1] and out[3] @ x[4] > x[3] @ x[4]
    np.testing.assert_allclose(database_side_augmentation(x, k=0), x, atol=1e-7)


def test_dba_alpha_weights_closer_neighbours_more():
    x = _deg(0, 10, 80)
    plain, weighted = database_side_augmentation(x, k=2), database_side_augmentation(x, k=2, alpha=3.0)
    # item 0: neighbours at 10 deg (cos .98) and 80 deg (cos .17); alpha pulls it less towards 80 deg.
    assert np.degrees(np.arctan2(weighted[0, 1], weighted[0, 0])) < np.degrees(np.arctan2(plain[0, 1], plain[0, 0]))
    w1, w2 = np.cos(np.deg2rad(10)) ** 3, np.cos(np.deg2rad(80)) ** 3
    expected = x[0] + w1 * x[1] + w2 * x[2]
    np.testing.assert_allclose(weighted[0], expected / np.linalg.norm(expected), atol=1e-6)


def test_average_query_expansion_by_hand():
    catalog = _deg(0, 20, 90)
    q = _deg(10)
    np.testing.assert_allclose(average_query_expansion(q, catalog, k=2), _deg(10), atol=1e-6)  # 10 + (0 + 20)
    np.testing.assert_allclose(average_query_expansion(q, catalog, k=0), q, atol=1e-7)
    # Item-to-item: item 0 is not expanded with itself, only with its nearest other item (20 deg).
    out = average_query_expansion(catalog, catalog, k=1, self_ids=np.arange(3))
    np.testing.assert_allclose(out[0], _deg(10)[0], atol=1e-6)
    np.testing.assert_allclose(out[2], _deg(55)[0], atol=1e-6)


def test_flip_tta_averages_the_mirror():
    def embed(pixels):  # a feature that sees left/right: mean intensity of each column
        return pixels.mean(axis=(1, 3)).astype(np.float32)

    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (3, 4, 5, 3)).astype(np.uint8)
    out = flip_tta(embed, imgs)
    a, b = embed(imgs), embed(imgs[:, :, ::-1])
    expected = a / np.linalg.norm(a, axis=1, keepdims=True) + b / np.linalg.norm(b, axis=1, keepdims=True)
    np.testing.assert_allclose(out, expected / np.linalg.norm(expected, axis=1, keepdims=True), rtol=1e-5)
    np.testing.assert_allclose(flip_tta(embed, imgs[:, :, ::-1]), out, rtol=1e-5)  # mirror-invariant
    symmetric = np.concatenate([imgs[:, :, :2], imgs[:, :, 2:3], imgs[:, :, 1::-1]], axis=2)
    e = embed(symmetric)
    np.testing.assert_allclose(flip_tta(embed, symmetric), e / np.linalg.norm(e, axis=1, keepdims=True), rtol=1e-5)


def test_catalog_postprocessor_chains_the_levers():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16))
    x = (np.repeat(centres, 25, axis=0) + 0.8 * rng.normal(size=(100, 16))).astype(np.float32)
    off = CatalogPostprocessor(whiten_components=0, dba_k=0, qe_k=0).fit(x)
    norm = x / np.linalg.norm(x, axis=1, keepdims=True)
    np.testing.assert_allclose(off.catalog_, norm, atol=1e-6)
    np.testing.assert_allclose(off.transform_queries(x[:3]), norm[:3], atol=1e-6)

    pp = CatalogPostprocessor(whiten_components=8, dba_k=3, qe_k=2).fit(x)
    assert pp.catalog_.shape == (100, 8)
    np.testing.assert_allclose(np.linalg.norm(pp.catalog_, axis=1), 1.0, rtol=1e-5)
    ids = np.arange(5)
    expected = average_query_expansion(pp.catalog_[ids], pp.catalog_, 2, 3.0, self_ids=ids)
    np.testing.assert_allclose(pp.transform_queries(self_ids=ids), expected, atol=1e-6)
    external = pp.transform_queries(x[:2])  # whitened, then expanded against the catalog
    assert external.shape == (2, 8)
    with pytest.raises(ValueError, match="self_ids"):
        pp.transform_queries()
    # On clustered data the chain keeps more same-cluster neighbours than plain cosine.
    labels = np.repeat(np.arange(4), 25)

    def p_at_5(catalog, queries):
        _, nn = knn(queries, catalog, 5, self_ids=np.arange(100))
        return (labels[nn] == labels[:, None]).mean()

    assert p_at_5(pp.catalog_, pp.transform_queries(self_ids=np.arange(100))) >= p_at_5(norm, norm)


def test_build_feature_model_grid_pooling_by_hand():
    import keras

    inp = keras.Input((4, 4, 2))
    feat = keras.layers.Identity(name="feat")(inp)
    model = keras.Model(inp, keras.layers.GlobalAveragePooling2D()(feat))
    x = np.arange(2 * 4 * 4 * 2, dtype=np.float32).reshape(2, 4, 4, 2) + 1.0

    def norm(v):
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    out = np.asarray(build_feature_model(model, ("feat",), grid=2, pooling="avg")(x))
    cells = [x[:, a:a + 2, b:b + 2].mean(axis=(1, 2)) for a in (0, 2) for b in (0, 2)]
    np.testing.assert_allclose(out, norm(np.concatenate(cells, axis=1)), rtol=1e-5)
    # grid 3 on a 4 x 4 map: overlapping bins [0,2) [1,3) [2,4), as in adaptive pooling.
    out = np.asarray(build_feature_model(model, ("feat",), grid=3, pooling="max")(x))
    cells = [x[:, a:a + 2, b:b + 2].max(axis=(1, 2)) for a in (0, 1, 2) for b in (0, 1, 2)]
    np.testing.assert_allclose(out, norm(np.concatenate(cells, axis=1)), rtol=1e-5)
    # GeM with p = 1 is the mean; grid 1 is global pooling; two taps are concatenated, each normalised.
    gem = np.asarray(build_feature_model(model, ("feat",), grid=1, pooling="gem", gem_p=1.0)(x))
    np.testing.assert_allclose(gem, norm(x.mean(axis=(1, 2))), rtol=1e-5)
    two = np.asarray(build_feature_model(model, ("feat", "feat"), grid=1)(x))
    np.testing.assert_allclose(np.linalg.norm(two, axis=1), np.sqrt(2), rtol=1e-5)
    with pytest.raises(ValueError, match="pooling"):
        build_feature_model(model, ("feat",), pooling="median")
