"""Exact cosine search: the reference every other backend of :class:`VectorIndex` is measured against.

Brute force over an L2-normalised float32 matrix: exact, and the right choice for small catalogs
and tests; larger catalogs use an ANN backend behind the same interface (see ``factory``).
"""

from __future__ import annotations

import numpy as np

from recommender.index.base import VectorIndex


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), as float32."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


class ExactIndex(VectorIndex):
    """Exact cosine search: one float32 row per id (row ``i`` holds id ``i``), brute-force scan."""

    kind = "exact"

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self._x = np.zeros((0, self.dim), dtype=np.float32)
        self._live = np.zeros(0, dtype=bool)

    @property
    def ntotal(self) -> int:
        return int(self._live.sum())

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        x = l2_normalise(self._check(vectors))
        ids = np.asarray(ids, dtype=np.int64).ravel()
        if len(ids) != len(x):
            raise ValueError(f"{len(ids)} ids for {len(x)} vectors")
        if len(ids) and ids.min() < 0:
            raise ValueError("ids must be non-negative")
        need = int(ids.max()) + 1 if len(ids) else 0
        if need > len(self._live):
            grow = need - len(self._live)
            self._x = np.concatenate([self._x, np.zeros((grow, self.dim), np.float32)])
            self._live = np.concatenate([self._live, np.zeros(grow, bool)])
        self._x[ids] = x
        self._live[ids] = True

    def remove(self, ids: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64).ravel()
        ids = ids[(ids >= 0) & (ids < len(self._live))]
        self._live[ids] = False
        self._x[ids] = 0.0

    def scores(self, q: np.ndarray) -> np.ndarray:
        """Cosine of each query row to every id slot: ``(n_queries, max_id + 1)``; removed ids score 0."""
        # A float64 query would silently upcast the whole matrix product (~6x slower).
        q = l2_normalise(np.atleast_2d(q))
        if q.shape[1] != self.dim:
            raise ValueError(f"query has {q.shape[1]} dimensions, the index {self.dim}")
        return q @ self._x.T

    def search(
        self, q: np.ndarray, k: int, allow: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        s = self.scores(q)
        keep = self._live.copy()
        if allow is not None:
            allow = np.asarray(allow, dtype=bool)
            n = min(len(allow), len(keep))
            keep[:n] &= allow[:n]
            keep[n:] = False
        s = np.where(keep[None, :], s, -np.inf)
        return top_k(s, k)


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise top-k of a score matrix, best first, ties broken by lower id; -inf entries -> id -1."""
    scores = np.atleast_2d(scores)
    n = scores.shape[1]
    k_eff = min(k, n)
    if k_eff == 0:
        return np.full((scores.shape[0], k), -np.inf, np.float32), np.full((scores.shape[0], k), -1)
    part = np.argpartition(-scores, k_eff - 1, axis=1)[:, :k_eff] if k_eff < n else \
        np.tile(np.arange(n), (scores.shape[0], 1))
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -part_scores), axis=1)
    ids = np.take_along_axis(part, order, axis=1)
    top = np.take_along_axis(part_scores, order, axis=1).astype(np.float32)
    ids = np.where(np.isfinite(top) | (top > 0), ids, -1)
    if k > k_eff:
        pad = k - k_eff
        top = np.pad(top, ((0, 0), (0, pad)), constant_values=-np.inf)
        ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
    return top, ids
