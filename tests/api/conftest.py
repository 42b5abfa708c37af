"""Fixtures for the API tests: services on temporary databases, sharing one embedding cache.

``demo_client``: the bundled demo catalog (read-only tests share it). ``make_client``: a fresh
service on a 6-product copy of the demo, for tests that write. Every service is loaded before
its TestClient starts, so no test waits on the background loader.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from api_helpers import DEMO_DIR, EXTRA_IMAGES, settings_for
from fastapi.testclient import TestClient

from recommender.api.app import create_app
from recommender.api.deps import Service
from recommender.catalog.loader import DEMO_CATALOG


@pytest.fixture(scope="session")
def api_cache(demo_recommender) -> Path:
    """The embedding cache the suite's shared demo recommender filled: the demo is embedded once per run."""
    return Path(demo_recommender.cache_dir)


@pytest.fixture(scope="session")
def demo_service(tmp_path_factory, api_cache) -> Service:
    data = tmp_path_factory.mktemp("api-demo")
    return Service(settings_for(data, api_cache, seed_catalog=str(DEMO_CATALOG), image_root=DEMO_DIR)).open()


@pytest.fixture(scope="session")
def demo_client(demo_service):
    with TestClient(create_app(service=demo_service)) as client:
        yield client


@pytest.fixture()
def small_dir(small_catalog_dir: Path) -> Path:
    """The 6-product catalog folder plus a few more demo images (``extra/``) to add as new products."""
    (small_catalog_dir / "extra").mkdir()
    for name in EXTRA_IMAGES:
        shutil.copy(DEMO_DIR / "images" / name, small_catalog_dir / "extra" / name)
    return small_catalog_dir


@pytest.fixture()
def make_client(small_dir, api_cache, tmp_path_factory):
    """``make_client(**settings)``: a TestClient over a fresh service seeded with the small catalog."""
    clients = []

    def make(**overrides) -> TestClient:
        data = tmp_path_factory.mktemp("api-data")
        s = settings_for(data, api_cache, **{"seed_catalog": str(small_dir / "catalog.csv"),
                                             "image_root": small_dir, **overrides})
        client = TestClient(create_app(service=Service(s).open()))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.__exit__(None, None, None)
