"""Recommendations: "more like this" for a product, and search by photo and/or text. Every hit is explained."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from recommender.api.deps import LiveDep, Service, ServiceDep, require_read_key
from recommender.api.schemas import RecommendationsOut
from recommender.catalog.live import LiveCatalog
from recommender.catalog.media import check_decodes
from recommender.errors import ImageError
from recommender.features.uploads import display_name, read_upload, sniff_format
from recommender.ranking.hybrid import Filters

router = APIRouter(prefix="/v1", dependencies=[Depends(require_read_key)])
EXT = {"JPEG": ".jpg", "PNG": ".png", "WebP": ".webp"}


def _none_if_nan(x: float) -> float | None:
    return None if x != x else round(float(x), 6)


def recommendations_out(result) -> JSONResponse:
    """The :class:`RecommendationsOut` body, built as plain JSON.

    The route still declares ``response_model=RecommendationsOut`` (OpenAPI, and the tests validate every
    answer against it), but returning a response skips building ~30 pydantic objects per request and
    validating them again on the way out: at 100k products, 1.3 of ~8 ms of CPU per request
    (docs/api.md, "Measured")."""
    hits = [{"rank": k, "id": r.id, "name": r.name, "score": _none_if_nan(r.score),
             "scores": {"image": _none_if_nan(r.image_score), "metadata": _none_if_nan(r.metadata_score)},
             "contributions": {"image": _none_if_nan(r.image_contribution),
                               "metadata": _none_if_nan(r.metadata_contribution)},
             "shared": r.shared, "why": r.why(), "image_url": f"/v1/products/{r.id}/image"}
            for k, r in enumerate(result.items, 1)]
    return JSONResponse({"query": result.query, "weight": float(result.weight),
                         "n_candidates": int(result.n_candidates), "query_attributes": result.query_attributes,
                         "notes": list(result.notes), "empty_reason": result.empty_reason, "weak": bool(result.weak),
                         "results": hits})


def _filters(category, sub_category, brand, colour, price_min, price_max) -> Filters:
    if price_min is not None and price_max is not None and price_min > price_max:
        raise HTTPException(422, f"price_min {price_min:g} is above price_max {price_max:g}")
    return Filters(category=category or None, sub_category=sub_category or None, brand=brand or None,
                   colour=colour or None, price_min=price_min, price_max=price_max)


def _recommender(live: LiveCatalog):
    rec = live.recommender
    if rec is None:
        raise HTTPException(409, "the catalog is empty: add products first")
    return rec


def _check_limit(limit: int, service: Service) -> None:
    if not 1 <= limit <= service.settings.max_limit:
        raise HTTPException(422, f"limit must be between 1 and {service.settings.max_limit}, got {limit}")


@router.get("/products/{product_id}/similar", response_model=RecommendationsOut,
            responses={404: {"description": "no such product"}, 422: {}})
async def similar(
    product_id: str, request: Request, live: LiveDep, service: ServiceDep,
    limit: Annotated[int, Query(description="number of results")] = 10,
    weight: Annotated[float | None, Query(ge=0, le=1, description=(
        "image weight: 1 = looks only, 0 = metadata; omitted: the default, adapted to the query (see `weight` "
        "in the response)"))] = None,
    diversity: Annotated[float | None, Query(ge=0, le=1, description="MMR: 0 = by score, 1 = unlike")] = None,
    category: Annotated[list[str] | None, Query()] = None, sub_category: Annotated[list[str] | None, Query()] = None,
    brand: Annotated[list[str] | None, Query()] = None, colour: Annotated[list[str] | None, Query()] = None,
    price_min: Annotated[float | None, Query(ge=0, allow_inf_nan=False)] = None,
    price_max: Annotated[float | None, Query(ge=0, allow_inf_nan=False)] = None,
) -> JSONResponse:
    """Products like this one ("more like this"), each with its score parts and shared attributes."""
    _check_limit(limit, service)
    filters = _filters(category, sub_category, brand, colour, price_min, price_max)
    rec = _recommender(live)
    result = await run_query(service, request, lambda: rec.recommend(
        item=product_id, k=limit, weight=weight, diversity=diversity, filters=filters))
    return recommendations_out(result)


async def run_query(service: Service, request: Request, query):
    """``query()`` (a few ms of CPU, no I/O) right on the event loop when a query slot is free, else in the
    thread pool once one is.

    A sync route hands every request to a worker thread and back: at 100k products, 2 workers, 8 clients,
    that hop (condition variables, GIL hand-offs) cost ~1.2 of ~5.8 ms of CPU a request; inline, 415-425 vs
    213-327 req/s and p99 27-30 vs 58-95 ms (docs/api.md, "Measured"). A query holds the loop only for
    its own milliseconds: the fitted state's read lock waits at most for a live update's short swap."""
    deadline = getattr(request.state, "deadline", None)  # set by LimitsMiddleware
    if deadline is not None and asyncio.get_running_loop().time() >= deadline:
        raise TimeoutError  # the middleware answers 504, as it does for a request it cuts
    if service.query_slots.acquire(blocking=False):
        try:
            return query()
        finally:
            service.query_slots.release()

    def slotted():
        with service.query_slots:
            return query()

    return await run_in_threadpool(slotted)


@router.post("/search", response_model=RecommendationsOut, responses={413: {}, 415: {}, 422: {}})
async def search(
    request: Request, live: LiveDep, service: ServiceDep,
    image: Annotated[UploadFile | None, File(description="a photo (JPEG, PNG or WebP)")] = None,
    text: Annotated[str | None, Form(max_length=1000, description="a description")] = None,
    limit: Annotated[int, Form()] = 10, weight: Annotated[float | None, Form(ge=0, le=1)] = None,
    diversity: Annotated[float | None, Form(ge=0, le=1)] = None,
    category: Annotated[list[str] | None, Form()] = None, sub_category: Annotated[list[str] | None, Form()] = None,
    brand: Annotated[list[str] | None, Form()] = None, colour: Annotated[list[str] | None, Form()] = None,
    price_min: Annotated[float | None, Form(ge=0, allow_inf_nan=False)] = None,
    price_max: Annotated[float | None, Form(ge=0, allow_inf_nan=False)] = None,
) -> JSONResponse:
    """Products like an uploaded photo and/or a text (multipart form), each explained."""
    _check_limit(limit, service)
    filters = _filters(category, sub_category, brand, colour, price_min, price_max)
    if image is None and not (text or "").strip():
        raise HTTPException(422, "nothing to search for: give an image, a text, or both")
    rec = _recommender(live)
    if image is None:  # a text search is a few ms of CPU, like "similar": on the event loop when a slot is free
        result = await run_query(service, request, lambda: rec.recommend(
            text=text, k=limit, weight=weight, diversity=diversity, filters=filters))
        return recommendations_out(result)

    def photo_search():  # reading, checking and embedding the upload: tens of ms, in a worker thread
        data = _checked_upload(image, service)
        with service.query_slots:
            return rec.recommend(image=data, text=text, k=limit, weight=weight, diversity=diversity, filters=filters)

    return recommendations_out(await run_in_threadpool(photo_search))


def _checked_upload(image: UploadFile, service: Service) -> bytes:
    """The upload's bytes after the app's checks (size, type, decode, pixel limit), or the HTTP error."""
    s = service.settings
    data = image.file.read(s.max_upload_bytes + 1)
    shown = display_name(image.filename)
    if len(data) > s.max_upload_bytes:
        raise HTTPException(413, f"{shown}: over the upload limit of {s.max_upload_mb:g} MB")
    if not data:
        raise HTTPException(422, f"{shown}: the file is empty")
    fmt = sniff_format(data)
    if fmt is None:
        raise HTTPException(415, f"{shown}: not a JPEG, PNG or WebP image")
    # Named by the sniffed type, so the checks are the ones for what the bytes are.
    name = shown.rsplit(".", 1)[0] + EXT[fmt]
    try:
        read_upload(data, name, max_bytes=s.max_upload_bytes)
        check_decodes(data, s.max_pixels)
    except ImageError as exc:
        raise HTTPException(422, f"{shown}: {str(exc).removeprefix('uploaded image: ')}") from None
    return data
