"""The catalog in SQL: products, their attributes and image content hash, plus a change log.

An embedded SQLite file by default, PostgreSQL by URL (``postgresql+psycopg://...``); the schema is
created and upgraded by the Alembic migrations beside this module (:func:`migrate`), never by
``create_all``. Every write is one transaction that also bumps the catalog revision and records
which products it touched (``changes``): a process holding vectors in memory catches up by
reading the changes after the revision it last applied, so several server processes (or one that
crashed mid-batch) converge on what the database says.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    Integer,
    String,
    Text,
    create_engine,
    delete,
    event,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from recommender.catalog.loader import ATTRIBUTE_COLUMNS, MULTI_VALUE_SEP
from recommender.errors import CatalogError

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
METADATA_FIELDS = ("name", "description", *ATTRIBUTE_COLUMNS, "price")
MAX_ID_LENGTH = 200
_ID = re.compile(r"^[^\s/\\?#%\x00-\x1f\x7f](?:[^/\\?#%\x00-\x1f\x7f]{0,198}[^\s/\\?#%\x00-\x1f\x7f])?$")


class Base(DeclarativeBase):
    pass


class CatalogState(Base):
    """One row: the catalog's revision, bumped by every write (its row lock serialises writers)."""

    __tablename__ = "catalog_state"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    revision: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Product(Base):
    __tablename__ = "products"
    id: Mapped[str] = mapped_column(String(MAX_ID_LENGTH), primary_key=True)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False, default="")
    category: Mapped[str] = mapped_column(String(200), nullable=False, default="", index=True)
    sub_category: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    brand: Mapped[str] = mapped_column(String(200), nullable=False, default="", index=True)
    colour: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    price: Mapped[float | None] = mapped_column(Float, nullable=True)
    # Where the image came from (a path under the image root, an upload's file name): shown, never read.
    image: Mapped[str] = mapped_column(Text, nullable=False, default="")
    # The stored file in the media folder: ``<sha256><ext>``; NULL when the image could not be used.
    image_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    image_ext: Mapped[str | None] = mapped_column(String(8), nullable=True)
    image_problem: Mapped[str | None] = mapped_column(Text, nullable=True)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)  # other columns
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    revision: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class Change(Base):
    """Which products a revision touched, and how (``upsert``, ``patch`` or ``delete``)."""

    __tablename__ = "changes"
    revision: Mapped[int] = mapped_column(Integer, primary_key=True)
    product_id: Mapped[str] = mapped_column(String(MAX_ID_LENGTH), primary_key=True)
    op: Mapped[str] = mapped_column(String(8), nullable=False)



@dataclass(frozen=True)
class ProductRow:
    """A product as the service writes it: metadata plus the stored image it points at."""

    id: str
    name: str
    description: str = ""
    category: str = ""
    sub_category: str = ""
    brand: str = ""
    colour: str = ""
    price: float | None = None
    image: str = ""
    image_sha256: str | None = None
    image_ext: str | None = None
    image_problem: str | None = None
    attributes: Mapping[str, Any] | None = None


def check_id(product_id: str) -> str:
    """``product_id`` if it can name a product in a URL path; :class:`CatalogError` otherwise."""
    if not isinstance(product_id, str) or not _ID.match(product_id):
        shown = repr(product_id)[:60]
        raise CatalogError(f"invalid product id {shown}: 1-{MAX_ID_LENGTH} characters, no '/', '\\', '?', '#', "
                           "'%', control characters or surrounding spaces")
    return product_id


def check_price(price: float | None) -> float | None:
    if price is None:
        return None
    if isinstance(price, bool) or not isinstance(price, int | float) or not math.isfinite(price) or price < 0:
        raise CatalogError(f"price must be a finite number >= 0, got {price!r}")
    return float(price)


def now() -> datetime:
    return datetime.now(UTC)


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite files get WAL, a busy timeout and full fsync on commit."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")  # an acknowledged write survives a power cut too
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=8, max_overflow=8)


