"""Loading and validating customer interactions (purchases, ratings, views) from CSV or Parquet.

Columns: ``user_id``, ``item_id``, ``timestamp`` (unix seconds, or a date/time text such as
``2011-12-09 12:50``; text without a zone is read as UTC), optional ``weight`` (a quantity or a
rating; ``rating_or_weight``, ``rating`` and ``quantity`` are accepted; default 1) and ``kind``
(``purchase``, ``rating``, ``view``...; default ``purchase``).

Validation is as strict as the catalog's: every problem is named with its file lines (line 1 is the
header): empty ids, products not in the catalog, timestamps that cannot be read, weights that are
not numbers, negative, or infinite. Nothing is silently dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recommender.catalog.loader import Catalog, _lines, _read_table
from recommender.errors import CatalogError

REQUIRED_COLUMNS = ("user_id", "item_id", "timestamp")
COLUMN_ALIASES = {
    "user": "user_id", "customer_id": "user_id", "customer": "user_id", "userid": "user_id",
    "item": "item_id", "product_id": "item_id", "itemid": "item_id",
    "rating_or_weight": "weight", "rating": "weight", "quantity": "weight",
    "time": "timestamp", "date": "timestamp",
}
# Unix seconds outside 1970..2200 are almost certainly milliseconds or a typo.
_MAX_SECONDS = 7_258_118_400


class InteractionsError(CatalogError):
    """An interactions file or table cannot be used as it is."""


@dataclass(frozen=True)
class Interactions:
    """Validated interactions, one row each: ``user_id`` and ``item_id`` (str), ``weight`` (float >= 0),
    ``timestamp`` (int64 unix seconds) and ``kind`` (str), in file order."""

    frame: pd.DataFrame
    source: Path | None = None

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def users(self) -> np.ndarray:
        """Distinct user ids, sorted."""
        return np.sort(self.frame["user_id"].unique())

    def subset(self, mask: np.ndarray | pd.Series) -> Interactions:
        return Interactions(self.frame[np.asarray(mask, dtype=bool)].reset_index(drop=True), self.source)

    def matrix(self, item_ids: Sequence[str], user_ids: Sequence[str] | None = None) -> sp.csr_matrix:
        """The ``users x items`` sum of weights, rows in ``user_ids`` order (default :attr:`users`),
        columns in ``item_ids`` order; interactions with users or items outside those are left out."""
        users = self.users if user_ids is None else np.asarray(user_ids, dtype=object)
        rows = pd.Index(users).get_indexer(self.frame["user_id"])
        cols = pd.Index(np.asarray(item_ids, dtype=object)).get_indexer(self.frame["item_id"])
        keep = (rows >= 0) & (cols >= 0)
        m = sp.csr_matrix((self.frame["weight"].to_numpy(np.float32)[keep], (rows[keep], cols[keep])),
                          shape=(len(users), len(item_ids)), dtype=np.float32)
        m.sum_duplicates()
        m.eliminate_zeros()
        return m


def interactions_from_frame(
    df: pd.DataFrame, catalog: Catalog | None = None, source: Path | None = None, rows_are: str = "line"
) -> Interactions:
    """Validate a table (already read); with a ``catalog``, every item must be one of its products.
    ``rows_are="event"``: problems name rows as "event(s) 1, 2" (first row = 1) rather than file lines.

    Raises :class:`InteractionsError` naming every problem with its lines.
    """
    where = f"{source}: " if source else ""
    df = df.copy()
    df.columns = [COLUMN_ALIASES.get(str(c).strip().lower(), str(c).strip().lower()) for c in df.columns]
    if df.columns.duplicated().any():
        dupes = sorted(set(df.columns[df.columns.duplicated()]))
        raise InteractionsError(f"{where}column(s) given twice (after aliases): {', '.join(dupes)}")
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise InteractionsError(
            f"{where}missing required column(s): {', '.join(missing)} "
            f"(required: {', '.join(REQUIRED_COLUMNS)}; found: {', '.join(map(str, df.columns)) or 'none'})")
    if df.empty:
        raise InteractionsError(f"{where}the interactions file has no rows")
    df = df.reset_index(drop=True)
    # file line of each row (the header is line 1), or the row's number among events
    line = np.arange(len(df)) + (2 if rows_are == "line" else 1)
    where_rows = f"on {rows_are}(s)"
    problems: list[str] = []
    for col in ("user_id", "item_id"):
        df[col] = _text_column(df[col])
        blank = df[col].to_numpy() == ""
        if blank.any():
            problems.append(f"empty {col} {where_rows} {_lines(line[blank])}")
    if catalog is not None:
        known = set(map(str, catalog.ids))
        unknown = ~df["item_id"].isin(known).to_numpy() & (df["item_id"].to_numpy() != "")
        if unknown.any():
            names = sorted(set(df["item_id"][unknown]))
            problems.append(f"{len(names)} item id(s) not in the catalog ({', '.join(names[:5])}"
                            f"{', ...' if len(names) > 5 else ''}) {where_rows} {_lines(line[unknown])}")
    weight, weight_problems = _weights(df["weight"] if "weight" in df.columns else None, len(df), line)
    weight_problems = [w.replace("on line(s)", where_rows) for w in weight_problems]
    problems += weight_problems
    seconds, bad_time = _timestamps(df["timestamp"])
    if bad_time.any():
        problems.append(f"timestamp is not a date/time or unix seconds {where_rows} {_lines(line[bad_time])}")
    if problems:
        raise InteractionsError(where + "; ".join(problems))
    kind = _text_column(df["kind"]).replace("", "purchase") if "kind" in df.columns else "purchase"
    frame = pd.DataFrame({"user_id": df["user_id"].astype(str), "item_id": df["item_id"].astype(str),
                          "weight": weight, "timestamp": seconds, "kind": kind})
    return Interactions(frame, source)


def load_interactions(path: Path | str, catalog: Catalog | None = None) -> Interactions:
    """Read and validate an interactions file (``.csv``, ``.csv.gz``, ``.parquet``)."""
    path = Path(path)
    if not path.exists():
        raise InteractionsError(f"{path}: interactions file not found")
    if path.is_dir():
        raise InteractionsError(f"{path}: is a folder; give the interactions .csv or .parquet file")
    if path.name.lower().endswith(".csv.gz"):
        try:
            df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8", compression="gzip")
        except (UnicodeDecodeError, OSError, EOFError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            raise InteractionsError(f"{path}: cannot be read as gzip-compressed UTF-8 CSV ({exc})") from None
    elif path.suffix.lower() in (".parquet", ".pq"):
        try:  # typed columns kept (numbers stay numbers): validation is vectorised on them
            df = pd.read_parquet(path)
        except (ValueError, OSError) as exc:
            raise InteractionsError(f"{path}: cannot be parsed as PARQUET ({exc})") from None
    else:
        try:
            df = _read_table(path)
        except CatalogError as exc:
            raise InteractionsError(str(exc)) from None
    return interactions_from_frame(df, catalog, path.resolve())


def _text_column(column: pd.Series) -> pd.Series:
    """Stripped text; missing values (None, NaN) become "" (vectorised: files have 10^5-10^7 rows)."""
    return column.where(column.notna(), "").astype(str).str.strip()


def _weights(column: pd.Series | None, n: int, line: np.ndarray) -> tuple[np.ndarray, list[str]]:
    if column is None:
        return np.ones(n, dtype=np.float64), []
    if pd.api.types.is_numeric_dtype(column.dtype):
        raw = pd.Series(np.where(column.isna(), "nan", ""), index=column.index)
        value = column.to_numpy(dtype=np.float64)
        return value, _weight_problems(value, raw, line)
    raw = _text_column(column)
    # "inf"/"nan" parse as floats: name them as not finite rather than as not numbers.
    value = pd.to_numeric(raw.where(raw != "", "1"), errors="coerce").to_numpy(dtype=np.float64)
    return value, _weight_problems(value, raw, line)


def _weight_problems(value: np.ndarray, raw: pd.Series, line: np.ndarray) -> list[str]:
    lowered = raw.str.lower().to_numpy()
    spelled_nonfinite = np.isin(lowered, ["nan", "inf", "-inf", "+inf", "infinity", "-infinity"])
    not_number = np.isnan(value) & ~spelled_nonfinite
    non_finite = ~np.isfinite(value) & ~not_number
    negative = np.isfinite(value) & (value < 0)
    problems = []
    for mask, what in ((not_number, "weight is not a number"), (non_finite, "weight is not finite"),
                       (negative, "weight is negative")):
        if mask.any():
            problems.append(f"{what} on line(s) {_lines(line[mask])}")
    return problems


def _timestamps(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Unix seconds (int64) and a mask of unreadable entries."""
    if pd.api.types.is_datetime64_any_dtype(column.dtype):
        column = column.dt.tz_localize("UTC") if column.dt.tz is None else column.dt.tz_convert("UTC")
        bad = column.isna().to_numpy()
        seconds = column.astype("datetime64[s, UTC]").astype("int64").to_numpy()
        return np.where(bad, 0, seconds), bad
    if pd.api.types.is_numeric_dtype(column.dtype):
        numeric = column.to_numpy(dtype=np.float64)
        raw = pd.Series(np.where(np.isfinite(numeric), "0", ""), index=column.index)
    else:
        raw = _text_column(column)
        numeric = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
    is_num = np.isfinite(numeric)
    seconds = np.zeros(len(raw), dtype=np.int64)
    bad = raw.to_numpy() == ""
    in_range = is_num & (numeric >= 0) & (numeric < _MAX_SECONDS)
    seconds[in_range] = numeric[in_range].astype(np.int64)
    bad |= is_num & ~in_range
    text = ~is_num & ~bad
    if text.any():
        parsed = pd.to_datetime(raw[text], errors="coerce", utc=True, format="mixed")
        ok = parsed.notna().to_numpy()
        idx = np.flatnonzero(text)
        seconds[idx[ok]] = (parsed[ok].astype("datetime64[s, UTC]").astype("int64")).to_numpy()
        bad[idx[~ok]] = True
    return seconds, bad
