"""Unsupervised post-processing of image embeddings: no labels, only the catalog's own vectors.

Each lever is small and independent:

* :class:`PCAWhitening` - centre on the catalog mean, rotate onto principal axes, optionally keep
  the first ``n_components`` and divide each axis by ``variance ** power`` (``power=0.5`` is full
  whitening, ``0`` plain PCA, in between a shrunk whitening), then L2-normalise.
* :func:`database_side_augmentation` (DBA) - replace every catalog vector by a weighted mean of
  itself and its ``k`` nearest neighbours, renormalised.
* :func:`average_query_expansion` (AQE / alpha-QE) - the same at query time: a query is averaged
  with its top-``k`` results and searched again.
* :func:`flip_tta` - average of the embeddings of an image and its horizontal mirror.

Every function takes and returns float32 row vectors; outputs are L2-normalised (cosine-ready).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from .index import l2_normalise

_CHUNK = 2048  # query rows per similarity block: bounds memory at _CHUNK * n_catalog floats


class PCAWhitening(TransformerMixin, BaseEstimator):
    """PCA whitening fitted on catalog vectors; :meth:`transform` returns L2-normalised float32.

    ``n_components``: ``None`` keeps every component (at most ``min(n_samples - 1, n_features)``),
    an int keeps that many, a float in (0, 1) the fewest explaining that fraction of the variance.
    ``power``: each principal coordinate is divided by ``variance ** power``; 0.5 whitens fully,
    smaller values shrink towards plain PCA (which over-amplifies noisy low-variance axes less).
    ``eps`` is added to the variances (relative to the largest) so tiny axes cannot explode.
    """

    def __init__(self, n_components: int | float | None = None, power: float = 0.5, eps: float = 1e-6) -> None:
        self.n_components = n_components
        self.power = power
        self.eps = eps

    def fit(self, X: np.ndarray, y: object = None) -> PCAWhitening:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or len(X) < 2:
            raise ValueError(f"need a 2-D array of at least 2 vectors, got shape {X.shape}")
        self.mean_ = X.mean(axis=0)
        _, s, vt = np.linalg.svd(X - self.mean_, full_matrices=False)
        var = s**2 / (len(X) - 1)
        rank = int(np.sum(var > var[0] * 1e-10)) if var[0] > 0 else 0
        if rank == 0:
            raise ValueError("all vectors are identical: nothing to whiten")
        n = self._n_keep(var[:rank])
        self.components_ = vt[:n]
        self.explained_variance_ = var[:n]
        self.explained_variance_ratio_ = var[:n] / var.sum()
        self.n_components_ = n
        self.scale_ = 1.0 / (var[:n] + self.eps * var[0]) ** self.power
        return self

    def _n_keep(self, var: np.ndarray) -> int:
        nc = self.n_components
        if nc is None:
            return len(var)
        if isinstance(nc, float) and 0 < nc < 1:
            return int(np.searchsorted(np.cumsum(var) / var.sum(), nc) + 1)
        if int(nc) < 1:
            raise ValueError(f"n_components must be >= 1, a fraction in (0, 1) or None, not {nc!r}")
        return min(int(nc), len(var))

    def transform(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        return l2_normalise(((X - self.mean_) @ self.components_.T) * self.scale_)


def knn(Q: np.ndarray, X: np.ndarray, k: int, self_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Cosine top-``k`` of each row of ``Q`` among the rows of ``X``: ``(scores, ids)``, best first.

    ``self_ids[i]`` (optional) is a row of ``X`` to leave out of query ``i``'s results (itself).
    """
    Q, X = l2_normalise(np.atleast_2d(Q)), l2_normalise(X)
    k = min(k, len(X) - (self_ids is not None))
    scores = np.empty((len(Q), k), np.float32)
    ids = np.empty((len(Q), k), np.int64)
    for s in range(0, len(Q), _CHUNK):
        sim = Q[s:s + _CHUNK] @ X.T
        if self_ids is not None:
            sim[np.arange(len(sim)), np.asarray(self_ids)[s:s + _CHUNK]] = -np.inf
        part = np.argpartition(-sim, k - 1, axis=1)[:, :k] if k < sim.shape[1] else \
            np.tile(np.arange(sim.shape[1]), (len(sim), 1))
        part_s = np.take_along_axis(sim, part, axis=1)
        order = np.lexsort((part, -part_s), axis=1)  # best first, ties by lower id
        ids[s:s + _CHUNK] = np.take_along_axis(part, order, axis=1)
        scores[s:s + _CHUNK] = np.take_along_axis(part_s, order, axis=1)
    return scores, ids


def _weighted_mean(base: np.ndarray, X: np.ndarray, scores: np.ndarray, ids: np.ndarray, alpha: float) -> np.ndarray:
    """``base + sum_j w_j X[ids_j]`` with ``w_j = max(score_j, 0) ** alpha`` (alpha=0: plain sum), normalised."""
    w = np.maximum(scores, 0.0) ** alpha if alpha else np.ones_like(scores)
    return l2_normalise(base + np.einsum("qk,qkd->qd", w, X[ids]))


def database_side_augmentation(X: np.ndarray, k: int = 5, alpha: float = 0.0) -> np.ndarray:
    """DBA: each row of ``X`` becomes the normalised sum of itself and its ``k`` nearest other rows.

    ``alpha`` weights neighbour ``j`` by ``cos(x, x_j) ** alpha`` (alpha-DBA); 0 is a plain mean.
    Run it once on the whole catalog; queries for catalog items then use their augmented rows.
    """
    X = l2_normalise(X)
    if k <= 0 or len(X) < 2:
        return X
    scores, ids = knn(X, X, k, self_ids=np.arange(len(X)))
    return _weighted_mean(X, X, scores, ids, alpha)


def average_query_expansion(
    Q: np.ndarray, X: np.ndarray, k: int = 5, alpha: float = 0.0, self_ids: np.ndarray | None = None
) -> np.ndarray:
    """AQE: each query row becomes the normalised sum of itself and its top-``k`` rows of ``X``.

    ``self_ids[i]`` is the row of ``X`` that *is* query ``i`` (item-to-item queries), skipped so
    the query is not expanded with itself. ``alpha`` as in :func:`database_side_augmentation`.
    """
    Q, X = l2_normalise(np.atleast_2d(Q)), l2_normalise(X)
    if k <= 0:
        return Q
    scores, ids = knn(Q, X, k, self_ids=self_ids)
    return _weighted_mean(Q, X, scores, ids, alpha)


def flip_tta(embed: Callable[[np.ndarray], np.ndarray], pixels: np.ndarray) -> np.ndarray:
    """Normalised mean of ``embed(pixels)`` and ``embed`` of the horizontally mirrored images.

    ``pixels`` is ``(n, h, w, c)``; ``embed`` is e.g. ``ImageEmbedder.embed_arrays``.
    """
    pixels = np.asarray(pixels)
    return l2_normalise(l2_normalise(embed(pixels)) + l2_normalise(embed(pixels[:, :, ::-1])))
