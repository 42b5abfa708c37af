"""Evaluation protocols on the demo catalog: the quality floors, no label leakage, the report."""

import json

import pytest

from recommender import HybridRecommender, RecommenderError
from recommender.evaluation.protocols import (
    gallery_with_views,
    leaking_columns,
    leave_one_out,
    multi_view,
    photo_to_product,
)
from recommender.evaluation.report import write_report
from recommender.features.text_embedder import text_model_dir
from tests.conftest import DEMO_DIR


@pytest.fixture(scope="module")
def loo(demo_catalog, tmp_path_factory):
    cache = tmp_path_factory.mktemp("eval-cache")
    return leave_one_out(demo_catalog, "sub_category", ks=(1, 3, 5), weights=(0.5, 0.7, 0.75),
                         recommender=HybridRecommender(backbone="efficientnet_lite0", cache_dir=cache),
                         mmr_lambdas=(1.0, 0.7, 0.5, 0.3))


@pytest.fixture(scope="module")
def plain_loo(demo_catalog, tmp_path_factory):
    """The issue's plain pipeline: Lite0 pooled features, no levers."""
    rec = HybridRecommender(backbone="efficientnet_lite0", cache_dir=tmp_path_factory.mktemp("plain"),
                            flip_tta=False, semantic=0.0, dba_k=0)
    return leave_one_out(demo_catalog, "sub_category", ks=(1, 3, 5), weights=(0.75,), recommender=rec)


@pytest.fixture(scope="module")
def mv(demo_catalog, tmp_path_factory):
    return multi_view(demo_catalog, DEMO_DIR / "views.csv", ks=(1, 5), recommender=HybridRecommender(
        backbone="efficientnet_lite0", cache_dir=tmp_path_factory.mktemp("mv-cache")))


@pytest.fixture(scope="module")
def uploads(demo_catalog, demo_recommender):
    return photo_to_product(demo_catalog, DEMO_DIR / "views.csv", ks=(1, 5), recommender=demo_recommender)


def test_label_and_its_parent_never_feed_the_metadata(loo, demo_catalog):
    assert loo["excluded_from_metadata"] == ["category", "sub_category"]
    assert set(leaking_columns(demo_catalog, "category")) == {"sub_category"}
    assert loo["n_queries"] == 89


def test_plain_pipeline_meets_the_core_floor(plain_loo):
    r = plain_loo["results"]
    assert r["image"]["P@1"] >= 0.80
    assert r["metadata"]["P@1"] >= 0.60
    assert r["hybrid_w0.75"]["P@3"] >= 0.77


def test_default_pipeline_beats_the_plain_one(loo, plain_loo):
    # Measured with calibrated scores and DBA off (issue 9.1: the old DBA's gain came from merging
    # neighbours into one vector): hybrid w=0.7 P@1 .876, P@5 .685 (plain w=.75: .843 / .667).
    r = loo["results"]["hybrid_w0.7"]
    if text_model_dir() is None:  # words-only metadata side
        assert r["P@1"] >= 0.865 and r["P@5"] >= 0.675
        assert loo["best"]["method"] in ("hybrid_w0.7", "hybrid_w0.75")
    else:  # + MiniLM (text_embedding="auto"; docs/evaluation.md "Text side"): P@1 .854, P@5 .710, best w=.5 .724
        assert r["P@1"] >= 0.84 and r["P@5"] >= 0.70
        assert loo["best"]["method"] in ("hybrid_w0.5", "hybrid_w0.7")
    assert r["P@5"] > plain_loo["results"]["hybrid_w0.75"]["P@5"]


def test_every_figure_has_an_interval(loo):
    s = loo["methods"]["hybrid_w0.7"]["P@5"]
    assert s["n"] == 89 and s["ci95"][0] <= s["mean"] <= s["ci95"][1] and s["ci95"][0] < s["ci95"][1]
    assert {"R@5", "nDCG@5", "MAP@5", "hit@5", "diversity@5", "coverage@5"} <= set(loo["methods"]["image"])
    comp = {(c["b"], c["metric"]): c for c in loo["comparisons"]}
    # The hybrid is ahead of metadata alone (+.035 without query expansion, significant; with the default
    # qe_k=2 metadata alone gains too, .685 -> .710, and the lead's interval, [-.016, +.079], includes 0).
    m = comp[("metadata", "P@5")]
    assert m["lo"] <= m["mean_diff"] <= m["hi"] and m["mean_diff"] > 0


def test_mmr_trades_precision_for_diversity(loo):
    curve = {row["lambda"]: row for row in loo["mmr"]}
    diversity = [curve[lam]["diversity@5"]["mean"] for lam in (1.0, 0.7, 0.5, 0.3)]
    assert diversity == sorted(diversity) and diversity[-1] > diversity[0] + 0.1  # less alike as lambda falls
    # Mild diversity costs little (at w = .5 it even gains: P@5 .737 -> .746 at lambda .5, 4 hits of 445);
    # strong diversity costs precision (measured .521 at lambda .3).
    assert curve[0.3]["P@5"]["mean"] < curve[1.0]["P@5"]["mean"] - 0.1
    assert curve[0.7]["P@5"]["mean"] > curve[1.0]["P@5"]["mean"] - 0.03


def test_multi_view_photo_path_finds_other_shots(demo_catalog, mv):
    views = DEMO_DIR / "views.csv"
    gallery, owner = gallery_with_views(demo_catalog, views)
    assert len(gallery) == 104 and list(owner).count("yellow-plimsolls") == 4
    assert mv["n_queries"] == 25 and mv["colour_weight"] == {"photo": 0.3, "item": 0.0}
    r = mv["results"]
    # Measured: photo path (colour 0.3) R@5 .693; item path (shape alone) .467; issue target .60.
    assert r["photo"]["R@5"] >= 0.60 > r["item"]["R@5"]
    sweep = {row["colour_weight"]: row["R@5"]["mean"] for row in mv["colour_sweep"]}
    assert sweep[0.3] == pytest.approx(r["photo"]["R@5"]) and sweep[0.0] < 0.45  # measured .367
    comp = mv["comparisons"][0]
    assert (comp["a"], comp["b"], comp["metric"]) == ("photo", "item", "R@5") and comp["lo"] > 0


def test_uploaded_shots_find_their_product(uploads):
    up = uploads
    assert up["n_queries"] == 15 and up["n_products"] == 89
    r = up["results"]
    # Measured: the product first for 11 of 15 shots (R@1 .733), in the top 5 for 13; without colour 4 and 9.
    assert r["default"]["R@1"] >= 0.66 and r["default"]["R@5"] >= 0.80
    assert r["colour0"]["R@1"] <= 0.40
    assert {c["metric"]: c["significant"] for c in up["comparisons"]} == {"R@1": True, "R@5": True}


def test_photo_method_shows_the_cost_of_photo_colour(loo):
    # Each product's own photo uploaded: colour 0.3 ranks by colour too, so fewer same-kind results
    # (measured P@5 .530 vs .661 without colour) - the price of finding the very product.
    assert 0.45 <= loo["results"]["photo"]["P@5"] < loo["results"]["image"]["P@5"]


def test_report_is_written(loo, mv, uploads, demo_catalog, tmp_path):
    gallery, _ = gallery_with_views(demo_catalog, DEMO_DIR / "views.csv")
    md = write_report({"leave_one_out": loo, "multi_view": mv, "photo_to_product": uploads}, tmp_path,
                      demo_catalog, gallery=gallery)
    text = md.read_text()
    assert "| hybrid_w0.7 |" in text and "![weight sweep](sweep.png)" in text
    # Both multi-view paths, the colour sweep by R@1 and R@5, and the uploads with their comparison.
    assert "| photo | " in text and "| item | " in text and "| colour | R@1 | R@5 |" in text
    assert "| colour0 | " in text and "default − colour0, R@5:" in text
    for name in ("sweep.png", "per_class.png", "mmr.png", "examples.png", "multiview.png", "report.json"):
        assert (tmp_path / name).stat().st_size > 1000
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["leave_one_out"]["n_queries"] == 89 and saved["photo_to_product"]["n_queries"] == 15


def test_a_sample_of_queries_scores_each_as_the_full_run_does(demo_catalog, tmp_path):
    """``max_queries``: a seeded sample of the queries, each still ranked against the whole catalog, so each
    sampled query's figures are the full run's for that query."""
    rec = HybridRecommender(backbone="efficientnet_lite0", cache_dir=tmp_path)
    args = (demo_catalog, "sub_category", (1, 5), (0.75,))
    full = leave_one_out(*args, recommender=rec, per_query=True)
    sample = leave_one_out(*args, recommender=rec, per_query=True, max_queries=30)
    assert (sample["n_queries"], sample["n_sampled_from"], full["n_queries"]) == (30, 89, 89)
    assert sample == leave_one_out(*args, recommender=rec, per_query=True, max_queries=30)  # seeded
    by_id = dict(zip(full["query_ids"], full["per_query"]["hybrid_w0.75"]["P@5"], strict=True))
    assert len(set(sample["query_ids"])) == 30
    assert [by_id[q] for q in sample["query_ids"]] == sample["per_query"]["hybrid_w0.75"]["P@5"]
    assert leave_one_out(*args, recommender=rec, max_queries=200)["n_queries"] == 89  # fewer eligible: all
    with pytest.raises(RecommenderError, match="max_queries must be at least 1"):
        leave_one_out(*args, recommender=rec, max_queries=0)


def test_unknown_label_is_a_clear_error(demo_catalog):
    with pytest.raises(RecommenderError, match="label column 'nope'"):
        leave_one_out(demo_catalog, "nope")


def test_extra_shots_are_confined_like_catalog_images(demo_catalog, demo_recommender, tmp_path):
    outside = tmp_path / "secret.png"
    outside.write_bytes((DEMO_DIR / "images" / sorted(p.name for p in (DEMO_DIR / "images").iterdir())[0]).read_bytes())
    views = tmp_path / "views.csv"
    views.write_text(f"id,image\nlaptop,{outside}\nlaptop,../../../../etc/passwd\n")
    gallery, _ = gallery_with_views(demo_catalog, views)
    assert gallery.image_refusal(len(demo_catalog)) and gallery.image_refusal(len(demo_catalog) + 1)
    with pytest.raises(RecommenderError):  # never read: the upload protocol refuses the shot
        photo_to_product(demo_catalog, views, ks=(1,), recommender=demo_recommender)
