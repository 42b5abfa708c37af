"""Fixtures for the API tests: services on temporary databases, sharing one embedding cache.

``demo_client``: the bundled demo catalog (read-only tests share it). ``make_client``: a fresh
service on a 6-product copy of the demo, for tests that write. Every service is loaded before
its TestClient starts, so no test waits on the background loader.
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from recommender.api.app import create_app
from recommender.api.deps import Service
from recommender.api.settings import ApiSettings
from recommender.catalog.loader import DEMO_CATALOG

API_KEY = "test-key-0123456789"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
DEMO_DIR = DEMO_CATALOG.parent
# Demo images that are not in the small catalog: new products for write tests.
EXTRA_IMAGES = ("basketball.jpg", "football.jpg", "allstar-sneakers.jpg", "balloon-chair.jpg")


def settings_for(data_dir: Path, cache: Path, **overrides) -> ApiSettings:
    base = {"data_dir": data_dir, "cache_dir_override": cache, "api_key": API_KEY, "backbone": "efficientnet_lite0",
            "database_url": "", "sync_interval_s": 0.2}
    return ApiSettings(**{**base, **overrides})


@pytest.fixture(scope="session")
def api_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("api-cache")


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
