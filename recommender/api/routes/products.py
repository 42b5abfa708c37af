"""The catalog: list, read, create or replace (PUT, batch), change metadata (PATCH), delete, image.

Writes commit to the database first, then the recommender applies them before the response is
sent: a product is recommendable (or gone) in the very next query.
"""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse
from pydantic import ValidationError

from recommender.api.deps import LiveDep, Service, ServiceDep, require_read_key, require_write_key
from recommender.api.schemas import BatchIn, ProductIn, ProductOut, ProductPage, ProductPatch, WriteResult
from recommender.catalog.live import LiveCatalog, confined_file, store_file
from recommender.catalog.media import MEDIA_TYPES
from recommender.catalog.sql import METADATA_FIELDS, Product, ProductRow, check_id
from recommender.errors import ImageError
from recommender.features.uploads import display_name, sniff_format

router = APIRouter(prefix="/v1")
FILTER_COLUMNS = ("category", "sub_category", "brand", "colour")


def product_out(p: Product) -> ProductOut:
    return ProductOut(
        id=p.id, name=p.name, description=p.description, category=p.category, sub_category=p.sub_category,
        brand=p.brand, colour=p.colour, price=p.price, attributes=dict(p.attributes or {}), image=p.image,
        image_url=f"/v1/products/{p.id}/image" if p.image_sha256 else None, image_sha256=p.image_sha256,
        image_problem=p.image_problem, revision=p.revision, created_at=p.created_at, updated_at=p.updated_at)


def etag(p: Product) -> str:
    return f'"{p.revision}"'


def _check_limit(limit: int, service: Service) -> None:
    if not 1 <= limit <= service.settings.max_limit:
        raise HTTPException(422, f"limit must be between 1 and {service.settings.max_limit}, got {limit}")


@router.get("/products", response_model=ProductPage, dependencies=[Depends(require_read_key)])
def list_products(
    live: LiveDep, service: ServiceDep,
    limit: Annotated[int, Query(description="page size (at most the server's max_limit)")] = 20,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    category: Annotated[list[str] | None, Query()] = None, sub_category: Annotated[list[str] | None, Query()] = None,
    brand: Annotated[list[str] | None, Query()] = None, colour: Annotated[list[str] | None, Query()] = None,
    price_min: Annotated[float | None, Query(allow_inf_nan=False)] = None,
    price_max: Annotated[float | None, Query(allow_inf_nan=False)] = None,
    q: Annotated[str | None, Query(max_length=200, description="text in the product name")] = None,
) -> ProductPage:
    _check_limit(limit, service)
    filters = {"category": category or [], "sub_category": sub_category or [], "brand": brand or [],
               "colour": colour or []}
    rows, total = live.repo.page(limit, offset, filters, price_min, price_max, q)
    return ProductPage(items=[product_out(p) for p in rows], total=total, limit=limit, offset=offset)


def _product_or_404(live: LiveCatalog, product_id: str) -> Product:
    p = live.repo.get(product_id)
    if p is None:
        raise HTTPException(404, f"no product with id {product_id!r}")
    return p


@router.get("/products/{product_id}", response_model=ProductOut, dependencies=[Depends(require_read_key)],
            responses={404: {"description": "no such product"}})
def get_product(product_id: str, live: LiveDep) -> JSONResponse:
    p = _product_or_404(live, product_id)
    return JSONResponse(product_out(p).model_dump(mode="json"), headers={"ETag": etag(p)})


@router.get("/products/{product_id}/image", dependencies=[Depends(require_read_key)],
            responses={200: {"content": {"image/jpeg": {}, "image/png": {}, "image/webp": {}}}, 404: {}})
def get_image(product_id: str, live: LiveDep) -> FileResponse:
    p = _product_or_404(live, product_id)
    if not p.image_sha256:
        raise HTTPException(404, f"product {product_id!r} has no usable image ({p.image_problem or 'none given'})")
    # Only ever a file the service stored, named by the hash in the database.
    path = live.media.path(p.image_sha256, p.image_ext)
    if not path.is_file():
        raise HTTPException(404, f"the image of product {product_id!r} is missing from the media folder")
    return FileResponse(path, media_type=MEDIA_TYPES[p.image_ext],
                        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "public, max-age=86400",
                                 "ETag": f'"{p.image_sha256}"'})


