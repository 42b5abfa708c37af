"""Customers ("recommended for you"): the behaviour model fitted over the catalog, updated incrementally.

Mixed into :class:`~recommender.recommender.HybridRecommender`; the model itself is
:class:`~recommender.ranking.blend.CustomerRecommender` (CF blended with content).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Self

from recommender.errors import QueryError
from recommender.ranking.hybrid import Filters
from recommender.ranking.results import Recommendations

if TYPE_CHECKING:
    from recommender.catalog.interactions import Interactions


class CustomersMixin:
    """``fit_interactions``, ``add_interactions`` and ``recommend_for_user`` over the fitted catalog."""

    def fit_interactions(self, interactions, **params) -> Self:
        """Learn from purchases/ratings (an :class:`Interactions` or a file path) over the fitted catalog;
        ``params`` go to :class:`~recommender.ranking.blend.CustomerRecommender`."""
        from recommender.catalog.interactions import Interactions, load_interactions
        from recommender.ranking.blend import CustomerRecommender

        if not isinstance(interactions, Interactions):
            interactions = load_interactions(interactions, self.catalog_)
        self.customers_ = CustomerRecommender(**params).fit(self.catalog_, interactions, self.metadata_matrix_)
        return self

    def add_interactions(self, events) -> Interactions:
        """Apply new interactions (an :class:`Interactions` or a table with the loader's columns; a missing
        ``timestamp`` is now) to the fitted customer model incrementally, without a full retrain: each
        customer's next recommendations reflect them. Validated as the loader validates files (items must be
        in the catalog; weights finite and non-negative). Returns the validated interactions."""
        import time as _time

        import pandas as pd

        from recommender.catalog.interactions import Interactions, interactions_from_frame

        if getattr(self, "customers_", None) is None:
            raise QueryError("no interactions fitted: call fit_interactions(...) first")
        if not isinstance(events, Interactions):
            df = pd.DataFrame(events).copy()
            if "timestamp" not in df.columns:
                df["timestamp"] = int(_time.time())
            else:
                df["timestamp"] = df["timestamp"].where(df["timestamp"].notna(), int(_time.time()))
            # the products the customer model was fitted on (later products join at the next fit)
            events = interactions_from_frame(df, self.customers_.catalog_, rows_are="event")
        removed = sorted({i for i in events.frame["item_id"] if not self._is_live(i)})
        if removed:
            raise QueryError(f"{len(removed)} item id(s) no longer in the catalog: {', '.join(removed[:5])}")
        with self._lock.writing():  # a customer query never sees a half-updated model
            self.customers_.partial_fit(events)
        return events

    def recommend_for_user(self, user: str, k: int = 10, weight_cf: float | None = None,
                           filters: Filters | None = None, exclude_bought: bool = True) -> Recommendations:
        """Top-``k`` products for a customer: ``w_cf * behaviour + (1 - w_cf) * content``, with reasons."""
        if getattr(self, "customers_", None) is None:
            raise QueryError("no interactions fitted: call fit_interactions(...) first")
        with self._lock.reading():
            # products removed or replaced since the customer model was fitted are left out
            gone = int((~self.alive_).sum()) if getattr(self, "alive_", None) is not None else 0
            result = self.customers_.recommend(user, k + gone, weight_cf, filters, exclude_bought)
            if gone:
                result.items = [r for r in result.items if self._is_live(r.id)]
            result.items = result.items[:k]
            return result
