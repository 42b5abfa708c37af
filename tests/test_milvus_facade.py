"""The façade on the Milvus backend (milvus-lite) answers as the exact backend does, on the demo catalog.

``HybridRecommender(index="milvus")`` takes its image candidates from the collection (filters run inside
Milvus as a boolean expression on the scalar fields) and re-scores them exactly; live updates (upsert,
patch, remove) are mirrored into the collection, scalar fields included. Skips where the optional
``pymilvus``/``milvus-lite`` packages are absent, but fails in CI (``CI=true``).
"""

from __future__ import annotations

import copy
import importlib.util
import os

import numpy as np
import pandas as pd
import pytest

from recommender import HybridRecommender
from recommender import querying as querying_module
from recommender.catalog.loader import DEMO_CATALOG
from recommender.index.exact import ExactIndex
from recommender.ranking.hybrid import Filters
from recommender.scoring import sparse_top

if importlib.util.find_spec("pymilvus") is None or importlib.util.find_spec("milvus_lite") is None:
    reason = "pymilvus and milvus-lite are not installed (pip install -r requirements-milvus.txt)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the Milvus tests: {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)

from recommender.index.milvus import MilvusError, MilvusIndex  # noqa: E402
from recommender.index.milvus_catalog import sparse_matrix  # noqa: E402

PHOTO = DEMO_CATALOG.parent / "images" / "tennis-ball.jpg"
FILTERS = [
    None,
    Filters(category=["Electronics"]),
    Filters(category=["Apparel", "sports & outdoor"], price_min=10, price_max=120),  # category + price range
]


@pytest.fixture(scope="module")
def demo_recommender(demo_recommender):
    """The exact-scan reference, words-only like the Milvus backend (whose sparse metadata field takes no
    sentence embedding: ``text_embedding`` stays off with ``index="milvus"``); the session's image cache. No query
    expansion, as the Milvus façade (``qe_k="auto"`` expands only exactly scanned catalogs)."""
    return HybridRecommender(backbone="efficientnet_lite0", cache_dir=demo_recommender.cache_dir,
                             text_embedding="off", qe_k=0).fit(demo_recommender.catalog_)


def milvus_recommender(demo_recommender, uri) -> HybridRecommender:
    return HybridRecommender(backbone="efficientnet_lite0", cache_dir=demo_recommender.cache_dir, index="milvus",
                             index_options={"uri": str(uri)}).fit(demo_recommender.catalog_)


@pytest.fixture(scope="module")
def demo_on_milvus(demo_recommender, tmp_path_factory):
    rec = milvus_recommender(demo_recommender, tmp_path_factory.mktemp("milvus-facade") / "demo.db")
    yield rec
    rec.image_index_.close()


@pytest.fixture()
def through_the_index(monkeypatch):
    """Every query takes its candidates from the image index (the demo is below the exact-scan limit);
    returns the Milvus expressions the searches were filtered by."""
    monkeypatch.setattr(querying_module, "EXACT_SCAN_LIMIT", 0)
    expressions: list[str] = []
    search = MilvusIndex.search_filtered

    def spy(self, q, k, expr=""):
        expressions.append(expr)
        return search(self, q, k, expr)

    monkeypatch.setattr(MilvusIndex, "search_filtered", spy)
    return expressions


def assert_same_results(got, want, tol=1e-5):
    """Same products with the same scores in the same order; only products tied on score (the demo has
    products sharing one picture) may swap places."""
    g = [(r.id, r.score) for r in got.items]
    w = [(r.id, r.score) for r in want.items]
    assert len(g) == len(w), (g, w)
    np.testing.assert_allclose([s for _, s in g], [s for _, s in w], atol=tol)
    for p, ((gi, gs), (wi, _)) in enumerate(zip(g, w, strict=True)):
        if gi != wi:
            assert any(i == gi and abs(s - gs) <= tol for i, s in w), (p, g, w)


def queries(catalog):
    for item in catalog.ids[::8]:
        yield {"item": item}
    yield {"image": PHOTO}
    yield {"image": PHOTO, "text": "yellow ball"}
    yield {"text": "black running shoes"}


@pytest.mark.parametrize("filters", FILTERS, ids=["none", "category", "category+price"])
def test_same_top10_as_the_exact_backend(demo_recommender, demo_on_milvus, through_the_index, filters):
    assert demo_recommender.image_index_ is None  # the reference is the exact scan of every row
    assert demo_on_milvus.image_index_.ntotal == int(demo_recommender.has_image_.sum()) == 89
    for query in queries(demo_recommender.catalog_):
        want = demo_recommender.recommend(k=10, filters=filters, **query)
        got = demo_on_milvus.recommend(k=10, filters=filters, **query)
        assert len(want.items) > 0 or filters is not None, query
        assert_same_results(got, want)
    assert through_the_index, "the Milvus façade never searched its collection"
    assert not any("id in [" in e for e in through_the_index)  # never a list of every allowed id
    if filters is not None:  # the filter ran in Milvus on the scalar fields
        filtered = [e for e in through_the_index if "category like" in e]
        n_image_queries = sum("text" not in q or "image" in q for q in queries(demo_recommender.catalog_))
        assert len(filtered) >= n_image_queries  # (a bare photo's metadata inference searches unfiltered too)
        assert all(("price >= 10" in e) == (filters.price_min is not None) for e in filtered)


