"""A query's metadata row from the fitted tables (features/query_rows.py) is the sklearn transform's row.

The reference is ``MetadataEncoder.transform`` of a one-row DataFrame (the path every query took before):
same column indices, same float32 data bit for bit, on the demo catalog and on online-retail's 3,660
product names, for queries of every awkward kind.
"""

from __future__ import annotations

import pickle
import zlib

import numpy as np
import pandas as pd
import pytest

from recommender import HybridRecommender, load_catalog
from recommender.catalog.loader import DEMO_CATALOG, MULTI_VALUE_SEP
from recommender.features.metadata import MetadataEncoder

RETAIL = DEMO_CATALOG.parents[1] / "online-retail" / "catalog.parquet"
AWKWARD = [
    "", " ", "   \t\n", "!!!", "...,;:-/", "a", "the of and", "xyzzy plugh frobnicate",
    "Schuhe für Herren: größe 42", "naïve café crème brûlée", "日本語の商品説明", "🙂🙂 emoji 👟 shoes",
    "SHOUTING RUNNING SHOES", "shoes shoes shoes shoes", "black|white", "running-shoe, black/white",
    "black nike running shoes for trail and road " * 60,  # ~2,800 characters
]


def _sklearn_row(enc: MetadataEncoder, row: dict[str, str], semantic: bool = True):
    return enc.transform(pd.DataFrame([row], dtype=object), catalog=False, semantic=semantic)


def _query_fields(enc: MetadataEncoder, text: str) -> dict[str, str]:
    found = enc.recognise(text)
    return {name: text if kind == "text" else MULTI_VALUE_SEP.join(found.get(name, []))
            for name, kind in enc.field_kinds_.items()}


def _assert_same_row(fast, slow, where: str) -> None:
    slow = slow.tocsr()
    slow.sort_indices()
    assert fast.shape == slow.shape and fast.dtype == slow.dtype == np.float32, where
    assert fast.has_sorted_indices, where
    np.testing.assert_array_equal(fast.indices, slow.indices, err_msg=where)
    # Bit for bit: the fast path repeats the transform's float32 operations in the same order.
    np.testing.assert_array_equal(fast.data.view(np.uint32), slow.data.view(np.uint32), err_msg=where)


def _queries(items: pd.DataFrame, n: int) -> list[str]:
    names = items["name"].fillna("").astype(str).tolist()
    rng = np.random.default_rng(14)
    picked = [names[i] for i in rng.choice(len(names), min(n, len(names)), replace=False)]
    # Fragments and mixtures: word pairs across products, lower case, plus the awkward ones.
    mixed = [f"{a.split()[0] if a.split() else ''} {b.lower()}" for a, b in zip(picked, picked[::-1], strict=True)]
    return picked + mixed + AWKWARD


@pytest.mark.parametrize("params", [
    {}, {"text_weighting": "bm25"}, {"fold_plurals": False}, {"ngram_range": (1, 3)},
    {"text_fields": {"name": 3.0, "description": 1.0}, "categorical_fields": {"brand": 2.0, "colour": 0.5}},
], ids=["tfidf", "bm25", "no-plural-folding", "trigrams", "weighted"])
def test_text_query_rows_equal_the_sklearn_transform_on_the_demo(demo_catalog, params):
    items = demo_catalog.items
    enc = MetadataEncoder(**params).fit(items)
    queries = _queries(items, 60) + items["description"].astype(str).tolist()[:20] + ["A black Nike running shoe"]
    recognised = 0
    for text in queries:
        row = _query_fields(enc, text)
        fast, attrs = enc.transform_text(text)
        recognised += bool(attrs)
        _assert_same_row(fast, _sklearn_row(enc, row), repr(text[:60]))
        words_only = {name: text for name, kind in enc.field_kinds_.items() if kind == "text"}
        _assert_same_row(enc.transform_text_fields(text, semantic=False), _sklearn_row(enc, words_only),
                         "text fields " + repr(text[:60]))
    assert recognised >= 10  # the categorical blocks were exercised, not only the words


def test_text_query_rows_equal_the_sklearn_transform_on_online_retail_names():
    items = load_catalog(RETAIL).items
    for params in ({}, {"text_weighting": "bm25"}):
        enc = MetadataEncoder(**params).fit(items)
        for text in _queries(items, 300):
            _assert_same_row(enc.transform_text(text)[0], _sklearn_row(enc, _query_fields(enc, text)), repr(text[:60]))


@pytest.mark.parametrize("params", [{}, {"text_weighting": "bm25"}, {"fold_plurals": False}, {"ngram_range": (1, 3)},
                                    {"ngram_range": (2, 2)}], ids=["tfidf", "bm25", "no-folding", "1-3", "2-2"])
