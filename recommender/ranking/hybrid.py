"""Weighted hybrid ranking: ``score = w * image + (1 - w) * metadata`` over calibrated sides.

Raw cosines of the two sides live on different scales (image cosines of unrelated products are
often 0.3-0.5, TF-IDF cosines mostly 0), so each side is first mapped to [0, 1] against a
catalog-wide reference fitted once (:mod:`recommender.ranking.calibration`): a product's score does
not depend on which other products a query's filters leave, and ``w`` means what it says: ``w = 1``
ranks by image alone, ``w = 0`` by metadata alone. Ties on the score go to the other side's score,
then to catalog order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recommender.ranking.calibration import SideReference
from recommender.ranking.filters import AttributeIndex, Filters

__all__ = ["AttributeIndex", "Filters", "HybridRanker", "Ranking", "minmax", "rank_candidates", "standout_weight"]

STANDOUT_FLOOR = 1e-3  # a side whose best matches do not stand out at all still keeps a little weight


@dataclass(frozen=True)
class Ranking:
    """Top-N rows with the score breakdown, best first."""

    positions: np.ndarray  # catalog rows
    final: np.ndarray  # w * image_norm + (1 - w) * metadata_norm, in [0, 1]
    image_norm: np.ndarray  # calibrated image similarity in [0, 1]
    metadata_norm: np.ndarray
    image_raw: np.ndarray  # cosine similarities before calibration (NaN where a side is absent)
    metadata_raw: np.ndarray
    weight: float  # the image weight actually used
    n_candidates: int

    def take(self, order: np.ndarray) -> Ranking:
        """The same ranking restricted to / reordered by ``order`` (indices into its rows)."""
        return Ranking(self.positions[order], self.final[order], self.image_norm[order], self.metadata_norm[order],
                       self.image_raw[order], self.metadata_raw[order], self.weight, self.n_candidates)


def minmax(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Scale ``x`` to [0, 1] over the masked entries; a constant side carries no signal -> 0.

    Not used for ranking any more (it made scores depend on the filters); kept for callers that
    want a per-list view.
    """
    out = np.zeros_like(x, dtype=np.float32)
    if not mask.any():
        return out
    lo, hi = float(x[mask].min()), float(x[mask].max())
    if hi > lo:
        out[mask] = (x[mask] - lo) / (hi - lo)
    return out


def standout_weight(weight: float, image: np.ndarray | None, metadata: np.ndarray | None, k: int) -> float:
    """The image weight of one query, moved towards the side whose best match stands out more.

    ``image`` / ``metadata``: the query's calibrated scores on each side over the same rows (every live product but
    the query). A side's *standout* is its best score minus its ``k+1``-th best: large when one match is clearly
    closer than the rest, ~0 when the side cannot tell the products apart. ``w' = w s_i / (w s_i + (1 - w) s_m)``:
    equal standouts keep ``w``; ``w`` of 0 or 1, a missing side or too few rows keep ``w`` as given.
    """
    if not 0.0 < weight < 1.0 or image is None or metadata is None or k < 1:
        return weight
    s_img, s_meta = (_standout(np.asarray(x, np.float32), k) for x in (image, metadata))
    if s_img is None or s_meta is None:
        return weight
    return float(weight * s_img / (weight * s_img + (1.0 - weight) * s_meta))


def _standout(scores: np.ndarray, k: int) -> float | None:
    """Best minus ``k+1``-th best of the finite scores (a side without a score for a row says nothing of it);
    None when fewer than ``k + 1`` rows have one."""
    scores = scores[np.isfinite(scores)]
    if len(scores) <= k:
        return None
    top = np.partition(scores, len(scores) - k - 1)[len(scores) - k - 1:]  # the k + 1 best, unordered
    return max(float(top.max() - top.min()), STANDOUT_FLOOR)


def rank_candidates(
    positions: np.ndarray,
    image_raw: np.ndarray | None,
    metadata_raw: np.ndarray | None,
    k: int | None,
    weight: float,
    image_reference: SideReference | None = None,
    metadata_reference: SideReference | None = None,
    n_candidates: int | None = None,
) -> Ranking:
    """Rank the candidate rows ``positions`` by their calibrated hybrid score; keep the top ``k``.

    ``image_raw`` / ``metadata_raw`` are aligned with ``positions``; a side given as ``None`` (a
    text query, a product without an image) gets weight 0 and the other side decides.
    """
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight must be between 0 and 1, got {weight}")
    if image_raw is None and metadata_raw is None:
        raise ValueError("need image scores, metadata scores or both")
    positions = np.asarray(positions, dtype=np.int64)
    n = len(positions)
    w = 0.0 if image_raw is None else 1.0 if metadata_raw is None else float(weight)
    nan = np.full(n, np.nan, dtype=np.float32)
    zero = np.zeros(n, dtype=np.float32)
    img_raw = nan if image_raw is None else np.asarray(image_raw, dtype=np.float32)
    meta_raw = nan if metadata_raw is None else np.asarray(metadata_raw, dtype=np.float32)
    img = zero if image_raw is None else (image_reference or SideReference())(img_raw)
    meta = zero if metadata_raw is None else (metadata_reference or SideReference())(meta_raw)
    final = (w * img + (1.0 - w) * meta).astype(np.float32)
    other = (1.0 - w) * img + w * meta  # ties: the side with less weight decides, then catalog order
    if k is not None and n > 4 * k:
        # Sort only what can make the top k: every row scoring at least the k-th best (ties kept).
        kth = np.partition(final, n - k)[n - k]
        head = np.flatnonzero(final >= kth)
        order = head[np.lexsort((positions[head], -other[head], -final[head]))][:k]
    else:
        order = np.lexsort((positions, -other, -final))[:k]
    return Ranking(positions[order], final[order], img[order], meta[order], img_raw[order], meta_raw[order], w,
                   n if n_candidates is None else int(n_candidates))


class HybridRanker:
    """Combine per-item image and metadata similarities into one ranking.

    ``weight`` is the image weight ``w`` in [0, 1]; ``image_reference`` / ``metadata_reference``
    calibrate each side (default: raw cosine clipped to [0, 1]).
    """

    def __init__(self, weight: float = 0.7, image_reference: SideReference | None = None,
                 metadata_reference: SideReference | None = None) -> None:
        self.weight = weight
        self.image_reference = image_reference
        self.metadata_reference = metadata_reference

    def rank(
        self,
        image_scores: np.ndarray | None,
        metadata_scores: np.ndarray | None,
        k: int,
        candidates: np.ndarray | None = None,
        weight: float | None = None,
        image_reference: SideReference | None = None,
    ) -> Ranking:
        """Top-``k`` of full-length score vectors (one entry per catalog row) over the ``candidates`` mask."""
        w = self.weight if weight is None else weight
        if image_scores is None and metadata_scores is None:
            raise ValueError("need image scores, metadata scores or both")
        n = len(image_scores if image_scores is not None else metadata_scores)
        cand = np.ones(n, dtype=bool) if candidates is None else np.asarray(candidates, dtype=bool)
        pos = np.flatnonzero(cand)
        img = None if image_scores is None else np.asarray(image_scores)[pos]
        meta = None if metadata_scores is None else np.asarray(metadata_scores)[pos]
        return rank_candidates(pos, img, meta, k, w, image_reference or self.image_reference,
                               self.metadata_reference)
