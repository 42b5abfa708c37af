"""Scoring one query over a set of catalog rows, without touching rows it does not need.

The façade asks for the *candidates* of a query (every allowed row on a small catalog; on a large
one the image top-K from the ANN index, the metadata top-K from the sparse inverted index and,
when the filter leaves few rows, all of them) and re-scores only those exactly.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recommender.index.base import VectorIndex

try:  # scipy's C++ CSC matrix-vector kernel (see _column_sum); absent in some future scipy: the public path
    from scipy.sparse._sparsetools import csc_matvec as _csc_matvec
except ImportError:  # pragma: no cover
    _csc_matvec = None

ROW_BLOCK = 65_536  # rows per block when scoring every row: bounds the temporary copy of the vectors
SUBSET_BLOCK = ROW_BLOCK  # rows gathered at a time when scoring a subset
POSTINGS_TAIL = 1024  # rows appended after the postings were built that queries score row by row
TOP_SAMPLE_FROM = 65_536  # sparse_top: rows from which a sampled threshold pre-selects (about this many sampled)
TOP_OVERSAMPLE = 4  # ... keeping about this many times k rows for the exact selection


def dense_scores(vectors: np.ndarray, q: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """Inner product of ``q`` with ``vectors[rows]`` (all rows when None), float32, blockwise."""
    q = np.asarray(q, dtype=np.float32).ravel()
    n = len(vectors)
    if isinstance(vectors, np.memmap):  # the same pages as a plain array: memmap's indexing wrapper costs more
        vectors = vectors.view(np.ndarray)
    if rows is None or len(rows) > n // 4:
        out = np.empty(n, np.float32)
        for s in range(0, n, ROW_BLOCK):
            out[s:s + ROW_BLOCK] = vectors[s:s + ROW_BLOCK].astype(np.float32, copy=False) @ q
        return out if rows is None else out[rows]
    out = np.empty(len(rows), np.float32)
    # One gather per ROW_BLOCK rows. Small blocks (256) looked faster alone but were 3-5x slower in the
    # serving process: one BLAS call per block, each paying for threads that faiss's OpenMP pool keeps
    # busy (30k catalog, 11% filter: 101 vs 11 ms CPU per query; bench_queries --n 30000).
    for s in range(0, len(rows), SUBSET_BLOCK):
        out[s:s + SUBSET_BLOCK] = vectors[rows[s:s + SUBSET_BLOCK]].astype(np.float32, copy=False) @ q
    return out


def rows_against_all(vectors: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Inner products of ``vectors[rows]`` with every row, ``(len(rows), n)`` float32, blockwise: float16 vectors
    (the façade's file map beside an ANN index) are converted a block at a time, never multiplied in float16."""
    q = np.asarray(vectors[rows], dtype=np.float32)
    out = np.empty((len(q), len(vectors)), np.float32)
    for s in range(0, len(vectors), ROW_BLOCK):
        out[:, s:s + ROW_BLOCK] = q @ vectors[s:s + ROW_BLOCK].astype(np.float32, copy=False).T
    return out


def sparse_scores(matrix: sp.csr_matrix, qrow: sp.csr_matrix, rows: np.ndarray | None = None,
                  postings: sp.csc_matrix | None = None) -> np.ndarray:
    """Cosine of the sparse query row with ``matrix[rows]`` (all rows when None), as dense float32.

    With ``postings`` (the matrix in CSC form) a large ``rows`` set is scored through the query's
    own columns only - the inverted lists of its few terms - instead of a pass over every row.
    """
    q = sp.csr_matrix(qrow)
    large = rows is None or len(rows) > matrix.shape[0] // 4
    if large and postings is not None:
        out = posting_scores(postings, q, matrix)
        return out if rows is None else out[rows]
    if not large:
        return _subset_dot(matrix, q, np.asarray(rows, dtype=np.int64))
    out = np.asarray((matrix @ q.T).todense(), dtype=np.float32).ravel()
    return out if rows is None else out[rows]


def _subset_dot(matrix: sp.csr_matrix, q: sp.csr_matrix, rows: np.ndarray) -> np.ndarray:
    """``matrix[rows] @ q.T`` as float32, each row's terms looked up in the query's sorted columns.

    scipy's product transposes the query over the whole vocabulary first (3.9M columns with word bigrams at
    1M products): ~3.5 ms per call even for the 10 rows of a results page, against ~0.1 ms here (768 rows:
    4.3 vs 1.5 ms, the same scores to 6e-8; ``/tmp``-scripted in the 1M process, 50 queries)."""
    if not q.has_canonical_format:  # sorted, unique columns for searchsorted (on a copy: never the caller's)
        q = q.copy()
        q.sum_duplicates()
    sub = matrix[rows]
    if not sub.nnz or not q.nnz:
        return np.zeros(len(rows), np.float32)
    pos = np.minimum(np.searchsorted(q.indices, sub.indices), q.nnz - 1)
    contrib = np.where(q.indices[pos] == sub.indices, sub.data * q.data[pos], 0)
    row_of = np.repeat(np.arange(len(rows)), np.diff(sub.indptr))
    return np.bincount(row_of, weights=contrib, minlength=len(rows)).astype(np.float32)


