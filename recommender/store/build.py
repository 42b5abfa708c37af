"""Catalog -> vectors, reusing the artifact store and skipping images that cannot be read.

A build streams: image files are hashed and decoded by a small thread pool while the model embeds
the previous batch, so at most a few batches of pixels are in memory however large the catalog.
Finished vectors are checkpointed into the store every ``checkpoint_every`` images or
``checkpoint_seconds`` seconds, so a killed build resumes where its last checkpoint was.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recommender.catalog.loader import Catalog, ImageProblem
from recommender.errors import CacheError, ImageError
from recommender.features.embedders import ImageEmbedder
from recommender.features.images import load_for_model
from recommender.store.artifacts import ArtifactStore, StoredEmbeddings, file_sha256
from recommender.store.fill import fill_cached

log = logging.getLogger(__name__)
MAX_SKIPPED_LOGGED = 20  # per build; every skipped image stays in BuildReport.skipped
Progress = Callable[[int, int], None]

CHECKPOINT_EVERY = 1024  # images: ~5 MB of 1280-d vectors per chunk, ~20 s of work on 2 cores
CHECKPOINT_SECONDS = 60.0
# Decoded batches waiting for the model: enough to hide decode time, few enough to bound memory
# (3 x 32 x 224 x 224 x 3 bytes = 14 MB).
LOOKAHEAD_BATCHES = 3
HASH_BLOCK = 256  # files hashed per thread-pool task
THREADED_HASH_BYTES = 64 << 10  # mean file size from which image_hashes uses threads

# Set by the CLI's `build` (see cache_required): a cache that cannot be written is an error there,
# while a query from a read-only cache only warns and embeds in memory.
_CACHE_REQUIRED: ContextVar[bool] = ContextVar("cache_required", default=False)


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
    checkpoints: int = 0
    saved: bool = True  # False: the cache was not writable, new vectors live only in this process
    embed_seconds: float = 0.0  # decoding, inference and checkpoints, without loading the model

    @property
    def images_per_second(self) -> float:
        """Embedding throughput of this build (decode, inference and checkpoints; 0 if nothing was embedded)."""
        return self.embedded / self.embed_seconds if self.embedded and self.embed_seconds > 0 else 0.0

    def summary(self) -> str:
        unsaved = "" if self.saved else "; cache not writable, new vectors not saved"
        rate = f", {self.images_per_second:.1f} img/s" if self.embedded else ""
        return (f"{self.n_items} products: {self.embedded} embedded, {self.reused} reused from cache, "
                f"{len(self.skipped)} skipped ({self.backbone}, {self.seconds:.1f} s{rate}{unsaved})")


def default_cache_dir(catalog: Catalog) -> Path:
    return catalog.root / ".cache"


@contextlib.contextmanager
def cache_required(catalog: Catalog, cache_dir: Path | str | None = None) -> Iterator[None]:
    """For a build: fail at once, with one line, if the cache cannot be written (a file, read-only,
    no space), and make a write failure during the build an error rather than a warning."""
    store = ArtifactStore(cache_dir or default_cache_dir(catalog))
    problem = store.writable_problem("", need_bytes=16 << 20)
    if problem:
        raise CacheError(problem)
    token = _CACHE_REQUIRED.set(True)
    try:
        yield
    finally:
        _CACHE_REQUIRED.reset(token)


def _hash_one(catalog: Catalog, i: int) -> tuple[str | None, int]:
    """``(SHA-256 or None, bytes read)`` of row ``i``'s image file."""
    if catalog.image_refusal(i):
        return None, 0  # outside the allowed roots: never opened
    path = catalog.image_path(i)
    try:
        st = path.stat()
        # Regular files only: opening a FIFO or a device would block or read forever.
        return (file_sha256(path), st.st_size) if stat.S_ISREG(st.st_mode) else (None, 0)
    except (OSError, ValueError):  # missing, no permission, name too long, a NUL byte
        return None, 0


def image_hashes(catalog: Catalog, workers: int | None = None) -> list[str | None]:
    """SHA-256 of every product's image file (None where it is missing, unreadable or outside the
    catalog's folder): the cache key.

    The first :data:`HASH_BLOCK` files are hashed here; if they are large (product photos, mostly hashing,
    which releases the GIL), the rest by a few threads a block at a time, else here too: for small files the
    per-file Python work dominates and threads contending for the GIL were 2-4x slower (100k 28x28 PNGs:
    4.6 s in one thread, 10.3 s in two)."""
    workers = workers or min(4, os.cpu_count() or 1)
    n = len(catalog)

    def block(start: int) -> list[tuple[str | None, int]]:
        return [_hash_one(catalog, i) for i in range(start, min(start + HASH_BLOCK, n))]

    first = block(0)
    hashed = [size for h, size in first if h is not None]
    threaded = workers > 1 and hashed and sum(hashed) / len(hashed) >= THREADED_HASH_BYTES
    rest: list[tuple[str | None, int]] = []
    if threaded:
        with ThreadPoolExecutor(workers) as pool:
            for part in pool.map(block, range(HASH_BLOCK, n, HASH_BLOCK)):
                rest.extend(part)
    else:
        for start in range(HASH_BLOCK, n, HASH_BLOCK):
            rest.extend(block(start))
    return [h for h, _ in first + rest]


