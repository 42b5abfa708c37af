"""The app's "For a customer" mode: pick a customer, see their history and recommendations with reasons.

Called from ``app.py``. Runs on the Online Retail demo (``data/online-retail``), or on
``RECOMMENDER_CUSTOMER_CATALOG`` (a catalog file with ``interactions.parquet``/``.csv``/``.csv.gz``
beside it, or ``RECOMMENDER_INTERACTIONS``). A thin shell: ranking, filters, reasons and "bought
together" are :class:`recommender.ranking.blend.CustomerRecommender` calls.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pandas as pd
import streamlit as st

from recommender import Filters, RecommenderError
from recommender.catalog.interactions import load_interactions
from recommender.catalog.loader import DEMO_CATALOG, Catalog, load_catalog
from recommender.cli_cf import INTERACTION_FILES
from recommender.ranking.blend import DEFAULT_WEIGHT_CF, CustomerRecommender
from recommender.ranking.cf import CollaborativeFilter

RETAIL_CATALOG = DEMO_CATALOG.parents[1] / "online-retail" / "catalog.parquet"
HISTORY_ROWS = 15
_LOCK = threading.Lock()


def interactions_path(catalog_path: str) -> Path:
    if os.environ.get("RECOMMENDER_INTERACTIONS"):
        return Path(os.environ["RECOMMENDER_INTERACTIONS"])
    folder = Path(catalog_path).parent
    for name in INTERACTION_FILES:
        if (folder / name).is_file():
            return folder / name
    raise RecommenderError(f"no interactions file beside {catalog_path} (looked for {', '.join(INTERACTION_FILES)})")


@st.cache_resource(show_spinner=False)
def customer_engine(catalog_path: str) -> tuple[CustomerRecommender, pd.DataFrame]:
    """The fitted blend and the purchase table, once per process (shared by every session)."""
    with _LOCK:
        catalog = load_catalog(catalog_path)
        interactions = load_interactions(interactions_path(catalog_path), catalog)
        return CustomerRecommender().fit(catalog, interactions), interactions.frame


@st.cache_data(show_spinner=False)
def customer_choices(catalog_path: str) -> list[str]:
    """Customers, most active first (the ones whose recommendations say the most)."""
    _, events = customer_engine(catalog_path)
    return list(events.groupby("user_id")["item_id"].nunique().sort_values(ascending=False, kind="stable").index)


def history_frame(rec: CustomerRecommender, events: pd.DataFrame, user: str) -> pd.DataFrame:
    """The customer's products, most recent first: name, times bought, last bought, price."""
    mine = events[events["user_id"] == user]
    per_item = mine.groupby("item_id").agg(times=("item_id", "size"), last=("timestamp", "max")).reset_index()
    items = rec.catalog_.items.set_index("id")
    per_item["name"] = items.loc[per_item["item_id"], "name"].to_numpy()
    per_item["price"] = items.loc[per_item["item_id"], "price"].to_numpy()
    per_item["last bought"] = pd.to_datetime(per_item["last"], unit="s").dt.strftime("%Y-%m-%d")
    per_item = per_item.sort_values("last", ascending=False, kind="stable")
    return per_item.rename(columns={"item_id": "id"})[["id", "name", "times", "last bought", "price"]]


def results_frame(res) -> pd.DataFrame:
    return pd.DataFrame([{"rank": i, "id": r.id, "name": r.name, "score": round(r.score, 3),
                          "CF": round(r.cf_contribution, 3), "content": round(r.metadata_contribution, 3),
                          "why": r.why()} for i, r in enumerate(res.items, 1)])


def bought_together_strip(rec: CustomerRecommender, item_id: str, k: int = 6) -> None:
    """'Customers who bought this also bought': a row of small cards."""
    also = rec.also_bought(item_id, k)
    if not also:
        st.caption("No co-purchases recorded for this product yet.")
        return
    for col, (pid, name, score) in zip(st.columns(len(also)), also, strict=True):
        with col, st.container(border=True):
            st.markdown(f"**{name.title()}**")
            st.caption(f"id {pid} · co-purchase cosine {score:.2f}")


