"""A :class:`VectorIndex` on Milvus: a local milvus-lite file (tests, laptops) or a Milvus server (production).

One collection per catalog + backbone holds, per product, its image vector and the filterable
attributes as scalar fields (``category``, ``sub_category``, ``brand``, ``colour`` as arrays of
lower-cased values - a multi-valued ``blue|pink`` is two values - and ``price`` as a nullable
double), so a filter runs *inside* Milvus as a boolean expression instead of over-fetching and
dropping. Ids are the caller's int64 labels (the recommender's catalog rows); similarity is the
inner product of L2-normalised vectors (cosine), exactly as :class:`~recommender.index.exact.ExactIndex`.

``pymilvus`` is imported on first use only (an optional extra: ``pip install -r requirements-milvus.txt``).
Nothing connects in ``__init__``: the first call that needs the collection opens the client and
creates the collection if it does not exist yet.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from recommender.catalog.loader import ATTRIBUTE_COLUMNS, split_values
from recommender.errors import RecommenderError
from recommender.index.base import VectorIndex
from recommender.index.exact import l2_normalise

if TYPE_CHECKING:
    import pandas as pd

    from recommender.catalog.loader import Catalog
    from recommender.ranking.hybrid import Filters

DEFAULT_URI = "milvus.db"  # a milvus-lite file in the working directory
ENV_URI = "RECOMMENDER_MILVUS_URI"
ENV_TOKEN = "RECOMMENDER_MILVUS_TOKEN"
ENV_COLLECTION = "RECOMMENDER_MILVUS_COLLECTION"
VECTOR_FIELD = "image"
PRICE_FIELD = "price"
MAX_VALUE_LENGTH = 512  # characters of one attribute value (a VARCHAR element)
MAX_VALUES = 64  # values of one multi-valued attribute (an ARRAY's capacity)
WRITE_BATCH_BYTES = 16 << 20  # one upsert request stays well under Milvus's 64 MB limit
MAX_TOPK = 16384  # Milvus's limit on k (and on queries per request)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")


class MilvusError(RecommenderError):
    """Milvus cannot be reached or refused a request; the message says which and why."""


def collection_name(catalog_name: str, backbone_folder: str) -> str:
    """A valid Milvus collection name for one catalog + backbone configuration.

    Milvus names allow letters, digits and ``_`` only, so everything else becomes ``_``; the
    backbone folder (``efficientnet_lite0-1a2b3c4d``) carries the configuration hash, so vectors
    of different models or preprocessing never share a collection.
    """
    raw = f"rec_{catalog_name}_{backbone_folder}"
    return re.sub(r"[^A-Za-z0-9_]", "_", raw)[:255]


def quote(value: str) -> str:
    """``value`` as a Milvus string literal, escaped so it can only ever be that literal.

    Inside double quotes Milvus's expression grammar reads C escapes (``\\"``, ``\\\\``, ``\\n``,
    ``\\t``) and forbids a raw line break; escaping exactly those keeps a value like
    ``x" or 1==1 or "`` one string that cannot close the literal.
    """
    return '"' + _UNSAFE.sub(lambda m: _ESCAPES[m.group()], str(value)) + '"'


# Milvus reads other control characters raw, but rejects \\x, \\u and octal escapes.
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_UNSAFE = re.compile(r'[\\"\n\r\t]')


def _number(value: float, name: str) -> str:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise MilvusError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(x):
        raise MilvusError(f"{name} must be a finite number, got {value!r}")
    return repr(x)


def filters_expression(filters: Filters | None) -> str:
    """The project's :class:`~recommender.ranking.hybrid.Filters` as a Milvus boolean expression.

    Same meaning as ``Filters.mask``: an attribute passes if any of its values is selected
    (case-insensitive: values are stored and compared lower-cased); with a price bound, products
    without a price are excluded. No active filter gives ``""`` (everything passes).
    """
    if filters is None:
        return ""
    parts = []
    for col in ATTRIBUTE_COLUMNS:
        wanted = getattr(filters, col)
        if not wanted:
            continue
        if isinstance(wanted, str):  # a bare string would otherwise be read as its characters
            wanted = [wanted]
        values = sorted({str(w).strip().lower() for w in wanted})
        parts.append(f"ARRAY_CONTAINS_ANY({col}, [{', '.join(quote(v) for v in values)}])")
    if filters.price_min is not None:
        parts.append(f"({PRICE_FIELD} IS NOT NULL and {PRICE_FIELD} >= {_number(filters.price_min, 'price_min')})")
    if filters.price_max is not None:
        parts.append(f"({PRICE_FIELD} IS NOT NULL and {PRICE_FIELD} <= {_number(filters.price_max, 'price_max')})")
    return " and ".join(parts)


def allow_expression(allow: np.ndarray) -> str | None:
    """The ``allow`` mask of :meth:`VectorIndex.search` as an id expression over the shorter side.

    ``None`` means nothing is allowed (no search needed). Ids at or beyond ``len(allow)`` are not
    allowed, so the complement form bounds the id as well.
    """
    allow = np.asarray(allow, dtype=bool).ravel()
    allowed = np.flatnonzero(allow)
    if len(allowed) == 0:
        return None
    denied = np.flatnonzero(~allow)
    if len(allowed) <= len(denied):
        return f"id in [{', '.join(map(str, allowed.tolist()))}]"
    bound = f"id < {len(allow)}"
    return bound if len(denied) == 0 else f"{bound} and id not in [{', '.join(map(str, denied.tolist()))}]"


def attribute_rows(items: pd.DataFrame) -> list[dict[str, object]]:
    """The scalar fields of each catalog row, as Milvus stores them (lower-cased value arrays, price or None)."""
    cols = [c for c in ATTRIBUTE_COLUMNS if c in items.columns]
    prices = items[PRICE_FIELD].to_numpy(dtype=float) if PRICE_FIELD in items.columns else None
    rows = []
    for i in range(len(items)):
        row: dict[str, object] = {c: [] for c in ATTRIBUTE_COLUMNS}
        for c in cols:
            values = list(dict.fromkeys(v.strip().lower() for v in split_values(items[c].iat[i])))
            if len(values) > MAX_VALUES:
                raise MilvusError(f"row {i}: {c} has {len(values)} values; Milvus stores at most {MAX_VALUES}")
            if any(len(v) > MAX_VALUE_LENGTH for v in values):
                raise MilvusError(f"row {i}: a {c} value is longer than {MAX_VALUE_LENGTH} characters")
            row[c] = values
        price = None if prices is None or not np.isfinite(prices[i]) else float(prices[i])
        row[PRICE_FIELD] = price
        rows.append(row)
    return rows


class MilvusIndex(VectorIndex):
    """Cosine search in one Milvus collection, with the catalog's attributes as filterable scalar fields.

    Parameters
    ----------
    dim: vector dimension (the collection's, checked when an existing collection is opened).
    uri: a milvus-lite file (``something.db``) or a server URL (``http://host:19530``); default
        ``$RECOMMENDER_MILVUS_URI`` or ``milvus.db``.
    token: the server's ``user:password`` or API key (default ``$RECOMMENDER_MILVUS_TOKEN``); never
        shown by :meth:`stats`.
    collection: default ``$RECOMMENDER_MILVUS_COLLECTION`` or ``recommender``; see :func:`collection_name`.
    """

    kind = "milvus"

    def __init__(self, dim: int, uri: str | Path | None = None, token: str | None = None,
                 collection: str | None = None) -> None:
        super().__init__(dim)
        self.uri = str(uri or os.environ.get(ENV_URI) or DEFAULT_URI)
        self.token = token if token is not None else os.environ.get(ENV_TOKEN, "")
        self.collection = collection or os.environ.get(ENV_COLLECTION) or "recommender"
        if not _NAME.fullmatch(self.collection):
            raise MilvusError(f"invalid Milvus collection name {self.collection!r}: use letters, digits and _ "
                              "(starting with a letter or _), at most 255 characters")
        self._client_obj = None

    # -- connection and collection -----------------------------------------------------------
    @property
    def is_local(self) -> bool:
        """True for a milvus-lite file, False for a server URL."""
        return "://" not in self.uri

    def _client(self):
        if self._client_obj is not None:
            return self._client_obj
        try:
            from pymilvus import MilvusClient
        except ImportError:
            raise MilvusError("the Milvus backend needs pymilvus and milvus-lite: "
                              "pip install -r requirements-milvus.txt") from None
        if self.is_local:
            if not self.uri.endswith(".db"):
                raise MilvusError(f"a milvus-lite URI is a file ending in .db, got {self.uri!r} "
                                  "(or give a server URL such as http://localhost:19530)")
            Path(self.uri).parent.mkdir(parents=True, exist_ok=True)
        elif not self.uri.startswith(("http://", "https://", "tcp://", "unix://")):
            raise MilvusError(f"unsupported Milvus URI {self._shown_uri()!r}: give a .db file or an http(s):// URL")
        try:
            client = MilvusClient(uri=self.uri, token=self.token)
            self._ensure_collection(client)
        except MilvusError:
            raise
        except Exception as exc:  # pymilvus raises MilvusException, gRPC and OS errors alike
            raise MilvusError(f"cannot open Milvus at {self._shown_uri()}: {_one_line(exc)}") from None
        self._client_obj = client
        return client

    def _shown_uri(self) -> str:
        return re.sub(r"//[^/@]*@", "//***@", self.uri)  # never echo credentials written into a URL

    def _ensure_collection(self, client) -> None:
        from pymilvus import DataType

        if client.has_collection(self.collection):
            desc = client.describe_collection(self.collection)
            dims = [f.get("params", {}).get("dim") for f in desc.get("fields", []) if f.get("name") == VECTOR_FIELD]
            if not dims or int(dims[0]) != self.dim:
                raise MilvusError(f"collection {self.collection!r} holds {dims[0] if dims else 'no'}-d vectors, "
                                  f"not {self.dim}-d: drop it or choose another collection")
            client.load_collection(self.collection)
            return
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field(VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=self.dim)
        for col in ATTRIBUTE_COLUMNS:
            schema.add_field(col, DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=MAX_VALUES,
                             max_length=MAX_VALUE_LENGTH)
        schema.add_field(PRICE_FIELD, DataType.DOUBLE, nullable=True)
        index_params = client.prepare_index_params()
        # FLAT: exact, the only type milvus-lite builds; a server may use HNSW/IVF (see docs/scaling.md).
        index_params.add_index(field_name=VECTOR_FIELD, index_type="FLAT", metric_type="IP")
        # Strong consistency: a search sees every write acknowledged before it (live updates).
        client.create_collection(self.collection, schema=schema, index_params=index_params,
                                 consistency_level="Strong")

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            raise MilvusError(f"Milvus {what} failed on {self.collection!r}: {_one_line(exc)}") from None

    # -- the VectorIndex interface -------------------------------------------------------------
    @property
    def ntotal(self) -> int:
        client = self._client()
        res = self._call("count", client.query, self.collection, filter="", output_fields=["count(*)"])
        return int(res[0]["count(*)"]) if res else 0

    def add(self, ids: np.ndarray, vectors: np.ndarray, attributes: pd.DataFrame | None = None) -> None:
        """Upsert ``vectors`` under ``ids``; ``attributes`` (catalog rows, same order) fill the scalar fields.

        Without ``attributes``, an id already in the collection keeps the attributes it had (only
        its vector changes); a new id gets empty attributes, so attribute filters will not select it.
        """
        x = l2_normalise(self._check(vectors))
        ids = np.asarray(ids, dtype=np.int64).ravel()
        if len(ids) != len(x):
            raise ValueError(f"{len(ids)} ids for {len(x)} vectors")
        if len(ids) and ids.min() < 0:
            raise ValueError("ids must be non-negative")
        if len(np.unique(ids)) != len(ids):
            raise ValueError("ids must be unique within one add")
        if attributes is not None and len(attributes) != len(ids):
            raise ValueError(f"{len(attributes)} attribute rows for {len(ids)} ids")
        if not len(ids):
            return
        client = self._client()
        attrs = attribute_rows(attributes) if attributes is not None else self._existing_attributes(ids)
        step = max(1, WRITE_BATCH_BYTES // (4 * self.dim + 256))
        for start in range(0, len(ids), step):
            rows = [{"id": int(i), VECTOR_FIELD: v, **a} for i, v, a in
                    zip(ids[start:start + step].tolist(), x[start:start + step].tolist(),
                        attrs[start:start + step], strict=True)]
            self._call("upsert", client.upsert, self.collection, rows)

    def add_catalog(self, catalog: Catalog, vectors: np.ndarray, rows: Iterable[int] | None = None) -> None:
        """Upsert catalog ``rows`` (default: all) with their vectors (row ``i`` of ``vectors`` is catalog row ``i``)
        and attributes; ids are the catalog rows, as the recommender uses them."""
        rows = np.arange(len(catalog)) if rows is None else np.asarray(list(rows), dtype=np.int64)
        self.add(rows, np.asarray(vectors)[rows], catalog.items.iloc[rows])

    def _existing_attributes(self, ids: np.ndarray) -> list[dict[str, object]]:
        empty: dict[str, object] = {**{c: [] for c in ATTRIBUTE_COLUMNS}, PRICE_FIELD: None}
        found = self._call("query", self._client().query, self.collection,
                           filter=f"id in [{', '.join(map(str, ids.tolist()))}]",
                           output_fields=["id", *ATTRIBUTE_COLUMNS, PRICE_FIELD])
        by_id = {int(r["id"]): {c: list(r.get(c) or []) for c in ATTRIBUTE_COLUMNS} | {PRICE_FIELD: r.get(PRICE_FIELD)}
                 for r in found}
        return [by_id.get(int(i), dict(empty)) for i in ids]

    def remove(self, ids: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64).ravel()
        ids = ids[ids >= 0]
        if len(ids):
            self._call("delete", self._client().delete, self.collection, ids=ids.tolist())

    def search(
        self, q: np.ndarray, k: int, allow: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        expr = "" if allow is None else allow_expression(allow)
        if expr is None:
            n = len(np.atleast_2d(q))
            return np.full((n, k), -np.inf, np.float32), np.full((n, k), -1, np.int64)
        return self.search_filtered(q, k, expr)

    def search_filtered(self, q: np.ndarray, k: int, expr: str = "") -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` by cosine among the entities matching the Milvus boolean ``expr`` (``""``: all).

        Build ``expr`` with :func:`filters_expression` (never by pasting user text): the filter runs
        inside Milvus's search. Same return shape and padding as :meth:`search`; ties are broken
        by the lower id, as the exact index does.
        """
        q = l2_normalise(np.atleast_2d(q))
        if q.shape[1] != self.dim:
            raise ValueError(f"query has {q.shape[1]} dimensions, the index {self.dim}")
        if not 0 < k <= MAX_TOPK:
            raise ValueError(f"k must be between 1 and {MAX_TOPK}, got {k}")
        scores = np.full((len(q), k), -np.inf, np.float32)
        ids = np.full((len(q), k), -1, np.int64)
        client = self._client()
        for start in range(0, len(q), MAX_TOPK):
            hits = self._call("search", client.search, self.collection, data=q[start:start + MAX_TOPK].tolist(),
                              limit=k, filter=expr, anns_field=VECTOR_FIELD, output_fields=["id"],
                              search_params={"metric_type": "IP"})
            for j, row in enumerate(hits):
                found = sorted(((float(h["distance"]), int(h["id"])) for h in row), key=lambda t: (-t[0], t[1]))
                if found:
                    scores[start + j, :len(found)] = [s for s, _ in found]
                    ids[start + j, :len(found)] = [i for _, i in found]
        return scores, ids

    # -- management ----------------------------------------------------------------------------
    def stats(self) -> dict[str, object]:
        """What ``info`` and ``/v1/stats`` show: backend, where (credentials masked), collection, size."""
        return {"kind": self.kind, "uri": self._shown_uri(), "collection": self.collection,
                "dim": self.dim, "size": self.ntotal}

    def drop(self) -> None:
        """Delete the whole collection (the next use creates it empty)."""
        client = self._client()
        self._call("drop", client.drop_collection, self.collection)
        self._client_obj = None

    def close(self) -> None:
        if self._client_obj is not None:
            try:
                self._client_obj.close()
            finally:
                self._client_obj = None

    def __getstate__(self) -> Mapping[str, object]:
        return {**self.__dict__, "_client_obj": None}  # a client is a connection: reopen after unpickling


def _one_line(exc: BaseException) -> str:
    text = str(getattr(exc, "message", None) or exc) or type(exc).__name__
    return " ".join(text.split())[:300]
