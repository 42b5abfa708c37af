"""The one index interface every backend implements (exact numpy, in-process ANN, Milvus).

faiss-shaped and small on purpose: ``add(ids, vectors)``, ``remove(ids)``,
``search(q, k, allow) -> (scores, ids)``. Ids are non-negative int64 labels chosen by the caller
(the recommender uses catalog row numbers), so a backend never owns the id space and a product's
vector can be replaced or removed without a rebuild. Similarity is the inner product of
L2-normalised vectors (cosine); backends normalise what they are given.

Optional methods every in-process backend honours (a remote one may raise ``NotImplementedError``):
``get_vectors(ids)`` (the stored, normalised vectors: the exact fallback of a selective filter and
re-scoring need them), ``save(folder)`` / ``cls.load(folder)`` (use
:func:`recommender.index.persist.save_index` / ``load_index``, which add the content key, the
manifest and the atomic swap).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np


def check_ids(ids: np.ndarray, n_vectors: int) -> np.ndarray:
    """``ids`` as a 1-d int64 array of ``n_vectors`` non-negative labels, or a ``ValueError``."""
    raw = np.asarray(ids).ravel()
    if raw.size and not (np.issubdtype(raw.dtype, np.integer) or
                         (np.issubdtype(raw.dtype, np.floating) and np.all(np.isfinite(raw)) and
                          np.all(raw == np.round(raw)))):
        raise ValueError(f"ids must be integers, got {raw.dtype}")
    out = raw.astype(np.int64)
    if len(out) != n_vectors:
        raise ValueError(f"{len(out)} ids for {n_vectors} vectors")
    if len(out) and out.min() < 0:
        raise ValueError("ids must be non-negative")
    return out


def upsert_batch(ids: np.ndarray, rows):
    """``(ids, rows)`` of an add/upsert, checked (``check_ids``) and with a repeated id's last row winning.

    ``rows`` is anything indexable by a position array with ``shape[0]`` rows (dense or CSR)."""
    ids = check_ids(ids, rows.shape[0])
    if len(ids) == 0:
        return ids, rows
    _, last = np.unique(ids[::-1], return_index=True)
    keep = np.sort(len(ids) - 1 - last)
    return ids[keep], rows[keep]


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
        over-fetching and dropping (save an allow-set missing only :data:`FEW_DENIED` live ids, which
        :func:`search_all_but` serves exactly with that many more hits). Returns ``(scores, ids)``, both
        ``(n_queries, k)`` (float32, int64); where fewer than ``k`` ids qualify, the rest is padded with score
        ``-inf`` and id ``-1`` (as faiss does).
        """

    def get_vectors(self, ids: np.ndarray) -> np.ndarray:
        """The stored (L2-normalised) vectors of these live ids, ``(len(ids), dim)`` float32; ``KeyError`` if one is
        absent."""
        raise NotImplementedError(f"{type(self).__name__} does not return stored vectors")

    def save(self, folder: Path | str) -> None:
        """Write everything needed to :meth:`load` this index into ``folder`` (files owned by the backend)."""
        raise NotImplementedError(f"{type(self).__name__} cannot be saved")

    @classmethod
    def load(cls, folder: Path | str) -> VectorIndex:
        """The index a :meth:`save` wrote into ``folder``; ``ValueError`` if the files are inconsistent."""
        raise NotImplementedError(f"{cls.__name__} cannot be loaded")

    def _check_query(self, q: np.ndarray) -> np.ndarray:
        """Query rows as finite, L2-normalised float32 ``(n, dim)``, or a ``ValueError``."""
        x = _as_numeric(np.atleast_2d(np.asarray(q)))
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"query has {x.shape[-1]} dimensions, the index {self.dim}")
        if not np.issubdtype(x.dtype, np.number) or not np.isfinite(x).all():
            raise ValueError("query contains NaN or infinity")
        from recommender.index.exact import l2_normalise

        return l2_normalise(x)

    @staticmethod
    def _check_k(k: int) -> int:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
            raise ValueError(f"k must be a non-negative integer, got {k!r}")
        return int(k)

    def _check(self, vectors: np.ndarray) -> np.ndarray:
        """Vectors as a finite float32 ``(n, dim)`` array, or a ``ValueError`` saying what is wrong."""
        x = _as_numeric(np.atleast_2d(np.asarray(vectors)))
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"vectors have {x.shape[-1]} dimensions, the index {self.dim}")
        if not np.issubdtype(x.dtype, np.number) or not np.isfinite(x).all():
            raise ValueError("vectors contain NaN or infinity")
        return x.astype(np.float32, copy=False)


#: An allow-set missing at most this many live ids is searched unfiltered for that many more hits.
FEW_DENIED = 16


def search_all_but(index: VectorIndex, q: np.ndarray, k: int, allow: np.ndarray, denied: int):
    """``index.search(q, k, allow)`` for an allow-set missing only ``denied`` live ids (e.g. "more like this"
    leaves out the item itself): an unfiltered search for ``k + denied`` hits, minus the denied ones, finds
    the same top-k without a bitmap of every allowed id (HNSW at 100k: 0.6 of 2.3 ms a query, docs/api.md
    "Measured"; IVF at 1M: 3.0 vs 1.6 ms, docs/index.md)."""
    scores, ids = index.search(q, k + denied)
    out_scores = np.full((len(q), k), -np.inf, np.float32)
    out_ids = np.full((len(q), k), -1, np.int64)
    for r in range(len(q)):
        found = ids[r]
        ok = found >= 0
        ok[ok] = allow[np.minimum(found[ok], len(allow) - 1)] & (found[ok] < len(allow))
        keep = np.flatnonzero(ok)[:k]
        out_scores[r, :len(keep)], out_ids[r, :len(keep)] = scores[r, keep], found[keep]
    return out_scores, out_ids


def _as_numeric(x: np.ndarray) -> np.ndarray:
    """bfloat16 rows (the façade's memory-mapped vectors, ``ml_dtypes``: not a numpy number type) as float32."""
    return x.astype(np.float32) if x.dtype.name == "bfloat16" else x
