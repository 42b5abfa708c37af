"""Vector index with faiss's shape: ``add(x)``, ``search(q, k) -> (scores, ids)``.

:class:`ExactIndex` is brute-force cosine over an L2-normalised float32 matrix - exact, and fast
enough for catalogs up to a few hundred thousand items on a laptop. An ANN index or a vector
database can stand behind the same three methods.
"""

from __future__ import annotations

import numpy as np


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), as float32."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


class ExactIndex:
    """Exact cosine similarity search; ids are row numbers in the order vectors were added."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._x = np.empty((0, dim), dtype=np.float32)

    @property
    def ntotal(self) -> int:
        return self._x.shape[0]

    def add(self, x: np.ndarray) -> None:
        x = np.atleast_2d(np.asarray(x))
        if x.shape[1] != self.dim:
            raise ValueError(f"vectors have {x.shape[1]} dimensions, the index {self.dim}")
        if not np.isfinite(x).all():
            raise ValueError("vectors contain NaN or infinity")
        self._x = np.concatenate([self._x, l2_normalise(x)])

    def scores(self, q: np.ndarray) -> np.ndarray:
        """Cosine similarity of each query row to every indexed vector: ``(n_queries, ntotal)``."""
        # A float64 query would silently upcast the whole matrix product (~6x slower).
        q = l2_normalise(np.atleast_2d(q))
        if q.shape[1] != self.dim:
            raise ValueError(f"query has {q.shape[1]} dimensions, the index {self.dim}")
        return q @ self._x.T

    def search(
        self, q: np.ndarray, k: int, mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` by cosine. ``mask`` (bool, ``ntotal``) keeps only the rows marked True.

        Returns ``(scores, ids)`` of shape ``(n_queries, k)``; where fewer than ``k`` rows are
        eligible the remainder is padded with score ``-inf`` and id ``-1`` (as faiss does).
        """
        s = self.scores(q)
        if mask is not None:
            s = np.where(np.asarray(mask, dtype=bool)[None, :], s, -np.inf)
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
