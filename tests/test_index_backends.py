"""Every VectorIndex backend against the exact scan: recall, filters, upsert/remove/growth, persistence, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recommender.index.exact import ExactIndex
from recommender.index.factory import AUTO_EXACT_MAX, index_kinds, make_index, register_backend, resolve_kind
from recommender.index.hnsw import HNSWIndex
from recommender.index.persist import load_index, save_index
from recommender.index.reduce import PCAReducer

BACKENDS = ["exact", "hnsw", "ivf"]
K = 10


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    pairs = zip(found, truth, strict=True)
    return float(np.mean([len(set(f[f >= 0]) & set(t[t >= 0])) / max(1, (t >= 0).sum()) for f, t in pairs]))


@pytest.fixture(scope="module")
def clustered():
    """3,000 vectors in 40 clusters (48-d): neighbourhoods like CNN embeddings', unlike uniform noise."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((40, 48)).astype(np.float32)
    x = centres[rng.integers(0, 40, 3000)] + 0.6 * rng.standard_normal((3000, 48)).astype(np.float32)
    q = centres[rng.integers(0, 40, 60)] + 0.6 * rng.standard_normal((60, 48)).astype(np.float32)
    return x, q


@pytest.fixture(scope="module")
def real_tiled(demo_recommender):
    """The demo catalog's real 2280-d image vectors, tiled with small noise to 2,670 rows (30 copies)."""
    base = demo_recommender.image_vectors_
    rng = np.random.default_rng(1)
    x = np.tile(base, (30, 1)) + 0.01 * rng.standard_normal((30 * len(base), base.shape[1])).astype(np.float32)
    return x.astype(np.float32), base[:40] + 0.01 * rng.standard_normal((40, base.shape[1])).astype(np.float32)


def built(kind: str, x: np.ndarray, ids: np.ndarray | None = None):
    index = make_index(kind, x.shape[1], len(x))
    index.add(np.arange(len(x)) if ids is None else ids, x)
    return index


def exact_ids(x, q, allow=None, k=K):
    return built("exact", x).search(q, k, allow)[1]


@pytest.mark.parametrize("kind", BACKENDS)
def test_matches_exact_top_k(kind, clustered):
    x, q = clustered
    truth = exact_ids(x, q)
    scores, ids = built(kind, x).search(q, K)
    assert ids.shape == (len(q), K) and ids.dtype == np.int64 and scores.dtype == np.float32
    assert recall(ids, truth) >= (1.0 if kind == "exact" else 0.95)
    assert np.all(np.diff(scores, axis=1) <= 1e-6), "best first"


@pytest.mark.parametrize("kind", BACKENDS)
def test_matches_exact_on_real_cnn_vectors(kind, real_tiled):
    x, q = real_tiled
    scores, ids = built(kind, x).search(q, K)
    assert recall(ids, exact_ids(x, q)) >= (1.0 if kind == "exact" else 0.95)
    # The score is the cosine: recompute it from the vectors.
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    np.testing.assert_allclose(scores[:, 0], np.sum(qn * xn[ids[:, 0]], axis=1), atol=1e-4)


@pytest.mark.parametrize("kind", BACKENDS)
@pytest.mark.parametrize("share", [0.5, 0.1, 0.01, 0.001])
def test_allow_mask_is_honoured_and_recall_holds(kind, share, clustered):
    x, q = clustered
    rng = np.random.default_rng(7)
    allow = rng.random(len(x)) < share
    index = built(kind, x)
    _, ids = index.search(q, K, allow)
    assert allow[ids[ids >= 0]].all(), "a disallowed id was returned"
    truth = exact_ids(x, q, allow)
    assert ((ids >= 0).sum(1) == (truth >= 0).sum(1)).all(), "as many results as the filter allows"
    assert recall(ids, truth) >= (1.0 if kind == "exact" else 0.95)


def test_hnsw_filter_inside_the_graph_walk_keeps_recall(clustered):
    # exact_below=0 / exact_share=0 forces the filtered graph search (no exact fallback) for a 10% filter.
    x, q = clustered
    allow = np.random.default_rng(8).random(len(x)) < 0.10
    index = HNSWIndex(x.shape[1], len(x), exact_below=0, exact_share=0.0)
    index.add(np.arange(len(x)), x)
    _, ids = index.search(q, K, allow)
    assert allow[ids[ids >= 0]].all()
    assert recall(ids, exact_ids(x, q, allow)) >= 0.95


