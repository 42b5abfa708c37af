"""The FastAPI application: ``create_app()`` (also the uvicorn factory ``recommender.api.app:create_app``).

Middleware here is transport only: a request body limit (413), a per-request timeout (504) and
CORS. Every decision about products and recommendations is a library call in the routes.
"""

from __future__ import annotations

import asyncio
import json
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse

from recommender.api.deps import Service, limit_kernel_threads
from recommender.api.settings import ApiSettings, load_settings
from recommender.errors import CatalogError, ImageError, QueryError, RecommenderError

log = logging.getLogger(__name__)


class LimitsMiddleware:
    """Refuse bodies over ``max_bytes`` (413, by Content-Length or while streaming) and cut requests
    that take longer than ``timeout`` seconds (504)."""

    def __init__(self, app, max_bytes: int, timeout: float) -> None:
        self.app, self.max_bytes, self.timeout = app, max_bytes, timeout

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def reply(status: int, detail: str) -> None:
            body = json.dumps({"detail": detail}).encode()
            await send({"type": "http.response.start", "status": status,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})

        limit_text = f"request body is over the limit of {self.max_bytes / 1024 / 1024:g} MB"
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.max_bytes
            except ValueError:
                await reply(400, "invalid Content-Length header")
                return
            if too_big:
                await reply(413, limit_text)
                return
        received = 0
        too_big = False

        async def counting_receive():
            nonlocal received, too_big
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Tell the app the client went away (it stops reading), and answer 413 ourselves.
                    too_big = True
                    return {"type": "http.disconnect"}
            return message

        async def tracking_send(message) -> None:
            nonlocal started
            if too_big:
                return  # whatever the app makes of the cut-off body, the answer is 413
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        # Read by routes that compute on the event loop (routes/recommend.py run_query): past it they stop.
        scope.setdefault("state", {})["deadline"] = asyncio.get_running_loop().time() + self.timeout
        try:
            await asyncio.wait_for(self.app(scope, counting_receive, tracking_send), self.timeout)
        except TimeoutError:
            if not started and not too_big:
                await reply(504, f"request took longer than {self.timeout:g} s")
        except Exception:
            if not too_big:
                raise
        if too_big and not started:
            await reply(413, limit_text)


def _status_for(exc: RecommenderError) -> int:
    text = str(exc)
    if isinstance(exc, QueryError) and text.startswith(("no product with id", "no customer with id")):
        return 404
    if isinstance(exc, ImageError) and ("not a JPEG" in text or "unsupported file type" in text):
        return 415
    if isinstance(exc, ImageError) and "over the" in text and "limit" in text:
        return 413
    if isinstance(exc, QueryError | ImageError | CatalogError):
        return 422
    return 400


def create_app(settings: ApiSettings | None = None, service: Service | None = None) -> FastAPI:
    """The API over ``settings`` (default: environment / settings file); ``service`` to share a loaded one."""
    settings = settings or (service.settings if service else load_settings())
    service = service or Service(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # Sync routes run in anyio's thread pool (40 threads by default). With many clients, threads beyond
        # the query slots only wait, or validate and serialise, fighting the event loop for the GIL (at 32
        # clients on the demo: 200 req/s and p99 0.9 s vs 281 req/s at 8); capped, extra requests wait as
        # cheap coroutines instead. Measured in docs/api.md ("Measured").
        import anyio.to_thread

        anyio.to_thread.current_default_thread_limiter().total_tokens = 2 * settings.max_concurrent_queries + 2
        limit_kernel_threads(settings.kernel_threads)
        if service.live is None or not service.live.loaded:
            service.open_in_background()
        elif service._thread is None:
            import threading

            service._thread = threading.Thread(target=service._poll, name="catalog-sync", daemon=True)
            service._thread.start()
        yield
        service.close()

    app = FastAPI(title="Hybrid product recommender", version="1",
                  description="Products like a product, a photo or a description: image (CNN) + metadata "
                  "similarity, every result explained. Writes need an API key.", lifespan=lifespan)
    app.state.service = service

    @app.exception_handler(RecommenderError)
    async def recommender_error(_request: Request, exc: RecommenderError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=_status_for(exc))

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return JSONResponse({"detail": f"internal error ({type(exc).__name__})"}, status_code=500)

    from recommender.api.routes import customers, health, products, recommend

    app.include_router(health.router)
    app.include_router(customers.router)
    app.include_router(recommend.router)  # before products: /similar and /image are not product ids
    app.include_router(products.router)
    origins = settings.cors_origin_list
    if origins:
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["*"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type", "If-Match"])
    app.add_middleware(LimitsMiddleware, max_bytes=settings.max_body_bytes, timeout=settings.request_timeout_s)
    return app
