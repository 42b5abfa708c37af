"""One query's metadata row without scikit-learn's per-call overhead.

Encoding one short query through ``MetadataEncoder.transform`` costs ~5 ms however short the text: a
one-row DataFrame, per field a fresh analyzer, parameter validation, a sparse matrix assembled and
normalised twice, then stacked and normalised again; the arithmetic itself is a few microseconds.
:class:`QueryRows` is built once per fitted encoder from its vectorizers' fitted state (each field's
analyzer callable, vocabulary, idf, BM25 constants, the block offsets and scales, the attribute phrase
table) and repeats the transform's float32 operations, in the same order, on one row: the row is the one
``transform`` gives, same indices and same float32 data (tests/test_query_rows.py compares the two).

Built by ``MetadataEncoder`` at the end of every fit, so a re-fitted encoder (a live refit makes a new
one) never reads another vocabulary's tables.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.sparse as sp
from sklearn.base import clone

#: Recent analyses kept per fitted encoder ((field, text) -> terms, and text -> known words): a text query
#: needs the same words for its vector, its evidence row and its explanations; an LRU keeps that to one
#: analysis and bounds the memory.
ANALYSIS_CACHE = 1024


@dataclass(frozen=True)
class _Field:
    """One field's fitted tables, as its vectorizer's ``transform`` uses them."""

    name: str
    weighting: str  # "tfidf" | "bm25" | "binary" (the categorical one-hot)
    analyze: Callable[[str], list[str]]
    vocabulary: Mapping[str, int]
    offset: int  # first column of the field's block in the stacked row
    scale: float  # sqrt(field weight / total weight), a Python float as in the transform
    idf: np.ndarray | None
    sublinear_tf: bool = False
    k1: float = 0.0
    b: float = 0.0
    avgdl: float = 1.0


def as_text(value: object) -> str:
    """A cell as ``transform`` reads it (``fillna("").astype(str)``): missing -> ``""``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def _l2_normalised(data: np.ndarray) -> np.ndarray:
    """``sklearn.preprocessing.normalize`` of one float32 row, bit for bit: its loop multiplies in float32,
    sums in double from left to right (``cumsum`` is sequential where ``sum`` is pairwise) and divides in
    double; an all-zero row is left as is."""
    if not len(data):
        return data
    total = float(np.cumsum((data * data).astype(np.float64))[-1])
    if total == 0.0:
        return data
    return (data.astype(np.float64) / math.sqrt(total)).astype(np.float32)


