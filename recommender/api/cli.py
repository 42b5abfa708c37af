"""``python -m recommender import | serve | reindex | gc``: the service's commands (registered by ``register``).

Only argparse and the standard library at module level, so ``--help`` stays instant.
"""

from __future__ import annotations

import argparse
import os
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
    uvicorn.run("recommender.api.app:create_app", factory=True, host=args.host, port=args.port,
                workers=args.workers, log_level="warning" if not args.verbose else "info",
                timeout_graceful_shutdown=5)
    return 0


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
    p.add_argument("--workers", type=int, default=1, help="worker processes (each holds the vectors in memory)")
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
