"""Reading product images the way a catalog actually delivers them.

Everything that reaches a model goes through :func:`open_image` (one place to get EXIF orientation,
odd colour modes and decompression bombs right) and :func:`pad_to_square`.
"""

from __future__ import annotations

import ctypes
import io
import os
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Bumped whenever a change here would change the pixels a model sees: cached embeddings made with
# another version are not reused.
PREPROCESS_VERSION = "pad-white-square/lanczos/v1"

# 40 megapixels is far beyond any product photo; larger is a mistake or a decompression bomb.
MAX_PIXELS = 40_000_000
WHITE = (255, 255, 255)

ImageSource = str | os.PathLike | bytes | BinaryIO


def _silence_libtiff_errors() -> None:
    """Stop libtiff printing its decode errors on the process's stderr (file descriptor 2).

    Pillow hands compressed TIFFs to libtiff, whose default error handler writes lines such as
    ``tempfile.tif: Using code not yet in table.`` straight to fd 2, beside the one-line error the
    CLI promises. Pillow still sees the failure (a decoder error code, which :func:`open_image`
    turns into that file's ``ImageError``), so the printed line adds nothing. Pillow installs its
    own warning handler but leaves the error handler alone; we clear it in the libtiff Pillow has
    loaded (Linux: found in ``/proc/self/maps``). Anything unexpected leaves libtiff as it was.
    """
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            paths = {line.split()[-1] for line in maps if "libtiff" in line.rsplit("/", 1)[-1]}
        for path in paths:
            lib = ctypes.CDLL(path)
            lib.TIFFSetErrorHandler.restype = ctypes.c_void_p
            lib.TIFFSetErrorHandler.argtypes = [ctypes.c_void_p]
            lib.TIFFSetErrorHandler(None)
    except (OSError, AttributeError, IndexError):  # not Linux, no libtiff, a libtiff without the call
        pass


_silence_libtiff_errors()  # PIL.Image (imported above) has loaded libtiff with Pillow's C core


def _describe(source: ImageSource) -> str:
    if isinstance(source, bytes):
        return "uploaded image"
    if isinstance(source, str | os.PathLike):
        return str(source)
    return getattr(source, "name", None) or "uploaded image"


def _is_file(path: Path) -> bool:
    """``Path.is_file`` that answers False instead of raising (name too long, no permission...)."""
    try:
        return path.is_file()
    except (OSError, ValueError):  # ENAMETOOLONG, EACCES, an embedded NUL byte
        return False


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except (OSError, ValueError):
        return False


def open_image(source: ImageSource, max_pixels: int = MAX_PIXELS, min_side: int | None = None,
               keep_grey: bool = False) -> Image.Image:
    """Open an image as 8-bit RGB: EXIF orientation applied, transparency flattened onto white.

    Accepts a path, raw bytes or a binary file object. Raises :class:`ImageError` with a message
    that says what is wrong (missing, not an image, corrupt or truncated, too many pixels) - and
    only that: whatever the decoder raises on one bad file becomes that file's ``ImageError``.

    ``min_side``: the caller only needs the image this large (e.g. a model's input size); a big
    JPEG is then decoded at a reduced DCT scale (``draft``), keeping at least
    ``DRAFT_MARGIN * min_side`` pixels on the short side, which costs a fraction of the memory
    and time of a full decode and changes the downscaled result by less than JPEG noise.

    ``keep_grey``: a plain 8-bit greyscale image (mode ``L``, no transparency) stays greyscale, for a caller
    that resizes it first and pastes it onto RGB after (the same pixels as converting first: one band to
    resample instead of three identical ones).
    """
    from recommender.errors import ImageError

    what = _describe(source)
    fp: BinaryIO
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        if not _is_file(path):
            raise ImageError(f"{what}: {'a folder, not an image file' if _is_dir(path) else 'file not found'}")
        try:
            fp = open(path, "rb")  # noqa: SIM115 - closed in the finally below
        except OSError as exc:
            raise ImageError(f"{what}: cannot be read ({exc.strerror or exc})") from None
    elif isinstance(source, bytes | bytearray | memoryview):
        fp = io.BytesIO(source)
    else:
        fp = source
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            try:
                return _decode(fp, what, max_pixels, min_side, keep_grey)
            except ImageError:
                raise
            except (Image.DecompressionBombError, Image.DecompressionBombWarning):
                raise ImageError(f"{what}: too many pixels (limit {max_pixels:,})") from None
            except UnidentifiedImageError:
                raise ImageError(f"{what}: not an image file Pillow can read "
                                 "(supported: JPEG, PNG, WebP, GIF, BMP, TIFF)") from None
            except MemoryError:
                raise ImageError(f"{what}: needs more memory to decode than this machine has") from None
            except Exception as exc:  # noqa: BLE001 - the decode boundary of untrusted bytes, see below
                # Pillow's plugins raise OSError, ValueError, SyntaxError, EOFError, struct.error,
                # and on hostile input also TypeError/IndexError/KeyError/ZeroDivisionError. None of
                # them says more than "this one file is broken", and one file must not stop a build.
                detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
                raise ImageError(f"{what}: corrupt or truncated image ({detail})") from None
    finally:
        if isinstance(source, str | os.PathLike):
            fp.close()


