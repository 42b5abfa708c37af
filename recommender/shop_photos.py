"""The façade's shop-photo adapter step: learn from the catalog's own labelled photos, when they help.

A catalog may declare extra photos of its products: an ``id,image`` table (``views.csv`` beside the
catalog file, the same table the multi-view and photo-to-product protocols read, or one given to
``fit(photos=...)``). Those are labelled shop photos; :class:`~recommender.features.adapter.ShopPhotoAdapter`
learns from them how a product looks in a photo compared with its catalog image.

``adapter="auto"`` (the default) fits it only when

1. at least :data:`MIN_PRODUCTS` products have at least :data:`MIN_PHOTOS` labelled photos each (so a
   5-fold cross-validation has something to hold out: the demo's 15 extra shots of 15 products do not
   qualify, the grocery ``train`` split - 2,640 photos of 81 products - does), and
2. its own out-of-fold hit@1 on those photos beats the plain pipeline's (same photos, same catalog
   vectors, no adapter) by a paired bootstrap interval that excludes 0.

Otherwise it stays off and ``adapter_note_`` says why. ``"on"`` fits it whenever there are two usable
photos (settings still chosen by cross-validation); ``"off"`` never does. The cross-validated choice is
cached by content (photo and catalog vectors, the grid, this module's version), so a refit of an
unchanged catalog costs one eigen-decomposition.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recommender.catalog.loader import Catalog, catalog_from_frame
from recommender.errors import CatalogError, RecommenderError
from recommender.features.adapter import MIX_GRID, SHRINKAGE_GRID, ShopPhotoAdapter, cross_validate

log = logging.getLogger(__name__)
ADAPTER_MODES = ("auto", "on", "off")
PHOTOS_FILE = "views.csv"
MIN_PHOTOS = 2  # labelled photos a product needs to count towards MIN_PRODUCTS
MIN_PRODUCTS = 20  # products with MIN_PHOTOS photos before "auto" cross-validates at all
CV_FOLDS = 5
_CACHE_VERSION = 2  # 2: CV projects once per fold (same choice, faster)


@dataclass
class AdapterChoice:
    """What the adapter step decided: the fitted adapter (or None) and a one-line reason."""

    adapter: ShopPhotoAdapter | None
    note: str
    cv: dict | None = None  # {"plain": R@1, "adapter": R@1, "diff": [lo, hi], "n", "best"} when cross-validated


def read_photos_table(catalog: Catalog, photos) -> pd.DataFrame | None:
    """The ``id,image`` table of labelled photos: ``photos`` (a CSV path or a DataFrame), or with ``None``
    the ``views.csv`` beside the catalog file when there is one. ``False`` means none."""
    if photos is False:
        return None
    if photos is None:
        if catalog.source is None:
            return None
        path = Path(catalog.source).parent / PHOTOS_FILE
        if not path.is_file():
            return None
        photos = path
    if isinstance(photos, pd.DataFrame):
        table, where = photos.astype(str), "labelled photos"
    else:
        where = str(photos)
        try:
            table = pd.read_csv(photos, dtype=str, keep_default_na=False)
        except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            raise CatalogError(f"{where}: cannot read the labelled photos: {str(exc).splitlines()[0]}") from None
    missing = {"id", "image"} - set(table.columns)
    if missing:
        raise CatalogError(f"{where}: missing column(s) {', '.join(sorted(missing))} (need id,image)")
    unknown = sorted(set(table["id"]) - set(catalog.ids))
    if unknown:
        raise CatalogError(f"{where}: {len(unknown)} photo(s) of unknown product(s): {', '.join(unknown[:5])}")
    return table[["id", "image"]].reset_index(drop=True)


def photos_catalog(catalog: Catalog, table: pd.DataFrame) -> Catalog:
    """The photos as catalog rows (their product's metadata, ids ``<id>#photo<n>``), with ``catalog``'s
    folder and image roots, so a photo path is confined exactly as a product image is."""
    rows = catalog.items.set_index("id").loc[table["id"]].reset_index()
    rows["image"] = table["image"].to_numpy()
    rows["id"] = [f"{pid}#photo{n}" for pid, n in zip(table["id"], table.groupby("id").cumcount() + 1, strict=True)]
    return catalog_from_frame(rows, catalog.root, catalog.source, catalog.image_roots)


def choose_adapter(mode: str, photo_vectors: np.ndarray, photo_labels: np.ndarray, catalog_vectors: np.ndarray,
                   catalog_ids: np.ndarray, cache_dir: Path | None = None) -> AdapterChoice:
    """Apply the ``auto``/``on`` rule to usable photos (vectors of readable photos of products with an image)."""
    if mode not in ADAPTER_MODES:
        raise RecommenderError(f"adapter must be one of {', '.join(ADAPTER_MODES)}, got {mode!r}")
    if mode == "off":
        return AdapterChoice(None, "adapter off")
    n = len(photo_labels)
    counts = pd.Series(photo_labels, dtype=object).value_counts()
    qualified = int((counts >= MIN_PHOTOS).sum())
    if n < 2 or (mode == "auto" and qualified < MIN_PRODUCTS):
        need = f"auto needs {MIN_PRODUCTS} such products" if mode == "auto" else "on needs 2 photos"
        return AdapterChoice(None, f"adapter off: {n} usable labelled photo(s), {qualified} product(s) with >= "
                             f"{MIN_PHOTOS} ({need})")
    cv = _cached_cv(photo_vectors, photo_labels, catalog_vectors, catalog_ids, cache_dir)
    best = cv["best"]
    summary = {"n": n, "plain": cv["plain"], "adapter": cv["adapter"], "diff": cv["diff"], "best": best}
    if mode == "auto" and not cv["diff"][0] > 0:
        return AdapterChoice(None, f"adapter off: out-of-fold R@1 on {n} labelled photos {cv['adapter']:.3f} "
                             f"vs plain {cv['plain']:.3f} (difference {cv['diff'][0]:+.3f}..{cv['diff'][1]:+.3f} "
                             "includes 0)", summary)
    adapter = ShopPhotoAdapter(**best).fit(photo_vectors, photo_labels, catalog_vectors, catalog_ids)
    return AdapterChoice(adapter, f"adapter on ({mode}): {n} labelled photos of {counts.size} products; "
                         f"out-of-fold R@1 {cv['adapter']:.3f} vs plain {cv['plain']:.3f}; "
                         f"mix {best['mix']:g}, shrinkage {best['shrinkage']}", summary)


def _cached_cv(X, y, C, ids, cache_dir: Path | None) -> dict:
    """Cross-validate, or read the decision cached under the content of everything it depends on."""
    h = hashlib.sha256()
    for part in (np.ascontiguousarray(X, np.float32), np.ascontiguousarray(C, np.float32)):
        h.update(part.tobytes())
    h.update(json.dumps([list(map(str, y)), list(map(str, ids)), MIX_GRID, SHRINKAGE_GRID, CV_FOLDS,
                         _CACHE_VERSION]).encode())
    path = Path(cache_dir) / "adapter" / f"cv-{h.hexdigest()[:32]}.json" if cache_dir is not None else None
    if path is not None and path.is_file():
        try:
            cached = json.loads(path.read_text(encoding="utf-8"))
            if set(cached) >= {"best", "plain", "adapter", "diff"} and set(cached["best"]) == {"mix", "shrinkage"}:
                return cached
        except (OSError, ValueError):
            pass  # unreadable or corrupt: cross-validate again and overwrite it
        log.warning("adapter cache %s unreadable: cross-validating again", path)
    cv = cross_validate(X, y, C, ids, folds=CV_FOLDS)
    best = cv["best"]
    tuned = cv["per_photo"][(best["shrinkage"], best["mix"])]
    plain = cv["per_photo"].get((None, 0.0))
    if plain is None:  # the grid always holds the plain pipeline; guard against a changed grid
        raise RecommenderError("adapter grid must include mix 0 with no whitening (the plain pipeline)")
    lo, hi = _paired_interval(tuned - plain)
    out = {"best": best, "plain": round(float(plain.mean()), 4), "adapter": round(float(tuned.mean()), 4),
           "diff": [round(lo, 4), round(hi, 4)]}
    if path is not None:
        _write_atomic(path, json.dumps(out))
    return out


def _paired_interval(diff: np.ndarray, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean per-photo difference."""
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(n_boot, len(diff)))].mean(axis=1)
    lo, hi = np.quantile(means, [0.025, 0.975])
    return float(lo), float(hi)


