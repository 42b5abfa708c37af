"""Service configuration: environment variables ``RECOMMENDER_*`` or a settings file (pydantic-settings).

The settings file is a ``KEY=value`` file (``.env`` format) named by ``RECOMMENDER_SETTINGS_FILE``
or ``serve --settings FILE``; environment variables win over it. Nothing secret has a default:
with no ``RECOMMENDER_API_KEY`` every write is refused.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from recommender.catalog.loader import DEMO_CATALOG

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA_DIR = REPO_ROOT / "var"


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RECOMMENDER_", extra="ignore", env_file_encoding="utf-8",
                                      populate_by_name=True)

    data_dir: Path = Field(DEFAULT_DATA_DIR, description="the SQLite file, stored images and the vector cache")
    database_url: str = Field("", description="SQLAlchemy URL (default: sqlite file data_dir/catalog.db; "
                              "postgresql+psycopg://user@host:port/db for PostgreSQL)")
    image_root: Path = Field(DEMO_CATALOG.parent, description="PUT/batch image paths are relative to this folder "
                             "and must stay inside it")
    seed_catalog: str = Field(str(DEMO_CATALOG), description="catalog imported on first start when the database "
                              "is empty ('' = start empty)")
    cache_dir_override: Path | None = Field(None, alias="RECOMMENDER_CACHE_DIR",
                                            description="vector cache folder (default: data_dir/cache)")
    api_key: SecretStr | None = Field(None, description="write key(s), comma-separated; none = writes refused")
    public_reads: bool = Field(True, description="false = reads need the key too")
    backbone: str = "auto"
    index_kind: str = Field("auto", description="image index: auto | exact | hnsw | milvus")
    milvus_uri: str = Field("", description="index_kind=milvus: a milvus-lite file (*.db) or a server URL "
                            "http(s)://host:19530 (default: milvus.db in the cache folder, as the CLI's build)")
    milvus_token: SecretStr | None = Field(None, description="Milvus server credentials user:password or API key")
    milvus_collection: str = Field("", description="Milvus collection ('' = one per catalog and backbone)")
    model_params: dict[str, float | int | str | bool] = Field(
        default_factory=dict, description='more HybridRecommender parameters as JSON, e.g. {"dba_k": 0}')
    max_limit: int = Field(100, ge=1, le=10_000, description="largest limit a request may ask for")
    max_batch: int = Field(1000, ge=1, description="largest number of products in one batch request")
    max_body_mb: float = Field(12.0, gt=0, description="largest request body")
    max_upload_mb: float = Field(10.0, gt=0, description="largest uploaded image")
    max_pixels: int = Field(40_000_000, ge=1)
    request_timeout_s: float = Field(30.0, gt=0)
    cors_origins: str = Field("", description="comma-separated origins allowed by CORS ('*' = any); '' = no CORS")
    max_concurrent_queries: int = Field(os.cpu_count() or 2, ge=1, description="recommendation queries computed "
                                        "at once per worker (more wait their turn: no thrashing of the cores)")
    kernel_threads: int = Field(1, ge=1, description="BLAS / OpenMP threads a query's numeric kernels use "
                                "(concurrency comes from the query slots and the workers instead)")
    sync_interval_s: float = Field(0.5, gt=0, description="how often a worker applies writes other workers took")
    interactions: str = Field("", description="customer interactions file (.csv/.parquet) fitted at start for "
                              "/v1/users/{id}/recommendations and /v1/events, plus the events stored in the "
                              "database ('' = the stored events only; neither = no customer endpoints)")
    cf_refit_interval_s: float = Field(3600.0, ge=0, description="full refit of the customer model (new products, "
                                       "item factors) at most this often when events or products changed since "
                                       "the last fit; events apply incrementally between refits (0 = only at "
                                       "start and reindex)")
    cf_params: dict[str, float | int | str | bool] = Field(
        default_factory=dict, description='CollaborativeFilter parameters as JSON, e.g. {"factors": 64}')

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, v: str) -> str:
        from recommender.cli import BACKBONE_CHOICES

        if v not in BACKBONE_CHOICES:
            raise ValueError(f"unknown backbone {v!r} (choose from {', '.join(BACKBONE_CHOICES)})")
        return v

    @field_validator("index_kind")
    @classmethod
    def _known_index(cls, v: str) -> str:
        from recommender.index.factory import index_kinds

        if v not in index_kinds():
            raise ValueError(f"unknown index kind {v!r} (choose from {', '.join(index_kinds())})")
        return v

    @field_validator("milvus_uri")
    @classmethod
    def _milvus_uri(cls, v: str) -> str:
        from recommender.index.milvus_expr import MilvusError, check_uri

        try:
            return check_uri(v) if v.strip() else ""
        except MilvusError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("milvus_collection")
    @classmethod
    def _milvus_collection(cls, v: str) -> str:
        if v and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,254}", v):
            raise ValueError("a Milvus collection name is letters, digits and _ (starting with a letter or _), "
                             "at most 255 characters")
        return v

    @property
    def index_options(self) -> dict[str, object]:
        """What the recommender's index backend is built with (the token stays a SecretStr)."""
        if self.index_kind != "milvus":
            return {}
        return {"uri": self.milvus_uri or str(self.cache_dir / "milvus.db"), "token": self.milvus_token,
                "collection": self.milvus_collection or None}

    @property
    def url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'catalog.db'}"

    @property
    def media_dir(self) -> Path:
        return self.data_dir / "media"

    @property
    def cache_dir(self) -> Path:
        return self.cache_dir_override or self.data_dir / "cache"

    @property
    def api_keys(self) -> list[str]:
        raw = self.api_key.get_secret_value() if self.api_key else ""
        return [k.strip() for k in raw.split(",") if k.strip()]

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


def load_settings(settings_file: Path | str | None = None, **overrides) -> ApiSettings:
    """Settings from the environment, the settings file (argument or ``RECOMMENDER_SETTINGS_FILE``), overrides."""
    from recommender.errors import RecommenderError

    path = settings_file or os.environ.get("RECOMMENDER_SETTINGS_FILE") or None
    if path is not None and not Path(path).is_file():
        raise RecommenderError(f"settings file {path} not found")
    try:
        return ApiSettings(_env_file=path, **overrides)
    except ValueError as exc:
        first = str(exc).splitlines()
        text = " ".join(" ".join(first[1:3]).split()) if len(first) > 2 else " ".join(str(exc).split())
        # pydantic appends the rejected value ("input_value='http://user:password@...'"): never echo it
        text = re.sub(r" ?\[type=.*", "", text)
        raise RecommenderError(f"invalid settings: {text}") from None
