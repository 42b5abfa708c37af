"""Reading a shopper's text query: price bounds become filters, the rest is matched as text.

"under 50", "below £30", "less than 20", "up to 99.99" -> ``price_max``; "over 100", "above $20",
"more than 5", "at least 10", "from 20" -> ``price_min``; "between 20 and 40", "20-40 euros",
"from 20 to 40" -> both. The phrase is removed from the text, so "50" is not matched as a word.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NUM = r"(?:[£$€]\s*)?(\d+(?:[.,]\d{1,2})?)\s*(?:(?:£|\$|€|euros?|eur|gbp|usd|dollars?|pounds?|quid)(?!\w))?"
_RANGE = re.compile(rf"\b(?:between|from)\s+{_NUM}\s*(?:and|to|-)\s*{_NUM}|(?<![\w.]){_NUM}\s*(?:-|to)\s*{_NUM}",
                    re.IGNORECASE)
_MAX = re.compile(rf"(?:\b(?:under|below|less\s+than|cheaper\s+than|at\s+most|up\s+to|max(?:imum)?|within)\s+|<=?\s*)"
                  rf"{_NUM}", re.IGNORECASE)
_MIN = re.compile(rf"(?:\b(?:over|above|more\s+than|at\s+least|min(?:imum)?|from)\s+|>=?\s*){_NUM}", re.IGNORECASE)


@dataclass(frozen=True)
class ParsedQuery:
    """A text query split into price bounds and the words left to match."""

    text: str  # the query without its price phrases
    price_min: float | None = None
    price_max: float | None = None
    phrases: tuple[str, ...] = ()  # the price phrases as written, for the notes

    def describe(self) -> str | None:
        if self.price_min is not None and self.price_max is not None:
            return f"price {self.price_min:g}-{self.price_max:g}"
        if self.price_max is not None:
            return f"price <= {self.price_max:g}"
        if self.price_min is not None:
            return f"price >= {self.price_min:g}"
        return None


def _number(s: str) -> float:
    return float(s.replace(",", "."))


def parse_query(text: str) -> ParsedQuery:
    """Price bounds out of ``text``; the first phrase of each kind wins, a reversed range is swapped."""
    lo = hi = None
    phrases: list[str] = []
    rest = text
    m = _RANGE.search(rest)
    if m:
        a, b = [_number(g) for g in m.groups() if g is not None][:2]
        lo, hi = min(a, b), max(a, b)
        phrases.append(m.group(0).strip())
        rest = rest[:m.start()] + " " + rest[m.end():]
    if hi is None and (m := _MAX.search(rest)):
        hi = _number(m.group(1))
        phrases.append(m.group(0).strip())
        rest = rest[:m.start()] + " " + rest[m.end():]
    if lo is None and (m := _MIN.search(rest)):
        lo = _number(m.group(1))
        phrases.append(m.group(0).strip())
        rest = rest[:m.start()] + " " + rest[m.end():]
    return ParsedQuery(" ".join(rest.split()), lo, hi, tuple(phrases))