def _write_atomic(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as exc:  # a read-only cache: the decision is simply made again next time
        log.warning("adapter cache %s not written: %s", path, exc)


def fit_catalog_adapter(mode: str, catalog: Catalog, vectors: np.ndarray, has_image: np.ndarray, photos,
                        embedder, make_embedder, cache_dir: Path | str | None) -> tuple[AdapterChoice, object | None]:
    """The façade's step: read the labelled photos, embed them (content-addressed cache, a folder of its
    own under the catalog's cache), apply the rule. ``embedder``: the fitted image model or None (a fully
    cached catalog); ``make_embedder()`` an unfitted one. Returns the choice and the fitted model or None."""
    from recommender.store.build import build_embeddings, default_cache_dir

    if mode not in ADAPTER_MODES:
        raise RecommenderError(f"adapter must be one of {', '.join(ADAPTER_MODES)}, got {mode!r}")
    if mode == "off":
        return AdapterChoice(None, "adapter off"), embedder
    table = read_photos_table(catalog, photos)
    if table is None or table.empty:
        return AdapterChoice(None, "adapter off: the catalog declares no labelled photos "
                             f"({PHOTOS_FILE} beside it, or fit(photos=...))"), embedder
    cache = Path(cache_dir or default_cache_dir(catalog))
    shots = photos_catalog(catalog, table)
    photo_vectors, readable, _, loaded = build_embeddings(shots, embedder or make_embedder(), cache / "shop-photos")
    ids = np.asarray(catalog.ids, dtype=object)
    labels = table["id"].to_numpy(dtype=object)
    usable = readable & np.isin(labels, ids[has_image])  # a photo of a product without an image teaches nothing
    catalog_rows = np.asarray(vectors[has_image], dtype=np.float32)  # a large catalog's rows arrive as bfloat16
    choice = choose_adapter(mode, photo_vectors[usable], labels[usable], catalog_rows, ids[has_image],
                            cache)
    dropped = int(len(table) - usable.sum())
    if dropped:
        choice.note += f"; {dropped} photo(s) skipped (unreadable, or of a product without an image)"
    return choice, embedder if embedder is not None else loaded
