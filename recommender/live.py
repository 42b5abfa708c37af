"""Live updates of a fitted recommender: ``upsert``, ``patch``, ``remove`` (the façade's write side).

Row slots are append-only: a new or changed product gets a new slot at the end and its old slot is
tombstoned (``alive_`` False), so the rows a reader is looking at never change under it. An update
prepares everything slow (reading and embedding images through the store, encoding metadata) outside
any lock, builds the new state (appended arrays, postings, filter index) under the update lock only, then
swaps it in under the write lock, which waits for the readers in flight and holds new ones back for the
assignments and the ANN index's own update: a query sees an update wholly or not at all.

The metadata vocabulary as the catalog drifts: new rows are encoded with the fitted TF-IDF
vocabulary (a new word counts for nothing until the next fit; filters see new values at once).
Once the rows added or changed since the last fit exceed ``refit_fraction`` of the catalog, the
encoder is re-fitted on the live catalog - after the update is visible, still outside the write
lock, and swapped in under it. Measured in docs/ranking.md.
"""

from __future__ import annotations

import copy
import threading
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recommender.catalog.loader import Catalog, ImageProblem, catalog_from_frame
from recommender.errors import CatalogError, QueryError
from recommender.features.embedders import ColourEmbedder
from recommender.scoring import postings_stale
from recommender.store.build import build_embeddings, image_hashes
from recommender.store.vector_file import growable_copy

#: Fields ``patch`` may change: metadata only (an image change is an ``upsert``).
PATCHABLE = ("name", "description", "category", "sub_category", "brand", "colour", "price")


def _blank_missing_prices(frame: pd.DataFrame) -> pd.DataFrame:
    """A missing price (NaN / None) as the empty cell the loader expects ("nan" would be refused)."""
    if "price" not in frame.columns:
        return frame
    frame = frame.copy()
    frame["price"] = [("" if v is None or (isinstance(v, float) and np.isnan(v)) else v) for v in frame["price"]]
    return frame


class ReadWriteLock:
    """Many readers or one writer; a waiting writer holds new readers back (no writer starvation).

    ``updating`` serialises whole updates (their slow preparation included), ``writing`` is the
    short exclusive section where fitted state changes.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0
        self.updating = threading.Lock()

    @contextmanager
    def reading(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def writing(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


#: Buffers this module allocated with spare capacity (id -> array): only those are grown in place.
_OWN_BUFFERS: weakref.WeakValueDictionary[int, np.ndarray] = weakref.WeakValueDictionary()


def appended(view: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``np.concatenate([view, rows])`` in amortised O(len(rows)), as a view of a buffer with spare room.

    When ``view`` is the prefix of a buffer made here with room left, ``rows`` are written after it
    and a longer view is returned: ``view`` itself (what an earlier reader holds) still shows only
    its own rows, which never change. Otherwise a buffer of twice the size is allocated first (the
    copy that doubling amortises). Never writes into an array this module did not allocate.
    """
    n, m = len(view), len(rows)
    base = view.base
    own = (base is not None and _OWN_BUFFERS.get(id(base)) is base and view.flags.c_contiguous
           and base.dtype == view.dtype and base.shape[1:] == view.shape[1:]
           and view.__array_interface__["data"][0] == base.__array_interface__["data"][0])
    if not own or len(base) < n + m:
        capacity = max(n + m, 2 * n, 16)
        base = growable_copy(view, capacity) if isinstance(view, np.memmap) else None
        if base is None:
            base = np.empty((capacity, *view.shape[1:]), dtype=view.dtype)
            base[:n] = view
        _OWN_BUFFERS[id(base)] = base
    base[n:n + m] = rows
    return base[:n + m]


def _extended_catalog(catalog: Catalog, items: pd.DataFrame) -> Catalog:
    """``catalog`` with ``items`` appended as new rows; the id -> row map is extended, not rebuilt from
    every row (a later row of an id wins, as in :class:`Catalog`)."""
    start = len(catalog)
    grown = copy.copy(catalog)  # same root, source and image roots
    object.__setattr__(grown, "items", pd.concat([catalog.items, items], ignore_index=True))
    positions = dict(catalog._positions)
    positions.update({str(pid): start + i for i, pid in enumerate(items["id"])})
    object.__setattr__(grown, "_positions", positions)
    object.__setattr__(grown, "_memo", {})
    return grown


