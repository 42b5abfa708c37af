"""Hard filters over catalog rows, vectorised: per-column value -> rows postings built once at fit.

A query's filter mask is a few ``mask[rows] = True`` over the postings of the selected values, not a
Python function per row: at 70k products a category filter costs microseconds, not 77 ms.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recommender.catalog.loader import ATTRIBUTE_COLUMNS, MULTI_VALUE_SEP, Catalog
from recommender.errors import QueryError

_EMPTY_ROWS = np.zeros(0, dtype=np.int64)


def _postings(column: pd.Series) -> dict[str, np.ndarray]:
    """``{lower-cased value: sorted rows holding it}`` of one attribute column (multi-values split)."""
    values = column.fillna("").astype(str).str.split(MULTI_VALUE_SEP, regex=False).explode()
    values = values.str.strip().str.lower()
    values = values[values != ""]
    if values.empty:
        return {}
    rows = values.index.to_numpy(dtype=np.int64)
    codes, uniques = pd.factorize(values.to_numpy())
    order = np.argsort(codes, kind="stable")
    bounds = np.flatnonzero(np.diff(codes[order])) + 1
    return {str(uniques[codes[g[0]]]): np.unique(rows[g])
            for g in np.split(order, bounds)}


@dataclass(frozen=True)
class AttributeIndex:
    """Postings of every attribute column plus the price column, for vectorised filter masks.

    Rows are the recommender's row slots. Built once at fit; :meth:`with_rows` returns a new index
    with some rows replaced (copy-on-write, so readers of the old one are never disturbed).
    """

    n_rows: int
    postings: Mapping[str, Mapping[str, np.ndarray]]
    price: np.ndarray

    @classmethod
    def from_items(cls, items: pd.DataFrame) -> AttributeIndex:
        items = items.reset_index(drop=True)
        postings = {col: _postings(items[col]) for col in ATTRIBUTE_COLUMNS if col in items.columns}
        price = (items["price"].to_numpy(dtype=float) if "price" in items.columns
                 else np.full(len(items), np.nan))
        return cls(len(items), postings, price)

    def rows(self, column: str, value: str) -> np.ndarray:
        return self.postings.get(column, {}).get(str(value).strip().lower(), _EMPTY_ROWS)

    def value_mask(self, column: str, values: Collection[str]) -> np.ndarray:
        mask = np.zeros(self.n_rows, dtype=bool)
        for v in values:
            mask[self.rows(column, v)] = True
        return mask

    def appended(self, items: pd.DataFrame) -> AttributeIndex:
        """A new index with ``items`` as rows ``n_rows, n_rows + 1, ...`` (the old rows unchanged)."""
        extra = AttributeIndex.from_items(items)
        offset = self.n_rows
        postings = {}
        for col in set(self.postings) | set(extra.postings):
            merged = dict(self.postings.get(col, {}))
            for value, rows in extra.postings.get(col, {}).items():
                old = merged.get(value, _EMPTY_ROWS)
                merged[value] = np.concatenate([old, rows + offset])
            postings[col] = merged
        return AttributeIndex(offset + len(items), postings, np.concatenate([self.price, extra.price]))


@dataclass(frozen=True)
class Filters:
    """Hard filters applied before ranking. ``None`` or empty means "no constraint".

    An attribute filter is a collection of accepted values; a single string means that one value
    (``Filters(category="Shoes")``), not its characters. Values compare case-insensitively. A
    multi-valued attribute (``blue|pink``) passes if any of its values is selected. With a price
    bound set, products without a price are excluded (their price cannot be shown to fit).
    """

    category: Collection[str] | str | None = None
    sub_category: Collection[str] | str | None = None
    brand: Collection[str] | str | None = None
    colour: Collection[str] | str | None = None
    price_min: float | None = None
    price_max: float | None = None

    def __post_init__(self) -> None:
        for col in ATTRIBUTE_COLUMNS:
            value = getattr(self, col)
            if isinstance(value, str):
                object.__setattr__(self, col, (value,) if value.strip() else None)
        for bound in ("price_min", "price_max"):  # NaN would silently match nothing, inf everything
            value = getattr(self, bound)
            if value is None:
                continue
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise QueryError(f"{bound} must be a number, got {value!r}") from None
            if not np.isfinite(number):
                raise QueryError(f"{bound} must be a finite number, got {value!r}")
            object.__setattr__(self, bound, number)

    def active(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items() if v is not None and v != () and v != [] and v != set()}

    def mask(self, catalog: Catalog, attributes: AttributeIndex | None = None) -> np.ndarray:
        """Boolean mask over catalog rows that pass every filter."""
        attributes = attributes or AttributeIndex.from_items(catalog.items)
        keep = np.ones(attributes.n_rows, dtype=bool)
        for _, step in self.steps(catalog, attributes):
            keep &= step
        return keep

    def steps(self, catalog: Catalog | None, attributes: AttributeIndex | None = None) -> list[tuple[str, np.ndarray]]:
        """One ``(description, mask)`` per active filter, so an empty result can name its cause."""
        if attributes is None:
            attributes = AttributeIndex.from_items(catalog.items)
        out = []
        for col in ATTRIBUTE_COLUMNS:
            wanted = getattr(self, col)
            if not wanted:
                continue
            wanted = sorted({str(w).strip() for w in wanted})
            shown = " or ".join(repr(w) for w in wanted)  # read by people: brand 'nike' or 'adidas'
            out.append((f"{col.replace('_', ' ')} {shown}", attributes.value_mask(col, wanted)))
        price = attributes.price
        if self.price_min is not None:
            out.append((f"price >= {self.price_min:g}", np.nan_to_num(price, nan=-np.inf) >= self.price_min))
        if self.price_max is not None:
            out.append((f"price <= {self.price_max:g}", np.nan_to_num(price, nan=np.inf) <= self.price_max))
        return out
