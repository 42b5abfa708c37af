"""Shared by the bench scripts that need per-query figures (for paired differences)."""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from recommender.evaluation.metrics import paired_bootstrap_diff, summarise
from recommender.evaluation.protocols import per_query_metrics
from recommender.ranking.hybrid import HybridRanker


def parse_cache_args(doc: str | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "recommender-bench-cache")
    return ap.parse_args()


def ci(values: np.ndarray | dict) -> str:
    """``mean [lo, hi]`` of per-query values, or of a summary the evaluate functions return."""
    s = values if isinstance(values, dict) else summarise(values)
    return f"{s['mean']:.3f} [{s['ci95'][0]:.2f}, {s['ci95'][1]:.2f}]"


def diff(a: np.ndarray, b: np.ndarray) -> str:
    d = paired_bootstrap_diff(a, b)
    return f"{d['mean_diff']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]"


def hybrid_loo(image_sims: np.ndarray, meta_sims: np.ndarray, labels: np.ndarray,
               weights: Sequence[float]) -> dict[float, dict[str, np.ndarray]]:
    """Per-query P@1 / P@5 of leave-one-out at each image weight, ranked as the evaluate command
    ranks (``HybridRanker``: min-max per query, ties fall back to the other side)."""
    ranker, n = HybridRanker(), len(labels)
    queries = [i for i in range(n) if labels[i] and (labels == labels[i]).sum() > 1]
    out = {}
    for w in weights:
        ranked, relevant, n_rel = [], [], []
        for i in queries:
            cand = np.ones(n, dtype=bool)
            cand[i] = False
            pos = ranker.rank(image_sims[i], meta_sims[i], 5, cand, w).positions
            ranked.append(pos)
            relevant.append(labels[pos] == labels[i])
            n_rel.append(int((labels == labels[i]).sum()) - 1)
        out[w] = per_query_metrics(ranked, relevant, n_rel, (1, 5))
    return out
