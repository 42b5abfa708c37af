"""``build --engine ray``: embed a catalog's images on a Ray cluster, into the same content-addressed store.

The driver reads the catalog and hashes its image files with the local build's own
:func:`~recommender.store.build.image_hashes` (the store's key, and the same confinement of image
paths to the catalog's folder); then one Ray Data stage, ``map_batches`` over an actor pool with
one model per actor, decodes and embeds every image whose hash the store does not hold yet (each
distinct image once, however many products share it). The driver appends the vectors to the
:class:`~recommender.store.artifacts.ArtifactStore` as they arrive (checkpoints, under the store's
lock), exactly as the local build (:func:`recommender.store.build.build_embeddings`) does, so a
distributed build and a local rebuild share their work both ways: whatever one embedded, the
other reuses, and a stopped build resumes from its last checkpoint.

Failures: an image that cannot be read is recorded in the store as the local build records it (not
retried). A batch whose worker raises or dies is retried by Ray (``max_retries`` times, on the same
or another actor); past that the build stops with :class:`RayBuildError` and the store keeps every
vector that arrived before. Results are keyed by image hash and checked on arrival: a hash is never
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
from recommender.store.artifacts import ArtifactStore, StoredEmbeddings
from recommender.store.build import BuildReport, Progress, _missing_reason, default_cache_dir, image_hashes

log = logging.getLogger(__name__)
DEFAULT_CHECKPOINT = 1024  # new vectors per appended chunk (the local build's CHECKPOINT_EVERY)


class RayBuildError(RecommenderError):
    """The Ray build could not start or could not finish (the store keeps its last checkpoint)."""


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
    """Embed every catalog image the store does not hold yet on Ray, appending the vectors to the store.

    ``embedder``: an (unfitted) :class:`ImageEmbedder` (or ``ColourEmbedder``) configured as the
    recommender's - its identity picks the store folder, so ``HybridRecommender.fit`` with the same
    settings then reuses every vector. ``address``: ``None`` starts a local Ray (``num_cpus``; an
    already initialised Ray is used as it is), ``"auto"`` joins the cluster this machine belongs to,
    ``"ray://host:10001"`` a remote one. ``num_actors``: model replicas (each one CPU).
    ``max_retries``: attempts again of a batch whose worker raised or died.
    """
    t0 = time.perf_counter()
    if num_actors < 1 or max_retries < 0 or checkpoint_every < 1:
        raise RayBuildError("num_actors and checkpoint_every must be at least 1, max_retries at least 0")
    ident = embedder.identity()
    store = ArtifactStore(cache_dir or default_cache_dir(catalog))
    store.check_location()
    stored = (store.load(ident.folder, ident.name, ident.preprocess, ident.weights, ident.feature_dim)
              or StoredEmbeddings(ident.folder, ident.name, ident.feature_dim, ident.preprocess, ident.weights))
    report = BuildReport(ident.name, f"ray build ({ident.preprocess})", bool(ident.choice and ident.choice.fallback),
                         len(catalog), cache_dir=store.folder(ident.folder))
    hashes = image_hashes(catalog)
    todo: dict[str, list[int]] = {}  # image hash -> rows showing it
    for i, h in enumerate(hashes):
        if h is None:
            report.skipped.append(ImageProblem(catalog.ids[i], catalog.image_source(i), _missing_reason(catalog, i)))
        elif h in stored.vectors:
            report.reused += 1
        elif h in stored.failures:
            report.skipped.append(ImageProblem(catalog.ids[i], catalog.image_source(i), stored.failures[h]))
        else:
            todo.setdefault(h, []).append(i)
    if todo:
        stored.catalog_fingerprint = catalog.fingerprint()
        t_embed = time.perf_counter()  # Ray's start-up and model loading included: the cost a user waits for
        started = _connect(address, num_cpus)
        try:
            import ray.data

            ctx = ray.data.DataContext.get_current()
            saved = ctx.actor_task_retry_on_errors, ctx.enable_progress_bars
            # An exception in a batch (not only a dead worker) is retried, at most max_retries times.
            ctx.actor_task_retry_on_errors, ctx.enable_progress_bars = max_retries > 0, False
            try:
                new_vectors, new_failures = _embed(catalog, embedder, todo, stored, store, num_actors,
                                                   batch_size or embedder.batch_size, max_retries, progress,
                                                   checkpoint_every)
            finally:
                ctx.actor_task_retry_on_errors, ctx.enable_progress_bars = saved
        finally:
            if started:
                import ray

                ray.shutdown()
        store.compact(stored)
        report.embed_seconds = time.perf_counter() - t_embed
        for h, rows in todo.items():
            if h in new_vectors:
                report.embedded += len(rows)
            else:
                report.skipped.extend(ImageProblem(catalog.ids[i], catalog.image_source(i), new_failures[h])
                                      for i in rows)
    report.seconds = time.perf_counter() - t0
    return report


def _embed(catalog, embedder, todo, stored, store, num_actors, batch_size, max_retries, progress,
           checkpoint_every) -> tuple[set[str], dict[str, str]]:
    """Run the actor pool over ``todo``; append results to the store as they arrive. Returns the
    hashes embedded and the failures (unreadable images)."""
    import ray.data

    done: set[str] = set()
    failures: dict[str, str] = {}
    pending_items: list[dict[str, str]] = []
    pending_rows: list[np.ndarray] = []
    pending_failures: dict[str, str] = {}

    def checkpoint() -> None:
        if pending_items or pending_failures:
            matrix = np.stack(pending_rows) if pending_rows else np.zeros((0, stored.feature_dim), np.float32)
            store.append(stored, list(pending_items), matrix, dict(pending_failures))
            pending_items.clear()
            pending_rows.clear()
            pending_failures.clear()

    items = [{"sha256": h, "path": str(catalog.image_path(rows[0]))} for h, rows in todo.items()]
    with warnings.catch_warnings():
        # Ray 2.60 deprecates extra remote args but names no replacement for these two; without
        # them an actor pool retries a failing batch forever.
        warnings.simplefilter("ignore", DeprecationWarning)
        ds = ray.data.from_items(items).map_batches(
            _EmbedActor, fn_constructor_kwargs={"embedder": embedder}, batch_size=batch_size, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=min(num_actors, len(items))), num_cpus=1,
            max_task_retries=max_retries, max_restarts=max_retries)
    if progress:
        progress(0, len(todo))  # the first batch waits for the models to load
    try:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for h, vec, err in zip(batch["sha256"].tolist(), batch["vector"], batch["error"].tolist(), strict=True):
                if h not in todo or h in done or h in failures:
                    raise RayBuildError(f"Ray returned image {h[:12]} twice or unasked; the build stops")
                if err:
                    failures[h] = pending_failures[h] = err
                else:
                    done.add(h)
                    row = todo[h][0]
                    pending_items.append({"sha256": h, "id": str(catalog.ids[row]),
                                          "image": str(catalog.items["image"].iat[row])})
                    pending_rows.append(np.asarray(vec, dtype=np.float32))
            if progress:
                progress(len(done) + len(failures), len(todo))
            if len(pending_items) >= checkpoint_every:
                checkpoint()
    except RayBuildError:
        checkpoint()
        raise
    except Exception as exc:  # a batch failed more than max_retries times, or the cluster went away
        checkpoint()
        raise RayBuildError(f"Ray build stopped after {len(done)} of {len(todo)} images (those are saved; "
                            f"run it again to continue): {' '.join(str(exc).split())[:300]}") from None
    checkpoint()
    missing = len(todo) - len(done) - len(failures)
    if missing:
        raise RayBuildError(f"Ray build lost {missing} of {len(todo)} images (the others are saved; run it again)")
    return done, failures
