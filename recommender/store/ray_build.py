"""``build --engine ray``: embed a catalog's images on a Ray cluster, into the same content-addressed store.

The pipeline is two Ray Data stages over the catalog's rows:

1. ``map_batches`` with stateless tasks: the SHA-256 of every image file (the store's key), read
   where the workers are rather than all on the driver;
2. ``map_batches`` with an actor pool, one model per actor: decode + embed every image whose
   hash the store does not hold yet (each distinct image once, however many products share it).

The driver then writes the vectors with :class:`~recommender.store.artifacts.ArtifactStore`, exactly
as the local build (:func:`recommender.store.build.build_embeddings`) does, so a distributed build and
a local rebuild share their work both ways: whatever one embedded, the other reuses.

Failures: an image that cannot be read is recorded in the store as the local build records it (not
retried). A batch whose worker raises or dies is retried by Ray (``max_retries`` times, on the same
or another actor); past that the build stops with :class:`RayBuildError` and the store keeps what
the last checkpoint saved. Results are keyed by image hash and checked on arrival: a hash is never
stored twice, and a build that would lose one raises instead of saving an incomplete cache.

``ray`` is imported on first use only (an optional extra: ``pip install -r requirements-ray.txt``).
"""

from __future__ import annotations

import copy
import logging
import time
import warnings
from pathlib import Path

import numpy as np

from recommender.catalog.loader import Catalog, ImageProblem
from recommender.errors import ImageError, RecommenderError
from recommender.features.embedders import ColourEmbedder, ImageEmbedder
from recommender.features.images import load_for_model
from recommender.store.artifacts import ArtifactStore, StoredEmbeddings, file_sha256
from recommender.store.build import BuildReport, Progress, default_cache_dir

log = logging.getLogger(__name__)
HASH_BATCH = 64  # image files hashed per task
DEFAULT_CHECKPOINT = 2000  # new vectors between two saves of the store


class RayBuildError(RecommenderError):
    """The Ray build could not start or could not finish (the store keeps its last checkpoint)."""


