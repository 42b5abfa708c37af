"""Choose an index backend by name (or by catalog size for ``"auto"``)."""

from __future__ import annotations

from recommender.index.base import VectorIndex
from recommender.index.exact import ExactIndex

INDEX_KINDS = ("auto", "exact")


def make_index(kind: str, dim: int, expected_size: int = 0) -> VectorIndex:
    """A new empty index of ``kind`` for ``dim``-dimensional vectors.

    ``"auto"`` picks by ``expected_size`` (the catalog's size); today every size gets ``exact``.
    """
    if kind not in INDEX_KINDS:
        raise ValueError(f"unknown index kind {kind!r} (choose from {', '.join(INDEX_KINDS)})")
    return ExactIndex(dim)