def postings_stale(postings: sp.csc_matrix, matrix: sp.csr_matrix) -> bool:
    """Whether the rows appended to ``matrix`` after its ``postings`` were built are too many to score
    from the CSR rows on every query (more than :data:`POSTINGS_TAIL` or 1/32 of the catalog)."""
    tail = matrix.shape[0] - postings.shape[0]
    return tail > max(POSTINGS_TAIL, matrix.shape[0] // 32)


def posting_scores(matrix_csc: sp.csc_matrix, qrow: sp.csr_matrix, matrix: sp.csr_matrix | None = None) -> np.ndarray:
    """Cosine of the sparse query row with every row, through the postings of the query's terms only.

    ``matrix``: the same rows as CSR, possibly with rows appended after ``matrix_csc`` was built (live
    updates rebuild the postings only now and then); those few tail rows are scored directly.
    """
    q = sp.csr_matrix(qrow)
    n = matrix_csc.shape[0] if matrix is None else matrix.shape[0]
    if q.nnz == 0:
        return np.zeros(n, np.float32)
    head = _column_sum(matrix_csc, q.indices, q.data.astype(np.float32))
    if n == len(head):
        return head
    out = np.empty(n, np.float32)
    out[:len(head)] = head
    out[len(head):] = np.asarray((matrix[len(head):] @ q.T).todense(), dtype=np.float32).ravel()
    return out


def _column_sum(matrix_csc: sp.csc_matrix, cols: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``matrix_csc[:, cols] @ w`` as float32, each column's postings read in place.

    scipy's column selection copies the selected postings first: an item query's category and colour
    postings at 1M products are ~2.6M entries (21 MB) copied per query. scipy's own C++ kernel
    (``csc_matvec``, a private but long-stable name) runs over each column's slice of the arrays instead:
    0.93M entries, 1.4 vs 2.0 ms (``/tmp``-scripted, side by side). Other dtypes take the public path.
    """
    n = matrix_csc.shape[0]
    fast = matrix_csc.data.dtype == np.float32 and matrix_csc.indices.dtype == matrix_csc.indptr.dtype
    if _csc_matvec is None or not fast:
        return np.asarray(matrix_csc[:, cols] @ w, dtype=np.float32).ravel()
    out = np.zeros(n, np.float32)
    indptr, indices, data = matrix_csc.indptr, matrix_csc.indices, matrix_csc.data
    for j, wj in zip(cols.tolist(), w.tolist(), strict=True):
        _csc_matvec(n, 1, indptr[j:j + 2], indices, data, np.array([wj], np.float32), out)  # out += wj * column j
    return out


def sparse_top(matrix_csc: sp.csc_matrix, qrow: sp.csr_matrix, k: int, allowed: np.ndarray,
               hits: np.ndarray | None = None) -> np.ndarray:
    """Rows of the ``k`` best metadata matches among ``allowed``, through the column postings.

    ``matrix_csc`` is the metadata matrix in CSC form: the query's few non-zero columns are its
    inverted lists, so only rows sharing a term with the query are ever touched. ``hits``: the
    query's :func:`posting_scores`, if the caller has them already.
    """
    if hits is None:
        if sp.csr_matrix(qrow).nnz == 0:
            return np.zeros(0, dtype=np.int64)
        hits = posting_scores(matrix_csc, qrow)
    allowed = allowed[:len(hits)]
    rows = None
    if k and len(hits) > TOP_SAMPLE_FROM:
        # A threshold from a strided sample keeps about TOP_OVERSAMPLE x k rows for the exact selection: at 1M
        # rows, with ~70% of them sharing some term with an item query, an argpartition of them all took most
        # of this function's 4.5 ms. Every row at or above the threshold is kept, so the top k is exact
        # whenever at least k pass (else the plain path below).
        step = len(hits) // TOP_SAMPLE_FROM
        sample = hits[::step][allowed[::step]]
        # Only the sampled rows with a hit: numpy's introselect over a sample that is mostly the same value
        # (the rows sharing no term, 3/4 of them for an item query at 100k) took 2.7 ms instead of 0.3 for
        # about half the queries (the pivots it happened to draw).
        sample = sample[sample > 0]
        want = int(np.ceil(TOP_OVERSAMPLE * k / step))  # each sampled row stands for `step` rows
        if want < len(sample):
            tau = np.partition(sample, len(sample) - want)[len(sample) - want]
            if tau > 0:
                passed = np.flatnonzero((hits >= tau) & allowed)
                if len(passed) >= k:
                    rows = passed
    if rows is None:
        rows = np.flatnonzero((hits > 0) & allowed)
    if len(rows) > k:
        rows = rows[np.argpartition(-hits[rows], k - 1)[:k]]
    return rows.astype(np.int64)


def index_top(index: VectorIndex, q: np.ndarray, k: int, allowed: np.ndarray) -> np.ndarray:
    """Rows of the ``k`` nearest vectors among ``allowed`` (the filter applied during the search)."""
    _, ids = index.search(np.asarray(q, dtype=np.float32)[None], k, allow=allowed)
    ids = ids[0]
    return ids[ids >= 0].astype(np.int64)
