"""Constants and helpers shared by the API tests (imported by conftest and test modules)."""

from __future__ import annotations

import socket
from pathlib import Path

from recommender.api.settings import ApiSettings
from recommender.catalog.loader import DEMO_CATALOG

DEMO_DIR = DEMO_CATALOG.parent
API_KEY = "test-key-0123456789"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
# Demo images that are not in the small catalog: new products for write tests.
EXTRA_IMAGES = ("basketball.jpg", "football.jpg", "allstar-sneakers.jpg", "balloon-chair.jpg")


def settings_for(data_dir: Path, cache: Path, **overrides) -> ApiSettings:
    base = {"data_dir": data_dir, "cache_dir_override": cache, "api_key": API_KEY, "backbone": "efficientnet_lite0",
            "database_url": "", "sync_interval_s": 0.2}
    return ApiSettings(**{**base, **overrides})



def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