def _hash_rows(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Ray task: the content hash of each row's image file ("" where the file is missing)."""
    hashes = [file_sha256(Path(p)) if Path(p).is_file() else "" for p in batch["path"]]
    return {"row": batch["row"], "sha256": np.array(hashes, dtype=object)}


class _EmbedActor:
    """Ray actor: loads the model once, then decodes and embeds batches of images."""

    def __init__(self, embedder: ImageEmbedder | ColourEmbedder) -> None:
        self.embedder = copy.deepcopy(embedder).fit()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        size = self.embedder.input_size_
        ok, pixels, errors = [], [], []
        for path in batch["path"]:
            try:
                pixels.append(load_for_model(Path(path), size))
                ok.append(True)
                errors.append("")
            except ImageError as exc:
                ok.append(False)
                errors.append(str(exc).removeprefix(f"{path}: "))
        dim = self.embedder.identity_.feature_dim
        vectors = np.zeros((len(ok), dim), dtype=np.float32)
        if pixels:
            vectors[np.array(ok)] = self.embedder.embed_arrays(np.stack(pixels))
        return {"sha256": batch["sha256"], "vector": vectors, "error": np.array(errors, dtype=object)}


def _connect(address: str | None, num_cpus: int | None) -> bool:
    """Join the cluster at ``address`` (or start a local Ray); True if this call started it."""
    try:
        import ray
    except ImportError:
        raise RayBuildError("--engine ray needs Ray: pip install -r requirements-ray.txt") from None
    if ray.is_initialized():
        return False
    kwargs: dict[str, object] = {"include_dashboard": False, "log_to_driver": False}
    if address:
        # The workers of a remote cluster get this package shipped with the job.
        kwargs["runtime_env"] = {"py_modules": [str(Path(__file__).resolve().parents[1])]}
    else:
        kwargs["num_cpus"] = num_cpus
    try:
        ray.init(address=address or None, **kwargs)
    except Exception as exc:  # ConnectionError, a bad address, a version mismatch...
        raise RayBuildError(f"cannot start or reach Ray at {address or 'a local cluster'}: "
                            f"{' '.join(str(exc).split())[:300]}") from None
    return True


def build_with_ray(
    catalog: Catalog,
    embedder: ImageEmbedder | ColourEmbedder,
    cache_dir: Path | str | None = None,
    address: str | None = None,
    num_actors: int = 2,
    batch_size: int | None = None,
    max_retries: int = 3,
    progress: Progress | None = None,
    checkpoint_every: int = DEFAULT_CHECKPOINT,
    num_cpus: int | None = None,
) -> BuildReport:
    """Embed every catalog image the store does not hold yet on Ray, and save the vectors into the store.

    ``embedder``: an (unfitted) :class:`ImageEmbedder` (or ``ColourEmbedder``) configured as the recommender's - its
    identity picks the store folder, so ``HybridRecommender.fit`` with the same settings then
    reuses every vector. ``address``: ``None`` starts a local Ray (``num_cpus``; an already
    initialised Ray is used as it is), ``"auto"`` joins the cluster this machine belongs to,
    ``"ray://host:10001"`` a remote one. ``num_actors``: model replicas (each one CPU).
    ``max_retries``: attempts again of a batch whose worker raised or died.
    """
    t0 = time.perf_counter()
    if num_actors < 1 or max_retries < 0 or checkpoint_every < 1:
        raise RayBuildError("num_actors and checkpoint_every must be at least 1, max_retries at least 0")
    ident = embedder.identity()
    store = ArtifactStore(cache_dir or default_cache_dir(catalog))
    stored = store.load(ident.folder, ident.name, ident.preprocess, ident.weights) or StoredEmbeddings(
        ident.folder, ident.name, ident.feature_dim, ident.preprocess, ident.weights)
    report = BuildReport(ident.name, f"ray build ({ident.preprocess})", bool(ident.choice and ident.choice.fallback),
                         len(catalog), cache_dir=store.folder(ident.folder))
    started = _connect(address, num_cpus)
    try:
        import ray
        import ray.data

        ctx = ray.data.DataContext.get_current()
        saved = ctx.actor_task_retry_on_errors, ctx.enable_progress_bars
        # An exception in a batch (not only a dead worker) is retried, at most max_retries times.
        ctx.actor_task_retry_on_errors, ctx.enable_progress_bars = max_retries > 0, False
        try:
            hashes = _hash_catalog(catalog)
            todo = _plan(catalog, hashes, stored, report)
            new_vectors, new_failures = _embed(catalog, embedder, todo, stored, store, report,
                                               num_actors, batch_size or embedder.batch_size, max_retries,
                                               progress, checkpoint_every)
        finally:
            ctx.actor_task_retry_on_errors, ctx.enable_progress_bars = saved
    finally:
        if started:
            ray.shutdown()
    _save(catalog, hashes, stored, store, new_vectors, new_failures, final=True)
    # Counted per product, as the local build counts them (products sharing a picture embed it once).
    report.embedded = sum(1 for h in hashes if h in new_vectors)
    for i, h in enumerate(hashes):
        if h in new_failures:
            report.skipped.append(ImageProblem(catalog.ids[i], catalog.image_path(i), new_failures[h]))
    report.seconds = time.perf_counter() - t0
    return report


def _hash_catalog(catalog: Catalog) -> list[str | None]:
    import ray.data

    rows = [{"row": i, "path": str(catalog.image_path(i))} for i in range(len(catalog))]
    out: list[str | None] = [None] * len(catalog)
    ds = ray.data.from_items(rows).map_batches(_hash_rows, batch_size=HASH_BATCH, batch_format="numpy")
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        for row, h in zip(batch["row"].tolist(), batch["sha256"].tolist(), strict=True):
            out[int(row)] = h or None
    return out


def _plan(catalog: Catalog, hashes: list[str | None], stored: StoredEmbeddings, report: BuildReport) -> dict[str, str]:
    """Distinct image hashes still to embed -> one path holding that content; counts reuse and skips."""
    todo: dict[str, str] = {}
    for i, h in enumerate(hashes):
        path = catalog.image_path(i)
        if h is None:
            report.skipped.append(ImageProblem(catalog.ids[i], path, "file not found"))
        elif h in stored.vectors:
            report.reused += 1
        elif h in stored.failures:
            report.skipped.append(ImageProblem(catalog.ids[i], path, stored.failures[h]))
        else:
            todo.setdefault(h, str(path))
    return todo


def _embed(catalog, embedder, todo, stored, store, report, num_actors, batch_size, max_retries, progress,
           checkpoint_every) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    import ray.data

    vectors: dict[str, np.ndarray] = {}
    failures: dict[str, str] = {}
    if not todo:
        return vectors, failures
    items = [{"sha256": h, "path": p} for h, p in todo.items()]
    with warnings.catch_warnings():
        # Ray 2.60 deprecates extra remote args but names no replacement for these two; without
        # them an actor pool retries a failing batch forever.
        warnings.simplefilter("ignore", DeprecationWarning)
        ds = ray.data.from_items(items).map_batches(
            _EmbedActor, fn_constructor_kwargs={"embedder": embedder}, batch_size=batch_size, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=min(num_actors, len(items))), num_cpus=1,
            max_task_retries=max_retries, max_restarts=max_retries)
    since_checkpoint = 0
    if progress:
        progress(0, len(todo))  # the first batch waits for the models to load
    try:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for h, vec, err in zip(batch["sha256"].tolist(), batch["vector"], batch["error"].tolist(), strict=True):
                if h not in todo or h in vectors or h in failures:
                    raise RayBuildError(f"Ray returned image {h[:12]} twice or unasked; nothing saved from this run")
                if err:
                    failures[h] = err
                else:
                    vectors[h] = np.asarray(vec, dtype=np.float32)
                    since_checkpoint += 1
            if progress:
                progress(len(vectors) + len(failures), len(todo))
            if since_checkpoint >= checkpoint_every:
                _save(catalog, None, stored, store, vectors, failures, final=False)
                since_checkpoint = 0
    except RayBuildError:
        raise
    except Exception as exc:  # a batch failed more than max_retries times, or the cluster went away
        if vectors:
            _save(catalog, None, stored, store, vectors, failures, final=False)
        raise RayBuildError(f"Ray build stopped after {len(vectors)} of {len(todo)} images (saved to the store; "
                            f"run it again to continue): {' '.join(str(exc).split())[:300]}") from None
    missing = len(todo) - len(vectors) - len(failures)
    if missing:
        raise RayBuildError(f"Ray build lost {missing} of {len(todo)} images; nothing saved from this run")
    return vectors, failures