@dataclass
class UpdateReport:
    """What an ``upsert`` did."""

    added: list[str] = field(default_factory=list)  # ids that were not in the catalog
    replaced: list[str] = field(default_factory=list)  # ids whose product was replaced
    embedded: int = 0  # images embedded now (new or changed content)
    reused: int = 0  # images whose vectors came from the store (content seen before)
    skipped: list[ImageProblem] = field(default_factory=list)  # images that could not be read
    metadata_refitted: bool = False  # the vocabulary drift threshold was crossed: TF-IDF re-fitted

    def to_dict(self) -> dict:
        return {"added": self.added, "replaced": self.replaced, "embedded": self.embedded, "reused": self.reused,
                "skipped": [{"id": p.id, "reason": p.reason} for p in self.skipped],
                "metadata_refitted": self.metadata_refitted}


@dataclass
class _NewRows:
    """Everything a batch of new row slots needs, prepared outside the lock."""

    items: pd.DataFrame
    vectors: np.ndarray
    colours: np.ndarray
    has_image: np.ndarray
    metadata: sp.csr_matrix


@dataclass
class _Grown:
    """The live state after an update, built outside the write lock and swapped in under it."""

    catalog: Catalog
    image_vectors: np.ndarray
    colour_vectors: np.ndarray
    has_image: np.ndarray
    alive: np.ndarray
    metadata_matrix: sp.csr_matrix
    metadata_postings: sp.csc_matrix
    attributes: object  # ranking.filters.AttributeIndex
    superseded: np.ndarray  # slots tombstoned (removed from the index)
    indexed_slots: np.ndarray  # new slots with an image, and their vectors, added to the index
    indexed_vectors: np.ndarray


