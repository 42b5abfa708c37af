"""``python -m recommender import | serve | reindex | gc``: the service's commands (registered by ``register``).

Only argparse and the standard library at module level, so ``--help`` stays instant.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path


def _settings(args):
    from recommender.api.settings import load_settings

    overrides = {k: v for k, v in (("database_url", getattr(args, "database_url", None)),
                                   ("data_dir", getattr(args, "data_dir", None))) if v}
    return load_settings(args.settings, **overrides)


def cmd_import(args) -> int:
    from recommender.catalog.live import import_catalog
    from recommender.catalog.media import MediaStore
    from recommender.catalog.sql import CatalogRepository
    from recommender.cli import _progress_bar

    s = _settings(args)
    s.data_dir.mkdir(parents=True, exist_ok=True)
    repo = CatalogRepository.from_url(s.url)
    report = import_catalog(repo, MediaStore(s.media_dir), args.catalog, max_bytes=s.max_upload_bytes,
                            max_pixels=s.max_pixels, progress=_progress_bar("importing"))
    print(report.summary())
    for pid, reason in report.image_problems[:20]:
        print(f"  no image for {pid}: {reason}")
    if len(report.image_problems) > 20:
        print(f"  ... and {len(report.image_problems) - 20} more")
    print(f"database: {repo.engine.url.render_as_string(hide_password=True)}")
    return 0


def cmd_reindex(args) -> int:
    from recommender.api.deps import Service

    s = _settings(args)
    service = Service(s.model_copy(update={"seed_catalog": ""})).open()
    drift = service.live.drift()
    print(f"{drift.db_products} products in the database, {drift.indexed_products} indexed, "
          f"revision {drift.db_revision}: {'in sync' if drift.in_sync else 'DRIFT'}")
    for key in ("missing", "extra", "stale_images", "without_vectors"):
        ids = getattr(drift, key)
        if ids:
            print(f"  {key}: {len(ids)} ({', '.join(ids[:10])}{' ...' if len(ids) > 10 else ''})")
    service.close()
    return 0 if drift.in_sync else 1


def cmd_gc(args) -> int:
    from recommender.catalog.media import MediaStore
    from recommender.catalog.sql import CatalogRepository
    from recommender.errors import RecommenderError

    if args.grace_hours < 0:
        raise RecommenderError("--grace-hours must be >= 0")
    s = _settings(args)
    repo = CatalogRepository.from_url(s.url)
    # The referenced set is read before the folder is listed: a file written after this read is
    # younger than the grace period, so a concurrent PUT's image is never taken.
    garbage = MediaStore(s.media_dir).collect_garbage(repo.referenced_images(), grace_s=args.grace_hours * 3600,
                                                      dry_run=args.dry_run)
    print(garbage.summary())
    if args.keep_revisions < 1:
        raise RecommenderError("--keep-revisions must be at least 1")
    if not args.dry_run:
        # A worker further behind than this reloads the whole catalog on its next sync: nothing is lost.
        print(f"change log: {repo.prune_changes(args.keep_revisions)} record(s) older than the newest "
              f"{args.keep_revisions} revisions removed")
    return 0


def cmd_serve(args) -> int:
    import uvicorn

    from recommender.errors import RecommenderError

    s = _settings(args)  # a bad setting is one line here, not a traceback in every worker
    if args.workers < 1:
        raise RecommenderError("--workers must be at least 1")
    # Every worker builds its settings from the environment: hand the command line on through it.
    if args.settings:
        os.environ["RECOMMENDER_SETTINGS_FILE"] = str(Path(args.settings).resolve())
    if args.database_url:
        os.environ["RECOMMENDER_DATABASE_URL"] = args.database_url
    if args.data_dir:
        os.environ["RECOMMENDER_DATA_DIR"] = str(Path(args.data_dir).resolve())
    if not s.api_keys:
        print("note: no RECOMMENDER_API_KEY set: the API is read-only (writes answer 403)")
    options = {"log_level": "warning" if not args.verbose else "info", "timeout_graceful_shutdown": 5}
    if args.workers > 1 and hasattr(socket, "SO_REUSEPORT"):
        return _serve_balanced(args.host, args.port, args.workers, options)
    uvicorn.run("recommender.api.app:create_app", factory=True, host=args.host, port=args.port,
                workers=args.workers, **options)
    return 0


def _serve_balanced(host: str, port: int, workers: int, options: dict) -> int:
    """``workers`` processes, each with its own SO_REUSEPORT listening socket on ``host:port``.

    uvicorn's own workers share one socket, and the first awake worker accepts a whole burst of
    connections: at 100k products all 8 keep-alive connections of ``wrk -c8`` landed on one of two
    workers (docs/api.md, "Measured"), leaving the other idle. With a socket each, the kernel spreads
    new connections across the workers by a hash of the peer's address and port.
    """
    import multiprocessing
    import signal
    from multiprocessing.connection import wait

    procs = [multiprocessing.get_context("spawn").Process(target=_balanced_worker, args=(host, port, options),
                                                          name=f"recommender-worker-{i}") for i in range(workers)]
    for proc in procs:
        proc.start()
    stopping = False

    def stop(signum, _frame) -> None:
        nonlocal stopping
        stopping = True
        for proc in procs:
            if proc.is_alive():
                proc.terminate()  # SIGTERM: uvicorn's graceful shutdown in each worker

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    wait([proc.sentinel for proc in procs])  # the first to end: on a stop all of them; else one that failed
    if not stopping:  # a worker died on its own (port taken, crash): serve all or none
        stop(signal.SIGTERM, None)
        stopping = False
    for proc in procs:
        proc.join()
    # A worker stopped by our SIGTERM before uvicorn took over its signals ends with -SIGTERM: a clean stop.
    failed = [proc.exitcode for proc in procs if proc.exitcode not in (0, -signal.SIGTERM)]
    if failed:
        return failed[0] if failed[0] > 0 else 1  # killed by another signal: still a failure
    return 0 if stopping else 1  # a worker that ended on its own, unasked, is a failure too


def _balanced_worker(host: str, port: int, options: dict) -> None:
    import uvicorn

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP given, not 0: asyncio sets TCP_NODELAY only on sockets whose proto says TCP; without it
    # Nagle held each response's second segment for the client's delayed ACK (~40 ms per request).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:  # one line, not a traceback per worker
        print(f"error: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        raise SystemExit(1) from None
    config = uvicorn.Config("recommender.api.app:create_app", factory=True, host=host, port=port, **options)
    uvicorn.Server(config).run(sockets=[sock])


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``import``, ``serve``, ``reindex`` and ``gc`` to the ``python -m recommender`` parser."""

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--settings", type=Path, help="settings file (KEY=value lines; RECOMMENDER_* variables win)")
        p.add_argument("--database-url", help="SQLAlchemy URL (default: sqlite file in the data folder)")
        p.add_argument("--data-dir", type=Path, help="data folder: SQLite file, stored images, vector cache "
                       "(default: var/ in the project)")

    p = sub.add_parser("import", help="import a catalog CSV/Parquet into the service's database")
    p.add_argument("--catalog", type=Path, required=True, help="catalog .csv or .parquet")
    common(p)
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("serve", help="start the REST API (the bundled demo on first start)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--workers", type=int, default=1, help="worker processes, one per core")
    common(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("gc", help="remove stored images no product uses any more, files a killed write left, "
                       "and old change-log records")
    p.add_argument("--grace-hours", type=float, default=1.0,
                   help="keep files younger than this, which an in-flight write may still name (default 1)")
    p.add_argument("--keep-revisions", type=int, default=100_000,
                   help="change-log revisions to keep (a worker further behind reloads everything; default 100000)")
    p.add_argument("--dry-run", action="store_true", help="only report what would be removed")
    common(p)
    p.set_defaults(func=cmd_gc)

    p = sub.add_parser("reindex", help="embed what the database has and the vector cache lacks; report drift")
    common(p)
    p.set_defaults(func=cmd_reindex)
