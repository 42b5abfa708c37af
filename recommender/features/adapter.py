"""A supervised adapter learned from a shop's own labelled photos (opt-in).

A catalog usually has one studio photo per product; shoppers upload phone photos taken in the shop,
with clutter, other light and other angles. When the shop has some such photos labelled with their
product (the Grocery Store Dataset's ``train`` split is exactly that), two cheap, linear levers
close part of that gap, on top of the frozen CNN vectors:

* **within-product whitening** (``shrinkage``): the covariance of the labelled photos around their own
  product's mean is what "same product, other shot" looks like; dividing it out (a shrunk inverse
  square root, as in LDA) makes the directions along which shots of one product differ count less.
  Applied to catalog and query vectors alike.
* **prototypes** (``mix``): each product's catalog vector moves towards the mean of its labelled
  photos (in the whitened space), so a query is compared with what the product looks like in the shop.

Both are chosen by :func:`cross_validate` on the labelled photos alone (k folds, each fold's photos
scored against an adapter fitted without them), never on the photos that are reported.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from recommender.index.exact import l2_normalise

MIX_GRID = (0.0, 0.25, 0.5, 0.75)
SHRINKAGE_GRID = (None, 1.0, 0.3, 0.1)


class ShopPhotoAdapter(BaseEstimator):
    """Fit on labelled shop photos; map catalog and query image vectors into an adapted space.

    Parameters
    ----------
    mix: share of the product's labelled-photo prototype in its catalog vector (0 = studio photo only).
    shrinkage: ``None`` (no whitening) or the ridge added to the within-product covariance, as a
        multiple of its mean eigenvalue (large = mild whitening).
    """

    def __init__(self, mix: float = 0.5, shrinkage: float | None = 0.3) -> None:
        self.mix = mix
        self.shrinkage = shrinkage

    def fit(self, photo_vectors: np.ndarray, photo_labels: Sequence[str], catalog_vectors: np.ndarray,
            catalog_ids: Sequence[str]) -> ShopPhotoAdapter:
        X, y, C, ids = _check(photo_vectors, photo_labels, catalog_vectors, catalog_ids)
        eig = _within_product_eig(X, y, C, ids) if self.shrinkage is not None else None
        return self._fit(X, y, C, ids, eig)

    def _fit(self, X, y, C, ids, eig) -> ShopPhotoAdapter:
        if not 0.0 <= self.mix <= 1.0:
            raise ValueError(f"mix must be in [0, 1], got {self.mix}")
        self.mean_ = X.mean(axis=0)
        self.whitener_ = None
        if self.shrinkage is not None:
            evals, evecs = eig
            # Whitened coordinates in the eigenbasis (no rotation back): a rotation changes no cosine, and
            # cross_validate can then project once per fold and only rescale per shrinkage.
            self.whitener_ = evecs * _whitening_scale(evals, self.shrinkage)
        self.catalog_vectors_ = _with_prototypes(self.transform_queries(X), y, self.transform_queries(C), ids, self.mix)
        self.catalog_ids_ = ids
        self.n_photos_ = len(X)
        return self

    def transform_queries(self, vectors: np.ndarray) -> np.ndarray:
        """Query (or any) image vectors into the adapted space, L2-normalised."""
        V = np.asarray(vectors, dtype=np.float32)
        if getattr(self, "whitener_", None) is None:
            return l2_normalise(V.copy())
        return l2_normalise((V - self.mean_) @ self.whitener_)


def _whitening_scale(evals: np.ndarray, shrinkage: float) -> np.ndarray:
    ridge = float(shrinkage) * max(float(evals.mean()), 1e-12)
    return (1.0 / np.sqrt(np.clip(evals, 0, None) + ridge)).astype(np.float32)


def _with_prototypes(photos: np.ndarray, labels: np.ndarray, catalog: np.ndarray, ids: np.ndarray,
                     mix: float) -> np.ndarray:
    """Catalog vectors moved ``mix`` of the way to the L2-normalised mean of their product's (adapted) photos."""
    out = catalog.copy()
    if mix:
        position = {pid: j for j, pid in enumerate(ids)}
        rows = np.fromiter((position[p] for p in labels), dtype=np.int64, count=len(labels))
        sums = np.zeros_like(out)
        np.add.at(sums, rows, photos)
        has = np.bincount(rows, minlength=len(out)) > 0
        out[has] = (1 - mix) * out[has] + mix * l2_normalise(sums[has])
    return l2_normalise(out)