@pytest.mark.parametrize("filters", FILTERS, ids=["none", "category", "category+price"])
def test_same_candidates_as_an_exact_index_when_few_are_taken(demo_recommender, demo_on_milvus, through_the_index,
                                                              monkeypatch, filters):
    """With 12 candidates per side the top-10 depends on *which* image candidates the index returns:
    Milvus must return the exact index's (this fails if the filter let others through or dropped some)."""
    monkeypatch.setattr(querying_module, "CANDIDATES_PER_SIDE", 12)
    reference = copy.copy(demo_recommender)
    rows = np.flatnonzero(demo_recommender.has_image_)
    reference.image_index_ = ExactIndex(demo_recommender.image_vectors_.shape[1])
    reference.image_index_.add(rows, demo_recommender.image_vectors_[rows])
    for query in queries(demo_recommender.catalog_):
        if "item" not in query:
            continue  # the photo queries are covered above; an upload embeds for seconds
        assert_same_results(demo_on_milvus.recommend(k=10, filters=filters, **query),
                            reference.recommend(k=10, filters=filters, **query))


def collection_rows(rec, ids) -> dict[int, dict]:
    index = rec.image_index_
    found = index._client().query(index.collection, filter=f"id in [{', '.join(map(str, ids))}]",
                                  output_fields=["id", "category", "brand", "price"])
    return {int(r["id"]): r for r in found}


def test_live_updates_are_mirrored_into_the_collection(demo_recommender, tmp_path, through_the_index):
    rec = milvus_recommender(demo_recommender, tmp_path / "live.db")
    catalog = rec.catalog_
    index = rec.image_index_
    n = len(catalog)
    # Upsert a new product (an existing product's picture under a new id and category).
    source = catalog.items.iloc[[catalog.position("tennis-ball")]].copy()
    new = source.assign(id="ball-2", name="Practice ball", category="Practice Gear", price=2.0,
                        image=str(catalog.root / source["image"].iat[0]))
    rec.upsert(new)
    assert index.ntotal == n + 1
    stored = collection_rows(rec, [n])[n]
    assert stored["price"] == 2.0 and stored["category"] != ""  # scalar fields mirrored, not left empty
    got = rec.recommend(item="tennis-ball", k=5, filters=Filters(category=["practice gear"]))
    assert [r.id for r in got.items] == ["ball-2"]  # found by a filter that ran inside Milvus
    # Patch its metadata: the product moves to a new slot; the old slot leaves the collection.
    rec.patch("ball-2", {"category": "Toys", "price": 4.0})
    assert index.ntotal == n + 1
    rows = collection_rows(rec, [n, n + 1])
    assert n not in rows and rows[n + 1]["price"] == 4.0
    assert rec.recommend(item="tennis-ball", k=5, filters=Filters(category=["practice gear"])).items == []
    assert [r.id for r in rec.recommend(item="tennis-ball", k=5, filters=Filters(category=["toys"])).items] == [
        "ball-2"]
    # Delete it: gone from the collection and from every result.
    assert rec.remove(["ball-2"]) == 1
    assert index.ntotal == n and not collection_rows(rec, [n + 1])
    assert "ball-2" not in [r.id for r in rec.recommend(item="tennis-ball", k=10).items]
    # A refit (the API's reindex) mirrors the catalog again: stale slots are deleted.
    refit = milvus_recommender(demo_recommender, tmp_path / "live.db")
    assert refit.image_index_.collection == index.collection and refit.image_index_.ntotal == n
    assert_same_results(refit.recommend(item="tennis-ball", k=10), demo_recommender.recommend(item="tennis-ball", k=10))


def test_a_stale_or_wide_hint_falls_back_to_the_id_list(demo_on_milvus):
    index = demo_on_milvus.image_index_
    q = demo_on_milvus.image_vectors_[:1]
    mask = Filters(category=["Electronics"]).mask(None, demo_on_milvus.attributes_)
    with index.filter_hint(Filters(category=["Groceries"]), demo_on_milvus.attributes_, np.ones(89, bool)):
        _, ids = index.search(q, 30, allow=mask)  # the mask is not inside the hinted filter: ids, not the hint
    assert set(ids[ids >= 0].tolist()) == set(np.flatnonzero(mask).tolist())


