"""Save and load an index under a caller-chosen folder and content key, so a warm fit skips the build.

Layout: ``<folder>/<key>/`` holds the backend's own files plus ``manifest.json`` (kind, dim, ntotal,
format). A save writes into a temporary sibling folder and renames it into place, so a reader (or a
killed writer) never sees half an index; a folder whose manifest is missing, unreadable or
inconsistent loads as ``None`` (a cache miss: the caller rebuilds and saves over it), never as a
wrong index. The key names the content (e.g. a hash of the vectors' cache key and the index
parameters); it must be a plain file name, so a hostile key cannot write outside ``folder``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import uuid
from pathlib import Path

from recommender.index.base import VectorIndex
from recommender.index.factory import backend_class

FORMAT = 1
MANIFEST = "manifest.json"
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

log = logging.getLogger(__name__)


def _target(folder: Path | str, key: str) -> Path:
    if not isinstance(key, str) or not _KEY.fullmatch(key) or ".." in key:
        raise ValueError(f"index key {key!r} must be 1-128 letters, digits, '.', '_' or '-' (a plain file name)")
    return Path(folder) / key


def save_index(index: VectorIndex, folder: Path | str, key: str) -> Path:
    """Write ``index`` to ``folder/key`` atomically (replacing an older save under that key); returns the path."""
    target = _target(folder, key)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{key}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        index.save(tmp)
        manifest = {"format": FORMAT, "kind": index.kind, "dim": index.dim, "ntotal": index.ntotal, "key": key}
        (tmp / MANIFEST).write_text(json.dumps(manifest))
        old = None
        if target.exists():
            old = target.parent / f".{key}.old-{uuid.uuid4().hex[:8]}"
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_index(folder: Path | str, key: str, kind: str | None = None, dim: int | None = None) -> VectorIndex | None:
    """The index saved under ``folder/key``, or ``None`` if there is none usable.

    ``kind`` / ``dim``, when given, must match the saved index (else ``None``: a save made with other
    settings is a miss, not an error).
    """
    target = _target(folder, key)
    try:
        manifest = json.loads((target / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    try:
        if manifest.get("format") != FORMAT or manifest.get("key") != key:
            return None
        if (kind is not None and manifest["kind"] != kind) or (dim is not None and int(manifest["dim"]) != dim):
            return None
        cls = backend_class(manifest["kind"])
        index = cls.load(target)
        if index.dim != int(manifest["dim"]) or index.ntotal != int(manifest["ntotal"]):
            raise ValueError("the index does not match its manifest")
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        log.warning("ignoring the unusable saved index %s (%s); it will be rebuilt", target, exc)
        return None
    return index


def index_content_key(index: VectorIndex, vectors, rows, digest: str | None = None) -> str:
    """A key naming exactly what an index built from ``vectors[rows]`` (labelled ``rows``) would hold.

    Hashes the kind, the backend's parameters, the labels and every vector byte (blake2b: ~1 s per GB),
    so a different catalog, model, post-processing or parameter can never load another's graph.
    ``digest``: a hash already naming every byte of ``vectors`` (a content-addressed vector file's, verified
    when it was mapped), hashed instead of the vectors: reading them again through the map put the whole
    file in the process's RSS.
    """
    import hashlib

    import numpy as np

    params = {k: v for k, v in sorted(vars(index).items())
              if not k.startswith("_") and not k.endswith("_") and isinstance(v, int | float | str | bool)}
    h = hashlib.blake2b(digest_size=16)
    given = np.asarray(vectors[:0]).dtype
    dtype = given if given.name in ("float16", "bfloat16") else np.float32  # hashed as stored: no float32 copy
    h.update(json.dumps({"format": FORMAT, "kind": index.kind, "params": params, "dtype": np.dtype(dtype).name},
                        sort_keys=True).encode())
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    h.update(rows.tobytes())
    if digest is not None:
        h.update(f"content {digest} {tuple(np.shape(vectors))}".encode())
        return f"{index.kind}-{h.hexdigest()}"
    # 8,192 rows at a time, hashed in place: 65,536 float32 rows gathered and copied again by tobytes() were 1.2 GB of
    # temporaries, a warm fit's peak at 70k (2.02 GB). The bytes hashed, hence the keys, are the same.
    for start in range(0, len(rows), 8_192):
        h.update(np.ascontiguousarray(vectors[rows[start:start + 8_192]], dtype=dtype))
    return f"{index.kind}-{h.hexdigest()}"


def prune_saved_indexes(folder: Path | str, keep: str, max_kept: int = 3) -> None:
    """Delete saved indexes under ``folder`` beyond the ``max_kept`` most recently written (``keep`` stays),
    and temporaries a killed save left behind: a catalog that changes daily does not pile up graphs."""
    folder = Path(folder)
    saves = sorted((p for p in folder.iterdir() if p.is_dir() and not p.is_symlink() and _KEY.fullmatch(p.name)
                    and (p / MANIFEST).is_file()), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in [p for p in saves if p.name != keep][max(max_kept - 1, 0):]:
        shutil.rmtree(old, ignore_errors=True)
    import time

    for tmp in folder.glob(".*.tmp-*"):  # an hour old: not another process's save in progress
        if tmp.is_dir() and not tmp.is_symlink() and time.time() - tmp.stat().st_mtime > 3600:
            shutil.rmtree(tmp, ignore_errors=True)
