"""Streamlit app: find products like a photo, a catalog product or a description.

    streamlit run app.py

Opens on the bundled demo catalog (``RECOMMENDER_CATALOG=path/to/catalog.csv`` for another one,
``RECOMMENDER_BACKBONE`` to force a backbone). The app is a thin shell: every decision (filters,
ranking, the score breakdown, the "why", upload validation) is a ``recommender`` library call.
"""

from __future__ import annotations

import math
import mimetypes
import os
import re
import textwrap
import threading

import streamlit as st

from recommender import Filters, HybridRecommender, RecommenderError, load_catalog
from recommender.catalog.loader import DEMO_CATALOG, Catalog
from recommender.errors import ImageError
from recommender.features.images import open_image, pad_to_square
from recommender.features.uploads import MAX_UPLOAD_MB, UPLOAD_EXTENSIONS, Upload, open_upload
from recommender.recommender import DEFAULT_WEIGHT, Recommendation, Recommendations

CATALOG_PATH = os.environ.get("RECOMMENDER_CATALOG", str(DEMO_CATALOG))
BACKBONE = os.environ.get("RECOMMENDER_BACKBONE", "auto")
FILTER_COLUMNS = {"category": "Category", "sub_category": "Sub-category", "brand": "Brand", "colour": "Colour"}
BACKBONE_NAMES = {"vgg16": "VGG16", "resnet50": "ResNet50", "efficientnet_lite0": "EfficientNet-Lite0"}
MODES = {
    "product": ":material/inventory_2: A catalog product",
    "photo": ":material/photo_camera: A photo",
    "text": ":material/edit_note: A description",
}
GRID_COLUMNS = 4
THUMB_SIZE = 320


# -- heavy objects and data (cached) ---------------------------------------------------------
class Engine:
    """Holds the fitted recommender: fitted at most once per process, shared by every session.

    The fit runs outside the ``st.cache_resource`` function on purpose: its progress bar is drawn
    in the calling session, and Streamlit would otherwise record those elements and try to replay
    them (into a placeholder that does not exist) for the next session that hits the cache.
    """

    def __init__(self, catalog_path: str, backbone: str) -> None:
        self.catalog_path = catalog_path
        self.backbone = backbone
        self._lock = threading.Lock()
        self._rec: HybridRecommender | None = None

    @property
    def ready(self) -> bool:
        return self._rec is not None

    def get(self, progress=None) -> HybridRecommender:
        with self._lock:
            if self._rec is None:
                self._rec = HybridRecommender(backbone=self.backbone).fit(
                    load_catalog(self.catalog_path), progress=progress)
            return self._rec


@st.cache_resource(show_spinner=False)
def engine(catalog_path: str, backbone: str) -> Engine:
    return Engine(catalog_path, backbone)


@st.cache_data(show_spinner=False)
def facets(catalog_path: str) -> dict:
    """What the sidebar and the product picker offer, derived from the catalog once."""
    catalog = load_catalog(catalog_path)
    items = catalog.items
    names = items["name"].astype(str)
    duplicated = names.duplicated(keep=False)
    labels = {pid: f"{name} ({pid})" if dup else name
              for pid, name, dup in zip(items["id"], names, duplicated, strict=True)}
    prices = items["price"].dropna()
    return {
        "values": {col: catalog.values(col) for col in FILTER_COLUMNS},
        "price": (float(prices.min()), float(prices.max())) if len(prices) else None,
        "labels": dict(sorted(labels.items(), key=lambda kv: kv[1].lower())),
    }


@st.cache_data(show_spinner=False, max_entries=1000)
def thumbnail(path: str):
    """A white-padded square thumbnail (uniform cards), or None if the image cannot be read."""
    try:
        return pad_to_square(open_image(path), THUMB_SIZE)
    except ImageError:
        return None


# -- small helpers -----------------------------------------------------------------------------
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|>~<$:])")


def md(text: object) -> str:
    """Escape catalog text for st.markdown (``$`` would start LaTeX, ``*`` emphasis...)."""
    return _MD_SPECIAL.sub(r"\\\1", str(text))


def price_text(value: float) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:,.2f}"


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


def attribute_line(catalog: Catalog, pos: int) -> str:
    item = catalog.items.iloc[pos]
    category = " / ".join(v for v in (item["category"], item["sub_category"]) if v)
    return " · ".join(v for v in (item["brand"], category, price_text(item["price"])) if v)


# -- sidebar widgets: each returns its value ---------------------------------------------------
def reset_filters() -> None:
    for col in FILTER_COLUMNS:
        st.session_state[f"filter_{col}"] = []
    st.session_state.pop("filter_price", None)


