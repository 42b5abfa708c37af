"""Live updates of a fitted recommender (upsert / patch / remove), on the real demo catalog."""

import threading

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageOps

from recommender import CatalogError, Filters, HybridRecommender, QueryError


@pytest.fixture()
def live(demo_recommender, demo_catalog):
    """A private recommender (updates must not leak into the shared fixture), from the warm cache."""
    return HybridRecommender(backbone="efficientnet_lite0", cache_dir=demo_recommender.cache_dir).fit(demo_catalog)


def _row(demo_catalog, pid, **changes) -> pd.DataFrame:
    row = demo_catalog.items.set_index("id").loc[[pid]].reset_index()
    for k, v in changes.items():
        row[k] = v
    return row


def test_upsert_adds_a_product_recommendable_at_once(live, demo_catalog, tmp_path, monkeypatch):
    photo = tmp_path / "mirrored-ball.png"
    ImageOps.mirror(Image.open(demo_catalog.image_path(demo_catalog.position("basketball")))).save(photo)
    new = _row(demo_catalog, "basketball", id="street-basketball", name="Street Basketball", image=str(photo))
    refused = live.upsert(new.assign(id="outside-ball"))  # outside every allowed folder: never read
    assert refused.embedded == 0 and "outside the catalog folder" in refused.skipped[0].reason
    assert live.remove(["outside-ball"]) == 1
    monkeypatch.setenv("RECOMMENDER_IMAGE_ROOTS", str(tmp_path))  # now an allowed image root
    report = live.upsert(new)
    assert report.added == ["street-basketball"] and report.replaced == [] and report.embedded == 1
    assert "street-basketball" in live.recommend(item="basketball", k=3).ids
    # 'street' is not in the fitted vocabulary yet (see the drift test): it ties with the original.
    assert set(live.recommend(text="street basketball", k=2).ids) == {"basketball", "street-basketball"}
    assert len(live.products()) == 90


def test_upsert_replaces_an_existing_product_and_reuses_its_image(live, demo_catalog):
    before = live.recommend(text="lunar", k=5)
    assert "tent" not in before.ids
    report = live.upsert(_row(demo_catalog, "tent", name="Lunar Tent", brand="Lunar"))
    assert report.replaced == ["tent"] and report.added == [] and report.embedded == 0 and report.reused == 1
    assert live.recommend(text="lunar tent", k=1).ids == ["tent"]
    assert live.recommend(item="road-bike", k=88, filters=Filters(brand="Lunar")).ids == ["tent"]
    ids = live.recommend(text="tent", k=200).ids
    assert ids.count("tent") == 1 and len(live.products()) == 89  # the old row is gone, not duplicated


def test_patch_changes_metadata_and_filters_see_it(live, demo_catalog):
    live.patch("tent", {"brand": "Vaude", "price": 99.5})
    res = live.recommend(item="road-bike", k=88, filters=Filters(brand="vaude"))
    assert res.ids == ["tent"]
    assert live.products().set_index("id").loc["tent", "price"] == 99.5
    with pytest.raises(QueryError, match="cannot patch 'image'"):
        live.patch("tent", {"image": "elsewhere.png"})
    with pytest.raises(QueryError, match="no product with id"):
        live.patch("no-such-product", {"name": "x"})
    with pytest.raises(CatalogError, match="price is not a (finite )?number"):
        live.patch("tent", {"price": "cheap"})
    assert live.products().set_index("id").loc["tent", "price"] == 99.5  # a refused patch changes nothing


