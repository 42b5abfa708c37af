"""Hybrid product recommender: image (CNN embeddings) + metadata (TF-IDF / one-hot) similarity.

Importing the package is cheap: names load on first use (PEP 562), TensorFlow only when an image
model is needed, so ``python -m recommender --help`` answers at once. TensorFlow's start-up noise is silenced here,
before anything can import it (see :mod:`recommender._quiet_tensorflow`).
"""

from importlib import import_module

from recommender import _quiet_tensorflow

_quiet_tensorflow.install()

_EXPORTS = {
    "Catalog": "catalog.loader", "load_catalog": "catalog.loader",
    "CatalogError": "errors", "ImageError": "errors", "QueryError": "errors", "RecommenderError": "errors",
    "WeightsUnavailableError": "errors",
    "ExactIndex": "index.exact",
    "MetadataEncoder": "features.metadata",
    "ImageEmbedder": "features.embedders",
    "Filters": "ranking.hybrid", "HybridRanker": "ranking.hybrid",
    "HybridRecommender": "recommender", "Recommendation": "recommender", "Recommendations": "recommender",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