def filter_widgets(f: dict) -> Filters:
    st.header("Filters", divider="gray")
    chosen = {}
    for col, label in FILTER_COLUMNS.items():
        if f["values"][col]:
            chosen[col] = st.multiselect(label, f["values"][col], key=f"filter_{col}", placeholder="Any")
    price_min = price_max = None
    if f["price"] is not None:
        stops = price_steps(*f["price"])
        lo, hi = st.select_slider("Price", stops, value=(stops[0], stops[-1]), key="filter_price",
                                  format_func=lambda v: f"{v:,.0f}")
        price_min = lo if lo > stops[0] else None  # an untouched bound keeps products without a price
        price_max = hi if hi < stops[-1] else None
    st.button("Clear filters", on_click=reset_filters, icon=":material/filter_alt_off:", type="tertiary")
    return Filters(price_min=price_min, price_max=price_max, **chosen)


def weight_widget() -> float:
    st.header("Ranking", divider="gray")
    grid = {round(i / 20, 2) for i in range(21)} | {DEFAULT_WEIGHT}

    def label(w: float) -> str:
        return "metadata only" if w == 0 else "image only" if w == 1 else f"{w:.0%} image"

    w = st.select_slider(
        "Weight: metadata ◀ ▶ image", sorted(grid), value=DEFAULT_WEIGHT, key="weight", format_func=label,
        help="Slide left to rank by text, category, brand and colour; right to rank by how the photos look. "
             f"The default, {DEFAULT_WEIGHT:.0%} image, ranked best in a leave-one-out test on the demo catalog.")
    st.caption(f"score = **{w:.0%}** image + **{1 - w:.0%}** metadata  \n◀ metadata only · image only ▶")
    return float(w)


