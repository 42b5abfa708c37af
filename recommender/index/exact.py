"""Exact cosine search: the reference every other backend of :class:`VectorIndex` is measured against.

Brute force over an L2-normalised float32 matrix: exact, and the right choice for small catalogs
and tests; larger catalogs use an ANN backend behind the same interface (see ``factory``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recommender.index.base import VectorIndex, check_ids


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), as float32."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


class ExactIndex(VectorIndex):
    """Exact cosine search: one float32 row per id (row ``i`` holds id ``i``), brute-force scan.

    ``expected_size`` reserves that many rows up front; beyond it the matrix grows by doubling, and
    ``add`` normalises in chunks straight into it, so adding N vectors peaks at about N rows plus the
    caller's input (not three copies of it).
    """

    kind = "exact"
    _FILE = "exact.npz"
    _CHUNK = 16_384

    def __init__(self, dim: int, expected_size: int = 0) -> None:
        super().__init__(dim)
        self.expected_size = max(int(expected_size), 0)
        self._x = np.zeros((0, self.dim), dtype=np.float32)  # capacity rows; the first _n are id slots
        self._live = np.zeros(0, dtype=bool)
        self._n = 0

    @property
    def ntotal(self) -> int:
        return int(self._live[:self._n].sum())

    def _reserve(self, n: int) -> None:
        if n <= len(self._x):
            return
        cap = max(n, 2 * len(self._x), self.expected_size)
        x = np.zeros((cap, self.dim), dtype=np.float32)
        x[:self._n] = self._x[:self._n]
        live = np.zeros(cap, dtype=bool)
        live[:self._n] = self._live[:self._n]
        self._x, self._live = x, live

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        vectors = self._check(vectors)
        ids = check_ids(ids, len(vectors))
        if not len(ids):
            return
        need = int(ids.max()) + 1
        self._reserve(need)
        self._n = max(self._n, need)
        for s in range(0, len(ids), self._CHUNK):
            self._x[ids[s:s + self._CHUNK]] = l2_normalise(vectors[s:s + self._CHUNK])
        self._live[ids] = True

    def remove(self, ids: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64).ravel()
        ids = ids[(ids >= 0) & (ids < self._n)]
        self._live[ids] = False
        self._x[ids] = 0.0

    def get_vectors(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64).ravel()
        if len(ids) and (ids.min() < 0 or ids.max() >= self._n or not self._live[ids].all()):
            raise KeyError("some ids are not in the index")
        return self._x[ids]

    def scores(self, q: np.ndarray) -> np.ndarray:
        """Cosine of each query row to every id slot: ``(n_queries, max_id + 1)``; removed ids score 0."""
        # A float64 query would silently upcast the whole matrix product (~6x slower).
        return self._check_query(q) @ self._x[:self._n].T

    def search(
        self, q: np.ndarray, k: int, allow: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        k = self._check_k(k)
        keep = self._live[:self._n].copy()
        if allow is not None:
            allow = np.asarray(allow)
            if allow.dtype != bool or allow.ndim != 1:
                raise ValueError(f"allow must be a 1-d boolean mask by id, got {allow.dtype} {allow.shape}")
            n = min(len(allow), len(keep))
            keep[:n] &= allow[:n]
            keep[n:] = False
            allowed = np.flatnonzero(keep)
            if len(allowed) < len(keep) // 4:
                # Score only the allowed rows: a selective filter makes the scan cheaper, not dearer.
                return top_k_among(self._check_query(q), self._x[allowed], allowed, k)
        s = self.scores(q)
        s = np.where(keep[None, :], s, -np.inf)
        return top_k(s, k)

    def save(self, folder: Path | str) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / self._FILE, x=self._x[:self._n], live=self._live[:self._n])

    @classmethod
    def load(cls, folder: Path | str) -> ExactIndex:
        with np.load(Path(folder) / cls._FILE, allow_pickle=False) as data:
            x, live = data["x"], data["live"]
        if x.ndim != 2 or x.dtype != np.float32 or live.dtype != bool or live.shape != (len(x),):
            raise ValueError(f"{folder}: not a saved exact index")
        index = cls(x.shape[1])
        index._x, index._live, index._n = x, live, len(x)
        return index


def top_k_among(q: np.ndarray, rows: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of normalised queries ``q`` among ``rows`` (labelled ``ids``, ascending), padded as ``top_k``."""
    if not len(ids):
        return np.full((len(q), k), -np.inf, np.float32), np.full((len(q), k), -1, np.int64)
    scores, pos = top_k(q @ rows.T, k)
    return scores, np.where(pos >= 0, ids[np.maximum(pos, 0)], -1)


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
