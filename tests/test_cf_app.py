"""The app's "For a customer" mode on the Online Retail demo, driven headless with AppTest."""

from __future__ import annotations

from pathlib import Path

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
