"""The benchmark suite on what CI always has: the demo catalog and the committed Fashion-MNIST slice.

The demo's embeddings come from the session's fitted demo recommender (same configuration, same
content-addressed cache), so only the extra shots and a small Fashion-MNIST subset are embedded here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from recommender.evaluation.suite import compare, run_suite, summary_markdown, write_suite_report
from recommender.recommender import DEFAULT_WEIGHT

pytestmark = pytest.mark.slow
PARAMS = {"backbone": "efficientnet_lite0"}  # what the conftest demo recommender uses


@pytest.fixture(scope="module")
def cache_root(demo_recommender, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("suite-cache")
    shared = Path(demo_recommender.cache_dir)
    # Vectors are stored by image content: the gallery reuses the catalog's and adds the extra shots.
    (root / "demo").symlink_to(shared, target_is_directory=True)
    (root / "demo-gallery").symlink_to(shared, target_is_directory=True)
    return root


@pytest.fixture(scope="module")
def suite(cache_root):
    return run_suite(PARAMS, grocery_root=cache_root / "no-grocery-here", fashion="slice", fashion_limit=100,
                     cache_root=cache_root)


def test_suite_runs_every_ci_protocol_with_n_and_intervals(suite):
    rows = {r["protocol"]: r for r in suite.summary_rows()}
    assert set(rows) == {"demo/loo", "demo/multiview", "demo/uploads", "fashion-mnist/slice"}
    assert rows["demo/loo"]["n"] == 89 and rows["demo/uploads"]["n"] == 15
    assert rows["fashion-mnist/slice"]["n"] == 100  # 10 per class
    for r in rows.values():
        lo, hi = r["ci95"]
        assert 0.0 <= lo <= r["mean"] <= hi <= 1.0
    # The headline is the recommender's own weight, not the best of a sweep.
    assert rows["demo/loo"]["metric"] == f"hybrid_w{DEFAULT_WEIGHT:g} P@5"
    assert suite.objective == pytest.approx(sum(r["mean"] for r in rows.values()) / 4, abs=1e-4)
    # Quality floors far below today's figures (demo P@5 .76, uploads R@1 .73, Fashion P@10 .74):
    # a broken pipeline (random vectors, shuffled ids) lands near chance and fails them.
    assert rows["demo/loo"]["mean"] > 0.5 and rows["demo/uploads"]["mean"] > 0.4
    assert rows["fashion-mnist/slice"]["mean"] > 0.4  # chance: 9 of 99 others share the class


def test_missing_grocery_is_skipped_with_its_reason(suite, cache_root):
    assert "grocery" in suite.skipped and "no-grocery-here" in suite.skipped["grocery"]
    assert "| grocery | skipped |" in summary_markdown(suite)


def test_report_files_and_paired_comparison(suite, tmp_path):
    md = write_suite_report(suite, tmp_path / "out")
    data = json.loads((tmp_path / "out" / "suite.json").read_text())
    assert data["objective"] == suite.objective
    assert len(data["headline_per_query"]["demo/loo"]) == 89
    assert "per_query" not in data["results"]["demo/loo"]  # only the headlines' per-query values are kept
    assert (tmp_path / "out" / "summary.png").stat().st_size > 1000
    assert (tmp_path / "out" / "demo" / "report.md").is_file()
    text = md.read_text()
    assert f"| demo/loo | hybrid_w{DEFAULT_WEIGHT:g} P@5 |" in text and "Objective" in text
    same = compare(suite, suite)
    assert len(same) == 4 and all(d["mean_diff"] == 0 and not d["significant"] for d in same)


def test_cli_suite_passes_levers_and_prints_the_table(suite, cache_root, capsys, monkeypatch, tmp_path):
    """The CLI is a shell: its flags reach run_suite, its output is the library's table and report."""
    from recommender.cli import main
    from recommender.evaluation import suite as suite_mod

    calls = []

    def fake_run_suite(params, **kw):
        calls.append((params, kw))
        return suite  # the module's real run, not re-computed

    monkeypatch.setattr(suite_mod, "run_suite", fake_run_suite)
    code = main(["evaluate", "--suite", "--backbone", "efficientnet_lite2", "--no-flip-tta", "--photo-colour-weight",
                 "0.1", "--image-runtime", "openvino-mixed", "--fashion", "none",
                 "--grocery", str(cache_root / "absent"), "--cache", str(cache_root),
                 "--out", str(tmp_path / "report")])
    out = capsys.readouterr().out
    assert code == 0
    params, kw = calls[0]
    assert params == {"backbone": "efficientnet_lite2", "flip_tta": False, "photo_colour_weight": 0.1,
                      "image_runtime": "openvino-mixed"}
    assert kw["fashion"] is None and kw["cache_root"] == cache_root and {1, 5, 10} <= set(kw["ks"])
    assert "| demo/uploads | default R@1 |" in out and "| grocery | skipped |" in out
    objective = float(out.split("Objective (mean of the headlines): **")[1].split("**")[0])
    assert objective == suite.objective and not math.isnan(objective)
    assert (tmp_path / "report" / "suite.json").is_file() and (tmp_path / "report" / "summary.md").is_file()


def test_cli_suite_with_a_foreign_catalog_needs_a_label(small_catalog_dir, capsys):
    from recommender.cli import main

    code = main(["evaluate", "--suite", "--catalog", str(small_catalog_dir / "catalog.csv"), "--fashion", "none"])
    assert code == 2
    assert "needs --label" in capsys.readouterr().err
