"""Cached image embeddings on disk: ``.npy`` vectors plus a ``manifest.json``.

Layout: ``<root>/<folder>/manifest.json`` and ``<root>/<folder>/embeddings-<hash>.npy``, one folder
per backbone and configuration (``efficientnet_lite0-1a2b3c4d``), so vectors of different models or
preprocessing never mix; the manifest repeats what made them and is checked on every load.

Vectors are keyed by the SHA-256 of the image file, so a rebuild embeds only new or changed images
(a renamed or re-used file is not embedded twice). Every write goes to a temporary file that is
renamed into place, and the manifest is written last: a crash leaves the previous cache intact,
never a half-written one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
FORMAT_VERSION = 1


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


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ArtifactStore:
    """Reads and writes cached embeddings under ``root``."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def folder(self, name: str) -> Path:
        return self.root / name

    def manifest(self, folder: str) -> dict | None:
        path = self.folder(folder) / MANIFEST
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable cache manifest %s (%s); it will be rebuilt", path, exc)
            return None

    def load(self, folder: str, backbone: str, preprocess: str, weights: str) -> StoredEmbeddings | None:
        """The cached vectors if they were made the same way; ``None`` (with a warning) otherwise."""
        m = self.manifest(folder)
        if m is None:
            return None
        made_same_way = (m.get("format") == FORMAT_VERSION and m.get("backbone") == backbone
                         and m.get("preprocess") == preprocess and m.get("weights") == weights)
        if not made_same_way:
            log.info("cache in %s was made differently (%s/%s/%s); re-embedding", self.folder(folder),
                     m.get("backbone"), m.get("preprocess"), m.get("weights"))
            return None
        path = self.folder(folder) / str(m.get("embeddings", ""))
        hashes = [e["sha256"] for e in m.get("items", [])]
        try:
            x = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable cache file %s (%s); it will be rebuilt", path, exc)
            return None
        if x.dtype != np.float32 or x.shape != (len(hashes), m.get("feature_dim")) or not np.isfinite(x).all():
            log.warning("ignoring cache %s: shape %s/%s does not match its manifest; it will be rebuilt",
                        path, x.shape, x.dtype)
            return None
        return StoredEmbeddings(
            folder, backbone, int(m["feature_dim"]), preprocess, weights,
            vectors=dict(zip(hashes, x, strict=True)),
            failures={f["sha256"]: f["reason"] for f in m.get("failures", [])},
            catalog_fingerprint=m.get("catalog_fingerprint", ""),
        )

    def save(
        self,
        stored: StoredEmbeddings,
        items: list[dict[str, str]],
        vectors: np.ndarray,
        failures: list[dict[str, str]],
    ) -> Path:
        """Write vectors (row i belongs to ``items[i]``) and their manifest, atomically."""
        folder = self.folder(stored.folder)
        folder.mkdir(parents=True, exist_ok=True)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        name = f"embeddings-{hashlib.sha256(vectors.tobytes()).hexdigest()[:12]}.npy"
        _atomic_write(folder / name, lambda f: np.save(f, vectors, allow_pickle=False))
        manifest = {
            "format": FORMAT_VERSION,
            "backbone": stored.backbone,
            "feature_dim": stored.feature_dim,
            "preprocess": stored.preprocess,
            "weights": stored.weights,
            "catalog_fingerprint": stored.catalog_fingerprint,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "embeddings": name,
            "items": items,
            "failures": failures,
        }
        data = json.dumps(manifest, indent=1, ensure_ascii=False).encode("utf-8")
        _atomic_write(folder / MANIFEST, lambda f: f.write(data))
        for old in folder.glob("embeddings-*.npy"):
            if old.name != name:
                old.unlink(missing_ok=True)
        return folder
