"""Request and response bodies (pydantic): JSON in and out, ids as strings, errors as ``{"detail": ...}``."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

Scalar = str | int | float | bool | None


class ProductFields(BaseModel):
    """The metadata of a product; unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=500)
    description: str = Field("", max_length=20_000)
    category: str = Field("", max_length=200)
    sub_category: str = Field("", max_length=200)
    brand: str = Field("", max_length=200)
    colour: str = Field("", max_length=200, description="several values as 'blue|pink'")
    price: float | None = Field(None, ge=0, allow_inf_nan=False)
    attributes: dict[str, Scalar] = Field(default_factory=dict, max_length=50,
                                          description="other columns (e.g. evaluation labels)")


class ProductIn(ProductFields):
    """PUT body: the metadata, plus the image as a path under the configured image root (or uploaded)."""

    image: str | None = Field(None, max_length=1024, description="path relative to the server's image root")


class BatchProduct(ProductIn):
    id: str = Field(min_length=1, max_length=200)


class BatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    products: list[BatchProduct] = Field(min_length=1)


class ProductPatch(BaseModel):
    """PATCH body: metadata only (no image: a new image is a PUT)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=500)
    description: str | None = Field(None, max_length=20_000)
    category: str | None = Field(None, max_length=200)
    sub_category: str | None = Field(None, max_length=200)
    brand: str | None = Field(None, max_length=200)
    colour: str | None = Field(None, max_length=200)
    price: float | None = Field(None, ge=0, allow_inf_nan=False)


class ProductOut(BaseModel):
    id: str
    name: str
    description: str
    category: str
    sub_category: str
    brand: str
    colour: str
    price: float | None
    attributes: dict[str, Scalar]
    image: str = Field(description="where the image came from (shown only)")
    image_url: str | None = Field(description="the stored image, or null when it could not be used")
    image_sha256: str | None
    image_problem: str | None
    revision: int
    created_at: datetime
    updated_at: datetime


class ProductPage(BaseModel):
    items: list[ProductOut]
    total: int
    limit: int
    offset: int


class WriteResult(BaseModel):
    ids: list[str]
    created: int = 0
    updated: int = 0
    deleted: int = 0
    revision: int
    applied: bool = Field(True, description="false (status 202): stored, not yet recommendable; retried")


class Scores(BaseModel):
    image: float | None = Field(description="raw image cosine (null when the image side was not used)")
    metadata: float | None


class Hit(BaseModel):
    rank: int
    id: str
    name: str
    score: float | None
    scores: Scores
    contributions: Scores = Field(description="what each side added to score (they sum to it)")
    shared: dict[str, list[str]] = Field(description="attributes this product has in common with the query")
    why: str
    image_url: str


class RecommendationsOut(BaseModel):
    query: str
    weight: float
    n_candidates: int
    query_attributes: dict[str, list[str]]
    notes: list[str]
    empty_reason: str | None
    weak: bool = Field(description="no good match: even the best result scores below the recommender's weak_score")
    results: list[Hit]


class CustomerScores(BaseModel):
    cf: float = Field(description="behaviour (collaborative filtering, with the trend), normalised to [0, 1]")
    content: float = Field(description="metadata closeness to what the customer bought, normalised to [0, 1]")


class CustomerHit(BaseModel):
    rank: int
    id: str
    name: str
    score: float = Field(description="w_cf * cf + (1 - w_cf) * content")
    scores: CustomerScores
    contributions: CustomerScores = Field(description="what each side added to score (they sum to it)")
    because: list[str] = Field(description="the reasons, strongest side first")
    why: str = Field(description="the reasons in one line")
    image_url: str


class CustomerRecommendationsOut(BaseModel):
    user_id: str
    weight_cf: float = Field(description="the CF weight used (lowered for short histories)")
    n_candidates: int
    notes: list[str]
    empty_reason: str | None
    results: list[CustomerHit]


class Stats(BaseModel):
    products: int
    vectors: int
    products_without_image: int
    backbone: str | None
    index_kind: str | None
    revision: int
    applied_revision: int
    last_update: datetime | None
    database: str
    schema_revision: str | None


class EventIn(BaseModel):
    """One interaction (a purchase, a rating, a view), validated as the interactions loader validates files."""

    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(min_length=1, max_length=200)
    item_id: str = Field(min_length=1, max_length=200)
    weight: float | None = Field(None, description="quantity or rating (default 1); finite, not negative")
    timestamp: int | str | None = Field(None, description="unix seconds or a date/time text (default: now)")
    kind: str | None = Field(None, max_length=50, description="purchase (default), rating, view...")


class EventsOut(BaseModel):
    accepted: int
    users: list[str] = Field(description="customers whose recommendations were updated")
    interactions: int = Field(description="interactions held in memory now (file + events)")
    note: str | None = Field(None, description="set when the events were stored but not applied yet")
