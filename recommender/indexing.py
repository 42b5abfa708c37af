"""How the façade holds its image index: built or loaded by content, mirrored, and told the query's filters.

A mixin of :class:`~recommender.recommender.HybridRecommender` (the seam between the façade's fitting and
the ``index/`` layer): the backend is chosen by ``make_index`` (or named with options, e.g. Milvus); an
in-process ANN is saved under the cache keyed by its exact content so a warm fit loads it; a shared
collection (Milvus) mirrors the catalog and reads its attributes and metadata rows through the methods here.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from recommender.index.factory import backend_class, make_index, resolve_kind
from recommender.index.persist import index_content_key, load_index, prune_saved_indexes, save_index
from recommender.querying import QueryMixin
from recommender.ranking.calibration import DEFAULT_PROBES
from recommender.ranking.filters import Filters
from recommender.ranking.results import Recommendations
from recommender.store.build import default_cache_dir
from recommender.store.vector_file import content_digest, mapped_bfloat16, populate, read_rows

log = logging.getLogger(__name__)


class IndexMixin:
    """The image index of a fitted recommender (``image_index_``; None = the exact scan of its own vectors)."""

    def recommend(self, *args, **kwargs) -> Recommendations:
        hint = getattr(getattr(self, "image_index_", None), "filter_hint", None)
        if hint is None:
            return super().recommend(*args, **kwargs)
        # Milvus: the filters run inside the collection as a boolean expression, not as a list of ids.
        filters = kwargs.get("filters", args[5] if len(args) > 5 else None)
        filters = filters if isinstance(filters, Filters) else None  # no hint: still correct (an id expression)
        with hint(filters, self.attributes_, self.alive_ & self.has_image_):
            return super().recommend(*args, **kwargs)

    recommend.__doc__ = QueryMixin.recommend.__doc__

    def _build_index(self, vectors: np.ndarray, has_image: np.ndarray):
        """The ANN image index, or None where an exact scan of our own vectors is the backend.

        An in-process ANN is saved under the cache folder keyed by its exact content (the vectors' bytes,
        their rows, the kind), so a warm fit loads the graph instead of rebuilding it (minutes at 1M).
        """
        if self.index_options:  # a named backend with its options (Milvus: uri, token, collection)
            index = backend_class(self.index)(vectors.shape[1], expected_size=len(vectors), **self.index_options)
        else:
            index = make_index(self.index, vectors.shape[1], expected_size=len(vectors))
        if index.kind == "exact":
            return None  # the exact scan reads image_vectors_ directly: no second copy
        if hasattr(index, "mirror"):  # a shared, persistent collection (Milvus): catalog and attributes mirrored
            return index.mirror(self)
        rows = np.flatnonzero(has_image)
        folder = None if index.kind == "milvus" else self._index_folder()
        key = index_content_key(index, vectors, rows, digest=content_digest(vectors)) if folder is not None else None
        if key is not None:
            loaded = load_index(folder, key, kind=index.kind, dim=index.dim)
            if loaded is not None:
                return loaded
        # Every product has an image (the usual case): the vectors themselves, not a fancy-indexed copy of all of them
        # (70k: +580 MB at the fit's peak).
        index.add(rows, vectors if len(rows) == len(vectors) else vectors[rows])
        if key is not None:
            try:
                save_index(index, folder, key)
                prune_saved_indexes(folder, keep=key)
            except OSError as exc:  # a read-only cache still serves: the next fit builds again
                log.warning("could not save the image index under %s: %s", folder, exc)
        return index

    def _serves_mapped(self, n: int, dim: int, catalog=None) -> bool:
        """Whether a fit of ``n`` products of ``dim`` serves its image vectors from a bfloat16 file (an
        in-process ANN index and a cache folder): the fit then asks the build for bfloat16 rows at once."""
        kind = self.index if self.index_options else resolve_kind(self.index, n, dim)
        return not (kind in ("exact", "milvus") or self.index_options or self._index_folder(catalog) is None)

    def _serving_vectors(self, vectors: np.ndarray, catalog=None, name: str = "vectors") -> np.ndarray:
        """The copy of the image vectors queries re-score candidates with: with an in-process ANN index, bfloat16
        memory-mapped from the cache (a query reads only its candidates' rows; the process's anonymous
        memory no longer holds 9 KB per product); with the exact scan (every row, every query) or a remote
        collection, ``vectors`` themselves. A cache that cannot be written keeps them in memory, with a warning.
        Vectors already mapped from a file (``fit`` converts early, to free its in-memory copy) stay as they are."""
        if content_digest(vectors) is not None or not self._serves_mapped(len(vectors), vectors.shape[1], catalog):
            return vectors
        folder = self._index_folder(catalog)
        try:
            return mapped_bfloat16(vectors, folder.parent / name)  # a folder per kind: each keeps its newest files
        except OSError as exc:
            log.warning("could not write the bfloat16 vector file under %s (%s): vectors kept in memory",
                        folder.parent, exc)
            return vectors

    def warm_up(self) -> int:
        """Map the vector files queries read (image, colour) into this process now, not in the first queries;
        returns the bytes mapped (0 when nothing is served from a file). Serving shells call it after a fit
        (the live catalog does); ``fit`` does not, so that a fit's memory stays its own."""
        return sum(populate(v) for v in (self.image_vectors_, self.colour_vectors_) if content_digest(v) is not None)

    def _index_folder(self, catalog=None) -> Path | None:
        catalog = catalog if catalog is not None else getattr(self, "catalog_", None)
        return Path(self.cache_dir) / "index" if self.cache_dir else (
            default_cache_dir(catalog) / "index" if catalog is not None else None)

    def catalog_rows(self, rows: np.ndarray):
        """Catalog rows (the current catalog, live updates included) by position: a Milvus index's attributes."""
        return self.catalog_.items.iloc[np.asarray(rows, dtype=np.int64)]

    def metadata_rows(self, rows: np.ndarray):
        """Metadata rows (sparse, the current vocabulary) by position: a Milvus index's metadata vectors."""
        return self.metadata_matrix_[np.asarray(rows, dtype=np.int64)]

    def _index_nearest(self, vectors: np.ndarray, rows: np.ndarray) -> np.ndarray | None:
        """Similarity of sampled products to their nearest other product, through the ANN index
        (None with the exact backend: :func:`dense_reference` scans the probes itself)."""
        if self.image_index_ is None or len(rows) < 2:
            return None
        probes = rows[np.random.default_rng(0).permutation(len(rows))[:DEFAULT_PROBES]]
        # Read with pread from a mapped file: through the map, 256 random rows mapped ~280 MB of it into this
        # process (the page cache's large folios are mapped whole on a fault), a fit's RSS peak at 100k.
        probe_vectors = read_rows(vectors, probes)
        _, ids = self.image_index_.search(probe_vectors, 2)
        other = np.where(ids[:, 0] == probes, ids[:, 1], ids[:, 0])
        found = other >= 0
        # Scored with our own vectors: an index over a reduced copy returns approximate cosines.
        return np.einsum("ij,ij->i", probe_vectors[found], read_rows(vectors, other[found]))