def colour_widget(rec: HybridRecommender) -> float:
    # One slider per query mode, each starting at the library's default for that kind of query: a
    # photo usually asks for that very product (colour on), a product for others of its kind (off).
    mode = st.session_state.get("mode", "product")
    default = rec.default_colour_weight(photo=mode == "photo")
    return float(st.slider(
        "Colour match", 0.0, 1.0, default, 0.1, key=f"colour_{mode}", disabled=mode == "text",
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


def backbone_panel(rec: HybridRecommender) -> None:
    st.header("Image model", divider="gray")
    st.markdown(f"Backbone: **{BACKBONE_NAMES.get(rec.backbone_, rec.backbone_)}**")
    reason = rec.backbone_reason_
    if rec.backbone_fallback_:
        st.info("VGG16 weights are not on this machine, so the bundled EfficientNet-Lite0 (ImageNet) "
                "model is used.", icon=":material/info:")
    with st.expander("Details"):
        st.caption(md(reason.removeprefix("auto: ")))
        st.caption(md(rec.build_report_.summary()))
    if rec.build_report_.skipped:
        with st.expander(f"{len(rec.build_report_.skipped)} product image(s) could not be read",
                         icon=":material/warning:"):
            for p in rec.build_report_.skipped:
                st.caption(f"{md(p.id)}: {md(p.reason)}")


# -- the query -------------------------------------------------------------------------------
def more_like(item_id: str) -> None:
    """'More like this' on a card: the query becomes that product (runs before the next rerun)."""
    st.session_state["mode"] = "product"
    st.session_state["product"] = item_id


def mode_widget() -> str:
    st.session_state.setdefault("mode", "product")
    return st.segmented_control("Find products like", list(MODES), format_func=MODES.get, key="mode",
                                required=True) or "product"


def product_picker(f: dict) -> str:
    labels = f["labels"]
    if st.session_state.get("product") not in labels:
        st.session_state["product"] = next(iter(labels))
    return st.selectbox("Product", list(labels), format_func=labels.get, key="product",
                        help="Type to search the catalog by name")


def check_upload(data: bytes, name: str) -> Upload:
    """Validate uploaded bytes in memory (extension, size, content); raises ImageError."""
    max_mb = int(st.get_option("server.maxUploadSize") or MAX_UPLOAD_MB)
    return open_upload(data, name, max_bytes=min(max_mb, MAX_UPLOAD_MB) * 1024 * 1024)


def query_widgets(f: dict, catalog: Catalog) -> dict | None:
    """Draw the query inputs and the query image; return ``recommend`` keyword arguments or None."""
    mode = mode_widget()
    left, right = st.columns([3, 1], gap="large")
    preview = caption = None
    with left:
        if mode == "product":
            item = product_picker(f)
            pos = catalog.position(item)
            st.caption(md(attribute_line(catalog, pos)))
            description = str(catalog.items["description"].iat[pos])
            if description:
                st.markdown(md(textwrap.shorten(description, 320, placeholder=" …")))
            preview, caption = thumbnail(str(catalog.image_path(pos))), str(catalog.items["name"].iat[pos])
            query = {"item": item}
        elif mode == "photo":
            uploaded = st.file_uploader(
                f"Upload a product photo ({', '.join(UPLOAD_EXTENSIONS)}; up to {MAX_UPLOAD_MB} MB)",
                type=list(UPLOAD_EXTENSIONS), key="upload")
            text = st.text_input("Optional description", key="upload_text",
                                 placeholder="e.g. white leather sneakers")
            if uploaded is None:
                st.info("Upload a photo to see the most similar products.", icon=":material/upload:")
                return None
            try:
                upload = check_upload(uploaded.getvalue(), uploaded.name)
            except ImageError as exc:
                st.error(f"Cannot use this file. {exc}", icon=":material/error:")
                return None
            preview, caption = upload.image, upload.name
            query = {"image": upload.data, "text": text}
        else:
            text = st.text_input("Describe the product", key="text",
                                 placeholder="e.g. wireless mouse, running shoe, green plant")
            if not text.strip():
                st.info("Type a description to search the catalog.", icon=":material/edit_note:")
                return None
            query = {"text": text}
    if preview is not None:
        with right:
            st.image(preview, caption=caption, width="stretch")
    return query


# -- the results -----------------------------------------------------------------------------
def result_card(rank: int, r: Recommendation, catalog: Catalog) -> None:
    item = catalog.items.iloc[r.position]
    path = catalog.image_path(r.position)
    with st.container(border=True):
        thumb = thumbnail(str(path))
        if thumb is not None:
            st.image(thumb, width="stretch")
        else:
            st.caption(":material/hide_image: image unavailable")
        st.markdown(f"**{rank}\\. {md(r.name)}**")
        st.caption(md(attribute_line(catalog, r.position)) or " ")
        st.markdown(f"Score **{r.score:.2f}**")
        st.progress(min(max(r.image_contribution, 0.0), 1.0), text=f"image {r.image_contribution:.2f}")
        st.progress(min(max(r.metadata_contribution, 0.0), 1.0), text=f"metadata {r.metadata_contribution:.2f}")
        st.caption(f":material/lightbulb: {md(r.why())}")
        st.button("More like this", key=f"more_{r.id}", on_click=more_like, args=(r.id,),
                  icon=":material/search:", width="stretch")
        with st.expander("Details"):
            st.write(md(item["description"]) if item["description"] else "_No description._")
            st.caption(f"id: {md(r.id)}")
            if path.is_file():
                st.download_button("Download image", data=path.read_bytes, file_name=path.name,
                                   mime=mimetypes.guess_type(path.name)[0] or "application/octet-stream",
                                   key=f"download_{r.id}", icon=":material/download:", on_click="ignore")


def results(res: Recommendations, catalog: Catalog) -> None:
    head, button = st.columns([4, 1], vertical_alignment="bottom")
    with head:
        st.subheader(f"{len(res)} result{'s' * (len(res) != 1)}")
        st.caption(f"Query: {md(res.query)} · {res.n_candidates} products pass the filters · "
                   f"image weight {res.weight:.2f}")
    for note in res.notes:
        st.info(md(note[:1].upper() + note[1:]), icon=":material/info:")
    if not res.items:
        st.warning(f"No product left: {md(res.empty_reason or 'nothing matches')}. "
                   "Loosen or clear a filter in the sidebar.", icon=":material/filter_alt_off:")
        return
    with button:
        st.download_button("Download CSV", res.to_frame(catalog).to_csv(index=False), "recommendations.csv",
                           mime="text/csv", icon=":material/download:", on_click="ignore", width="stretch")
    for start in range(0, len(res.items), GRID_COLUMNS):
        row = res.items[start:start + GRID_COLUMNS]
        for rank, (col, r) in enumerate(zip(st.columns(GRID_COLUMNS), row, strict=False), start + 1):
            with col:
                result_card(rank, r, catalog)


# -- the page --------------------------------------------------------------------------------
def load_recommender() -> HybridRecommender:
    """The cached recommender; on a first start, show the embedding progress with counts."""
    eng = engine(CATALOG_PATH, BACKBONE)
    if eng.ready:
        return eng.get()
    bar = st.empty()

    def progress(done: int, total: int) -> None:
        bar.progress(done / max(total, 1), text=f"First start: embedding catalog images {done}/{total}")

    with st.spinner("Loading the catalog and the image model..."):
        rec = eng.get(progress=progress)
    bar.empty()
    return rec


def main() -> None:
    st.set_page_config(page_title="Product recommender", page_icon=":material/styler:", layout="wide")
    if st.sidebar.radio("Mode", ["Similar products", "For a customer"], key="app_mode") == "For a customer":
        from app_customer import customer_page  # collaborative filtering: see app_customer.py

        return customer_page()
    st.title("Find similar products")
    st.caption("Upload a photo, pick a product or describe one; filter and weigh image against metadata "
               "in the sidebar. Every result says why it was chosen.")
    try:
        rec = load_recommender()
        f = facets(CATALOG_PATH)
    except RecommenderError as exc:
        st.error(f"The catalog cannot be loaded. {exc}", icon=":material/error:")
        st.stop()
    catalog = rec.catalog_

    with st.sidebar:
        filters = filter_widgets(f)
        weight = weight_widget()
        colour = colour_widget(rec)
        diversity = diversity_widget()
        k = k_widget()
        backbone_panel(rec)

    query = query_widgets(f, catalog)
    if query is None:
        return
    st.divider()
    try:
        with st.spinner("Finding similar products..."):
            res = rec.recommend(**query, k=k, weight=weight, filters=filters, colour_weight=colour,
                                diversity=diversity)
    except RecommenderError as exc:
        st.error(str(exc), icon=":material/error:")
        return
    results(res, catalog)


if __name__ == "__main__":
    main()
