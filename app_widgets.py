"""The app's sidebar widgets and result cards (``app.py`` draws the page and the query).

Each widget function draws one control and returns its value; the result functions only show what
the library returned.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import streamlit as st

from recommender import Filters, HybridRecommender
from recommender.catalog.loader import Catalog
from recommender.export import format_price, recommendations_csv
from recommender.ranking.results import Recommendation, Recommendations

FILTER_COLUMNS = {"category": "Category", "sub_category": "Sub-category", "brand": "Brand", "colour": "Colour"}
BACKBONE_NAMES = {"vgg16": "VGG16", "resnet50": "ResNet50", "efficientnet_lite0": "EfficientNet-Lite0"}
GRID_COLUMNS = 4

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|>~<$:])")


def md(text: object) -> str:
    """Escape catalog text for st.markdown (``$`` would start LaTeX, ``*`` emphasis...)."""
    return _MD_SPECIAL.sub(r"\\\1", str(text))


_LIST_REPR = re.compile(r"(?: in )?\[((?:'[^'\]]*'(?:, )?)+)\]")


def plain_lists(text: str) -> str:
    """``brand in ['nike', 'adidas']`` as a person reads it: ``brand nike or adidas`` (library messages
    may still carry a Python list)."""
    def join(m: re.Match) -> str:
        lead = " " if m.group(0).startswith(" in ") else ""
        return lead + " or ".join(v.strip("'") for v in m.group(1).split(", "))

    return _LIST_REPR.sub(join, text)


def sentence(text: str) -> str:
    """A library message shown on its own: plain lists, a capital first letter."""
    text = plain_lists(text)
    return text[:1].upper() + text[1:]


def count(n: int, noun: str) -> str:
    """``1 product``, ``2 products``."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def price_steps(lo: float, hi: float) -> list[float]:
    """Slider stops on a 1-2-5 scale: prices are skewed (1.50 to 5,350 in the demo catalog)."""
    lo, hi = math.floor(lo), math.ceil(hi)
    stops = {float(lo), float(hi)}
    for exp in range(0, len(str(int(hi))) + 1):
        for m in (1, 2, 5):
            v = m * 10 ** exp
            if lo < v < hi:
                stops.add(float(v))
    return sorted(stops)


def attribute_line(catalog: Catalog, pos: int, currency: str) -> str:
    item = catalog.items.iloc[pos]
    category = " / ".join(v for v in (item["category"], item["sub_category"]) if v)
    return " · ".join(v for v in (item["brand"], category, format_price(item["price"], currency)) if v)


def describe_filters(filters: Filters, currency: str) -> str:
    """The active filters as a person reads them: ``brand Nike or Adidas, price up to $50``."""
    parts = []
    for col, label in FILTER_COLUMNS.items():
        values = getattr(filters, col)
        if values:
            parts.append(f"{label.lower()} {' or '.join(sorted(values))}")
    lo, hi = filters.price_min, filters.price_max
    if lo is not None and hi is not None:
        parts.append(f"price {format_price(lo, currency, 0)} to {format_price(hi, currency, 0)}")
    elif lo is not None:
        parts.append(f"price from {format_price(lo, currency, 0)}")
    elif hi is not None:
        parts.append(f"price up to {format_price(hi, currency, 0)}")
    return ", ".join(parts)


# -- sidebar widgets: each returns its value ---------------------------------------------------
def reset_filters(full_price: tuple[float, float] | None) -> None:
    """Every filter back to "any" - the price slider included, set to its full range (not just
    forgotten: a forgotten slider keeps showing, and later sends back, the old range)."""
    for col in FILTER_COLUMNS:
        st.session_state[f"filter_{col}"] = []
    if full_price is not None:
        st.session_state["filter_price"] = full_price


