"""Scoring helpers of the façade's read side (recommender/scoring.py)."""

from __future__ import annotations

import numpy as np
import pytest

import recommender.scoring as scoring


@pytest.mark.parametrize("share", [1.0, 0.3, 0.02])
@pytest.mark.parametrize("ties", [False, True])
def test_sparse_top_with_a_sampled_threshold_is_the_exact_top_k(share, ties, monkeypatch):
    """The sampled pre-selection keeps every row at or above its threshold: the same top-k scores as the
    plain argpartition of every hit, only allowed rows with a positive score, on 200k rows (70% hit)."""
    rng = np.random.default_rng(int(share * 100) + ties)
    n, k = 200_000, 512
    hits = np.where(rng.random(n) < 0.7, rng.random(n) ** 3, 0).astype(np.float32)
    if ties:
        hits = np.round(hits, 2).astype(np.float32)  # thousands of rows share each score
    allowed = rng.random(n) < share
    monkeypatch.setattr(scoring, "TOP_SAMPLE_FROM", 8_192)
    sampled = scoring.sparse_top(None, None, k, allowed, hits)
    monkeypatch.setattr(scoring, "TOP_SAMPLE_FROM", 1 << 62)
    plain = scoring.sparse_top(None, None, k, allowed, hits)
    assert len(sampled) == len(plain) == k
    assert allowed[sampled].all() and (hits[sampled] > 0).all() and len(set(sampled)) == k
    np.testing.assert_array_equal(np.sort(hits[sampled]), np.sort(hits[plain]))


def test_sparse_top_returns_every_hit_when_fewer_than_k(monkeypatch):
    monkeypatch.setattr(scoring, "TOP_SAMPLE_FROM", 1_024)
    hits = np.zeros(100_000, np.float32)
    hits[[5, 70_000, 99_999]] = [0.2, 0.9, 0.1]
    allowed = np.ones(len(hits), bool)
    allowed[99_999] = False
    assert sorted(scoring.sparse_top(None, None, 512, allowed, hits)) == [5, 70_000]


@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("data_dtype", [np.float32, np.float64])
def test_posting_scores_read_in_place_equal_the_full_product(index_dtype, data_dtype):
    """The in-place column walk (scipy's csc kernel per column) gives the product of every row with the query,
    for either index width, float64 data (the public path), and rows appended after the postings."""
    import scipy.sparse as sp

    rng = np.random.default_rng(5)
    matrix = sp.random(5_000, 300, density=0.05, format="csr", dtype=np.float64, random_state=rng)
    matrix = sp.csr_matrix(matrix.astype(data_dtype))
    postings = matrix[:4_900].tocsc()
    postings.indices, postings.indptr = postings.indices.astype(index_dtype), postings.indptr.astype(index_dtype)
    for row in (0, 7, 4_950):
        q = matrix[row]
        want = np.asarray((matrix @ q.T).todense()).ravel()
        np.testing.assert_allclose(scoring.posting_scores(postings, q, matrix), want, rtol=1e-5, atol=1e-6)
    assert not scoring.posting_scores(postings, sp.csr_matrix((1, 300)), matrix).any()