def test_patch_re_embeds_the_text(live):
    """A patched description reaches the sentence-embedding side too: "sneakers" shares no word with the
    new text, only its meaning."""
    if live.text_embedder_ is None:
        pytest.skip(live.text_embedding_note_)
    assert "tent" not in live.recommend(text="sneakers", k=10).ids
    live.patch("tent", {"name": "Trail Trainers", "description": "Lightweight trainers for jogging on forest paths."})
    assert "tent" in live.recommend(text="sneakers", k=10).ids
    pos = live.catalog_.position("tent")
    enc = live.metadata_encoder_
    block = live.metadata_matrix_[pos, enc.semantic_offset_:].toarray().ravel()
    expected = live.text_embedder_.encode(["Trail Trainers. Lightweight trainers for jogging on forest paths."])[0]
    assert block @ expected / np.linalg.norm(block) > 0.999


def test_products_without_a_price_can_be_upserted_and_patched(live, demo_catalog):
    live.upsert(_row(demo_catalog, "tent", price=float("nan")))
    live.patch("tent", {"name": "Dome Tent"})
    tent = live.products().set_index("id").loc["tent"]
    assert tent["name"] == "Dome Tent" and np.isnan(tent["price"])
    assert "tent" not in live.recommend(item="road-bike", k=88, filters=Filters(price_max=10_000)).ids


def test_remove_is_immediate_everywhere(live):
    assert "basketball" in live.recommend(item="football", k=5).ids
    assert live.remove(["basketball", "no-such-product"]) == 1
    assert live.remove(["basketball"]) == 0
    assert "basketball" not in live.recommend(item="football", k=88).ids
    assert "basketball" not in live.recommend(text="basketball", k=88).ids
    with pytest.raises(QueryError, match="no product with id 'basketball'"):
        live.recommend(item="basketball")
    assert "basketball" not in set(live.products()["id"])


def test_hostile_upserts_change_nothing(live, demo_catalog, tmp_path):
    n = len(live.products())
    with pytest.raises(CatalogError, match="missing required column"):
        live.upsert(pd.DataFrame({"id": ["x"], "name": ["X"]}))
    with pytest.raises(CatalogError, match="duplicate id"):
        live.upsert(pd.concat([_row(demo_catalog, "tent"), _row(demo_catalog, "tent")]))
    with pytest.raises(CatalogError, match="price is not a (finite )?number"):
        live.upsert(_row(demo_catalog, "tent", price="lots"))
    with pytest.raises(CatalogError, match="DataFrame"):
        live.upsert([{"id": "x"}])
    assert len(live.products()) == n
    # An unreadable image is reported and the product stays recommendable by its metadata.
    bad = tmp_path / "not-a-photo.jpg"
    bad.write_bytes(b"%PDF-1.4")
    report = live.upsert(_row(demo_catalog, "tent", id="paper-tent", name="Paper Tent", image=str(bad)))
    assert report.added == ["paper-tent"] and len(report.skipped) == 1
    assert "paper-tent" in live.recommend(text="tent", k=2).ids
    assert "paper-tent" in live.recommend(item="paper-tent", k=3).query


def test_readers_never_see_a_half_applied_update(live, demo_catalog):
    """Readers run while a writer removes and re-adds products: every answer is consistent (no
    error, no duplicate, no product that was removed before the query started)."""
    errors: list[BaseException] = []
    stop = threading.Event()

    def read():
        while not stop.is_set():
            try:
                res = live.recommend(item="laptop", k=30, weight=0.5)
                assert len(set(res.ids)) == len(res.ids)
                assert "ghost" not in res.ids
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
                return

    readers = [threading.Thread(target=read) for _ in range(3)]
    for t in readers:
        t.start()
    try:
        for i in range(15):
            pid = ["tablet", "curvy-monitor", "hard-drive"][i % 3]
            live.remove([pid])
            live.upsert(_row(demo_catalog, pid, name=f"Update {i}"))
            live.patch(pid, {"description": f"patched {i}"})
    finally:
        stop.set()
        for t in readers:
            t.join()
    assert not errors, errors[0]
    assert len(live.products()) == 89