def _save(catalog: Catalog, hashes: list[str | None] | None, stored: StoredEmbeddings, store: ArtifactStore,
          vectors: dict[str, np.ndarray], failures: dict[str, str], final: bool) -> None:
    """Merge new vectors into the store's folder, as the local build does (every known vector is kept)."""
    if not vectors and not failures and not final:
        return
    merged = {**stored.vectors, **vectors}
    owners: dict[str, tuple[str, str]] = {}  # a checkpoint leaves them blank; the final save names them
    if hashes is not None:
        owners = {h: (str(catalog.ids[i]), str(catalog.items["image"].iat[i]))
                  for i, h in enumerate(hashes) if h is not None and h in merged}
    keys = list(merged)
    items = [{"sha256": h, "id": owners.get(h, ("", ""))[0], "image": owners.get(h, ("", ""))[1]} for h in keys]
    all_failures = {**stored.failures, **failures}
    fingerprint = catalog.fingerprint() if final else stored.catalog_fingerprint
    if final and not vectors and not failures and stored.catalog_fingerprint == fingerprint:
        return  # nothing new: leave the store as it is
    matrix = np.stack([merged[h] for h in keys]) if keys else np.zeros((0, stored.feature_dim), np.float32)
    record = copy.copy(stored)
    record.catalog_fingerprint = fingerprint
    store.save(record, items, matrix, [{"sha256": h, "reason": r} for h, r in all_failures.items()])
