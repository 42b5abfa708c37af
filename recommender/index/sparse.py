"""Inverted index for the metadata side: top-k by sparse dot product, touching only the query's postings.

The metadata vectors are TF-IDF/BM25-like CSR rows (tens of non-zeros among tens of thousands of
terms). ``items @ q.T`` (a sparse x sparse product) visits every stored entry of every item; an
inverted index (the matrix in CSC = one postings list per term) visits only the postings of the
query's few terms, and the scores of items sharing no term stay zero, so only the touched items
compete for the top-k. Same ``allow`` mask and add/remove semantics as :class:`VectorIndex`, by id.

Additions and removals do not rebuild: new or replaced rows go to a small CSR *delta* (scanned
directly, it is small) and the postings of replaced/removed ids are masked; :meth:`compact` folds
the delta into the postings (``add`` does it by itself when the delta outgrows ``compact_at`` rows).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recommender.index.base import check_ids, upsert_batch
from recommender.index.exact import top_k


class SparseIndex:
    """Top-k by dot product of sparse query rows against sparse item rows labelled by int64 ids.

    ``fit(X, ids=None)`` indexes the rows of a CSR matrix (``ids`` default ``0..n-1``) and returns self;
    ``add``/``remove``/``search`` as in :class:`recommender.index.base.VectorIndex` (no normalisation:
    the caller's weighting is the score). Items scoring 0 (no shared term) are never returned.
    """

    kind = "sparse"

    def __init__(self, n_terms: int, compact_at: int = 10_000) -> None:
        self.n_terms = int(n_terms)
        self.compact_at = int(compact_at)
        self._postings = sp.csc_matrix((0, self.n_terms), dtype=np.float32)  # rows = slots of the main part
        self._main_ids = np.zeros(0, dtype=np.int64)  # slot -> id
        self._delta = sp.csr_matrix((0, self.n_terms), dtype=np.float32)
        self._delta_ids = np.zeros(0, dtype=np.int64)
        self._where = np.zeros(0, dtype=np.int8)  # by id: 0 absent, 1 in main, 2 in delta
        self._plain = True  # main slot i holds id i and none was replaced/removed since fit: skip the remapping

    # -- building ----------------------------------------------------------------------------
    def _rows(self, X, n: int | None = None) -> sp.csr_matrix:
        if not sp.issparse(X):
            raise ValueError("expected a scipy sparse matrix")
        m = sp.csr_matrix(X, dtype=np.float32)
        if m.shape[1] != self.n_terms:
            raise ValueError(f"rows have {m.shape[1]} terms, the index {self.n_terms}")
        if n is not None and m.shape[0] != n:
            raise ValueError(f"{n} ids for {m.shape[0]} rows")
        if not np.isfinite(m.data).all():
            raise ValueError("rows contain NaN or infinity")
        return m

    def _grow(self, n: int) -> None:
        if n > len(self._where):
            where = np.zeros(max(n, 2 * len(self._where)), dtype=np.int8)
            where[:len(self._where)] = self._where
            self._where = where

    def fit(self, X, ids: np.ndarray | None = None) -> SparseIndex:
        m = self._rows(X)
        ids = np.arange(m.shape[0], dtype=np.int64) if ids is None else check_ids(ids, m.shape[0])
        if len(np.unique(ids)) != len(ids):
            raise ValueError("ids must be unique in fit")
        self._postings = m.tocsc()
        self._postings.sort_indices()
        self._main_ids = ids.copy()
        self._delta = sp.csr_matrix((0, self.n_terms), dtype=np.float32)
        self._delta_ids = np.zeros(0, dtype=np.int64)
        self._where = np.zeros(0, dtype=np.int8)
        self._grow(int(ids.max()) + 1 if len(ids) else 0)
        self._where[ids] = 1
        self._plain = bool(np.array_equal(ids, np.arange(len(ids))))
        return self

    @property
    def ntotal(self) -> int:
        return int(np.count_nonzero(self._where))

    def __len__(self) -> int:
        return self.ntotal

    @property
    def nbytes(self) -> int:
        p, d = self._postings, self._delta
        return int(p.data.nbytes + p.indices.nbytes + p.indptr.nbytes + self._main_ids.nbytes + d.data.nbytes
                   + d.indices.nbytes + d.indptr.nbytes + self._delta_ids.nbytes + self._where.nbytes)

    def add(self, ids: np.ndarray, X) -> None:
        """Insert or replace rows (an id already present gets the new row)."""
        m = self._rows(X)
        ids, m = upsert_batch(ids, m)
        if not len(ids):
            return
        self._grow(int(ids.max()) + 1)
        # Replaced rows already in the delta are dropped from it; main-part postings are masked via _where.
        old = np.isin(self._delta_ids, ids)
        if old.any():
            self._delta, self._delta_ids = self._delta[~old], self._delta_ids[~old]
        self._plain = self._plain and not (self._where[ids] == 1).any()
        self._delta = sp.vstack([self._delta, m], format="csr")
        self._delta_ids = np.concatenate([self._delta_ids, ids])
        self._where[ids] = 2
        if len(self._delta_ids) > self.compact_at:
            self.compact()

    def remove(self, ids: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64).ravel()
        ids = ids[(ids >= 0) & (ids < len(self._where))]
        self._plain = self._plain and not (self._where[ids] == 1).any()
        self._where[ids] = 0
        gone = np.isin(self._delta_ids, ids)
        if gone.any():
            self._delta, self._delta_ids = self._delta[~gone], self._delta_ids[~gone]

    def compact(self) -> None:
        """Fold the delta into the postings and drop removed/replaced rows (a rebuild of the CSC)."""
        live_main = self._where[self._main_ids] == 1
        main = self._postings.tocsr()[live_main]
        ids = np.concatenate([self._main_ids[live_main], self._delta_ids])
        self.fit(sp.vstack([main, self._delta], format="csr"), ids)

    # -- search ------------------------------------------------------------------------------
    def scores(self, q) -> tuple[np.ndarray, np.ndarray]:
        """For one query row: ``(ids, scores)`` of every live item sharing at least one term with it."""
        q = self._rows(q)
        if q.shape[0] != 1:
            raise ValueError(f"scores takes one query row, got {q.shape[0]}")
        terms, weights = q.indices, q.data
        p = self._postings
        starts, ends = p.indptr[terms], p.indptr[terms + 1]
        if (ends > starts).any():
            # Gather the postings of the query's terms only, accumulate per slot. bincount into an n-long
            # accumulator then flatnonzero is O(postings + n) and measured 60x faster than np.unique (a sort) of
            # the touched slots at 100k (1.6 vs 97 ms; frequent terms make a query touch ~130k postings).
            slots = np.concatenate([p.indices[a:b] for a, b in zip(starts, ends, strict=True)])
            contrib = np.concatenate([p.data[a:b] * w for a, b, w in zip(starts, ends, weights, strict=True)])
            acc = np.bincount(slots, weights=contrib, minlength=p.shape[0])
            touched = np.flatnonzero(acc)
            if self._plain:  # slot = id, all live: ascending ids already
                ids, scores = touched, acc[touched].astype(np.float32)
            else:
                main_ids = self._main_ids[touched]
                live = self._where[main_ids] == 1
                ids, scores = main_ids[live], acc[touched][live].astype(np.float32)
        else:
            ids, scores = np.zeros(0, np.int64), np.zeros(0, np.float32)
        if len(self._delta_ids):
            ds = np.asarray((self._delta @ q.T).todense()).ravel().astype(np.float32)
            hit = ds != 0
            ids = np.concatenate([ids, self._delta_ids[hit]])
            scores = np.concatenate([scores, ds[hit]])
        return ids, scores

    def search(self, q, k: int, allow: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` by dot product for each query row, best first (ties: lower id); pads with ``-inf`` / ``-1``."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
            raise ValueError(f"k must be a non-negative integer, got {k!r}")
        q = self._rows(q)
        if allow is not None:
            allow = np.asarray(allow)
            if allow.dtype != bool or allow.ndim != 1:
                raise ValueError(f"allow must be a 1-d boolean mask by id, got {allow.dtype} {allow.shape}")
        out_s = np.full((q.shape[0], k), -np.inf, np.float32)
        out_i = np.full((q.shape[0], k), -1, np.int64)
        for r in range(q.shape[0]):
            ids, scores = self.scores(q[r])
            if allow is not None:
                ok = ids < len(allow)
                ok[ok] = allow[ids[ok]]
                ids, scores = ids[ok], scores[ok]
            if not len(ids) or k == 0:
                continue
            if not (self._plain and not len(self._delta_ids)):
                order = np.argsort(ids, kind="stable")  # top_k breaks ties by position: make that the id order
                ids, scores = ids[order], scores[order]
            s, pos = top_k(scores[None, :], k)
            out_s[r] = s[0]
            out_i[r] = np.where(pos[0] >= 0, ids[np.maximum(pos[0], 0)], -1)
        return out_s, out_i
