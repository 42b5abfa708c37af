"""An ANN over a reduced copy of the vectors: it finds candidates, the caller re-scores them.

At 2280-d the image vector is 9 KB in float32; an HNSW graph holding its own full copy doubles the
serving memory (issue 14: a million products in a few GB). The index only has to *find* candidates:
the façade re-scores every candidate exactly with its own full vectors. So this backend keeps a
:class:`~recommender.index.reduce.PCAReducer` projection (fitted on the first ``add``, at most 20k
rows) and an :class:`~recommender.index.hnsw.HNSWIndex` over the projected, re-normalised vectors in
float16 storage: about 0.5 KB + the graph per vector at 256 components instead of 9 KB.

Its scores are cosines *in the reduced space* (close to, not equal to, the full cosines): use it to
pick candidates and re-score them, as ``HybridRecommender`` does. Measured in docs/index.md ("Reduced
vectors"): the reduced top-100 re-scored with the full vectors keeps recall@10 at .999-1.000 at 100k,
filters included. A first ``add`` with fewer than :data:`MIN_FIT_ROWS` rows cannot estimate a subspace:
the projection is then the identity (a plain HNSW over the full vectors), fixed for the index's life.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from recommender.index.base import VectorIndex, check_ids
from recommender.index.hnsw import HNSWIndex
from recommender.index.reduce import MAX_FIT_ROWS, PCAReducer

DEFAULT_COMPONENTS = 256
#: Fewer rows than this in the first ``add`` and the projection stays the identity (no reduction).
MIN_FIT_ROWS = 2_000



def _rows(x: np.ndarray, part) -> np.ndarray:
    """``x[part]``; from the façade's mapped vector file read with pread, not through the map (a rebuild's pass over
    every row put the whole file, 470 MB at 100k, in the process's RSS)."""
    from recommender.store.vector_file import content_digest, read_rows

    return read_rows(x, part) if content_digest(x) is not None else x[part]

class ReducedHNSWIndex(VectorIndex):
    """HNSW (faiss, float16 storage) over a PCA projection of the vectors; approximate scores.

    ``get_vectors`` is not offered (the full vectors are not kept: that is the point).
    """

    kind = "hnsw_pca"
    _META = "reduced.json"
    _PROJECTION = "projection.npy"
    _INNER = "hnsw"

    def __init__(self, dim: int, expected_size: int = 0, n_components: int | None = None,
                 storage: str = "float16") -> None:
        super().__init__(dim)
        if self.dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        n_components = DEFAULT_COMPONENTS if n_components is None else n_components
        if int(n_components) < 1:
            raise ValueError(f"n_components must be >= 1, got {n_components}")
        self.expected_size = max(int(expected_size), 0)
        self.n_components = int(n_components)
        self.storage = storage
        self.reducer_: PCAReducer | None = None  # fitted on the first add
        self.inner_: HNSWIndex | None = None

    @property
    def ntotal(self) -> int:
        return 0 if self.inner_ is None else self.inner_.ntotal

    @property
    def reduced_dim(self) -> int:
        """Dimensions the graph holds (``dim`` until the first add, or when no reduction was possible)."""
        return self.dim if self.reducer_ is None else self.reducer_.n_output_

    def _fit(self, x: np.ndarray) -> None:
        from recommender.index.exact import l2_normalise

        if len(x) >= MIN_FIT_ROWS and self.dim > self.n_components:
            # Normalise only the sample the reducer fits on: a million-row float16 input is not copied whole.
            rows = np.arange(len(x)) if len(x) <= MAX_FIT_ROWS else np.sort(
                np.random.default_rng(0).choice(len(x), MAX_FIT_ROWS, replace=False))
            self.reducer_ = PCAReducer(self.n_components).fit(l2_normalise(self._check(_rows(x, rows))))
        else:
            self.reducer_ = PCAReducer(self.dim).fit(x[:1] if len(x) else np.ones((1, self.dim), np.float32))
        self.inner_ = self._new_inner(self.reducer_.n_output_)

    def _new_inner(self, dim: int) -> VectorIndex:
        return HNSWIndex(dim, self.expected_size, storage=self.storage)

    @staticmethod
    def _load_inner(folder: Path) -> VectorIndex:
        return HNSWIndex.load(folder)

    def _project(self, x: np.ndarray) -> np.ndarray:
        from recommender.index.exact import l2_normalise

        out = np.empty((len(x), self.reducer_.n_output_), np.float32)
        for start in range(0, len(x), 16_384):  # bounded temporaries on a million-row add
            # _check per block: validated and made float32 16k rows at a time, never the whole input
            block = _rows(x, slice(start, start + 16_384))
            out[start:start + 16_384] = self.reducer_.transform(l2_normalise(self._check(block)))
        # A vector orthogonal to the kept subspace projects to ~0: give it a direction rather than NaN.
        norms = np.linalg.norm(out, axis=1)
        out[norms < 1e-12] = np.float32(1.0 / np.sqrt(out.shape[1]))
        return out

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        # float16 or float32, checked block by block in _project; a mapped file stays one (blocks read, not mapped)
        x = vectors if isinstance(vectors, np.memmap) and vectors.ndim == 2 else np.atleast_2d(np.asarray(vectors))
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"vectors have {x.shape[-1]} dimensions, the index {self.dim}")
        ids = check_ids(ids, len(x))
        if self.reducer_ is None:
            self._fit(x)
        if len(x):
            self.inner_.add(ids, self._project(x))

    def remove(self, ids: np.ndarray) -> None:
        if self.inner_ is not None:
            self.inner_.remove(ids)

    def search(self, q: np.ndarray, k: int, allow: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        q = self._check_query(q)
        k = self._check_k(k)
        if self.inner_ is None:
            return np.full((len(q), k), -np.inf, np.float32), np.full((len(q), k), -1, np.int64)
        return self.inner_.search(self._project(q), k, allow)

    # -- persistence -------------------------------------------------------------------------
    def save(self, folder: Path | str) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {"dim": self.dim, "n_components": self.n_components, "storage": self.storage,
                "fitted": self.reducer_ is not None}
        if self.reducer_ is not None:
            self.reducer_.save(folder / self._PROJECTION)
            self.inner_.save(folder / self._INNER)
        (folder / self._META).write_text(json.dumps(meta))

    @classmethod
    def load(cls, folder: Path | str) -> ReducedHNSWIndex:  # or the subclass it is called on
        folder = Path(folder)
        meta = json.loads((folder / cls._META).read_text())
        index = cls(int(meta["dim"]), 0, int(meta["n_components"]), str(meta["storage"]))
        if meta["fitted"]:
            reducer = PCAReducer.load(folder / cls._PROJECTION)
            inner = cls._load_inner(folder / cls._INNER)
            if reducer.n_features_in_ != index.dim or inner.dim != reducer.n_output_:
                raise ValueError(f"{folder}: projection and graph do not match the index's dimensions")
            index.reducer_, index.inner_ = reducer, inner
        return index


class ReducedIVFIndex(ReducedHNSWIndex):
    """The same PCA projection with an inverted file (:class:`~recommender.index.ivf.IVFIndex`, fp16 codes)
    instead of the graph: minutes less to build at a million vectors (docs/index.md, "IVF or HNSW")."""

    kind = "ivf_pca"
    _INNER = "ivf"

    def _new_inner(self, dim: int) -> VectorIndex:
        from recommender.index.ivf import IVFIndex

        return IVFIndex(dim, self.expected_size, storage=self.storage)

    @staticmethod
    def _load_inner(folder: Path) -> VectorIndex:
        from recommender.index.ivf import IVFIndex

        return IVFIndex.load(folder)
