"""The supervised shop-photo adapter on grocery: fitted and cross-validated on ``train``, reported on ``val``.

Image side of the photo path only (raw query vector against catalog vectors, no colour, no metadata), the
same code path with and without the adapter, so the paired difference is the adapter's alone. The
adapter's two settings are chosen by 5-fold cross-validation on the ``train`` photos; ``val`` is only
scored, once, with the chosen setting.

Run from the repo root: ``python bench/bench_adapter.py [--backbone efficientnet_lite0] [--no-flip] [--semantic 0.5]``
(embeddings cached under --cache, so a second run takes seconds).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import numpy as np  # noqa: E402

from recommender.evaluation.grocery import GROCERY_ROOT, grocery_split_paths, load_grocery  # noqa: E402
from recommender.evaluation.metrics import paired_bootstrap_diff, summarise  # noqa: E402
from recommender.features.adapter import ShopPhotoAdapter, cross_validate, recall_at  # noqa: E402
from recommender.features.embedders import ImageEmbedder  # noqa: E402
from recommender.features.images import open_image  # noqa: E402


def embed(emb: ImageEmbedder, paths: list[Path], cache: Path, query: bool) -> np.ndarray:
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            if list(z["paths"]) == [str(p) for p in paths]:
                return z["vectors"]
    t0 = time.perf_counter()
    # Uploads take the façade's query path (embed_query, i.e. with any query crops).
    vectors = np.stack([emb.embed_query(open_image(p)) for p in paths]) if query else emb.transform(paths)
    print(f"embedded {len(paths)} images in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, vectors=vectors, paths=np.array([str(p) for p in paths]))
    return vectors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--no-flip", action="store_true")
    ap.add_argument("--semantic", type=float, default=0.5)
    ap.add_argument("--crops", type=float, nargs="*", default=[], help="query centre crops")
    ap.add_argument("--grocery", type=Path, default=GROCERY_ROOT)
    ap.add_argument("--cache", type=Path, default=Path(".cache/suite/adapter"))
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    emb = ImageEmbedder(args.backbone, flip_tta=not args.no_flip, semantic=args.semantic,
                        query_crops=tuple(args.crops)).fit()
    tag = emb.identity().folder + ("-crops" + "_".join(map(str, args.crops)) if args.crops else "")
    catalog, _ = load_grocery(args.grocery)
    cat_paths = [catalog.image_path(i) for i in range(len(catalog))]
    C = embed(emb, cat_paths, args.cache / f"{emb.identity().folder}-catalog.npz", query=False)
    train_paths, train_y = grocery_split_paths(args.grocery, "train")
    val_paths, val_y = grocery_split_paths(args.grocery, "val")
    # Labelled shop photos are "catalog-side" data (embedded as the shop would store them).
    X_train = embed(emb, train_paths, args.cache / f"{emb.identity().folder}-train.npz", query=False)
    X_val = embed(emb, val_paths, args.cache / f"{tag}-val.npz", query=True)
    ids = np.asarray(catalog.ids, dtype=object)
    truth = np.array([list(ids).index(p) for p in val_y])

    t0 = time.perf_counter()
    cv = cross_validate(X_train, train_y, C, ids)
    cv_s = time.perf_counter() - t0
    best = cv["best"]
    t0 = time.perf_counter()
    adapter = ShopPhotoAdapter(**best).fit(X_train, train_y, C, ids)
    fit_s = time.perf_counter() - t0
    plain = recall_at(X_val @ C.T, truth)
    adapted = recall_at(adapter.transform_queries(X_val) @ adapter.catalog_vectors_.T, truth)
    # The two levers apart, at the chosen setting of the other (still chosen on train only).
    only_proto = ShopPhotoAdapter(mix=best["mix"], shrinkage=None).fit(X_train, train_y, C, ids)
    only_white = ShopPhotoAdapter(mix=0.0, shrinkage=best["shrinkage"]).fit(X_train, train_y, C, ids)
    parts = {"prototypes only": recall_at(only_proto.transform_queries(X_val) @ only_proto.catalog_vectors_.T, truth),
             "whitening only": recall_at(only_white.transform_queries(X_val) @ only_white.catalog_vectors_.T, truth)}

    print(f"image pipeline: {emb.identity().name} {emb.identity().preprocess}; query crops {args.crops}")
    print(f"train: {len(X_train)} labelled shop photos; val: {len(X_val)} queries; catalog {len(C)} products")
    print(f"cross-validation on train (5 folds, {cv_s:.0f} s): best {best}")
    for g in sorted(cv["grid"], key=lambda g: -g["R@1"])[:6]:
        print(f"  mix {g['mix']:<5} shrinkage {g['shrinkage']!s:<5} CV R@1 {g['R@1']:.3f} R@5 {g['R@5']:.3f}")
    out = {"cv": {k: v for k, v in cv.items() if k != "per_photo"}, "fit_seconds": round(fit_s, 2), "val": {}}
    for name, r in (("plain", plain), ("adapter", adapted), *parts.items()):
        s1, s5 = summarise(r["R@1"]), summarise(r["R@5"])
        line = f"val {name:<16} R@1 {s1['mean']:.3f} {s1['ci95']}  R@5 {s5['mean']:.3f} {s5['ci95']}  n={s1['n']}"
        if name != "plain":
            d1 = paired_bootstrap_diff(r["R@1"], plain["R@1"])
            d5 = paired_bootstrap_diff(r["R@5"], plain["R@5"])
            line += (f"  vs plain: R@1 {d1['mean_diff']:+.3f} [{d1['lo']:+.3f}, {d1['hi']:+.3f}]"
                     f" R@5 {d5['mean_diff']:+.3f} [{d5['lo']:+.3f}, {d5['hi']:+.3f}]")
        print(line)
        out["val"][name] = {"R@1": s1, "R@5": s5}
    if args.out:
        args.out.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