# Draft (DCT-scaled) JPEG decoding keeps at least this many times the needed side, the same margin
# as pad_to_square's reducing_gap: the final LANCZOS step then sees as many pixels per output pixel.
DRAFT_MARGIN = 3


def _decode(fp: BinaryIO, what: str, max_pixels: int, min_side: int | None, keep_grey: bool) -> Image.Image:
    from recommender.errors import ImageError

    img = Image.open(fp)
    w, h = img.size
    if w * h > max_pixels:
        raise ImageError(f"{what}: {w}x{h} is too many pixels (limit {max_pixels:,})")
    if w <= 0 or h <= 0:
        raise ImageError(f"{what}: image has no pixels")
    if min_side and img.format == "JPEG":
        # draft() picks the largest DCT scale (1/2, 1/4, 1/8) that keeps the image at least this big.
        want = min(w, h, DRAFT_MARGIN * min_side)
        img.draft(img.mode, (max(1, want * w // min(w, h)), max(1, want * h // min(w, h))))
    img.load()  # the full decode happens here, inside the guard, not later in a resize
    img = ImageOps.exif_transpose(img)
    if keep_grey and img.mode == "L" and "transparency" not in img.info:
        return img
    return to_rgb(img)


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB, compositing transparency onto white."""
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return img
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        # 16-bit and float greyscale: scale the actual range into 0..255 rather than clipping.
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        if mode == "F":
            lo, hi = float(arr.min()), float(arr.max()) or 1.0
            arr = (arr - lo) / ((hi - lo) or 1.0) * 255.0
        else:
            arr = arr / hi * 255.0
        return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "L").convert("RGB")
    # "transparency" on P is a palette alpha; on RGB and L it is a tRNS colour key (one colour that
    # means transparent): both go through RGBA so they land on white, not on black.
    if ((mode in ("P", "RGB", "L") and "transparency" in img.info)
            or mode in ("RGBA", "LA", "PA", "RGBa", "La")):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    # CMYK, YCbCr, LAB, HSV, L, 1, P without transparency.
    return img.convert("RGB")


def pad_to_square(img: Image.Image, size: int, fill: tuple[int, int, int] = WHITE) -> np.ndarray:
    """Resize so the longest side is ``size`` (aspect ratio kept) and centre on a ``fill`` square.

    Product shots are mostly on white, so white padding adds no edges the model would notice.
    Returns a ``(size, size, 3)`` uint8 array; ``img`` is RGB or plain greyscale (``L``, pasted onto the RGB
    canvas after the resize).
    """
    w, h = img.size
    scale = size / max(w, h)
    new = (max(1, round(w * scale)), max(1, round(h * scale)))
    resized = img.resize(new, Image.Resampling.LANCZOS, reducing_gap=3.0)
    canvas = Image.new("RGB", (size, size), fill)
    canvas.paste(resized, ((size - new[0]) // 2, (size - new[1]) // 2))
    return np.asarray(canvas, dtype=np.uint8)


def load_for_model(source: ImageSource, size: int, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """One image, ready for a backbone: ``(size, size, 3)`` uint8 RGB (big JPEGs decoded in draft)."""
    # Greyscale kept through the resize: Fashion-MNIST-like catalogs decode 1.6x faster, same pixels.
    img = open_image(source, max_pixels=max_pixels, min_side=size, keep_grey=True)
    try:
        return pad_to_square(img, size)
    except (OSError, ValueError, MemoryError) as exc:
        from recommender.errors import ImageError

        raise ImageError(f"{_describe(source)}: cannot be resized ({exc})") from None
