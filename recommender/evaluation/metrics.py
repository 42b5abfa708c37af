"""Ranking metrics for top-k result lists, and bootstrap intervals over queries.

Conventions shared by the per-query metrics:

* ``relevant`` is a boolean sequence over one ranked result list, best first. It may be shorter
  than ``k`` (the ranker returned fewer results): missing results count as misses.
* ``n_relevant`` is how many relevant items the query has in the whole catalog (not only in the
  list). A query with ``n_relevant == 0`` scores 0.0 on recall, nDCG and AP: nothing can be found,
  so nothing was. Such queries carry no signal and drag means down; drop them before averaging
  where that matters (leave-one-out evaluation only makes queries that have a relevant item).
* ``k < 1`` raises :class:`ValueError`, as does a list whose hits exceed ``n_relevant``.

The bootstrap helpers resample queries (percentile bootstrap) and are vectorised over resamples.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

# Resamples are drawn in blocks of at most this many indices, so memory stays bounded (~32 MiB of
# int64) whatever n_boot * n_queries is.
_MAX_BLOCK = 1 << 22


def _as_relevant(relevant: ArrayLike) -> np.ndarray:
    rel = np.asarray(relevant, dtype=bool)
    if rel.ndim != 1:
        raise ValueError(f"relevant must be 1-D, got shape {rel.shape}")
    return rel


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")


def _check_n_relevant(n_relevant: int, hits: int) -> None:
    if n_relevant < 0:
        raise ValueError(f"n_relevant must be >= 0, got {n_relevant}")
    if hits > n_relevant:
        # More hits than relevant items means the caller's counts disagree: a metric would
        # silently exceed 1.
        raise ValueError(f"{hits} relevant results but n_relevant={n_relevant}")


def precision_at_k(relevant: ArrayLike, k: int) -> float:
    """P@k = (relevant results among the first ``k``) / ``k``; missing results count as misses."""
    _check_k(k)
    return float(np.count_nonzero(_as_relevant(relevant)[:k])) / k


def recall_at_k(relevant: ArrayLike, k: int, n_relevant: int) -> float:
    """R@k = (relevant results among the first ``k``) / ``n_relevant``; 0.0 when ``n_relevant == 0``."""
    _check_k(k)
    hits = int(np.count_nonzero(_as_relevant(relevant)[:k]))
    _check_n_relevant(n_relevant, hits)
    return hits / n_relevant if n_relevant else 0.0


def _discounts(n: int) -> np.ndarray:
    # Rank r (1-based) is discounted by 1 / log2(r + 1).
    return 1.0 / np.log2(np.arange(2, n + 2, dtype=np.float64))


def ndcg_at_k(relevant: ArrayLike, k: int, n_relevant: int) -> float:
    """nDCG@k with binary gains: DCG = sum over relevant ranks r <= k of 1 / log2(r + 1), divided
    by the ideal DCG, that of ``min(k, n_relevant)`` relevant items at the top. 0.0 when
    ``n_relevant == 0``."""
    _check_k(k)
    rel = _as_relevant(relevant)[:k]
    _check_n_relevant(n_relevant, int(np.count_nonzero(rel)))
    if n_relevant == 0:
        return 0.0
    dcg = float(_discounts(rel.size)[rel].sum())
    ideal = float(_discounts(min(k, n_relevant)).sum())
    return dcg / ideal


def average_precision(relevant: ArrayLike, n_relevant: int, k: int | None = None) -> float:
    """AP = (sum of P@r over the ranks r of relevant results) / normaliser.

    Without ``k`` the whole list counts and the normaliser is ``n_relevant`` (relevant items never
    retrieved contribute 0). With ``k`` (AP@k) only the first ``k`` results count and the
    normaliser is ``min(k, n_relevant)``, so a perfect top-k scores 1.0 even when more than ``k``
    items are relevant. 0.0 when ``n_relevant == 0``.
    """
    rel = _as_relevant(relevant)
    if k is not None:
        _check_k(k)
        rel = rel[:k]
    hits = np.cumsum(rel)
    _check_n_relevant(n_relevant, int(hits[-1]) if hits.size else 0)
    if n_relevant == 0:
        return 0.0
    ranks = np.arange(1, rel.size + 1)
    denom = n_relevant if k is None else min(k, n_relevant)
    return float((hits[rel] / ranks[rel]).sum()) / denom


def mean_average_precision(
    list_of_relevant: Sequence[ArrayLike], list_of_n_relevant: Sequence[int], k: int | None = None
) -> float:
    """MAP: the mean over queries of :func:`average_precision` (same ``k`` convention).

    Raises ValueError for no queries or mismatched lengths.
    """
    if len(list_of_relevant) != len(list_of_n_relevant):
        raise ValueError(f"{len(list_of_relevant)} result lists but {len(list_of_n_relevant)} n_relevant counts")
    if not list_of_relevant:
        raise ValueError("mean_average_precision needs at least one query")
    return float(np.mean([average_precision(r, n, k) for r, n in zip(list_of_relevant, list_of_n_relevant,
                                                                          strict=True)]))


def hit_rate_at_k(relevant: ArrayLike, k: int) -> float:
    """HR@k = 1.0 if any of the first ``k`` results is relevant, else 0.0."""
    _check_k(k)
    return float(_as_relevant(relevant)[:k].any())


def catalog_coverage(result_lists: Sequence[Sequence[int]], n_items: int) -> float:
    """Share of the ``n_items`` catalog items (ids ``0..n_items-1``) that appear in at least one
    result list. No lists (or only empty ones) give 0.0; an id outside the catalog raises ValueError."""
    if n_items < 1:
        raise ValueError(f"n_items must be >= 1, got {n_items}")
    parts = [np.asarray(ids, dtype=np.int64).ravel() for ids in result_lists]
    ids = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= n_items):
        raise ValueError(f"item ids must lie in [0, {n_items}), got range [{ids.min()}, {ids.max()}]")
    return np.unique(ids).size / n_items


def intra_list_diversity(ids: Sequence[int], similarity: np.ndarray) -> float:
    """ILD = 1 - mean of ``similarity[i, j]`` over the unordered pairs of positions in the list.

    ``similarity`` is an item x item matrix (e.g. cosine) indexed by the ids; the upper triangle
    of the list's block is used. A list of fewer than 2 items has no pairs, so its diversity is
    undefined and the result is ``nan`` (not 0.0, which would claim "all alike"); average with
    ``np.nanmean`` or filter such lists. A repeated id pairs with itself like any other pair.
    """
    idx = np.asarray(ids, dtype=np.int64).ravel()
    m = idx.size
    if m < 2:
        return float("nan")
    block = np.asarray(similarity)[np.ix_(idx, idx)]
    upper = block[np.triu_indices(m, k=1)]
    return float(1.0 - upper.mean())


def _as_values(values: ArrayLike, name: str = "values") -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {x.shape}")
    if x.size == 0:
        raise ValueError(f"{name} is empty: nothing to bootstrap")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains nan or inf")
    return x


def _check_boot(n_boot: int, alpha: float) -> None:
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")


def _bootstrap_means(x: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Means of ``n_boot`` resamples (with replacement) of ``x``."""
    n = x.size
    rng = np.random.default_rng(seed)
    # Block size depends only on n, so a seed gives the same resamples on every machine.
    block = max(1, _MAX_BLOCK // n)
    out = np.empty(n_boot, dtype=np.float64)
    for start in range(0, n_boot, block):
        stop = min(start + block, n_boot)
        idx = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = x[idx].mean(axis=1)
    return out


def bootstrap_ci(
    values: ArrayLike, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0
) -> tuple[float, float, float]:
    """(mean, lo, hi): the sample mean of per-query ``values`` and its percentile-bootstrap
    ``1 - alpha`` interval (the ``alpha/2`` and ``1 - alpha/2`` quantiles of ``n_boot`` resample
    means). Deterministic for a seed. Raises ValueError for empty or non-finite values."""
    _check_boot(n_boot, alpha)
    x = _as_values(values)
    means = _bootstrap_means(x, n_boot, seed)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(x.mean()), float(lo), float(hi)


def paired_bootstrap_diff(
    a: ArrayLike, b: ArrayLike, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0
) -> dict:
    """Paired bootstrap of mean(a - b) over queries: each resample takes the same query indices for
    both systems, which is resampling the per-query differences.

    Returns ``{"mean_diff", "lo", "hi", "significant"}``; ``significant`` is True iff the
    ``1 - alpha`` percentile interval excludes 0 (``lo > 0`` or ``hi < 0``).
    """
    _check_boot(n_boot, alpha)
    xa, xb = _as_values(a, "a"), _as_values(b, "b")
    if xa.shape != xb.shape:
        raise ValueError(f"a and b must score the same queries, got {xa.size} and {xb.size} values")
    diff = xa - xb
    means = _bootstrap_means(diff, n_boot, seed)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return {"mean_diff": float(diff.mean()), "lo": float(lo), "hi": float(hi),
            "significant": bool(lo > 0 or hi < 0)}


def summarise(values: ArrayLike, n_boot: int = 2000, seed: int = 0) -> dict:
    """JSON-ready ``{"mean", "ci95": [lo, hi], "n"}`` from :func:`bootstrap_ci` (alpha = 0.05),
    floats rounded to 4 decimals. No values give ``{"mean": None, "ci95": [None, None], "n": 0}``
    (JSON has no nan)."""
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        return {"mean": None, "ci95": [None, None], "n": 0}
    mean, lo, hi = bootstrap_ci(x, n_boot=n_boot, alpha=0.05, seed=seed)
    return {"mean": round(mean, 4), "ci95": [round(lo, 4), round(hi, 4)], "n": int(x.size)}
