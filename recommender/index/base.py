"""The one index interface every backend implements (exact numpy, in-process ANN, Milvus).

faiss-shaped and small on purpose: ``add(ids, vectors)``, ``remove(ids)``,
``search(q, k, allow) -> (scores, ids)``. Ids are non-negative int64 labels chosen by the caller
(the recommender uses catalog row numbers), so a backend never owns the id space and a product's
vector can be replaced or removed without a rebuild. Similarity is the inner product of
L2-normalised vectors (cosine); backends normalise what they are given.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class VectorIndex(ABC):
    """Cosine-similarity search over vectors labelled by caller-chosen int64 ids."""

    #: A short name for ``info`` and ``/v1/stats`` (``"exact"``, ``"hnsw"``, ``"milvus"``, ...).
    kind: str = "abstract"

    def __init__(self, dim: int) -> None:
        self.dim = int(dim)

    @property
    @abstractmethod
    def ntotal(self) -> int:
        """How many vectors are live (added and not removed)."""

    def __len__(self) -> int:
        return self.ntotal

    @abstractmethod
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Insert or replace: an id already present gets the new vector (upsert)."""

    @abstractmethod
    def remove(self, ids: np.ndarray) -> None:
        """Drop these ids from every later search; ids that are not present are ignored."""

    @abstractmethod
    def search(
        self, q: np.ndarray, k: int, allow: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` by cosine for each query row, best first.

        ``allow``: optional boolean mask indexed by id (``allow[id]`` True = may be returned);
        ids beyond its length are not allowed. Backends apply it *during* the search, never by
        over-fetching and dropping. Returns ``(scores, ids)``, both ``(n_queries, k)``
        (float32, int64); where fewer than ``k`` ids qualify, the rest is padded with score
        ``-inf`` and id ``-1`` (as faiss does).
        """

    def _check(self, vectors: np.ndarray) -> np.ndarray:
        """Vectors as a finite float32 ``(n, dim)`` array, or a ``ValueError`` saying what is wrong."""
        x = np.atleast_2d(np.asarray(vectors))
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"vectors have {x.shape[-1]} dimensions, the index {self.dim}")
        if not np.isfinite(x).all():
            raise ValueError("vectors contain NaN or infinity")
        return x.astype(np.float32, copy=False)
