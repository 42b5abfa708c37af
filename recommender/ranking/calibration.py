"""Scores that mean the same thing across queries and filters.

Each side's raw cosine is mapped to [0, 1] against two anchors computed once at fit time from
samples (never N x N): the median similarity of two random products ("unrelated" -> 0) and the
median similarity of a product to its nearest other product ("close" -> 0.8); identical is 1.
Piecewise linear in between, clipped below at 0. The map depends on the catalog only, never on the
candidates a query's filters leave, so a product's score is the same with or without a filter, and
a threshold on it means the same thing for every query: 0.8 is "as close as a typical best match".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

DEFAULT_PAIRS = 20_000
DEFAULT_PROBES = 256  # products whose nearest neighbour sets the "close" anchor
# Above this many rows (an ANN catalog, vectors mapped from a file) pairs are drawn among PAIR_POOL sampled rows:
# 20,000 pairs of 100k rows read (with the kernel's fault-around) the whole 456 MB file into the fit's RSS.
SAMPLED_PAIRS_ABOVE = 20_000
PAIR_POOL = 8_192
CLOSE_SCORE = 0.8


@dataclass(frozen=True)
class SideReference:
    """Raw similarity -> [0, 1]: ``unrelated`` -> 0, ``close`` -> 0.8, 1 -> 1, linear in between.

    ``unrelated``: the median raw similarity of random catalog pairs of this side; ``close``: the
    median similarity of a product to its nearest other product. The default is the identity.
    """

    unrelated: float = 0.0
    close: float = CLOSE_SCORE

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw, dtype=np.float32)
        u, c = self.unrelated, min(max(self.close, self.unrelated + 1e-3), 1.0 - 1e-3)
        low = CLOSE_SCORE * (raw - u) / (c - u)
        high = CLOSE_SCORE + (1 - CLOSE_SCORE) * (raw - c) / (1 - c)
        return np.clip(np.where(raw < c, low, high), 0.0, 1.0).astype(np.float32)

    def mixed(self, other: SideReference, share: float) -> SideReference:
        """The reference of ``(1 - share) * this side + share * other`` (anchors mixed linearly)."""
        return SideReference((1 - share) * self.unrelated + share * other.unrelated,
                             (1 - share) * self.close + share * other.close)


def random_pairs(rows: np.ndarray, n_pairs: int = DEFAULT_PAIRS, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n_pairs`` random pairs of distinct entries of ``rows`` (with replacement across pairs)."""
    rows = np.asarray(rows)
    if len(rows) < 2:
        return rows[:0], rows[:0]
    rng = np.random.default_rng(seed)
    a = rng.integers(0, len(rows), n_pairs)
    b = (a + rng.integers(1, len(rows), n_pairs)) % len(rows)  # never a == b
    return rows[a], rows[b]


def _probes(rows: np.ndarray, n: int, seed: int) -> np.ndarray:
    rows = np.asarray(rows)
    return rows if len(rows) <= n else np.random.default_rng(seed).choice(rows, n, replace=False)


def dense_reference(vectors: np.ndarray, rows: np.ndarray, n_pairs: int = DEFAULT_PAIRS, seed: int = 0,
                    block: int = 4096, nearest: np.ndarray | None = None) -> SideReference:
    """Reference of a dense side (L2-normalised rows) from sampled pairs of ``rows``.

    ``nearest``: the similarity of sampled products to their nearest other product, if the caller
    has them (e.g. from an ANN index); otherwise ``DEFAULT_PROBES`` products are scanned exactly.
    """
    from recommender.store.vector_file import read_rows  # mapped files read with pread, not through the map

    if len(rows) > SAMPLED_PAIRS_ABOVE:
        pool = np.sort(_probes(rows, PAIR_POOL, seed + 1))
        a, b = random_pairs(np.arange(len(pool)), n_pairs, seed)
        pooled = read_rows(vectors, pool)
        sims = np.einsum("ij,ij->i", pooled[a], pooled[b])
    else:
        a, b = random_pairs(rows, n_pairs, seed)
        if not len(a):
            return SideReference()
        sims = np.concatenate([np.einsum("ij,ij->i", vectors[a[s:s + block]].astype(np.float32),
                                         vectors[b[s:s + block]].astype(np.float32))
                               for s in range(0, len(a), block)])
    if nearest is None:
        probes = _probes(rows, DEFAULT_PROBES, seed)
        live = np.zeros(len(vectors), dtype=bool)
        live[rows] = True
        nearest = np.empty(len(probes), np.float32)
        step = max(1, 50_000_000 // max(len(vectors), 1))
        for s in range(0, len(probes), step):
            p = probes[s:s + step]
            sim = np.empty((len(p), len(vectors)), np.float32)
            q = read_rows(vectors, p)
            for b in range(0, len(vectors), 65_536):  # no full-size float32 copy of a 16-bit matrix
                sim[:, b:b + 65_536] = q @ read_rows(vectors, slice(b, b + 65_536)).T
            sim[:, ~live] = -np.inf
            sim[np.arange(len(p)), p] = -np.inf
            nearest[s:s + step] = sim.max(axis=1)
    return SideReference(float(np.median(sims)), float(np.median(nearest)))


def sparse_reference(matrix: sp.csr_matrix, rows: np.ndarray, n_pairs: int = DEFAULT_PAIRS,
                     seed: int = 0) -> SideReference:
    """Reference of a sparse side (L2-normalised CSR rows) from sampled pairs of ``rows``."""
    a, b = random_pairs(rows, n_pairs, seed)
    if not len(a):
        return SideReference()
    sims = np.asarray(matrix[a].multiply(matrix[b]).sum(axis=1)).ravel()
    probes = _probes(rows, DEFAULT_PROBES, seed)
    live = np.zeros(matrix.shape[0], dtype=bool)
    live[rows] = True
    sim = (matrix[probes] @ matrix.T).tocsr()
    nearest = np.zeros(len(probes), np.float32)
    for i, p in enumerate(probes):
        cols, vals = sim.indices[sim.indptr[i]:sim.indptr[i + 1]], sim.data[sim.indptr[i]:sim.indptr[i + 1]]
        ok = (cols != p) & live[cols]
        nearest[i] = vals[ok].max() if ok.any() else 0.0
    return SideReference(float(np.median(sims)), float(np.median(nearest)))


def self_match_reference(matrix: sp.csr_matrix, queries: sp.csr_matrix, rows: np.ndarray,
                         random_floor: bool = False) -> SideReference:
    """Reference for text queries: ``unrelated`` 0 (no word in common) and ``close`` the median
    similarity of a product to a query made of its own name (``queries[i]`` for ``rows[i]``).

    ``random_floor``: ``unrelated`` is instead the median similarity of each name query to another
    (random) product - for a metadata side with a sentence embedding, where texts with no word in common
    still have a positive cosine (~.1 on the demo), which would otherwise count as evidence of a match."""
    if not len(rows):
        return SideReference()
    own = np.asarray(matrix[rows].multiply(queries).sum(axis=1)).ravel()
    own = own[own > 0]
    unrelated = 0.0
    if random_floor and len(rows) > 1:  # rows are a random sample: each query against its neighbour's row
        other = np.asarray(matrix[np.roll(rows, 1)].multiply(queries).sum(axis=1)).ravel()
        unrelated = float(np.median(other))
    return SideReference(unrelated, float(np.median(own))) if len(own) else SideReference()
