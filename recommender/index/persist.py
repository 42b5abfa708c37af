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