def test_milvus_settings_never_show_the_token(tmp_path):
    from pydantic import SecretStr

    rec = HybridRecommender(index="milvus", index_options={"uri": str(tmp_path / "x.db"),
                                                          "token": SecretStr("root:s3cret")})
    assert "s3cret" not in repr(rec)
    index = MilvusIndex(4, uri="http://root:s3cret@127.0.0.1:1", token=SecretStr("root:s3cret"))
    assert index.token == "root:s3cret" and "s3cret" not in str(index.stats_uri())
    with pytest.raises(MilvusError) as err:  # unreachable: one line naming the server, not the secret
        _ = index.ntotal
    assert "s3cret" not in str(err.value) and "127.0.0.1:1" in str(err.value) and "\n" not in str(err.value)


# -- the metadata vector in the collection ---------------------------------------------------------------
TEXTS = ["black running shoes", "yellow ball", "wireless mouse", "apple laptop under 2000", "leather"]


@pytest.fixture()
def metadata_through_milvus(monkeypatch):
    """The façade's metadata candidates must come from the collection: the in-process postings search
    (``sparse_top``) fails the test if called; returns the number of ``metadata_top`` calls so far."""
    calls = []
    metadata_top = MilvusIndex.metadata_top

    def spy(self, q_meta, k, allow=None):
        calls.append(k)
        return metadata_top(self, q_meta, k, allow)

    def banned(*args, **kwargs):
        raise AssertionError("metadata candidates taken from the in-process postings, not from Milvus")

    monkeypatch.setattr(querying_module, "EXACT_SCAN_LIMIT", 0)
    monkeypatch.setattr(MilvusIndex, "metadata_top", spy)
    monkeypatch.setattr(querying_module, "sparse_top", banned)
    return calls


@pytest.mark.parametrize("filters", FILTERS, ids=["none", "category", "category+price"])
def test_metadata_top_is_the_postings_top(demo_recommender, demo_on_milvus, filters):
    """The collection's sparse search returns the rows the in-process postings do, scores included."""
    rec = demo_on_milvus
    allowed = (filters or Filters()).mask(None, rec.attributes_) & rec.alive_
    for text in [*TEXTS, *rec.catalog_.items["name"].iloc[::11]]:
        q, _ = rec.metadata_encoder_.transform_text(text)
        got = rec.image_index_.metadata_top(q, 12, allowed)
        want = sparse_top(rec.metadata_postings_, q, 12, allowed)
        scores = (rec.metadata_matrix_ @ q.T).toarray().ravel()
        assert len(got) == len(want), text
        np.testing.assert_allclose(scores[got], np.sort(scores[want])[::-1], rtol=1e-5)  # same rows up to ties
        assert allowed[got].all() and (scores[got] > 0).all()
    assert len(rec.image_index_.metadata_top(q, 12, np.zeros(len(allowed), bool))) == 0


@pytest.mark.parametrize("filters", FILTERS, ids=["none", "category", "category+price"])
def test_text_queries_take_their_candidates_from_milvus(demo_recommender, demo_on_milvus, metadata_through_milvus,
                                                        filters):
    """Text and photo+text queries through the Milvus metadata (and image) candidates give the exact top-10."""
    for text in TEXTS:
        want = demo_recommender.recommend(text=text, k=10, filters=filters)
        assert want.items or filters is not None, text
        assert_same_results(demo_on_milvus.recommend(text=text, k=10, filters=filters), want)
    query = {"image": PHOTO, "text": "yellow ball"}
    assert_same_results(demo_on_milvus.recommend(k=10, filters=filters, **query),
                        demo_recommender.recommend(k=10, filters=filters, **query))
    assert len(metadata_through_milvus) >= len(TEXTS) + 1


def test_few_metadata_candidates_from_milvus_are_the_postings_ones(demo_recommender, demo_on_milvus,
                                                                   metadata_through_milvus, monkeypatch):
    """With 12 candidates per side the top-10 depends on which metadata candidates come back: Milvus's
    must give what the in-process postings give (the same façade on an exact index)."""
    monkeypatch.setattr(querying_module, "CANDIDATES_PER_SIDE", 12)
    reference = copy.copy(demo_recommender)
    rows = np.flatnonzero(demo_recommender.has_image_)
    reference.image_index_ = ExactIndex(demo_recommender.image_vectors_.shape[1])
    reference.image_index_.add(rows, demo_recommender.image_vectors_[rows])
    monkeypatch.setattr(querying_module, "sparse_top", sparse_top)  # the reference's own path
    for text in TEXTS:
        assert_same_results(demo_on_milvus.recommend(text=text, k=10), reference.recommend(text=text, k=10))
    assert len(metadata_through_milvus) == len(TEXTS)


