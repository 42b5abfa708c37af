"""A smaller vector for the ANN index: a linear projection that keeps inner products.

The default image vector is 2280-d float32 (9 KB); at a million products the graph index alone would
hold 9 GB. The index only has to *find candidates*: the hybrid re-scores its candidates exactly
(full vectors, memory-mapped), so the ANN may search a reduced copy. :class:`PCAReducer` projects on
the top right-singular vectors of the (uncentred) fitted vectors: for unit-length inputs that is the
rank-``d`` projection that best preserves their inner products (centring would drop the mean
direction, which every CNN vector shares and which carries part of every cosine). Measured recall
of the reduced ranking against the full-dimensional one: ``docs/index.md`` (``bench/bench_index.py
reduce``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator

#: Rows used to fit the projection: enough to estimate a 256-d subspace of 2280 dims, and bounded so
#: that a 1M catalog fits in seconds (the SVD costs ``rows x dim^2``).
MAX_FIT_ROWS = 20_000


class PCAReducer(BaseEstimator):
    """Project ``dim``-d vectors onto ``n_components`` directions (fitted on a sample of at most ``max_rows``).

    ``fit(X)`` sets ``components_`` (``(n_components, dim)`` float32) and ``explained_`` (the share of the
    squared norm kept); ``transform(X)`` returns float32 ``X @ components_.T``. If ``X`` has no more
    columns than ``n_components`` the projection is the identity (nothing to reduce).
    """

    def __init__(self, n_components: int = 256, max_rows: int = MAX_FIT_ROWS, random_state: int = 0) -> None:
        self.n_components = n_components
        self.max_rows = max_rows
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: object = None) -> PCAReducer:
        x = np.asarray(X, dtype=np.float32)
        if x.ndim != 2 or len(x) == 0:
            raise ValueError(f"expected a non-empty (n, dim) matrix, got shape {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("vectors contain NaN or infinity")
        if int(self.n_components) < 1:
            raise ValueError(f"n_components must be >= 1, got {self.n_components}")
        if len(x) > self.max_rows:
            rows = np.random.default_rng(self.random_state).choice(len(x), self.max_rows, replace=False)
            x = x[np.sort(rows)]
        dim = x.shape[1]
        if dim <= self.n_components:
            self.components_ = np.eye(dim, dtype=np.float32)
            self.explained_ = 1.0
        elif len(x) < dim:
            # Fewer rows than dimensions: the n x n Gram matrix's eigenvectors u give the right-singular
            # vectors x.T u / sqrt(value) (n^2 dim + n^3, against dim^3 for the dim x dim problem).
            x64 = x.astype(np.float64)
            values, u = np.linalg.eigh(x64 @ x64.T)
            top = np.argsort(values)[::-1][: self.n_components]
            top = top[values[top] > 1e-12 * max(values.max(), 1e-30)]
            components = (x64.T @ u[:, top]) / np.sqrt(values[top])
            self.components_ = np.ascontiguousarray(components.T, dtype=np.float32)
            self.explained_ = float(values[top].sum() / max(values.clip(min=0).sum(), 1e-30))
        else:
            # The eigenvectors of the dim x dim second-moment matrix: cheaper than an SVD of x for n >> dim.
            # float32 product (BLAS sgemm; 4x faster than the mixed float64 one, entries agree to 4e-9 at 10k
            # unit rows), eigenvectors in float64 on one BLAS thread: on these 2 shared cores a 2-thread eigh
            # of 2280 x 2280 took 45 s against 4 s single-threaded (OpenBLAS threads spin under load).
            from threadpoolctl import threadpool_limits

            gram = ((x.T @ x) / np.float32(len(x))).astype(np.float64)
            with threadpool_limits(1):
                values, vectors = np.linalg.eigh(gram)
            top = np.argsort(values)[::-1][: self.n_components]
            self.components_ = np.ascontiguousarray(vectors[:, top].T, dtype=np.float32)
            self.explained_ = float(values[top].sum() / max(values.sum(), 1e-30))
        self.n_features_in_ = dim
        return self

    @property
    def n_output_(self) -> int:
        return int(self.components_.shape[0])

    def transform(self, X: np.ndarray) -> np.ndarray:
        x = np.atleast_2d(np.asarray(X, dtype=np.float32))
        if x.shape[1] != self.n_features_in_:
            raise ValueError(f"vectors have {x.shape[1]} dimensions, the reducer was fitted on {self.n_features_in_}")
        return x @ self.components_.T

    def save(self, path: Path | str) -> None:
        """Write the fitted projection as one ``.npy`` (atomically: a temp file renamed into place)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            np.save(f, self.components_)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path | str) -> PCAReducer:
        components = np.load(Path(path), allow_pickle=False)
        if components.ndim != 2 or components.dtype != np.float32 or not np.isfinite(components).all():
            raise ValueError(f"{path}: not a saved PCAReducer projection")
        reducer = cls(n_components=components.shape[0])
        reducer.components_ = components
        reducer.n_features_in_ = components.shape[1]
        reducer.explained_ = float("nan")
        return reducer
