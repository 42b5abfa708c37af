"""The metadata top-K of a large catalog without walking its longest postings (champion lists).

An item query's metadata row holds ~25 terms, and its category, colour, brand and commonest words are
shared by 5-25% of the catalog each: walking those postings whole was most of a 1M-product query
(docs/index.md: 10.5 of 21 ms). Those terms carry little weight each (a low idf; an attribute one-hot
divided by the row's norm), so the rows they add to the top-K are the ones where they weigh most:
the head of the posting in descending weight order, its *champion list* (Manning, Raghavan & Schütze,
*Introduction to Information Retrieval*, 7.1.3). A query then reads every short posting whole and the
first ``depth`` allowed entries of each long one, ranks the rows touched by these partial sums, and
scores the best of them exactly from their CSR rows. It is a candidate generator: the façade re-scores
the union of these and the image candidates exactly, and ``bench/bench_candidates.py`` measures the
hybrid top-10 against an exact scan of every row.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

#: A posting is "long" above this share of the rows (and MIN_LONG_POSTING rows): read by its champions only.
LONG_POSTING_SHARE = 0.01
MIN_LONG_POSTING = 4096
#: Allowed entries read from the head of each long posting per query (more under a filter: see ``top``).
CHAMPION_DEPTH = 2048
#: Catalogs of at most this many rows walk their postings whole; larger ones get champion lists at fit.
#: Off for now: at 100k they were slower than the whole postings and lost recall (bench_candidates.py).
CHAMPIONS_FROM = 1 << 62
#: Rows ranked by partial sums that are then scored exactly, as a multiple of the k asked for.
EXACT_FACTOR = 2


class ChampionPostings:
    """Postings (the metadata matrix as CSC) with each long posting's entries also in descending weight."""

    def __init__(self, postings: sp.csc_matrix) -> None:
        self.postings = postings
        lengths = np.diff(postings.indptr)
        self.long_at = max(MIN_LONG_POSTING, int(postings.shape[0] * LONG_POSTING_SHARE))
        self.is_long = lengths > self.long_at
        self.order: dict[int, np.ndarray] = {}  # long term -> positions in postings.data, heaviest first
        for term in np.flatnonzero(self.is_long):
            s, e = postings.indptr[term], postings.indptr[term + 1]
            self.order[int(term)] = (s + np.argsort(-postings.data[s:e], kind="stable")).astype(np.int64)

    @property
    def n_long(self) -> int:
        return len(self.order)

    def top(self, qrow: sp.csr_matrix, k: int, allowed: np.ndarray, matrix: sp.csr_matrix,
            n_allowed: int | None = None) -> np.ndarray:
        """Rows of (about) the ``k`` best metadata matches among ``allowed``; ``matrix`` the same rows as CSR,
        possibly with rows appended after the postings were built (scored directly, as ``posting_scores`` does)."""
        q = sp.csr_matrix(qrow)
        p = self.postings
        n_head = p.shape[0]
        if n_allowed is None:
            n_allowed = int(allowed.sum())
        share = max(n_allowed, 1) / max(len(allowed), 1)
        # Under a filter only ~share of a champion list is allowed: read deeper to keep ~CHAMPION_DEPTH of them.
        depth = int(min(CHAMPION_DEPTH / share, n_head))
        slots, contrib = [], []
        for term, weight in zip(q.indices, q.data, strict=True):
            long = self.is_long[term]
            pos = self.order[int(term)][:depth] if long else slice(p.indptr[term], p.indptr[term + 1])
            slots.append(p.indices[pos])
            contrib.append(p.data[pos] * weight)
        rows = np.zeros(0, np.int64)
        if slots:
            slot = np.concatenate(slots)
            part = np.concatenate(contrib)
            ok = allowed[slot]
            slot, part = slot[ok], part[ok]
            if len(slot):
                touched, inverse = np.unique(slot, return_inverse=True)
                partial = np.bincount(inverse, weights=part)
                keep = EXACT_FACTOR * k
                if len(touched) > keep:
                    touched = touched[np.argpartition(-partial, keep - 1)[:keep]]
                rows = touched.astype(np.int64)
        if matrix.shape[0] > n_head:  # the tail: rows appended since the postings were built
            tail = np.arange(n_head, matrix.shape[0])
            rows = np.concatenate([rows, tail[allowed[n_head:matrix.shape[0]]]])
        if not len(rows):
            return rows
        exact = np.asarray((matrix[rows] @ q.T).todense(), dtype=np.float32).ravel()
        rows, exact = rows[exact > 0], exact[exact > 0]
        if len(rows) > k:
            rows = rows[np.argpartition(-exact, k - 1)[:k]]
        return rows


def postings_of(matrix: sp.csr_matrix, large_at: int) -> tuple[sp.csc_matrix, ChampionPostings | None]:
    """The CSC postings of the metadata matrix and, for a catalog of more than ``large_at`` rows, its champions."""
    postings = matrix.tocsc()
    return postings, (ChampionPostings(postings) if matrix.shape[0] > large_at else None)
