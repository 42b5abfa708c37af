"""Hybrid product recommender: image (CNN embeddings) + metadata (TF-IDF / one-hot) similarity.

Importing the package is cheap: TensorFlow loads only when an image model is needed.
"""

from .catalog import Catalog, load_catalog
from .errors import CatalogError, ImageError, QueryError, RecommenderError, WeightsUnavailableError
from .index import ExactIndex
from .ranker import Filters, HybridRanker
from .recommender import HybridRecommender, Recommendation, Recommendations

__all__ = [
    "Catalog", "CatalogError", "ExactIndex", "Filters", "HybridRanker", "HybridRecommender", "ImageError",
    "QueryError", "Recommendation", "Recommendations", "RecommenderError", "WeightsUnavailableError",
    "load_catalog",
]
