"""The app's "For a customer" mode on the Online Retail demo, driven headless with AppTest."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "app.py")
TIMEOUT = 180  # the first run fits the blend on 396k purchases


@pytest.fixture
def customer_app(monkeypatch) -> AppTest:
    monkeypatch.delenv("RECOMMENDER_CUSTOMER_CATALOG", raising=False)
    monkeypatch.delenv("RECOMMENDER_INTERACTIONS", raising=False)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state["app_mode"] = "For a customer"
    return at.run()


def test_customer_mode_shows_history_and_explained_recommendations(customer_app):
    at = customer_app
    assert not at.exception and not at.error
    assert at.title[0].value == "Recommended for a customer"
    user = at.selectbox(key="customer").value
    history, recs = at.dataframe[0].value, at.dataframe[1].value
    assert len(history) > 0 and len(recs) == 10
    assert not set(recs["id"]) & set(history["id"])  # already bought: left out
    assert recs["why"].str.len().gt(0).all()
    at.slider(key="weight_cf").set_value(0.0).run()
    by_content = at.dataframe[1].value
    assert (by_content["CF"] == 0).all() and list(by_content["id"]) != list(recs["id"])
    assert at.selectbox(key="customer").value == user
    assert at.markdown  # the bought-together strip renders cards


def test_customer_mode_reports_missing_interactions_in_one_message(monkeypatch, tmp_path):
    (tmp_path / "catalog.csv").write_text("id,name,image\na,A,\n")
    monkeypatch.setenv("RECOMMENDER_CUSTOMER_CATALOG", str(tmp_path / "catalog.csv"))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state["app_mode"] = "For a customer"
    at.run()
    assert not at.exception
    assert "no interactions file" in at.error[0].value


def _strips(block) -> list[str]:
    return [c.value for c in block.caption if "Bought together" in c.value]


def test_product_cards_show_what_was_bought_together_only_when_it_was(monkeypatch, tmp_path):
    """Product mode on a small shop with purchases beside its catalog: the picked product and the result cards
    carry a "Bought together" strip (at most 4 names) exactly when customers bought them with something else."""
    names = {"cake": "Cake stand", "doily": "Paper doilies", "cups": "Cake cups", "tin": "Cake tin",
             "knife": "Cake knife", "box": "Cake box", "lone": "Cake lamp", "never": "Cake poster"}
    pd.DataFrame({"id": list(names), "name": list(names.values()), "image": ""}).to_csv(tmp_path / "catalog.csv",
                                                                                        index=False)
    baskets = {"u1": ["cake", "doily", "cups"], "u2": ["cake", "doily"], "u3": ["cake", "tin", "knife"],
               "u4": ["cake", "box"], "u5": ["lone"]}  # "lone": bought, never with anything; "never": not bought
    pd.DataFrame([{"user_id": u, "item_id": i, "timestamp": "2011-12-01"} for u, items in baskets.items()
                  for i in items]).to_csv(tmp_path / "interactions.csv", index=False)
    monkeypatch.setenv("RECOMMENDER_CATALOG", str(tmp_path / "catalog.csv"))
    monkeypatch.delenv("RECOMMENDER_INTERACTIONS", raising=False)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state["product"] = "cake"
    at.run()
    assert not at.exception and not at.error
    query_card = at.columns[0]  # the picked product: name, attributes, description, strip
    [strip] = _strips(query_card)
    shown = [n for n in names.values() if n in strip]
    assert len(shown) == 4 and "Paper doilies" in shown  # five co-bought products, the four closest shown
    assert "Cake stand" not in shown and "Cake lamp" not in shown and "Cake poster" not in shown
    card_strips = _strips(at)[1:]
    assert card_strips and all("Cake lamp" not in s for s in card_strips)  # result cards carry their own
    for item in ("lone", "never"):
        at.selectbox(key="product").set_value(item).run()
        assert not at.exception and at.selectbox(key="product").value == item
        assert _strips(at.columns[0]) == []