# -- writes --------------------------------------------------------------------------------------
def _stored_upload(data: bytes, filename: str | None, live: LiveCatalog, service: Service) -> tuple[str, str]:
    s = service.settings
    shown = display_name(filename)
    if len(data) > s.max_upload_bytes:
        raise HTTPException(413, f"{shown}: {len(data) / 1024 / 1024:.1f} MB is over the upload limit of "
                            f"{s.max_upload_mb:g} MB")
    if not data:
        raise HTTPException(422, f"{shown}: the file is empty")
    if sniff_format(data) is None:
        raise HTTPException(415, f"{shown}: not a JPEG, PNG or WebP image")
    try:
        return live.media.put(data, max_pixels=s.max_pixels)
    except ImageError as exc:
        raise HTTPException(422, f"{shown}: {str(exc).removeprefix('uploaded image: ')}") from None


def _stored_path(path: str, live: LiveCatalog, service: Service, who: str = "") -> tuple[str, str]:
    s = service.settings
    try:
        return store_file(live.media, confined_file(s.image_root, path), s.max_upload_bytes, s.max_pixels)
    except ImageError as exc:
        text = str(exc).removeprefix("uploaded image: ")
        code = 415 if "not a JPEG" in text else 413 if "over the image limit" in text else 422
        detail = who + (text if text.startswith("image") else f"image {path[:80]!r}: {text}")
        raise HTTPException(code, detail) from None


def _row(product_id: str, body: ProductIn, image: tuple[str, str] | None, source: str,
         existing: Product | None) -> ProductRow:
    if image is None:
        if existing is None:
            raise HTTPException(422, f"product {product_id!r} is new: give its image (an upload, or 'image': a path "
                                "under the image root)")
        sha, ext, source, problem = existing.image_sha256, existing.image_ext, existing.image, existing.image_problem
    else:
        (sha, ext), problem = image, None
    fields = body.model_dump(include=set(METADATA_FIELDS))
    return ProductRow(id=product_id, image=source, image_sha256=sha, image_ext=ext, image_problem=problem,
                      attributes=body.attributes, **fields)


def _check_if_match(request: Request, existing: Product | None) -> None:
    wanted = request.headers.get("if-match")
    if wanted is None:
        return
    current = etag(existing) if existing is not None else None
    if wanted.strip() != "*" and wanted.strip() != current or (wanted.strip() == "*" and existing is None):
        raise HTTPException(412, f"the product changed: If-Match {wanted.strip()} but it is at {current or 'absent'}")


async def _put_body(request: Request) -> tuple[ProductIn, bytes | None, str | None]:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if ctype == "application/json":
            return ProductIn.model_validate_json(await request.body()), None, None
        if ctype == "multipart/form-data":
            form = await request.form(max_files=1, max_fields=10)
            meta = form.get("metadata")
            if not isinstance(meta, str):
                raise HTTPException(422, "multipart PUT needs a 'metadata' field with the product's JSON")
            upload = form.get("image")
            if upload is not None and isinstance(upload, str):
                raise HTTPException(422, "the 'image' field must be a file upload")
            data = await upload.read() if upload is not None else None
            body = ProductIn.model_validate(json.loads(meta))
            return body, data, upload.filename if upload is not None else None
    except ValidationError as exc:
        detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        raise HTTPException(422, detail) from None
    except json.JSONDecodeError as exc:
        raise HTTPException(422, f"'metadata' is not valid JSON ({exc.msg})") from None
    raise HTTPException(415, "send the product as application/json, or multipart/form-data with 'metadata' (JSON) "
                        "and 'image' (the file)")


@router.put("/products/{product_id}", response_model=ProductOut, dependencies=[Depends(require_write_key)],
            status_code=200, responses={201: {"description": "created"}, 401: {}, 403: {}, 409: {}, 412: {},
                                        413: {}, 415: {}, 422: {}},
            openapi_extra={"requestBody": {"content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/ProductIn"}},
                "multipart/form-data": {"schema": {"type": "object", "properties": {
                    "metadata": {"type": "string", "description": "ProductIn as JSON"},
                    "image": {"type": "string", "format": "binary"}}, "required": ["metadata"]}}}}})