@pytest.mark.parametrize("kind", BACKENDS)
@pytest.mark.parametrize("n_denied", [1, 16, 17])
def test_allow_mask_denying_a_few_ids_drops_them_and_keeps_recall(kind, n_denied, clustered):
    # "More like this" denies only the query item: HNSW searches unfiltered for k + denied and drops them
    # (up to FEW_DENIED = 16 ids); 17 takes the bitmap path. Each query's own nearest rows are the denied ones.
    x, q = clustered
    index = built(kind, x)
    nearest = exact_ids(x, q, k=n_denied)
    for row in range(len(q)):
        allow = np.ones(len(x), bool)
        allow[nearest[row]] = False
        scores, ids = index.search(q[row:row + 1], K, allow)
        assert not set(ids[0]) & set(nearest[row]), "a denied id was returned"
        assert (ids[0] >= 0).all() and np.all(np.diff(scores[0]) <= 1e-6)
        assert recall(ids, exact_ids(x, q[row:row + 1], allow)) >= (1.0 if kind == "exact" else 0.9)


@pytest.mark.parametrize("kind", BACKENDS)
def test_allow_mask_shorter_than_the_ids_disallows_the_rest(kind, clustered):
    x, q = clustered
    _, ids = built(kind, x).search(q, K, np.ones(100, bool))
    assert (ids < 100).all()
    _, ids = built(kind, x).search(q, K, np.zeros(len(x), bool))
    assert (ids == -1).all()


@pytest.mark.parametrize("kind", BACKENDS)
def test_upsert_replaces_remove_drops_and_growth_needs_no_rebuild(kind, clustered):
    x, q = clustered
    index = make_index(kind, x.shape[1], 100)  # far below what is added: must grow
    index.add(np.arange(len(x)), x)
    assert index.ntotal == len(x)
    # Upsert: id 5 now holds the query's own vector, so it is that query's top hit.
    index.add(np.array([5]), q[:1])
    assert index.ntotal == len(x)
    scores, ids = index.search(q[:1], K)
    assert ids[0, 0] == 5 and scores[0, 0] == pytest.approx(1.0, abs=1e-4)
    # Remove: never returned again, absent ids ignored, count follows.
    index.remove(np.array([5, 5, 10**9, -3]))
    assert index.ntotal == len(x) - 1
    assert 5 not in index.search(q, 50)[1]
    # Re-adding a removed id brings it back; new ids far beyond the old range grow the index.
    index.add(np.array([5, 50_000]), np.stack([q[0], q[1]]))
    assert index.ntotal == len(x) + 1
    assert index.search(q[:2], 1)[1].ravel().tolist() == [5, 50_000]
    # Everything still matches the exact answer over the same contents.
    ref = make_index("exact", x.shape[1])
    ref.add(np.arange(len(x)), x)
    ref.add(np.array([5, 50_000]), np.stack([q[0], q[1]]))
    assert recall(index.search(q, K)[1], ref.search(q, K)[1]) >= (1.0 if kind == "exact" else 0.95)


@pytest.mark.parametrize("kind", BACKENDS)
def test_repeated_id_in_one_add_keeps_the_last_vector(kind, clustered):
    x, q = clustered
    index = make_index(kind, x.shape[1])
    index.add(np.array([1, 2, 1]), np.stack([x[0], x[1], q[0]]))
    assert index.ntotal == 2
    assert index.search(q[:1], 1)[1][0, 0] == 1
    atol = 1e-3 if kind == "ivf" else 1e-6  # the inverted file stores float16 codes
    np.testing.assert_allclose(index.get_vectors(np.array([1]))[0], q[0] / np.linalg.norm(q[0]), atol=atol)


@pytest.mark.parametrize("kind", BACKENDS)
def test_k_beyond_the_live_count_pads_with_minus_inf_and_minus_one(kind, clustered):
    x, q = clustered
    index = built(kind, x[:7])
    scores, ids = index.search(q[:3], 12)
    assert ids.shape == (3, 12)
    assert (ids[:, :7] >= 0).all() and (ids[:, 7:] == -1).all()
    assert np.isinf(scores[:, 7:]).all() and (scores[:, 7:] < 0).all()
    assert sorted(ids[0, :7]) == list(range(7))
    empty = make_index(kind, x.shape[1])
    assert (empty.search(q[:2], 3)[1] == -1).all()
    assert empty.search(q[:2], 0)[1].shape == (2, 0)


