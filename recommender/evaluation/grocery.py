"""Evaluation datasets that live outside the repository: the Grocery Store Dataset, Fashion-MNIST.

**Grocery** (``../shared/data/grocery``, MIT, Klasson et al., WACV 2019; its images must never be
committed): 81 products with one studio ("iconic") photo each form the catalog; shoppers' phone
photos taken in real shops are the queries, split ``train`` (2,640) / ``val`` (296) as the authors
split them. Photo->product uploads each ``val`` photo through ``recommend(image=...)``: the right
product should come first. ``train`` is only ever used to *learn* (the opt-in adapter); nothing is
tuned on ``val`` when ``val`` is reported.

**Fashion-MNIST** as a catalog: the committed 1k slice (or the full 10k test set from Debian's
package) rendered as PNG product images, so the library's own pipeline (decode, pad, resize, CNN,
DBA...) is what gets measured, image-only leave-one-out by class.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from recommender.catalog.loader import Catalog, load_catalog
from recommender.errors import RecommenderError

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
GROCERY_ROOT = SHARED_DATA / "grocery"
GROCERY_SPLITS = ("train", "val")


class DatasetUnavailableError(RecommenderError):
    """An evaluation dataset is not on this machine (the suite skips it and says why)."""


def grocery_available(root: Path | str = GROCERY_ROOT) -> str | None:
    """``None`` when the grocery data is usable, else the reason it is not."""
    root = Path(root)
    for name in ("catalog.csv", "queries.csv"):
        if not (root / name).is_file():
            return f"grocery data not found: {root / name} is missing (see ../shared/data/README.md)"
    return None


def load_grocery(root: Path | str = GROCERY_ROOT) -> tuple[Catalog, pd.DataFrame]:
    """The 81-product catalog and the ``image,item_id,split`` query table (paths relative to ``root``)."""
    reason = grocery_available(root)
    if reason:
        raise DatasetUnavailableError(reason)
    root = Path(root)
    catalog = load_catalog(root / "catalog.csv")
    queries = pd.read_csv(root / "queries.csv", dtype=str, keep_default_na=False)
    missing = {"image", "item_id", "split"} - set(queries.columns)
    if missing:
        raise RecommenderError(f"{root / 'queries.csv'}: missing column(s) {', '.join(sorted(missing))}")
    unknown = sorted(set(queries["item_id"]) - set(catalog.ids))
    if unknown:
        raise RecommenderError(f"{root / 'queries.csv'}: queries of unknown product(s): {', '.join(unknown[:10])}")
    return catalog, queries


def grocery_views(root: Path | str, split: str, out_csv: Path) -> Path:
    """Write the ``id,image`` views file of one split (what ``photo_to_product`` reads); returns it.

    Image paths are made absolute so the file may live anywhere (e.g. a temp or cache folder).
    """
    if split not in GROCERY_SPLITS:
        raise ValueError(f"grocery split must be one of {GROCERY_SPLITS}, got {split!r}")
    _, queries = load_grocery(root)
    rows = queries[queries["split"] == split]
    if rows.empty:
        raise RecommenderError(f"no grocery queries in split {split!r}")
    root = Path(root).resolve()
    views = pd.DataFrame({"id": rows["item_id"].to_numpy(),
                          "image": [str(root / p) for p in rows["image"]]})
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    views.to_csv(out_csv, index=False)
    return out_csv


def grocery_split_paths(root: Path | str, split: str) -> tuple[list[Path], np.ndarray]:
    """``(image paths, product ids)`` of one split, e.g. ``train`` to fit the adapter on."""
    _, queries = load_grocery(root)
    rows = queries[queries["split"] == split]
    return [Path(root) / p for p in rows["image"]], rows["item_id"].to_numpy(dtype=object)


def fashion_catalog(folder: Path | str, full: bool = False, limit: int | None = None) -> Path:
    """Render Fashion-MNIST (the committed slice, or with ``full`` the 10k test set) as a catalog of
    PNGs under ``folder``: ``id,name,category,image``; returns the catalog CSV (reused when present).

    Images are stored dark-on-white, as ``fashion_mnist.to_rgb_batch`` renders them for the
    benchmark (product-photo convention); the library pads and resizes them like any catalog image.
    """
    from PIL import Image

    from recommender.evaluation.fashion_mnist import CLASS_NAMES, load_fashion_mnist, load_slice

    folder = Path(folder)
    csv = folder / "catalog.csv"
    if full:
        images, labels = load_fashion_mnist("test")
        indices = np.arange(len(images))
    else:
        images, labels, indices = load_slice()
    if limit is not None:
        # Every class equally: the first `limit // 10` of each, in slice order (deterministic).
        keep = np.concatenate([np.flatnonzero(labels == c)[: max(1, limit // len(CLASS_NAMES))]
                               for c in range(len(CLASS_NAMES))])
        keep.sort()
        images, labels, indices = images[keep], labels[keep], indices[keep]
    if csv.is_file():
        existing = pd.read_csv(csv, dtype=str, keep_default_na=False)
        if len(existing) == len(images) and (existing["id"] == [f"fmnist-{i}" for i in indices]).all():
            return csv
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for img, label, idx in zip(images, labels, indices, strict=True):
        rel = f"images/{int(idx):05d}.png"
        Image.fromarray(255 - img, "L").save(folder / rel)
        rows.append({"id": f"fmnist-{idx}", "name": f"Fashion-MNIST test {idx}", "description": "",
                     "category": CLASS_NAMES[int(label)], "sub_category": "", "brand": "", "colour": "",
                     "price": "", "image": rel})
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv
