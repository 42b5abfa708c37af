"""Recommendations for a customer: behaviour (CF) blended with content, each hit explained.

``score = w_cf * behaviour + (1 - w_cf) * content``, both sides min-max normalised over this
customer's candidates, as image vs metadata are for product queries:

* behaviour: :class:`~recommender.ranking.cf.CollaborativeFilter` (implicit ALS + the trend term);
* content: how close a product's metadata (TF-IDF of name and description, attributes) is to what the
  customer bought, recent purchases counting more (half-life ``history_half_life_days``).

Cold cases:
* a product nobody bought yet has no CF score of its own: it borrows the similarity-weighted mean
  model and trend scores of its ``cold_neighbours`` closest products by content (and its content score
  stands), so it is reached through content;
* a customer with fewer than ``min_history`` products gets ``w_cf`` scaled down in proportion: short
  histories are served mostly by the content neighbours of what they bought.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.base import BaseEstimator, clone

from recommender.catalog.interactions import Interactions
from recommender.catalog.loader import Catalog
from recommender.errors import QueryError
from recommender.index.exact import top_k
from recommender.ranking.cf import DAY, CollaborativeFilter, minmax_rows
from recommender.ranking.hybrid import Filters
from recommender.ranking.results import Recommendation, Recommendations

DEFAULT_WEIGHT_CF = 0.8


class CustomerRecommender(BaseEstimator):
    """Blend of collaborative filtering and content similarity for one customer at a time.

    Parameters
    ----------
    weight_cf: default CF weight ``w_cf`` in [0, 1] (1 = behaviour only, 0 = content only).
    cf: a :class:`CollaborativeFilter` to clone (default: ALS with its defaults).
    history_half_life_days: recency weighting of the history in the content profile (0 = all equal).
    min_history: customers with fewer distinct products get ``w_cf * n / min_history`` (0 = off).
    cold_neighbours: content neighbours a never-bought product borrows its CF score from (0 = off).
    """

    def __init__(
        self,
        weight_cf: float = DEFAULT_WEIGHT_CF,
        cf: CollaborativeFilter | None = None,
        history_half_life_days: float = 30.0,
        min_history: int = 3,
        cold_neighbours: int = 10,
    ) -> None:
        self.weight_cf = weight_cf
        self.cf = cf
        self.history_half_life_days = history_half_life_days
        self.min_history = min_history
        self.cold_neighbours = cold_neighbours

    # -- fitting ------------------------------------------------------------------------------
    def fit(
        self, catalog: Catalog, interactions: Interactions, content: sp.csr_matrix | None = None
    ) -> CustomerRecommender:
        """Fit CF on ``interactions`` over ``catalog``'s products; ``content`` is the catalog's L2-normalised
        metadata matrix (row per product; default: a :class:`MetadataEncoder` fitted here)."""
        _check_weight(self.weight_cf)
        if content is None:
            from recommender.features.metadata import MetadataEncoder

            content = MetadataEncoder().fit_transform(catalog.items)
        if content.shape[0] != len(catalog):
            raise ValueError(f"content has {content.shape[0]} rows for {len(catalog)} products")
        self.catalog_ = catalog
        self.content_ = sp.csr_matrix(content, dtype=np.float32)
        self.cf_ = (clone(self.cf) if self.cf is not None else CollaborativeFilter()).fit(interactions, catalog.ids)
        self.events_ = interactions.frame[["user_id", "item_id", "timestamp"]].copy()
        self._index_history()
        self.cold_map_ = self._cold_map()
        return self

    def partial_fit(self, interactions: Interactions) -> CustomerRecommender:
        """New interactions (e.g. a purchase just made) change those customers' recommendations
        without a full retrain; see :meth:`CollaborativeFilter.partial_fit`."""
        self.cf_.partial_fit(interactions)
        self.events_ = pd.concat([self.events_, interactions.frame[["user_id", "item_id", "timestamp"]]],
                                 ignore_index=True)
        self._index_history()
        return self

    def _index_history(self) -> None:
        """Last time each customer bought each product, rows aligned with the CF model's customers."""
        last = self.events_.groupby(["user_id", "item_id"], sort=False)["timestamp"].max().reset_index()
        rows = pd.Index(self.cf_.user_ids_).get_indexer(last["user_id"])
        cols = self.cf_.item_index_.get_indexer(last["item_id"])
        keep = (rows >= 0) & (cols >= 0)
        self.now_ = int(self.events_["timestamp"].max())
        age_days = (self.now_ - last["timestamp"].to_numpy()[keep]) / DAY
        hl = self.history_half_life_days
        weight = np.power(0.5, age_days / hl) if hl else np.ones(int(keep.sum()))
        self.history_weights_ = sp.csr_matrix((weight.astype(np.float32), (rows[keep], cols[keep])),
                                              shape=(len(self.cf_.user_ids_), len(self.catalog_)))

    def _cold_map(self) -> sp.csr_matrix:
        """(n_items x n_items) row-stochastic map: a never-bought product's row spreads over its closest
        bought products by content; zero rows elsewhere."""
        n = len(self.catalog_)
        cold = np.flatnonzero(~self.cf_.has_interactions_)
        warm = np.flatnonzero(self.cf_.has_interactions_)
        if not self.cold_neighbours or cold.size == 0 or warm.size == 0:
            return sp.csr_matrix((n, n), dtype=np.float32)
        sim = np.asarray((self.content_[cold] @ self.content_[warm].T).todense(), dtype=np.float32)
        m = min(self.cold_neighbours, warm.size)
        nearest = np.argpartition(-sim, m - 1, axis=1)[:, :m]
        w = np.clip(np.take_along_axis(sim, nearest, axis=1), 0, None)
        total = w.sum(axis=1, keepdims=True)
        w = np.divide(w, total, out=np.zeros_like(w), where=total > 0)
        rows = np.repeat(cold, m)
        return sp.csr_matrix((w.ravel(), (rows, warm[nearest].ravel())), shape=(n, n), dtype=np.float32)

    # -- scoring --------------------------------------------------------------------------------
    def score_rows(
        self, rows: np.ndarray, candidates: np.ndarray, weight_cf: float | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """For customer rows ``rows`` and a (rows x items) candidate mask: ``(final, behaviour, content,
        w_eff)``, the two sides normalised to [0, 1] and ``w_eff`` the CF weight used per customer."""
        w = self.weight_cf if weight_cf is None else weight_cf
        _check_weight(w)
        rows = np.asarray(rows, dtype=int)
        candidates = np.broadcast_to(np.asarray(candidates, dtype=bool), (len(rows), len(self.catalog_)))
        model = self.cf_.model_scores(rows)
        if self.cold_map_.nnz:
            borrowed = np.asarray((self.cold_map_ @ model.T).T, dtype=np.float32)
            model = np.where(self.cf_.has_interactions_, model, borrowed)
        behaviour = minmax_rows(model, candidates)
        if self.cf_.trend_weight:
            t = self.cf_.trend_weight
            trend = self.cf_.trend_
            if self.cold_map_.nnz:  # unknown, not zero: a new product sells like the products it resembles
                trend = np.where(self.cf_.has_interactions_, trend, self.cold_map_ @ trend).astype(np.float32)
            behaviour = (1 - t) * behaviour + t * minmax_rows(np.broadcast_to(trend, model.shape), candidates)
        history = self.history_weights_[rows]
        content_raw = np.asarray(((history @ self.content_) @ self.content_.T).todense(), dtype=np.float32)
        content = minmax_rows(content_raw, candidates)
        n_hist = np.diff(history.indptr)
        w_eff = np.full(len(rows), w, dtype=np.float32)
        if self.min_history:
            w_eff *= np.minimum(1.0, n_hist / self.min_history)
        w_eff[n_hist == 0] = 1.0  # nothing bought: no content profile, behaviour (the trend) decides
        final = w_eff[:, None] * behaviour + (1 - w_eff[:, None]) * content
        return final, behaviour, content, w_eff

    def recommend(
        self,
        user: str,
        k: int = 10,
        weight_cf: float | None = None,
        filters: Filters | None = None,
        exclude_bought: bool = True,
    ) -> Recommendations:
        """Top-``k`` products for customer ``user``, each with its CF and content parts and reasons."""
        if k < 1:
            raise QueryError(f"k must be at least 1, got {k}")
        row = self.cf_.user_row(user)
        filters = filters or Filters()
        candidates = filters.mask(self.catalog_)
        history = self.cf_.history(user)
        if exclude_bought:
            candidates[history] = False
        final, behaviour, content, w_eff = self.score_rows(np.array([row]), candidates[None], weight_cf)
        w = float(w_eff[0])
        scores = np.where(candidates, final[0] + 1e-6 * (behaviour[0] + content[0]), -np.inf)
        _, ids = top_k(scores, k)
        positions = ids[0][ids[0] >= 0]
        notes = [f"{len(history)} product(s) in this customer's history"]
        if self.min_history and w < (self.weight_cf if weight_cf is None else weight_cf):
            notes.append(f"short history: CF weight lowered to {w:.2f}, the rest is content similarity")
        items = [self._item(user, int(p), float(final[0, p]), float(behaviour[0, p]), float(content[0, p]), w,
                            history) for p in positions]
        # ``weight`` here is the CF weight used (for product queries it is the image weight).
        result = Recommendations(f"customer {user}", w, items, int(candidates.sum()), {}, notes)
        if not items:
            result.empty_reason = ("every product matching the filters was already bought" if exclude_bought
                                   and filters.mask(self.catalog_).any() else "no product matches the filters")
        return result

    def _item(self, user: str, pos: int, score: float, behaviour: float, content: float, w: float,
              history: np.ndarray) -> Recommendation:
        items = self.catalog_.items
        return Recommendation(
            id=str(self.catalog_.ids[pos]), name=str(items["name"].iat[pos]), position=pos, score=score,
            image_score=float("nan"), metadata_score=content, image_contribution=0.0,
            metadata_contribution=(1 - w) * content, shared={}, cf_score=behaviour, cf_contribution=w * behaviour,
            because=self.reasons(user, pos, history, cf_first=w * behaviour >= (1 - w) * content))

    def reasons(self, user: str, pos: int, history: np.ndarray, cf_first: bool = True) -> list[str]:
        """Why ``pos`` suits ``user``: "because you bought X", "bought together with X", "similar to X you
        bought", "selling well lately", strongest side first."""
        names = self.catalog_.items["name"]
        cf_reasons: list[str] = []
        content_reasons: list[str] = []
        if history.size:
            if self.cf_.has_interactions_[pos]:
                co = self.cf_.co_purchases(pos, history)
                best = int(history[int(np.argmax(co))]) if co.max(initial=0) > 0 else None
                if best is not None:
                    cf_reasons.append(f"bought together with {names.iat[best]} by {int(co.max())} customer(s)")
                explained = [h for h in self.cf_.explain(user, pos) if h != best]
                if explained:
                    cf_reasons.insert(0, f"because you bought {names.iat[explained[0]]}")
            else:
                cf_reasons.append("no purchases yet: reached through products like it")
            sims = np.asarray((self.content_[history] @ self.content_[pos].T).todense()).ravel()
            if sims.max(initial=0) > 0:
                content_reasons.append(f"similar to {names.iat[history[int(np.argmax(sims))]]}, which you bought")
        if self.cf_.trend_weight and self.cf_.trend_[pos] > 0:
            buyers = int(round(np.expm1(self.cf_.trend_[pos])))
            cf_reasons.append(f"selling well lately ({buyers} customer(s) since "
                              f"{pd.Timestamp(self.cf_.trend_since_, unit='s'):%Y-%m-%d})")
        first, second = (cf_reasons, content_reasons) if cf_first else (content_reasons, cf_reasons)
        ordered = first[:2] + second[:1]  # both sides speak when both have something to say
        return ordered + (first[2:] + second[1:])[:3 - len(ordered)]

    def also_bought(self, item: str, k: int = 10) -> list[tuple[str, str, float]]:
        """"Customers who bought this also bought": ``(id, name, cosine)`` best first."""
        try:
            pos = self.catalog_.position(item)
        except KeyError as exc:
            raise QueryError(str(exc.args[0])) from None
        positions, scores = self.cf_.also_bought(pos, k)
        names = self.catalog_.items["name"]
        return [(str(self.catalog_.ids[p]), str(names.iat[p]), float(s)) for p, s in zip(positions, scores,
                                                                                          strict=True)]

    def customers(self) -> Sequence[str]:
        return list(self.cf_.user_ids_)


def _check_weight(w: float) -> None:
    if not 0.0 <= float(w) <= 1.0:
        raise QueryError(f"weight_cf must be between 0 and 1, got {w}")
