"""Offline evaluation of customer recommendations on real interactions.

Protocols
- **temporal**: one global cut in time; the last ``test_fraction`` of the interactions (by timestamp) is
  the test period. Every customer with a history before the cut is a query; relevant = the products
  they interacted with in the test period that they had not before. Metrics P@k, R@k, nDCG@k, MAP@k
  (AP@k) per customer, plus catalog coverage (share of products in at least one top-k list).
- **cold start**: as temporal, but ``cold_fraction`` of the products bought before the cut are removed
  from training entirely. Queries are the customers who bought a held-out product in the test period;
  cold R@k = the share of those held-out products found in their top k (pure CF scores 0 here by
  construction: it has never seen them).

Every figure is a mean over customers with a percentile-bootstrap 95% interval (``metrics.summarise``);
systems are compared by the paired bootstrap of their per-customer differences. Tune on
:func:`temporal_split` of the *training* period (validation), never on the test period.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from sklearn.base import clone

from recommender.catalog.interactions import Interactions
from recommender.catalog.loader import Catalog
from recommender.errors import RecommenderError
from recommender.evaluation.metrics import (
    average_precision,
    catalog_coverage,
    ndcg_at_k,
    paired_bootstrap_diff,
    precision_at_k,
    recall_at_k,
    summarise,
)
from recommender.ranking.blend import CustomerRecommender
from recommender.ranking.cf import CollaborativeFilter

BATCH = 512  # customers scored at once: (512 x n_items) float32 matrices


def temporal_split(interactions: Interactions, test_fraction: float = 0.2) -> tuple[Interactions, Interactions, int]:
    """(train, test, cutoff): interactions at or after the ``1 - test_fraction`` time quantile are test."""
    if not 0.0 < test_fraction < 1.0:
        raise RecommenderError(f"test_fraction must be in (0, 1), got {test_fraction}")
    ts = interactions.frame["timestamp"].to_numpy()
    cutoff = int(np.quantile(ts, 1.0 - test_fraction))
    train, test = interactions.subset(ts < cutoff), interactions.subset(ts >= cutoff)
    if len(train) == 0 or len(test) == 0:
        raise RecommenderError("the interactions span too little time to split into train and test")
    return train, test, cutoff


@dataclass(frozen=True)
class Queries:
    """The customers evaluated, their relevant products (catalog positions) and what they had bought."""

    users: np.ndarray
    relevant: list[np.ndarray]
    n_train_users: int


def make_queries(catalog: Catalog, train: Interactions, test: Interactions,
                 only_items: np.ndarray | None = None) -> Queries:
    """Customers with a training history and at least one new product in the test period
    (restricted to ``only_items`` positions, if given)."""
    users = train.users
    bought = train.matrix(catalog.ids, users) > 0
    later = test.matrix(catalog.ids, users) > 0
    new = (later.astype(np.int8) - later.multiply(bought).astype(np.int8)).tocsr()
    new.eliminate_zeros()
    if only_items is not None:
        keep = np.zeros(len(catalog), dtype=np.float32)
        keep[only_items] = 1
        new = new @ sp.diags(keep)
        new = sp.csr_matrix(new)
        new.eliminate_zeros()
    rows = np.flatnonzero(np.diff(new.indptr) > 0)
    return Queries(users[rows], [new[r].indices.copy() for r in rows], len(users))


def top_lists(model: CustomerRecommender, users: np.ndarray, k: int) -> np.ndarray:
    """Top-``k`` catalog positions per customer (already-bought products excluded): ``(n, k)``."""
    out = np.empty((len(users), k), dtype=np.int64)
    for start in range(0, len(users), BATCH):
        chunk = users[start:start + BATCH]
        rows = np.array([model.cf_.user_row(u) for u in chunk])
        candidates = np.asarray(model.cf_.user_items_[rows].todense()) == 0
        final, behaviour, content, _ = model.score_rows(rows, candidates)
        scores = np.where(candidates, final + 1e-6 * (behaviour + content), -np.inf)
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
        out[start:start + len(chunk)] = np.take_along_axis(part, order, axis=1)
    return out


def per_customer(top: np.ndarray, relevant: list[np.ndarray], k: int) -> dict[str, np.ndarray]:
    """P@k, R@k, nDCG@k and AP@k per customer."""
    out: dict[str, list[float]] = {f"P@{k}": [], f"R@{k}": [], f"nDCG@{k}": [], f"MAP@{k}": []}
    for ranked, rel in zip(top, relevant, strict=True):
        flags = np.isin(ranked[:k], rel)
        n = len(rel)
        out[f"P@{k}"].append(precision_at_k(flags, k))
        out[f"R@{k}"].append(recall_at_k(flags, k, n))
        out[f"nDCG@{k}"].append(ndcg_at_k(flags, k, n))
        out[f"MAP@{k}"].append(average_precision(flags, n, k))
    return {name: np.asarray(v) for name, v in out.items()}


def anchor_systems() -> dict[str, CustomerRecommender]:
    """The usual baselines, each a pure CF ranking (w_cf = 1, no trend, no content, no cold borrowing)."""
    def pure(**cf) -> CustomerRecommender:
        return CustomerRecommender(weight_cf=1.0, cf=CollaborativeFilter(trend_weight=0.0, **cf), min_history=0,
                                   cold_neighbours=0)

    return {
        "popularity": pure(algorithm="popularity"),
        "item-kNN cosine": pure(algorithm="knn-cosine"),
        "item-kNN BM25": pure(algorithm="knn-bm25"),
        "ALS (64 f, reg .05, 15 it)": pure(algorithm="als", factors=64, regularization=0.05, iterations=15),
        "BPR (64 f, 100 it)": pure(algorithm="bpr", factors=64, regularization=0.01, iterations=100),
    }


def evaluate_customers(
    catalog: Catalog,
    interactions: Interactions,
    systems: Mapping[str, CustomerRecommender],
    k: int = 10,
    test_fraction: float = 0.2,
    content: sp.csr_matrix | None = None,
    compare_to: str | None = None,
    extra_pairs: Sequence[tuple[str, str]] = (),
    n_boot: int = 2000,
) -> dict:
    """The temporal protocol for every system (unfitted estimators, fitted here on the training period).

    Returns JSON-ready ``{"protocol", "systems": {name: {metric: summary, "coverage"}}, "paired"}``;
    ``paired`` holds nDCG@k differences of every system against ``compare_to`` (default: the first),
    and of each ``(a, b)`` in ``extra_pairs``.
    """
    train, test, cutoff = temporal_split(interactions, test_fraction)
    queries = make_queries(catalog, train, test)
    if not len(queries.users):
        raise RecommenderError("no customer bought anything new in the test period: nothing to evaluate")
    per_system: dict[str, dict[str, np.ndarray]] = {}
    result: dict = {"protocol": {"kind": "temporal", "test_fraction": test_fraction, "cutoff": cutoff,
                                 "train_interactions": len(train), "test_interactions": len(test),
                                 "train_customers": queries.n_train_users, "queries": len(queries.users),
                                 "k": k},
                    "systems": {}, "paired": {}}
    for name, system in systems.items():
        model = clone(system).fit(catalog, train, content)
        top = top_lists(model, queries.users, k)
        scores = per_customer(top, queries.relevant, k)
        per_system[name] = scores
        entry = {metric: summarise(v, n_boot=n_boot) for metric, v in scores.items()}
        entry["coverage"] = round(catalog_coverage(list(top), len(catalog)), 4)
        result["systems"][name] = entry
    base = compare_to or next(iter(systems))
    key = f"nDCG@{k}"
    pairs = [(name, base) for name in systems if name != base] + list(extra_pairs)
    for a, b in pairs:
        diff = paired_bootstrap_diff(per_system[a][key], per_system[b][key], n_boot=n_boot)
        result["paired"][f"{a} - {b}"] = {m: round(v, 4) if isinstance(v, float) else v for m, v in diff.items()}
    return result


def evaluate_cold_start(
    catalog: Catalog,
    interactions: Interactions,
    systems: Mapping[str, CustomerRecommender],
    k: int = 10,
    test_fraction: float = 0.2,
    cold_fraction: float = 0.1,
    content: sp.csr_matrix | None = None,
    seed: int = 0,
    n_boot: int = 2000,
) -> dict:
    """The cold-start protocol: cold R@k (and P@k over the held-out products) per system."""
    train, test, cutoff = temporal_split(interactions, test_fraction)
    sold = np.flatnonzero(np.isin(catalog.ids, train.frame["item_id"].unique()))
    rng = np.random.default_rng(seed)
    held = np.sort(rng.choice(sold, size=max(1, int(round(cold_fraction * len(sold)))), replace=False))
    held_ids = set(catalog.ids[held])
    reduced = train.subset(~train.frame["item_id"].isin(held_ids).to_numpy())
    queries = make_queries(catalog, train, test, only_items=held)
    known = set(reduced.frame["user_id"])
    keep = np.array([u in known for u in queries.users], dtype=bool)
    users = queries.users[keep]
    relevant = [r for r, kept in zip(queries.relevant, keep, strict=True) if kept]
    if not len(users):
        raise RecommenderError("no customer bought a held-out product in the test period")
    out: dict = {"protocol": {"kind": "cold-start", "cold_fraction": cold_fraction, "held_out_products": len(held),
                              "queries": len(users), "k": k, "seed": seed}, "systems": {}}
    for name, system in systems.items():
        model = clone(system).fit(catalog, reduced, content)
        top = top_lists(model, users, k)
        scores = per_customer(top, relevant, k)
        out["systems"][name] = {f"cold R@{k}": summarise(scores[f"R@{k}"], n_boot=n_boot),
                                f"cold P@{k}": summarise(scores[f"P@{k}"], n_boot=n_boot)}
    return out
