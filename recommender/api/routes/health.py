"""Liveness, readiness (catalog loaded and vectors in step with the database) and stats."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from recommender.api.deps import LiveDep, ServiceDep, freeze_long_lived, require_read_key, require_write_key
from recommender.api.schemas import Stats
from recommender.catalog.live import indexed_products
from recommender.errors import RecommenderError

router = APIRouter()


class IndexInfo(BaseModel):
    """The image index backend; for Milvus, where (credentials masked) and the collection's size."""

    kind: str
    uri: str | None = None
    collection: str | None = None
    size: int | None = None
    error: str | None = None


class ServiceStats(Stats):
    index: IndexInfo | None = None


def index_info(rec) -> IndexInfo | None:
    """The backend of a fitted recommender; a Milvus collection is asked for its size (one count query)."""
    if rec is None:
        return None
    index = getattr(rec, "image_index_", None)
    if index is None:
        return IndexInfo(kind="exact", size=int(rec.has_image_[rec.alive_].sum()))
    if not hasattr(index, "stats"):
        return IndexInfo(kind=index.kind, size=int(index.ntotal))
    try:
        return IndexInfo(**{k: v for k, v in index.stats().items() if k in IndexInfo.model_fields})
    except RecommenderError as exc:  # the server went away after start: say so, keep the other figures
        return IndexInfo(kind=index.kind, uri=index.stats_uri(), collection=index.collection, error=str(exc))


@router.get("/health", summary="liveness: the process answers")
def health() -> dict:
    return {"status": "ok"}


@router.get("/ready", summary="readiness: catalog loaded and the index in step with the database",
            responses={503: {"description": "loading, failed, or the database and the vectors differ"}})
def ready(service: ServiceDep) -> JSONResponse:
    live = service.live
    if live is None or not live.loaded:
        status = "failed" if service.load_error else "loading"
        return JSONResponse({"ready": False, "status": status, "detail": service.load_error or "catalog is loading"},
                            status_code=503)
    if service.settings.interactions and not live.has_customers and live.recommender is not None:
        status = "failed" if service.load_error else "loading"
        return JSONResponse({"ready": False, "status": status,
                             "detail": service.load_error or "the customer model is being fitted"}, status_code=503)
    drift = live.drift()
    body = {"ready": drift.in_sync, "status": "ready" if drift.in_sync else "drift", "drift": drift.to_dict()}
    if live.last_error:
        body["last_error"] = live.last_error
    return JSONResponse(body, status_code=200 if drift.in_sync else 503)


@router.get("/v1/stats", response_model=ServiceStats, dependencies=[Depends(require_read_key)])
def stats(live: LiveDep, service: ServiceDep) -> ServiceStats:
    from recommender.catalog.sql import schema_revision

    rec = live.recommender
    revision, updated = live.repo.state()
    products = live.repo.count()
    if rec is not None:
        vectors = sum(has for _, has in indexed_products(rec).values())
        index = getattr(rec, "image_index_", None)
        index_kind = index.kind if index is not None else "exact"  # no ANN index: an exact scan of the vectors
    else:
        vectors, index_kind = 0, None
    last = live.last_update
    url = live.repo.engine.url
    return ServiceStats(products=products, vectors=vectors, products_without_image=products - vectors,
                        backbone=getattr(rec, "backbone_", None), index_kind=index_kind, revision=revision,
                        applied_revision=live.applied_revision,
                        last_update=updated or (datetime.fromtimestamp(last, UTC) if last else None),
                        database=url.get_backend_name(), schema_revision=schema_revision(live.repo.engine),
                        index=index_info(rec))


@router.post("/v1/reindex", dependencies=[Depends(require_write_key)], summary="rebuild the vectors from the database",
             responses={401: {}, 403: {}})
def reindex(live: LiveDep) -> dict:
    """Refit the recommender on the database (cached vectors reused, missing ones embedded); returns the drift."""
    drift = live.reindex().to_dict()
    freeze_long_lived()
    return drift
