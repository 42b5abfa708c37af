"""Customer interactions in the catalog database: the ``interactions`` table, its writer and each worker's reader.

``POST /v1/events`` validates a batch, then commits it in one transaction (:meth:`EventLog.append`) before
answering, so an acknowledged event survives a restart and every server process sees it. Event ids are
given out by a one-row counter (``interaction_state``) that each write updates first: its row lock
serialises writers, so ids commit in order and a reader that has seen the counter at ``n`` can read every
event up to ``n`` (the same scheme as the catalog's revision and change log in :mod:`.sql`).

Each worker keeps a watermark (:class:`EventSync`): the id of the last event it applied to its customer
model. Before answering a customer request it applies the events after its watermark (incrementally, no
retrain), so two workers answer alike. At start the customer model is fitted on the interactions file (when
configured) plus every event in the database (:func:`open_customer_model`).
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime

import numpy as np
import pandas as pd
from sqlalchemy import BigInteger, DateTime, Float, Integer, String, func, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Mapped, mapped_column, sessionmaker

from recommender.catalog.interactions import Interactions, InteractionsError, interactions_from_frame
from recommender.catalog.sql import MAX_ID_LENGTH, Base, now
from recommender.errors import QueryError, RecommenderError

log = logging.getLogger(__name__)
MAX_KIND_LENGTH = 50
_INSERT_CHUNK = 500  # rows per INSERT statement: under every driver's bound-parameter limit


class InteractionRow(Base):
    """One customer event: who, which product, how much (quantity or rating), when, what kind."""

    __tablename__ = "interactions"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    user_id: Mapped[str] = mapped_column(String(MAX_ID_LENGTH), nullable=False, index=True)
    item_id: Mapped[str] = mapped_column(String(MAX_ID_LENGTH), nullable=False)
    weight: Mapped[float] = mapped_column(Float, nullable=False)
    timestamp: Mapped[int] = mapped_column(BigInteger, nullable=False)  # unix seconds, UTC
    kind: Mapped[str] = mapped_column(String(MAX_KIND_LENGTH), nullable=False)
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class InteractionState(Base):
    """One row: the id of the newest committed event (its row lock serialises event writers)."""

    __tablename__ = "interaction_state"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_id: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)


class EventLog:
    """Reads and writes the ``interactions`` table (schema made by the catalog's Alembic migrations)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._session = sessionmaker(engine, expire_on_commit=False)

    def newest(self) -> int:
        """The id of the newest committed event (0 when there is none)."""
        with self._session() as s:
            return int(s.scalar(select(InteractionState.last_id).where(InteractionState.id == 1)) or 0)

    def count(self) -> int:
        with self._session() as s:
            return int(s.scalar(select(func.count()).select_from(InteractionRow)) or 0)

    def append(self, events: Interactions) -> tuple[int, int]:
        """Commit validated ``events`` in one transaction; returns ``(first id, last id)``."""
        frame = events.frame
        n = len(frame)
        if n == 0:
            raise InteractionsError("no events to record")
        too_long = [c for c in ("user_id", "item_id") if frame[c].str.len().max() > MAX_ID_LENGTH]
        if too_long or frame["kind"].str.len().max() > MAX_KIND_LENGTH:
            raise InteractionsError(f"event ids longer than {MAX_ID_LENGTH} or kinds longer than {MAX_KIND_LENGTH} "
                                   "characters cannot be stored")
        with self._session() as s, s.begin():
            # First statement: takes the counter's row lock (PostgreSQL) or the write lock (SQLite).
            s.execute(update(InteractionState).where(InteractionState.id == 1)
                      .values(last_id=InteractionState.last_id + n))
            last = int(s.scalar(select(InteractionState.last_id).where(InteractionState.id == 1)))
            first = last - n + 1
            t = now()
            rows = [{"id": first + i, "user_id": u, "item_id": it, "weight": float(w), "timestamp": int(ts),
                     "kind": k, "recorded_at": t}
                    for i, (u, it, w, ts, k) in enumerate(zip(frame["user_id"], frame["item_id"], frame["weight"],
                                                              frame["timestamp"], frame["kind"], strict=True))]
            for start in range(0, n, _INSERT_CHUNK):
                s.execute(insert(InteractionRow), rows[start:start + _INSERT_CHUNK])
        return first, last

    def since(self, after: int) -> tuple[int, Interactions | None]:
        """``(newest id, the events with ids in (after, newest] in id order)``; ``None`` when there is none."""
        with self._session() as s:
            newest = int(s.scalar(select(InteractionState.last_id).where(InteractionState.id == 1)) or 0)
            if newest <= after:
                return newest, None
            rows = s.execute(select(InteractionRow.user_id, InteractionRow.item_id, InteractionRow.weight,
                                    InteractionRow.timestamp, InteractionRow.kind)
                             .where(InteractionRow.id > after, InteractionRow.id <= newest)
                             .order_by(InteractionRow.id)).all()
        if not rows:
            return newest, None
        frame = pd.DataFrame(rows, columns=["user_id", "item_id", "weight", "timestamp", "kind"])
        frame = frame.astype({"user_id": str, "item_id": str, "weight": np.float64, "timestamp": np.int64,
                              "kind": str})
        return newest, Interactions(frame)


def validate_events(rec, table: dict | pd.DataFrame) -> Interactions:
    """Validate new events against a fitted recommender's customer model, as the loader validates files
    (a missing timestamp is now); items removed or replaced since the fit are refused. Nothing is applied."""
    customers = getattr(rec, "customers_", None)
    # Before any customer model exists (a shop's first events) they are checked against the live products.
    catalog = rec.catalog_ if customers is None else customers.catalog_
    df = pd.DataFrame(table).copy()
    stamp = int(time.time())
    df["timestamp"] = stamp if "timestamp" not in df.columns else df["timestamp"].where(df["timestamp"].notna(), stamp)
    events = interactions_from_frame(df, catalog, rows_are="event")
    removed = sorted({i for i in events.frame["item_id"] if not rec._is_live(i)})
    if removed:
        raise QueryError(f"{len(removed)} item id(s) no longer in the catalog: {', '.join(removed[:5])}")
    return events


def _applicable(rec, events: Interactions) -> Interactions | None:
    """The events whose products the customer model can still take (a product removed since an event was
    recorded is skipped, and logged: the event stays in the database for the next fit)."""
    fitted = set(map(str, rec.customers_.catalog_.ids))
    ok = np.array([i in fitted and rec._is_live(i) for i in events.frame["item_id"]], dtype=bool)
    if not ok.all():
        log.warning("%d stored event(s) name products no longer in the catalog: skipped", int((~ok).sum()))
    return events.subset(ok) if ok.any() else None


class EventSync:
    """A worker's watermark over the event log: applies events it has not seen to its live catalog."""

    def __init__(self, events: EventLog, watermark: int = 0) -> None:
        self.log = events
        self.watermark = watermark
        self._lock = threading.Lock()

    def catch_up(self, live) -> int:
        """Apply every committed event after the watermark (incrementally); returns how many were applied."""
        with self._lock:
            if not live.has_customers:  # nothing to apply them to (yet): keep the watermark where it is
                return 0
            newest, events = self.log.since(self.watermark)
            applied = 0
            if events is not None:
                events = _applicable(live.recommender, events)
                if events is not None:
                    live.add_events(events)
                    applied = len(events)
            self.watermark = max(self.watermark, newest)
            return applied

    def record(self, live, table: dict | pd.DataFrame) -> Interactions:
        """Validate, commit (durable before this returns), then apply everything up to the new events."""
        events = validate_events(live.recommender, table)
        self.log.append(events)
        self.catch_up(live)
        return events


def open_customer_model(live, interactions_file: str | None, cf=None) -> EventSync:
    """Fit ``live``'s customer model on the interactions file (if any) plus every event in the database;
    returns the worker's :class:`EventSync`, its watermark at the newest event read."""
    from recommender.catalog.interactions import load_interactions

    rec = live.recommender
    if rec is None:
        raise RecommenderError("interactions need products: the catalog is empty")
    events_log = EventLog(live.repo.engine)
    newest, stored = events_log.since(0)
    parts = [load_interactions(interactions_file, rec.catalog_).frame] if interactions_file else []
    if stored is not None:
        known = set(map(str, rec.catalog_.ids))
        keep = stored.frame["item_id"].isin(known).to_numpy()
        if not keep.all():
            log.warning("%d stored event(s) name products no longer in the catalog: left out of the fit",
                        int((~keep).sum()))
        parts.append(stored.frame[keep])
    parts = [p for p in parts if len(p)]
    if not parts:
        raise RecommenderError("no interactions to learn from: no interactions file and no events in the database")
    frame = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0].reset_index(drop=True)
    live.set_interactions(Interactions(frame), **({"cf": cf} if cf is not None else {}))
    return EventSync(events_log, newest)


def has_events(engine: Engine) -> bool:
    return EventLog(engine).newest() > 0
