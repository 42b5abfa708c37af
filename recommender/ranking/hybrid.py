"""Weighted hybrid ranking: ``score = w * image + (1 - w) * metadata``.

Raw cosines of the two sides live on different scales (image cosines of unrelated products are
often 0.3-0.5, TF-IDF cosines mostly 0), so each side is min-max normalised over the candidates of
this query first; then ``w`` means what it says: ``w = 1`` ranks by image alone, ``w = 0`` by
metadata alone.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import numpy as np

from recommender.catalog.loader import Catalog, split_values
from recommender.index.exact import top_k


@dataclass(frozen=True)
class Filters:
    """Hard filters applied before ranking. ``None`` or empty means "no constraint".

    A multi-valued attribute (``blue|pink``) passes if any of its values is selected. With a
    price bound set, products without a price are excluded (their price cannot be shown to fit).
    """

    category: Collection[str] | None = None
    sub_category: Collection[str] | None = None
    brand: Collection[str] | None = None
    colour: Collection[str] | None = None
    price_min: float | None = None
    price_max: float | None = None

    def active(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items() if v is not None and v != () and v != [] and v != set()}

    def mask(self, catalog: Catalog) -> np.ndarray:
        """Boolean mask over catalog rows that pass every filter."""
        keep = np.ones(len(catalog), dtype=bool)
        for step in self.steps(catalog):
            keep &= step[1]
        return keep

    def steps(self, catalog: Catalog) -> list[tuple[str, np.ndarray]]:
        """One ``(description, mask)`` per active filter, so an empty result can name its cause."""
        items = catalog.items
        out = []
        for col in ("category", "sub_category", "brand", "colour"):
            wanted = getattr(self, col)
            if not wanted:
                continue
            wanted_l = {str(w).strip().lower() for w in wanted}
            m = items[col].map(lambda cell, w=wanted_l: any(v.lower() in w for v in split_values(cell)))
            out.append((f"{col} in {sorted(wanted)}", m.to_numpy(dtype=bool)))
        price = items["price"].to_numpy(dtype=float)
        if self.price_min is not None:
            out.append((f"price >= {self.price_min:g}", np.nan_to_num(price, nan=-np.inf) >= self.price_min))
        if self.price_max is not None:
            out.append((f"price <= {self.price_max:g}", np.nan_to_num(price, nan=np.inf) <= self.price_max))
        return out


@dataclass(frozen=True)
class Ranking:
    """Top-N rows with the score breakdown, best first."""

    positions: np.ndarray  # catalog rows
    final: np.ndarray  # w * image_norm + (1 - w) * metadata_norm, in [0, 1]
    image_norm: np.ndarray  # per-query min-max normalised image similarity
    metadata_norm: np.ndarray
    image_raw: np.ndarray  # cosine similarities before normalisation (NaN where a side is absent)
    metadata_raw: np.ndarray
    weight: float  # the image weight actually used
    n_candidates: int


def minmax(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Scale ``x`` to [0, 1] over the masked entries; a constant side carries no signal -> 0."""
    out = np.zeros_like(x, dtype=np.float32)
    if not mask.any():
        return out
    lo, hi = float(x[mask].min()), float(x[mask].max())
    if hi > lo:
        out[mask] = (x[mask] - lo) / (hi - lo)
    return out


class HybridRanker:
    """Combine per-item image and metadata similarities into one ranking.

    ``weight`` is the image weight ``w`` in [0, 1]. A side passed as ``None`` (a text-only query, a
    product without an image) gets weight 0 and the other side decides.
    """

    def __init__(self, weight: float = 0.7) -> None:
        self.weight = weight

    def rank(
        self,
        image_scores: np.ndarray | None,
        metadata_scores: np.ndarray | None,
        k: int,
        candidates: np.ndarray | None = None,
        weight: float | None = None,
    ) -> Ranking:
        w = self.weight if weight is None else weight
        if not 0.0 <= w <= 1.0:
            raise ValueError(f"weight must be between 0 and 1, got {w}")
        if image_scores is None and metadata_scores is None:
            raise ValueError("need image scores, metadata scores or both")
        n = len(image_scores if image_scores is not None else metadata_scores)
        cand = np.ones(n, dtype=bool) if candidates is None else np.asarray(candidates, dtype=bool)
        if image_scores is None:
            w = 0.0
        elif metadata_scores is None:
            w = 1.0
        nan = np.full(n, np.nan, dtype=np.float32)
        img_raw = nan if image_scores is None else np.asarray(image_scores, dtype=np.float32)
        meta_raw = nan if metadata_scores is None else np.asarray(metadata_scores, dtype=np.float32)
        img = minmax(img_raw, cand) if image_scores is not None else np.zeros(n, np.float32)
        meta = minmax(meta_raw, cand) if metadata_scores is not None else np.zeros(n, np.float32)
        final = w * img + (1.0 - w) * meta
        # Ties on the final score (e.g. w = 0 and equal metadata) fall back to the other side.
        tiebreak = 1e-6 * (img + meta)
        _, ids = top_k(np.where(cand, final + tiebreak, -np.inf), k)
        pos = ids[0][ids[0] >= 0]
        return Ranking(pos, final[pos], img[pos], meta[pos], img_raw[pos], meta_raw[pos], w, int(cand.sum()))
