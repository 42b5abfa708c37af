"""The ANN over a PCA-reduced copy (``hnsw_pca``): candidates that re-score to the exact answer, in less memory."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest

import recommender.querying as querying
from recommender import HybridRecommender
from recommender.index import reduced
from recommender.index.factory import AUTO_EXACT_MAX, make_index, resolve_kind
from recommender.index.hnsw import HNSWIndex
from recommender.index.persist import load_index, save_index
from recommender.index.reduced import ReducedHNSWIndex, ReducedIVFIndex
from recommender.ranking.filters import Filters
from recommender.store.vector_file import BFLOAT16
from tests.conftest import DEMO_DIR

K = 10


@pytest.fixture(scope="module")
def real_tiled(demo_recommender):
    """The demo's real 2280-d image vectors tiled with noise (a copy's cosine to its original ~.95) to 2,670 rows."""
    base = demo_recommender.image_vectors_
    rng = np.random.default_rng(3)
    x = np.tile(base, (30, 1)) + 0.005 * rng.standard_normal((30 * len(base), base.shape[1])).astype(np.float32)
    q = base[:40] + 0.005 * rng.standard_normal((40, base.shape[1])).astype(np.float32)
    return x.astype(np.float32), q.astype(np.float32)


@pytest.fixture(scope="module")
def saved(real_tiled, tmp_path_factory):
    """One reduced index over ``real_tiled`` (the PCA fit is the slow part: ~10 s), saved for cheap clones."""
    x, _ = real_tiled
    index = make_index("hnsw_pca", x.shape[1], len(x))
    index.add(np.arange(len(x)), x)
    folder = tmp_path_factory.mktemp("reduced")
    save_index(index, folder, "base")
    return folder


def fresh(saved) -> ReducedHNSWIndex:
    """A private copy of the module's index (tests mutate it)."""
    return load_index(saved, "base", kind="hnsw_pca")


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def exact_top(x, q, k=K, allow=None):
    s = unit(q) @ unit(x).T
    if allow is not None:
        s[:, ~allow] = -np.inf
    ids = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.where(np.take_along_axis(s, ids, 1) > -np.inf, ids, -1)


def rescored(x, q, ids, k=K):
    """The caller's step: re-score the index's candidates with the full vectors."""
    out = []
    for row, cand in zip(unit(q), ids, strict=True):
        cand = cand[cand >= 0]
        out.append(cand[np.argsort(-(unit(x[cand]) @ row), kind="stable")[:k]])
    return out


def recall(found, truth) -> float:
    return float(np.mean([len(set(f) & set(t[t >= 0])) / max(1, (t >= 0).sum()) for f, t in zip(found, truth,
                                                                                                  strict=True)]))


def test_reduced_candidates_rescore_to_the_exact_top_k(real_tiled, saved):
    x, q = real_tiled
    index = fresh(saved)
    assert isinstance(index, ReducedHNSWIndex) and index.reduced_dim == 256 and index.inner_.storage == "float16"
    assert index.ntotal == len(x)
    scores, ids = index.search(q, 100)
    assert np.all(np.diff(scores, axis=1) <= 1e-5), "best first"
    assert recall(rescored(x, q, ids), exact_top(x, q)) >= 0.99
    # Its own scores are cosines in the reduced space: close to the full ones, not equal.
    full = np.sum(unit(q) * unit(x[ids[:, 0]]), axis=1)
    assert np.abs(scores[:, 0] - full).max() < 0.1


@pytest.mark.parametrize("share", [0.1, 0.01])
def test_filters_are_applied_inside_the_search(real_tiled, saved, share):
    x, q = real_tiled
    allow = np.random.default_rng(5).random(len(x)) < share
    index = fresh(saved)
    _, ids = index.search(q, 100, allow)
    assert allow[ids[ids >= 0]].all()
    assert recall(rescored(x, q, ids), exact_top(x, q, allow=allow)) >= 0.97


