"""Shared fixtures: the real demo catalog and one recommender fitted on it with real weights.

The recommender uses a private cache folder, so tests neither depend on nor disturb the cache a
person's `python -m recommender build` left in data/demo/.cache.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from recommender import HybridRecommender, load_catalog
from recommender.catalog.loader import DEMO_CATALOG

DEMO_DIR = DEMO_CATALOG.parent


@pytest.fixture(scope="session")
def demo_catalog():
    return load_catalog(DEMO_CATALOG)


@pytest.fixture(scope="session")
def demo_recommender(demo_catalog, tmp_path_factory):
    cache = tmp_path_factory.mktemp("demo-cache")
    return HybridRecommender(backbone="efficientnet_lite0", cache_dir=cache).fit(demo_catalog)


@pytest.fixture(scope="session")
def lite0_embedder():
    """Plain EfficientNet-Lite0 features (no levers): the backbone as it is."""
    from recommender.features.embedders import ImageEmbedder

    return ImageEmbedder("efficientnet_lite0").fit()


@pytest.fixture()
def small_catalog_dir(tmp_path: Path, demo_catalog) -> Path:
    """A 6-product copy of the demo catalog (CSV + images) that a test may modify freely."""
    ids = ["laptop", "tennis-ball", "ultraboost-running-shoe", "t-shirt", "red-wine", "orchid"]
    items = demo_catalog.items.set_index("id").loc[ids].reset_index()
    (tmp_path / "images").mkdir()
    for rel in items["image"]:
        shutil.copy(DEMO_DIR / rel, tmp_path / rel)
    items.to_csv(tmp_path / "catalog.csv", index=False)
    return tmp_path
