"""Cached vectors streamed straight into the caller's matrix, a block of rows at a time.

:meth:`ArtifactStore.load` holds every chunk in memory (after compaction, one file of all the
catalog's float32 rows) and the build then copies them into its own matrix: two full copies at the
fit's peak (1.3 GB at 70k products of 2,280-d). Here a chunk is read in blocks of about
:data:`BLOCK_BYTES`, hashed as it goes, and each wanted row is copied into ``out`` (cast to its dtype,
e.g. bfloat16 for a catalog served from a memory-mapped file). The chunk's hash is known only at its
end: if it does not match (or a block holds a non-finite value, or the header is not the float32
matrix the manifest describes), every row it filled is zeroed and unclaimed again, so those images
are re-embedded or taken from a later chunk, exactly as :meth:`ArtifactStore.load` drops a bad chunk.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from pathlib import Path

import numpy as np

from recommender.store.artifacts import (
    NPY_HEADER_MAX,
    ArtifactStore,
    StoredEmbeddings,
    _one_line,
    file_sha256,
    npy_header,
)

__all__ = ["BLOCK_BYTES", "fill_cached"]

log = logging.getLogger(__name__)
BLOCK_BYTES = 8 << 20  # read and hashed at a time: bounds the extra memory whatever the cache holds


def _float32_header(f, rows: int, dim: int) -> int:
    """Offset of the data in an ``.npy`` file holding exactly ``(rows, dim)`` little-endian float32 in C
    order; ``ValueError`` for anything else (the store writes nothing else)."""
    shape, fortran, dtype, offset = npy_header(f.read(NPY_HEADER_MAX))
    if dtype != np.dtype("<f4") or fortran or shape != (rows, dim):
        order = " Fortran order" if fortran else ""
        raise ValueError(f"shape {shape} {dtype}{order}, expected ({rows}, {dim}) float32")
    return offset


def _stream_chunk(path: Path, chunk: dict, dim: int, pairs: np.ndarray, out: np.ndarray) -> None:
    """Copy chunk rows ``pairs[:, 0]`` into ``out[pairs[:, 1]]`` (pairs sorted by chunk row); ``ValueError``
    or ``OSError`` if the chunk is not what the manifest says (the caller undoes the copies)."""
    rows = len(chunk["items"])
    if path.is_symlink() or not path.is_file():
        raise ValueError("missing" if not path.is_symlink() else "a symlink")
    h = hashlib.sha256()
    with open(path, "rb") as f:
        offset = _float32_header(f, rows, dim)
        if os.fstat(f.fileno()).st_size != offset + rows * dim * 4:
            raise ValueError("size does not match its header")
        f.seek(0)
        h.update(f.read(offset))
        step = max(1, BLOCK_BYTES // (dim * 4))
        buf = bytearray(min(step, max(rows, 1)) * dim * 4)
        for start in range(0, rows, step):
            count = min(step, rows - start)
            view = memoryview(buf)[:count * dim * 4]
            if f.readinto(view) != len(view):
                raise ValueError("changed while being read")
            h.update(view)
            x = np.frombuffer(buf, dtype="<f4", count=count * dim).reshape(count, dim)
            if not np.isfinite(x).all():
                raise ValueError("non-finite values")
            lo, hi = np.searchsorted(pairs[:, 0], [start, start + count])
            if hi > lo:
                out[pairs[lo:hi, 1]] = x[pairs[lo:hi, 0] - start]
    if h.hexdigest() != chunk["sha256"]:
        raise ValueError("content does not match its hash")


def _why(path: Path, chunk: dict, exc: BaseException) -> str:
    """The reason a chunk was refused: first whether its bytes are the ones recorded (a header that does not
    parse is usually a file that is not what was written), else what is wrong with them."""
    if not (path.is_symlink() or not path.is_file()):
        with contextlib.suppress(OSError):
            if file_sha256(path) != chunk["sha256"]:
                return "content does not match its hash"
    return _one_line(exc)


def fill_cached(
    store: ArtifactStore, folder: str, backbone: str, preprocess: str, weights: str, feature_dim: int,
    rows_by_hash: dict[str, list[int]], out: np.ndarray,
) -> tuple[StoredEmbeddings | None, np.ndarray]:
    """Copy the cached vector of every image in ``rows_by_hash`` (image SHA-256 -> rows of ``out``) into
    ``out``. Returns ``(stored, filled)``: the folder's header and failures (``vectors`` left empty;
    ``None`` where :meth:`ArtifactStore.load` would return ``None``) and a bool mask of the rows filled.
    Where several chunks hold an image the first good one wins, as in ``load``."""
    filled = np.zeros(len(out), dtype=bool)
    for attempt in range(2):
        m = store.manifest(folder)
        if m is None:
            return None, filled
        if m["feature_dim"] != feature_dim:
            log.warning("ignoring cache manifest in %s: %d dimensions, these vectors have %d; it will be rebuilt",
                        store.folder(folder), m["feature_dim"], feature_dim)
            return None, filled
        if (m["backbone"], m["preprocess"], m["weights"]) != (backbone, preprocess, weights):
            log.info("cache in %s was made differently (%s/%s/%s); re-embedding", store.folder(folder),
                     m["backbone"], m["preprocess"], m["weights"])
            return None, filled
        stored = StoredEmbeddings(folder, backbone, feature_dim, preprocess, weights,
                                  failures={f["sha256"]: f["reason"] for f in m["failures"]},
                                  catalog_fingerprint=m["catalog_fingerprint"])
        claimed: set[str] = set()
        restart = False
        for chunk in m["chunks"]:
            path = store.folder(folder) / chunk["file"]
            if attempt == 0 and not path.exists():
                restart = True  # another process may have just compacted: read the manifest again
                break
            mine = []
            for r, e in enumerate(chunk["items"]):
                sha = e["sha256"]
                if sha in rows_by_hash and sha not in claimed:
                    claimed.add(sha)
                    mine.append((r, sha))
            if not mine:
                continue
            pairs = np.array([(r, i) for r, sha in mine for i in rows_by_hash[sha]], dtype=np.int64).reshape(-1, 2)
            try:
                if chunk["sha256"] is None:  # a format-1 file: verified whole by the store, then copied
                    x = store._read_chunk(store.folder(folder), chunk, feature_dim)  # noqa: SLF001
                    if x is None:
                        raise ValueError("see the warning above")
                    out[pairs[:, 1]] = x[pairs[:, 0]]
                else:
                    _stream_chunk(path, chunk, feature_dim, pairs, out)
                filled[pairs[:, 1]] = True
            except (OSError, ValueError, MemoryError) as exc:
                out[pairs[:, 1]] = 0
                claimed.difference_update(sha for _, sha in mine)
                if chunk["sha256"] is not None:
                    log.warning("ignoring cache file %s (%s); its images will be re-embedded", path,
                                _why(path, chunk, exc))
        if not restart:
            return stored, filled
        out[filled] = 0
        filled[:] = False
    return stored, filled