async def put_product(product_id: str, request: Request, live: LiveDep,
                      service: ServiceDep) -> JSONResponse:
    """Create or replace a product. The image: an upload (multipart) or ``image`` = a path under the image
    root; without either, an existing product keeps its image."""
    from starlette.concurrency import run_in_threadpool

    check_id(product_id)
    body, data, filename = await _put_body(request)
    return await run_in_threadpool(_put, product_id, body, data, filename, request, live, service)


def _put(product_id, body: ProductIn, data, filename, request, live: LiveCatalog, service: Service) -> JSONResponse:
    if data is not None and body.image:
        raise HTTPException(422, "give the image as an upload or as a path, not both")
    existing = live.repo.get(product_id)
    _check_if_match(request, existing)
    if data is not None:
        image, source = _stored_upload(data, filename, live, service), display_name(filename)
    elif body.image:
        image, source = _stored_path(body.image, live, service), body.image
    else:
        image, source = None, ""
    _, created, applied = live.upsert([_row(product_id, body, image, source, existing)])
    p = live.repo.get(product_id)
    return JSONResponse(product_out(p).model_dump(mode="json"), headers={"ETag": etag(p)},
                        status_code=(201 if created else 200) if applied else 202)


@router.post("/products:batch", response_model=WriteResult, dependencies=[Depends(require_write_key)],
             responses={401: {}, 403: {}, 409: {"description": "an id given twice"}, 413: {}, 415: {}, 422: {}})
def batch_upsert(body: BatchIn, live: LiveDep, service: ServiceDep) -> JSONResponse:
    """Create or replace many products in one transaction (images as paths under the image root)."""
    n, most = len(body.products), service.settings.max_batch
    if n > most:
        raise HTTPException(413, f"{n} products in one batch is over the limit of {most}")
    ids = [p.id for p in body.products]
    dupes = sorted({i for i in ids if ids.count(i) > 1}) if len(set(ids)) != n else []
    if dupes:
        raise HTTPException(409, f"product id(s) given twice in one batch: {', '.join(dupes[:20])}")
    for pid in ids:
        check_id(pid)
    existing = live.repo.get_many(ids)
    rows = []
    for p in body.products:
        image = _stored_path(p.image, live, service, who=f"product {p.id!r}: ") if p.image else None
        rows.append(_row(p.id, p, image, p.image or "", existing.get(p.id)))
    revision, created, applied = live.upsert(rows)
    result = WriteResult(ids=ids, created=created, updated=n - created, revision=revision, applied=applied)
    return JSONResponse(result.model_dump(), status_code=200 if applied else 202)


@router.patch("/products/{product_id}", response_model=ProductOut, dependencies=[Depends(require_write_key)],
              responses={401: {}, 403: {}, 404: {}, 412: {}, 422: {}})
def patch_product(product_id: str, body: ProductPatch, request: Request,
                  live: LiveDep) -> JSONResponse:
    """Change metadata (filters and the text side see it at once); the image and its vector stay."""
    fields = body.model_dump(exclude_unset=True)
    nulls = sorted(k for k, v in fields.items() if v is None and k != "price")
    if nulls:
        raise HTTPException(422, f"{', '.join(nulls)} cannot be null (use \"\" to clear a text field)")
    if not fields:
        raise HTTPException(422, "nothing to change: give at least one field")
    _check_if_match(request, _product_or_404(live, product_id))
    done = live.patch(product_id, fields)
    if done is None:
        raise HTTPException(404, f"no product with id {product_id!r}")
    p, applied = done
    return JSONResponse(product_out(p).model_dump(mode="json"), headers={"ETag": etag(p)},
                        status_code=200 if applied else 202)


@router.delete("/products/{product_id}", response_model=WriteResult, dependencies=[Depends(require_write_key)],
               responses={401: {}, 403: {}, 404: {}, 412: {}})
def delete_product(product_id: str, request: Request, live: LiveDep) -> JSONResponse:
    """Delete a product: gone from every result at once."""
    _check_if_match(request, _product_or_404(live, product_id))
    found, applied = live.delete([product_id])
    if not found:
        raise HTTPException(404, f"no product with id {product_id!r}")
    result = WriteResult(ids=found, deleted=len(found), revision=live.repo.revision(), applied=applied)
    return JSONResponse(result.model_dump(), status_code=200 if applied else 202)

