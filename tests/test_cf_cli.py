"""CLI for customers: ``recommend --user`` and ``evaluate --interactions`` on the Online Retail demo."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from recommender.catalog.loader import DEMO_CATALOG
from recommender.cli import main

RETAIL = DEMO_CATALOG.parents[1] / "online-retail"
CATALOG = str(RETAIL / "catalog.parquet")


def test_recommend_for_a_user_prints_reasons_and_json(capsys):
    assert main(["recommend", "--catalog", CATALOG, "--user", "12347", "--k", "3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("customer 12347 - CF weight 0.80") and out.count("\n") >= 5
    assert "which you bought" in out or "bought together with" in out
    assert main(["recommend", "--catalog", CATALOG, "--user", "12347", "--k", "2", "--json", "--weight-cf", "0"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["weight"] == 0 and len(data["results"]) == 2
    assert all(r["cf_contribution"] == 0 and r["because"] for r in data["results"])


@pytest.mark.parametrize(("argv", "message"), [
    (["--user", "nobody"], "no customer with id 'nobody'"),
    (["--user", "12347", "--item", "85123A"], "give --user alone"),
    (["--user", "12347", "--weight-cf", "2"], "between 0 and 1"),
    (["--user", "12347", "--interactions", "/nonexistent/events.csv"], "not found"),
])
def test_bad_customer_queries_are_one_line_errors(capsys, argv, message):
    assert main(["recommend", "--catalog", CATALOG, *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_recommend_without_interactions_beside_the_catalog_says_so(capsys):
    assert main(["recommend", "--user", "12347"]) == 2
    assert "give --interactions FILE" in capsys.readouterr().err


def test_evaluate_interactions_reports_anchors_blend_and_cold_start(tmp_path, capsys):
    events = pd.read_parquet(RETAIL / "interactions.parquet")
    few = events[events["user_id"].isin(sorted(events["user_id"].unique())[:600])]
    path = tmp_path / "events.csv"
    few.to_csv(path, index=False)
    out = tmp_path / "cf.json"
    assert main(["evaluate", "--catalog", CATALOG, "--interactions", str(path), "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    systems = res["temporal"]["systems"]
    assert {"popularity", "ALS (64 f, reg .05, 15 it)", "blend (defaults)"} <= set(systems)
    assert all(0 <= s["nDCG@10"]["mean"] <= 1 and s["nDCG@10"]["n"] > 50 for s in systems.values())
    assert res["cold_start"]["systems"]["ALS (64 f, reg .05, 15 it)"]["cold R@10"]["mean"] == 0.0
    bad = tmp_path / "bad.csv"
    bad.write_text("user_id,item_id,timestamp\nu,NOPE,1\n")
    capsys.readouterr()
    assert main(["evaluate", "--catalog", CATALOG, "--interactions", str(bad)]) == 2
    assert "not in the catalog (NOPE) on line(s) 2" in capsys.readouterr().err
