"""Checking a photo a person uploads (the Streamlit app, later the API) before any model sees it.

Uploads stay in memory: nothing here writes to disk, and the client's file name is only used to
name the file in messages. The cheap checks (extension, empty, size, the format's magic bytes) run
before a single pixel is decoded; :func:`open_upload` then lets :func:`~recommender.features.images.open_image`
validate the content (corrupt, truncated, too many pixels).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath

from PIL import Image

from recommender.errors import ImageError
from recommender.features.images import MAX_PIXELS, open_image

# What the app's file picker offers; the content must be one of these formats too.
UPLOAD_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
# The decoded upload is shown (a few hundred pixels wide) and embedded (224 px): a JPEG needs no
# more than this short side, so a phone's 40 MP photo is decoded at a DCT scale (draft) instead of
# in full (~120 MB of pixels and seconds of CPU).
PREVIEW_SIDE = 448
MAX_UPLOAD_MB = 10
MAX_UPLOAD_BYTES = MAX_UPLOAD_MB * 1024 * 1024


@dataclass(frozen=True)
class Upload:
    """A validated uploaded photo: its bytes (what the recommender embeds) and the decoded image."""

    name: str
    data: bytes
    image: Image.Image  # 8-bit RGB, EXIF orientation applied: what to show as the query image
    format: str  # "JPEG" | "PNG" | "WebP"


def display_name(name: str | None) -> str:
    """The client's file name without any folder part, shortened for messages."""
    base = PurePath(str(name or "").replace("\\", "/")).name.strip() or "uploaded file"
    return base if len(base) <= 80 else base[:77] + "..."


def sniff_format(data: bytes) -> str | None:
    """The image format named by the first bytes (``JPEG``, ``PNG``, ``WebP``), else ``None``."""
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return None


def _size(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MB" if n >= 1024 * 1024 else f"{n / 1024:.0f} KB" if n >= 1024 else f"{n} bytes"


def read_upload(data: bytes, name: str, max_bytes: int = MAX_UPLOAD_BYTES) -> bytes:
    """Return ``data`` if it may be an uploaded product photo; raise :class:`ImageError` if not.

    Checks, in this order and without decoding: the file name's extension, an empty file, the
    size limit ``max_bytes``, and that the content starts like a JPEG, PNG or WebP file.
    """
    shown = display_name(name)
    suffix = PurePath(shown).suffix.lower().lstrip(".")
    allowed = ", ".join(UPLOAD_EXTENSIONS)
    if suffix not in UPLOAD_EXTENSIONS:
        got = f".{suffix}" if suffix else "no extension"
        raise ImageError(f"{shown}: unsupported file type ({got}); upload a photo ({allowed})")
    if data is None or len(data) == 0:
        raise ImageError(f"{shown}: the file is empty")
    if len(data) > max_bytes:
        raise ImageError(f"{shown}: {_size(len(data))} is over the upload limit of {_size(max_bytes)}; "
                         "use a smaller photo")
    if sniff_format(data) is None:
        raise ImageError(f"{shown}: not a JPEG, PNG or WebP image (the content does not match "
                         f"the .{suffix} name); upload a photo ({allowed})")
    return bytes(data)


def open_upload(data: bytes, name: str, max_bytes: int = MAX_UPLOAD_BYTES,
                max_pixels: int = MAX_PIXELS) -> Upload:
    """:func:`read_upload`, then decode it fully (corrupt, truncated, too many pixels -> ImageError);
    a big JPEG at the DCT scale that keeps at least ``3 * PREVIEW_SIDE`` pixels on its short side."""
    data = read_upload(data, name, max_bytes)
    shown = display_name(name)
    try:
        image = open_image(data, max_pixels=max_pixels, min_side=PREVIEW_SIDE)
    except ImageError as exc:
        raise ImageError(str(exc).replace("uploaded image", shown, 1)) from None
    return Upload(shown, data, image, sniff_format(data) or "")
