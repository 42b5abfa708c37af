"""Per-query retrieval metrics and their JSON-ready summaries, shared by the evaluation protocols."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from recommender.evaluation.metrics import (
    average_precision,
    hit_rate_at_k,
    ndcg_at_k,
    paired_bootstrap_diff,
    precision_at_k,
    recall_at_k,
    summarise,
)

DEFAULT_KS = (1, 3, 5, 10)


def per_query_metrics(
    ranked: Sequence[np.ndarray],
    relevant: Sequence[np.ndarray],
    n_relevant: Sequence[int],
    ks: Sequence[int],
) -> dict[str, np.ndarray]:
    """Per-query P@k, R@k, nDCG@k, hit@k and AP@max(k) from ranked lists and their relevance flags."""
    out: dict[str, list[float]] = {}
    kmax = max(ks)
    for rel, n_rel in zip(relevant, n_relevant, strict=True):
        for k in ks:
            out.setdefault(f"P@{k}", []).append(precision_at_k(rel, k))
            out.setdefault(f"R@{k}", []).append(recall_at_k(rel, k, n_rel))
            out.setdefault(f"nDCG@{k}", []).append(ndcg_at_k(rel, k, n_rel))
            out.setdefault(f"hit@{k}", []).append(hit_rate_at_k(rel, k))
        out.setdefault(f"MAP@{kmax}", []).append(average_precision(rel, n_rel, k=kmax))
    assert len(ranked) == len(relevant)
    return {m: np.asarray(v) for m, v in out.items()}


def summary(per_query: dict[str, np.ndarray], extra: dict[str, object] | None = None) -> dict:
    out = {m: summarise(v) for m, v in per_query.items() if not m.startswith("_")}
    out.update(extra or {})
    return out


def comparison(a: str, b: str, metric: str, per_query: Mapping[str, Mapping[str, np.ndarray]]) -> dict:
    """Paired bootstrap of method ``a`` minus method ``b`` on one metric, JSON-ready."""
    d = paired_bootstrap_diff(per_query[a][metric], per_query[b][metric])
    return {"a": a, "b": b, "metric": metric, **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in d.items()}}


def per_query_lists(per_method: Mapping[str, Mapping[str, np.ndarray]]) -> dict:
    """Per-query values, JSON-ready, for paired comparisons across runs (the benchmark suite)."""
    return {m: {k: [round(float(x), 4) for x in v] for k, v in pq.items()} for m, pq in per_method.items()}


def main_recall(ks: Sequence[int]) -> str:
    # R@5 when measured: the figure the photo colour default was chosen by.
    return "R@5" if 5 in ks else f"R@{max(ks)}"