def _missing_reason(catalog: Catalog, i: int) -> str:
    refusal = catalog.image_refusal(i)
    if refusal:
        return refusal
    path = catalog.image_path(i)
    try:
        return "not a file" if path.exists() else "file not found"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"


def decoded_batches(
    paths: Sequence[Path], size: int, batch_size: int, workers: int | None = None
) -> Iterator[list[tuple[int, np.ndarray | None, str | None]]]:
    """Decode ``paths`` for a model in a thread pool, ``batch_size`` at a time, in order.

    Yields lists of ``(index into paths, (size, size, 3) uint8 pixels or None, reason or None)``;
    at most :data:`LOOKAHEAD_BATCHES` batches are decoded ahead of the consumer.
    """
    workers = workers or min(2, os.cpu_count() or 1)

    def load(j: int) -> tuple[int, np.ndarray | None, str | None]:
        try:
            return j, load_for_model(paths[j], size), None
        except ImageError as exc:
            return j, None, str(exc).removeprefix(f"{paths[j]}: ")

    starts = iter(range(0, len(paths), batch_size))
    with ThreadPoolExecutor(workers, thread_name_prefix="decode") as pool:
        pending: deque = deque()

        def submit_next() -> None:
            start = next(starts, None)
            if start is not None:
                pending.append([pool.submit(load, j) for j in range(start, min(start + batch_size, len(paths)))])

        for _ in range(LOOKAHEAD_BATCHES):
            submit_next()
        while pending:
            futures = pending.popleft()
            submit_next()
            yield [f.result() for f in futures]


class _Checkpointer:
    """Collects finished vectors and appends them to the store every N images or S seconds."""

    def __init__(self, store: ArtifactStore, stored: StoredEmbeddings, every: int, seconds: float,
                 enabled: bool, strict: bool) -> None:
        self.store, self.stored = store, stored
        self.every, self.seconds = max(1, every), seconds
        self.enabled, self.strict = enabled, strict
        self.items: list[dict[str, str]] = []
        self.rows: list[np.ndarray] = []
        self.failures: dict[str, str] = {}
        self.last = time.monotonic()
        self.count = 0

    def add(self, item: dict[str, str], vector: np.ndarray) -> None:
        self.items.append(item)
        self.rows.append(vector)

    def fail(self, sha: str, reason: str) -> None:
        self.failures[sha] = reason

    def maybe_flush(self) -> None:
        if len(self.items) >= self.every or time.monotonic() - self.last >= self.seconds:
            self.flush()

    def flush(self) -> None:
        if not self.enabled or not (self.items or self.failures):
            return
        matrix = np.stack(self.rows) if self.rows else np.zeros((0, self.stored.feature_dim), np.float32)
        try:
            self.store.append(self.stored, self.items, matrix, self.failures)
        except OSError as exc:
            msg = (f"cannot write the cache {self.store.folder(self.stored.folder)} "
                   f"({exc.strerror or exc}); vectors up to the last checkpoint are saved")
            if self.strict:
                raise CacheError(msg) from None
            log.warning("%s; continuing in memory", msg)
            self.enabled = False
            return
        self.count += 1
        self.items, self.rows, self.failures = [], [], {}
        self.last = time.monotonic()


