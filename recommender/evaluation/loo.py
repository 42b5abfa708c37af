"""Leave-one-out by a label: every labelled product queries the rest of the catalog; results with the same
label are relevant. The label, and every column derived from it, is removed from the metadata features
first - otherwise metadata-only "precision" would read the answer off the label. Blockwise: at most
``EVAL_BLOCK`` query rows of similarities at a time, never N x N.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from recommender.catalog.loader import ATTRIBUTE_COLUMNS, Catalog, split_values
from recommender.errors import RecommenderError
from recommender.evaluation.metrics import catalog_coverage, intra_list_diversity, precision_at_k, summarise
from recommender.evaluation.per_query import comparison, per_query_lists, per_query_metrics, summary
from recommender.ranking.mmr import mmr_rerank
from recommender.recommender import HybridRecommender
from recommender.scoring import dense_scores
from recommender.store.build import Progress

# Columns forming a hierarchy: a finer level determines the coarser one, so it leaks it too.
HIERARCHY = ("category", "sub_category")
SWEEP_WEIGHTS = tuple(round(w, 1) for w in np.linspace(0, 1, 11))
MMR_LAMBDAS = (1.0, 0.9, 0.8, 0.7, 0.5, 0.3)
EVAL_BLOCK = 256  # query rows of similarities held at once: memory is EVAL_BLOCK x N, never N x N
MMR_POOL = 200  # the MMR curve re-ranks each query's best MMR_POOL by the hybrid score


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


def labels_of(catalog: Catalog, label: str) -> list[tuple[str, ...]]:
    return [tuple(split_values(v)) for v in catalog.items[label]]


def leave_one_out(
    catalog: Catalog,
    label: str,
    ks: Sequence[int] = (1, 3, 5),
    weights: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
    backbone: str = "auto",
    cache_dir: Path | str | None = None,
    exclude: Sequence[str] = (),
    progress: Progress | None = None,
    mmr_lambdas: Sequence[float] = (),
    recommender: HybridRecommender | None = None,
    per_query: bool = False,
    max_queries: int | None = None,
) -> dict:
    """Leave-one-out evaluation of image-only (w = 1), metadata-only (w = 0) and hybrid rankings.

    Every product with a label and at least one other product of the same label is a query,
    ranked against all other products; with ``max_queries``, a seeded random sample of that many of them
    (each still ranked against every product): a query costs ~14 rankings of the whole catalog, so at 100k
    products every product as a query would take over an hour. Returns a JSON-ready dict: ``results`` (mean of
    each metric per method), ``methods`` (mean, 95% CI and n per metric), ``sweep`` (the weights, for plots),
    ``comparisons`` (paired bootstrap of the best hybrid against each side alone), ``per_class``,
    ``mmr`` (precision/diversity trade-off) and ``examples`` (a few queries with their results).
    """
    if max_queries is not None and max_queries < 1:
        raise RecommenderError(f"max_queries must be at least 1, got {max_queries}")
    if label not in catalog.items.columns:
        raise RecommenderError(f"label column {label!r} is not in the catalog "
                               f"(columns: {', '.join(catalog.items.columns)})")
    excluded = sorted({label, *leaking_columns(catalog, label), *exclude})
    if recommender is None:
        recommender = HybridRecommender(backbone=backbone, cache_dir=cache_dir, exclude_fields=excluded)
    else:
        recommender.set_params(exclude_fields=excluded)
    rec = recommender.fit(catalog, progress=progress)
    labels = labels_of(catalog, label)
    counts = pd.Series(labels).value_counts()
    queries = [i for i, lab in enumerate(labels) if lab and counts[lab] > 1]
    if not queries:
        raise RecommenderError(f"no product shares its {label!r} value with another: nothing to evaluate")
    eligible = len(queries)
    if max_queries is not None and eligible > max_queries:
        queries = sorted(np.random.default_rng(0).choice(queries, size=max_queries, replace=False).tolist())

    methods = {"image": 1.0, "metadata": 0.0, "photo": 1.0, **{f"hybrid_w{w:g}": float(w) for w in weights}}
    kmax = max(ks)
    # Multi-valued labels compare as their joined text: "a|b" is relevant to "a|b" only.
    label_arr = np.array(["|".join(lab) for lab in labels], dtype=object)
    n_rel = [int(counts[labels[i]]) - 1 for i in queries]
    ranked: dict[str, list[np.ndarray]] = {m: [] for m in methods}
    pools: list[np.ndarray] = []  # the best hybrid's top MMR_POOL, for the MMR curve
    mmr_weight = methods[max((m for m in methods if m.startswith("hybrid_")), default="image",
                             key=lambda m: -abs(methods[m] - rec.weight))] if mmr_lambdas else None
    # Blockwise: at most EVAL_BLOCK query rows of similarities at a time, never N x N.
    for rows, img_b, photo_b, meta_b in _similarity_blocks(rec, np.asarray(queries)):
        for i, img_i, photo_i, meta_i in zip(rows, img_b, photo_b, meta_b, strict=True):
            cand = np.ones(len(catalog), dtype=bool)
            cand[i] = False
            for m, w in methods.items():
                side = "photo" if m == "photo" else "item"
                img_side = (photo_i if m == "photo" else img_i) if rec.has_image_[i] else None
                r = _rank_query(rec, i, img_side, meta_i, kmax, cand, w, side == "photo")
                ranked[m].append(r.positions)
            if mmr_lambdas:
                img_side = img_i if rec.has_image_[i] else None
                pools.append(_rank_query(rec, i, img_side, meta_i, MMR_POOL, cand, mmr_weight, False))
    vectors = rec.image_vectors_

    def diversity(p: np.ndarray) -> float:
        v = vectors[np.asarray(p, dtype=np.int64)].astype(np.float32)
        return intra_list_diversity(np.arange(len(v)), v @ v.T)

    report_methods = {}
    per_query_all = {}
    for m in methods:
        rel = [label_arr[p] == label_arr[i] for p, i in zip(ranked[m], queries, strict=True)]
        pq = per_query_metrics(ranked[m], rel, n_rel, ks)
        pq[f"diversity@{kmax}"] = np.array([diversity(p) for p in ranked[m]])
        per_query_all[m] = pq
        report_methods[m] = summary(pq, {f"coverage@{kmax}": round(catalog_coverage(ranked[m], len(catalog)), 4)})

    hybrids = [m for m in methods if m.startswith("hybrid_")]
    main_metric = "P@5" if 5 in ks else f"P@{kmax}"
    best = max(hybrids, key=lambda m: per_query_all[m][main_metric].mean()) if hybrids else "image"
    comparisons = [comparison(best, other, metric, per_query_all)
                   for other in ("image", "metadata") for metric in (f"P@{min(ks)}", main_metric)]

    per_class = {}
    for m in ("image", "metadata", "photo", best):
        pq = per_query_all[m][main_metric]
        frame = pd.DataFrame({"label": ["|".join(labels[i]) for i in queries], "v": pq})
        per_class[m] = {k: round(float(v), 4) for k, v in frame.groupby("label")["v"].mean().items()}

    mmr_curve = []
    if mmr_lambdas:
        k_main = int(main_metric.removeprefix("P@"))
        for lam in mmr_lambdas:
            p, div = [], []
            for i, pool in zip(queries, pools, strict=True):
                picked = pool.positions[mmr_rerank(pool.final, k=k_main, lam=lam,
                                                   embeddings=vectors[pool.positions].astype(np.float32))]
                p.append(precision_at_k(label_arr[picked] == label_arr[i], k_main))
                div.append(diversity(picked))
            mmr_curve.append({"lambda": lam, "weight": mmr_weight, main_metric: summarise(p),
                              f"diversity@{k_main}": summarise(div)})

    examples = []
    rng = np.random.default_rng(0)
    for j in sorted(rng.choice(len(queries), size=min(6, len(queries)), replace=False)):
        i = queries[j]
        examples.append({"query": str(catalog.ids[i]), "label": "|".join(labels[i]),
                         "results": [{"id": str(catalog.ids[p]), "relevant": bool(label_arr[p] == label_arr[i])}
                                     for p in ranked[best][j][:5]]})
    return {
        "protocol": "leave-one-out",
        "catalog": str(catalog.source or ""),
        "label": label,
        "excluded_from_metadata": excluded,
        "backbone": rec.backbone_,
        "image_pipeline": rec.image_pipeline_description(),
        "features": rec.features_note_,
        "n_products": len(catalog),
        "n_queries": len(queries),
        "n_skipped_queries": len(catalog) - eligible,
        "n_sampled_from": eligible,
        "results": {m: {k: v["mean"] for k, v in s.items() if isinstance(v, dict)} for m, s in report_methods.items()},
        "methods": report_methods,
        "sweep": [{"weight": w, **{k: v for k, v in report_methods[m].items()}} for m, w in methods.items()
                  if m.startswith("hybrid_")],
        "best": {"method": best, "weight": methods[best], "by": main_metric},
        "comparisons": comparisons,
        "per_class": per_class,
        "mmr": mmr_curve,
        "examples": examples,
        **({"per_query": per_query_lists(per_query_all), "query_ids": [str(catalog.ids[i]) for i in queries]}
           if per_query else {}),
    }


def _rank_query(rec: HybridRecommender, i: int, img: np.ndarray | None, meta: np.ndarray, k: int, cand: np.ndarray,
                w: float, photo: bool):
    """Catalog row ``i`` as a query, from its similarity rows: ranked by the recommender's own calibrated scoring
    and, when the recommender expands such queries (``expands``: ``qe_k``), as ``recommend`` does: the query
    plus the best ``qe_k`` of this first ranking, scored again against every row; at the recommender's own weight
    (the default call) that weight is adapted to the query as ``recommend`` adapts it."""
    c = rec.default_colour_weight(photo=photo)
    ref = rec.image_reference(c)
    if rec.expands(photo):
        if w == rec.weight:  # recommend(item=...) without a weight: the default, adapted (adaptive_weight)
            rows = np.flatnonzero(cand)
            w = rec.query_weight(w, c, rec.references_["metadata"],
                                 (rows, None if img is None else img[rows], meta[rows]))
        first = rec.ranker_.rank(img, meta, rec.qe_k_, cand, w, image_reference=ref).positions
        q_img, q_meta = rec.expanded_query(None if img is None else rec.image_vectors_[i], rec.metadata_matrix_[i],
                                           first)
        if img is not None:
            img = mixed_colour(rec, i, dense_scores(rec.image_vectors_, q_img), c)
        meta = np.asarray((rec.metadata_matrix_ @ q_meta.T).todense(), dtype=np.float32).ravel()
    return rec.ranker_.rank(img, meta, k, cand, w, image_reference=ref)


def mixed_colour(rec: HybridRecommender, i: int, cnn: np.ndarray, c: float) -> np.ndarray:
    """CNN scores of one query against every row with ``c`` of colour mixed in, as ``image_similarity_rows``."""
    if not c:
        return cnn
    colour = rec.colour_vectors_  # bfloat16 when mapped beside an ANN index: scored blockwise in float32
    return (1 - c) * cnn + c * (colour[i] @ colour.T if colour.dtype == np.float32 else dense_scores(colour, colour[i]))


def _similarity_blocks(rec: HybridRecommender, rows: np.ndarray, block: int = EVAL_BLOCK):
    """``(rows, image, photo, metadata)`` similarity blocks of ``block`` query rows against the catalog.

    With a label projection (opt-in, small catalogs) the out-of-fold similarities need every fold's
    fit, so they are computed once in full; otherwise nothing N x N is ever held.
    """
    full = None
    if rec.label_projection_ is not None:
        full = (rec.image_similarity_matrix(out_of_fold=True),
                rec.image_similarity_matrix(photo=True, out_of_fold=True))
    for s in range(0, len(rows), block):
        r = rows[s:s + block]
        if full is None:
            img = rec.image_similarity_rows(r)
            photo = rec.image_similarity_rows(r, photo=True)
        else:
            img, photo = full[0][r], full[1][r]
        meta = (rec.metadata_matrix_[r] @ rec.metadata_matrix_.T).toarray().astype(np.float32)
        yield r, img, photo, meta
