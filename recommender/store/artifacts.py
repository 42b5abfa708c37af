"""Cached image embeddings on disk: verified ``.npy`` chunks plus a ``manifest.json``.

Layout: ``<root>/<folder>/manifest.json`` and ``<root>/<folder>/vectors-<sha256 prefix>.npy``, one
folder per backbone and configuration (``efficientnet_lite0-1a2b3c4d``), so vectors of different
models or preprocessing never mix; the manifest repeats what made them and is checked on every load.

Vectors are keyed by the SHA-256 of the image file, so a rebuild embeds only new or changed images.
A build appends *chunks* as it goes (checkpoints): a killed build keeps every chunk it finished.

Nothing on disk is trusted:

- every chunk's file name is a prefix of the SHA-256 of its bytes, and the manifest records the full
  hash; a chunk whose bytes do not match (bit rot, an edit, a zeroed row) is dropped and re-embedded;
- chunk names must match ``vectors-<hex>.npy`` (no folders, no ``..``, no symlinks): a manifest cannot
  point outside its folder;
- a manifest of the wrong shape (not an object, missing keys, wrong types, wrong dimension) is treated
  as absent, with a warning, and the next build writes a good one.

Writers hold a file lock (``<folder>/.lock``) while they write a chunk and merge it into the manifest
*as it is on disk now*: two builds into one cache both keep their vectors. Every file is written to
a temporary name and renamed into place; a temporary file left by a ``kill -9`` is removed by the
next writer (under the lock, so never one another writer is still filling). Readers need no lock
and no write permission: a read-only cache serves queries.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recommender.errors import CacheError
from recommender.store.manifest import (
    CHUNK_NAME,
    FORMAT_VERSION,
    LEGACY_NAME,
    ManifestMemo,
    parse_manifest,
    stat_key,
)

__all__ = ["MANIFEST", "ArtifactStore", "StoredEmbeddings", "file_sha256", "parse_manifest"]

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
LOCK = ".lock"
# Appending a chunk per checkpoint keeps a build's writes proportional to its new work; past this
# many chunks the next build merges them into one (a few hundred files would slow every load).
MAX_CHUNKS = 16
LOCK_TIMEOUT_S = 600.0


NPY_HEADER_MAX = 65_536 + 16  # magic + the longest header .npy format 2 allows


def npy_header(head: bytes) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """``(shape, fortran_order, dtype, data offset)`` of the ``.npy`` file starting with ``head`` (its first
    ``NPY_HEADER_MAX`` bytes, or all of it); ``ValueError`` for anything that is not one."""
    buf = io.BytesIO(head)
    try:
        version = np.lib.format.read_magic(buf)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(buf)
    except (ValueError, OSError, SyntaxError, EOFError) as exc:
        raise ValueError(f"not a .npy file ({exc})") from None
    return shape, fortran, dtype, buf.tell()


def _npy_view(data: bytearray) -> np.ndarray:
    """The array stored in ``.npy`` bytes, as a view of them (no copy); ``ValueError`` for anything malformed,
    truncated or holding Python objects (never unpickled)."""
    shape, fortran, dtype, offset = npy_header(bytes(data[:NPY_HEADER_MAX]))
    if dtype.hasobject:
        raise ValueError("holds Python objects")
    count = int(np.prod(shape, dtype=np.int64))
    x = np.frombuffer(data, dtype=dtype, count=count, offset=offset)  # ValueError if the data is short
    return x.reshape(shape, order="F" if fortran else "C")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class StoredEmbeddings:
    """What a store folder holds: vectors by image hash, plus hashes known not to be images."""

    folder: str
    backbone: str
    feature_dim: int
    preprocess: str
    weights: str
    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)  # sha256 -> reason
    catalog_fingerprint: str = ""


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# mkstemp creates 0600 files; a cache is meant to be shared like any file the user writes (another
# account, a web server reading what a build made), so the usual umask applies.
_FILE_MODE = 0o666 & ~_current_umask()


def _atomic_write(path: Path, write: Callable[[io.BufferedWriter], object]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _made(stored: StoredEmbeddings) -> tuple:
    return stored.backbone, stored.preprocess, stored.weights, stored.feature_dim


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]


class ArtifactStore:
    """Reads and writes cached embeddings under ``root``."""

    def __init__(self, root: Path | str, lock_timeout: float = LOCK_TIMEOUT_S) -> None:
        self.root = Path(root)
        self.lock_timeout = lock_timeout
        self._memos: dict[str, ManifestMemo] = {}  # per folder; a build's checkpoints share this store

    def folder(self, name: str) -> Path:
        return self.root / name

    # -- preflight -------------------------------------------------------------------------
    def check_location(self) -> None:
        """Raise :class:`CacheError` if the cache root (or a parent of it) is a file, not a folder."""
        for p in (self.root, *self.root.parents):
            try:
                if p.exists() and not p.is_dir():
                    raise CacheError(f"cache {self.root}: {p} is a file, not a folder; give --cache a folder")
            except OSError as exc:
                raise CacheError(f"cache {self.root}: cannot be used ({_one_line(exc)})") from None
            if p.exists():
                return

    def writable_problem(self, folder: str, need_bytes: int = 0) -> str | None:
        """Why vectors cannot be saved into ``folder`` (not writable, disk too full), or None if they can."""
        self.check_location()
        path = self.folder(folder)
        try:
            path.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=path, prefix=".probe.", suffix=".tmp")
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            return f"cache {path} is not writable ({_one_line(exc)})"
        free = shutil.disk_usage(path).free
        if need_bytes and free < need_bytes:
            return (f"cache {path}: {free / 2**20:.0f} MB free on its disk, the build needs about "
                    f"{need_bytes / 2**20:.0f} MB")
        return None

    # -- reading ---------------------------------------------------------------------------
    def manifest(self, folder: str) -> dict | None:
        """The folder's manifest, validated and normalised (see :func:`parse_manifest`); ``None``
        (with a warning) if absent, unreadable or malformed."""
        path = self.folder(folder) / MANIFEST
        try:
            if not path.is_file():
                return None
            return parse_manifest(json.loads(path.read_bytes().decode("utf-8")))
        except (OSError, ValueError, RecursionError, MemoryError) as exc:
            log.warning("ignoring malformed cache manifest %s (%s); it will be rebuilt", path, _one_line(exc))
            return None

    def _read_chunk(self, folder: Path, chunk: dict, dim: int) -> np.ndarray | None:
        """A chunk's vectors if its bytes are what the manifest says; ``None`` (with a warning) if not."""
        path = folder / chunk["file"]
        try:
            if path.is_symlink() or not path.is_file():
                raise ValueError("missing" if not path.is_symlink() else "a symlink")
            with open(path, "rb") as f:  # one buffer, hashed and then viewed: np.load(BytesIO) was a second copy
                data = bytearray(os.fstat(f.fileno()).st_size)
                if f.readinto(data) != len(data):
                    raise ValueError("changed while being read")
            if chunk["sha256"] is not None and hashlib.sha256(data).hexdigest() != chunk["sha256"]:
                raise ValueError("content does not match its hash")
            x = _npy_view(data)
            if chunk["sha256"] is None:  # format 1: the name carries the hash of the array bytes
                legacy = LEGACY_NAME.fullmatch(chunk["file"])
                arr = np.ascontiguousarray(x, dtype=np.float32) if x.dtype == np.float32 else x
                if hashlib.sha256(arr.tobytes()).hexdigest()[:12] != legacy.group(1):
                    raise ValueError("content does not match its hash")
            if x.dtype != np.float32 or x.shape != (len(chunk["items"]), dim):
                raise ValueError(f"shape {x.shape} {x.dtype}, expected ({len(chunk['items'])}, {dim}) float32")
            if not all(np.isfinite(x[s:s + 8192]).all() for s in range(0, len(x), 8192)):  # no n x d bool temporary
                raise ValueError("non-finite values")
            return x
        except (OSError, ValueError, EOFError, MemoryError) as exc:
            log.warning("ignoring cache file %s (%s); its images will be re-embedded", path, _one_line(exc))
            return None

    def load(self, folder: str, backbone: str, preprocess: str, weights: str,
             feature_dim: int | None = None) -> StoredEmbeddings | None:
        """The cached vectors if they were made the same way (and have ``feature_dim`` dimensions,
        if given); ``None`` (with a warning) otherwise.

        Chunks that fail verification are left out (their images count as not cached).
        """
        for attempt in range(2):
            m = self.manifest(folder)
            if m is None:
                return None
            if feature_dim is not None and m["feature_dim"] != feature_dim:
                log.warning("ignoring cache manifest in %s: %d dimensions, these vectors have %d; it will be rebuilt",
                            self.folder(folder), m["feature_dim"], feature_dim)
                return None
            made_same_way = (m["backbone"] == backbone and m["preprocess"] == preprocess and m["weights"] == weights)
            if not made_same_way:
                log.info("cache in %s was made differently (%s/%s/%s); re-embedding", self.folder(folder),
                         m["backbone"], m["preprocess"], m["weights"])
                return None
            stored = StoredEmbeddings(folder, backbone, m["feature_dim"], preprocess, weights,
                                      failures={f["sha256"]: f["reason"] for f in m["failures"]},
                                      catalog_fingerprint=m["catalog_fingerprint"])
            missing = False
            for chunk in m["chunks"]:
                if attempt == 0 and not (self.folder(folder) / chunk["file"]).exists():
                    missing = True  # another process may have just compacted: read the manifest again
                    break
                x = self._read_chunk(self.folder(folder), chunk, m["feature_dim"])
                if x is not None:
                    for e, row in zip(chunk["items"], x, strict=True):
                        stored.vectors.setdefault(e["sha256"], row)
            if not missing:
                return stored
        return stored

    # -- writing ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self, folder: str) -> Iterator[Path]:
        """Hold ``<folder>/.lock`` (created if needed); :class:`CacheError` after ``lock_timeout`` s."""
        from filelock import FileLock, Timeout

        path = self.folder(folder)
        path.mkdir(parents=True, exist_ok=True)
        lock = FileLock(path / LOCK, timeout=self.lock_timeout)
        try:
            lock.acquire()
        except Timeout:
            raise CacheError(f"cache {path} is locked by another build for over {self.lock_timeout:.0f} s; "
                             f"wait for it or remove {path / LOCK} if no build is running") from None
        try:
            yield path
        finally:
            lock.release()

    @staticmethod
    def _remove_orphans(path: Path, keep: set[str]) -> None:
        """Under the lock: temporary files of killed writes, and chunks no manifest names."""
        for p in path.iterdir():
            name = p.name
            orphan = (name.endswith(".tmp") and name.startswith(".")
                      or (CHUNK_NAME.fullmatch(name) or LEGACY_NAME.fullmatch(name)) and name not in keep)
            if orphan:
                with contextlib.suppress(OSError):
                    p.unlink()

    def _memo(self, folder: str) -> ManifestMemo:
        return self._memos.setdefault(folder, ManifestMemo())

    def _write_manifest(self, path: Path, stored: StoredEmbeddings, chunks: list[dict], failures: dict) -> None:
        header = {
            "format": FORMAT_VERSION,
            "backbone": stored.backbone,
            "feature_dim": stored.feature_dim,
            "preprocess": stored.preprocess,
            "weights": stored.weights,
            "catalog_fingerprint": stored.catalog_fingerprint,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        memo = self._memo(path.name)
        data = memo.render(header, chunks, failures)
        _atomic_write(path / MANIFEST, lambda f: f.write(data))
        memo.remember(stat_key(path / MANIFEST), _made(stored), chunks, failures)

    def _write_chunk(self, path: Path, vectors: np.ndarray) -> tuple[str, str]:
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(vectors, dtype=np.float32), allow_pickle=False)
        data = buf.getvalue()
        digest = hashlib.sha256(data).hexdigest()
        name = f"vectors-{digest[:16]}.npy"
        _atomic_write(path / name, lambda f: f.write(data))
        return name, digest

    def _current(self, folder: str, stored: StoredEmbeddings) -> tuple[list[dict], dict]:
        """Chunks and failures of the manifest on disk now, if it was made the way ``stored`` was."""
        recalled = self._memo(folder).recall(stat_key(self.folder(folder) / MANIFEST), _made(stored))
        if recalled is not None:  # the file is still the one this store wrote or read last
            return recalled
        m = self.manifest(folder)
        same = m is not None and (m["backbone"], m["preprocess"], m["weights"], m["feature_dim"]) == (
            stored.backbone, stored.preprocess, stored.weights, stored.feature_dim)
        if not same:
            return [], {}
        chunks = []
        for c in m["chunks"]:
            if c["sha256"] is None:  # a format-1 file: verify it once and keep it as a format-2 chunk
                x = self._read_chunk(self.folder(folder), c, stored.feature_dim)
                if x is None:
                    continue
                name, digest = self._write_chunk(self.folder(folder), x)
                c = {"file": name, "sha256": digest, "items": c["items"]}
            chunks.append(c)
        return chunks, {f["sha256"]: f["reason"] for f in m["failures"]}

    def append(
        self,
        stored: StoredEmbeddings,
        items: list[dict[str, str]],
        vectors: np.ndarray,
        failures: dict[str, str] | None = None,
    ) -> Path:
        """Checkpoint: add vectors (row i belongs to ``items[i]``) and failures to the folder.

        Merged, under the lock, into the manifest *as it is on disk now*, so whatever another build
        appended meanwhile is kept. Raises ``OSError`` if the disk refuses the write (the previous
        manifest stays valid).
        """
        with self.locked(stored.folder) as path:
            chunks, known_failures = self._current(stored.folder, stored)
            chunks = [c for c in chunks if (path / c["file"]).is_file()]
            if len(items):
                name, digest = self._write_chunk(path, vectors)
                # Equal bytes may belong to other images (two products, identical vectors): the
                # file is shared, each entry keeps its own items.
                entry = {"file": name, "sha256": digest, "items": items}
                if entry not in chunks:
                    chunks.append(entry)
            self._write_manifest(path, stored, chunks, {**known_failures, **(failures or {})})
            self._remove_orphans(path, {c["file"] for c in chunks})
        return path

    def compact(self, stored: StoredEmbeddings, max_chunks: int = MAX_CHUNKS) -> bool:
        """Merge the folder's chunks into one if there are more than ``max_chunks``; True if it did.

        Streams: one chunk in memory at a time (its verified, not yet seen rows go to a raw temporary
        file), then the ``.npy`` is written from that file while it is hashed.
        """
        with self.locked(stored.folder) as path:
            chunks, failures = self._current(stored.folder, stored)
            if len(chunks) <= max_chunks:
                return False
            seen: set[str] = set()
            items: list[dict] = []
            fd, raw_name = tempfile.mkstemp(dir=path, prefix=".compact.", suffix=".tmp")
            raw = Path(raw_name)
            try:
                with os.fdopen(fd, "wb") as out:
                    for chunk in chunks:
                        x = self._read_chunk(path, chunk, stored.feature_dim)
                        if x is None:
                            continue
                        keep = []
                        for r, e in enumerate(chunk["items"]):
                            if e["sha256"] not in seen:
                                seen.add(e["sha256"])
                                items.append(e)
                                keep.append(r)
                        out.write(np.ascontiguousarray(x[keep], dtype="<f4").tobytes())
                name, digest = self._write_npy_from_raw(path, raw, len(items), stored.feature_dim)
            finally:
                raw.unlink(missing_ok=True)
            one = [{"file": name, "sha256": digest, "items": items}]
            self._write_manifest(path, stored, one, failures)
            self._remove_orphans(path, {name})
        return True

    @staticmethod
    def _write_npy_from_raw(path: Path, raw: Path, rows: int, dim: int) -> tuple[str, str]:
        """``(rows, dim)`` little-endian float32 bytes in ``raw`` -> a hashed ``vectors-*.npy`` beside it."""
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (rows, dim)})
        h = hashlib.sha256(header.getvalue())
        fd, tmp = tempfile.mkstemp(dir=path, prefix=".vectors.", suffix=".tmp")
        try:
            os.fchmod(fd, _FILE_MODE)
            with os.fdopen(fd, "wb") as out, open(raw, "rb") as src:
                out.write(header.getvalue())
                for block in iter(lambda: src.read(1 << 22), b""):
                    h.update(block)
                    out.write(block)
                out.flush()
                os.fsync(out.fileno())
            digest = h.hexdigest()
            name = f"vectors-{digest[:16]}.npy"
            os.replace(tmp, path / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return name, digest