def filter_widgets(f: dict) -> Filters:
    st.header("Filters", divider="gray")
    chosen = {}
    for col, label in FILTER_COLUMNS.items():
        if f["values"][col]:
            chosen[col] = st.multiselect(label, f["values"][col], key=f"filter_{col}", placeholder="Any")
    price_min = price_max = None
    full = None
    if f["price"] is not None:
        stops = price_steps(*f["price"])
        full = (stops[0], stops[-1])
        lo, hi = st.select_slider(f"Price ({f['currency']})", stops, value=full, key="filter_price",
                                  format_func=lambda v: format_price(v, f["currency"], 0))
        price_min = lo if lo > stops[0] else None  # an untouched bound keeps products without a price
        price_max = hi if hi < stops[-1] else None
    st.button("Clear filters", on_click=reset_filters, args=(full,), icon=":material/filter_alt_off:",
              type="tertiary")
    return Filters(price_min=price_min, price_max=price_max, **chosen)


def weight_widget(rec: HybridRecommender, mode: str) -> float:
    st.header("Ranking", divider="gray")
    # One slider per query mode, as for colour: a product's own metadata is a strong signal, a photo's is
    # only borrowed from its closest image matches, so each starts at the library's default for its kind.
    start = rec.default_weight(photo=mode == "photo")
    grid = {round(i / 20, 2) for i in range(21)} | {start}
    key = f"weight_{mode}"
    st.session_state.setdefault(key, start)

    def label(w: float) -> str:
        return "metadata only" if w == 0 else "image only" if w == 1 else f"{w:.0%} image"

    text_mode = mode == "text"
    w = st.select_slider(
        "Weight: metadata ◀ ▶ image", sorted(grid), key=key, format_func=label, disabled=text_mode,
        help="Slide left to rank by text, category, brand and colour; right to rank by how the photos look. "
             f"It starts at {rec.default_weight():.0%} image for a product and {rec.default_weight(photo=True):.0%} "
             "for a photo (chosen by the evaluation on several catalogs).")
    if text_mode:
        st.caption("A description has no image: it is matched by name, description, category, brand and colour.")
    else:
        adapted = mode == "product" and w == start and rec.adaptive_weight and rec.expands()
        st.caption(f"score = **{w:.0%}** image + **{1 - w:.0%}** metadata"
                   + (", shifted per product towards the side whose best match stands out" if adapted else "")
                   + "  \n◀ metadata only · image only ▶")
    return float(w)


def colour_widget(rec: HybridRecommender, mode: str) -> float:
    # One slider per query mode, each starting at the library's default for that kind of query: a
    # photo usually asks for that very product (colour on), a product for others of its kind (off).
    key = f"colour_{mode}"
    st.session_state.setdefault(key, rec.default_colour_weight(photo=mode == "photo"))
    return float(st.slider(
        "Colour match", 0.0, 1.0, step=0.1, key=key, disabled=mode == "text",
        help="Share of the image similarity that comes from colour. 0 finds the same kind of product; "
             "higher finds the same product in another shot, or things in the same colours. It starts at "
             f"{rec.default_colour_weight(photo=True):g} for photos and {rec.default_colour_weight():g} for "
             "products (chosen by the evaluation); a text search has no image side."))


def diversity_widget() -> float:
    return float(st.slider(
        "Diversity", 0.0, 1.0, 0.0, 0.1, key="diversity",
        help="0 ranks by score alone; higher values re-rank (maximal marginal relevance) so the results "
             "look less alike, at some cost in similarity to the query."))


def k_widget() -> int:
    return int(st.slider("Number of results", 1, 40, 12, key="k"))


def about_panel(rec: HybridRecommender, f: dict) -> None:
    """Developer details (catalog file, image model, weights, build) out of the shopper's way."""
    catalog = rec.catalog_
    report = rec.build_report_
    with st.expander("About this catalog", icon=":material/info:"):
        source = catalog.source.name if catalog.source else "catalog"
        st.markdown(f"**{md(source)}**: {count(len(catalog), 'product')}, prices in {md(f['currency'])}")
        st.markdown(f"Image model: **{BACKBONE_NAMES.get(rec.backbone_, rec.backbone_)}**")
        if rec.backbone_fallback_:
            st.info("VGG16 weights are not on this machine, so the bundled EfficientNet-Lite0 (ImageNet) "
                    "model is used.", icon=":material/info:")
        st.caption(md(rec.backbone_reason_.removeprefix("auto: ")))
        if getattr(rec, "features_note_", None):  # which image features (pooled head or grid) and why
            st.caption(md(rec.features_note_))
        st.caption(md(report.summary()))
        if report.skipped:
            st.warning(f"{count(len(report.skipped), 'product image')} could not be read:",
                       icon=":material/warning:")
            for p in report.skipped:
                st.caption(f"{md(p.id)}: {md(p.reason)}")


