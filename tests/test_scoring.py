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


def test_subset_scores_equal_the_full_product_without_touching_the_query():
    """``sparse_scores`` over a few rows looks each row's terms up in the query (no transpose of the query over the
    whole vocabulary); the scores are the full product's, for unsorted and duplicated query columns too."""
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    # 3,000 rows of 80 terms from a 400k vocabulary; column 0 in every row (as a category is)
    cols_per_row = [np.unique(np.r_[0, rng.integers(1, 400_000, 79)]) for _ in range(3000)]
    indptr = np.r_[0, np.cumsum([len(c) for c in cols_per_row])]
    data = rng.random(indptr[-1]).astype(np.float32)
    matrix = sp.csr_matrix((data, np.concatenate(cols_per_row), indptr), shape=(3000, 400_000))
    cols = np.array([0, 99_999, 0, 12] + [int(c) for c in matrix[5].indices[:3]], dtype=np.int32)
    query = sp.csr_matrix((rng.random(len(cols)).astype(np.float32), cols, [0, len(cols)]), shape=(1, 400_000))
    before = (query.indices.copy(), query.data.copy())
    expected = np.asarray((matrix @ query.T).todense(), dtype=np.float32).ravel()
    for rows in (np.array([5]), np.array([5, 0, 2999, 5]), rng.choice(3000, 500, replace=False), np.array([], int)):
        got = scoring.sparse_scores(matrix, query, rows)
        assert got.dtype == np.float32 and got.shape == (len(rows),)
        np.testing.assert_allclose(got, expected[rows], rtol=1e-6, atol=1e-7)
    assert expected[5] > expected[0] > 0  # row 5 shares more terms; the shared column counts for everyone
    np.testing.assert_array_equal(query.indices, before[0])  # the caller's row is not sorted in place
    np.testing.assert_array_equal(query.data, before[1])
    empty = sp.csr_matrix((1, 400_000), dtype=np.float32)
    np.testing.assert_array_equal(scoring.sparse_scores(matrix, empty, np.array([1, 2])), np.zeros(2, np.float32))