def test_upsert_remove_and_growth(real_tiled, saved):
    x, q = real_tiled
    index = fresh(saved)
    index.add(np.array([7]), q[:1])  # id 7 now holds the first query's vector
    assert index.search(q[:1], 1)[1][0, 0] == 7 and index.ntotal == len(x)
    index.remove(np.array([7, 10**9]))
    assert 7 not in index.search(q, 50)[1] and index.ntotal == len(x) - 1
    index.add(np.array([50_000]), q[1:2])  # an id far beyond the range grows the index
    assert index.search(q[1:2], 1)[1][0, 0] == 50_000


def test_a_small_first_add_keeps_the_full_vectors(real_tiled):
    x, q = real_tiled
    index = ReducedHNSWIndex(x.shape[1])
    index.add(np.arange(50), x[:50])
    assert index.reduced_dim == x.shape[1]  # nothing to estimate a subspace from: plain HNSW
    _, ids = index.search(q[:5], 3)
    np.testing.assert_array_equal(ids, exact_top(x[:50], q[:5], 3))
    empty = ReducedHNSWIndex(16)
    assert (empty.search(np.ones((2, 16)), 3)[1] == -1).all() and empty.ntotal == 0


@pytest.mark.parametrize("bad", [
    lambda x, index: index.add(np.arange(3), x[:3, :5]),
    lambda x, index: index.add(np.arange(3), np.where(np.arange(x.shape[1]) == 0, np.nan, x[:3])),
    lambda x, index: index.add(np.array([0, -1, 2]), x[:3]),
    lambda x, index: index.search(x[:1, :5], 3),
    lambda x, index: index.search(x[:1], -1),
    lambda x, index: index.search(x[:1], 3, np.arange(10)),
])
def test_bad_input_is_a_value_error_and_changes_nothing(real_tiled, saved, bad):
    x, q = real_tiled
    index = fresh(saved)
    before = index.search(q[:3], 5)[1]
    with pytest.raises(ValueError):
        bad(x, index)
    assert index.ntotal == len(x)
    np.testing.assert_array_equal(index.search(q[:3], 5)[1], before)


def test_save_load_round_trip_and_a_corrupt_projection_is_a_miss(real_tiled, saved, tmp_path):
    x, q = real_tiled
    index = fresh(saved)
    assert type(index) is ReducedHNSWIndex and index.reduced_dim == 256 and index.ntotal == len(x)
    index.remove(np.arange(0, 300, 3))
    before = index.search(q, K)
    save_index(index, tmp_path, "catalog-1")
    loaded = load_index(tmp_path, "catalog-1", kind="hnsw_pca", dim=x.shape[1])
    assert type(loaded) is ReducedHNSWIndex and loaded.ntotal == index.ntotal
    after = loaded.search(q, K)
    np.testing.assert_array_equal(before[1], after[1])
    np.testing.assert_allclose(before[0], after[0], atol=1e-6)
    np.save(tmp_path / "catalog-1" / "projection.npy", np.zeros((256, 7), np.float32))  # wrong width
    assert load_index(tmp_path, "catalog-1") is None


def test_auto_reduces_wide_vectors_only_at_ann_sizes():
    assert resolve_kind("auto", AUTO_EXACT_MAX - 1, 2280) == "exact"
    assert resolve_kind("auto", AUTO_EXACT_MAX, 2280) == "ivf_pca"
    assert resolve_kind("auto", AUTO_EXACT_MAX, 256) == "hnsw"
    assert isinstance(make_index("auto", 2280, AUTO_EXACT_MAX), ReducedIVFIndex)
    assert isinstance(make_index("auto", 64, AUTO_EXACT_MAX), HNSWIndex)


