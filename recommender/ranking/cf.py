"""Collaborative filtering from interactions, standing on ``implicit`` (ALS by default; BPR, item-kNN).

:class:`CollaborativeFilter` learns from who bought (rated, viewed) what:

* user -> items, "recommended for you": the model's score for every catalog product, plus a *trend*
  term (how many customers bought the product in the most recent part of the history), because a shop's
  demand moves with the season and a factor model fitted on a year of purchases does not see that;
* item -> items, "customers who bought this also bought": cosine over co-purchases (implicit's
  :class:`~implicit.nearest_neighbours.CosineRecommender`), and the co-purchase counts that explain it;
* incremental updates: :meth:`CollaborativeFilter.partial_fit` adds a customer's new interactions and
  re-solves that customer's factors (implicit's ``partial_fit_users``) without a full retrain; item
  factors stay as they are until the next scheduled :meth:`~CollaborativeFilter.fit`.

Preferences do not count quantities (a quantity of 24 is not 24 times the liking: binary measured better
than quantities on Online Retail, docs/cf.md), but they do weigh the *kind* of interaction: a customer who
only viewed a product says less than one who bought it. Each (customer, product) cell is the largest
:data:`DEFAULT_KIND_WEIGHTS` weight of its interactions (purchase and rating 1, cart 0.6, view 0.3; other
kinds 1), so a file of purchases only gives the binary matrix. ``implicit`` is imported lazily.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.base import BaseEstimator

from recommender.blas import one_blas_thread
from recommender.catalog.interactions import Interactions
from recommender.errors import QueryError, RecommenderError

log = logging.getLogger(__name__)
ALGORITHMS = ("als", "bpr", "knn-cosine", "knn-bm25", "popularity")
# Confidence of one interaction by its kind (a priori, not tuned: the data sets at hand hold one kind each).
# A purchase or a rating is the full signal; putting in the cart, half way; a view, a weak hint.
DEFAULT_KIND_WEIGHTS = {"purchase": 1.0, "rating": 1.0, "cart": 0.6, "view": 0.3}
OTHER_KIND_WEIGHT = 1.0  # kinds the mapping does not name count as purchases (as before kinds were weighted)
DAY = 86_400


class CollaborativeFilter(BaseEstimator):
    """Scores of every catalog product for a customer, learned from interactions.

    Parameters
    ----------
    algorithm: ``"als"`` (implicit ALS, default), ``"bpr"``, ``"knn-cosine"``, ``"knn-bm25"`` (item-kNN)
        or ``"popularity"`` (customers per product; a baseline).
    factors, regularization, iterations, alpha: ALS/BPR hyper-parameters (BPR also ``learning_rate``).
    neighbours: item-kNN ``K``, and the co-purchase neighbours kept for "also bought".
    kind_weights: confidence per interaction kind, a mapping or text ``"view:0.3,cart:0.6"`` (kinds not named
        keep :data:`DEFAULT_KIND_WEIGHTS`, then 1); each (customer, product) takes its strongest kind.
        A weight of 0 ignores that kind.
    trend_weight: share of the behaviour score given to the trend (customers per product over the last
        ``trend_fraction`` of the interactions), after both are min-max normalised per customer.
        0 = the model alone.
    random_state, num_threads: passed to implicit (1 thread: the machine is shared and results repeat).
    """

    def __init__(
        self,
        algorithm: str = "als",
        factors: int = 64,
        regularization: float = 0.05,
        iterations: int = 15,
        alpha: float = 1.0,
        learning_rate: float = 0.01,
        neighbours: int = 20,
        kind_weights: str | Mapping[str, float] | None = None,
        trend_weight: float = 0.7,
        trend_fraction: float = 0.05,
        random_state: int = 0,
        num_threads: int = 1,
    ) -> None:
        self.algorithm = algorithm
        self.factors = factors
        self.regularization = regularization
        self.iterations = iterations
        self.alpha = alpha
        self.learning_rate = learning_rate
        self.neighbours = neighbours
        self.kind_weights = kind_weights
        self.trend_weight = trend_weight
        self.trend_fraction = trend_fraction
        self.random_state = random_state
        self.num_threads = num_threads

    # -- fitting ------------------------------------------------------------------------------
    def fit(self, interactions: Interactions, item_ids: Sequence[str]) -> CollaborativeFilter:
        """Learn from ``interactions``; ``item_ids`` are the catalog's products, in catalog order
        (products nobody bought get a column too, so they can be filtered, explained and reached)."""
        if self.algorithm not in ALGORITHMS:
            raise RecommenderError(f"unknown CF algorithm {self.algorithm!r}; choose one of {', '.join(ALGORITHMS)}")
        if not 0.0 <= self.trend_weight <= 1.0:
            raise RecommenderError(f"trend_weight must be between 0 and 1, got {self.trend_weight}")
        if len(interactions) == 0:
            raise RecommenderError("no interactions to learn from")
        self.kind_weights_ = parse_kind_weights(self.kind_weights)
        self.item_ids_ = np.asarray(item_ids, dtype=object)
        self.item_index_ = pd.Index(self.item_ids_)
        self.user_ids_ = interactions.users
        self.user_index_ = {u: i for i, u in enumerate(self.user_ids_)}
        self.user_items_ = self._confidence(interactions)
        if self.user_items_.nnz == 0:
            raise RecommenderError("no interactions to learn from: every kind present has weight 0")
        self.item_users_count_ = np.asarray((self.user_items_ > 0).sum(axis=0)).ravel()
        self.has_interactions_ = self.item_users_count_ > 0
        self.last_timestamp_ = int(interactions.frame["timestamp"].max())
        self.trend_ = self._trend(interactions)
        self.model_ = self._fit_model(self.user_items_)
        # "Also bought": co-purchase cosine, whatever the main model.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.co_bought_ = self._implicit_knn("knn-cosine")
            self.co_bought_.fit(self.user_items_, show_progress=False)
        return self

    def _confidence(self, interactions: Interactions) -> sp.csr_matrix:
        """``users x items``: the strongest kind weight of each pair's interactions (0 = none)."""
        frame = interactions.frame
        rows = pd.Index(self.user_ids_).get_indexer(frame["user_id"])
        cols = self.item_index_.get_indexer(frame["item_id"])
        weight = frame["kind"].str.lower().map(self.kind_weights_).fillna(OTHER_KIND_WEIGHT).to_numpy(np.float32)
        # a weight of 0 (a quantity or rating of 0) is no interaction, as when quantities were summed
        keep = (rows >= 0) & (cols >= 0) & (weight > 0) & (frame["weight"].to_numpy() > 0)
        cells = pd.DataFrame({"r": rows[keep], "c": cols[keep], "w": weight[keep]}).groupby(["r", "c"])["w"].max()
        m = sp.csr_matrix((cells.to_numpy(np.float32), (cells.index.get_level_values(0),
                                                        cells.index.get_level_values(1))),
                          shape=(len(self.user_ids_), len(self.item_ids_)), dtype=np.float32)
        m.sort_indices()
        return m

    def _trend(self, interactions: Interactions) -> np.ndarray:
        """Distinct customers per product over the most recent ``trend_fraction`` of the interactions,
        log-scaled (a product bought by 200 customers is not 100 times as likely as one bought by 2)."""
        frame = interactions.frame
        cutoff = np.quantile(frame["timestamp"].to_numpy(), 1.0 - self.trend_fraction) if self.trend_fraction else None
        recent = frame if cutoff is None else frame[frame["timestamp"] >= cutoff]
        counts = recent.groupby("item_id")["user_id"].nunique()
        trend = np.zeros(len(self.item_ids_), dtype=np.float32)
        cols = self.item_index_.get_indexer(counts.index)
        trend[cols[cols >= 0]] = np.log1p(counts.to_numpy()[cols >= 0])
        self.trend_since_ = int(cutoff) if cutoff is not None else int(frame["timestamp"].min())
        return trend

    def _implicit_knn(self, kind: str):
        from implicit.nearest_neighbours import BM25Recommender, CosineRecommender

        cls = CosineRecommender if kind == "knn-cosine" else BM25Recommender
        return cls(K=self.neighbours, num_threads=self.num_threads)

    def _fit_model(self, user_items: sp.csr_matrix):
        if self.algorithm == "popularity":
            return None
        with one_blas_thread(), warnings.catch_warnings():
            # implicit's item-kNN normalises into COO and then warns that it converts it back.
            warnings.simplefilter("ignore")
            model = self._make_model()
            model.fit(user_items, show_progress=False)
        return model

    def _make_model(self):
        if self.algorithm.startswith("knn"):
            model = self._implicit_knn(self.algorithm)
        elif self.algorithm == "als":
            from implicit.cpu.als import AlternatingLeastSquares

            model = AlternatingLeastSquares(
                factors=self.factors, regularization=self.regularization, iterations=self.iterations,
                alpha=self.alpha, random_state=self.random_state, num_threads=self.num_threads)
        else:
            from implicit.cpu.bpr import BayesianPersonalizedRanking

            model = BayesianPersonalizedRanking(
                factors=self.factors, learning_rate=self.learning_rate, regularization=self.regularization,
                iterations=self.iterations, random_state=self.random_state, num_threads=self.num_threads)
        return model

    # -- incremental ----------------------------------------------------------------------------
    def partial_fit(self, interactions: Interactions) -> CollaborativeFilter:
        """Add new interactions without a full retrain: each affected customer's history grows (new
        customers are appended) and their factors are re-solved against the fixed item factors (ALS:
        implicit's ``partial_fit_users``; item-kNN and popularity read the history directly). BPR has
        no per-user solve: its new customers fall back to the trend until the next :meth:`fit`.
        Item factors and the trend wait for the next full :meth:`fit`."""
        known_items = self.item_index_.get_indexer(interactions.frame["item_id"])
        if (known_items < 0).any():
            missing = sorted(set(interactions.frame["item_id"][known_items < 0]))
            raise QueryError(f"item id(s) not in the fitted catalog: {', '.join(missing[:5])}")
        new_users = [u for u in dict.fromkeys(interactions.frame["user_id"]) if u not in self.user_index_]
        for u in new_users:
            self.user_index_[u] = len(self.user_ids_)
            self.user_ids_ = np.append(self.user_ids_, np.array([u], dtype=object))
        n_users = len(self.user_ids_)
        if n_users > self.user_items_.shape[0]:
            self.user_items_ = sp.vstack([self.user_items_, sp.csr_matrix(
                (n_users - self.user_items_.shape[0], len(self.item_ids_)), dtype=np.float32)], format="csr")
        added = self._confidence(interactions)
        self.user_items_ = sp.csr_matrix(self.user_items_.maximum(added), dtype=np.float32)
        self.user_items_.sort_indices()
        self._item_users = None
        rows = np.unique(added.nonzero()[0])
        if self.algorithm == "als" and len(rows):
            with one_blas_thread():
                self.model_.partial_fit_users(rows, self.user_items_[rows])
        elif self.algorithm == "bpr" and len(rows):
            log.info("BPR has no incremental update: %d customer(s) wait for the next fit", len(rows))
        return self

    # -- querying -------------------------------------------------------------------------------
    def knows(self, user: str) -> bool:
        return str(user) in self.user_index_

    def user_row(self, user: str) -> int:
        try:
            return self.user_index_[str(user)]
        except KeyError:
            raise QueryError(f"no customer with id {user!r} in the interactions") from None

    def history(self, user: str) -> np.ndarray:
        """Catalog positions the customer interacted with (empty for an unknown customer)."""
        if not self.knows(user):
            return np.zeros(0, dtype=int)
        return self.user_items_[self.user_index_[str(user)]].indices.copy()

    def model_scores(self, rows: np.ndarray) -> np.ndarray:
        """The model's raw score of every product for customer rows ``rows``: ``(len(rows), n_items)``."""
        rows = np.asarray(rows, dtype=int)
        if self.algorithm == "popularity":
            return np.tile(self.item_users_count_.astype(np.float32), (len(rows), 1))
        if self.algorithm.startswith("knn"):
            return np.asarray((self.user_items_[rows] @ self.model_.similarity).todense(), dtype=np.float32)
        factors = self.model_.user_factors
        out = np.zeros((len(rows), len(self.item_ids_)), dtype=np.float32)
        fitted = rows < factors.shape[0]  # BPR customers added after the fit have no factors yet
        out[fitted] = factors[rows[fitted]] @ self.model_.item_factors.T
        return out

    def behaviour_scores(self, rows: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """Model and trend, each min-max normalised over ``candidates`` (rows x items bool), mixed by
        ``trend_weight``: the CF side of the blend, in [0, 1]."""
        model = minmax_rows(self.model_scores(rows), candidates)
        if not self.trend_weight:
            return model
        trend = minmax_rows(np.broadcast_to(self.trend_, model.shape), candidates)
        return (1.0 - self.trend_weight) * model + self.trend_weight * trend

    def also_bought(self, position: int, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """"Customers who bought this also bought": catalog positions and co-purchase cosines, best first."""
        ids, scores = self.co_bought_.similar_items(int(position), N=k + 1)
        keep = (ids != position) & (scores > 0)
        return np.asarray(ids[keep][:k], dtype=int), np.asarray(scores[keep][:k], dtype=np.float32)

    def also_bought_ids(self, item: str, k: int = 10) -> list[tuple[str, float]]:
        """:meth:`also_bought` by product id: ``(id, cosine)`` best first; empty for a product nobody bought
        together with another one, or one the model does not know."""
        pos = int(self.item_index_.get_indexer([str(item)])[0])
        if pos < 0 or not self.has_interactions_[pos]:
            return []
        positions, scores = self.also_bought(pos, k)
        return [(str(self.item_ids_[p]), float(s)) for p, s in zip(positions, scores, strict=True)]

    def co_purchases(self, position: int, others: np.ndarray) -> np.ndarray:
        """How many customers bought ``position`` together with each of ``others``."""
        if getattr(self, "_item_users", None) is None or self._item_users.shape != self.user_items_.shape:
            self._item_users = _binary(self.user_items_).tocsc()  # customers, whatever the kind; CSC: cheap columns
        col = self._item_users[:, [int(position)]]
        return np.asarray((self._item_users[:, np.asarray(others, dtype=int)].T @ col).todense()).ravel()

    def explain(self, user: str, position: int, top: int = 1) -> list[int]:
        """History items that pushed ``position`` up for ``user`` most (ALS: implicit's ``explain``;
        other models: the most co-purchased history item)."""
        hist = self.history(user)
        if hist.size == 0:
            return []
        if self.algorithm == "als":
            row = self.user_row(user)
            _, contributions, _ = self.model_.explain(row, self.user_items_, int(position), N=top)
            return [int(i) for i, s in contributions if s > 0]
        co = self.co_purchases(position, hist)
        order = np.argsort(-co, kind="stable")[:top]
        return [int(hist[i]) for i in order if co[i] > 0]


def minmax_rows(x: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Scale each row of ``x`` to [0, 1] over its candidate entries (others 0); a constant row gives 0."""
    x = np.asarray(x, dtype=np.float32)
    cand = np.broadcast_to(np.asarray(candidates, dtype=bool), x.shape)
    lo = np.where(cand, x, np.inf).min(axis=1, keepdims=True)
    hi = np.where(cand, x, -np.inf).max(axis=1, keepdims=True)
    span = hi - lo
    ok = np.isfinite(span) & (span > 0)
    out = np.where(ok & cand, (x - np.where(ok, lo, 0)) / np.where(ok, span, 1), 0.0)
    return out.astype(np.float32)


def parse_kind_weights(spec: str | Mapping[str, float] | None) -> dict[str, float]:
    """:data:`DEFAULT_KIND_WEIGHTS` updated by ``spec`` (a mapping or ``"view:0.3,cart:0.6"``); kinds lower-cased."""
    weights = dict(DEFAULT_KIND_WEIGHTS)
    if spec is None or spec == "":
        return weights
    if isinstance(spec, str):
        pairs = []
        for part in spec.split(","):
            kind, sep, value = part.partition(":")
            if not sep or not kind.strip():
                raise RecommenderError(f"kind_weights: {part.strip()!r} is not kind:weight (e.g. 'view:0.3,cart:0.6')")
            pairs.append((kind, value))
    elif isinstance(spec, Mapping):
        pairs = list(spec.items())
    else:
        raise RecommenderError(f"kind_weights must be a mapping or 'kind:weight,...' text, got {type(spec).__name__}")
    for kind, value in pairs:
        try:
            w = float(value)
        except (TypeError, ValueError):
            w = float("nan")
        if isinstance(value, bool) or not np.isfinite(w) or w < 0:
            raise RecommenderError(f"kind_weights: the weight of {str(kind).strip()!r} must be a finite number >= 0, "
                                   f"got {value!r}")
        weights[str(kind).strip().lower()] = w
    return weights


def _binary(m: sp.csr_matrix) -> sp.csr_matrix:
    m = sp.csr_matrix(m, dtype=np.float32)
    m.eliminate_zeros()
    m.data[:] = 1.0
    m.sort_indices()
    return m
