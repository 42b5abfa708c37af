"""The catalog's image vectors as one float16 ``.npy`` file, memory-mapped read-only for serving.

At a million products the 2280-d float32 vectors are 9.1 GB of process memory. With an ANN index the
façade touches only its candidates' rows (a few hundred per query), so it keeps the vectors on disk:
``vectors-f16-<blake2b of the float16 bytes>.npy`` under the cache, opened with ``mmap_mode="r"``. The
pages a query reads are file-backed page cache (``RssFile``), shared between processes serving the
same catalog and dropped by the kernel under memory pressure; the process's own (anonymous) memory no
longer grows with the vectors. float16 keeps cosines within ~1e-3 (docs/index.md, "Reduced vectors").

Nothing on disk is trusted: the name is the hash of the content; a file whose shape, dtype or bytes do
not match its name is replaced. Writes go to a temporary name, are fsynced and renamed into place.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from recommender.store.artifacts import _FILE_MODE

log = logging.getLogger(__name__)
PREFIX = "vectors-f16-"
ROW_BLOCK = 65_536  # rows converted at a time: bounded temporaries on a million-row catalog
KEEP = 3  # newest vector files kept in a folder (a catalog that changes daily does not pile them up)


def _blocks(vectors: np.ndarray):
    for start in range(0, len(vectors), ROW_BLOCK):
        yield start, np.ascontiguousarray(vectors[start:start + ROW_BLOCK], dtype=np.float16)


def float16_digest(vectors: np.ndarray) -> str:
    """blake2b (128-bit, hex) of ``vectors`` as float16 bytes, with their shape: names the file's content."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{vectors.shape}".encode())
    for _, block in _blocks(vectors):
        h.update(block.tobytes())
    return h.hexdigest()


def _verified(path: Path, shape: tuple[int, ...], digest: str) -> np.ndarray | None:
    try:
        mapped = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        log.warning("vector file %s unreadable (%s): rewritten", path.name, exc)
        return None
    if mapped.dtype != np.float16 or mapped.shape != shape or float16_digest(mapped) != digest:
        log.warning("vector file %s does not match its name: rewritten", path.name)
        return None
    return mapped


def _write(path: Path, vectors: np.ndarray) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, _FILE_MODE)  # mkstemp makes 0600; a cache is shared like any file the user writes
    os.close(fd)
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=vectors.shape)
        for start, block in _blocks(vectors):
            out[start:start + len(block)] = block
        out.flush()
        del out
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def mapped_float16(vectors: np.ndarray, folder: Path | str) -> np.ndarray:
    """``vectors`` as a read-only float16 memory map of ``folder/vectors-f16-<hash>.npy`` (written if absent
    or not matching). ``OSError`` if the folder cannot be written; the caller then keeps them in memory."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    digest = float16_digest(vectors)
    path = folder / f"{PREFIX}{digest}.npy"
    mapped = _verified(path, vectors.shape, digest) if path.is_file() else None
    if mapped is None:
        _write(path, vectors)
        mapped = np.load(path, mmap_mode="r")
    os.utime(path)  # the newest use: kept by the pruning below
    _prune(folder, keep=path)
    return mapped


def _prune(folder: Path, keep: Path) -> None:
    files = sorted((p for p in folder.glob(f"{PREFIX}*.npy") if p.is_file() and not p.is_symlink()),
                   key=lambda p: p.stat().st_mtime, reverse=True)
    for old in [p for p in files if p != keep][KEEP - 1:]:
        old.unlink(missing_ok=True)  # a process still mapping it keeps its pages until it exits
    for tmp in folder.glob(f".{PREFIX}*.tmp"):  # an hour old: not another process's write in progress
        if time.time() - tmp.stat().st_mtime > 3600:
            tmp.unlink(missing_ok=True)
