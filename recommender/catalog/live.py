"""A catalog that lives in SQL and changes all day, kept in step with the recommender's vectors.

The database is the truth. Every write is committed there first (one transaction, which also
records the revision and the products it touched), then applied to the in-memory recommender
through its ``upsert`` / ``patch`` / ``remove`` calls. A process that crashed between the two, or
another server process that took the write, catches up with :meth:`LiveCatalog.sync`, which reads
the change log after the last revision it applied and applies the products' *current* rows
(idempotent, so applying twice is harmless). :meth:`LiveCatalog.drift` compares the two sides in
full and :meth:`LiveCatalog.reindex` rebuilds the recommender from the database.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from recommender.catalog.loader import ATTRIBUTE_COLUMNS, Catalog, catalog_from_frame, load_catalog
from recommender.catalog.media import MediaStore
from recommender.catalog.sql import CatalogRepository, Product, ProductRow, check_id
from recommender.errors import ImageError, RecommenderError

log = logging.getLogger(__name__)
NO_IMAGE = ".no-image"  # the catalog's image cell for a product without a usable image: never a file
CATALOG_COLUMNS = ("id", "name", "description", *ATTRIBUTE_COLUMNS, "price", "image")
IMPORT_CHUNK = 500


def catalog_frame(products: Sequence[Product]) -> pd.DataFrame:
    """Products as a table in the catalog schema; ``image`` names the stored media file."""
    extra = sorted({k for p in products for k in (p.attributes or {})} - set(CATALOG_COLUMNS))
    rows = []
    for p in products:
        row = {c: getattr(p, c) for c in ("id", "name", "description", *ATTRIBUTE_COLUMNS)}
        # As text, as a CSV holds it: the loader reads a missing price from "", and repr round-trips a float.
        row["price"] = "" if p.price is None else repr(float(p.price))
        row["image"] = MediaStore.relative_name(p.image_sha256, p.image_ext) if p.image_sha256 else NO_IMAGE
        attrs = p.attributes or {}
        row.update({k: "" if attrs.get(k) is None else str(attrs.get(k)) for k in extra})
        rows.append(row)
    return pd.DataFrame(rows, columns=[*CATALOG_COLUMNS, *extra])


def indexed_products(rec) -> dict[str, tuple[str, bool]]:
    """What a fitted recommender holds: ``{id: (image cell, has a vector)}`` for its live products.

    A façade with live updates keeps removed rows in place behind an ``alive_`` mask; those are not held.
    """
    if rec is None:
        return {}
    items = rec.catalog_.items
    alive = getattr(rec, "alive_", None)
    alive = np.ones(len(items), dtype=bool) if alive is None else np.asarray(alive, dtype=bool)
    return {str(pid): (str(img), bool(has)) for pid, img, has, live in
            zip(items["id"], items["image"], rec.has_image_, alive, strict=True) if live}


def metadata_fields(p: Product) -> dict:
    return {c: getattr(p, c) for c in ("name", "description", *ATTRIBUTE_COLUMNS, "price")}


@dataclass
class Drift:
    """How the database and the recommender's vectors differ (all empty/equal = in sync)."""

    db_revision: int
    applied_revision: int
    db_products: int
    indexed_products: int
    missing: list[str] = field(default_factory=list)  # in the database, not in the index
    extra: list[str] = field(default_factory=list)  # in the index, not in the database
    stale_images: list[str] = field(default_factory=list)  # the index holds another image
    without_vectors: list[str] = field(default_factory=list)  # image stored, but no vector made

    @property
    def in_sync(self) -> bool:
        return (self.db_revision == self.applied_revision and not self.missing and not self.extra
                and not self.stale_images and not self.without_vectors)

    def to_dict(self, limit: int = 20) -> dict:
        return {"in_sync": self.in_sync, "db_revision": self.db_revision, "applied_revision": self.applied_revision,
                "db_products": self.db_products, "indexed_products": self.indexed_products,
                **{k: {"count": len(v), "ids": v[:limit]} for k, v in (
                    ("missing", self.missing), ("extra", self.extra), ("stale_images", self.stale_images),
                    ("without_vectors", self.without_vectors))}}


