"""Scoring one query over a set of catalog rows, without touching rows it does not need.

The façade asks for the *candidates* of a query (every allowed row on a small catalog; on a large
one the image top-K from the ANN index, the metadata top-K from the sparse inverted index and,
when the filter leaves few rows, all of them) and re-scores only those exactly.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recommender.index.base import VectorIndex

ROW_BLOCK = 65_536  # rows per block when scoring a subset: bounds the temporary copy of the vectors


def dense_scores(vectors: np.ndarray, q: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """Inner product of ``q`` with ``vectors[rows]`` (all rows when None), float32, blockwise."""
    q = np.asarray(q, dtype=np.float32).ravel()
    n = len(vectors)
    if rows is None or len(rows) > n // 4:
        out = np.empty(n, np.float32)
        for s in range(0, n, ROW_BLOCK):
            out[s:s + ROW_BLOCK] = vectors[s:s + ROW_BLOCK].astype(np.float32, copy=False) @ q
        return out if rows is None else out[rows]
    out = np.empty(len(rows), np.float32)
    for s in range(0, len(rows), ROW_BLOCK):
        out[s:s + ROW_BLOCK] = vectors[rows[s:s + ROW_BLOCK]].astype(np.float32, copy=False) @ q
    return out


def sparse_scores(matrix: sp.csr_matrix, qrow: sp.csr_matrix, rows: np.ndarray | None = None) -> np.ndarray:
    """Cosine of the sparse query row with ``matrix[rows]`` (all rows when None), as dense float32."""
    sub = matrix if rows is None or len(rows) > matrix.shape[0] // 4 else matrix[rows]
    out = np.asarray((sub @ qrow.T).todense(), dtype=np.float32).ravel()
    return out[rows] if sub is matrix and rows is not None else out


def sparse_top(matrix_csc: sp.csc_matrix, qrow: sp.csr_matrix, k: int, allowed: np.ndarray) -> np.ndarray:
    """Rows of the ``k`` best metadata matches among ``allowed``, through the column postings.

    ``matrix_csc`` is the metadata matrix in CSC form: the query's few non-zero columns are its
    inverted lists, so only rows sharing a term with the query are ever touched.
    """
    q = sp.csr_matrix(qrow)
    if q.nnz == 0:
        return np.zeros(0, dtype=np.int64)
    hits = matrix_csc[:, q.indices] @ q.data.astype(np.float32)  # (n,) dense, but only postings summed
    rows = np.flatnonzero((hits > 0) & allowed[:len(hits)])
    if len(rows) > k:
        rows = rows[np.argpartition(-hits[rows], k - 1)[:k]]
    return rows.astype(np.int64)


def index_top(index: VectorIndex, q: np.ndarray, k: int, allowed: np.ndarray) -> np.ndarray:
    """Rows of the ``k`` nearest vectors among ``allowed`` (the filter applied during the search)."""
    _, ids = index.search(np.asarray(q, dtype=np.float32)[None], k, allow=allowed)
    ids = ids[0]
    return ids[ids >= 0].astype(np.int64)
