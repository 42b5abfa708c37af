import numpy as np
import pytest

from recommender import ExactIndex, Filters, HybridRanker
from recommender.ranking.hybrid import minmax, standout_weight


@pytest.fixture()
def vectors():
    rng = np.random.default_rng(0)
    return rng.normal(size=(200, 16)).astype(np.float32)


def test_search_matches_brute_force(vectors):
    index = ExactIndex(16)
    index.add(np.arange(150), vectors[:150])
    index.add(np.arange(150, 200), vectors[150:])
    assert index.ntotal == 200
    q = vectors[:3] + 0.01
    scores, ids = index.search(q, 5)
    normed = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    expected = np.argsort(-(qn @ normed.T), axis=1)[:, :5]
    np.testing.assert_array_equal(ids, expected)
    assert scores.dtype == np.float32 and (np.diff(scores, axis=1) <= 0).all()


def test_float64_query_does_not_upcast(vectors):
    index = ExactIndex(16)
    index.add(np.arange(len(vectors)), vectors)
    assert index.scores(vectors[0].astype(np.float64)).dtype == np.float32


def test_mask_and_padding(vectors):
    index = ExactIndex(16)
    index.add(np.arange(10), vectors[:10])
    mask = np.zeros(10, dtype=bool)
    mask[[2, 7]] = True
    scores, ids = index.search(vectors[0], 4, allow=mask)
    assert set(ids[0, :2]) == {2, 7}
    assert list(ids[0, 2:]) == [-1, -1] and np.isneginf(scores[0, 2:]).all()


def test_bad_vectors_are_refused():
    index = ExactIndex(4)
    with pytest.raises(ValueError, match="dimensions"):
        index.add(np.arange(2), np.ones((2, 3)))
    with pytest.raises(ValueError, match="NaN"):
        index.add(np.arange(1), np.array([[1, np.nan, 0, 0]]))


def test_weight_means_what_it_says():
    img = np.array([0.9, 0.5, 0.1, 0.3], dtype=np.float32)
    meta = np.array([0.0, 0.2, 0.8, 0.1], dtype=np.float32)
    ranker = HybridRanker()
    assert list(ranker.rank(img, meta, 4, weight=1.0).positions) == [0, 1, 3, 2]
    assert list(ranker.rank(img, meta, 4, weight=0.0).positions) == [2, 1, 3, 0]
    mid = ranker.rank(img, meta, 4, weight=0.5)
    np.testing.assert_allclose(mid.final, 0.5 * mid.image_norm + 0.5 * mid.metadata_norm)


def test_normalisation_is_over_candidates_only():
    x = np.array([10.0, 0.2, 0.4, 0.3], dtype=np.float32)
    cand = np.array([False, True, True, True])
    out = minmax(x, cand)
    assert out[2] == 1.0 and out[1] == 0.0  # the excluded outlier does not squash the others


def test_standout_weight_leans_to_the_side_that_can_tell_products_apart():
    rng = np.random.default_rng(1)
    flat = rng.uniform(0.40, 0.42, 50).astype(np.float32)  # every product about as close: no standout
    sharp = flat.copy()
    sharp[7] = 0.9  # one product clearly closer than the rest
    assert standout_weight(0.5, sharp, flat, 5) > 0.9  # the image side knows; the metadata side does not
    assert standout_weight(0.5, flat, sharp, 5) < 0.1
    assert standout_weight(0.5, sharp, sharp, 5) == pytest.approx(0.5)  # equal standouts keep the weight
    w = standout_weight(0.7, sharp, flat, 5)
    assert standout_weight(0.3, flat, sharp, 5) == pytest.approx(1 - w)  # the two sides are treated alike
    # The weight as given: 0 or 1, a missing side, k 0, fewer rows than k + 1.
    assert standout_weight(1.0, flat, sharp, 5) == 1.0 and standout_weight(0.0, sharp, flat, 5) == 0.0
    assert standout_weight(0.5, None, sharp, 5) == standout_weight(0.5, sharp, None, 5) == 0.5
    assert standout_weight(0.5, sharp, flat, 0) == 0.5 and standout_weight(0.5, sharp[:5], flat[:5], 5) == 0.5
    zeros = np.zeros(50, np.float32)  # nothing in common on either side: the floor keeps the prior
    assert standout_weight(0.6, zeros, zeros, 5) == pytest.approx(0.6)
    holes = sharp.copy()
    holes[:10] = np.nan  # rows a side has no score for are left out, never a NaN weight
    assert standout_weight(0.5, holes, flat, 5) == pytest.approx(standout_weight(0.5, sharp[10:], flat, 5))
    assert standout_weight(0.5, np.full(50, np.nan, np.float32), flat, 5) == 0.5


def test_missing_side_falls_back_to_the_other():
    meta = np.array([0.1, 0.9, 0.5], dtype=np.float32)
    r = HybridRanker(0.75).rank(None, meta, 3)
    assert r.weight == 0.0 and list(r.positions) == [1, 2, 0]
    assert np.isnan(r.image_raw).all()


def test_filters_never_leak(demo_catalog):
    items = demo_catalog.items
    rng = np.random.default_rng(1)
    ranker = HybridRanker()
    for _ in range(50):
        f = Filters(
            category=list(rng.choice(demo_catalog.values("category"), size=2, replace=False)),
            brand=list(rng.choice(demo_catalog.values("brand"), size=3, replace=False)) if rng.random() < .5 else None,
            price_max=float(rng.choice([20, 100, 1000])),
        )
        mask = f.mask(demo_catalog)
        r = ranker.rank(rng.random(len(items)), rng.random(len(items)), 89, mask)
        chosen = items.iloc[r.positions]
        assert len(chosen) == mask.sum()
        assert chosen["category"].isin(f.category).all()
        assert (chosen["price"] <= f.price_max).all()
        if f.brand:
            assert chosen["brand"].isin(f.brand).all()


def test_multi_value_and_price_filters(demo_catalog):
    pink = demo_catalog.items[Filters(colour=["PINK"]).mask(demo_catalog)]
    assert list(pink["id"]) == ["ultraboost-running-shoe"]  # colour "blue|pink", case-insensitive
    priced = Filters(price_min=100, price_max=200).mask(demo_catalog)
    prices = demo_catalog.items["price"][priced]
    assert len(prices) > 0 and prices.between(100, 200).all()


def test_upsert_and_remove_without_rebuild(vectors):
    index = ExactIndex(16)
    index.add(np.arange(10), vectors[:10])
    index.add(np.array([3]), vectors[50:51])  # replace id 3's vector
    scores, ids = index.search(vectors[50], 1)
    assert ids[0, 0] == 3 and scores[0, 0] == pytest.approx(1.0, abs=1e-5)
    index.remove(np.array([3, 999]))  # an absent id is ignored
    assert index.ntotal == 9
    _, ids = index.search(vectors[50], 10)
    assert 3 not in ids[0] and list(ids[0, 9:]) == [-1]
    index.add(np.array([20]), vectors[20:21])  # ids need not be contiguous
    assert index.ntotal == 10 and index.search(vectors[20], 1)[1][0, 0] == 20