# -- the results -------------------------------------------------------------------------------
def bought_together_line(names: list[str]) -> None:
    """The "Bought together" strip of a product card: names of what its buyers also bought (nothing if none)."""
    if names:
        st.caption(":material/shopping_basket: **Bought together:** " + " · ".join(md(n) for n in names))


def result_card(rank: int, r: Recommendation, catalog: Catalog, currency: str, card_image: Callable,
                more_like: Callable, bought_together: Callable | None = None) -> None:
    item = catalog.items.iloc[r.position]
    path = catalog.image_path(r.position)
    with st.container(border=True):
        card = card_image(str(path), r.position, catalog)
        if card is not None:
            st.image(card["picture"], width="stretch")
        else:
            st.caption(":material/hide_image: image unavailable")
        st.markdown(f"**{rank}\\. {md(r.name)}**")
        st.caption(md(attribute_line(catalog, r.position, currency)) or " ")
        st.markdown(f"Score **{r.score:.2f}**")
        st.progress(min(max(r.image_contribution, 0.0), 1.0), text=f"image {r.image_contribution:.2f}")
        st.progress(min(max(r.metadata_contribution, 0.0), 1.0), text=f"metadata {r.metadata_contribution:.2f}")
        st.caption(f":material/lightbulb: {md(r.why())}")
        if bought_together is not None:
            bought_together_line(bought_together(r.id))
        st.button("More like this", key=f"more_{r.id}", on_click=more_like, args=(r.id,),
                  icon=":material/search:", width="stretch")
        with st.expander("Details"):
            st.write(md(item["description"]) if item["description"] else "_No description._")
            st.caption(f"id: {md(r.id)}")
            if card is not None:  # decoded inside the catalog folder: serve those pixels, re-encoded
                st.download_button("Download image", data=card["download"], file_name=card["file_name"],
                                   mime=card["mime"], key=f"download_{r.id}", icon=":material/download:",
                                   on_click="ignore")


def results(res: Recommendations, catalog: Catalog, filters: Filters, currency: str, card_image: Callable,
            more_like: Callable, text_query: bool = False, bought_together: Callable | None = None) -> None:
    head, button = st.columns([4, 1], vertical_alignment="bottom")
    with head:
        st.subheader(count(len(res), "result"))
        passing = "passes" if res.n_candidates == 1 else "pass"
        parts = [f"Query: {md(res.query)}", f"{count(res.n_candidates, 'product')} {passing} the filters"]
        if not text_query:
            parts.append(f"image weight {res.weight:.2f}")
        st.caption(" · ".join(parts))
    for note in res.notes:
        st.info(md(sentence(note)), icon=":material/info:")
    if not res.items:
        active = describe_filters(filters, currency)
        if res.n_candidates == 0 and active:
            st.warning(f"No product passes the filters ({md(active)}). Loosen or clear a filter in the sidebar.",
                       icon=":material/filter_alt_off:")
        else:
            reason = sentence(res.empty_reason or "no product matches this query")
            st.warning(f"{md(reason)}.", icon=":material/search_off:")
        return
    if getattr(res, "weak", False):  # the library's "no good match" state: even the best result is weak
        st.warning("No good match: even the closest products below are only weakly similar.",
                   icon=":material/help:")
    with button:
        st.download_button("Download CSV", recommendations_csv(res, catalog), "recommendations.csv",
                           mime="text/csv", icon=":material/download:", on_click="ignore", width="stretch")
    for start in range(0, len(res.items), GRID_COLUMNS):
        row = res.items[start:start + GRID_COLUMNS]
        for rank, (col, r) in enumerate(zip(st.columns(GRID_COLUMNS), row, strict=False), start + 1):
            with col:
                result_card(rank, r, catalog, currency, card_image, more_like, bought_together)
