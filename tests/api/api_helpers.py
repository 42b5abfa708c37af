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



RETAIL = DEMO_DIR.parents[0] / "online-retail"
SMALL_CF = {"factors": 16, "iterations": 3}  # as tests/test_cf.py's small_cf()


def write_retail_slice(out: Path, n_items: int, n_users: int) -> tuple[Path, list[str], list[str]]:
    """The ``n_items`` best-selling Online Retail products and the ``n_users`` customers who bought most of
    them, as ``out/catalog.parquet`` + ``out/interactions.parquet``; returns ``(out, user ids, item ids)``."""
    import pandas as pd

    inter = pd.read_parquet(RETAIL / "interactions.parquet")
    items = list(inter["item_id"].value_counts().index[:n_items])
    inter = inter[inter["item_id"].isin(items)]
    users = list(inter["user_id"].value_counts().index[:n_users])
    inter = inter[inter["user_id"].isin(users)]
    catalog = pd.read_parquet(RETAIL / "catalog.parquet")
    catalog[catalog["id"].isin(items)].to_parquet(out / "catalog.parquet")
    inter.to_parquet(out / "interactions.parquet")
    return out, [str(u) for u in users], [str(i) for i in items]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
