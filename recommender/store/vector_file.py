"""The catalog's image vectors as one bfloat16 ``.npy`` file, memory-mapped read-only for serving.

At a million products the 2280-d float32 vectors are 9.1 GB of process memory. With an ANN index the
façade touches only its candidates' rows (a few hundred per query), so it keeps the vectors on disk:
``vectors-bf16-<blake2b of the bfloat16 bytes>.npy`` under the cache, opened with ``mmap_mode="r"``. The
pages a query reads are file-backed page cache (``RssFile``), shared between processes serving the
same catalog and dropped by the kernel under memory pressure; the process's own (anonymous) memory no
longer grows with the vectors.

Why bfloat16 and not float16 (both 2 bytes): every query converts its ~1,000 candidates' rows to float32
for the exact re-score, and numpy's float16 cast is a scalar loop on these CPUs (1,000 x 2,280 values:
2.4 ms, a third of an item query at 100k) while bfloat16 -> float32 is a 16-bit shift (0.6 ms,
``ml_dtypes``). bfloat16 keeps 8 mantissa bits to float16's 11: on Fashion-MNIST vectors the largest
cosine error is 5e-4 (float16: 7e-5) and the image top-10 agrees with float32 at .995 (float16 .999);
docs/index.md, "Serving vectors". The file holds the raw 16-bit patterns (``<u2``), viewed as bfloat16.

Nothing on disk is trusted: the name is the hash of the content; a file whose shape, dtype or bytes do
not match its name is replaced. Writes go to a temporary name, are fsynced and renamed into place.
"""

from __future__ import annotations

import hashlib
import io
import logging
import mmap
import os
import tempfile
import time
from pathlib import Path

import ml_dtypes
import numpy as np

from recommender.store.artifacts import _FILE_MODE

log = logging.getLogger(__name__)
BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
PREFIX = "vectors-bf16-"
LEGACY_PREFIXES = ("vectors-f16-",)  # float16 files of earlier versions: never read again, removed when pruning
ROW_BLOCK = 8_192  # rows converted at a time: 8,192 x 2,280 bfloat16 = 37 MB (65,536 held ~600 MB at a fit's peak)
KEEP = 3  # newest vector files kept in a folder (a catalog that changes daily does not pile them up)


def _blocks(vectors: np.ndarray):
    """``vectors`` as bfloat16 bit patterns (uint16), a block of rows at a time (rounded to nearest even)."""
    for start in range(0, len(vectors), ROW_BLOCK):
        block = vectors[start:start + ROW_BLOCK]
        if block.dtype != BFLOAT16:  # float16 goes through float32: ml_dtypes casts from float32 only, exactly
            block = np.asarray(block, dtype=np.float32).astype(BFLOAT16)
        yield start, np.ascontiguousarray(block).view(np.uint16)


def bfloat16_digest(vectors: np.ndarray) -> str:
    """blake2b (128-bit, hex) of ``vectors`` as bfloat16 bytes, with their shape: names the file's content."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{vectors.shape}".encode())
    for _, block in _blocks(vectors):
        h.update(block)  # the contiguous block itself: tobytes() was a second copy of it
    return h.hexdigest()


def _header(shape: tuple[int, ...]) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<u2", "fortran_order": False, "shape": tuple(shape)})
    return buf.getvalue()


def _verified(path: Path, shape: tuple[int, ...], digest: str) -> np.ndarray | None:
    """The file mapped, if its header is ours for ``shape`` and its bytes hash to ``digest``. Checked with plain
    reads, not through the mapping: pages read through a map count in the process's RSS (+456 MB at 100k
    products, a warm fit's peak); read() leaves them in the page cache only."""
    header = _header(shape)
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{tuple(shape)}".encode())
    try:
        with open(path, "rb") as f:
            ok = f.read(len(header)) == header and os.fstat(f.fileno()).st_size == len(header) + 2 * int(np.prod(shape))
            for block in iter(lambda: f.read(1 << 22), b"") if ok else ():
                h.update(block)
        mapped = np.load(path, mmap_mode="r") if ok and h.hexdigest() == digest else None
    except (OSError, ValueError) as exc:
        log.warning("vector file %s unreadable (%s): rewritten", path.name, exc)
        return None
    if mapped is None or mapped.dtype != np.uint16 or mapped.shape != tuple(shape):
        log.warning("vector file %s does not match its name: rewritten", path.name)
        return None
    return mapped.view(BFLOAT16)


