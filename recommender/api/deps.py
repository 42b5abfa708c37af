"""What routes depend on: the service (settings + live catalog), the recommender, and the API key checks."""

from __future__ import annotations

import hmac
import logging
import threading
import time
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status

from recommender.api.settings import ApiSettings
from recommender.catalog.live import LiveCatalog
from recommender.catalog.media import MediaStore
from recommender.catalog.sql import CatalogRepository
from recommender.errors import RecommenderError

log = logging.getLogger(__name__)


def make_recommender_factory(settings: ApiSettings):
    """A function returning a new unfitted recommender configured as the settings say."""
    from recommender.recommender import HybridRecommender

    known = HybridRecommender().get_params()
    unknown = sorted(set(settings.model_params) - set(known) - {"backbone", "cache_dir"})
    if unknown:
        raise RecommenderError(f"model_params: unknown HybridRecommender parameter(s) {', '.join(unknown)}")
    params = {**settings.model_params, "backbone": settings.backbone, "cache_dir": settings.cache_dir}
    if "index" in known:  # the façade grows an index choice with the scale work
        params["index"] = settings.index_kind
        if settings.index_options:
            params["index_options"] = settings.index_options
    return lambda: HybridRecommender(**params)


def limit_kernel_threads(threads: int) -> None:
    """Run the process's numeric kernels (BLAS, OpenMP) on ``threads`` threads.

    Each query's kernels are small (a 1,000 x 2,280 matrix-vector product, a 2,280 x 256 projection, one
    graph walk); a multi-threaded BLAS hands them to worker threads that spin while waiting, fighting
    the other query slots and the event loop for the cores. At 100k products, 8 clients: 30 ms of CPU
    per request with the default threads, 9 ms with one (docs/api.md, "Measured"). The environment
    variables reach libraries loaded later (faiss's OpenMP and OpenBLAS, scipy's OpenBLAS) and
    worker processes; ``threadpool_limits`` the ones already loaded (numpy's OpenBLAS).
    """
    import os

    from threadpoolctl import threadpool_limits

    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    threadpool_limits(threads)


def freeze_long_lived() -> None:
    """Exempt what is alive now (a fitted catalog: millions of objects at 100k products) from garbage
    collection passes. Python's full collections walk every tracked object; in the serving process they
    ran in the middle of building responses (15% of the samples at 100k, 8 clients). Called after each
    full (re)load; the previous freeze is lifted first, so a replaced catalog is collected once."""
    import gc

    gc.unfreeze()
    gc.collect()
    gc.freeze()


# The dependencies are ``async def``: they never block, and a sync dependency would cost every request
# extra hops through the worker thread pool (which the query itself needs).


