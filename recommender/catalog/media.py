"""Product images the service owns: content-addressed files under one media folder.

Every image the API accepts (an upload, a path under the image root, a row of an imported CSV) is
decoded once to prove it is an image, then copied here as ``<sha256[:2]>/<sha256><ext>``. The
recommender's catalog root is this folder, so it only ever reads files the service wrote; an
image is served back by its hash from the database, never by a client-supplied path.

Writes go to a temporary file that is renamed into place: a crash leaves either the whole file
or nothing (an orphan file, never a half one), and the same bytes are stored once.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from recommender.errors import ImageError
from recommender.features.images import MAX_PIXELS, open_image
from recommender.features.uploads import sniff_format

EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "WebP": ".webp"}
MEDIA_TYPES = {".jpg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}
_NAME = re.compile(r"^[0-9a-f]{64}\.(jpg|png|webp)$")
GC_GRACE_S = 3600.0  # a PUT stores its file before its row commits: younger files are never collected


@dataclass(frozen=True)
class MediaGarbage:
    """What :meth:`MediaStore.collect_garbage` found (and removed unless it was a dry run)."""

    orphans: list[str]
    temporaries: list[str]
    bytes_freed: int
    kept_young: int
    dry_run: bool

    def summary(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        return (f"media: {verb} {len(self.orphans)} unreferenced image(s) and {len(self.temporaries)} leftover "
                f"temporary file(s), {self.bytes_freed / 1e6:.1f} MB; {self.kept_young} unreferenced file(s) "
                f"younger than the grace period kept")


def check_decodes(data: bytes, max_pixels: int = MAX_PIXELS) -> None:
    """Decode ``data`` fully through :func:`open_image` (the app's and the build's decoder hardening);
    any decoder failure becomes :class:`ImageError`, never another exception."""
    try:
        open_image(data, max_pixels=max_pixels)
    except ImageError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError, struct.error, Image.DecompressionBombError) as exc:
        raise ImageError(f"uploaded image: corrupt or truncated image ({type(exc).__name__}: {exc})") from None


class MediaStore:
    """Content-addressed image files under ``root`` (created on first write)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    @staticmethod
    def relative_name(sha256: str, ext: str) -> str:
        return f"{sha256[:2]}/{sha256}{ext}"

    def path(self, sha256: str, ext: str) -> Path:
        """The file of a stored image; raises ValueError for anything that is not a hash name."""
        if not _NAME.match(f"{sha256}{ext}"):
            raise ValueError(f"not a media file name: {sha256}{ext}")
        return self.root / self.relative_name(sha256, ext)

    def put(self, data: bytes, max_pixels: int = MAX_PIXELS, durable: bool = True) -> tuple[str, str]:
        """Check ``data`` is a JPEG, PNG or WebP that decodes, store it, return ``(sha256, ext)``.

        Raises :class:`ImageError` (nothing written) for any other content. ``durable=False`` skips the
        per-file fsync: a bulk import calls :meth:`flush` once before committing the rows that name them.
        """
        fmt = sniff_format(data)
        if fmt is None:
            raise ImageError("not a JPEG, PNG or WebP image")
        check_decodes(data, max_pixels)
        sha = hashlib.sha256(data).hexdigest()
        ext = EXTENSIONS[fmt]
        target = self.path(sha, ext)
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    if durable:
                        os.fsync(f.fileno())
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        return sha, ext

    @staticmethod
    def flush() -> None:
        """Make every file written so far durable (one ``sync`` instead of an fsync per file)."""
        os.sync()

    def collect_garbage(self, referenced: Iterable[tuple[str, str]], grace_s: float = GC_GRACE_S,
                        dry_run: bool = False) -> MediaGarbage:
        """Remove stored images no product names and ``.tmp`` files a killed write left behind.

        ``referenced`` is every ``(sha256, ext)`` the database holds. Only files older than ``grace_s``
        go: a concurrent PUT writes its file before committing the row that names it. Only names this
        store writes are touched (two-hex-digit folders, hash names); anything else in the folder stays.
        """
        if grace_s < 0:
            raise ValueError("grace period must be >= 0 seconds")
        keep = {f"{sha}{ext}" for sha, ext in referenced if sha and ext}
        cutoff = time.time() - grace_s
        orphans: list[str] = []
        temporaries: list[str] = []
        freed = young = 0
        if not self.root.is_dir():
            return MediaGarbage(orphans, temporaries, 0, 0, dry_run)
        for folder in sorted(self.root.iterdir()):
            if folder.is_symlink() or not folder.is_dir() or not re.fullmatch(r"[0-9a-f]{2}", folder.name):
                continue
            for f in sorted(folder.iterdir()):
                temporary = f.name.startswith(".") and f.name.endswith(".tmp")
                if f.is_symlink() or not f.is_file() or not (temporary or _NAME.match(f.name)):
                    continue
                if not temporary and (f.name in keep or not f.name.startswith(folder.name)):
                    continue
                stat = f.stat()
                if stat.st_mtime > cutoff:
                    young += 1
                    continue
                (temporaries if temporary else orphans).append(f"{folder.name}/{f.name}")
                freed += stat.st_size
                if not dry_run:
                    f.unlink(missing_ok=True)
        return MediaGarbage(orphans, temporaries, freed, young, dry_run)

    def read(self, sha256: str, ext: str) -> bytes:
        path = self.path(sha256, ext)
        if not path.is_file():
            raise ImageError(f"image {sha256[:12]}… is missing from the media folder")
        return path.read_bytes()