class LiveUpdatesMixin:
    """``upsert`` / ``patch`` / ``remove`` on a fitted :class:`~recommender.recommender.HybridRecommender`."""

    def products(self) -> pd.DataFrame:
        """The live catalog table (removed and superseded rows left out), in slot order."""
        with self._lock.reading():
            return self.catalog_.items[self.alive_].reset_index(drop=True)

    def upsert(self, products: pd.DataFrame) -> UpdateReport:
        """Add products, or replace those whose id exists; recommendable in the next query.

        ``products`` has the catalog schema (``id, name, image`` required; image paths absolute or
        relative to the catalog's folder). Only images whose content the store has not seen are
        embedded; no other product is refitted. Bad rows raise :class:`CatalogError` and change nothing.
        """
        if not isinstance(products, pd.DataFrame):
            raise CatalogError("upsert takes a table (pandas DataFrame) of products")
        new = catalog_from_frame(_blank_missing_prices(products), self.catalog_.root)
        with self._lock.updating:
            report = UpdateReport()
            rows = self._prepare_rows(new, report)
            # Writes are serialised by the update lock, so the state read here is stable: the new arrays are
            # built outside the write lock, which is held only to swap them in.
            old = [self.catalog_.position(pid) for pid in new.ids if self._is_live(pid)]
            report.replaced = [str(self.catalog_.items["id"].iat[p]) for p in old]
            report.added = [str(pid) for pid in new.ids if str(pid) not in set(report.replaced)]
            grown = self._grown(rows, np.asarray(old, dtype=np.int64))
            with self._lock.writing():
                self._swap(grown)
            report.metadata_refitted = self._maybe_refit_metadata(len(new))
        return report

    def patch(self, product_id: str, fields: dict) -> None:
        """Change a product's metadata (its image is not re-embedded; its text is, when the metadata side
        has a text embedding); filters and scores see it at once."""
        unknown = sorted(set(fields) - set(PATCHABLE))
        if unknown:
            raise QueryError(f"cannot patch {', '.join(map(repr, unknown))}: patchable fields are "
                             f"{', '.join(PATCHABLE)} (a new image is an upsert)")
        with self._lock.updating:
            pos = self._live_position(product_id)
            row = self.catalog_.items.iloc[[pos]].copy()
            for name, value in fields.items():
                row[name] = "" if value is None else value
            new = catalog_from_frame(_blank_missing_prices(row), self.catalog_.root)  # validates the price
            rows = _NewRows(new.items, self.image_vectors_[[pos]], self.colour_vectors_[[pos]],
                            self.has_image_[[pos]], self.metadata_encoder_.transform(new.items))
            grown = self._grown(rows, np.array([pos]))
            with self._lock.writing():
                self._swap(grown)
            self._maybe_refit_metadata(1)

    def remove(self, product_ids: Sequence[str]) -> int:
        """Remove products from every later result; returns how many were live (unknown ids are ignored)."""
        if isinstance(product_ids, str):
            product_ids = [product_ids]
        with self._lock.updating, self._lock.writing():
            rows = np.array([self.catalog_.position(pid) for pid in map(str, product_ids) if self._is_live(pid)],
                            dtype=np.int64)
            rows = np.unique(rows)
            self.alive_ = self.alive_.copy()
            self.alive_[rows] = False
            if self.image_index_ is not None:
                self.image_index_.remove(rows)
            return len(rows)

    # -- internals ---------------------------------------------------------------------------
    def _is_live(self, pid: object) -> bool:
        try:
            return bool(self.alive_[self.catalog_.position(str(pid))])
        except KeyError:
            return False

    def _prepare_rows(self, new: Catalog, report: UpdateReport) -> _NewRows:
        hashes = image_hashes(new)
        known = self._known_rows(hashes)
        if known is not None:  # every image is one we hold a vector of: no store read, no model
            report.reused = len(known)
            return _NewRows(new.items, self.image_vectors_[known], self.colour_vectors_[known],
                            np.ones(len(known), dtype=bool), self.metadata_encoder_.transform(new.items))
        rows = self._embedded_rows(new, hashes, report)
        image_rows = getattr(self, "_image_rows", None)
        if image_rows is not None and self._raw_image_vectors():
            start = len(self.catalog_)  # the rows' slots once applied (writes are serialised)
            image_rows.update({h: start + i for i, h in enumerate(hashes) if h is not None and rows.has_image[i]})
        return rows

    def _known_rows(self, hashes: list[str | None]) -> np.ndarray | None:
        """Rows already holding the raw vectors of these images (by content hash), if every one is known.

        The store would give the same vectors, but reading it costs O(catalog) (it is loaded whole);
        this is O(changed). Only while catalog vectors are the raw image vectors (no DBA, no label
        projection, no adapter), and only for a recommender fitted from images (``fit``, which records the hashes).
        """
        image_rows = getattr(self, "_image_rows", None)
        if image_rows is None or not self._raw_image_vectors():
            return None
        rows = [image_rows.get(h) if h is not None else None for h in hashes]
        if not rows or any(r is None or r >= len(self.image_vectors_) for r in rows):
            return None
        return np.asarray(rows, dtype=np.int64)

    def _raw_image_vectors(self) -> bool:
        """Whether catalog rows hold the images' vectors as the store has them (nothing fitted on top)."""
        return (self.dba_k <= 0 and self.label_projection_ is None
                and getattr(self, "adapter_", None) is None)  # an adapted space (features/adapter.py) is not raw

    def _embedded_rows(self, new: Catalog, hashes: list[str | None], report: UpdateReport) -> _NewRows:
        embedder = self._embedder or self._image_embedder(self.backbone_)
        vectors, has_image, build, loaded = build_embeddings(new, embedder, self.cache_dir, hashes=hashes)
        if loaded is not None:
            self._embedder = loaded
        colours, _, _, _ = build_embeddings(new, ColourEmbedder(), self.cache_dir, hashes=hashes)
        report.embedded, report.reused, report.skipped = build.embedded, build.reused, build.skipped
        if self.label_projection_ is not None:
            vectors = self.label_projection_.transform(vectors)
        if self.dba_k > 0 and has_image.any():
            vectors[has_image] = self._augment(vectors[has_image])
        return _NewRows(new.items, vectors.astype(self.image_vectors_.dtype), colours, has_image,
                        self.metadata_encoder_.transform(new.items))

    def _augment(self, vectors: np.ndarray) -> np.ndarray:
        """DBA of new vectors against the live catalog (the existing rows are not re-augmented)."""
        from recommender.features.postprocess import l2_normalise
        from recommender.scoring import dense_scores

        live = np.flatnonzero(self.alive_ & self.has_image_)
        out = vectors.copy()
        k = min(self.dba_k, len(live))
        for i, v in enumerate(vectors):
            if not k:
                break
            s = dense_scores(self.image_vectors_, v, live)
            top = np.argpartition(-s, k - 1)[:k]
            w = np.maximum(s[top], 0) ** self.dba_alpha * (self.dba_mix / k)
            out[i] = v + w @ self.image_vectors_[live[top]].astype(np.float32)
        return l2_normalise(out)

    def _grown(self, rows: _NewRows, superseded: np.ndarray) -> _Grown:
        """The state with ``rows`` appended as new slots and ``superseded`` tombstoned, built without the write
        lock (the caller holds the update lock: no other writer changes what is read here).

        O(changed rows), amortised: the vectors grow in buffers with spare capacity (doubling; the new rows
        are written past what any reader's view shows), the id -> row map is copied rather than rebuilt, and
        the metadata postings (CSC) are rebuilt only once the rows appended after them pass
        :data:`~recommender.scoring.POSTINGS_TAIL` (queries score that tail from the CSR rows meanwhile).
        A doubling copy or a postings rebuild (~0.4 s at 100k) thus no longer holds readers back.
        """
        start = len(self.catalog_)
        slots = np.arange(start, start + len(rows.items))
        alive = np.concatenate([self.alive_, np.ones(len(slots), dtype=bool)])
        alive[superseded] = False
        matrix = sp.vstack([self.metadata_matrix_, rows.metadata], format="csr")
        postings = matrix.tocsc() if postings_stale(self.metadata_postings_, matrix) else self.metadata_postings_
        return _Grown(
            catalog=_extended_catalog(self.catalog_, rows.items),  # a live id maps to its last slot
            image_vectors=appended(self.image_vectors_, rows.vectors),
            colour_vectors=appended(self.colour_vectors_, rows.colours),
            has_image=np.concatenate([self.has_image_, rows.has_image]),  # 1 byte a row: copied, never shared
            alive=alive, metadata_matrix=matrix, metadata_postings=postings,
            attributes=self.attributes_.appended(rows.items), superseded=superseded,
            indexed_slots=slots[rows.has_image], indexed_vectors=rows.vectors[rows.has_image])

    def _swap(self, grown: _Grown) -> None:
        """Make ``grown`` the live state (under the write lock): assignments, and the index's own update."""
        self.changed_since_metadata_fit_ += len(grown.catalog) - len(self.catalog_)
        self.catalog_ = grown.catalog
        self.image_vectors_, self.colour_vectors_ = grown.image_vectors, grown.colour_vectors
        self.has_image_, self.alive_ = grown.has_image, grown.alive
        self.metadata_matrix_, self.metadata_postings_ = grown.metadata_matrix, grown.metadata_postings
        self.attributes_ = grown.attributes
        if self.image_index_ is not None:  # updated in place: readers must not search it meanwhile
            self.image_index_.remove(grown.superseded)
            self.image_index_.add(grown.indexed_slots, grown.indexed_vectors)

    def _maybe_refit_metadata(self, changed: int) -> bool:
        """Re-fit the metadata vocabulary past the drift threshold (outside the write lock, then swap)."""
        if self.changed_since_metadata_fit_ <= self.refit_fraction * max(int(self.alive_.sum()), 1):
            return False
        from recommender.ranking.calibration import sparse_reference

        items, alive = self.catalog_.items, self.alive_  # stable: we hold the update lock
        encoder = self._new_metadata_encoder().fit(items[alive])  # text vectors: cached by content
        matrix = encoder.transform(items)
        postings = matrix.tocsc()
        reference = sparse_reference(matrix, np.flatnonzero(alive))
        with self._lock.writing():
            self.metadata_encoder_, self.metadata_matrix_, self.metadata_postings_ = encoder, matrix, postings
            self.references_ = {**self.references_, "metadata": reference}
            self.ranker_.metadata_reference = reference
            self.changed_since_metadata_fit_ = 0
        if hasattr(self.image_index_, "refresh_metadata"):  # Milvus holds the metadata rows too: now stale
            self.image_index_.refresh_metadata(self)
        return True
