"""Catalog -> image embeddings, reusing the artifact store and skipping images that cannot be read."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .catalog import Catalog, ImageProblem
from .embedders import FEATURE_DIMS, BackboneChoice, ImageEmbedder, resolve_backbone
from .errors import ImageError
from .images import load_for_model
from .store import ArtifactStore, StoredEmbeddings, file_sha256

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
        text = (f"{self.n_items} products: {self.embedded} embedded, {self.reused} reused from cache, "
                f"{len(self.skipped)} skipped ({self.backbone}, {self.seconds:.1f} s)")
        return text


def default_cache_dir(catalog: Catalog) -> Path:
    return catalog.root / ".cache"


def weights_id(choice: BackboneChoice) -> str:
    """Identifies the weights a vector was made with (file name and size, or Keras' download)."""
    if choice.weights is None:
        return "keras-imagenet"
    return f"{choice.weights.name}:{choice.weights.stat().st_size}"


def build_image_embeddings(
    catalog: Catalog,
    backbone: str = "auto",
    cache_dir: Path | str | None = None,
    embedder: ImageEmbedder | None = None,
    progress: Progress | None = None,
    batch_size: int = 32,
    flip_tta: bool = False,
) -> tuple[np.ndarray, np.ndarray, BuildReport, ImageEmbedder | None]:
    """Embed every product image, re-using cached vectors by image content hash.

    Returns ``(vectors, has_image, report, embedder)``: ``vectors`` is ``(n, d)`` float32 with zero
    rows where the image was missing or unreadable (``has_image`` False; the report lists why),
    ``embedder`` is the loaded model if one had to be loaded, else ``None`` - a build whose images
    are all cached never imports TensorFlow.
    """
    t0 = time.perf_counter()
    if embedder is not None:
        backbone, flip_tta = embedder.backbone_, embedder.flip_tta
    choice = resolve_backbone(backbone)
    preprocess = ImageEmbedder(choice.name, flip_tta=flip_tta).preprocess_id
    store = ArtifactStore(cache_dir or default_cache_dir(catalog))
    wid = weights_id(choice)
    dim = FEATURE_DIMS[choice.name]
    stored = store.load(choice.name, preprocess, wid) or StoredEmbeddings(choice.name, dim, preprocess, wid)
    report = BuildReport(choice.name, choice.reason, choice.fallback, len(catalog), cache_dir=store.folder(choice.name))

    n = len(catalog)
    vectors = np.zeros((n, dim), dtype=np.float32)
    has_image = np.zeros(n, dtype=bool)
    hashes: list[str | None] = [None] * n
    todo: list[int] = []
    for i in range(n):
        path = catalog.image_path(i)
        if not path.is_file():
            report.skipped.append(ImageProblem(catalog.ids[i], path, "file not found"))
            continue
        h = hashes[i] = file_sha256(path)
        if h in stored.vectors:
            vectors[i], has_image[i] = stored.vectors[h], True
            report.reused += 1
        elif h in stored.failures:
            report.skipped.append(ImageProblem(catalog.ids[i], path, stored.failures[h]))
        else:
            todo.append(i)

    new_failures: dict[str, str] = {}
    if todo:
        if embedder is None:
            embedder = ImageEmbedder(choice.name, batch_size=batch_size, flip_tta=flip_tta).fit()
        done = 0
        for start in range(0, len(todo), batch_size):
            rows, pixels = [], []
            for i in todo[start:start + batch_size]:
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
            done += len(todo[start:start + batch_size])
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
        ids_by_hash = {hashes[i]: (catalog.ids[i], str(catalog.items["image"].iat[i]))
                       for i in np.flatnonzero(has_image)}
        keys = list(merged)
        items = [{"sha256": h, "id": ids_by_hash.get(h, ("", ""))[0], "image": ids_by_hash.get(h, ("", ""))[1]}
                 for h in keys]
        failures = {**stored.failures, **new_failures}
        stored.catalog_fingerprint = fingerprint
        matrix = np.stack([merged[h] for h in keys]) if keys else np.zeros((0, dim), np.float32)
        store.save(stored, items, matrix, [{"sha256": h, "reason": r} for h, r in failures.items()])
    report.seconds = time.perf_counter() - t0
    return vectors, has_image, report, embedder
