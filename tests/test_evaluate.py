"""Leave-one-out on the demo catalog: the quality floor the issue sets, and no label leakage."""

import pytest

from recommender import RecommenderError
from recommender.evaluate import leaking_columns, leave_one_out, precision_at_k


@pytest.fixture(scope="module")
def report(demo_catalog, tmp_path_factory):
    return leave_one_out(demo_catalog, "sub_category", ks=(1, 3, 5), weights=(0.5, 0.75),
                         backbone="efficientnet_lite0", cache_dir=tmp_path_factory.mktemp("eval-cache"))


def test_label_and_its_parent_never_feed_the_metadata(report, demo_catalog):
    assert report["excluded_from_metadata"] == ["category", "sub_category"]
    assert set(leaking_columns(demo_catalog, "category")) == {"sub_category"}
    assert report["n_queries"] == 89


def test_quality_floor_on_demo_catalog(report):
    r = report["results"]
    assert r["image"]["P@1"] >= 0.80
    assert r["metadata"]["P@1"] >= 0.60
    assert r["hybrid_w0.75"]["P@3"] >= 0.77
    # The hybrid is worth having: better than either side alone at P@3.
    assert r["hybrid_w0.75"]["P@3"] > max(r["image"]["P@3"], r["metadata"]["P@3"])


def test_precision_at_k_counts_missing_results_as_misses():
    assert precision_at_k([True, False, True], 3) == pytest.approx(2 / 3)
    assert precision_at_k([True], 3) == pytest.approx(1 / 3)


def test_unknown_label_is_a_clear_error(demo_catalog):
    with pytest.raises(RecommenderError, match="label column 'nope'"):
        leave_one_out(demo_catalog, "nope")
