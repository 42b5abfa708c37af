"""The opt-in label projection: its contract, no leak of a query's own label, and its gain."""

import numpy as np
import pytest
from sklearn.base import clone

from recommender import HybridRecommender, RecommenderError
from recommender.evaluation.protocols import leave_one_out
from recommender.features.projection import LabelProjection, out_of_fold_similarity


@pytest.fixture(scope="module")
def projected(demo_recommender, demo_catalog):
    """The demo recommender's cached embeddings with a projection on sub_category."""
    return HybridRecommender(backbone="efficientnet_lite0", cache_dir=demo_recommender.cache_dir,
                             label_projection="sub_category").fit(demo_catalog)


def test_projection_contract_on_demo_vectors(demo_recommender, demo_catalog):
    X = demo_recommender.image_vectors_
    y = demo_catalog.items["sub_category"].to_numpy()
    proj = LabelProjection(mix=0.5)
    assert not hasattr(proj, "classifier_") and proj.fit(X, y) is proj
    assert clone(proj).get_params()["mix"] == 0.5
    n_labels = len(set(y))
    Z = proj.transform(np.vstack([X[:3], np.zeros((1, X.shape[1]), np.float32)]))
    assert Z.shape == (4, X.shape[1] + n_labels) and Z.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(Z[:3], axis=1), 1.0, rtol=1e-5)
    assert not Z[3].any()  # a product without an image stays without an image vector
    # The label block is the square root of a probability distribution, weighted by √mix.
    np.testing.assert_allclose((Z[:3, X.shape[1]:] ** 2).sum(axis=1), 0.5, rtol=1e-4)
    with pytest.raises(ValueError, match="at least two labels"):
        LabelProjection().fit(X[:5], ["Footwear"] * 5)
    with pytest.raises(ValueError, match="mix"):
        LabelProjection(mix=1.5).fit(X, y)


def test_out_of_fold_rows_never_see_their_own_label(demo_recommender, demo_catalog):
    """Relabel one product: its out-of-fold row does not move (its fold is fitted without it);
    a projection fitted on every label would move it."""
    X = demo_recommender.image_vectors_
    y = demo_catalog.items["sub_category"].to_numpy().astype(object)
    i = demo_catalog.position("tennis-ball")
    lied = y.copy()
    lied[i] = "Footwear" if y[i] != "Footwear" else "Equipment"
    proj = LabelProjection()
    honest = out_of_fold_similarity(proj, X, y, X, X, folds=5)
    relabelled = out_of_fold_similarity(proj, X, lied, X, X, folds=5)
    np.testing.assert_allclose(relabelled[i], honest[i], atol=1e-6)
    assert np.abs(relabelled - honest).max() > 1e-3  # other folds did learn the new label
    in_sample = [clone(proj).fit(X, labels).transform(X[i:i + 1]) for labels in (y, lied)]
    assert np.abs(in_sample[0] - in_sample[1]).max() > 1e-3


def test_projection_raises_same_kind_precision_out_of_fold(projected, demo_catalog):
    """Measured out of fold (calibrated scores, DBA off): image-only P@5 .661 -> .724, hybrid w = .7
    P@5 .685 -> .742, P@1 .876 -> .899."""
    loo = leave_one_out(demo_catalog, "sub_category", ks=(1, 5), weights=(0.7,), recommender=projected)
    assert "label projection 'sub_category' 0.5" in loo["image_pipeline"]
    r = loo["results"]
    assert r["image"]["P@5"] >= 0.71 and r["hybrid_w0.7"]["P@5"] >= 0.73 and r["hybrid_w0.7"]["P@1"] >= 0.88


def test_projected_recommender_serves_items_and_uploads(projected, demo_catalog):
    n_labels = demo_catalog.items["sub_category"].nunique()
    assert projected.image_vectors_.shape == (89, 1280 + 1000 + n_labels)
    shoe = demo_catalog.position("freerun-running-shoe")
    res = projected.recommend(item="freerun-running-shoe", k=3)
    assert all(demo_catalog.items["sub_category"].iat[r.position] == "Footwear" for r in res.items)
    upload = projected.recommend(image=demo_catalog.image_path(shoe), k=1, weight=1.0)
    assert upload.ids == ["freerun-running-shoe"]


def test_projection_on_a_missing_or_useless_column_is_a_clear_error(demo_catalog, demo_recommender):
    with pytest.raises(RecommenderError, match="column 'genre' is not in the catalog"):
        HybridRecommender(cache_dir=demo_recommender.cache_dir, label_projection="genre").fit(demo_catalog)
    items = demo_catalog.items.assign(shelf="A")
    from recommender.catalog.loader import catalog_from_frame

    one_label = catalog_from_frame(items, demo_catalog.root, demo_catalog.source)
    with pytest.raises(RecommenderError, match="label projection on 'shelf': .*at least two labels"):
        HybridRecommender(cache_dir=demo_recommender.cache_dir, label_projection="shelf").fit(one_label)
