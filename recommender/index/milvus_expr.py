"""Milvus boolean expressions and scalar fields from the project's own types, escaped (no pymilvus needed).

:func:`filters_expression` turns :class:`~recommender.ranking.hybrid.Filters` into the expression a
Milvus search filters by; :func:`allow_expression` does the same for the ``allow`` id mask of
:meth:`VectorIndex.search`; :func:`attribute_rows` gives the scalar fields a catalog row is stored
with. Values are quoted by :func:`quote`, never pasted: a hostile catalog value or query value
stays one string literal.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

import numpy as np

from recommender.catalog.loader import ATTRIBUTE_COLUMNS, split_values
from recommender.errors import RecommenderError

if TYPE_CHECKING:
    import pandas as pd

    from recommender.ranking.hybrid import Filters

PRICE_FIELD = "price"
SEP = "|"  # a cell ``blue|pink`` is stored as its two tokens, ``|626c7565||70696e6b|``
MAX_ATTRIBUTE_LENGTH = 2048  # characters of one stored attribute (its VARCHAR field)


class MilvusError(RecommenderError):
    """Milvus cannot be reached, refused a request, or cannot store a value; the message says which."""


def check_uri(uri: str) -> str:
    """``uri`` if Milvus can be reached by it: a milvus-lite file ``*.db`` or a server URL; else :class:`MilvusError`.

    Credentials written into a URL (``http://user:pw@host``) are masked in the message.
    """
    uri = str(uri).strip()
    shown = re.sub(r"//[^/@]*@", "//***@", uri)
    if "://" in uri:
        if not re.fullmatch(r"(https?|tcp|unix)://[^\s]+", uri):
            raise MilvusError(f"unsupported Milvus URI {shown!r}: give a .db file or an http(s):// URL")
    elif not uri.endswith(".db") or uri == ".db" or "\x00" in uri:
        raise MilvusError(f"a milvus-lite URI is a file ending in .db, got {shown!r} "
                          "(or give a server URL such as http://localhost:19530)")
    return uri


def collection_name(catalog_name: str, backbone_folder: str) -> str:
    """A valid Milvus collection name for one catalog + backbone configuration.

    Milvus names allow letters, digits and ``_`` only, so everything else becomes ``_``; the
    backbone folder (``efficientnet_lite0-1a2b3c4d``) carries the configuration hash, so vectors
    of different models or preprocessing never share a collection.
    """
    raw = f"rec_{catalog_name}_{backbone_folder}"
    return re.sub(r"[^A-Za-z0-9_]", "_", raw)[:255]


def token(value: str) -> str:
    """How one attribute value is stored and searched: its UTF-8 bytes in hex, between separators.

    Milvus's LIKE has murky escaping (a backslash before ``%`` changes meaning), so values never
    enter a pattern as text: ``|626c7565|`` for ``blue`` holds only ``[0-9a-f|]``, and a hostile
    value (quotes, backslashes, ``%``, ``or 1==1``) can neither widen a filter nor break out of it.
    """
    return f"{SEP}{value.encode('utf-8').hex()}{SEP}"


def quote(value: str) -> str:
    """``value`` as a Milvus string literal, escaped so it can only ever be that literal.

    Inside double quotes Milvus's expression grammar reads C escapes (``\\"``, ``\\\\``, ``\\n``,
    ``\\t``) and forbids a raw line break; escaping exactly those keeps a value like
    ``x" or 1==1 or "`` one string that cannot close the literal.
    """
    return '"' + _UNSAFE.sub(lambda m: _ESCAPES[m.group()], str(value)) + '"'


# Milvus reads other control characters raw, but rejects \\x, \\u and octal escapes.
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_UNSAFE = re.compile(r'[\\"\n\r\t]')


def _number(value: float, name: str) -> str:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise MilvusError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(x):
        raise MilvusError(f"{name} must be a finite number, got {value!r}")
    return repr(x)


def filters_expression(filters: Filters | None) -> str:
    """The project's :class:`~recommender.ranking.hybrid.Filters` as a Milvus boolean expression.

    Same meaning as ``Filters.mask``: an attribute passes if any of its values is selected
    (case-insensitive: values are stored and compared lower-cased); with a price bound, products
    without a price are excluded. No active filter gives ``""`` (everything passes).
    """
    if filters is None:
        return ""
    parts = []
    for col in ATTRIBUTE_COLUMNS:
        wanted = getattr(filters, col)
        if not wanted:
            continue
        if isinstance(wanted, str):  # a bare string would otherwise be read as its characters
            wanted = [wanted]
        values = sorted({str(w).strip().lower() for w in wanted})
        # LIKE on a VARCHAR of tokens: fast in milvus-lite, where an ARRAY field can be neither
        # indexed nor scanned quickly (2-3 s per query at 5k rows, measured).
        alternatives = [f"{col} like {quote(f'%{token(v)}%')}" for v in values]
        parts.append(f"({' or '.join(alternatives)})")
    if filters.price_min is not None:
        parts.append(f"({PRICE_FIELD} IS NOT NULL and {PRICE_FIELD} >= {_number(filters.price_min, 'price_min')})")
    if filters.price_max is not None:
        parts.append(f"({PRICE_FIELD} IS NOT NULL and {PRICE_FIELD} <= {_number(filters.price_max, 'price_max')})")
    return " and ".join(parts)


def allow_expression(allow: np.ndarray) -> str | None:
    """The ``allow`` mask of :meth:`VectorIndex.search` as an id expression over the shorter side.

    ``None`` means nothing is allowed (no search needed). Ids at or beyond ``len(allow)`` are not
    allowed, so the complement form bounds the id as well.
    """
    allow = np.asarray(allow, dtype=bool).ravel()
    allowed = np.flatnonzero(allow)
    if len(allowed) == 0:
        return None
    denied = np.flatnonzero(~allow)
    if len(allowed) <= len(denied):
        return f"id in [{', '.join(map(str, allowed.tolist()))}]"
    bound = f"id < {len(allow)}"
    return bound if len(denied) == 0 else f"{bound} and id not in [{', '.join(map(str, denied.tolist()))}]"


#: A hinted search lists at most this many excluded ids (the query item, rows a text filter dropped);
#: past it the plain id expression of :func:`allow_expression` is used.
MAX_HINT_EXCLUSIONS = 1024


def hinted_expression(expression: str, selected: np.ndarray, allow: np.ndarray) -> str | None:
    """``allow`` as ``expression`` (whose matching rows are ``selected``) minus the few rows it excludes.

    The attribute filter then runs in Milvus as what it is, instead of as a list of every allowed
    id (millions at scale). ``None`` when that would be wrong or long: ``allow`` lets through a
    row ``selected`` does not (the hint is stale), or it excludes more than
    :data:`MAX_HINT_EXCLUSIONS` selected rows; the caller then falls back to :func:`allow_expression`.
    """
    allow = np.asarray(allow, dtype=bool).ravel()
    n = max(len(allow), len(selected))
    a = np.zeros(n, dtype=bool)
    a[:len(allow)] = allow
    m = np.zeros(n, dtype=bool)
    m[:len(selected)] = np.asarray(selected, dtype=bool).ravel()
    excluded = np.flatnonzero(m & ~a)
    if (a & ~m).any() or len(excluded) > MAX_HINT_EXCLUSIONS or not a.any():
        return None
    parts = [f"({expression})"] if expression else []
    parts.append(f"id < {len(allow)}")  # ids past the mask are not allowed (VectorIndex contract)
    if len(excluded):
        parts.append(f"id not in [{', '.join(map(str, excluded.tolist()))}]")
    return " and ".join(parts)


def attribute_rows(items: pd.DataFrame) -> list[dict[str, object]]:
    """The scalar fields of each catalog row, as Milvus stores them (lower-cased value tokens, price or None)."""
    cols = [c for c in ATTRIBUTE_COLUMNS if c in items.columns]
    prices = items[PRICE_FIELD].to_numpy(dtype=float) if PRICE_FIELD in items.columns else None
    rows = []
    for i in range(len(items)):
        row: dict[str, object] = {c: "" for c in ATTRIBUTE_COLUMNS}
        for c in cols:
            values = list(dict.fromkeys(v.strip().lower() for v in split_values(items[c].iat[i])))
            stored = "".join(token(v) for v in values)
            if len(stored) > MAX_ATTRIBUTE_LENGTH:
                raise MilvusError(f"row {i}: {c} is {len(stored)} characters long; Milvus stores at most "
                                  f"{MAX_ATTRIBUTE_LENGTH}")
            row[c] = stored
        price = None if prices is None or not np.isfinite(prices[i]) else float(prices[i])
        row[PRICE_FIELD] = price
        rows.append(row)
    return rows
