"""Metadata features: TF-IDF (or BM25) over text fields plus one-hot over categorical fields.

Each field becomes its own block, L2-normalised and scaled by ``sqrt(weight / total weight)``;
the concatenated row is L2-normalised again. So the cosine of two rows is the weighted mean of the
per-field cosines over the fields both products have - which is what "field weights" should mean.

With a ``text_embedder`` (a sentence-embedding model, :mod:`recommender.features.text_embedder`) and
``semantic_weight`` m > 0, the row gets a dense block too: ``[sqrt(1 - m) * words, sqrt(m) * embedding]``
(the embedding of the text fields joined), so the cosine of two rows is ``(1 - m)`` times the word cosine
plus ``m`` times the embedding cosine. The matrix stays one sparse CSR matrix for every consumer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer, TfidfVectorizer
from sklearn.preprocessing import normalize

from recommender.catalog.loader import MULTI_VALUE_SEP, split_values
from recommender.features.query_rows import QueryRows, as_text

DEFAULT_TEXT_FIELDS: dict[str, float] = {"name": 1.0, "description": 1.0}
DEFAULT_CATEGORICAL_FIELDS: dict[str, float] = {
    "brand": 1.0, "colour": 1.0, "category": 1.0, "sub_category": 1.0,
}


def singular(word: str) -> str:
    """A light English plural folding ("shoes" -> "shoe", "batteries" -> "battery"), for matching only."""
    if len(word) <= 3 or not word.isalpha():
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("sses", "shes", "ches", "xes", "zes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


_TOKEN = re.compile(r"(?u)\b\w\w+\b")


def singular_tokens(doc: str) -> list[str]:
    """Words of ``doc`` (already lower-cased) without English stop words, plurals folded."""
    return [singular(t) for t in _TOKEN.findall(doc) if t not in ENGLISH_STOP_WORDS]


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
    fold_plurals:
        Fold English plurals in text fields and in attribute matching ("shoes" finds "Shoe").
    text_embedder, semantic_weight:
        An object with ``encode(texts)`` and ``encode_catalog(texts)`` returning unit rows (or zeros for an
        empty text) and the share ``m`` of the similarity it gives (0 = words only).
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
        fold_plurals: bool = True,
        text_embedder: object | None = None,
        semantic_weight: float = 0.0,
    ) -> None:
        self.text_fields = text_fields
        self.categorical_fields = categorical_fields
        self.exclude = exclude
        self.ngram_range = ngram_range
        self.text_weighting = text_weighting
        self.bm25_k1 = bm25_k1
        self.bm25_b = bm25_b
        self.fold_plurals = fold_plurals
        self.text_embedder = text_embedder
        self.semantic_weight = semantic_weight

    def fit(self, X: pd.DataFrame, y: object = None) -> MetadataEncoder:
        self._fit(X, None)
        return self

    def _fit(self, X: pd.DataFrame, blocks: dict | None) -> None:
        """Fit every field's vectorizer; with ``blocks`` also keep each field's rows of ``X`` (one tokenising
        pass where fit then transform took two: most of a warm fit at 100k products)."""
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
                    col = X[name].fillna("").astype(str)
                    if blocks is None:
                        vec.fit(col)
                    else:
                        blocks[name] = (vec.fit_transform(col) if hasattr(vec, "fit_transform")
                                        else vec.fit(col).transform(col))
                except ValueError:  # empty vocabulary: the field is blank everywhere
                    continue
                self.vectorizers_[name] = vec
                self.field_weights_[name] = float(weight)
                self.field_kinds_[name] = kind
        if not self.vectorizers_:
            raise ValueError("no usable metadata field: every configured field is missing or empty")
        total = sum(self.field_weights_.values())
        self.block_scale_ = {f: float(np.sqrt(w / total)) for f, w in self.field_weights_.items()}
        self.semantic_offset_ = sum(len(v.vocabulary_) for v in self.vectorizers_.values())
        if not 0.0 <= self.semantic_weight < 1.0:
            raise ValueError(f"semantic_weight must be in [0, 1), got {self.semantic_weight!r}")
        self.semantic_ = (self.text_embedder is not None and self.semantic_weight > 0
                          and any(kind == "text" for kind in self.field_kinds_.values()))
        self.n_features_out_ = self.semantic_offset_ + (self.semantic_dim if self.semantic_ else 0)
        self.query_rows_ = QueryRows(self, self._phrase_table())  # this fit's tables, for one-row queries

    def __getstate__(self) -> dict:
        state = dict(super().__getstate__())  # a copy: object.__getstate__ returns the live __dict__
        state.pop("query_rows_", None)  # caches and analyzer closures: rebuilt from the fitted vectorizers
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        if hasattr(self, "vectorizers_"):
            self.query_rows_ = QueryRows(self, self._phrase_table())

    @property
    def semantic_dim(self) -> int:
        return int(getattr(self.text_embedder, "dim", 384))

    def _make_vectorizer(self, kind: str) -> CountVectorizer | BM25Vectorizer:
        if kind == "text" and self.text_weighting == "bm25":
            return BM25Vectorizer(ngram_range=self.ngram_range, k1=self.bm25_k1, b=self.bm25_b,
                                  fold_plurals=self.fold_plurals)
        if kind == "text":
            words = ({"tokenizer": singular_tokens, "token_pattern": None} if self.fold_plurals
                     else {"stop_words": "english"})
            return TfidfVectorizer(ngram_range=self.ngram_range, sublinear_tf=True, strip_accents="unicode",
                                   dtype=np.float32, **words)
        return CountVectorizer(tokenizer=_split_lower, token_pattern=None, lowercase=False,
                               binary=True, dtype=np.float32)

    def transform(self, X: pd.DataFrame, catalog: bool = True, semantic: bool = True) -> sp.csr_matrix:
        """Rows of ``X`` as L2-normalised sparse float32 vectors (missing fields count as empty).

        ``catalog``: the rows are products (their text embeddings are cached by content), not a query.
        ``semantic=False``: the word/attribute block alone (a query's word evidence)."""
        return self._stacked(X, {}, catalog, semantic)

    def _stacked(self, X: pd.DataFrame, done: dict, catalog: bool = True, semantic: bool = True) -> sp.csr_matrix:
        blocks = []
        for name, vec in self.vectorizers_.items():
            raw = done.get(name)
            if raw is None:
                col = X[name].fillna("").astype(str) if name in X.columns else pd.Series([""] * len(X))
                if len(col) <= 16 and not any(col):  # a query's blank fields: ~2 ms each through sklearn
                    blocks.append(sp.csr_matrix((len(col), len(vec.vocabulary_)), dtype=np.float32))
                    continue
                raw = vec.transform(col)
            block = normalize(sp.csr_matrix(raw, dtype=np.float32))
            blocks.append(block * self.block_scale_[name])
        words = normalize(sp.hstack(blocks, format="csr", dtype=np.float32))
        if not getattr(self, "semantic_", False):
            return words
        m = float(self.semantic_weight)
        if not semantic:
            dense = sp.csr_matrix((len(X), self.semantic_dim), dtype=np.float32)
        else:
            texts = self.semantic_texts(X)
            encode = self.text_embedder.encode_catalog if catalog else self.text_embedder.encode
            dense = sp.csr_matrix(encode(texts), dtype=np.float32)
        # Rows with only one side (no known word, or no text) come out unit after the final normalise.
        return normalize(sp.hstack([words * np.float32(np.sqrt(1 - m)), dense * np.float32(np.sqrt(m))],
                                   format="csr", dtype=np.float32))

    def semantic_texts(self, X: pd.DataFrame) -> list[str]:
        """What the sentence embedding reads of each row: its text fields joined (excluded ones are not
        fields here), e.g. ``"Running Shoe. Built for speed ..."``."""
        cols = [X[name].fillna("").astype(str).str.strip() if name in X.columns else pd.Series([""] * len(X))
                for name, kind in self.field_kinds_.items() if kind == "text"]
        return [_joined(parts) for parts in zip(*[c.tolist() for c in cols], strict=True)]

    def without_semantic(self, rows: sp.csr_matrix) -> sp.csr_matrix:
        """``rows`` with the embedding block dropped (their word/attribute evidence); unchanged without one."""
        if not getattr(self, "semantic_", False):
            return rows
        return _masked_columns(rows, lambda cols: cols < self.semantic_offset_)

    def semantic_only(self, rows: sp.csr_matrix) -> sp.csr_matrix | None:
        """``rows`` with the word/attribute blocks dropped; None without an embedding block."""
        if not getattr(self, "semantic_", False):
            return None
        return _masked_columns(rows, lambda cols: cols >= self.semantic_offset_)

    def fit_transform(self, X: pd.DataFrame, y: object = None) -> sp.csr_matrix:
        """``fit(X).transform(X)`` with each field tokenised once."""
        done: dict = {}
        self._fit(X, done)
        return self._stacked(X, done)

    def transform_text(self, text: str) -> tuple[sp.csr_matrix, dict[str, list[str]]]:
        """Encode a free-text query.

        The text fills every text field; a categorical value (brand, colour, ...) counts when it
        appears in the text as a whole phrase. Returns the vector and the attributes recognised.
        """
        recognised = self.recognise(text)
        row: dict[str, str] = {}
        for name, kind in self.field_kinds_.items():
            row[name] = text if kind == "text" else MULTI_VALUE_SEP.join(recognised.get(name, []))
        return self.query_row(row), recognised

    def query_row(self, row: Mapping[str, str], semantic: bool = True) -> sp.csr_matrix:
        """``transform(pd.DataFrame([row]), catalog=False, semantic=semantic)`` - the same row, built from
        this fit's tables without scikit-learn's per-call overhead (:mod:`.query_rows`): ~5 ms less a call."""
        rows = self.query_rows_
        if not getattr(self, "semantic_", False):
            return rows.row(row)
        dense = np.zeros(0, np.float32)
        if semantic:
            text = _joined([as_text(row.get(name)).strip() for name, kind in self.field_kinds_.items()
                            if kind == "text"])
            dense = self.text_embedder.encode([text])[0]
        return rows.row(row, dense, self.semantic_weight)

    def recognise(self, text: str) -> dict[str, list[str]]:
        """Categorical values named in ``text`` as whole phrases (plurals folded): ``{field: values}``.

        A lookup of the text's word n-grams in a phrase table built once per fitted encoder, so the
        cost does not grow with the number of brands or categories.
        """
        table, longest = self.query_rows_.phrases, self.query_rows_.longest_phrase
        words = _normalise_words(text, self.fold_plurals).split()
        found: dict[str, set[str]] = {}
        for size in range(1, longest + 1):
            for start in range(len(words) - size + 1):
                for name, value in table.get(" ".join(words[start:start + size]), ()):
                    found.setdefault(name, set()).add(value)
        return {name: sorted(values) for name, values in found.items()}

    def _phrase_table(self) -> dict[str, list[tuple[str, str]]]:
        """Normalised phrase -> ``[(field, value)]`` over every categorical vocabulary (built once a fit)."""
        table: dict[str, list[tuple[str, str]]] = {}
        for name, kind in self.field_kinds_.items():
            if kind == "text":
                continue
            for value in self.vectorizers_[name].vocabulary_:
                phrase = _normalise_words(value, self.fold_plurals)
                if phrase:
                    table.setdefault(phrase, []).append((name, value))
        return table

    def text_words(self, text: str) -> list[str]:
        """The words of ``text`` the text fields know (after stop words and plural folding)."""
        return self.query_rows_.words(text)

    def transform_text_fields(self, text: str | Sequence[str], semantic: bool = True,
                              catalog: bool = False) -> sp.csr_matrix:
        """Text(s) in the text fields only (no categorical block); ``semantic=False``: the words alone
        (a query's word evidence); ``catalog``: texts from the catalog (embeddings cached by content)."""
        if isinstance(text, str) and not catalog:
            return self.query_row({name: text for name, kind in self.field_kinds_.items() if kind == "text"},
                                  semantic=semantic)
        texts = [text] if isinstance(text, str) else list(text)
        rows = {name: texts if kind == "text" else [""] * len(texts) for name, kind in self.field_kinds_.items()}
        return self.transform(pd.DataFrame(rows), catalog=catalog, semantic=semantic)

    def transform_attributes(self, attributes: Mapping[str, Sequence[str]]) -> sp.csr_matrix:
        """Encode attribute values alone (used for an uploaded photo's inferred attributes)."""
        row = {name: MULTI_VALUE_SEP.join(attributes.get(name, [])) for name in self.vectorizers_}
        return self.query_row(row)


class BM25Vectorizer(BaseEstimator):
    """Okapi BM25 weights of word n-grams: ``idf * tf (k1 + 1) / (tf + k1 (1 - b + b |d| / avgdl))``.

    Used as document vectors on both sides of a cosine (symmetric BM25), like TF-IDF is here;
    ``idf = log(1 + (N - df + 0.5) / (df + 0.5))`` stays positive for terms in most documents.
    """

    def __init__(self, ngram_range: tuple[int, int] = (1, 2), k1: float = 1.2, b: float = 0.75,
                 fold_plurals: bool = False) -> None:
        self.ngram_range = ngram_range
        self.k1 = k1
        self.b = b
        self.fold_plurals = fold_plurals

    def fit(self, raw_documents: Sequence[str], y: object = None) -> BM25Vectorizer:
        words = ({"tokenizer": singular_tokens, "token_pattern": None} if self.fold_plurals
                 else {"stop_words": "english"})
        self.counter_ = CountVectorizer(ngram_range=self.ngram_range, strip_accents="unicode", dtype=np.float32,
                                        **words)
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


def _normalise_words(text: str, fold_plurals: bool = False) -> str:
    words = re.findall(r"\w+", text.lower())
    return " ".join(singular(w) for w in words) if fold_plurals else " ".join(words)


def _joined(texts: Sequence[str]) -> str:
    """A record's text fields (stripped) as the sentence embedding reads them: ``"Running Shoe. Built for ..."``."""
    return ". ".join(p for p in texts if p)


def _masked_columns(rows: sp.csr_matrix, keep) -> sp.csr_matrix:
    out = sp.csr_matrix(rows, dtype=np.float32, copy=True)
    out.data = out.data * keep(out.indices)
    out.eliminate_zeros()
    return out
