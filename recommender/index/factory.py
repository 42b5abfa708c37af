"""Choose an index backend by name (or by catalog size for ``"auto"``).

Backends register a class under their ``kind``: ``cls(dim, expected_size=...)`` builds an empty index
and ``cls.load(folder)`` reads a saved one (see ``persist``). A backend living in its own module
(e.g. Milvus) registers itself with ``register_backend("milvus", MilvusIndex)`` or is listed in
``_LAZY`` so that importing this module never imports its client library.
"""

from __future__ import annotations

import importlib

from recommender.index.base import VectorIndex
from recommender.index.exact import ExactIndex

#: ``"auto"`` uses the exact scan below this many products, HNSW from here on. Measured (docs/index.md,
#: ``bench/bench_index.py libs``): exact 2280-d single-query p50 is ~4 ms at 20k and grows linearly
#: (31 ms at 100k), while HNSW stays near 1 ms; below 20k the exact scan is fast enough, needs no build
#: (an HNSW build costs ~1 s per 10k vectors on these 2 cores) and is exact, filters included.
AUTO_EXACT_MAX = 20_000
#: ``"auto"`` above :data:`AUTO_EXACT_MAX` searches a PCA-reduced copy (``"ivf_pca"``) when vectors are wider
#: than this: the index then holds ~0.5 KB per vector instead of a second full copy (9 KB at 2280-d), and the
#: façade re-scores its candidates with the full vectors (docs/index.md, "Reduced vectors"). An inverted file
#: rather than the HNSW graph (``"hnsw_pca"``): equal hybrid recall at 100k, half the cold-fit CPU there, and
#: a build in well under a minute at 1M where the graph took 620 s (docs/index.md, "IVF or HNSW").
AUTO_REDUCE_ABOVE_DIM = 512

_BACKENDS: dict[str, type[VectorIndex]] = {"exact": ExactIndex}
#: kind -> "module:Class", imported on first use (keeps hnswlib out of a small catalog's process).
_LAZY: dict[str, str] = {"hnsw": "recommender.index.hnsw:HNSWIndex"}
_LAZY["hnsw_pca"] = "recommender.index.reduced:ReducedHNSWIndex"
_LAZY["ivf"] = "recommender.index.ivf:IVFIndex"
_LAZY["ivf_pca"] = "recommender.index.reduced:ReducedIVFIndex"
_LAZY["milvus"] = "recommender.index.milvus:MilvusIndex"  # optional extra: requirements-milvus.txt


def register_backend(kind: str, cls: type[VectorIndex]) -> None:
    """Make ``make_index(kind, ...)`` and ``load_index`` know another backend class."""
    if not kind or kind == "auto":
        raise ValueError(f"cannot register an index backend as {kind!r}")
    _BACKENDS[kind] = cls


def index_kinds() -> tuple[str, ...]:
    """Every kind ``make_index`` accepts, ``"auto"`` first."""
    return ("auto", *sorted(set(_BACKENDS) | set(_LAZY)))


def backend_class(kind: str) -> type[VectorIndex]:
    """The class registered under ``kind``; ``ValueError`` listing the kinds if there is none."""
    if kind not in _BACKENDS and kind in _LAZY:
        module, name = _LAZY[kind].split(":")
        _BACKENDS[kind] = getattr(importlib.import_module(module), name)
    if kind not in _BACKENDS:
        raise ValueError(f"unknown index kind {kind!r} (choose from {', '.join(index_kinds())})")
    return _BACKENDS[kind]


def resolve_kind(kind: str, expected_size: int = 0, dim: int = 0) -> str:
    """The concrete kind ``make_index`` would build: ``"auto"`` -> ``"exact"`` below :data:`AUTO_EXACT_MAX`
    products, else ``"ivf_pca"`` for vectors wider than :data:`AUTO_REDUCE_ABOVE_DIM`, else ``"hnsw"``."""
    if kind == "auto":
        if expected_size < AUTO_EXACT_MAX:
            return "exact"
        return "ivf_pca" if dim > AUTO_REDUCE_ABOVE_DIM else "hnsw"
    backend_class(kind)
    return kind


def make_index(kind: str, dim: int, expected_size: int = 0) -> VectorIndex:
    """A new empty index of ``kind`` for ``dim``-dimensional vectors, sized for ``expected_size`` of them.

    ``"auto"`` picks by ``expected_size`` (the catalog's size) and ``dim``: see :func:`resolve_kind`.
    """
    if not isinstance(kind, str):
        raise ValueError(f"index kind must be a string, got {kind!r}")
    if int(dim) < 1:
        raise ValueError(f"dim must be >= 1, got {dim}")
    return backend_class(resolve_kind(kind, expected_size, int(dim)))(int(dim),
                                                                      expected_size=max(int(expected_size), 0))


# Kept for callers that imported the tuple; ``index_kinds()`` also lists registered backends.
INDEX_KINDS = ("auto", "exact", "hnsw")
