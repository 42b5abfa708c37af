"""Leave-one-out evaluation by a label column: how often are a product's neighbours of its kind?

The label, and every column derived from it, is removed from the metadata features first -
otherwise metadata-only "precision" would just read the answer off the label.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .build import Progress
from .catalog import ATTRIBUTE_COLUMNS, Catalog, split_values
from .errors import RecommenderError
from .ranker import HybridRanker
from .recommender import HybridRecommender

# Columns forming a hierarchy: a finer level determines the coarser one, so it leaks it too.
HIERARCHY = ("category", "sub_category")


def leaking_columns(catalog: Catalog, label: str) -> list[str]:
    """Attribute columns that give the label away: the other levels of the category hierarchy
    (coarser or finer; a shared sub-category name under two parents still leaks its parent), and
    any column derived from the label (each label value maps to one value of the column)."""
    items = catalog.items
    labelled = items[items[label].astype(str).str.strip() != ""]
    out = []
    for col in ATTRIBUTE_COLUMNS:
        if col == label or col not in items.columns:
            continue
        values = labelled[col].astype(str).str.strip()
        if (values == "").all():
            continue
        per_label = values[values != ""].groupby(labelled[label]).nunique()
        coarser = bool((per_label <= 1).all()) and values[values != ""].nunique() > 1
        same_hierarchy = label in HIERARCHY and col in HIERARCHY
        if coarser or same_hierarchy:
            out.append(col)
    return out


def precision_at_k(relevant: np.ndarray, k: int) -> float:
    """Fraction of the first ``k`` results that are relevant (missing results count as misses)."""
    return float(np.sum(relevant[:k])) / k


def leave_one_out(
    catalog: Catalog,
    label: str,
    ks: Sequence[int] = (1, 3, 5),
    weights: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
    backbone: str = "auto",
    cache_dir: Path | str | None = None,
    exclude: Sequence[str] = (),
    progress: Progress | None = None,
) -> dict:
    """Precision@k of image-only (w = 1), metadata-only (w = 0) and hybrid rankings.

    Every product with a label and at least one other product of the same label is a query; it
    is ranked against all other products. Returns a JSON-ready dict.
    """
    if label not in catalog.items.columns:
        raise RecommenderError(f"label column {label!r} is not in the catalog "
                               f"(columns: {', '.join(catalog.items.columns)})")
    excluded = sorted({label, *leaking_columns(catalog, label), *exclude})
    rec = HybridRecommender(backbone=backbone, cache_dir=cache_dir, exclude_fields=excluded).fit(
        catalog, progress=progress)
    labels = [tuple(split_values(v)) for v in catalog.items[label]]
    counts: dict[tuple, int] = {}
    for lab in labels:
        counts[lab] = counts.get(lab, 0) + 1
    queries = [i for i, lab in enumerate(labels) if lab and counts[lab] > 1]
    if not queries:
        raise RecommenderError(f"no product shares its {label!r} value with another: nothing to evaluate")

    img = rec.image_vectors_ @ rec.image_vectors_.T
    meta = (rec.metadata_matrix_ @ rec.metadata_matrix_.T).toarray().astype(np.float32)
    ranker = HybridRanker()
    methods = {"image": 1.0, "metadata": 0.0, **{f"hybrid_w{w:g}": float(w) for w in weights}}
    kmax = max(ks)
    sums = {m: np.zeros(len(ks)) for m in methods}
    label_arr = np.array(labels, dtype=object)
    for i in queries:
        cand = np.ones(len(catalog), dtype=bool)
        cand[i] = False
        img_i = img[i] if rec.has_image_[i] else None
        for m, w in methods.items():
            ranking = ranker.rank(img_i, meta[i], kmax, cand, w)
            rel = np.array([label_arr[p] == labels[i] for p in ranking.positions], dtype=bool)
            sums[m] += [precision_at_k(rel, k) for k in ks]
    n = len(queries)
    return {
        "catalog": str(catalog.source or ""),
        "label": label,
        "excluded_from_metadata": excluded,
        "backbone": rec.backbone_,
        "n_products": len(catalog),
        "n_queries": n,
        "n_skipped_queries": len(catalog) - n,
        "results": {m: {f"P@{k}": round(float(s[j] / n), 4) for j, k in enumerate(ks)} for m, s in sums.items()},
    }