@pytest.mark.parametrize("kind", BACKENDS)
@pytest.mark.parametrize(
    "bad",
    [
        lambda x, index: index.add(np.arange(3), x[:3, :5]),  # wrong dim
        lambda x, index: index.add(np.arange(3), np.where(np.arange(48) == 0, np.nan, x[:3])),  # NaN
        lambda x, index: index.add(np.arange(3), np.full((3, 48), np.inf, np.float32)),  # inf
        lambda x, index: index.add(np.array([0, -1, 2]), x[:3]),  # negative id
        lambda x, index: index.add(np.array([0, 1]), x[:3]),  # count mismatch
        lambda x, index: index.add(np.array([0.5, 1, 2]), x[:3]),  # non-integer id
        lambda x, index: index.add(np.arange(3), np.array([["a"] * 48] * 3)),  # not numbers
        lambda x, index: index.search(x[:1, :5], 3),  # query dim
        lambda x, index: index.search(np.full((1, 48), np.nan, np.float32), 3),  # NaN query
        lambda x, index: index.search(x[:1], -1),  # negative k
        lambda x, index: index.search(x[:1], 2.5),  # non-integer k
        lambda x, index: index.search(x[:1], 3, np.arange(10)),  # allow not boolean
    ],
)
def test_bad_input_is_a_value_error_and_changes_nothing(kind, bad, clustered):
    x, _ = clustered
    index = built(kind, x[:20])
    before = index.search(x[:2], 5)
    with pytest.raises(ValueError):
        bad(x, index)
    assert index.ntotal == 20
    after = index.search(x[:2], 5)
    np.testing.assert_array_equal(before[1], after[1])


@pytest.mark.parametrize("kind", BACKENDS)
def test_save_load_round_trip(kind, clustered, tmp_path):
    x, q = clustered
    index = built(kind, x)
    index.remove(np.arange(0, 300, 3))
    allow = np.random.default_rng(2).random(len(x)) < 0.2
    before = [index.search(q, K), index.search(q, K, allow)]
    path = save_index(index, tmp_path, "catalog-abc123")
    assert path == tmp_path / "catalog-abc123" and not list(tmp_path.glob(".*"))
    loaded = load_index(tmp_path, "catalog-abc123", kind=kind, dim=x.shape[1])
    assert type(loaded) is type(index) and loaded.ntotal == index.ntotal
    for (s0, i0), (s1, i1) in zip(before, [loaded.search(q, K), loaded.search(q, K, allow)], strict=True):
        np.testing.assert_array_equal(i0, i1)
        np.testing.assert_allclose(s0, s1, atol=1e-6)
    # The loaded index keeps working: upsert and growth.
    loaded.add(np.array([0, 9000]), q[:2])
    assert loaded.search(q[:2], 1)[1].ravel().tolist() == [0, 9000]
    # Saving again under the same key replaces the old save atomically.
    save_index(loaded, tmp_path, "catalog-abc123")
    assert load_index(tmp_path, "catalog-abc123").ntotal == loaded.ntotal


def test_load_is_a_miss_for_absent_other_or_corrupt_saves(clustered, tmp_path):
    x, _ = clustered
    save_index(built("hnsw", x[:500]), tmp_path, "k")
    assert load_index(tmp_path, "absent") is None
    assert load_index(tmp_path, "k", kind="exact") is None
    assert load_index(tmp_path, "k", dim=7) is None
    manifest = tmp_path / "k" / "manifest.json"
    meta = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**meta, "ntotal": 499}))  # manifest disagrees with the index
    assert load_index(tmp_path, "k") is None
    manifest.write_text(json.dumps({**meta, "kind": "no-such-kind"}))
    assert load_index(tmp_path, "k") is None
    manifest.write_text(json.dumps(meta))
    (tmp_path / "k" / "hnsw.faiss").write_bytes(b"\0" * 64)  # truncated graph file
    assert load_index(tmp_path, "k") is None
    manifest.write_text("{not json")
    assert load_index(tmp_path, "k") is None


@pytest.mark.parametrize("key", ["../escape", "a/b", "", ".hidden", "x" * 200, "..", "a\0b", None])
def test_hostile_keys_are_refused(key, tmp_path):
    index = make_index("exact", 4)
    with pytest.raises(ValueError, match="index key"):
        save_index(index, tmp_path / "inner", key)
    with pytest.raises(ValueError, match="index key"):
        load_index(tmp_path / "inner", key)
    assert not (tmp_path / "escape").exists() and list(tmp_path.rglob("*")) == []


