"""What one query returns: results best first, each with its score parts and why it was chosen."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from recommender.catalog.loader import Catalog


def describe_attributes(attrs: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """Attributes as a person reads them: ``{"sub-category": "Footwear", "colour": "blue/pink"}``."""
    return {k.replace("_", "-"): "/".join(v) for k, v in attrs.items()}


@dataclass(frozen=True)
class Recommendation:
    id: str
    name: str
    position: int  # catalog row
    score: float  # final hybrid score in [0, 1]
    image_score: float  # raw cosine similarity (NaN where the image side was not used)
    metadata_score: float
    image_contribution: float  # w * normalised image score; the two contributions sum to ``score``
    metadata_contribution: float
    shared: dict[str, list[str]]  # attributes this result has in common with the query
    matched: tuple[str, ...] = ()  # words of a text query found in this product's name or description

    # For customer queries (ranking/blend.py): behaviour side, its share of ``score``, and reasons.
    cf_score: float = float("nan")
    cf_contribution: float = 0.0
    because: list[str] = field(default_factory=list)

    def why(self) -> str:
        """What this result has in common with the query, in a few words."""
        if self.because:  # a customer recommendation says which purchases led to it
            return "; ".join(self.because)
        parts = []
        if self.shared:
            parts.append("same " + ", ".join(f"{k} ({v})" for k, v in describe_attributes(self.shared).items()))
        if self.matched:
            parts.append("mentions " + ", ".join(self.matched))
        if parts:
            return "; ".join(parts)
        text_only = np.isnan(self.image_score)  # a text query uses no image: never "looks similar"
        # Nor does a result whose image is no closer than a random pair (contribution 0): it was kept
        # for a word in common (small catalogs, where the calibrated sides are often both 0).
        if text_only or self.image_contribution <= 0 or self.metadata_contribution > self.image_contribution:
            return "similar text"
        return "looks similar"


@dataclass
class Recommendations:
    """The answer to one query: results best first, plus what a person needs to trust them."""

    query: str
    weight: float
    items: list[Recommendation]
    n_candidates: int
    query_attributes: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    empty_reason: str | None = None
    weak: bool = False  # even the best result scores below the recommender's ``weak_score``: "no good match"

    def __len__(self) -> int:
        return len(self.items)

    @property
    def ids(self) -> list[str]:
        return [r.id for r in self.items]

    def to_frame(self, catalog: Catalog | None = None) -> pd.DataFrame:
        rows = []
        for rank, r in enumerate(self.items, 1):
            row = {"rank": rank, "id": r.id, "name": r.name, "score": round(r.score, 4),
                   "image_score": round(r.image_score, 4), "metadata_score": round(r.metadata_score, 4),
                   "image_contribution": round(r.image_contribution, 4),
                   "metadata_contribution": round(r.metadata_contribution, 4), "why": r.why()}
            if catalog is not None:
                item = catalog.items.iloc[r.position]
                row.update({c: item[c] for c in ("category", "sub_category", "brand", "colour", "price")})
            rows.append(row)
        return pd.DataFrame(rows)

    def to_dict(self) -> dict:
        def clean(x: float) -> float | None:
            return None if np.isnan(x) else round(float(x), 6)

        return {
            "query": self.query, "weight": self.weight, "n_candidates": self.n_candidates,
            "query_attributes": self.query_attributes, "notes": self.notes, "empty_reason": self.empty_reason,
            "weak": self.weak,
            "results": [
                {"rank": k, "id": r.id, "name": r.name, "score": clean(r.score),
                 "image_score": clean(r.image_score), "metadata_score": clean(r.metadata_score),
                 "image_contribution": clean(r.image_contribution),
                 "metadata_contribution": clean(r.metadata_contribution), "shared": r.shared,
                 "matched": list(r.matched), "why": r.why()}
                for k, r in enumerate(self.items, 1)
            ],
        }