def build_embeddings(
    catalog: Catalog,
    embedder,
    cache_dir: Path | str | None = None,
    progress: Progress | None = None,
    hashes: list[str | None] | None = None,
    checkpoint_every: int = CHECKPOINT_EVERY,
    checkpoint_seconds: float = CHECKPOINT_SECONDS,
    decode_workers: int | None = None,
    dtype: np.dtype | type = np.float32,
) -> tuple[np.ndarray, np.ndarray, BuildReport, object | None]:
    """Embed every product image with ``embedder``, re-using cached vectors by image content hash.

    ``embedder`` is an :class:`ImageEmbedder` or :class:`ColourEmbedder`, fitted or not: an unfitted
    one is fitted only if some image is not in the cache, so a fully cached build never imports
    TensorFlow. Returns ``(vectors, has_image, report, embedder or None)``: ``vectors`` is
    ``(n, d)`` float32 with zero rows where the image was missing, unreadable or outside the
    catalog's folder (``has_image`` False; the report lists why). ``hashes`` (from
    :func:`image_hashes`) saves reading every image file again when several embedders run over
    one catalog. New vectors are checkpointed as they are made; a cache that cannot be written
    makes this a warning (vectors kept in memory), or a :class:`CacheError` under :func:`cache_required`.
    ``dtype``: of the returned matrix (e.g. bfloat16 for a catalog served from a bfloat16 file: half the
    memory at the fit's peak); cached vectors are streamed into it a block at a time (:mod:`.fill`), and
    the cache itself always holds float32.
    """
    t0 = time.perf_counter()
    ident = getattr(embedder, "identity_", None) or embedder.identity()
    choice = ident.choice
    store = ArtifactStore(cache_dir or default_cache_dir(catalog))
    store.check_location()
    strict = _CACHE_REQUIRED.get()
    report = BuildReport(ident.name, choice.reason if choice else ident.preprocess,
                         bool(choice and choice.fallback), len(catalog), cache_dir=store.folder(ident.folder))

    n = len(catalog)
    ids = catalog.ids
    vectors = np.zeros((n, ident.feature_dim), dtype=dtype)
    hashes = image_hashes(catalog) if hashes is None else hashes
    by_hash: dict[str, list[int]] = {}  # image hash -> rows showing it: one embedding per distinct file
    for i, h in enumerate(hashes):
        if h is not None:
            by_hash.setdefault(h, []).append(i)
    stored, has_image = fill_cached(store, ident.folder, ident.name, ident.preprocess, ident.weights,
                                    ident.feature_dim, by_hash, vectors)
    stored = stored or StoredEmbeddings(ident.folder, ident.name, ident.feature_dim, ident.preprocess, ident.weights)
    report.reused = int(has_image.sum())
    todo: dict[str, list[int]] = {}
    for i in np.flatnonzero(~has_image).tolist():
        h = hashes[i]
        if h is None:
            report.skipped.append(ImageProblem(ids[i], catalog.image_source(i), _missing_reason(catalog, i)))
        elif h in stored.failures:
            report.skipped.append(ImageProblem(ids[i], catalog.image_source(i), stored.failures[h]))
        else:
            todo.setdefault(h, []).append(i)

    loaded = None
    if todo:
        need = len(todo) * ident.feature_dim * 4 * 2 + (16 << 20)  # chunks, then one compaction
        problem = store.writable_problem(ident.folder, need_bytes=need)
        if problem and strict:
            raise CacheError(problem)
        if problem:
            log.warning("%s: embedding %d image(s) in memory, nothing is saved", problem, len(todo))
            report.saved = False
        if not hasattr(embedder, "identity_"):
            embedder.fit()
        loaded = embedder
        stored.catalog_fingerprint = catalog.fingerprint()
        saver = _Checkpointer(store, stored, checkpoint_every, checkpoint_seconds, not problem, strict)
        keys = list(todo)
        firsts = [todo[h][0] for h in keys]
        paths = [catalog.image_path(i) for i in firsts]
        done = 0
        t_embed = time.perf_counter()
        if progress:
            progress(0, len(keys))  # starts the clock of a rate/ETA display before the first batch
        for batch in decoded_batches(paths, embedder.input_size_, embedder.batch_size, decode_workers):
            ok = [(j, px) for j, px, _ in batch if px is not None]
            for j, _, reason in batch:
                if reason is not None:
                    for i in todo[keys[j]]:
                        report.skipped.append(ImageProblem(ids[i], catalog.image_source(i), reason))
                    saver.fail(keys[j], reason)
            if ok:
                out = embedder.embed_arrays(np.stack([px for _, px in ok]))
                for (j, _), vec in zip(ok, out, strict=True):
                    rows = todo[keys[j]]
                    vectors[rows], has_image[rows] = vec, True
                    report.embedded += len(rows)
                    saver.add({"sha256": keys[j], "id": str(ids[rows[0]]),
                               "image": str(catalog.items["image"].iat[rows[0]])}, vec)
            done += len(batch)
            saver.maybe_flush()
            if progress:
                progress(done, len(keys))
        saver.flush()
        report.embed_seconds = time.perf_counter() - t_embed
        report.checkpoints = saver.count
        report.saved = saver.enabled
        if saver.enabled:
            try:
                store.compact(stored)
            except OSError as exc:  # the chunks are all saved; merging them can wait for the next build
                log.warning("could not merge cache chunks in %s (%s)", report.cache_dir, exc.strerror or exc)
    # Name the first few; a catalog without images (metadata only) would otherwise log one line per product.
    for p in report.skipped[:MAX_SKIPPED_LOGGED]:
        log.warning("skipped %s: %s (%s)", p.id, p.reason, p.path)
    if len(report.skipped) > MAX_SKIPPED_LOGGED:
        log.warning("... and %d more skipped (the build report lists them all)",
                    len(report.skipped) - MAX_SKIPPED_LOGGED)
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
