"""The inverted-file backend (``ivf``, faiss IVF with float16 codes) and ``ivf_pca`` (the same over a PCA copy)."""

from __future__ import annotations

import numpy as np
import pytest

from recommender.index.exact import ExactIndex
from recommender.index.factory import make_index
from recommender.index.ivf import IVFIndex
from recommender.index.persist import load_index, save_index

K = 10


@pytest.fixture(scope="module")
def clustered():
    """6,000 unit vectors in 64-d around 60 centres (nearest neighbours are meaningful), and 50 queries."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((60, 64)).astype(np.float32)
    x = centres[rng.integers(0, 60, 6000)] + 0.3 * rng.standard_normal((6000, 64)).astype(np.float32)
    q = centres[rng.integers(0, 60, 50)] + 0.3 * rng.standard_normal((50, 64)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True), q / np.linalg.norm(q, axis=1, keepdims=True)


def _recall(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([len(set(r) & set(s)) / len(s) for r, s in zip(a, b, strict=True)]))


def _exact(x: np.ndarray) -> ExactIndex:
    index = ExactIndex(x.shape[1])
    index.add(np.arange(len(x)), x)
    return index


def test_ivf_finds_the_exact_neighbours_with_and_without_filters(clustered):
    x, q = clustered
    index = IVFIndex(64, len(x))
    index.add(np.arange(len(x)), x)
    assert index.ntotal == len(x) and index._ivf.nlist == round(np.sqrt(len(x)))
    exact = _exact(x)
    assert _recall(index.search(q, K)[1], exact.search(q, K)[1]) >= 0.9
    rng = np.random.default_rng(1)
    for share in (0.2, 0.01):  # a walk over more lists; below exact_share every list (exact in its space)
        allow = rng.random(len(x)) < share
        scores, ids = index.search(q, K, allow)
        assert allow[ids[ids >= 0]].all()
        want = exact.search(q, K, allow)[1]
        assert _recall(ids, want) >= (0.9 if share > 0.02 else 0.99)
        assert np.all(np.diff(scores, axis=1)[np.isfinite(scores[:, 1:])] <= 1e-6)  # best first


def test_ivf_upsert_and_remove_without_a_rebuild(clustered):
    x, q = clustered
    index = IVFIndex(64, len(x))
    index.add(np.arange(len(x)), x)
    index.remove([0, 1, 2, 10**9])  # an absent id is ignored
    assert index.ntotal == len(x) - 3
    assert not np.isin(index.search(x[:3], K)[1], [0, 1, 2]).any()
    index.add([5], x[[7]])  # upsert: id 5 now holds row 7's vector
    assert index.ntotal == len(x) - 3
    _, ids = index.search(x[[7]], 2)
    assert set(ids[0]) == {5, 7}
    index.add([len(x) + 5], x[[3]])  # a new id beyond the table grows it
    assert set(index.search(x[[3]], 2)[1][0]) == {3, len(x) + 5}


def test_ivf_saves_and_loads_the_same_answers(clustered, tmp_path):
    x, q = clustered
    index = IVFIndex(64, len(x))
    index.add(np.arange(len(x)), x)
    index.remove([4])
    save_index(index, tmp_path, "ivf-1")
    loaded = load_index(tmp_path, "ivf-1", kind="ivf", dim=64)
    assert isinstance(loaded, IVFIndex) and loaded.ntotal == index.ntotal
    np.testing.assert_array_equal(loaded.search(q, K)[1], index.search(q, K)[1])


def test_ivf_bad_input_is_one_clear_error(clustered):
    x, _ = clustered
    index = IVFIndex(64)
    with pytest.raises(ValueError, match="dimensions"):
        index.add([0], np.ones((1, 3), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        index.add([0], np.full((1, 64), np.nan, np.float32))
    with pytest.raises(ValueError, match="non-negative"):
        index.add([-1], x[:1])
    with pytest.raises(ValueError, match="nprobe"):
        IVFIndex(64, nprobe=0)
    assert index.ntotal == 0 and index.search(x[:1], 3)[1].tolist() == [[-1, -1, -1]]
    index.add(np.arange(100), x[:100])  # a small first add: fewer lists (k-means needs rows per list)
    with pytest.raises(ValueError, match="boolean"):
        index.search(x[:1], 3, allow=np.ones(100, dtype=int))


def test_ivf_pca_reduces_and_candidates_rescore_to_the_exact_top10():
    """Wide vectors (512-d: 80 groups of look-alikes in a 48-d signal, plus noise) through ``ivf_pca``: its
    top-100 re-scored with the full vectors holds the exact top-10."""
    rng = np.random.default_rng(2)
    basis = rng.standard_normal((48, 512)).astype(np.float32)
    latent = rng.standard_normal((80, 48))[rng.integers(0, 80, 4000)] + 0.3 * rng.standard_normal((4000, 48))
    x = latent.astype(np.float32) @ basis + 0.5 * rng.standard_normal((4000, 512))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    index = make_index("ivf_pca", 512, len(x))
    index.add(np.arange(len(x)), x.astype(np.float16))  # float16 input is projected block by block
    assert index.kind == "ivf_pca" and index.reduced_dim < 512
    q = x[:30]
    _, cand = index.search(q, 100)
    rescored = [c[np.argsort(-(x[c] @ qi))][:K] for c, qi in zip(cand, q, strict=True)]
    assert _recall(np.array(rescored), _exact(x).search(q, K)[1]) >= 0.99


def test_ivf_returns_its_stored_vectors_by_id_through_updates_and_a_reload(clustered, tmp_path):
    import faiss

    x, _ = clustered
    index = IVFIndex(64, len(x))
    index.add(np.arange(len(x)), x)
    np.testing.assert_allclose(index.get_vectors(np.array([0, 17, 5999])), x[[0, 17, 5999]], atol=1e-3)  # float16
    index.remove([17])
    with pytest.raises(KeyError):
        index.get_vectors(np.array([17]))
    with pytest.raises(KeyError):
        index.get_vectors(np.array([10**6]))
    index.add([17, 8000], x[[3, 4]])  # re-added with another vector, and a new id beyond the table
    np.testing.assert_allclose(index.get_vectors(np.array([17, 8000])), x[[3, 4]], atol=1e-3)
    assert index.get_vectors(np.array([], np.int64)).shape == (0, 64)
    # An index saved before the id map existed gets one when loaded.
    index._ivf.set_direct_map_type(faiss.DirectMap.NoMap)
    save_index(index, tmp_path, "ivf-old")
    loaded = load_index(tmp_path, "ivf-old", kind="ivf", dim=64)
    np.testing.assert_allclose(loaded.get_vectors(np.array([0, 8000])), x[[0, 4]], atol=1e-3)