def _write(path: Path, vectors: np.ndarray) -> None:
    """Header and rows with write() (a writable map would put every page in this process's RSS), fsynced."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _FILE_MODE)  # mkstemp makes 0600; a cache is shared like any file the user writes
        with os.fdopen(fd, "wb") as f:
            f.write(_header(vectors.shape))
            for _, block in _blocks(vectors):
                f.write(block)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def content_digest(vectors: np.ndarray) -> str | None:
    """The digest naming a mapped vector file's content (``bfloat16_digest`` of what was verified or written),
    from its name; None for vectors not mapped by :func:`mapped_bfloat16`."""
    name = Path(getattr(vectors, "filename", None) or "").name
    mapping = getattr(vectors, "_mmap", None)
    if not (name.startswith(PREFIX) and name.endswith(".npy")) or vectors.dtype != BFLOAT16 or mapping is None:
        return None
    # The whole file, not a slice of it (a slice keeps the file's name): rows start right after the header
    # and run to the end of the mapping.
    start = np.frombuffer(mapping, dtype=np.uint8).ctypes.data
    header = len(_header(vectors.shape))
    whole = (vectors.flags.c_contiguous and vectors.ctypes.data == start + header
             and header + vectors.nbytes == len(mapping))
    return name[len(PREFIX):-len(".npy")] if whole else None


def read_rows(vectors: np.ndarray, rows: np.ndarray | slice) -> np.ndarray:
    """``vectors[rows]`` as float32. From a mapped vector file the rows are read with ``pread`` rather than through
    the map: a fit's sampled reads through it pulled (with the kernel's fault-around) the whole file into the
    process's RSS, where a query's pages belong."""
    if content_digest(vectors) is None:
        return np.asarray(vectors[rows], dtype=np.float32)
    dim = vectors.shape[1]
    row_bytes, header = 2 * dim, len(_header(vectors.shape))
    if isinstance(rows, slice):
        start, stop, _ = rows.indices(len(vectors))
        out = np.empty((max(stop - start, 0), dim), np.uint16)
        with open(vectors.filename, "rb") as f:
            f.seek(header + start * row_bytes)
            if out.size and f.readinto(memoryview(out.reshape(-1)).cast("B")) != out.nbytes:
                raise OSError(f"{vectors.filename}: shorter than its header says")
    else:
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), dim), np.uint16)
        with open(vectors.filename, "rb") as f:
            for j, r in enumerate(rows.tolist()):
                out[j] = np.frombuffer(os.pread(f.fileno(), row_bytes, header + r * row_bytes), np.uint16)
    return out.view(BFLOAT16).astype(np.float32)


def _memory_available() -> int | None:
    """Linux's estimate of the memory available without swapping (page cache included), else None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


MADV_POPULATE_READ = 22  # Linux >= 5.14: fault every page of a range in, read-only, without touching its bytes


def populate(vectors: np.ndarray, max_share: float = 0.5, own_pages_only: bool = False) -> int:
    """Map every page of a vector file's mapping now (``madvise(MADV_POPULATE_READ)``) and return the bytes mapped;
    0 for vectors not mapped from a file, a file larger than ``max_share`` of the memory available, or a system
    without the call. Until its pages are mapped, a query's gather of ~768 rows faults them in one by one: at 1M
    products the first queries after a start took 24-173 ms against 7 once warm, and the median over the first
    100 8.4-9.3 ms against 7.0-7.6 populated (4.4 GB in 0.2 s when the file is in the page cache; docs/index.md,
    session 15). The pages are the shared page cache (``RssFile``): the kernel may still drop them.
    ``own_pages_only``: only the pages under ``vectors`` (a live catalog's grown buffer: not its spare rows), not
    the whole mapping (a served file: what else it holds is read by the index too)."""
    mapping = getattr(vectors, "_mmap", None)
    available = _memory_available()
    if mapping is None or available is None:
        return 0
    if own_pages_only and vectors.flags.c_contiguous and vectors.nbytes:
        address = vectors.ctypes.data
        start = address - address % mmap.PAGESIZE
        length = address + vectors.nbytes - start
    else:
        start, length = np.frombuffer(mapping, dtype=np.uint8).ctypes.data, len(mapping)
    if length > max_share * available:
        log.info("vector file of %.1f GB not populated: %.1f GB available", length / 2**30, available / 2**30)
        return 0
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        madvise = libc.madvise
    except (OSError, AttributeError):
        return 0
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    if madvise(start, length, MADV_POPULATE_READ) != 0:  # EINVAL before Linux 5.14: left to the queries
        log.debug("madvise(MADV_POPULATE_READ) failed: errno %d", ctypes.get_errno())
        return 0
    return length