@st.cache_resource(show_spinner=False)
def bought_together_model(catalog_path: str) -> CollaborativeFilter | None:
    """Co-purchases for the product cards: the item-item side of CF alone (the popularity model: no factors to
    fit, seconds on Online Retail); None when the catalog has no usable interactions file."""
    try:
        catalog = load_catalog(catalog_path)
        interactions = load_interactions(interactions_path(catalog_path), catalog)
        return CollaborativeFilter(algorithm="popularity", trend_weight=0.0).fit(interactions, catalog.ids)
    except RecommenderError:
        return None


def bought_together_names(catalog_path: str, catalog: Catalog, item_id: str, k: int = 4) -> list[str]:
    """Names of up to ``k`` products customers bought together with ``item_id`` (none without co-purchases)."""
    model = bought_together_model(catalog_path)
    if model is None:
        return []
    names = catalog.items["name"]
    out = []
    for pid, _ in model.also_bought_ids(item_id, k):
        try:
            out.append(str(names.iat[catalog.position(pid)]))
        except KeyError:  # a product that left the catalog since
            continue
    return out


def customer_page() -> None:
    st.title("Recommended for a customer")
    st.caption("What similar customers bought (collaborative filtering) blended with products like the ones "
               "this customer bought (content). Every result says why.")
    catalog_path = os.environ.get("RECOMMENDER_CUSTOMER_CATALOG", str(RETAIL_CATALOG))
    try:
        with st.spinner("Learning from the purchases (first start only)..."):
            rec, events = customer_engine(catalog_path)
            choices = customer_choices(catalog_path)
    except RecommenderError as exc:
        st.error(f"The customer data cannot be loaded. {exc}", icon=":material/error:")
        st.stop()
    prices = rec.catalog_.items["price"].dropna()
    with st.sidebar:
        weight_cf = st.slider("Behaviour ↔ content", 0.0, 1.0, DEFAULT_WEIGHT_CF, 0.05, key="weight_cf",
                              help="1 = what customers like this one bought (CF), 0 = products like the ones "
                                   "they bought (content)")
        price_max = st.number_input("Maximum price", min_value=0.0, value=float(prices.max()) if len(prices) else 0.0,
                                    key="customer_price_max") if len(prices) else None
        include_bought = st.toggle("Include products already bought", key="include_bought")
        k = st.slider("Results", 5, 40, 10, 5, key="customer_k")
    user = st.selectbox("Customer", choices, key="customer",
                        format_func=lambda u: f"{u} ({len(rec.cf_.history(u))} products)")
    if user is None:
        return
    history = history_frame(rec, events, user)
    left, right = st.columns([2, 3])
    with left:
        st.subheader("History")
        st.dataframe(history.head(HISTORY_ROWS), hide_index=True, width="stretch")
        if len(history) > HISTORY_ROWS:
            st.caption(f"... and {len(history) - HISTORY_ROWS} more products")
    with right:
        try:
            res = rec.recommend(user, k=k, weight_cf=weight_cf, filters=Filters(price_max=price_max),
                                exclude_bought=not include_bought)
        except RecommenderError as exc:
            st.error(str(exc), icon=":material/error:")
            return
        st.subheader(f"{len(res)} recommendations")
        for note in res.notes:
            st.info(note[:1].upper() + note[1:], icon=":material/info:")
        if not res.items:
            st.warning(f"Nothing left: {res.empty_reason}.", icon=":material/filter_alt_off:")
        else:
            st.dataframe(results_frame(res), hide_index=True, width="stretch")
    if len(history):
        st.subheader("Bought together")
        picked = st.selectbox("Customers who bought", list(history["id"]), key="together_item",
                              format_func=lambda i: rec.catalog_.items["name"].iat[rec.catalog_.position(i)])
        bought_together_strip(rec, picked)