class Service:
    """One server process: its settings, its live catalog, and the thread applying other workers' writes."""

    def __init__(self, settings: ApiSettings, live: LiveCatalog | None = None) -> None:
        self.settings = settings
        self.live = live
        self.load_error: str | None = None
        self.events = None  # the customer events' watermark (catalog.events_sql.EventSync) once fitted
        self._cf_fit = (0.0, 0, 0)  # (monotonic time, event watermark, catalog revision) of the last full CF fit
        self.query_slots = threading.BoundedSemaphore(settings.max_concurrent_queries)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def open(self) -> Service:
        """Migrate the database, seed it with the demo on first start, fit the recommender."""
        from filelock import FileLock

        s = self.settings
        if self.live is None:
            s.data_dir.mkdir(parents=True, exist_ok=True)
            # Several workers start at once: one migrates and seeds, the others wait and then load.
            with FileLock(str(s.data_dir / ".startup.lock")):
                repo = CatalogRepository.from_url(s.url)
                live = LiveCatalog(repo, MediaStore(s.media_dir), make_recommender_factory(s))
                if s.seed_catalog:
                    report = live.seed_if_empty(s.seed_catalog)
                    if report:
                        log.warning("seeded the empty catalog from %s: %s", s.seed_catalog, report.summary())
            self.live = live
        if not self.live.loaded:
            self.live.load()
        if self.live.interactions is None and self.live.recommender is not None:
            from recommender.catalog.events_sql import has_events

            if s.interactions or has_events(self.live.repo.engine):  # the file and/or the database's events
                self.refit_customers()
        return self

    def refit_customers(self) -> None:
        """Fit the customer model afresh on the interactions file plus every stored event (new products and
        item factors included), then swap it in; incremental events carry on from its watermark."""
        from recommender.catalog.events_sql import open_customer_model
        from recommender.ranking.cf import CollaborativeFilter

        s = self.settings
        revision = self.live.repo.revision()
        self.events = open_customer_model(self.live, s.interactions, CollaborativeFilter(**s.cf_params))
        self._cf_fit = (time.monotonic(), self.events.watermark, revision)
        log.warning("customer model fitted on %s + %d stored event(s) (%d interactions)",
                    s.interactions or "no file", self.events.watermark, len(self.live.interactions))

    def _customers_due(self) -> bool:
        """A shop's first stored events, or a scheduled refit once events or products changed since the last."""
        from recommender.catalog.events_sql import EventLog, has_events

        if self.live.recommender is None:
            return False
        if self.events is None:
            return has_events(self.live.repo.engine)
        interval = self.settings.cf_refit_interval_s
        fitted_at, watermark, revision = self._cf_fit
        if not interval or time.monotonic() - fitted_at < interval:
            return False
        return EventLog(self.live.repo.engine).newest() > watermark or self.live.repo.revision() != revision

    def open_in_background(self) -> None:
        def run() -> None:
            try:
                self.open()
                freeze_long_lived()
            except RecommenderError as exc:  # a known failure (e.g. Milvus unreachable): one line, no traceback
                log.error("loading the catalog failed: %s", exc)
                self.load_error = f"{type(exc).__name__}: {exc}"
                return
            except (OSError, Exception) as exc:  # noqa: BLE001 - reported by /ready
                log.exception("loading the catalog failed")
                self.load_error = f"{type(exc).__name__}: {exc}"
                return
            self._poll()

        self._thread = threading.Thread(target=run, name="catalog-loader", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        """Apply writes committed by other processes (or left unapplied by a crash), every interval."""
        while not self._stop.wait(self.settings.sync_interval_s):
            try:
                self.live.sync()
                if self._customers_due():
                    self.refit_customers()
                if self.events is not None:
                    self.events.catch_up(self.live)
            except Exception as exc:  # noqa: BLE001 - keep polling; /ready shows the error
                log.warning("sync failed: %s", exc)

    def close(self) -> None:
        self._stop.set()
        if self.live is not None:
            self.live.repo.engine.dispose()


async def get_service(request: Request) -> Service:
    return request.app.state.service


async def get_live(service: Annotated[Service, Depends(get_service)]) -> LiveCatalog:
    if service.live is None or not service.live.loaded:
        detail = f"catalog failed to load: {service.load_error}" if service.load_error else "catalog is loading"
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail, headers={"Retry-After": "2"})
    return service.live


def _presented_key(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("x-api-key") or None


def _check_key(request: Request, keys: list[str], what: str) -> None:
    if not keys:
        raise HTTPException(status.HTTP_403_FORBIDDEN,
                            f"{what} are disabled: no API key is configured (set RECOMMENDER_API_KEY)")
    given = _presented_key(request)
    if given is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, f"{what} need an API key: send 'Authorization: "
                            "Bearer <key>' or 'X-API-Key: <key>'", headers={"WWW-Authenticate": "Bearer"})
    # Compare against every key in constant time, so timing does not tell which prefix matched.
    if not any(hmac.compare_digest(given.encode(), k.encode()) for k in keys):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid API key", headers={"WWW-Authenticate": "Bearer"})


async def require_write_key(request: Request, service: Annotated[Service, Depends(get_service)]) -> None:
    _check_key(request, service.settings.api_keys, "writes")


async def require_read_key(request: Request, service: Annotated[Service, Depends(get_service)]) -> None:
    if not service.settings.public_reads:
        _check_key(request, service.settings.api_keys, "reads")



ServiceDep = Annotated[Service, Depends(get_service)]
LiveDep = Annotated[LiveCatalog, Depends(get_live)]