def test_text_words_are_the_known_single_words_of_each_text_field(demo_catalog, params):
    items = demo_catalog.items
    enc = MetadataEncoder(**params).fit(items)
    texts = _queries(items, 40) + items["description"].astype(str).tolist()[:40] + ["zebra xyzzy", "pens and pencils"]
    found = 0
    for text in texts:
        expected = set()  # the definition: each text field's own terms that are single words
        for name, kind in enc.field_kinds_.items():
            if kind == "text":
                vec = enc.vectorizers_[name]
                analyze = getattr(vec, "counter_", vec).build_analyzer()
                expected |= {t for t in analyze(text) if " " not in t and t in vec.vocabulary_}
        assert enc.text_words(text) == sorted(expected), repr(text[:60])
        found += bool(expected)
    assert found >= (0 if params.get("ngram_range") == (2, 2) else 60)
    if params.get("ngram_range") != (2, 2):
        assert enc.text_words("Black running shoes") == ["black", "running", "shoe" if enc.fold_plurals else "shoes"]


class _HashEmbedder:
    """A stand-in sentence embedder (deterministic unit vectors from the text, zeros for an empty one),
    so the embedding block's assembly is checked without the model."""

    dim = 16

    def encode(self, texts):
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, text in enumerate(texts):
            if text:
                v = np.random.default_rng(zlib.crc32(text.encode())).normal(size=self.dim).astype(np.float32)
                v[::5] = 0.0  # some exact zeros: the transform's CSR drops them
                out[i] = v / np.linalg.norm(v)
        return out

    encode_catalog = encode


def test_rows_with_a_sentence_embedding_block_equal_the_sklearn_transform(demo_catalog):
    enc = MetadataEncoder(text_embedder=_HashEmbedder(), semantic_weight=0.3).fit(demo_catalog.items)
    assert enc.semantic_
    for text in _queries(demo_catalog.items, 20):
        row = _query_fields(enc, text)
        _assert_same_row(enc.query_row(row), _sklearn_row(enc, row), repr(text[:60]))
        _assert_same_row(enc.query_row(row, semantic=False), _sklearn_row(enc, row, semantic=False), repr(text[:60]))
    missing = {"name": None, "description": float("nan"), "brand": "Nike"}  # read as transform reads cells
    _assert_same_row(enc.query_row(missing), _sklearn_row(enc, missing), "missing cells")
    attrs = {"brand": ["Nike"], "colour": ["black", "white"]}
    row = {name: MULTI_VALUE_SEP.join(attrs.get(name, [])) for name in enc.vectorizers_}
    _assert_same_row(enc.transform_attributes(attrs), _sklearn_row(enc, row), "attributes")


def test_a_refit_refreshes_the_query_tables(demo_catalog):
    items = demo_catalog.items
    shoes = items[items["sub_category"] == "Footwear"]
    enc = MetadataEncoder().fit(items[items["sub_category"] != "Footwear"])
    assert enc.text_words("running shoe") == []
    enc.fit(shoes)  # in place: the tables built for the first vocabulary must not answer
    assert "running" in enc.text_words("running shoe")
    _assert_same_row(enc.transform_text("running shoe")[0],
                     _sklearn_row(enc, _query_fields(enc, "running shoe")), "after the refit")


def test_a_pickled_encoder_rebuilds_its_query_tables(demo_catalog):
    enc = MetadataEncoder(text_weighting="bm25").fit(demo_catalog.items)
    clone = pickle.loads(pickle.dumps(enc))
    for text in ["A black Nike running shoe", "zebra", ""]:
        _assert_same_row(clone.transform_text(text)[0], enc.transform_text(text)[0], repr(text))


def test_a_live_vocabulary_refit_gives_queries_the_new_tables(demo_recommender, demo_catalog):
    live = HybridRecommender(backbone="efficientnet_lite0", cache_dir=demo_recommender.cache_dir,
                             text_embedding="off").fit(demo_catalog)
    before = live.metadata_encoder_
    rows = demo_catalog.items.iloc[:25].copy()
    rows["id"] = [f"quokka-{i}" for i in range(25)]
    rows["name"] = [f"Quokka {n}" for n in rows["name"]]
    assert live.upsert(rows).metadata_refitted
    enc = live.metadata_encoder_
    assert enc is not before and enc.query_rows_ is not before.query_rows_
    assert enc.text_words("quokka") == ["quokka"] and before.text_words("quokka") == []
    _assert_same_row(enc.transform_text("quokka")[0], _sklearn_row(enc, _query_fields(enc, "quokka")), "live refit")
    assert len(live.recommend(text="quokka", k=50)) == 25