class QueryRows:
    """A fitted :class:`~recommender.features.metadata.MetadataEncoder`'s query rows, one text at a time."""

    def __init__(self, encoder, phrases: dict[str, list[tuple[str, str]]]) -> None:
        self.n_features = int(encoder.n_features_out_)
        self.semantic_offset = int(encoder.semantic_offset_)
        self.fields: list[_Field] = []
        offset = 0
        for name, vec in encoder.vectorizers_.items():
            scale = encoder.block_scale_[name]
            if hasattr(vec, "counter_"):  # BM25Vectorizer: counts from its CountVectorizer, then BM25 weights
                self.fields.append(_Field(name, "bm25", vec.counter_.build_analyzer(), vec.vocabulary_, offset,
                                          scale, vec.idf_, k1=vec.k1, b=vec.b, avgdl=vec.avgdl_))
            elif hasattr(vec, "idf_"):  # TfidfVectorizer
                self.fields.append(_Field(name, "tfidf", vec.build_analyzer(), vec.vocabulary_, offset, scale,
                                          vec.idf_, sublinear_tf=bool(vec.sublinear_tf)))
            else:  # the categorical CountVectorizer (binary)
                self.fields.append(_Field(name, "binary", vec.build_analyzer(), vec.vocabulary_, offset, scale,
                                          None))
            offset += len(vec.vocabulary_)
        # Known single words need only the unigrams: the same analyzer without its n-grams (a result's
        # name and description are checked for every result shown; bigrams were half the analysing).
        self.word_analyzers = [(f.vocabulary, analyze) for f in self.fields if encoder.field_kinds_[f.name] == "text"
                               if (analyze := _unigram_analyzer(encoder.vectorizers_[f.name])) is not None]
        self.phrases = phrases  # normalised attribute phrase -> [(field, value)]
        self.longest_phrase = max((len(p.split()) for p in phrases), default=0)
        self._terms = lru_cache(maxsize=ANALYSIS_CACHE)(self._analysed)
        self._words = lru_cache(maxsize=ANALYSIS_CACHE)(self._known_words)

    def clear_cache(self) -> None:
        """Forget the analysed texts (benchmarks: the cost of a text seen for the first time)."""
        self._terms.cache_clear()
        self._words.cache_clear()

    def terms(self, field: _Field, text: str) -> tuple[np.ndarray, np.ndarray]:
        """The field's known terms in ``text``: sorted column indices (within the block) and their counts,
        as ``CountVectorizer.transform`` counts them (cached: the arrays are read-only)."""
        return self._terms(field.name, text)

    def _analysed(self, name: str, text: str) -> tuple[np.ndarray, np.ndarray]:
        field = next(f for f in self.fields if f.name == name)
        counts: dict[int, int] = {}
        vocab = field.vocabulary
        for token in field.analyze(text):
            j = vocab.get(token)
            if j is not None:
                counts[j] = counts.get(j, 0) + 1
        order = sorted(counts)
        indices = np.array(order, dtype=np.int32)
        values = np.array([counts[j] for j in order], dtype=np.float32)
        indices.flags.writeable = values.flags.writeable = False
        return indices, values

    def block(self, field: _Field, text: str) -> tuple[np.ndarray, np.ndarray]:
        """The field's block of the stacked row: column indices (offset) and data, normalised and scaled."""
        indices, counts = self.terms(field, text) if text else (np.zeros(0, np.int32), np.zeros(0, np.float32))
        data = counts.copy()
        if field.weighting == "tfidf":  # TfidfTransformer.transform, then its l2 norm
            if field.sublinear_tf:
                np.log(data, data)
                data += 1.0
            data *= field.idf[indices]
            data = _l2_normalised(data)
        elif field.weighting == "bm25":  # BM25Vectorizer.transform (its lengths are small integer sums: exact)
            lengths = np.array([data.sum()], dtype=np.float32)
            norm = field.k1 * (1 - field.b + field.b * lengths / field.avgdl)
            data = data * (field.k1 + 1) / (data + np.repeat(norm, len(data))) * field.idf[indices]
        else:
            data = np.ones(len(indices), np.float32)
        data = _l2_normalised(data) * field.scale  # the encoder's per-block normalise and weight
        return indices.astype(np.int32) + field.offset, data

    def words(self, text: str) -> list[str]:
        """The single words of ``text`` that some text field knows (sorted)."""
        return list(self._words(text))

    def _known_words(self, text: str) -> tuple[str, ...]:
        known: set[str] = set()
        for vocab, analyze in self.word_analyzers:
            known.update(t for t in analyze(text) if " " not in t and t in vocab)
        return tuple(sorted(known))

    def row(self, values: Mapping[str, str], dense: np.ndarray | None = None,
            semantic_weight: float = 0.0) -> sp.csr_matrix:
        """The stacked row of one record (``field -> text``, absent = empty), as ``MetadataEncoder.transform``
        makes it; ``dense``: its sentence embedding (given when the encoder has an embedding block; zeros
        or an empty array for "none", e.g. a query's word evidence)."""
        parts = [self.block(f, as_text(values.get(f.name))) for f in self.fields]
        indices = np.concatenate([p[0] for p in parts])
        data = _l2_normalised(np.concatenate([p[1] for p in parts]).astype(np.float32, copy=False))
        if dense is not None:
            m = float(semantic_weight)
            dense = np.asarray(dense, dtype=np.float32).ravel()
            nonzero = np.flatnonzero(dense)
            indices = np.concatenate([indices, nonzero.astype(np.int32) + self.semantic_offset])
            data = _l2_normalised(np.concatenate([data * np.float32(np.sqrt(1 - m)),
                                                  dense[nonzero] * np.float32(np.sqrt(m))]))
        return sp.csr_matrix((data, indices, np.array([0, len(indices)], dtype=np.int32)),
                             shape=(1, self.n_features))


def _unigram_analyzer(vec) -> Callable[[str], list[str]] | None:
    """The vectorizer's analyzer with ``ngram_range=(1, 1)``: the same words as its own analyzer's single-word
    terms (its n-grams start from those, stop words already dropped); None if it makes no single words."""
    counter = getattr(vec, "counter_", vec)  # BM25Vectorizer: its CountVectorizer
    if counter.ngram_range[0] > 1:
        return None
    return clone(counter).set_params(ngram_range=(1, 1)).build_analyzer()
