"""The cache manifest's shape, checked before anything in it is used.

A manifest is JSON written by this program, but read back from a folder anyone may have edited:
every key is type-checked, chunk names must be ``vectors-<hex>.npy`` (no folders, so no way out of
the cache folder) carrying the prefix of their recorded SHA-256, and the dimension must be a
positive int. Anything else raises ``ValueError``; the store then treats the manifest as absent.
"""

from __future__ import annotations

import json
import os
import re

FORMAT_VERSION = 2
CHUNK_NAME = re.compile(r"vectors-([0-9a-f]{16})\.npy")
LEGACY_NAME = re.compile(r"embeddings-([0-9a-f]{12})\.npy")  # format 1: one file, hash of the array bytes
SHA256 = re.compile(r"[0-9a-f]{64}")
MAX_FEATURE_DIM = 1 << 20


class _Malformed(ValueError):
    pass


def _need(cond: bool, what: str) -> None:
    if not cond:
        raise _Malformed(what)


def _items(raw: object, where: str) -> list[dict[str, str]]:
    _need(isinstance(raw, list), f"{where} is not a list")
    out = []
    for e in raw:
        _need(isinstance(e, dict) and isinstance(e.get("sha256"), str) and SHA256.fullmatch(e["sha256"]) is not None,
              f"an entry of {where} has no valid sha256")
        out.append({"sha256": e["sha256"], "id": str(e.get("id", "")), "image": str(e.get("image", ""))})
    return out


def parse_manifest(raw: object) -> dict:
    """A manifest as read from JSON -> the normalised format-2 dict; raises ValueError if malformed.

    Format 1 (one ``embeddings-*.npy`` for everything) is read as a single chunk so an existing cache
    is reused, not re-embedded.
    """
    _need(isinstance(raw, dict), "not a JSON object")
    fmt = raw.get("format")
    _need(fmt in (1, FORMAT_VERSION), f"unknown format {fmt!r}")
    for key in ("backbone", "preprocess", "weights"):
        _need(isinstance(raw.get(key), str), f"{key} missing or not text")
    dim = raw.get("feature_dim")
    _need(type(dim) is int and 0 < dim <= MAX_FEATURE_DIM, f"feature_dim {dim!r} is not a dimension")
    failures_raw = raw.get("failures", [])
    _need(isinstance(failures_raw, list), "failures is not a list")
    failures = {}
    for f in failures_raw:
        _need(isinstance(f, dict) and isinstance(f.get("sha256"), str) and isinstance(f.get("reason"), str),
              "a failure entry is malformed")
        failures[f["sha256"]] = f["reason"]
    chunks = []
    if fmt == 1:
        name = raw.get("embeddings")
        _need(isinstance(name, str) and LEGACY_NAME.fullmatch(name) is not None, f"embeddings file {name!r}")
        chunks.append({"file": name, "sha256": None, "items": _items(raw.get("items"), "items")})
    else:
        _need(isinstance(raw.get("chunks"), list), "chunks is not a list")
        for c in raw["chunks"]:
            _need(isinstance(c, dict), "a chunk is not an object")
            name, digest = c.get("file"), c.get("sha256")
            m = CHUNK_NAME.fullmatch(name) if isinstance(name, str) else None
            _need(m is not None, f"chunk file name {name!r} is not vectors-<hash>.npy")
            _need(isinstance(digest, str) and SHA256.fullmatch(digest) is not None and digest.startswith(m.group(1)),
                  f"chunk {name} has no matching sha256")
            chunks.append({"file": name, "sha256": digest, "items": _items(c.get("items"), f"items of {name}")})
    return {
        "format": FORMAT_VERSION, "backbone": raw["backbone"], "preprocess": raw["preprocess"],
        "weights": raw["weights"], "feature_dim": dim,
        "catalog_fingerprint": str(raw.get("catalog_fingerprint", "")), "created": str(raw.get("created", "")),
        "chunks": chunks, "failures": [{"sha256": h, "reason": r} for h, r in failures.items()],
        # Every item of every chunk, for readers that only count (``python -m recommender info``).
        "items": [e for c in chunks for e in c["items"]],
    }


class ManifestMemo:
    """What one store last wrote or read as a folder's manifest, with each chunk's JSON text kept.

    A checkpoint merges its chunk into the manifest *on disk now*: reading, parsing and re-serialising every
    item of every chunk made each checkpoint O(catalog) (0.5 s at 70k; at 1M most of a build). When the file is
    still the one remembered (same inode, size, mtime and ctime), its chunks are taken from here, and a write
    serialises only the chunks not rendered before. Another process's write replaces the file (a new inode), so
    it is read again. The bytes written are a format-2 manifest like any other (``parse_manifest`` reads them).
    """

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.made: tuple | None = None
        self.chunks: list[dict] = []
        self.failures: dict[str, str] = {}
        self._texts: dict[int, tuple[dict, str]] = {}  # id(chunk) -> (that chunk, its JSON): `is` checked

    def recall(self, key: tuple | None, made: tuple) -> tuple[list[dict], dict[str, str]] | None:
        if key is None or key != self.key or made != self.made:
            return None
        return list(self.chunks), dict(self.failures)

    def remember(self, key: tuple | None, made: tuple, chunks: list[dict], failures: dict[str, str]) -> None:
        self.key, self.made, self.chunks, self.failures = key, made, list(chunks), dict(failures)

    def render(self, header: dict, chunks: list[dict], failures: dict[str, str]) -> bytes:
        """The manifest's bytes: ``header`` (format, backbone, ...), then the chunks and failures."""
        texts: dict[int, tuple[dict, str]] = {}
        parts = []
        for c in chunks:
            hit = self._texts.get(id(c))
            if hit is None or hit[0] is not c:
                hit = (c, json.dumps({"file": c["file"], "sha256": c["sha256"], "items": c["items"]},
                                     ensure_ascii=False))
            texts[id(c)] = hit
            parts.append(hit[1])
        self._texts = texts
        head = json.dumps(header, ensure_ascii=False)
        tail = json.dumps([{"sha256": h, "reason": r} for h, r in failures.items()], ensure_ascii=False)
        body = ",\n".join(parts)
        return (head[:-1] + ', "chunks": [\n' + body + '\n], "failures": ' + tail + "}\n").encode("utf-8")


def stat_key(path) -> tuple | None:
    """Identity of a file's current version (device, inode, size, mtime, ctime), or None if it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns
