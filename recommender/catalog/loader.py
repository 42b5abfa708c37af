"""Loading and validating a product catalog (CSV or Parquet) into one table.

Required columns: ``id``, ``name``, ``image`` (a path relative to the catalog file, or absolute).
Optional: ``description``, ``category``, ``sub_category``, ``brand``, ``colour`` (``color`` is
accepted), ``price``; any other column is kept and can be used as an evaluation label.
Multi-valued attributes (a shoe in blue and pink) are written ``blue|pink``.

Image paths are confined: a path is used only if it resolves (symlinks followed) inside the
catalog's folder or one of the configured image roots (the ``image_roots`` argument, or
``RECOMMENDER_IMAGE_ROOTS``, folders separated by ``os.pathsep``). Anything else (``../``, an
absolute path elsewhere, a symlink out of the folder) is an image problem of that product: the
product stays, without an image, and the file is never opened.
"""

from __future__ import annotations

import hashlib
import math
import os
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
IMAGE_ROOTS_ENV = "RECOMMENDER_IMAGE_ROOTS"
# Returned by Catalog.image_path for a path outside the allowed roots: a "file" inside /dev/null,
# which no open(), is_file() or read_bytes() can ever reach, so no caller can leak what it named.
REFUSED_IMAGE = Path(os.devnull) / "image-outside-the-catalog-folder"


@dataclass(frozen=True)
class ImageProblem:
    """One catalog row whose image cannot be used."""

    id: str
    path: Path
    reason: str


@dataclass(frozen=True)
class Catalog:
    """A validated product table; row ``i`` is product ``items.id[i]``.

    Treat ``items`` as read-only: positions and ids are computed once (``ids`` again only if the
    ``id`` column is replaced).
    """

    items: pd.DataFrame
    root: Path
    source: Path | None = None
    image_roots: tuple[Path, ...] = ()
    _positions: dict[str, int] = field(default_factory=dict, repr=False, compare=False)
    _memo: dict[str, object] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._positions.update({pid: i for i, pid in enumerate(self.items["id"])})

    def __len__(self) -> int:
        return len(self.items)

    @property
    def ids(self) -> np.ndarray:
        """The id column as an object array, converted once (an Arrow string column costs ~10 ms
        per conversion at 70k rows) and again only if the column was replaced."""
        column = self.items["id"].array
        key = (id(column), id(getattr(column, "_pa_array", None)), len(column))
        cached = self._memo.get("ids")
        if cached is None or cached[0] != key:
            ids = np.asarray(column, dtype=object)
            ids.flags.writeable = False
            # The column itself is kept alongside, so its id() cannot be reused by another object.
            cached = (key, ids, column, getattr(column, "_pa_array", None))
            self._memo["ids"] = cached
        return cached[1]

    def position(self, item_id: str) -> int:
        """Row of ``item_id``; raises KeyError with a readable message."""
        try:
            return self._positions[str(item_id)]
        except KeyError:
            raise KeyError(f"no product with id {item_id!r} in the catalog") from None

    def allowed_roots(self) -> tuple[Path, ...]:
        """The folders image paths must resolve into: the catalog's folder, then the configured roots."""
        roots = self._memo.get("roots")
        if roots is None:
            extra = [Path(r) for r in os.environ.get(IMAGE_ROOTS_ENV, "").split(os.pathsep) if r.strip()]
            roots = tuple(dict.fromkeys(_resolve(r) for r in (self.root, *self.image_roots, *extra)))
            self._memo["roots"] = roots
        return roots

    def _confined(self, i: int) -> tuple[Path, Path | None, str | None]:
        """``(as written, resolved path or None, why it is refused or None)`` for row ``i``."""
        resolved = self._memo.setdefault("resolved", {})
        if i not in resolved:
            column = self._memo.get("image_column")
            if column is None:  # a list once: the DataFrame lookup of the column cost 30 us a row
                column = self._memo["image_column"] = self.items["image"].tolist()
            written = Path(str(column[i]))
            shown = written if written.is_absolute() else self.root / written
            target, inside = self._resolve_file(shown)
            if target is None:
                resolved[i] = (shown, None, "path cannot be resolved")
            elif not inside:
                resolved[i] = (shown, None, "image path is outside the catalog folder (and the allowed "
                               f"image roots; see {IMAGE_ROOTS_ENV}): not read")
            else:
                resolved[i] = (shown, target, None)
        return resolved[i]

    def _resolve_file(self, shown: Path) -> tuple[Path | None, bool]:
        """``(shown resolved, whether inside an allowed root)``, as ``Path.resolve`` would resolve it: its folder is
        resolved (and placed) once per folder, and then only its last component is looked at (a symlink there is
        followed in full). Resolving every path from the top cost ~60 us a row: 6 s of a 100k catalog's fit."""
        folders = self._memo.setdefault("folders", {})
        name = shown.name
        if "\0" in str(shown):  # os.path.islink would say False rather than refuse it
            return None, False
        if name in ("", ".", ".."):
            return self._placed(_resolve(shown))
        if shown.parent not in folders:
            folders[shown.parent] = self._placed(_resolve(shown.parent))
        base, inside = folders[shown.parent]
        if base is None:
            return None, False
        try:
            if not os.path.islink(base / name):  # inside if its folder is, or if it names a root itself
                return base / name, inside or base / name in self.allowed_roots()
        except (OSError, ValueError):  # an embedded NUL byte
            return None, False
        return self._placed(_resolve(base / name))

    def _placed(self, target: Path | None) -> tuple[Path | None, bool]:
        inside = target is not None and any(target == r or r in target.parents for r in self.allowed_roots()
                                            if r is not None)
        return target, inside

    def image_path(self, i: int) -> Path:
        """Where row ``i``'s image may be read: resolved, inside the allowed roots. A path that
        leaves them gives :data:`REFUSED_IMAGE`, which names no readable file (see
        :meth:`image_refusal` for why)."""
        _, target, _ = self._confined(i)
        return target if target is not None else REFUSED_IMAGE

    def image_source(self, i: int) -> Path:
        """Row ``i``'s image path as the catalog wrote it (relative to the catalog folder): for messages."""
        return self._confined(i)[0]

    def image_refusal(self, i: int) -> str | None:
        """Why row ``i``'s image path is not used (outside the allowed roots), or None if it is usable."""
        return self._confined(i)[2]

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
        for i, pid in enumerate(self.ids):
            refusal = self.image_refusal(i)
            if refusal:
                problems.append(ImageProblem(pid, self.image_source(i), refusal))
                continue
            path = self.image_path(i)
            try:
                open_image(path)
            except ImageError as exc:
                reason = str(exc).removeprefix(f"{path}: ")
                problems.append(ImageProblem(pid, self.image_source(i), reason))
        return problems


def _resolve(path: Path) -> Path | None:
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError, ValueError):  # a symlink loop, an embedded NUL byte
        return None


def _is_missing(value: object) -> bool:
    """None, NaN, pandas' NA/NaT (Parquet nullable columns): an empty cell, never the text "<NA>"."""
    return value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and math.isnan(value))


def split_values(cell: object) -> list[str]:
    if _is_missing(cell):
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
    except MemoryError:
        raise CatalogError(f"{path}: too large to read into memory") from None
    except Exception as exc:  # noqa: BLE001 - the parse boundary of an untrusted file
        # pandas' C parser and pyarrow raise ParserError, ValueError, OSError, csv.Error,
        # OverflowError, ArrowInvalid...: for the person at the keyboard each means "cannot parse".
        detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise CatalogError(f"{path}: cannot be parsed as {suffix[1:].upper()} ({detail})") from None
    raise CatalogError(f"{path}: unsupported file type {suffix or '(none)'!r}; use .csv or .parquet")


def catalog_from_frame(df: pd.DataFrame, root: Path | str, source: Path | None = None,
                       image_roots: Iterable[Path | str] = ()) -> Catalog:
    """Validate a table (already read) and return a :class:`Catalog`.

    Raises :class:`CatalogError` naming every problem found: missing columns, empty or duplicate
    ids, empty image paths, prices that are not finite numbers. ``image_roots``: folders besides
    ``root`` that image paths may point into.
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
            df[col] = df[col].map(lambda v: "" if _is_missing(v) else str(v).strip())
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
        raw = df["price"].map(lambda v: "" if _is_missing(v) else str(v).strip())
        price = pd.to_numeric(raw.where(raw != "", None), errors="coerce").astype(float)
        # "nan", "inf" and 1e309 parse as floats, but no shop sells at them: a price must be finite.
        bad = [i + 2 for i in np.flatnonzero(~np.isfinite(price.to_numpy()) & (raw != "").to_numpy())]
        if bad:
            problems.append(f"price is not a finite number on line(s) {_lines(bad)}")
        df["price"] = price
    if problems:
        raise CatalogError(where + "; ".join(problems))
    for col in ("description", *ATTRIBUTE_COLUMNS):
        if col not in df.columns:
            df[col] = ""
    if "price" not in df.columns:
        df["price"] = np.nan
    return Catalog(df.reset_index(drop=True), Path(root), source, tuple(Path(r) for r in image_roots))


def load_catalog(path: Path | str = DEMO_CATALOG, image_roots: Iterable[Path | str] = ()) -> Catalog:
    """Read and validate a catalog file; image paths resolve relative to the file's folder and must
    stay inside it (or inside one of ``image_roots`` / ``RECOMMENDER_IMAGE_ROOTS``)."""
    path = Path(path)
    try:
        exists, is_dir = path.exists(), path.is_dir()
    except (OSError, ValueError) as exc:
        raise CatalogError(f"{path}: cannot be read ({exc})") from None
    if not exists:
        raise CatalogError(f"{path}: catalog file not found")
    if is_dir:
        raise CatalogError(f"{path}: is a folder; give the catalog's .csv or .parquet file")
    return catalog_from_frame(_read_table(path), path.resolve().parent, path.resolve(), image_roots)


def _lines(numbers: Iterable[int], limit: int = 10) -> str:
    numbers = list(numbers)
    text = ", ".join(map(str, numbers[:limit]))
    return text + (f" and {len(numbers) - limit} more" if len(numbers) > limit else "")
