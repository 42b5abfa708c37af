"""What leaves the library for a person: a results CSV, a product image download, prices as text.

The app and the API hand these to anyone who asks, so each is made safe here, once:

- CSV cells that a spreadsheet would run as a formula (OWASP "CSV injection": a cell starting with
  ``=``, ``+``, ``-``, ``@``, tab or carriage return) are prefixed with ``'`` so they stay text.
- An image download is never the file's bytes: the path must resolve inside the catalog's folder,
  the file must decode as an image (:func:`~recommender.features.images.open_image`), and what is
  served is that decoded image re-encoded (PNG, or JPEG for JPEG sources), so nothing but pixels
  leaves the server.
- Prices carry the catalog's currency: a ``currency`` column in the catalog, else the
  ``RECOMMENDER_CURRENCY`` setting, else US dollars (the demo catalog's shops price in USD).
"""

from __future__ import annotations

import io
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from PIL import Image

from recommender.catalog.loader import Catalog
from recommender.errors import ImageError
from recommender.features.images import open_image, pad_to_square
from recommender.ranking.results import Recommendations

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
DEFAULT_CURRENCY = "USD"
CURRENCY_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥", "CNY": "¥", "INR": "₹", "KRW": "₩"}
_CURRENCY_CODE = re.compile(r"^[A-Z]{3}$")


# -- CSV ------------------------------------------------------------------------------------------
def neutralise_cell(value: object) -> object:
    """A text cell a spreadsheet would evaluate (``=HYPERLINK(...)``, ``+1``, ``@SUM``) as plain text.

    Only strings change: numbers (a negative score, a price) are data, not formulas.
    """
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def safe_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` with every text cell and column name neutralised."""
    out = frame.copy()
    for col in out.columns:
        if out[col].dtype == object or pd.api.types.is_string_dtype(out[col]):
            out[col] = out[col].map(neutralise_cell).astype(object)
    out.columns = [neutralise_cell(str(c)) for c in out.columns]
    return out


def recommendations_csv(result: Recommendations, catalog: Catalog | None = None) -> str:
    """The result list as CSV text (best first), safe to open in a spreadsheet."""
    frame = result.to_frame(catalog)
    if catalog is not None and "price" in frame.columns:
        frame.insert(frame.columns.get_loc("price") + 1, "currency", catalog_currency(catalog))
    return safe_frame(frame).to_csv(index=False)


# -- image downloads --------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageDownload:
    data: bytes
    file_name: str
    mime: str


def _written_path(catalog: Catalog, position: int) -> Path:
    """Row ``position``'s image path as the catalog wrote it (for names and messages, never for reading)."""
    source = getattr(catalog, "image_source", None)  # catalogs that confine paths themselves keep it here
    return Path(source(position)) if source is not None else catalog.image_path(position)


def download_name(catalog: Catalog, position: int) -> tuple[str, str]:
    """The file name and MIME type :func:`image_download` gives row ``position``'s image (known before decoding)."""
    path = _written_path(catalog, position)
    as_jpeg = path.suffix.lower() in (".jpg", ".jpeg")
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem).strip("._")[:80] or "image"
    return (f"{stem}.jpg", "image/jpeg") if as_jpeg else (f"{stem}.png", "image/png")


def encode_image(image: Image.Image, fmt: str, max_side: int | None = None) -> bytes:
    """``image`` (RGB) as a new ``fmt`` file (``JPEG``, ``PNG``, ``BMP``), shrunk to ``max_side`` if larger."""
    if max_side is not None and max(image.size) > max_side:
        image = image.copy()
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    image.save(buf, format=fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    return buf.getvalue()


def square_image(image: Image.Image, max_side: int) -> bytes:
    """A product card's picture: ``image`` centred on a white square of its own size (at most ``max_side``), JPEG.

    Cards line up because every picture is square; the full-screen view shows the real resolution.
    """
    side = min(max(image.size), max_side)
    return encode_image(Image.fromarray(pad_to_square(image, side)), "JPEG")


def confined_image_path(catalog: Catalog, position: int) -> Path:
    """The image file of catalog row ``position``, resolved; ImageError if it lies outside the catalog folder.

    Symlinks and ``..`` are resolved first, so neither can lead out of the folder (or the catalog's
    configured image roots, where it has them).
    """
    name = _written_path(catalog, position).name
    refusal = getattr(catalog, "image_refusal", None)
    if refusal is not None and refusal(position):
        raise ImageError(f"{name}: outside the catalog folder; not served")
    try:
        resolved = catalog.image_path(position).resolve(strict=True)
    except (OSError, RuntimeError):
        raise ImageError(f"{name}: file not found") from None
    allowed = getattr(catalog, "allowed_roots", None)
    roots = [r for r in allowed() if r is not None] if allowed is not None else [Path(catalog.root).resolve()]
    if not any(resolved.is_relative_to(root) for root in roots):
        raise ImageError(f"{name}: outside the catalog folder; not served")
    return resolved


def product_image(catalog: Catalog, position: int) -> Image.Image:
    """The decoded image (8-bit RGB) of catalog row ``position``, read only from inside the catalog folder."""
    return open_image(confined_image_path(catalog, position))


def image_download(catalog: Catalog, position: int, max_side: int | None = None) -> ImageDownload:
    """Catalog row ``position``'s image as a fresh PNG/JPEG file made from its decoded pixels.

    Raises :class:`ImageError` when the file is outside the catalog folder or does not decode.
    ``max_side`` optionally bounds the longest side (aspect ratio kept).
    """
    file_name, mime = download_name(catalog, position)
    data = encode_image(product_image(catalog, position), "JPEG" if mime == "image/jpeg" else "PNG", max_side)
    return ImageDownload(data, file_name, mime)


# -- prices -----------------------------------------------------------------------------------------
def catalog_currency(catalog: Catalog) -> str:
    """The catalog's currency code: its ``currency`` column if it names one, else the setting, else USD."""
    if "currency" in catalog.items.columns:
        codes = {str(c).strip().upper() for c in catalog.items["currency"] if str(c).strip()}
        if len(codes) == 1 and _CURRENCY_CODE.match(next(iter(codes))):
            return codes.pop()
    setting = os.environ.get("RECOMMENDER_CURRENCY", "").strip().upper()
    return setting if _CURRENCY_CODE.match(setting) else DEFAULT_CURRENCY


def format_price(value: object, currency: str = DEFAULT_CURRENCY, decimals: int = 2) -> str:
    """``$1,299.00``, ``€12.50``, ``CHF 9.90``; empty for a missing or non-finite price."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return ""
    if not math.isfinite(number):
        return ""
    symbol = CURRENCY_SYMBOLS.get(currency)
    return f"{symbol}{number:,.{decimals}f}" if symbol else f"{currency} {number:,.{decimals}f}"
