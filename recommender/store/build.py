"""Catalog -> vectors, reusing the artifact store and skipping images that cannot be read."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recommender.catalog.loader import Catalog, ImageProblem
from recommender.errors import ImageError
from recommender.features.embedders import ImageEmbedder
from recommender.features.images import load_for_model
from recommender.store.artifacts import ArtifactStore, StoredEmbeddings, file_sha256

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]


@dataclass
class BuildReport:
    backbone: str
    reason: str
    fallback: bool
    n_items: int
    embedded: int = 0
    reused: int = 0
    skipped: list[ImageProblem] = field(default_factory=list)
    seconds: float = 0.0
    cache_dir: Path | None = None

    def summary(self) -> str:
        return (f"{self.n_items} products: {self.embedded} embedded, {self.reused} reused from cache, "
                f"{len(self.skipped)} skipped ({self.backbone}, {self.seconds:.1f} s)")


def default_cache_dir(catalog: Catalog) -> Path:
    return catalog.root / ".cache"


def image_hashes(catalog: Catalog) -> list[str | None]:
    """SHA-256 of every product's image file (None where the file is missing): the cache key."""
    return [file_sha256(p) if (p := catalog.image_path(i)).is_file() else None for i in range(len(catalog))]


def build_embeddings(
    catalog: Catalog,
    embedder,
    cache_dir: Path | str | None = None,
    progress: Progress | None = None,
    hashes: list[str | None] | None = None,
) -> tuple[np.ndarray, np.ndarray, BuildReport, object | None]:
    """Embed every product image with ``embedder``, re-using cached vectors by image content hash.

    ``embedder`` is an :class:`ImageEmbedder` or :class:`ColourEmbedder`, fitted or not: an unfitted
    one is fitted only if some image is not in the cache, so a fully cached build never imports
    TensorFlow. Returns ``(vectors, has_image, report, embedder or None)``: ``vectors`` is
    ``(n, d)`` float32 with zero rows where the image was missing or unreadable (``has_image``
    False; the report lists why). ``hashes`` (from :func:`image_hashes`) saves reading every image
    file again when several embedders run over one catalog.
    """
    t0 = time.perf_counter()
    ident = getattr(embedder, "identity_", None) or embedder.identity()
    choice = ident.choice
    store = ArtifactStore(cache_dir or default_cache_dir(catalog))
    stored = store.load(ident.folder, ident.name, ident.preprocess, ident.weights) or StoredEmbeddings(
        ident.folder, ident.name, ident.feature_dim, ident.preprocess, ident.weights)
    report = BuildReport(ident.name, choice.reason if choice else ident.preprocess,
                         bool(choice and choice.fallback), len(catalog), cache_dir=store.folder(ident.folder))

    n = len(catalog)
    vectors = np.zeros((n, ident.feature_dim), dtype=np.float32)
    has_image = np.zeros(n, dtype=bool)
    hashes = image_hashes(catalog) if hashes is None else hashes
    todo: list[int] = []
    for i in range(n):
        path = catalog.image_path(i)
        h = hashes[i]
        if h is None:
            report.skipped.append(ImageProblem(catalog.ids[i], path, "file not found"))
            continue
        if h in stored.vectors:
            vectors[i], has_image[i] = stored.vectors[h], True
            report.reused += 1
        elif h in stored.failures:
            report.skipped.append(ImageProblem(catalog.ids[i], path, stored.failures[h]))
        else:
            todo.append(i)

    new_failures: dict[str, str] = {}
    loaded = None
    if todo:
        if not hasattr(embedder, "identity_"):
            embedder.fit()
        loaded = embedder
        step = embedder.batch_size
        done = 0
        for start in range(0, len(todo), step):
            rows, pixels = [], []
            for i in todo[start:start + step]:
                try:
                    pixels.append(load_for_model(catalog.image_path(i), embedder.input_size_))
                    rows.append(i)
                except ImageError as exc:
                    reason = str(exc).removeprefix(f"{catalog.image_path(i)}: ")
                    report.skipped.append(ImageProblem(catalog.ids[i], catalog.image_path(i), reason))
                    new_failures[hashes[i]] = reason
            if rows:
                vectors[rows] = embedder.embed_arrays(np.stack(pixels))
                has_image[rows] = True
                report.embedded += len(rows)
            done += len(todo[start:start + step])
            if progress:
                progress(done, len(todo))
    for p in report.skipped:
        log.warning("skipped %s: %s (%s)", p.id, p.reason, p.path)

    fingerprint = catalog.fingerprint()
    if todo or stored.catalog_fingerprint != fingerprint:
        # Keep every vector we know, including ones of products no longer in this catalog: another
        # catalog sharing the cache (or an undo) gets them back for free.
        merged = dict(stored.vectors)
        merged.update({hashes[i]: vectors[i] for i in np.flatnonzero(has_image)})
        owners = {hashes[i]: (str(catalog.ids[i]), str(catalog.items["image"].iat[i]))
                  for i in np.flatnonzero(has_image)}
        keys = list(merged)
        items = [{"sha256": h, "id": owners.get(h, ("", ""))[0], "image": owners.get(h, ("", ""))[1]}
                 for h in keys]
        failures = {**stored.failures, **new_failures}
        stored.catalog_fingerprint = fingerprint
        matrix = np.stack([merged[h] for h in keys]) if keys else np.zeros((0, ident.feature_dim), np.float32)
        store.save(stored, items, matrix, [{"sha256": h, "reason": r} for h, r in failures.items()])
    report.seconds = time.perf_counter() - t0
    return vectors, has_image, report, loaded


def build_image_embeddings(
    catalog: Catalog,
    backbone: str = "auto",
    cache_dir: Path | str | None = None,
    embedder: ImageEmbedder | None = None,
    progress: Progress | None = None,
    batch_size: int = 32,
    flip_tta: bool = False,
    semantic: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, BuildReport, ImageEmbedder | None]:
    """CNN embeddings of the catalog (see :func:`build_embeddings`); ``embedder`` may be a fitted
    :class:`ImageEmbedder` to reuse, otherwise one is made from the other arguments."""
    if embedder is None:
        embedder = ImageEmbedder(backbone, batch_size=batch_size, flip_tta=flip_tta, semantic=semantic)
    return build_embeddings(catalog, embedder, cache_dir, progress)
