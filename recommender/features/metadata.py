"""Metadata features: TF-IDF (or BM25) over text fields plus one-hot over categorical fields.

Each field becomes its own block, L2-normalised and scaled by ``sqrt(weight / total weight)``;
the concatenated row is L2-normalised again. So the cosine of two rows is the weighted mean of the
per-field cosines over the fields both products have - which is what "field weights" should mean.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.preprocessing import normalize

from recommender.catalog.loader import MULTI_VALUE_SEP, split_values

DEFAULT_TEXT_FIELDS: dict[str, float] = {"name": 1.0, "description": 1.0}
DEFAULT_CATEGORICAL_FIELDS: dict[str, float] = {
    "brand": 1.0, "colour": 1.0, "category": 1.0, "sub_category": 1.0,
}


def _split_lower(cell: str) -> list[str]:
    # Module-level (not a lambda) so a fitted encoder pickles.
    return [v.lower() for v in split_values(cell)]


class MetadataEncoder(TransformerMixin, BaseEstimator):
    """Sparse metadata vectors for catalog rows and free-text queries (scikit-learn contract).

    Parameters
    ----------
    text_fields, categorical_fields:
        Field name -> weight. Fields absent from the table, or empty in every row, are skipped.
    exclude:
        Fields never used (e.g. the label an evaluation is scored on).
    ngram_range:
        Word n-grams of the text fields.
    text_weighting:
        ``"tfidf"`` (sublinear tf x idf) or ``"bm25"`` (Okapi BM25 term weights, which saturate
        repeated words and discount long descriptions; ``bm25_k1``, ``bm25_b``).
    """

    def __init__(
        self,
        text_fields: Mapping[str, float] | None = None,
        categorical_fields: Mapping[str, float] | None = None,
        exclude: Sequence[str] = (),
        ngram_range: tuple[int, int] = (1, 2),
        text_weighting: str = "tfidf",
        bm25_k1: float = 1.2,
        bm25_b: float = 0.75,
    ) -> None:
        self.text_fields = text_fields
        self.categorical_fields = categorical_fields
        self.exclude = exclude
        self.ngram_range = ngram_range
        self.text_weighting = text_weighting
        self.bm25_k1 = bm25_k1
        self.bm25_b = bm25_b

    def fit(self, X: pd.DataFrame, y: object = None) -> MetadataEncoder:
        if self.text_weighting not in ("tfidf", "bm25"):
            raise ValueError(f"text_weighting must be 'tfidf' or 'bm25', got {self.text_weighting!r}")
        text = DEFAULT_TEXT_FIELDS if self.text_fields is None else dict(self.text_fields)
        cats = DEFAULT_CATEGORICAL_FIELDS if self.categorical_fields is None else dict(self.categorical_fields)
        self.vectorizers_: dict[str, CountVectorizer] = {}
        self.field_weights_: dict[str, float] = {}
        self.field_kinds_: dict[str, str] = {}
        for kind, fields in (("text", text), ("categorical", cats)):
            for name, weight in fields.items():
                if name in self.exclude or name not in X.columns or weight <= 0:
                    continue
                vec = self._make_vectorizer(kind)
                try:
                    vec.fit(X[name].fillna("").astype(str))
                except ValueError:  # empty vocabulary: the field is blank everywhere
                    continue
                self.vectorizers_[name] = vec
                self.field_weights_[name] = float(weight)
                self.field_kinds_[name] = kind
        if not self.vectorizers_:
            raise ValueError("no usable metadata field: every configured field is missing or empty")
        total = sum(self.field_weights_.values())
        self.block_scale_ = {f: float(np.sqrt(w / total)) for f, w in self.field_weights_.items()}
        self.n_features_out_ = sum(len(v.vocabulary_) for v in self.vectorizers_.values())
        return self

    def _make_vectorizer(self, kind: str) -> CountVectorizer | BM25Vectorizer:
        if kind == "text" and self.text_weighting == "bm25":
            return BM25Vectorizer(ngram_range=self.ngram_range, k1=self.bm25_k1, b=self.bm25_b)
        if kind == "text":
            return TfidfVectorizer(
                ngram_range=self.ngram_range, sublinear_tf=True, stop_words="english",
                strip_accents="unicode", dtype=np.float32,
            )
        return CountVectorizer(tokenizer=_split_lower, token_pattern=None, lowercase=False,
                               binary=True, dtype=np.float32)

    def transform(self, X: pd.DataFrame) -> sp.csr_matrix:
        """Rows of ``X`` as L2-normalised sparse float32 vectors (missing fields count as empty)."""
        blocks = []
        for name, vec in self.vectorizers_.items():
            col = X[name].fillna("").astype(str) if name in X.columns else pd.Series([""] * len(X))
            block = normalize(sp.csr_matrix(vec.transform(col), dtype=np.float32))
            blocks.append(block * self.block_scale_[name])
        return normalize(sp.hstack(blocks, format="csr", dtype=np.float32))

    def fit_transform(self, X: pd.DataFrame, y: object = None) -> sp.csr_matrix:
        return self.fit(X).transform(X)

    def transform_text(self, text: str) -> tuple[sp.csr_matrix, dict[str, list[str]]]:
        """Encode a free-text query.

        The text fills every text field; a categorical value (brand, colour, ...) counts when it
        appears in the text as a whole phrase. Returns the vector and the attributes recognised.
        """
        row: dict[str, str] = {}
        recognised: dict[str, list[str]] = {}
        lowered = f" {_normalise_words(text)} "
        for name, kind in self.field_kinds_.items():
            if kind == "text":
                row[name] = text
                continue
            hits = [v for v in self.vectorizers_[name].vocabulary_
                    if f" {_normalise_words(v)} " in lowered and _normalise_words(v)]
            row[name] = MULTI_VALUE_SEP.join(hits)
            if hits:
                recognised[name] = sorted(hits)
        return self.transform(pd.DataFrame([row])), recognised

    def transform_attributes(self, attributes: Mapping[str, Sequence[str]]) -> sp.csr_matrix:
        """Encode attribute values alone (used for an uploaded photo's inferred attributes)."""
        row = {name: MULTI_VALUE_SEP.join(attributes.get(name, [])) for name in self.vectorizers_}
        return self.transform(pd.DataFrame([row]))


class BM25Vectorizer(BaseEstimator):
    """Okapi BM25 weights of word n-grams: ``idf * tf (k1 + 1) / (tf + k1 (1 - b + b |d| / avgdl))``.

    Used as document vectors on both sides of a cosine (symmetric BM25), like TF-IDF is here;
    ``idf = log(1 + (N - df + 0.5) / (df + 0.5))`` stays positive for terms in most documents.
    """

    def __init__(self, ngram_range: tuple[int, int] = (1, 2), k1: float = 1.2, b: float = 0.75) -> None:
        self.ngram_range = ngram_range
        self.k1 = k1
        self.b = b

    def fit(self, raw_documents: Sequence[str], y: object = None) -> BM25Vectorizer:
        self.counter_ = CountVectorizer(ngram_range=self.ngram_range, stop_words="english",
                                        strip_accents="unicode", dtype=np.float32)
        counts = sp.csr_matrix(self.counter_.fit_transform(raw_documents))
        n = counts.shape[0]
        df = np.bincount(counts.indices, minlength=counts.shape[1])
        self.idf_ = np.log1p((n - df + 0.5) / (df + 0.5)).astype(np.float32)
        self.avgdl_ = float(max(counts.sum() / max(n, 1), 1e-9))
        return self

    @property
    def vocabulary_(self) -> dict[str, int]:
        return self.counter_.vocabulary_

    def transform(self, raw_documents: Sequence[str]) -> sp.csr_matrix:
        counts = sp.csr_matrix(self.counter_.transform(raw_documents), dtype=np.float32)
        lengths = np.asarray(counts.sum(axis=1), dtype=np.float32).ravel()
        norm = self.k1 * (1 - self.b + self.b * lengths / self.avgdl_)
        # Scale each stored tf by its row's length normaliser, then by its term's idf.
        row_norm = np.repeat(norm, np.diff(counts.indptr))
        counts.data = counts.data * (self.k1 + 1) / (counts.data + row_norm) * self.idf_[counts.indices]
        return counts


def _normalise_words(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))