@pytest.mark.parametrize("kind", ["hnsw_pca", "ivf_pca"])
def test_facade_candidate_path_over_the_reduced_index_matches_the_exact_facade(demo_catalog, demo_recommender,
                                                                              monkeypatch, kind):
    """The façade's large-catalog path (ANN image top-K ∪ metadata top-K, re-scored exactly with the bfloat16
    vectors memory-mapped from the cache) forced on the demo: the same top-10 as the exact scan of every row,
    for item, text and filtered queries."""
    monkeypatch.setattr(reduced, "MIN_FIT_ROWS", 20)  # let 89 products estimate a (32-d) subspace
    monkeypatch.setattr(querying, "EXACT_SCAN_LIMIT", 0)  # always take the candidate path
    monkeypatch.setattr(querying, "MAPPED_SCAN_LIMIT", 0)
    monkeypatch.setattr(querying, "CANDIDATES_PER_SIDE", 40)
    # Without query expansion on both sides (qe_k="auto" expands the exact scan only): the index path is compared.
    params = {k: v for k, v in demo_recommender.get_params().items() if k not in ("index", "qe_k")}
    monkeypatch.setattr(reduced, "DEFAULT_COMPONENTS", 32)
    ann = HybridRecommender(**params, index=kind, qe_k=0).fit(demo_catalog)
    exact = copy.copy(demo_recommender).set_params(qe_k=0)  # the same fit, not expanded
    assert ann.image_index_.kind == kind and ann.image_index_.reduced_dim == 32
    assert isinstance(ann.image_vectors_, np.memmap) and ann.image_vectors_.dtype == BFLOAT16
    assert not ann.image_vectors_.flags.writeable
    ids = list(demo_catalog.ids)
    agree = []
    for item in ids[::4]:
        for kwargs in ({}, {"filters": Filters(category=[demo_catalog.items["category"].iloc[ids.index(item)]])}):
            want = [r.id for r in exact.recommend(item=item, k=K, **kwargs).items]
            got = [r.id for r in ann.recommend(item=item, k=K, **kwargs).items]
            agree.append(len(set(want) & set(got)) / max(1, len(want)))
    for text in ("black running shoe", "wooden table", "red ball"):
        want = [r.id for r in exact.recommend(text=text, k=K).items]
        got = [r.id for r in ann.recommend(text=text, k=K).items]
        agree.append(len(set(want) & set(got)) / max(1, len(want)))
    assert np.mean(agree) >= 0.97, np.mean(agree)


def test_a_warm_fit_loads_the_saved_graph_and_a_changed_catalog_builds_its_own(demo_catalog, demo_recommender,
                                                                               monkeypatch, tmp_path):
    monkeypatch.setattr(reduced, "MIN_FIT_ROWS", 20)
    monkeypatch.setattr(reduced, "DEFAULT_COMPONENTS", 32)
    builds = []
    real_add = ReducedHNSWIndex.add
    monkeypatch.setattr(ReducedHNSWIndex, "add", lambda self, ids, v: (builds.append(len(ids)), real_add(self, ids, v)))
    cache = tmp_path / "cache"
    params = {**{k: v for k, v in demo_recommender.get_params().items() if k != "index"}, "index": "hnsw_pca"}
    # The vectors come from the session's warm cache; the graph goes into this test's own folder.
    monkeypatch.setattr(HybridRecommender, "_index_folder", lambda self, catalog=None: cache / "index")
    first = HybridRecommender(**params).fit(demo_catalog)
    assert len(builds) == 1 and len(list((cache / "index").iterdir())) == 1
    second = HybridRecommender(**params).fit(demo_catalog)
    assert len(builds) == 1, "the warm fit rebuilt the graph instead of loading it"
    q = demo_recommender.image_vectors_[:5]
    np.testing.assert_array_equal(first.image_index_.search(q, 5)[1], second.image_index_.search(q, 5)[1])
    # A changed catalog (one product gone) is other content: its own graph, never the old one.
    smaller = dataclasses.replace(demo_catalog, items=demo_catalog.items.iloc[1:].reset_index(drop=True),
                                  _positions={}, _memo={})
    HybridRecommender(**params).fit(smaller)
    assert len(builds) == 2 and len(list((cache / "index").iterdir())) == 2
    # A corrupt save is a miss: rebuilt, never a wrong index.
    for saved_dir in (cache / "index").iterdir():
        (saved_dir / "manifest.json").write_text("{broken")
    HybridRecommender(**params).fit(demo_catalog)
    assert len(builds) == 3