def stored_metadata(rec, ids) -> dict[int, object]:
    index = rec.image_index_
    found = index._client().query(index.collection, filter=f"id in [{', '.join(map(str, ids))}]",
                                  output_fields=["id", "metadata"])
    n_terms = rec.metadata_matrix_.shape[1]
    return {int(r["id"]): sparse_matrix([r["metadata"]], n_terms) for r in found}


def assert_stored_metadata_is_the_facades(rec, ids):
    stored = stored_metadata(rec, ids)
    assert sorted(stored) == sorted(ids)
    for i in ids:
        np.testing.assert_allclose(stored[i].toarray(), rec.metadata_matrix_[i].toarray(), rtol=1e-6, atol=1e-7)


def test_a_patched_name_changes_the_milvus_metadata_vector(demo_recommender, tmp_path, metadata_through_milvus):
    rec = milvus_recommender(demo_recommender, tmp_path / "patch.db")
    n = len(rec.catalog_)
    assert_stored_metadata_is_the_facades(rec, list(range(0, n, 7)))
    # Known words: the patched product's new slot holds its new metadata row.
    rec.patch("tennis-ball", {"name": "Wireless Optical Ball"})
    assert_stored_metadata_is_the_facades(rec, [n])
    assert "tennis-ball" in [r.id for r in rec.recommend(text="wireless optical", k=10).items]
    # New words: past the drift threshold the vocabulary is re-fitted and every stored row rewritten.
    rec.refit_fraction = 0.0
    rec.patch("tennis-ball", {"name": "Quasar lantern"})
    assert rec.metadata_encoder_.text_words("quasar")  # the refit learned the word
    assert_stored_metadata_is_the_facades(rec, [n + 1, *range(0, n, 7)])
    calls = len(metadata_through_milvus)
    got = rec.recommend(text="quasar", k=10)
    assert [r.id for r in got.items] == ["tennis-ball"] and len(metadata_through_milvus) == calls + 1
    # A product whose image cannot be read is not in the collection: its text match comes from the façade's rows.
    size = rec.image_index_.ntotal
    report = rec.upsert(pd.DataFrame([{"id": "no-pic", "name": "Zorblat lantern", "image": "missing.jpg"}]))
    assert report.skipped and rec.image_index_.ntotal == size
    assert [r.id for r in rec.recommend(text="zorblat", k=10).items] == ["no-pic"]
    assert "no-pic" in [r.id for r in rec.recommend(text="lantern", k=10).items]
    rec.image_index_.close()


def test_a_collection_without_the_metadata_field_is_recreated(demo_recommender, tmp_path, caplog):
    from pymilvus import DataType, MilvusClient

    uri = str(tmp_path / "old.db")
    client = MilvusClient(uri=uri)
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)  # the schema before the field
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("image", DataType.FLOAT_VECTOR, dim=demo_recommender.image_vectors_.shape[1])
    params = client.prepare_index_params()
    params.add_index(field_name="image", index_type="FLAT", metric_type="IP")
    client.create_collection("old_demo", schema=schema, index_params=params)
    client.close()
    old = MilvusIndex(demo_recommender.image_vectors_.shape[1], uri=uri, collection="old_demo")
    with pytest.raises(MilvusError, match="no metadata field"):  # one line saying what to do, no traceback
        old.metadata_top(demo_recommender.metadata_matrix_[0], 5)
    old.close()
    with caplog.at_level("WARNING"):
        rec = HybridRecommender(backbone="efficientnet_lite0", cache_dir=demo_recommender.cache_dir, index="milvus",
                                index_options={"uri": uri, "collection": "old_demo"}).fit(demo_recommender.catalog_)
    assert any("re-creating it" in r.getMessage() for r in caplog.records)
    assert rec.image_index_.has_metadata_field and rec.image_index_.ntotal == 89
    assert_stored_metadata_is_the_facades(rec, [0, 40, 88])
    rec.image_index_.close()


def test_a_server_without_partial_upserts_gets_whole_rows(demo_on_milvus, monkeypatch, caplog):
    """Milvus before 2.6 refuses ``partial_update``: the metadata refresh re-mirrors whole rows instead."""
    index = demo_on_milvus.image_index_
    client = index._client()
    upsert = client.upsert

    def old_server_upsert(*args, **kwargs):
        if kwargs.get("partial_update"):
            raise RuntimeError("unexpected keyword argument partial_update")
        return upsert(*args, **kwargs)

    monkeypatch.setattr(client, "upsert", old_server_upsert)
    with caplog.at_level("WARNING"):
        index.refresh_metadata(demo_on_milvus)
    assert any("re-mirroring the whole collection" in r.getMessage() for r in caplog.records)
    assert index.ntotal == 89
    assert_stored_metadata_is_the_facades(demo_on_milvus, [0, 44, 88])