def test_make_index_kinds():
    assert isinstance(make_index("exact", 8), ExactIndex)
    assert isinstance(make_index("hnsw", 8), HNSWIndex)
    assert isinstance(make_index("auto", 8, AUTO_EXACT_MAX - 1), ExactIndex)
    assert isinstance(make_index("auto", 8, AUTO_EXACT_MAX), HNSWIndex)
    assert resolve_kind("auto", 10**6) == "hnsw"
    with pytest.raises(ValueError, match="auto, exact, hnsw"):
        make_index("annoy", 8)
    with pytest.raises(ValueError):
        make_index("exact", 0)
    assert index_kinds()[:3] == ("auto", "exact", "hnsw")


def test_register_backend_makes_a_kind_buildable_and_loadable(tmp_path):
    class Exact2(ExactIndex):
        kind = "exact2-test"

    register_backend("exact2-test", Exact2)
    index = make_index("exact2-test", 4)
    index.add(np.arange(3), np.eye(3, 4, dtype=np.float32))
    save_index(index, tmp_path, "k")
    assert type(load_index(tmp_path, "k")) is Exact2
    with pytest.raises(ValueError):
        register_backend("auto", Exact2)


def test_pca_reducer_keeps_the_neighbours_of_real_vectors(real_tiled, tmp_path):
    x, q = real_tiled
    reducer = PCAReducer(64).fit(x)
    assert reducer.components_.shape == (64, x.shape[1]) and 0.5 < reducer.explained_ <= 1.0
    # The 30 noisy copies of a product differ only by noise, which a projection drops on purpose: compare which
    # *products* (row % 89) the top-10 holds, in the full and the reduced space.
    n_products = len(x) // 30
    truth = exact_ids(x, q) % n_products
    reduced = exact_ids(reducer.transform(x), reducer.transform(q)) % n_products
    assert np.mean([np.isin(r, t).mean() for r, t in zip(reduced, truth, strict=True)]) >= 0.9
    reducer.save(tmp_path / "pca.npy")
    np.testing.assert_array_equal(PCAReducer.load(tmp_path / "pca.npy").transform(q), reducer.transform(q))
    with pytest.raises(ValueError):
        reducer.transform(q[:, :10])
    with pytest.raises(ValueError):
        PCAReducer(8).fit(np.full((4, 16), np.nan))
    assert PCAReducer(100).fit(x[:, :32]).transform(x[:2, :32]).shape == (2, 32)  # nothing to reduce


def test_hnsw_tombstones_are_never_returned_and_compact_keeps_the_answers(clustered, tmp_path):
    x, q = clustered
    index = HNSWIndex(x.shape[1])
    index.add(np.arange(len(x)), x)
    index.add(np.arange(0, 1000), x[1000:2000])  # 1,000 upserts: 1,000 tombstoned slots
    index.remove(np.arange(1000, 1500))
    assert index.ntotal == len(x) - 500 and index.n_tombstones == 1500
    ref = make_index("exact", x.shape[1])
    ref.add(np.arange(len(x)), x)
    ref.add(np.arange(0, 1000), x[1000:2000])
    ref.remove(np.arange(1000, 1500))
    before = index.search(q, K)
    assert not np.isin(before[1], np.arange(1000, 1500)).any()
    for allow in (np.ones(len(x), bool), np.arange(len(x)) < 1600):  # graph walk with bitmap; exact scan
        _, ids = index.search(q, K, allow)
        assert not np.isin(ids, np.arange(1000, 1500)).any() and allow[ids[ids >= 0]].all()
    assert recall(before[1], ref.search(q, K)[1]) >= 0.95
    index.compact()
    assert index.n_tombstones == 0 and index.ntotal == len(x) - 500
    assert recall(index.search(q, K)[1], ref.search(q, K)[1]) >= 0.95
    np.testing.assert_allclose(index.get_vectors(np.array([3])), ref.get_vectors(np.array([3])), atol=1e-6)


def test_hnsw_float16_storage_keeps_recall_and_scores(clustered):
    x, q = clustered
    half = HNSWIndex(x.shape[1], storage="float16")
    half.add(np.arange(len(x)), x)
    scores, ids = half.search(q, K)
    assert recall(ids, exact_ids(x, q)) >= 0.95
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    np.testing.assert_allclose(scores[:, 0], np.sum(qn * xn[ids[:, 0]], axis=1), atol=2e-3)
    with pytest.raises(ValueError, match="storage"):
        HNSWIndex(4, storage="int3")