def growable_copy(view: np.memmap, capacity: int) -> np.memmap | None:
    """``view``'s rows in a scratch file beside the file it maps, with room for ``capacity`` rows, mapped
    read-write and populated; None where that folder cannot take it (the caller then grows in memory).

    For a live catalog served from its mapped vector file (~2.3 KB a product at scale), which would otherwise be
    copied into the process's own memory at its first write (at 100k: +538 MB RssAnon, 0.4 s; ~5 GB at 1M). The
    copy lives in the page cache instead, like the file it came from, which is never written: it is the
    content-addressed cache's.
    """
    folder = Path(view.filename).parent if getattr(view, "filename", None) else None
    if folder is None or not view.flags.c_contiguous:
        return None
    row_bytes = view.dtype.itemsize * int(np.prod(view.shape[1:], dtype=np.int64))
    try:
        # A file without a name (O_TMPFILE): nothing to clean up, even after a kill -9.
        with tempfile.TemporaryFile(dir=folder) as f:
            # Blocks reserved up front: a full disk is an OSError here, never a SIGBUS on a later write.
            os.posix_fallocate(f.fileno(), 0, capacity * row_bytes)
            for start in range(0, len(view), ROW_BLOCK):  # read from the mapping a block at a time
                f.write(memoryview(view[start:start + ROW_BLOCK].view(np.uint8)))
            f.flush()
            grown = np.memmap(f, dtype=view.dtype, mode="r+", shape=(capacity, *view.shape[1:]))
    except (OSError, ValueError):
        return None
    # Mapped now, as warm_up maps a served file: the next queries do not fault the rows in page by page.
    populate(grown[:len(view)], own_pages_only=True)
    return grown


def mapped_bfloat16(vectors: np.ndarray, folder: Path | str) -> np.ndarray:
    """``vectors`` as a read-only bfloat16 memory map of ``folder/vectors-bf16-<hash>.npy`` (written if absent
    or not matching). ``OSError`` if the folder cannot be written; the caller then keeps them in memory."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    digest = bfloat16_digest(vectors)
    path = folder / f"{PREFIX}{digest}.npy"
    mapped = _verified(path, vectors.shape, digest) if path.is_file() else None
    if mapped is None:
        _write(path, vectors)
        mapped = np.load(path, mmap_mode="r").view(BFLOAT16)
    os.utime(path)  # the newest use: kept by the pruning below
    _prune(folder, keep=path)
    return mapped


def _prune(folder: Path, keep: Path) -> None:
    files = sorted((p for p in folder.glob(f"{PREFIX}*.npy") if p.is_file() and not p.is_symlink()),
                   key=lambda p: p.stat().st_mtime, reverse=True)
    for old in [p for p in files if p != keep][KEEP - 1:]:
        old.unlink(missing_ok=True)  # a process still mapping it keeps its pages until it exits
    for prefix in LEGACY_PREFIXES:
        for old in folder.glob(f"{prefix}*.npy"):
            if old.is_file() and not old.is_symlink():
                old.unlink(missing_ok=True)
    for tmp in folder.glob(f".{PREFIX}*.tmp"):  # an hour old: not another process's write in progress
        if time.time() - tmp.stat().st_mtime > 3600:
            tmp.unlink(missing_ok=True)
