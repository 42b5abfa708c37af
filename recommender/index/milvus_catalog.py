"""The Milvus collection of a catalog: its schema, and mirroring a catalog or a fitted recommender into it.

:class:`CatalogCollectionMixin` is the part of :class:`~recommender.index.milvus.MilvusIndex` that knows
the catalog (the collection's schema, ``add_catalog`` / ``sync_catalog`` / ``mirror``);
:func:`publish_recommender`, :func:`collection_stats` and :func:`catalog_collection` serve the CLI and
the API. The search side lives in :mod:`recommender.index.milvus`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from recommender.catalog.loader import ATTRIBUTE_COLUMNS
from recommender.index.milvus_expr import MAX_ATTRIBUTE_LENGTH, PRICE_FIELD, MilvusError, collection_name

if TYPE_CHECKING:
    from recommender.catalog.loader import Catalog
    from recommender.index.milvus import MilvusIndex

log = logging.getLogger(__name__)
VECTOR_FIELD = "image"
METADATA_FIELD = "metadata"
#: Milvus stores no empty sparse vector: a product without any metadata term holds this one term, which
#: no query has (term ids are the metadata encoder's columns, far below it), so it never scores.
EMPTY_TERM = 2**32 - 2
WRITE_BATCH_BYTES = 16 << 20  # one upsert request stays well under Milvus's 64 MB limit


def sparse_rows(matrix: sp.spmatrix) -> list[dict[int, float]]:
    """The rows of a sparse matrix as Milvus sparse vectors (``{term: weight}``), empty rows as :data:`EMPTY_TERM`."""
    m = sp.csr_matrix(matrix)
    m.eliminate_zeros()
    out = []
    for i in range(m.shape[0]):
        lo, hi = m.indptr[i], m.indptr[i + 1]
        row = dict(zip(m.indices[lo:hi].tolist(), m.data[lo:hi].astype(np.float32).tolist(), strict=True))
        out.append(row or {EMPTY_TERM: 1e-6})
    return out


def sparse_matrix(rows: list[dict], n_terms: int) -> sp.csr_matrix:
    """Milvus sparse vectors back into CSR rows over ``n_terms`` columns (:data:`EMPTY_TERM` dropped)."""
    data, indices, indptr = [], [], [0]
    for row in rows:
        items = sorted((int(t), float(w)) for t, w in dict(row).items() if int(t) < n_terms)
        indices += [t for t, _ in items]
        data += [w for _, w in items]
        indptr.append(len(indices))
    return sp.csr_matrix((np.asarray(data, np.float32), np.asarray(indices, np.int64), indptr),
                         shape=(len(rows), n_terms))


class CatalogCollectionMixin:
    """Schema and catalog mirroring of :class:`~recommender.index.milvus.MilvusIndex`."""

    def _ensure_collection(self, client) -> None:
        from pymilvus import DataType

        if client.has_collection(self.collection):
            fields = client.describe_collection(self.collection).get("fields", [])
            dims = [f.get("params", {}).get("dim") for f in fields if f.get("name") == VECTOR_FIELD]
            if not dims or int(dims[0]) != self.dim:
                raise MilvusError(f"collection {self.collection!r} holds {dims[0] if dims else 'no'}-d vectors, "
                                  f"not {self.dim}-d: drop it or choose another collection")
            # A collection created before the metadata field: searchable by image, re-created by sync_catalog.
            self.has_metadata_field = any(f.get("name") == METADATA_FIELD for f in fields)
            client.load_collection(self.collection)
            return
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field(VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=self.dim)
        # The façade's metadata row (TF-IDF words + attribute one-hots): its inner product is our metadata score.
        schema.add_field(METADATA_FIELD, DataType.SPARSE_FLOAT_VECTOR)
        for col in ATTRIBUTE_COLUMNS:
            schema.add_field(col, DataType.VARCHAR, max_length=MAX_ATTRIBUTE_LENGTH)
        schema.add_field(PRICE_FIELD, DataType.DOUBLE, nullable=True)
        index_params = client.prepare_index_params()
        # FLAT: exact, the only type milvus-lite builds; a server may use HNSW/IVF (see docs/scaling.md).
        index_params.add_index(field_name=VECTOR_FIELD, index_type="FLAT", metric_type="IP")
        # The inverted lists of the metadata terms: a search touches only the query's terms' postings.
        index_params.add_index(field_name=METADATA_FIELD, index_type="SPARSE_INVERTED_INDEX", metric_type="IP")
        # Strong consistency: a search sees every write acknowledged before it (live updates).
        client.create_collection(self.collection, schema=schema, index_params=index_params,
                                 consistency_level="Strong")
        self.has_metadata_field = True

    def _existing_fields(self, ids: np.ndarray) -> list[dict[str, object]]:
        """The stored scalar fields (and metadata vector) of these ids, empty ones for an id not stored."""
        empty: dict[str, object] = {**{c: "" for c in ATTRIBUTE_COLUMNS}, PRICE_FIELD: None,
                                    METADATA_FIELD: {EMPTY_TERM: 1e-6}}
        fields = [*ATTRIBUTE_COLUMNS, PRICE_FIELD] + ([METADATA_FIELD] if self.has_metadata_field else [])
        found = self._call("query", self._client().query, self.collection,
                           filter=f"id in [{', '.join(map(str, ids.tolist()))}]", output_fields=["id", *fields])
        by_id = {int(r["id"]): {c: r.get(c) or "" for c in ATTRIBUTE_COLUMNS}
                 | {PRICE_FIELD: r.get(PRICE_FIELD), METADATA_FIELD: r.get(METADATA_FIELD) or empty[METADATA_FIELD]}
                 for r in found}
        return [by_id.get(int(i), dict(empty)) for i in ids]

    def add_catalog(self, catalog: Catalog, vectors: np.ndarray, rows: Iterable[int] | None = None,
                    metadata: sp.spmatrix | None = None) -> None:
        """Upsert catalog ``rows`` (default: all) with their vectors (row ``i`` of ``vectors`` is catalog row ``i``),
        attributes and, given, metadata rows (row ``i`` of ``metadata`` likewise); ids are the catalog rows,
        as the recommender uses them."""
        rows = np.arange(len(catalog)) if rows is None else np.asarray(list(rows), dtype=np.int64)
        meta = None if metadata is None else sp.csr_matrix(metadata)[rows]
        self.add(rows, np.asarray(vectors)[rows], catalog.items.iloc[rows], metadata=meta)

    def sync_catalog(self, catalog: Catalog, vectors: np.ndarray, has_vector: np.ndarray | None = None,
                     metadata: sp.spmatrix | None = None) -> None:
        """Make the collection mirror ``catalog``: upsert every row with a vector, delete the rest.

        Rows without a vector (``has_vector`` False: an unreadable image) and ids past the end of
        a catalog that shrank are deleted, so a search never returns a product that is gone.
        ``metadata`` (one sparse row per catalog row) fills the metadata field; a collection created
        before that field existed is dropped and created anew first (everything is rewritten anyway).
        """
        n = len(catalog)
        has_vector = np.ones(n, dtype=bool) if has_vector is None else np.asarray(has_vector, dtype=bool)
        self._client()
        if metadata is not None and not self.has_metadata_field:
            log.warning("Milvus collection %r has no metadata field (created by an older version): "
                        "re-creating it with one", self.collection)
            self.drop()
            self._client()
        self.add_catalog(catalog, vectors, np.flatnonzero(has_vector), metadata)
        self.remove(np.flatnonzero(~has_vector))
        self._call("delete", self._client().delete, self.collection, filter=f"id >= {n}")
        self.flush()

    def mirror(self, rec) -> MilvusIndex:
        """Serve a fitted ``HybridRecommender``'s image side from this collection.

        Names the collection after the catalog and backbone unless one was given, mirrors the
        catalog into it (item vectors + scalar fields; products that left are deleted), and takes
        later live updates' attributes from the recommender's catalog.
        """
        if not self.collection_given:
            cache_dir = getattr(rec.build_report_, "cache_dir", None)
            self.collection = catalog_collection(rec.catalog_, Path(cache_dir).name if cache_dir else rec.backbone_)
        self.sync_catalog(rec.catalog_, rec.image_vectors_, rec.has_image_ & rec.alive_, rec.metadata_matrix_)
        self.attribute_source = rec.catalog_rows
        self.metadata_source = rec.metadata_rows
        return self

    def refresh_metadata(self, rec) -> None:
        """Rewrite the metadata field of every product in the collection from ``rec`` (after the façade
        re-fitted its metadata vocabulary: every row's terms changed); vectors and attributes stay."""
        self._client()
        if not self.has_metadata_field:  # an older collection: re-created with the field
            self.mirror(rec)
            return
        rows = np.flatnonzero(rec.has_image_ & rec.alive_)
        matrix = rec.metadata_matrix_
        step = max(1, WRITE_BATCH_BYTES // 4096)
        try:
            for start in range(0, len(rows), step):
                ids = rows[start:start + step]
                data = [{"id": int(i), METADATA_FIELD: m} for i, m in zip(ids.tolist(), sparse_rows(matrix[ids]),
                                                                          strict=True)]
                self._call("upsert", self._client().upsert, self.collection, data, partial_update=True)
        except MilvusError as exc:  # a server before partial upserts (Milvus < 2.6): rewrite whole rows
            log.warning("partial upsert refused (%s): re-mirroring the whole collection", exc)
            self.mirror(rec)
        self.flush()


def catalog_collection(catalog: Catalog, backbone_folder: str) -> str:
    """The collection of ``catalog`` (named by its folder and file) for one backbone configuration."""
    label = f"{catalog.source.parent.name}_{catalog.source.stem}" if catalog.source else "catalog"
    return collection_name(label, backbone_folder)


def _one_line(exc: BaseException) -> str:
    text = str(getattr(exc, "message", None) or exc) or type(exc).__name__
    return " ".join(text.split())[:300]


def publish_recommender(rec, uri: str | Path | None = None, token: str | None = None,
                        collection: str | None = None) -> MilvusIndex:
    """Mirror a fitted ``HybridRecommender``'s catalog (item vectors + attributes) into its Milvus collection."""
    from recommender.index.milvus import MilvusIndex

    name = collection or catalog_collection(rec.catalog_, rec.build_report_.cache_dir.name)
    index = MilvusIndex(rec.image_vectors_.shape[1], uri, token, name)
    index.sync_catalog(rec.catalog_, rec.image_vectors_, rec.has_image_)
    return index


def collection_stats(uri: str | Path | None = None, token: str | None = None,
                     collection: str | None = None) -> dict[str, object] | None:
    """Size and dimension of an existing collection without knowing its dimension first; ``None`` if absent."""
    from recommender.index.milvus import MilvusIndex

    probe = MilvusIndex(1, uri, token, collection)
    try:
        from pymilvus import MilvusClient
    except ImportError:
        raise MilvusError("the Milvus backend needs pymilvus and milvus-lite: "
                          "pip install -r requirements-milvus.txt") from None
    if probe.is_local and not Path(probe.uri).exists():  # milvus-lite keeps a folder named *.db
        return None
    try:
        client = MilvusClient(uri=probe.uri, token=probe.token)
    except Exception as exc:
        raise MilvusError(f"cannot open Milvus at {probe._shown_uri()}: {_one_line(exc)}") from None
    try:
        if not client.has_collection(probe.collection):
            return None
        fields = client.describe_collection(probe.collection).get("fields", [])
        dim = next(int(f["params"]["dim"]) for f in fields if f.get("name") == VECTOR_FIELD)
        return MilvusIndex(dim, probe.uri, probe.token, probe.collection).stats()
    except MilvusError:
        raise
    except Exception as exc:
        raise MilvusError(f"cannot read collection {probe.collection!r}: {_one_line(exc)}") from None
    finally:
        client.close()