def test_live_updates_on_mapped_bfloat16_vectors(demo_catalog, demo_recommender, monkeypatch):
    """A façade over ``ivf_pca`` serves from the read-only bfloat16 file; upsert, patch and remove still work
    (new rows go to an in-memory buffer, the file is never written) and match the exact façade's answers."""
    monkeypatch.setattr(reduced, "MIN_FIT_ROWS", 20)
    monkeypatch.setattr(reduced, "DEFAULT_COMPONENTS", 32)
    monkeypatch.setattr(querying, "EXACT_SCAN_LIMIT", 0)
    monkeypatch.setattr(querying, "MAPPED_SCAN_LIMIT", 0)
    monkeypatch.setattr(querying, "CANDIDATES_PER_SIDE", 40)
    params = {**{k: v for k, v in demo_recommender.get_params().items() if k != "index"}, "qe_k": 0}  # as above
    ann = HybridRecommender(**params, index="ivf_pca").fit(demo_catalog)
    exact = HybridRecommender(**params, index="exact").fit(demo_catalog)
    mapped = np.asarray(ann.image_vectors_).copy()
    row = demo_catalog.items[demo_catalog.items["id"] == "tent"].assign(name="Lunar Tent", brand="Lunar")
    for rec in (ann, exact):
        assert rec.upsert(row).replaced == ["tent"]
        rec.patch("basketball", {"brand": "Lunar"})
        assert rec.remove(["road-bike"]) == 1
    assert ann.image_vectors_.dtype == BFLOAT16 and len(ann.image_vectors_) == len(demo_catalog) + 2
    (vector_file,) = (ann._index_folder().parent / "vectors").glob("*.npy")
    np.testing.assert_array_equal(np.load(vector_file), mapped.view(np.uint16))  # the file itself is never written
    assert ann.recommend(text="lunar", k=5).ids == exact.recommend(text="lunar", k=5).ids
    assert set(ann.recommend(item="tent", k=K).ids) == set(exact.recommend(item="tent", k=K).ids)
    assert "road-bike" not in ann.recommend(item="basketball", k=88).ids


def test_colours_are_served_from_their_own_bfloat16_file_beside_an_ann_index(demo_catalog, demo_recommender,
                                                                             monkeypatch):
    """At scale the colour histograms (512-d, 2 KB a product in float32) are built as bfloat16 and mapped like the
    image vectors; colour-mixed similarities stay those of the in-memory float32 histograms within bfloat16's step."""
    from recommender.store.vector_file import content_digest

    monkeypatch.setattr(reduced, "MIN_FIT_ROWS", 20)
    monkeypatch.setattr(reduced, "DEFAULT_COMPONENTS", 32)
    params = {k: v for k, v in demo_recommender.get_params().items() if k != "index"}
    ann = HybridRecommender(**params, index="ivf_pca").fit(demo_catalog)
    for mapped in (ann.image_vectors_, ann.colour_vectors_):
        assert mapped.dtype == BFLOAT16 and content_digest(mapped) is not None
    assert len(list((ann._index_folder().parent / "colours").glob("*.npy"))) == 1
    np.testing.assert_allclose(ann.colour_vectors_.astype(np.float32), demo_recommender.colour_vectors_, atol=4e-3)
    rows = np.arange(0, len(demo_catalog), 7)
    np.testing.assert_allclose(ann.image_similarity_rows(rows, colour_weight=1.0),
                               demo_recommender.image_similarity_rows(rows, colour_weight=1.0), atol=8e-3)
    assert ann.recommend(image=DEMO_DIR / "images" / "t-shirt.png", k=5).ids[0] == "t-shirt"