def _check(photo_vectors, photo_labels, catalog_vectors, catalog_ids):
    X = np.asarray(photo_vectors, dtype=np.float32)
    y = np.asarray(photo_labels, dtype=object)
    C = np.asarray(catalog_vectors, dtype=np.float32)
    ids = np.asarray(catalog_ids, dtype=object)
    if X.ndim != 2 or C.ndim != 2 or len(X) != len(y) or len(C) != len(ids) or X.shape[1] != C.shape[1]:
        raise ValueError(f"shapes do not agree: photos {X.shape}/{len(y)}, catalog {C.shape}/{len(ids)}")
    unknown = sorted(set(y) - set(ids))
    if unknown:
        raise ValueError(f"labelled photos of products not in the catalog: {', '.join(map(str, unknown[:5]))}")
    if len(X) < 2:
        raise ValueError("need at least two labelled photos")
    return X, y, C, ids


def _within_product_eig(X, y, C, ids) -> tuple[np.ndarray, np.ndarray]:
    """Eigen-decomposition of the within-product covariance: each photo around its product's mean.
    The studio photo counts as one more shot of its product, so studio-vs-shop differences are part
    of what whitening divides out."""
    known = np.isin(ids, y)
    rows = np.concatenate([X, C[known]])
    labels = np.concatenate([y, ids[known]])
    codes, uniques = pd.factorize(labels)  # one pass, not a mask per product (large catalogs)
    sums = np.zeros((len(uniques), rows.shape[1]), dtype=np.float64)
    np.add.at(sums, codes, rows)
    centred = rows - (sums / np.bincount(codes)[:, None]).astype(np.float32)[codes]
    cov = centred.T @ centred / max(1, len(rows) - len(uniques))
    evals, evecs = np.linalg.eigh(cov.astype(np.float64))
    return evals.astype(np.float32), evecs.astype(np.float32)


def recall_at(scores: np.ndarray, truth: np.ndarray, ks: Sequence[int] = (1, 5)) -> dict[str, np.ndarray]:
    """Per-query hit@k (= R@k with one relevant product) of a (queries x products) score matrix."""
    order = np.argsort(-scores, axis=1, kind="stable")
    rank = (order == truth[:, None]).argmax(axis=1)
    return {f"R@{k}": (rank < k).astype(np.float64) for k in ks}


def cross_validate(
    photo_vectors: np.ndarray, photo_labels: Sequence[str], catalog_vectors: np.ndarray, catalog_ids: Sequence[str],
    folds: int = 5, mixes: Sequence[float] = MIX_GRID, shrinkages: Sequence[float | None] = SHRINKAGE_GRID,
    seed: int = 0,
) -> dict:
    """Choose ``mix`` and ``shrinkage`` by k-fold R@1 over the labelled photos alone.

    Each fold's photos are queries against an adapter fitted on the other folds. Returns
    ``{"best": {"mix", "shrinkage"}, "grid": [{"mix", "shrinkage", "R@1", "R@5"}...], "folds",
    "per_photo": {(shrinkage, mix): out-of-fold hit@1 per photo}}``.
    """
    X, y, C, ids = _check(photo_vectors, photo_labels, catalog_vectors, catalog_ids)
    folds = max(2, min(folds, len(X)))
    position = {pid: j for j, pid in enumerate(ids)}
    fold_of = np.random.default_rng(seed).permutation(len(X)) % folds
    hits = {(s, m): {"R@1": np.zeros(len(X)), "R@5": np.zeros(len(X))} for s in shrinkages for m in mixes}
    for f in range(folds):
        test = fold_of == f
        evals, evecs = _within_product_eig(X[~test], y[~test], C, ids)  # once per fold, shared by the grid
        truth = np.array([position[p] for p in y[test]])
        mean = X[~test].mean(axis=0)
        # As ShopPhotoAdapter._fit / transform_queries, with the projection made once per fold.
        parts = (X[~test], X[test], C)
        projected = [(v - mean) @ evecs for v in parts]
        for shrinkage in shrinkages:
            if shrinkage is None:
                train, queries, catalog = (l2_normalise(v.copy()) for v in parts)
            else:
                scale = _whitening_scale(evals, shrinkage)
                train, queries, catalog = (l2_normalise(v * scale) for v in projected)
            for mix in mixes:
                r = recall_at(queries @ _with_prototypes(train, y[~test], catalog, ids, mix).T, truth)
                for k, v in r.items():
                    hits[(shrinkage, mix)][k][test] = v
    grid = [{"mix": m, "shrinkage": s, "R@1": round(float(h["R@1"].mean()), 4), "R@5": round(float(h["R@5"].mean()), 4)}
            for (s, m), h in hits.items()]
    best = max(grid, key=lambda g: (g["R@1"], g["R@5"]))
    return {"best": {"mix": best["mix"], "shrinkage": best["shrinkage"]}, "grid": grid, "folds": folds,
            "per_photo": {(s, m): h["R@1"] for (s, m), h in hits.items()}}
