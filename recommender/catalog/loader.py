"""Loading and validating a product catalog (CSV or Parquet) into one table.

Required columns: ``id``, ``name``, ``image`` (a path relative to the catalog file, or absolute).
Optional: ``description``, ``category``, ``sub_category``, ``brand``, ``colour`` (``color`` is
accepted), ``price``; any other column is kept and can be used as an evaluation label.
Multi-valued attributes (a shoe in blue and pink) are written ``blue|pink``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from recommender.errors import CatalogError, ImageError

REQUIRED_COLUMNS = ("id", "name", "image")
TEXT_COLUMNS = ("name", "description")
ATTRIBUTE_COLUMNS = ("category", "sub_category", "brand", "colour")
COLUMN_ALIASES = {"color": "colour", "subcategory": "sub_category", "sub-category": "sub_category"}
DEMO_CATALOG = Path(__file__).resolve().parents[2] / "data" / "demo" / "catalog.csv"
MULTI_VALUE_SEP = "|"


@dataclass(frozen=True)
class ImageProblem:
    """One catalog row whose image cannot be used."""

    id: str
    path: Path
    reason: str


@dataclass(frozen=True)
class Catalog:
    """A validated product table; row ``i`` is product ``items.id[i]``."""

    items: pd.DataFrame
    root: Path
    source: Path | None = None
    _positions: dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._positions.update({pid: i for i, pid in enumerate(self.items["id"])})

    def __len__(self) -> int:
        return len(self.items)

    @property
    def ids(self) -> np.ndarray:
        return self.items["id"].to_numpy()

    def position(self, item_id: str) -> int:
        """Row of ``item_id``; raises KeyError with a readable message."""
        try:
            return self._positions[str(item_id)]
        except KeyError:
            raise KeyError(f"no product with id {item_id!r} in the catalog") from None

    def image_path(self, i: int) -> Path:
        p = Path(self.items["image"].iat[i])
        return p if p.is_absolute() else self.root / p

    def attributes(self, i: int) -> dict[str, list[str]]:
        """The categorical attributes of row ``i``, multi-values split, empty ones left out."""
        out = {}
        for col in ATTRIBUTE_COLUMNS:
            if col in self.items.columns:
                values = split_values(self.items[col].iat[i])
                if values:
                    out[col] = values
        return out

    def values(self, column: str) -> list[str]:
        """Distinct values of an attribute column (multi-values split), sorted; [] if absent."""
        if column not in self.items.columns:
            return []
        return sorted({v for cell in self.items[column] for v in split_values(cell)}, key=str.lower)

    def fingerprint(self) -> str:
        """A hash of the table's content (not of the image files: the store hashes those)."""
        csv = self.items.to_csv(index=False).encode("utf-8")
        return hashlib.sha256(csv).hexdigest()[:16]

    def image_problems(self) -> list[ImageProblem]:
        """Every row whose image is missing or unreadable (all of them, not just the first)."""
        from recommender.features.images import open_image

        problems = []
        for i, pid in enumerate(self.items["id"]):
            path = self.image_path(i)
            try:
                open_image(path)
            except ImageError as exc:
                reason = str(exc).removeprefix(f"{path}: ")
                problems.append(ImageProblem(pid, path, reason))
        return problems


def split_values(cell: object) -> list[str]:
    if cell is None or (isinstance(cell, float) and np.isnan(cell)):
        return []
    return [v.strip() for v in str(cell).split(MULTI_VALUE_SEP) if v.strip()]


def _read_table(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path).astype(object)
    except UnicodeDecodeError:
        raise CatalogError(f"{path}: not UTF-8 text; save the CSV as UTF-8") from None
    except pd.errors.EmptyDataError:
        raise CatalogError(f"{path}: the file is empty") from None
    except (pd.errors.ParserError, ValueError, OSError) as exc:
        raise CatalogError(f"{path}: cannot be parsed as {suffix[1:].upper()} ({exc})") from None
    raise CatalogError(f"{path}: unsupported file type {suffix or '(none)'!r}; use .csv or .parquet")


def catalog_from_frame(df: pd.DataFrame, root: Path | str, source: Path | None = None) -> Catalog:
    """Validate a table (already read) and return a :class:`Catalog`.

    Raises :class:`CatalogError` naming every problem found: missing columns, empty or duplicate
    ids, empty image paths, prices that are not numbers.
    """
    where = f"{source}: " if source else ""
    df = df.copy()
    df.columns = [COLUMN_ALIASES.get(str(c).strip().lower(), str(c).strip().lower()) for c in df.columns]
    if df.columns.duplicated().any():
        dupes = sorted(set(df.columns[df.columns.duplicated()]))
        raise CatalogError(f"{where}column(s) given twice: {', '.join(dupes)}")
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise CatalogError(
            f"{where}missing required column(s): {', '.join(missing)} "
            f"(required: {', '.join(REQUIRED_COLUMNS)}; found: {', '.join(map(str, df.columns)) or 'none'})"
        )
    if df.empty:
        raise CatalogError(f"{where}the catalog has no rows")
    for col in df.columns:
        if col != "price":
            df[col] = df[col].map(lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v))
                                  else str(v).strip())
    problems: list[str] = []
    blank_ids = [i + 2 for i in np.flatnonzero(df["id"].to_numpy() == "")]
    if blank_ids:
        problems.append(f"empty id on line(s) {_lines(blank_ids)}")
    dup = df["id"][df["id"].duplicated(keep=False) & (df["id"] != "")]
    if not dup.empty:
        problems.append(f"duplicate id(s): {', '.join(sorted(set(dup))[:20])}")
    blank_images = [i + 2 for i in np.flatnonzero(df["image"].to_numpy() == "")]
    # A catalog with no images at all is metadata only; some blank among images is a mistake.
    if blank_images and len(blank_images) < len(df):
        problems.append(f"empty image path on line(s) {_lines(blank_images)}")
    if "price" in df.columns:
        raw = df["price"].map(lambda v: "" if v is None else str(v).strip())
        price = pd.to_numeric(raw.where(raw != "", None), errors="coerce")
        bad = [i + 2 for i in np.flatnonzero(price.isna().to_numpy() & (raw != "").to_numpy())]
        if bad:
            problems.append(f"price is not a number on line(s) {_lines(bad)}")
        df["price"] = price.astype(float)
    if problems:
        raise CatalogError(where + "; ".join(problems))
    for col in ("description", *ATTRIBUTE_COLUMNS):
        if col not in df.columns:
            df[col] = ""
    if "price" not in df.columns:
        df["price"] = np.nan
    return Catalog(df.reset_index(drop=True), Path(root), source)


def load_catalog(path: Path | str = DEMO_CATALOG) -> Catalog:
    """Read and validate a catalog file; image paths resolve relative to the file's folder."""
    path = Path(path)
    if not path.exists():
        raise CatalogError(f"{path}: catalog file not found")
    if path.is_dir():
        raise CatalogError(f"{path}: is a folder; give the catalog's .csv or .parquet file")
    return catalog_from_frame(_read_table(path), path.resolve().parent, path.resolve())


def _lines(numbers: Iterable[int], limit: int = 10) -> str:
    numbers = list(numbers)
    text = ", ".join(map(str, numbers[:limit]))
    return text + (f" and {len(numbers) - limit} more" if len(numbers) > limit else "")