def test_readers_are_answered_while_an_upsert_builds_its_arrays(live, demo_catalog, monkeypatch):
    """The copies of an update (a vector buffer doubling, a postings rebuild: ~0.4 s at 100k) are made outside
    the write lock: a query asked meanwhile is answered from the old state, and the new row appears after."""
    from recommender import live as live_module

    building, release = threading.Event(), threading.Event()
    real_appended = live_module.appended

    def slow_appended(view, rows):
        building.set()
        assert release.wait(30), "the reader never got its answer"
        return real_appended(view, rows)

    monkeypatch.setattr(live_module, "appended", slow_appended)
    writer = threading.Thread(target=live.upsert, args=(_row(demo_catalog, "tent", id="tent-2", name="Tent Two"),))
    writer.start()
    try:
        assert building.wait(30)
        res = live.recommend(item="tent", k=88)  # would wait for the writer if the lock were held while building
        assert "tent-2" not in res.ids and len(res.ids) == 88
    finally:
        release.set()
        writer.join()
    assert "tent-2" in live.recommend(item="tent", k=5).ids


def test_vocabulary_drift_refits_the_metadata_past_the_threshold(demo_recommender, demo_catalog):
    # Words only: with the text embedding, new words are found by meaning before any refit (next test).
    live = HybridRecommender(backbone="efficientnet_lite0", cache_dir=demo_recommender.cache_dir,
                             text_embedding="off").fit(demo_catalog)
    rows = demo_catalog.items.iloc[:10].copy()
    rows["id"] = [f"zebra-{i}" for i in range(10)]
    rows["name"] = [f"Zebra Print {n}" for n in rows["name"]]
    report = live.upsert(rows)
    assert not report.metadata_refitted  # 10 of 99 < 20%: the fitted vocabulary has no 'zebra'
    assert live.recommend(text="zebra").empty_reason == "no product matches 'zebra'"
    more = demo_catalog.items.iloc[10:25].copy()
    more["id"] = [f"zebra-{i}" for i in range(10, 25)]
    more["name"] = [f"Zebra Print {n}" for n in more["name"]]
    assert live.upsert(more).metadata_refitted  # 25 of 114 > 20%
    assert len(live.recommend(text="zebra", k=50)) == 25


def test_text_embedding_finds_new_words_before_the_vocabulary_refit(live, demo_catalog):
    if live.text_embedder_ is None:
        pytest.skip(live.text_embedding_note_)
    rows = demo_catalog.items.iloc[:10].copy()
    rows["id"] = [f"zebra-{i}" for i in range(10)]
    rows["name"] = [f"Zebra Print {n}" for n in rows["name"]]
    assert not live.upsert(rows).metadata_refitted  # 'zebra' is still not in the fitted vocabulary
    found = live.recommend(text="zebra", k=10)
    assert found.ids and all(i.startswith("zebra-") for i in found.ids[:5])


def test_update_report_serialises(live, demo_catalog):
    d = live.upsert(_row(demo_catalog, "tent")).to_dict()
    assert d["replaced"] == ["tent"] and d["embedded"] == 0 and d["skipped"] == []


def test_pickled_recommender_still_answers(live):
    import pickle

    clone = pickle.loads(pickle.dumps(live))
    assert clone.recommend(item="laptop", k=3).ids == live.recommend(item="laptop", k=3).ids



def test_appended_rows_grow_in_place_without_touching_what_readers_hold():
    from recommender.live import appended

    given = np.arange(12, dtype=np.float32).reshape(6, 2)
    first = given[:3]  # a prefix view of an array this module did not allocate: never written into
    grown = appended(first, np.full((2, 2), -1, np.float32))
    assert np.array_equal(given[3:5], np.arange(6, 10, dtype=np.float32).reshape(2, 2))
    assert np.array_equal(grown, np.concatenate([given[:3], np.full((2, 2), -1, np.float32)]))
    held = grown  # what a reader holds while the next writes append
    for i in range(40):  # crosses several capacity doublings
        grown = appended(grown, np.full((1, 2), i, np.float32))
    assert len(held) == 5 and np.array_equal(held[3:], np.full((2, 2), -1, np.float32))
    assert len(grown) == 45 and np.array_equal(grown[5:, 0], np.arange(40, dtype=np.float32))


