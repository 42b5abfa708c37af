"""A :class:`VectorIndex` on Milvus: a local milvus-lite file (tests, laptops) or a Milvus server (production).

One collection per catalog + backbone holds, per product, its image vector and the filterable
attributes as scalar fields (``category``, ``sub_category``, ``brand``, ``colour`` as VARCHARs of
lower-cased values - each value hex-encoded between separators, see ``milvus_expr.token``, and
matched with a LIKE per value - and ``price`` as a nullable double), so a filter runs *inside* Milvus as
a boolean expression instead of over-fetching and dropping. Ids are the caller's int64 labels
(the recommender's catalog rows); similarity is the inner product of L2-normalised vectors
(cosine), exactly as :class:`~recommender.index.exact.ExactIndex`. The collection also holds each
product's sparse metadata vector (the recommender's metadata row), searched by :meth:`MilvusIndex.metadata_top`
(schema and catalog mirroring: :mod:`recommender.index.milvus_catalog`).

``pymilvus`` is imported on first use only (an optional extra: ``pip install -r requirements-milvus.txt``).
Nothing connects in ``__init__``: the first call that needs the collection opens the client and
creates the collection if it does not exist yet.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from recommender.catalog.loader import ATTRIBUTE_COLUMNS
from recommender.index.base import VectorIndex, check_ids
from recommender.index.exact import l2_normalise
from recommender.index.milvus_catalog import (  # the collection's schema and catalog mirroring
    METADATA_FIELD,
    VECTOR_FIELD,
    WRITE_BATCH_BYTES,
    CatalogCollectionMixin,
    _one_line,
    catalog_collection,
    collection_stats,
    publish_recommender,
    sparse_rows,
)
from recommender.index.milvus_expr import (
    PRICE_FIELD,
    MilvusError,
    allow_expression,
    attribute_rows,
    check_uri,
    collection_name,
    filters_expression,
    hinted_expression,
    quote,
)

if TYPE_CHECKING:
    import pandas as pd

    from recommender.ranking.filters import AttributeIndex, Filters

DEFAULT_URI = "milvus.db"  # a milvus-lite file in the working directory
ENV_URI = "RECOMMENDER_MILVUS_URI"
ENV_TOKEN = "RECOMMENDER_MILVUS_TOKEN"
ENV_COLLECTION = "RECOMMENDER_MILVUS_COLLECTION"
MAX_TOPK = 16384  # Milvus's limit on k (and on queries per request)
__all__ = ["MilvusIndex", "MilvusError", "allow_expression", "collection_name", "filters_expression", "quote",
           "publish_recommender", "collection_stats", "catalog_collection"]
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")


class MilvusIndex(CatalogCollectionMixin, VectorIndex):
    """Cosine search in one Milvus collection, with the catalog's attributes as filterable scalar fields.

    Parameters
    ----------
    dim: vector dimension (the collection's, checked when an existing collection is opened).
    uri: a milvus-lite file (``something.db``) or a server URL (``http://host:19530``); default
        ``$RECOMMENDER_MILVUS_URI`` or ``milvus.db``.
    token: the server's ``user:password`` or API key (default ``$RECOMMENDER_MILVUS_TOKEN``); never
        shown by :meth:`stats`.
    collection: default ``$RECOMMENDER_MILVUS_COLLECTION`` or ``recommender``; see :func:`collection_name`.
    expected_size: accepted for ``make_index``; Milvus sizes itself.
    """

    kind = "milvus"

    def __init__(self, dim: int, uri: str | Path | None = None, token: str | None = None,
                 collection: str | None = None, expected_size: int = 0) -> None:
        super().__init__(dim)
        self.uri = str(uri or os.environ.get(ENV_URI) or DEFAULT_URI)
        # A pydantic SecretStr (the API settings) is unwrapped here only: its repr stays masked up to this point.
        token = token.get_secret_value() if hasattr(token, "get_secret_value") else token
        self.token = token if token is not None else os.environ.get(ENV_TOKEN, "")
        self.collection_given = bool(collection or os.environ.get(ENV_COLLECTION))
        self.collection = collection or os.environ.get(ENV_COLLECTION) or "recommender"
        #: ``ids -> catalog rows`` giving the scalar fields of an ``add`` without ``attributes`` (live updates).
        self.attribute_source: Callable[[np.ndarray], pd.DataFrame] | None = None
        #: ``ids -> metadata rows`` (sparse) giving the metadata vectors of an ``add`` without ``metadata``.
        self.metadata_source: Callable[[np.ndarray], sp.spmatrix] | None = None
        self.has_metadata_field = False  # set when the collection is opened
        if not _NAME.fullmatch(self.collection):
            raise MilvusError(f"invalid Milvus collection name {self.collection!r}: use letters, digits and _ "
                              "(starting with a letter or _), at most 255 characters")
        self._client_obj = None
        self._hint = threading.local()  # per query thread: the filter being answered (see filter_hint)

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
        check_uri(self.uri)
        if self.is_local:
            _quiet_milvus_lite()
            try:
                Path(self.uri).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise MilvusError(f"cannot create the folder of {self.uri}: {_one_line(exc)}") from None
        try:
            client = MilvusClient(uri=self.uri, token=self.token)
            self._ensure_collection(client)
        except MilvusError:
            raise
        except Exception as exc:  # pymilvus raises MilvusException, gRPC and OS errors alike
            hint = (" (milvus-lite opens a .db in one process at a time: is another process using it? "
                    "Several processes need a Milvus server)") if self.is_local else ""
            raise MilvusError(f"cannot open Milvus at {self._shown_uri()}: {_one_line(exc)}{hint}") from None
        self._client_obj = client
        return client

    def stats_uri(self) -> str:
        """The URI as shown to people: credentials written into a URL are masked."""
        return self._shown_uri()

    def _shown_uri(self) -> str:
        return re.sub(r"//[^/@]*@", "//***@", self.uri)  # never echo credentials written into a URL

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

    def add(self, ids: np.ndarray, vectors: np.ndarray, attributes: pd.DataFrame | None = None,
            metadata: sp.spmatrix | None = None) -> None:
        """Upsert ``vectors`` under ``ids``; ``attributes`` (catalog rows, same order) fill the scalar fields
        and ``metadata`` (sparse rows, same order) the metadata field.

        Without ``attributes`` / ``metadata``, they come from :attr:`attribute_source` /
        :attr:`metadata_source` when set (the recommender: a live upsert or patch mirrors its scalar
        fields and metadata row); otherwise an id already in the collection keeps what it had (only
        its vector changes) and a new id gets empty ones, so neither filters nor text select it.
        """
        x = l2_normalise(self._check(vectors))
        ids = check_ids(ids, len(x))
        if len(np.unique(ids)) != len(ids):
            raise ValueError("ids must be unique within one add")
        if attributes is not None and len(attributes) != len(ids):
            raise ValueError(f"{len(attributes)} attribute rows for {len(ids)} ids")
        if metadata is not None and metadata.shape[0] != len(ids):
            raise ValueError(f"{metadata.shape[0]} metadata rows for {len(ids)} ids")
        if not len(ids):
            return
        client = self._client()
        if attributes is None and self.attribute_source is not None:
            attributes = self.attribute_source(ids)
        if metadata is None and self.metadata_source is not None:
            metadata = self.metadata_source(ids)
        stored = None
        if attributes is None or (metadata is None and self.has_metadata_field):
            stored = self._existing_fields(ids)
        attrs = attribute_rows(attributes) if attributes is not None else [
            {c: r[c] for c in (*ATTRIBUTE_COLUMNS, PRICE_FIELD)} for r in stored]
        metas: list[dict] | None = None
        if self.has_metadata_field:  # (a collection from before the field gets it when sync_catalog re-creates it)
            metas = sparse_rows(metadata) if metadata is not None else [r[METADATA_FIELD] for r in stored]
        step = max(1, WRITE_BATCH_BYTES // (4 * self.dim + 1024))
        for start in range(0, len(ids), step):
            rows = [{"id": int(i), VECTOR_FIELD: v, **a} for i, v, a in
                    zip(ids[start:start + step].tolist(), x[start:start + step].tolist(),
                        attrs[start:start + step], strict=True)]
            if metas is not None:
                for row, m in zip(rows, metas[start:start + step], strict=True):
                    row[METADATA_FIELD] = m
            self._call("upsert", client.upsert, self.collection, rows)
        if self.is_local:
            self.flush()

    def flush(self) -> None:
        """Seal what was written into indexed segments.

        milvus-lite searches unsealed ("growing") data by a slow scan - measured 4-7 s per query
        over 5,000 2280-d vectors, 40-160 ms once flushed - so every write through a .db file ends
        with a flush. A server seals segments by itself; there a flush is worth it after a bulk
        load only (``sync_catalog``), not after each live upsert.
        """
        self._call("flush", self._client().flush, self.collection)

    def get_vectors(self, ids: np.ndarray) -> np.ndarray:
        """The stored (normalised) vectors of these ids, in order; ``KeyError`` naming an absent one."""
        ids = np.asarray(ids, dtype=np.int64).ravel()
        if not len(ids):
            return np.zeros((0, self.dim), np.float32)
        rows = self._call("query", self._client().query, self.collection,
                          filter=f"id in [{', '.join(map(str, ids.tolist()))}]", output_fields=["id", VECTOR_FIELD])
        found = {int(r["id"]): r[VECTOR_FIELD] for r in rows}
        missing = [int(i) for i in ids if int(i) not in found]
        if missing:
            raise KeyError(f"ids not in the index: {missing[:10]}")
        return np.asarray([found[int(i)] for i in ids], dtype=np.float32)

    def remove(self, ids: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64).ravel()
        ids = ids[ids >= 0]
        if len(ids):
            self._call("delete", self._client().delete, self.collection, ids=ids.tolist())
            if self.is_local:
                self.flush()

    @contextmanager
    def filter_hint(self, filters: Filters | None, attributes: AttributeIndex, present: np.ndarray) -> Iterator[None]:
        """While active (in this thread), a search whose ``allow`` mask lies within ``filters`` filters
        by their boolean expression on the scalar fields (minus the few ids the caller also excludes,
        such as the query item) instead of by a list of allowed ids.

        ``attributes`` and ``present`` (rows in the collection: live, with an image) are the caller's
        view, used only to check a mask against the hint: a stale hint falls back to the id list.
        """
        from recommender.ranking.filters import Filters

        filters = filters or Filters()
        present = np.asarray(present, dtype=bool)
        self._hint.value = (filters_expression(filters), filters.mask(None, attributes) & present, present)
        try:
            yield
        finally:
            self._hint.value = None

    def search(
        self, q: np.ndarray, k: int, allow: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        expr = self._expression(allow)
        if expr is None:  # nothing allowed: no need to ask Milvus
            n, k = len(self._check_query(q)), self._check_k(k)
            return np.full((n, k), -np.inf, np.float32), np.full((n, k), -1, np.int64)
        return self.search_filtered(q, k, expr)

    def _expression(self, allow: np.ndarray | None) -> str | None:
        """The Milvus filter of an ``allow`` mask (``None``: nothing allowed): the hinted filter's boolean
        expression when one is active and still matches, else the list of allowed ids."""
        if allow is None:
            return ""
        hint = getattr(self._hint, "value", None)
        if hint is not None:
            allow = self._in_collection(allow, hint[2])
            expr = hinted_expression(hint[0], hint[1], allow)
            if expr is not None:
                return expr
        return allow_expression(allow)

    @staticmethod
    def _in_collection(allow: np.ndarray, present: np.ndarray) -> np.ndarray:
        """``allow`` without the rows the caller says the collection does not hold (no image, removed):
        no search can find them, and leaving them in would make every hint look stale."""
        allow = np.asarray(allow, dtype=bool).ravel()
        if len(allow) != len(present):
            return allow
        return allow & present

    def metadata_top(self, q_meta: sp.spmatrix, k: int, allow: np.ndarray | None = None) -> np.ndarray:
        """Rows of the ``k`` best metadata matches among ``allow``, best first (ties: lower id): the
        inner product of the 1 x n_terms query row with the stored metadata rows, rows scoring 0 left out.

        Searches the collection's sparse ``metadata`` field with the filter of :meth:`search`. The
        collection holds products with an image only: during a :meth:`filter_hint`, the allowed rows it
        does not hold (a product whose image could not be read) are scored from :attr:`metadata_source`.
        """
        q = sp.csr_matrix(q_meta)[:1]
        k = self._check_k(k)
        client = self._client()
        if not self.has_metadata_field:
            raise MilvusError(f"collection {self.collection!r} has no metadata field (created by an older "
                              "version): mirror the catalog again (python -m recommender build)")
        if q.nnz == 0 or k == 0:
            return np.zeros(0, np.int64)
        expr = self._expression(allow)
        found: list[tuple[float, int]] = []
        if expr is not None:
            hits = self._call("search", client.search, self.collection, data=sparse_rows(q), limit=min(k, MAX_TOPK),
                              filter=expr, anns_field=METADATA_FIELD, output_fields=["id"],
                              search_params={"metric_type": "IP"})
            found = [(float(h["distance"]), int(h["id"])) for h in hits[0] if float(h["distance"]) > 0]
        hint = getattr(self._hint, "value", None)
        if allow is not None and hint is not None and self.metadata_source is not None:
            allow = np.asarray(allow, dtype=bool).ravel()
            outside = np.flatnonzero(allow & ~hint[2]) if len(allow) == len(hint[2]) else np.zeros(0, np.int64)
            if len(outside):
                scores = (sp.csr_matrix(self.metadata_source(outside)) @ q.T).toarray().ravel()
                found += [(float(s), int(i)) for s, i in zip(scores, outside, strict=True) if s > 0]
        found.sort(key=lambda t: (-t[0], t[1]))
        return np.asarray([i for _, i in found[:k]], dtype=np.int64)

    def search_filtered(self, q: np.ndarray, k: int, expr: str = "") -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` by cosine among the entities matching the Milvus boolean ``expr`` (``""``: all).

        Build ``expr`` with :func:`filters_expression` (never by pasting user text): the filter runs
        inside Milvus's search. Same return shape and padding as :meth:`search`; ties are broken
        by the lower id, as the exact index does.
        """
        q = self._check_query(q)
        k = self._check_k(k)
        scores = np.full((len(q), k), -np.inf, np.float32)
        ids = np.full((len(q), k), -1, np.int64)
        if k == 0 or len(q) == 0:
            return scores, ids
        client = self._client()
        for start in range(0, len(q), MAX_TOPK):
            # Milvus returns at most MAX_TOPK hits; a larger k is padded like any short result.
            hits = self._call("search", client.search, self.collection, data=q[start:start + MAX_TOPK].tolist(),
                              limit=min(k, MAX_TOPK), filter=expr, anns_field=VECTOR_FIELD, output_fields=["id"],
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
        # A client is a connection (reopened on use) and the hints are per thread: neither is state.
        return {k: v for k, v in self.__dict__.items() if k not in ("_client_obj", "_hint")}

    def __setstate__(self, state: Mapping[str, object]) -> None:
        self.__dict__.update(state)
        self._client_obj = None
        self._hint = threading.local()


class _UnimplementedLiteCall(logging.Filter):
    """Drops the traceback gRPC logs each time pymilvus asks milvus-lite for a call lite does not
    implement (``AllocTimestamp``): pymilvus falls back by itself, and the person sees no error."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (isinstance(exc, NotImplementedError) and "AllocTimestamp" in "".join(
            traceback.format_tb(record.exc_info[2])))


def _quiet_milvus_lite() -> None:
    grpc_log = logging.getLogger("grpc._server")
    if not any(isinstance(f, _UnimplementedLiteCall) for f in grpc_log.filters):
        grpc_log.addFilter(_UnimplementedLiteCall())