@dataclass
class ImportReport:
    products: int = 0
    created: int = 0
    updated: int = 0
    image_problems: list[tuple[str, str]] = field(default_factory=list)  # (id, reason)
    revision: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        return (f"{self.products} products imported ({self.created} new, {self.updated} replaced), "
                f"{len(self.image_problems)} without a usable image, revision {self.revision}, {self.seconds:.1f} s")


def confined_file(root: Path, relative: str) -> Path:
    """``root / relative`` if it is a file inside ``root`` (symlinks resolved); :class:`ImageError` if not."""
    text = str(relative).replace("\\", "/")
    rel = PurePosixPath(text)
    if not text.strip() or rel.is_absolute() or ".." in rel.parts or "\x00" in text or len(text) > 1024:
        raise ImageError(f"image path {text[:80]!r} must be relative to the image root, without '..'")
    base = Path(root).resolve()
    try:
        target = (base / rel).resolve(strict=True)
    except (OSError, RuntimeError):
        raise ImageError(f"image {text[:80]!r}: file not found under the image root") from None
    if not target.is_relative_to(base) or not target.is_file():
        raise ImageError(f"image {text[:80]!r}: file not found under the image root")
    return target


def store_file(media: MediaStore, path: Path, max_bytes: int, max_pixels: int, durable: bool = True) -> tuple[str, str]:
    """Copy one image file into the media store (decoded once to check it); :class:`ImageError` if unusable."""
    try:
        size = path.stat().st_size
    except OSError:
        raise ImageError("file not found") from None
    if size > max_bytes:
        raise ImageError(f"{size / 1024 / 1024:.1f} MB is over the image limit of {max_bytes / 1024 / 1024:.0f} MB")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(f"cannot be read ({exc.strerror})") from None
    return media.put(data, max_pixels=max_pixels, durable=durable)


def import_catalog(
    repo: CatalogRepository, media: MediaStore, path: Path | str | Catalog,
    max_bytes: int = 20 * 1024 * 1024, max_pixels: int = 40_000_000,
    progress: Callable[[int, int], None] | None = None,
) -> ImportReport:
    """Upsert every product of a catalog file into the database, copying its images into ``media``.

    Rows whose image is missing or unreadable are kept without an image (ranked by metadata), as
    the library does; each chunk of rows is one transaction, so an interrupted import keeps whole
    chunks only and can simply be run again.
    """
    t0 = time.perf_counter()
    catalog = path if isinstance(path, Catalog) else load_catalog(path)
    report = ImportReport(products=len(catalog))
    items = catalog.items
    known = set(items.columns)
    extra = [c for c in items.columns if c not in CATALOG_COLUMNS]
    for start in range(0, len(catalog), IMPORT_CHUNK):
        rows = []
        for i in range(start, min(start + IMPORT_CHUNK, len(catalog))):
            pid = check_id(str(items["id"].iat[i]))
            sha = ext = problem = None
            try:
                sha, ext = store_file(media, catalog.image_path(i), max_bytes, max_pixels, durable=False)
            except ImageError as exc:
                problem = str(exc).removeprefix("uploaded image: ")
                report.image_problems.append((pid, problem))
            price = items["price"].iat[i]
            rows.append(ProductRow(
                id=pid, name=str(items["name"].iat[i]),
                **{c: str(items[c].iat[i]) if c in known else "" for c in ("description", *ATTRIBUTE_COLUMNS)},
                price=None if price is None or (isinstance(price, float) and math.isnan(price)) else float(price),
                image=str(items["image"].iat[i]), image_sha256=sha, image_ext=ext, image_problem=problem,
                attributes={c: str(items[c].iat[i]) for c in extra}))
        media.flush()  # the images are on disk before the rows that name them are committed
        report.revision, created = repo.upsert(rows)
        report.created += created
        report.updated += len(rows) - created
        if progress:
            progress(start + len(rows), len(catalog))
    report.seconds = time.perf_counter() - t0
    return report


