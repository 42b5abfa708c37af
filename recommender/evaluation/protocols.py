"""Offline evaluation: how often are a product's neighbours relevant, with confidence intervals.

Protocols
- **leave-one-out by a label**: every labelled product queries the rest of the catalog; results with
  the same label are relevant. The label, and every column derived from it, is removed from the
  metadata features first - otherwise metadata-only "precision" would read the answer off the label.
- **multi-view**: every image of a product with several shots (``views.csv``) queries a gallery of all
  images; the product's other shots are relevant. Image-only: the metadata of two shots of one
  product is identical, so a metadata side would simply be told the answer. Scored as an uploaded
  photo (the case it models: "find this product from my photo of it") and as a catalog item.
- **photo-to-product**: every extra shot, which is not in the catalog, is uploaded as a photo query
  through ``recommend(image=...)``; its own product is the one relevant result.

Every figure is a mean over queries with a percentile-bootstrap 95% interval; two settings are
called different only when the paired-bootstrap interval of their difference excludes zero.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from recommender.catalog.loader import ATTRIBUTE_COLUMNS, Catalog, catalog_from_frame, split_values
from recommender.errors import RecommenderError
from recommender.evaluation.metrics import (
    average_precision,
    catalog_coverage,
    hit_rate_at_k,
    intra_list_diversity,
    ndcg_at_k,
    paired_bootstrap_diff,
    precision_at_k,
    recall_at_k,
    summarise,
)
from recommender.ranking.mmr import mmr_rerank
from recommender.recommender import HybridRecommender
from recommender.scoring import dense_scores
from recommender.store.build import Progress

# Columns forming a hierarchy: a finer level determines the coarser one, so it leaks it too.
HIERARCHY = ("category", "sub_category")
DEFAULT_KS = (1, 3, 5, 10)
SWEEP_WEIGHTS = tuple(round(w, 1) for w in np.linspace(0, 1, 11))
MMR_LAMBDAS = (1.0, 0.9, 0.8, 0.7, 0.5, 0.3)
COLOUR_SWEEP = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
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


def _summary(per_query: dict[str, np.ndarray], extra: dict[str, object] | None = None) -> dict:
    out = {m: summarise(v) for m, v in per_query.items() if not m.startswith("_")}
    out.update(extra or {})
    return out


def _comparison(a: str, b: str, metric: str, per_query: Mapping[str, Mapping[str, np.ndarray]]) -> dict:
    """Paired bootstrap of method ``a`` minus method ``b`` on one metric, JSON-ready."""
    d = paired_bootstrap_diff(per_query[a][metric], per_query[b][metric])
    return {"a": a, "b": b, "metric": metric, **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in d.items()}}


def _per_query_lists(per_method: Mapping[str, Mapping[str, np.ndarray]]) -> dict:
    """Per-query values, JSON-ready, for paired comparisons across runs (the benchmark suite)."""
    return {m: {k: [round(float(x), 4) for x in v] for k, v in pq.items()} for m, pq in per_method.items()}


def _main_recall(ks: Sequence[int]) -> str:
    # R@5 when measured: the figure the photo colour default was chosen by.
    return "R@5" if 5 in ks else f"R@{max(ks)}"


def read_views(catalog: Catalog, views_csv: Path | str) -> pd.DataFrame:
    """The ``id,image`` table of extra shots; every id must be a catalog product."""
    views = pd.read_csv(views_csv, dtype=str, keep_default_na=False)
    missing = sorted(set(views["id"]) - set(catalog.ids))
    if missing:
        raise RecommenderError(f"{views_csv}: views of unknown product(s): {', '.join(missing[:10])}")
    return views


def _labels(catalog: Catalog, label: str) -> list[tuple[str, ...]]:
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
    labels = _labels(catalog, label)
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
        report_methods[m] = _summary(pq, {f"coverage@{kmax}": round(catalog_coverage(ranked[m], len(catalog)), 4)})

    hybrids = [m for m in methods if m.startswith("hybrid_")]
    main_metric = "P@5" if 5 in ks else f"P@{kmax}"
    best = max(hybrids, key=lambda m: per_query_all[m][main_metric].mean()) if hybrids else "image"
    comparisons = [_comparison(best, other, metric, per_query_all)
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
        **({"per_query": _per_query_lists(per_query_all), "query_ids": [str(catalog.ids[i]) for i in queries]}
           if per_query else {}),
    }


def _rank_query(rec: HybridRecommender, i: int, img: np.ndarray | None, meta: np.ndarray, k: int, cand: np.ndarray,
                w: float, photo: bool):
    """Catalog row ``i`` as a query, from its similarity rows: ranked by the recommender's own calibrated scoring
    and, when the recommender expands such queries (``expands``: ``qe_k``), as ``recommend`` does: the query
    plus the best ``qe_k`` of this first ranking, scored again against every row."""
    c = rec.default_colour_weight(photo=photo)
    ref = rec.image_reference(c)
    if rec.expands(photo):
        first = rec.ranker_.rank(img, meta, rec.qe_k_, cand, w, image_reference=ref).positions
        q_img, q_meta = rec.expanded_query(None if img is None else rec.image_vectors_[i], rec.metadata_matrix_[i],
                                           first)
        if img is not None:
            img = _mixed_colour(rec, i, dense_scores(rec.image_vectors_, q_img), c)
        meta = np.asarray((rec.metadata_matrix_ @ q_meta.T).todense(), dtype=np.float32).ravel()
    return rec.ranker_.rank(img, meta, k, cand, w, image_reference=ref)


def _mixed_colour(rec: HybridRecommender, i: int, cnn: np.ndarray, c: float) -> np.ndarray:
    """CNN scores of one query against every row with ``c`` of colour mixed in, as ``image_similarity_rows``."""
    if not c:
        return cnn
    colour = rec.colour_vectors_  # bfloat16 when mapped beside an ANN index: scored blockwise in float32
    return (1 - c) * cnn + c * (colour[i] @ colour.T if colour.dtype == np.float32 else dense_scores(colour, colour[i]))


def _expanded_similarity(rec: HybridRecommender, sim: np.ndarray, queries: Sequence[int], photo: bool) -> np.ndarray:
    """Image-only protocols (multi-view): each query row of ``sim`` re-scored for the query expanded by its own
    best ``qe_k`` other rows, as ``recommend(weight=1)`` would (image side only: w = 1)."""
    if not rec.expands(photo):
        return sim
    c = rec.default_colour_weight(photo=photo)
    sim = sim.copy()
    for i in queries:
        s = np.where(np.arange(len(sim)) == i, -np.inf, sim[i])
        top = np.lexsort((np.arange(len(s)), -s))[:rec.qe_k_]
        q_img, _ = rec.expanded_query(rec.image_vectors_[i], None, top)
        sim[i] = _mixed_colour(rec, i, dense_scores(rec.image_vectors_, q_img), c)
    return sim


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


def _view_rows(catalog: Catalog, views: pd.DataFrame) -> pd.DataFrame:
    """Extra shots as catalog rows (the product's metadata, the shot's image, id ``<id>#2``...)."""
    extra = catalog.items.set_index("id").loc[views["id"]].reset_index()
    extra["image"] = views["image"].to_numpy()
    extra["id"] = [f"{pid}#{n}" for pid, n in zip(views["id"], views.groupby("id").cumcount() + 2, strict=True)]
    return extra


def _as_catalog(catalog: Catalog, items: pd.DataFrame) -> Catalog:
    """``items`` validated as a catalog with ``catalog``'s folder and allowed image roots, so a shot's
    path is confined exactly as a product's is."""
    return catalog_from_frame(items, catalog.root, catalog.source, catalog.image_roots)


def gallery_with_views(catalog: Catalog, views_csv: Path | str) -> tuple[Catalog, np.ndarray]:
    """All images of all products as one catalog (extra shots get ids ``<id>#2``...), plus the
    owning product id of each row."""
    views = read_views(catalog, views_csv)
    gallery = _as_catalog(catalog, pd.concat([catalog.items, _view_rows(catalog, views)], ignore_index=True))
    owner = np.array(list(catalog.ids) + list(views["id"]), dtype=object)
    return gallery, owner


def multi_view(
    catalog: Catalog,
    views_csv: Path | str,
    ks: Sequence[int] = (1, 3, 5),
    backbone: str = "auto",
    cache_dir: Path | str | None = None,
    progress: Progress | None = None,
    recommender: HybridRecommender | None = None,
    colour_sweep: Sequence[float] = COLOUR_SWEEP,
    per_query: bool = False,
) -> dict:
    """Image-only retrieval of a product's other shots, over a gallery of every image.

    Two query paths: ``photo`` (the shot uploaded as a photo: raw vectors, the photo colour share -
    the path this protocol models and the headline figure) and ``item`` (the shot as a catalog item:
    DBA-smoothed vectors, the item colour share). ``colour_sweep`` re-scores the photo path at other
    colour shares; with leave-one-out's ``photo`` method it chose ``photo_colour_weight``.
    """
    gallery, owner = gallery_with_views(catalog, views_csv)
    # The queries are the catalog's own extra shots: the shop-photo adapter must not learn from them.
    rec = (recommender or HybridRecommender(backbone=backbone, cache_dir=cache_dir)).fit(gallery, progress=progress,
                                                                                         photos=False)
    counts = pd.Series(owner).value_counts()
    queries = [i for i in range(len(owner)) if counts[owner[i]] > 1]
    if not queries:
        raise RecommenderError(f"{views_csv}: no product has more than one image")
    kmax = max(ks)
    n_rel = [int(counts[owner[i]]) - 1 for i in queries]

    def score(sim: np.ndarray) -> tuple[dict[str, np.ndarray], list[np.ndarray], list[np.ndarray]]:
        ranked, relevant = [], []
        for i in queries:
            s = np.where(np.arange(len(owner)) == i, -np.inf, sim[i])
            top = np.argsort(-s, kind="stable")[:kmax]
            ranked.append(top)
            relevant.append(owner[top] == owner[i])
        return per_query_metrics(ranked, relevant, n_rel, ks), ranked, relevant

    per_method, examples_of = {}, {}
    for name, photo in (("photo", True), ("item", False)):
        sim = _expanded_similarity(rec, rec.image_similarity_matrix(photo=photo, out_of_fold=True), queries, photo)
        pq, ranked, relevant = score(sim)
        per_method[name] = pq
        examples_of[name] = (ranked, relevant)
    sweep = []
    for c in colour_sweep:
        pq, _, _ = score(rec.image_similarity_matrix(colour_weight=float(c), photo=True, out_of_fold=True))
        sweep.append({"colour_weight": float(c), **_summary(pq)})
    ranked, relevant = examples_of["photo"]
    return {
        "protocol": "multi-view",
        "views": str(views_csv),
        "backbone": rec.backbone_,
        "image_pipeline": rec.image_pipeline_description(),
        "features": rec.features_note_,
        "colour_weight": {"photo": rec.default_colour_weight(photo=True), "item": rec.default_colour_weight()},
        "n_images": len(owner),
        "n_products_with_views": int((counts > 1).sum()),
        "n_queries": len(queries),
        "results": {m: {k: round(float(v.mean()), 4) for k, v in pq.items()} for m, pq in per_method.items()},
        "methods": {m: _summary(pq) for m, pq in per_method.items()},
        "comparisons": [_comparison("photo", "item", _main_recall(ks), per_method)],
        "colour_sweep": sweep,
        "examples": [{"query": str(gallery.ids[i]),
                      "results": [{"id": str(gallery.ids[p]), "relevant": bool(r)} for p, r in zip(t[:5], rel[:5],
                                                                                                   strict=True)]}
                     for i, t, rel in list(zip(queries, ranked, relevant, strict=True))[:6]],
        **({"per_query": _per_query_lists(per_method)} if per_query else {}),
    }


def photo_to_product(
    catalog: Catalog,
    views_csv: Path | str,
    ks: Sequence[int] = (1, 3, 5),
    backbone: str = "auto",
    cache_dir: Path | str | None = None,
    progress: Progress | None = None,
    recommender: HybridRecommender | None = None,
    per_query: bool = False,
    photos: Path | str | bool = False,
) -> dict:
    """Each extra shot (``views.csv``; not in the catalog) uploaded as a photo: is its product found?

    End to end through ``recommend(image=...)``, the app's upload path: ``default`` (the recommender's
    settings, metadata inferred from the closest images), ``image`` (w = 1) and ``colour0`` (default
    with no colour share) - the last one shows what ``photo_colour_weight`` buys. One relevant
    product per query, so R@k is the hit rate and MAP the mean reciprocal rank (within the top k).
    ``photos``: labelled shop photos the adapter may learn from (an ``id,image`` CSV of *other* photos,
    e.g. grocery ``train``); never the queries, so by default none.
    """
    views = read_views(catalog, views_csv)
    if views.empty:
        raise RecommenderError(f"{views_csv}: no extra shots to upload")
    rec = (recommender or HybridRecommender(backbone=backbone, cache_dir=cache_dir)).fit(catalog, progress=progress,
                                                                                         photos=photos)
    kmax = max(ks)
    variants = {"default": {}, "image": {"weight": 1.0}, "colour0": {"colour_weight": 0.0}}
    ranked: dict[str, list[np.ndarray]] = {m: [] for m in variants}
    relevant: dict[str, list[np.ndarray]] = {m: [] for m in variants}
    shots = _as_catalog(catalog, _view_rows(catalog, views))  # paths confined as the gallery's are
    for j, pid in enumerate(views["id"]):
        path = shots.image_path(j)
        for m, kw in variants.items():
            res = rec.recommend(image=path, k=kmax, **kw)
            ranked[m].append(np.array([r.position for r in res.items]))
            relevant[m].append(np.array(res.ids, dtype=object) == pid)
    per_method = {m: per_query_metrics(ranked[m], relevant[m], [1] * len(views), ks) for m in variants}
    comparisons = [_comparison("default", "colour0", metric, per_method)
                   for metric in dict.fromkeys((f"R@{min(ks)}", _main_recall(ks)))]
    return {
        "protocol": "photo-to-product",
        "views": str(views_csv),
        "backbone": rec.backbone_,
        "image_pipeline": rec.image_pipeline_description(),
        "features": rec.features_note_,
        "adapter": rec.adapter_note_,
        "weight": rec.weight,
        "n_products": len(catalog),
        "n_queries": len(views),
        "results": {m: {k: round(float(v.mean()), 4) for k, v in pq.items()} for m, pq in per_method.items()},
        "methods": {m: _summary(pq) for m, pq in per_method.items()},
        "comparisons": comparisons,
        "examples": [{"query": str(image), "product": str(pid),
                      "results": [{"id": str(catalog.ids[p]), "relevant": bool(r)}
                                  for p, r in zip(t[:5], rel[:5], strict=True)]}
                     for pid, image, t, rel in list(zip(views["id"], views["image"], ranked["default"],
                                                        relevant["default"], strict=True))[:6]],
        **({"per_query": _per_query_lists(per_method)} if per_query else {}),
    }
