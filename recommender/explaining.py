"""What a result shows and why it was chosen: its catalog cells, the attributes and words it shares with
the query, each side's share of its score, and why a query found nothing (the façade's explanations).

Mixed into :class:`~recommender.recommender.HybridRecommender` through
:class:`~recommender.querying.QueryMixin`; reads fitted state only.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from recommender.catalog.loader import ATTRIBUTE_COLUMNS, split_values
from recommender.ranking.filters import Filters
from recommender.ranking.hybrid import Ranking
from recommender.ranking.results import Recommendation


class ExplainMixin:
    """Result rows and empty-result reasons; see :class:`~recommender.recommender.HybridRecommender`."""

    def _cells(self, positions: np.ndarray, columns) -> dict[str, list]:
        """The cells of ``columns`` (those the catalog has) at rows ``positions``: one vectorised take per
        column, so a query touches only the rows it returns (per-row pandas access cost ~0.1 ms a cell).
        Arrow-backed columns are taken in pyarrow (a missing value read back as the column's own NA):
        at 100k, 6 columns x 10 rows cost 0.42 ms through pandas, 0.07 ms so (docs/api.md, "Measured")."""
        pos = np.asarray(positions, dtype=np.int64)
        out = {}
        for c, (arrow, array, na) in self._column_arrays().items():
            if c not in columns:
                continue
            if arrow is None:
                out[c] = array.take(pos).tolist()
            else:
                out[c] = [na if v is None else v for v in arrow.take(pos).to_pylist()]
        return out

    def _column_arrays(self) -> dict[str, tuple]:
        """Per column: its pyarrow ChunkedArray (None if not Arrow-backed), its pandas array and NA value;
        built once per catalog frame (a live update makes a new frame, never edits one in place)."""
        items = self.catalog_.items
        cached = getattr(self, "_column_cache", None)
        if cached is None or cached[0] is not items:
            arrays = {}
            for c in items.columns:
                array = items[c].array
                arrow = array.__arrow_array__() if getattr(array.dtype, "storage", None) == "pyarrow" else None
                arrays[c] = (arrow, array, getattr(array.dtype, "na_value", None))
            cached = (items, arrays)
            self._column_cache = cached  # one tuple assignment: a concurrent reader sees the old or the new
        return cached[1]

    def _items(self, ranking: Ranking, query_attrs: Mapping[str, list[str]], text: str | None) -> list[Recommendation]:
        positions = np.asarray(ranking.positions, dtype=np.int64)
        if not len(positions):
            return []
        query_words = set(self.metadata_encoder_.text_words(text)) if text else set()
        wanted = {col: {v.lower() for v in qvals} for col, qvals in query_attrs.items() if col in ATTRIBUTE_COLUMNS}
        text_cols = ("name", "description") if query_words else ()
        cells = self._cells(positions, dict.fromkeys(("id", "name", *wanted, *text_cols)))
        final, image_raw = ranking.final.tolist(), ranking.image_raw.tolist()
        metadata_raw = ranking.metadata_raw.tolist()
        image_part = (ranking.weight * ranking.image_norm).tolist()
        metadata_part = ((1 - ranking.weight) * ranking.metadata_norm).tolist()
        out = []
        for j, pos in enumerate(positions.tolist()):
            shared = {}
            for col, q in wanted.items():
                common = [v for v in split_values(cells[col][j]) if v.lower() in q] if col in cells else []
                if common:
                    shared[col] = common
            matched: tuple[str, ...] = ()
            if query_words:
                own = " ".join(str(cells[f][j]) for f in text_cols if f in cells)
                matched = tuple(sorted(query_words & set(self.metadata_encoder_.text_words(own))))
            out.append(Recommendation(
                id=str(cells["id"][j]), name=str(cells["name"][j]), position=pos, score=final[j],
                image_score=image_raw[j], metadata_score=metadata_raw[j], image_contribution=image_part[j],
                metadata_contribution=metadata_part[j], shared=shared, matched=matched))
        return out

    def _empty_reason(self, filters: Filters, item_pos: int | None, text: str | None, allowed: np.ndarray) -> str:
        keep = self.alive_.copy()
        if item_pos is not None:
            keep[item_pos] = False
        applied = []
        for desc, m in filters.steps(None, self.attributes_):
            before = int(keep.sum())
            keep &= m
            applied.append(desc)
            if not keep.any():
                if len(applied) == 1:
                    return f"no product matches {desc}"
                return (f"no product matches {desc} together with {' and '.join(applied[:-1])} "
                        f"({before} matched before it)")
        if text is not None:
            if not allowed.any():
                return f"no product matches the price in {text!r}"
            return f"no product matches {text!r}" + (" with these filters" if filters.active() else "")
        if not keep.any():
            return "the catalog has no other product"
        return "no product is similar enough to show"