def _process_anon_kb() -> int:
    from pathlib import Path

    status = Path("/proc/self/status").read_text()
    return int(status.split("RssAnon:")[1].split()[0])


def test_rows_appended_to_a_mapped_file_grow_in_a_mapped_scratch_file(tmp_path):
    """A catalog served from a mapped vector file (bfloat16 at scale) grows in a scratch file beside it, not in
    the process's memory: the first write at 100k had copied the file into RssAnon (+538 MB). The cache file
    itself is never written, and the scratch file has no name (nothing is left in the folder)."""
    import ml_dtypes

    from recommender.live import appended

    path = tmp_path / "vectors.bin"
    rows, dim = 20_000, 1024  # 40 MB of bfloat16
    source = np.memmap(path, mode="w+", dtype=ml_dtypes.bfloat16, shape=(rows, dim), offset=128)
    source[:] = np.arange(rows, dtype=np.float32)[:, None]
    source.flush()
    del source
    before = path.read_bytes()
    served = np.memmap(path, mode="r", dtype=ml_dtypes.bfloat16, shape=(rows, dim), offset=128)
    anon = _process_anon_kb()
    grown = appended(served, np.full((3, dim), -1, ml_dtypes.bfloat16))
    assert _process_anon_kb() - anon < 10_000  # well under the 40 MB a copy in memory would take
    assert isinstance(grown.base, np.memmap) and len(grown.base) == 2 * rows
    expected = np.arange(rows, dtype=np.float32).astype(ml_dtypes.bfloat16).astype(np.float32)
    assert np.array_equal(grown[:rows, 0].astype(np.float32), expected)
    assert (grown[rows:].astype(np.float32) == -1).all()
    again = appended(grown, np.full((1, dim), 7, ml_dtypes.bfloat16))  # in the spare room, no new file
    assert again.base is grown.base and float(again[-1, 0]) == 7.0 and len(grown) == rows + 3
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["vectors.bin"]


def test_a_mapped_file_on_a_full_disk_grows_in_memory(tmp_path, monkeypatch):
    import errno

    from recommender import live as live_module
    from recommender.store import vector_file

    path = tmp_path / "vectors.bin"
    np.memmap(path, mode="w+", dtype=np.float32, shape=(100, 4))[:] = 1
    served = np.memmap(path, mode="r", dtype=np.float32, shape=(100, 4))

    def full_disk(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(vector_file.os, "posix_fallocate", full_disk)  # reserved first: never a SIGBUS later
    grown = live_module.appended(served, np.zeros((2, 4), np.float32))
    assert not isinstance(grown.base, np.memmap) and grown.shape == (102, 4) and grown[:100].sum() == 400
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vectors.bin"]


def test_many_upserts_keep_metadata_scores_exact(live, demo_catalog):
    """The postings are rebuilt only now and then: rows appended since are scored from the CSR rows."""
    from recommender.scoring import posting_scores

    held = live.image_vectors_
    for i in range(3):
        live.upsert(_row(demo_catalog, "tent", id=f"tent-{i}", name=f"Lunar Tent {i}"))
    assert live.metadata_postings_.shape[0] < live.metadata_matrix_.shape[0]  # a tail not in the postings
    assert len(held) == 89 and np.array_equal(live.image_vectors_[:89], held)
    q = live.metadata_matrix_[live.catalog_.position("tent-2")]
    exact = np.asarray((live.metadata_matrix_ @ q.T).todense()).ravel()
    assert np.allclose(posting_scores(live.metadata_postings_, q, live.metadata_matrix_), exact, atol=1e-6)
    assert set(live.recommend(item="tent", k=3).ids) == {"tent-0", "tent-1", "tent-2"}