class LiveCatalog:
    """The database, the media folder and a fitted recommender, kept in step.

    ``make_recommender`` returns a new unfitted recommender (``HybridRecommender(...)``); it is
    fitted on the database's products by :meth:`load` and :meth:`reindex`.
    """

    def __init__(self, repo: CatalogRepository, media: MediaStore, make_recommender: Callable[[], object]) -> None:
        self.repo = repo
        self.media = media
        self.make_recommender = make_recommender
        self.recommender = None  # swapped whole by reindex: a reader holds one consistent object
        self.applied_revision = -1
        self.last_update: float | None = None
        self.last_error: str | None = None
        self._sync_lock = threading.RLock()
        self._drift_cache: tuple[tuple[int, int], Drift] | None = None
        self.interactions = None  # customers' interactions (file + events since), refitted with the catalog
        self.customer_params: dict = {}

    # -- loading -----------------------------------------------------------------------------
    @property
    def loaded(self) -> bool:
        return self.applied_revision >= 0

    def _fit(self):
        revision = self.repo.revision()  # read before the rows: a write in between is re-applied by sync
        products = self.repo.all()
        rec = None
        if products:
            catalog = catalog_from_frame(catalog_frame(products), self.media.root)
            rec = self.make_recommender().fit(catalog)
            rec.warm_up()  # a served catalog's vector files mapped now, not in its first queries
            self._fit_customers(rec)
        return rec, revision

    # -- customers ---------------------------------------------------------------------------
    def _fit_customers(self, rec) -> None:
        if rec is not None and self.interactions is not None:
            rec.fit_interactions(self.interactions, **self.customer_params)

    @property
    def has_customers(self) -> bool:
        return self.interactions is not None and getattr(self.recommender, "customers_", None) is not None

    def set_interactions(self, source, **params) -> LiveCatalog:
        """Load (a file path, validated against the catalog) or take an :class:`Interactions`, and fit the
        customer model on it; it is refitted whenever the recommender is rebuilt or its products change."""
        from recommender.catalog.interactions import Interactions, load_interactions

        with self._sync_lock:
            rec = self.recommender
            if rec is None:
                raise RecommenderError("interactions need products: the catalog is empty")
            if not isinstance(source, Interactions):
                source = load_interactions(source, rec.catalog_)
            self.interactions, self.customer_params = source, dict(params)
            self._fit_customers(rec)
        return self

    def add_events(self, events):
        """Validate and apply new interactions incrementally (no retrain); kept in memory with the rest so a
        later refit includes them. Returns the validated :class:`Interactions`."""
        import pandas as pd

        from recommender.catalog.interactions import Interactions

        with self._sync_lock:
            if not self.has_customers:
                raise RecommenderError("no interactions configured")
            added = self.recommender.add_interactions(events)
            self.interactions = Interactions(pd.concat([self.interactions.frame, added.frame], ignore_index=True),
                                             self.interactions.source)
        return added

    def load(self) -> LiveCatalog:
        """Fit the recommender on the database, then apply anything written meanwhile."""
        with self._sync_lock:
            self.recommender, self.applied_revision = self._fit()
            self._drift_cache = None
        self.sync()
        return self

    def reindex(self) -> Drift:
        """Rebuild the recommender from the database (vectors come from the cache); returns the new drift."""
        with self._sync_lock:
            self.recommender, self.applied_revision = self._fit()
            self._drift_cache = None
            self.last_update = time.time()
        self.sync()
        return self.drift()

    # -- catching up -------------------------------------------------------------------------
    def sync(self) -> int:
        """Apply every change committed after the applied revision; returns how many products changed."""
        with self._sync_lock:
            if not self.loaded:
                return 0
            newest, ops = self.repo.changes_since(self.applied_revision)
            if ops is None:  # the change log was pruned past this reader: reload everything (never miss one)
                log.warning("change log pruned past revision %d: reloading the catalog", self.applied_revision)
                self.recommender, self.applied_revision = self._fit()
                self._drift_cache = None
                self.last_update = time.time()
                return self.repo.count()
            if not ops:
                self.applied_revision = max(self.applied_revision, newest)
                return 0
            try:
                self._apply(ops)
            except RecommenderError as exc:
                self.last_error = str(exc)
                raise
            self.applied_revision = newest
            self.last_update = time.time()
            self.last_error = None
            return len(ops)

    def _apply(self, ops: dict[str, set[str]]) -> None:
        rows = self.repo.get_many(ops)
        rec = self.recommender
        if rec is None:  # the catalog was empty: nothing to update, fit on what is there now
            self.recommender, _ = self._fit()
            return
        # Only the changed ids are looked up: a write costs O(changed), not a walk over every product.
        indexed = {pid for pid in ops if rec._is_live(pid)}
        gone = [pid for pid in ops if pid not in rows and pid in indexed]
        patched = [pid for pid in ops if pid in rows and pid in indexed and ops[pid] == {"patch"}]
        upserted = [pid for pid in ops if pid in rows and pid not in patched]
        if upserted:
            rec.upsert(catalog_frame([rows[pid] for pid in upserted]))
        for pid in patched:
            rec.patch(pid, metadata_fields(rows[pid]))
        if gone:
            if len(gone) == int(np.count_nonzero(rec.alive_)) and not upserted:
                self.recommender = None  # the last product went: nothing left to recommend from
            else:
                rec.remove(gone)

    # -- the two sides compared ----------------------------------------------------------------
    def drift(self) -> Drift:
        """Compare every product in the database with what the recommender holds (cached per revision)."""
        db_rev = self.repo.revision()
        key = (db_rev, self.applied_revision)
        cached = self._drift_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        with self.repo.session() as s:
            from sqlalchemy import select

            db = {pid: (MediaStore.relative_name(sha, ext) if sha else NO_IMAGE)
                  for pid, sha, ext in s.execute(select(Product.id, Product.image_sha256, Product.image_ext))}
        indexed = indexed_products(self.recommender)
        d = Drift(db_rev, self.applied_revision, len(db), len(indexed))
        d.missing = sorted(set(db) - set(indexed))
        d.extra = sorted(set(indexed) - set(db))
        for pid in sorted(set(db) & set(indexed)):
            image, has_vector = indexed[pid]
            if image != db[pid]:
                d.stale_images.append(pid)
            elif db[pid] != NO_IMAGE and not has_vector:
                d.without_vectors.append(pid)
        self._drift_cache = (key, d)
        return d

    # -- writes: the database first, then the vectors -----------------------------------------
    def _sync_after_write(self) -> bool:
        """Apply a committed write; ``False`` if the recommender could not (the poller retries)."""
        try:
            self.sync()
            return True
        except Exception as exc:  # noqa: BLE001 - the write is committed; report it as pending, not as failed
            log.exception("a committed write could not be applied yet")
            self.last_error = f"{type(exc).__name__}: {exc}"
            return False

    def upsert(self, rows: Sequence[ProductRow]) -> tuple[int, int, bool]:
        """Commit ``rows`` (images already in the media store), then apply: ``(revision, created, applied)``."""
        revision, created = self.repo.upsert(rows)
        return revision, created, self._sync_after_write()

    def patch(self, product_id: str, fields: dict) -> tuple[Product, bool] | None:
        done = self.repo.patch(product_id, fields)
        if done is None:
            return None
        return done[1], self._sync_after_write()

    def delete(self, product_ids: Sequence[str]) -> tuple[list[str], bool]:
        revision, found = self.repo.delete(product_ids)
        return found, (self._sync_after_write() if found else True)

    def seed_if_empty(self, catalog_path: Path | str) -> ImportReport | None:
        """Import ``catalog_path`` when the database has no product and has never been written."""
        if self.repo.count() or self.repo.revision():
            return None
        return import_catalog(self.repo, self.media, catalog_path)