def migrate(engine: Engine) -> None:
    """Create or upgrade the schema to the newest Alembic revision (programmatic, no alembic.ini)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def schema_revision(engine: Engine) -> str | None:
    """The Alembic revision the database is at (``None`` before the first migration)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def _like_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _attribute_match(column, value: str):
    """SQL for "the multi-valued cell ``column`` holds ``value``" (case-insensitive, ``a|b`` cells)."""
    v = _like_escape(value.strip().lower())
    col = func.lower(column)
    sep = MULTI_VALUE_SEP
    return or_(col == value.strip().lower(), col.like(f"{v}{sep}%", escape="\\"),
               col.like(f"%{sep}{v}", escape="\\"), col.like(f"%{sep}{v}{sep}%", escape="\\"))


class CatalogRepository:
    """Reads and writes the catalog tables; every write is one transaction that bumps the revision."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._session = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def from_url(cls, url: str, upgrade: bool = True) -> CatalogRepository:
        engine = make_engine(url)
        try:
            if upgrade:
                migrate(engine)
        except SQLAlchemyError as exc:
            raise CatalogError(f"cannot open the catalog database ({type(exc).__name__}: "
                               f"{str(exc).splitlines()[0]})") from None
        return cls(engine)

    def session(self) -> Session:
        return self._session()

    # -- reads -------------------------------------------------------------------------------
    def revision(self) -> int:
        with self.session() as s:
            return int(s.scalar(select(CatalogState.revision).where(CatalogState.id == 1)) or 0)

    def state(self) -> tuple[int, datetime | None]:
        with self.session() as s:
            row = s.get(CatalogState, 1)
            return (row.revision, row.updated_at) if row else (0, None)

    def count(self) -> int:
        with self.session() as s:
            return int(s.scalar(select(func.count()).select_from(Product)) or 0)

    def get(self, product_id: str) -> Product | None:
        with self.session() as s:
            return s.get(Product, product_id)

    def get_many(self, ids: Iterable[str]) -> dict[str, Product]:
        ids = list(ids)
        out: dict[str, Product] = {}
        with self.session() as s:
            for start in range(0, len(ids), 500):  # stay under every driver's bound-parameter limit
                chunk = ids[start:start + 500]
                out.update({p.id: p for p in s.scalars(select(Product).where(Product.id.in_(chunk)))})
        return out

    def all(self) -> list[Product]:
        with self.session() as s:
            return list(s.scalars(select(Product).order_by(Product.id)))

    def page(
        self, limit: int, offset: int = 0, filters: Mapping[str, Sequence[str]] | None = None,
        price_min: float | None = None, price_max: float | None = None, q: str | None = None,
    ) -> tuple[list[Product], int]:
        """One page of products ordered by id, and how many match in all."""
        where = []
        for col, values in (filters or {}).items():
            values = [v for v in values if v and v.strip()]
            if values:
                where.append(or_(*[_attribute_match(getattr(Product, col), v) for v in values]))
        if price_min is not None:
            where.append(Product.price >= price_min)
        if price_max is not None:
            where.append(Product.price <= price_max)
        if q and q.strip():
            where.append(func.lower(Product.name).like(f"%{_like_escape(q.strip().lower())}%", escape="\\"))
        with self.session() as s:
            total = int(s.scalar(select(func.count()).select_from(Product).where(*where)) or 0)
            rows = list(s.scalars(select(Product).where(*where).order_by(Product.id).limit(limit).offset(offset)))
        return rows, total

    def referenced_images(self) -> set[tuple[str, str]]:
        """Every ``(image_sha256, image_ext)`` a product row names (what the media folder must keep)."""
        with self.session() as s:
            rows = s.execute(select(Product.image_sha256, Product.image_ext).distinct()
                             .where(Product.image_sha256.is_not(None))).all()
        return {(sha, ext) for sha, ext in rows if sha and ext}

    def changes_since(self, revision: int) -> tuple[int, dict[str, set[str]] | None]:
        """``(newest revision, {product id: ops since revision})``; ops ``None`` when the change log no longer
        reaches back to ``revision`` (pruned by ``gc``): the reader must reload everything."""
        with self.session() as s:
            newest = int(s.scalar(select(CatalogState.revision).where(CatalogState.id == 1)) or 0)
            if revision < newest:
                # Every committed revision wrote at least one change row, so a gap means pruned history.
                oldest = s.scalar(select(func.min(Change.revision)))
                if oldest is None or int(oldest) > revision + 1:
                    return newest, None
            rows = s.execute(select(Change.product_id, Change.op)
                             .where(Change.revision > revision, Change.revision <= newest)).all()
        ops: dict[str, set[str]] = {}
        for pid, op in rows:
            ops.setdefault(pid, set()).add(op)
        return newest, ops

    # -- writes ------------------------------------------------------------------------------
    def _bump(self, s: Session) -> int:
        # The first statement of every write: in PostgreSQL its row lock serialises writers until
        # commit, so revisions commit in order; SQLite takes its write lock here (no read first).
        s.execute(update(CatalogState).where(CatalogState.id == 1)
                  .values(revision=CatalogState.revision + 1, updated_at=now()))
        return int(s.scalar(select(CatalogState.revision).where(CatalogState.id == 1)))

    def upsert(self, rows: Sequence[ProductRow]) -> tuple[int, int]:
        """Insert or replace ``rows`` in one transaction; returns ``(revision, number created)``."""
        ids = [check_id(r.id) for r in rows]
        if len(set(ids)) != len(ids):
            dupes = sorted({i for i in ids if ids.count(i) > 1})
            raise CatalogError(f"product id(s) given twice in one batch: {', '.join(dupes[:20])}")
        created = 0
        with self.session() as s, s.begin():
            rev = self._bump(s)
            existing = {}
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                existing.update({p.id: p for p in s.scalars(select(Product).where(Product.id.in_(chunk)))})
            t = now()
            for r in rows:
                values = {f: getattr(r, f) for f in ("name", "description", *ATTRIBUTE_COLUMNS, "image",
                                                     "image_sha256", "image_ext", "image_problem")}
                values["price"] = check_price(r.price)
                values["attributes"] = dict(r.attributes or {})
                p = existing.get(r.id)
                if p is None:
                    s.add(Product(id=r.id, created_at=t, updated_at=t, revision=rev, **values))
                    created += 1
                else:
                    for k, v in values.items():
                        setattr(p, k, v)
                    p.updated_at, p.revision = t, rev
                s.add(Change(revision=rev, product_id=r.id, op="upsert"))
        return rev, created

    def patch(self, product_id: str, fields: Mapping[str, Any]) -> tuple[int, Product] | None:
        """Change metadata fields of one product; ``None`` if it does not exist."""
        unknown = sorted(set(fields) - set(METADATA_FIELDS))
        if unknown:
            raise CatalogError(f"cannot patch {', '.join(unknown)}: only {', '.join(METADATA_FIELDS)}")
        with self.session() as s, s.begin():
            rev = self._bump(s)
            p = s.get(Product, product_id)
            if p is None:
                s.rollback()
                return None
            for k, v in fields.items():
                setattr(p, k, check_price(v) if k == "price" else v)
            p.updated_at, p.revision = now(), rev
            s.add(Change(revision=rev, product_id=product_id, op="patch"))
        return rev, p

    def delete(self, ids: Sequence[str]) -> tuple[int, list[str]]:
        """Delete products; returns ``(revision, the ids that existed)``."""
        ids = list(dict.fromkeys(ids))
        with self.session() as s, s.begin():
            rev = self._bump(s)
            found = list(s.scalars(select(Product.id).where(Product.id.in_(ids)))) if ids else []
            if not found:
                s.rollback()
                return self.revision(), []
            s.execute(delete(Product).where(Product.id.in_(found)))
            for pid in found:
                s.add(Change(revision=rev, product_id=pid, op="delete"))
        return rev, found

    def prune_changes(self, keep_revisions: int) -> int:
        """Forget the change log but its newest ``keep_revisions`` revisions; returns the rows deleted.

        A reader further behind than that finds a gap (:meth:`changes_since` answers ``None``) and reloads
        the whole catalog, so pruning never loses an update, it only makes a very late reader slower.
        """
        if keep_revisions < 1:
            raise CatalogError("keep at least the newest revision of the change log")
        with self.session() as s, s.begin():
            newest = int(s.scalar(select(CatalogState.revision).where(CatalogState.id == 1)) or 0)
            result = s.execute(delete(Change).where(Change.revision <= newest - keep_revisions))
        return int(result.rowcount or 0)
