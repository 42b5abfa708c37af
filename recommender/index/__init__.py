"""Vector indexes behind one small add/remove/search interface (see ``base``; backends chosen in ``factory``)."""

from recommender.index.base import VectorIndex
from recommender.index.factory import index_kinds, make_index, register_backend
from recommender.index.persist import load_index, save_index

__all__ = ["VectorIndex", "index_kinds", "load_index", "make_index", "register_backend", "save_index"]
