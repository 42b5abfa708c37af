import numpy as np
import pytest
from sklearn.base import clone

from recommender.features.metadata import MetadataEncoder


def test_rows_are_unit_length_and_float32(demo_catalog):
    m = MetadataEncoder().fit_transform(demo_catalog.items)
    assert m.shape[0] == len(demo_catalog) and m.dtype == np.float32
    np.testing.assert_allclose(np.sqrt(m.multiply(m).sum(axis=1)).A.ravel(), 1.0, rtol=1e-5)


def test_estimator_contract(demo_catalog):
    enc = MetadataEncoder(exclude=("brand",))
    assert not hasattr(enc, "vectorizers_")  # no work in __init__
    assert enc.fit(demo_catalog.items) is enc
    assert clone(enc).get_params()["exclude"] == ("brand",)


def test_excluded_and_empty_fields_are_not_features(demo_catalog):
    enc = MetadataEncoder(exclude=("sub_category", "category")).fit(demo_catalog.items)
    assert set(enc.field_weights_) == {"name", "description", "brand", "colour"}
    items = demo_catalog.items.assign(brand="")
    assert "brand" not in MetadataEncoder().fit(items).field_weights_


def test_nearest_by_metadata_is_sensible(demo_catalog):
    m = MetadataEncoder().fit_transform(demo_catalog.items)
    i = demo_catalog.position("freerun-running-shoe")
    sims = (m @ m[i].T).toarray().ravel()
    sims[i] = -1
    top = demo_catalog.items.iloc[np.argsort(-sims)[:3]]
    assert (top["sub_category"] == "Footwear").all()


def test_field_weights_change_what_counts(demo_catalog):
    items = demo_catalog.items
    i = demo_catalog.position("hi-top-basketball-shoe")  # Nike, white
    def nearest(**weights):
        m = MetadataEncoder(text_fields={"name": 1.0}, categorical_fields=weights).fit_transform(items)
        sims = (m @ m[i].T).toarray().ravel()
        sims[i] = -1
        return items.iloc[int(np.argmax(sims))]
    assert nearest(brand=10.0, colour=0.1)["brand"] == "Nike"
    assert "white" in nearest(brand=0.1, colour=10.0)["colour"]


def test_text_query_recognises_attributes(demo_catalog):
    enc = MetadataEncoder().fit(demo_catalog.items)
    vec, attrs = enc.transform_text("A black Nike running shoe")
    assert attrs == {"brand": ["nike"], "colour": ["black"]}
    assert vec.shape == (1, enc.n_features_out_)
    _, none = enc.transform_text("something unrelated")
    assert none == {}


def test_no_usable_field_is_an_error(demo_catalog):
    with pytest.raises(ValueError, match="no usable metadata field"):
        MetadataEncoder(text_fields={}, categorical_fields={"nope": 1.0}).fit(demo_catalog.items)


def test_bm25_weights_match_the_formula_on_demo_descriptions(demo_catalog):
    """Hand-computed Okapi BM25 for one word of one real description: idf from its document
    frequency, tf saturated by k1 and normalised by the description's length against the mean."""
    from recommender.features.metadata import BM25Vectorizer

    docs = demo_catalog.items["description"].fillna("").astype(str).tolist()
    vec = BM25Vectorizer(ngram_range=(1, 1), k1=1.2, b=0.75).fit(docs)
    counts = vec.counter_.transform(docs).toarray()
    j = vec.vocabulary_["running"]
    i = int(np.argmax(counts[:, j]))  # the description that says "running" most often
    tf, df, n = counts[i, j], (counts[:, j] > 0).sum(), len(docs)
    length, avgdl = counts[i].sum(), counts.sum() / n
    expected = np.log(1 + (n - df + 0.5) / (df + 0.5)) * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * length / avgdl))
    assert tf >= 1 and df >= 2
    np.testing.assert_allclose(vec.transform(docs[i:i + 1])[0, j], expected, rtol=1e-5)
    # Saturation: a word said ten times weighs less than ten times a word said once.
    once, ten = vec.transform(["running shoe", " ".join(["running"] * 10) + " shoe"]).toarray()[:, j]
    assert once < ten < 10 * once


def test_bm25_is_an_opt_in_text_weighting(demo_catalog):
    items = demo_catalog.items
    tfidf = MetadataEncoder().fit_transform(items)
    bm25_enc = MetadataEncoder(text_weighting="bm25").fit(items)
    bm25 = bm25_enc.transform(items)
    assert bm25.shape == tfidf.shape and bm25.dtype == np.float32
    np.testing.assert_allclose(np.sqrt(bm25.multiply(bm25).sum(axis=1)).A.ravel(), 1.0, rtol=1e-5)
    assert abs(bm25 - tfidf).sum() > 1.0  # a different weighting, same vocabulary
    i = demo_catalog.position("freerun-running-shoe")
    sims = (bm25 @ bm25[i].T).toarray().ravel()
    sims[i] = -1
    assert (items.iloc[np.argsort(-sims)[:3]]["sub_category"] == "Footwear").all()
    vec, attrs = bm25_enc.transform_text("A black Nike running shoe")
    assert attrs == {"brand": ["nike"], "colour": ["black"]} and vec.nnz > 0
    with pytest.raises(ValueError, match="text_weighting"):
        MetadataEncoder(text_weighting="bm52").fit(items)
