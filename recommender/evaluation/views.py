"""Protocols on a product's other shots (``views.csv``: ``id,image``).

- **multi-view**: every image of a product with several shots queries a gallery of all images; the
  product's other shots are relevant. Image-only: the metadata of two shots of one product is identical,
  so a metadata side would simply be told the answer. Scored as an uploaded photo (the case it models:
  "find this product from my photo of it") and as a catalog item.
- **photo-to-product**: every extra shot, which is not in the catalog, is uploaded as a photo query
  through ``recommend(image=...)``; its own product is the one relevant result.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from recommender.catalog.loader import Catalog, catalog_from_frame
from recommender.errors import RecommenderError
from recommender.evaluation.loo import mixed_colour
from recommender.evaluation.per_query import comparison, main_recall, per_query_lists, per_query_metrics, summary
from recommender.recommender import HybridRecommender
from recommender.scoring import dense_scores
from recommender.store.build import Progress

COLOUR_SWEEP = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)


def read_views(catalog: Catalog, views_csv: Path | str) -> pd.DataFrame:
    """The ``id,image`` table of extra shots; every id must be a catalog product."""
    views = pd.read_csv(views_csv, dtype=str, keep_default_na=False)
    missing = sorted(set(views["id"]) - set(catalog.ids))
    if missing:
        raise RecommenderError(f"{views_csv}: views of unknown product(s): {', '.join(missing[:10])}")
    return views


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
        sim[i] = mixed_colour(rec, i, dense_scores(rec.image_vectors_, q_img), c)
    return sim


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
        sweep.append({"colour_weight": float(c), **summary(pq)})
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
        "methods": {m: summary(pq) for m, pq in per_method.items()},
        "comparisons": [comparison("photo", "item", main_recall(ks), per_method)],
        "colour_sweep": sweep,
        "examples": [{"query": str(gallery.ids[i]),
                      "results": [{"id": str(gallery.ids[p]), "relevant": bool(r)} for p, r in zip(t[:5], rel[:5],
                                                                                                   strict=True)]}
                     for i, t, rel in list(zip(queries, ranked, relevant, strict=True))[:6]],
        **({"per_query": per_query_lists(per_method)} if per_query else {}),
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
    comparisons = [comparison("default", "colour0", metric, per_method)
                   for metric in dict.fromkeys((f"R@{min(ks)}", main_recall(ks)))]
    return {
        "protocol": "photo-to-product",
        "views": str(views_csv),
        "backbone": rec.backbone_,
        "image_pipeline": rec.image_pipeline_description(),
        "features": rec.features_note_,
        "adapter": rec.adapter_note_,
        "weight": rec.default_weight(photo=True),
        "n_products": len(catalog),
        "n_queries": len(views),
        "results": {m: {k: round(float(v.mean()), 4) for k, v in pq.items()} for m, pq in per_method.items()},
        "methods": {m: summary(pq) for m, pq in per_method.items()},
        "comparisons": comparisons,
        "examples": [{"query": str(image), "product": str(pid),
                      "results": [{"id": str(catalog.ids[p]), "relevant": bool(r)}
                                  for p, r in zip(t[:5], rel[:5], strict=True)]}
                     for pid, image, t, rel in list(zip(views["id"], views["image"], ranked["default"],
                                                        relevant["default"], strict=True))[:6]],
        **({"per_query": per_query_lists(per_method)} if per_query else {}),
    }
