"""A supervised, opt-in image-side step for catalogs with their own category labels.

A multinomial logistic regression learns the catalog's labels from its image vectors; each vector
then gets the square roots of its predicted label probabilities appended (unit length, like the
ImageNet ``semantic`` block), so products the classifier puts in the same category move together.
Evaluating it on the labels it was fitted on would be circular, so :func:`out_of_fold_similarity`
scores every item with a projection fitted without it (k-fold).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold
from sklearn.preprocessing import normalize


class LabelProjection(TransformerMixin, BaseEstimator):
    """Image vectors plus their √(label probabilities) from a classifier fitted on the catalog.

    Parameters
    ----------
    mix: share of the output given to the label block (0 = the input unchanged, 1 = labels only).
    C: inverse L2 regularisation of the logistic regression.

    ``transform`` returns unit rows ``[√(1 - mix) · x/|x|, √mix · √p(label | x)]``; an all-zero input
    row (a product without a readable image) stays all zero.
    """

    def __init__(self, mix: float = 0.5, C: float = 10.0, max_iter: int = 2000) -> None:
        self.mix = mix
        self.C = C
        self.max_iter = max_iter

    def fit(self, X: np.ndarray, y: Sequence[str]) -> LabelProjection:
        if not 0.0 <= self.mix <= 1.0:
            raise ValueError(f"mix must be between 0 and 1, got {self.mix}")
        X = np.asarray(X, dtype=np.float32)
        y = np.asarray(y, dtype=object)
        if X.ndim != 2 or len(X) != len(y):
            raise ValueError(f"need one label per vector, got {len(y)} labels for {X.shape} vectors")
        classes = np.unique(y)
        if len(classes) < 2:
            raise ValueError(f"a label projection needs at least two labels, got {len(classes)}")
        self.classifier_ = LogisticRegression(C=self.C, max_iter=self.max_iter).fit(normalize(X), y)
        self.classes_ = self.classifier_.classes_
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(f"expected vectors of {self.n_features_in_} dims, got shape {X.shape}")
        present = np.linalg.norm(X, axis=1) > 0
        out = np.zeros((len(X), X.shape[1] + len(self.classes_)), dtype=np.float32)
        if present.any():
            x = normalize(X[present])
            probs = np.sqrt(np.clip(self.classifier_.predict_proba(x), 0.0, None))
            out[present] = np.hstack([np.sqrt(1 - self.mix) * x, np.sqrt(self.mix) * probs])
        return out


def out_of_fold_similarity(
    projection: LabelProjection,
    fit_vectors: np.ndarray,
    labels: Sequence[str],
    queries: np.ndarray,
    gallery: np.ndarray,
    folds: int = 5,
    seed: int = 0,
) -> np.ndarray:
    """Cosine of each item to every gallery item, through a projection fitted without that item.

    Row ``i`` comes from the fold that holds item ``i``: the projection is fitted on the other
    folds' labelled items (``fit_vectors``; an empty label is not fitted on) and applied to the
    query ``queries[i]`` and to the whole ``gallery``. All three arrays are aligned item by item.
    """
    labels = np.asarray(labels, dtype=object)
    n = len(labels)
    if not (len(fit_vectors) == len(queries) == len(gallery) == n):
        raise ValueError("fit_vectors, labels, queries and gallery must describe the same items")
    if not 2 <= folds <= n:
        raise ValueError(f"folds must be between 2 and the number of items ({n}), got {folds}")
    labelled = (labels != "") & (np.linalg.norm(fit_vectors, axis=1) > 0)
    sim = np.zeros((n, n), dtype=np.float32)
    for train, test in KFold(folds, shuffle=True, random_state=seed).split(np.arange(n)):
        rows = train[labelled[train]]
        fitted = clone(projection).fit(fit_vectors[rows], labels[rows])
        sim[test] = fitted.transform(queries[test]) @ fitted.transform(gallery).T
    return sim
