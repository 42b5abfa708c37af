"""Streamlit app: find products like a photo, a catalog product or a description.

    streamlit run app.py

Opens on the bundled demo catalog (``RECOMMENDER_CATALOG=path/to/catalog.csv`` for another one,
``RECOMMENDER_BACKBONE`` to force a backbone, ``RECOMMENDER_CURRENCY`` for its prices). The app is a
thin shell: every decision (filters, ranking, the score breakdown, the "why", upload validation,
what an export or a download may contain) is a ``recommender`` library call. The sidebar and the
result cards are drawn by ``app_widgets.py``.
"""

from __future__ import annotations

import os
import sys
import textwrap
import threading
from pathlib import Path

import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parent))  # app_widgets, however the app is started

from app_widgets import (  # noqa: E402 - after the path line above
    FILTER_COLUMNS,
    about_panel,
    attribute_line,
    bought_together_line,
    colour_widget,
    diversity_widget,
    filter_widgets,
    k_widget,
    md,
    results,
    weight_widget,
)
from recommender import HybridRecommender, RecommenderError, load_catalog  # noqa: E402
from recommender.catalog.loader import DEMO_CATALOG, Catalog  # noqa: E402
from recommender.errors import ImageError  # noqa: E402
from recommender.export import (  # noqa: E402
    catalog_currency,
    download_name,
    encode_image,
    product_image,
    square_image,
)
from recommender.features.uploads import MAX_UPLOAD_MB, UPLOAD_EXTENSIONS, open_upload  # noqa: E402

CATALOG_PATH = os.environ.get("RECOMMENDER_CATALOG", str(DEMO_CATALOG))
BACKBONE = os.environ.get("RECOMMENDER_BACKBONE", "auto")
MODES = {
    "product": ":material/inventory_2: A catalog product",
    "photo": ":material/photo_camera: A photo",
    "text": ":material/edit_note: A description",
}
# Widgets drawn only in some modes lose their value while not drawn (Streamlit cleans up their
# state); writing each back once per run keeps a typed description, the picked product and each
# mode's colour and weight settings across mode switches and "More like this".
KEPT_WIDGETS = ("product", "text", "upload_text", "colour_product", "colour_photo", "colour_text", "weight_product",
                "weight_photo", "weight_text")
CARD_MAX_SIDE = 1600  # a card's picture: the image's own resolution (full screen shows it), capped
MODEL_MAX_SIDE = 2048  # an upload is kept at most this large for the model (it sees 224 px)
PREVIEW_MAX_SIDE = 1024


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
                rec = HybridRecommender(backbone=self.backbone).fit(load_catalog(self.catalog_path), progress=progress)
                rec.warm_up()  # a large catalog's vector file mapped now, not in the first searches
                self._rec = rec
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


@st.cache_data(show_spinner=False, max_entries=2000)
def card_image(image_path: str, position: int, _catalog: Catalog) -> dict[str, bytes | str] | None:
    """A product's picture and its download, from one decode; None if the image cannot be read.

    ``picture``: the image on a white square at its own resolution (JPEG; full screen shows it).
    ``download``, ``file_name``, ``mime``: the decoded pixels re-encoded, never the file's bytes.
    Read only from inside the catalog folder; keyed by the image path and row.
    """
    try:
        image = product_image(_catalog, position)
    except ImageError:
        return None
    file_name, mime = download_name(_catalog, position)
    return {"picture": square_image(image, CARD_MAX_SIDE), "file_name": file_name, "mime": mime,
            "download": encode_image(image, "JPEG" if mime == "image/jpeg" else "PNG")}


@st.cache_data(show_spinner=False, max_entries=4, ttl=3600)
def prepared_upload(data: bytes, name: str, max_bytes: int) -> dict[str, str | bytes] | str:
    """Validate and decode an upload once per distinct file (keyed by its bytes); an error message if unusable.

    Returns ``name``, ``preview`` (JPEG, what the page shows) and ``pixels`` (a lossless BMP of the
    decoded photo: what the recommender reads, without a second costly decode). Plain types, as
    st.cache_data stores a copy.
    """
    try:
        upload = open_upload(data, name, max_bytes=max_bytes)
    except ImageError as exc:
        return f"Cannot use this file. {exc}"
    return {"name": upload.name, "preview": encode_image(upload.image, "JPEG", PREVIEW_MAX_SIDE),
            "pixels": encode_image(upload.image, "BMP", MODEL_MAX_SIDE)}


# -- the query -------------------------------------------------------------------------------
def keep_widget_state() -> None:
    for key in KEPT_WIDGETS:
        if key in st.session_state:
            st.session_state[key] = st.session_state[key]


def more_like(item_id: str) -> None:
    """'More like this' on a card: the query becomes that product, and the page goes back to the top."""
    st.session_state["mode"] = "product"
    st.session_state["product"] = item_id
    st.session_state["scroll_to_top"] = st.session_state.get("scroll_to_top_count", 0) + 1
    st.session_state["scroll_to_top_count"] = st.session_state["scroll_to_top"]


def scroll_to_top() -> None:
    """After "More like this" the new query is at the top of the page: show it (the count makes each script new)."""
    count = st.session_state.pop("scroll_to_top", None)
    if count is None:
        return
    st.html(f"""<script>/* {count} */
for (const el of document.querySelectorAll('[data-testid="stMain"], [data-testid="stAppViewContainer"]')) {{
  el.scrollTo({{top: 0}});
}}
window.scrollTo({{top: 0}});
</script>""", unsafe_allow_javascript=True)


def remember_upload() -> None:
    """The uploader changed: keep the new photo (or forget it when removed) beyond this mode's widgets."""
    uploaded = st.session_state.get("upload")
    if uploaded is None:
        st.session_state.pop("photo", None)
    else:
        st.session_state["photo"] = (uploaded.name, uploaded.getvalue())


def forget_photo() -> None:
    st.session_state.pop("photo", None)


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


def photo_query() -> tuple[dict | None, bytes | None, str | None]:
    """The uploader (or the photo kept from before a mode switch); returns (query, preview, caption)."""
    st.file_uploader(f"Upload a product photo ({', '.join(UPLOAD_EXTENSIONS)}; up to {MAX_UPLOAD_MB} MB)",
                     type=list(UPLOAD_EXTENSIONS), key="upload", on_change=remember_upload)
    text = st.text_input("Optional description", key="upload_text", placeholder="e.g. white leather sneakers")
    uploaded = st.session_state.get("upload")
    if uploaded is not None:
        st.session_state["photo"] = (uploaded.name, uploaded.getvalue())
    if "photo" not in st.session_state:
        st.info("Upload a photo to see the most similar products.", icon=":material/upload:")
        return None, None, None
    name, data = st.session_state["photo"]
    max_mb = min(int(st.get_option("server.maxUploadSize") or MAX_UPLOAD_MB), MAX_UPLOAD_MB)
    prepared = prepared_upload(data, name, max_mb * 1024 * 1024)
    if isinstance(prepared, str):
        st.error(prepared, icon=":material/error:")
        return None, None, None
    if uploaded is None:
        st.caption(f"Your photo: {md(prepared['name'])}")
        st.button("Remove photo", on_click=forget_photo, icon=":material/close:", type="tertiary")
    return {"image": prepared["pixels"], "text": text}, prepared["preview"], str(prepared["name"])


def query_widgets(f: dict, catalog: Catalog) -> dict | None:
    """Draw the query inputs and the query image; return ``recommend`` keyword arguments or None."""
    mode = mode_widget()
    left, right = st.columns([3, 1], gap="large")
    preview = caption = None
    with left:
        if mode == "product":
            item = product_picker(f)
            pos = catalog.position(item)
            st.caption(md(attribute_line(catalog, pos, f["currency"])))
            description = str(catalog.items["description"].iat[pos])
            if description:
                st.markdown(md(textwrap.shorten(description, 320, placeholder=" …")))
            bought_together_line(bought_together(item, catalog))
            card = card_image(str(catalog.image_path(pos)), pos, catalog)
            preview = card["picture"] if card else None
            caption = str(catalog.items["name"].iat[pos])
            query = {"item": item}
        elif mode == "photo":
            query, preview, caption = photo_query()
        else:
            text = st.text_input("Describe the product", key="text",
                                 placeholder="e.g. wireless mouse, running shoe, green plant")
            query = {"text": text} if text.strip() else None
            if query is None:
                st.info("Type a description to search the catalog.", icon=":material/edit_note:")
    if preview is not None:
        with right:
            st.image(preview, caption=caption, width="stretch")
    return query


def bought_together(item_id: str, catalog: Catalog) -> list[str]:
    """Up to 4 products bought with ``item_id`` when the catalog has an interactions file beside it."""
    from app_customer import bought_together_names  # collaborative filtering: see app_customer.py

    return bought_together_names(CATALOG_PATH, catalog, item_id)


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
    # An emoji icon is drawn by the browser itself: a ":material/...:" icon is fetched from Google's servers.
    st.set_page_config(page_title="Product recommender", page_icon="🛍️", layout="wide")
    keep_widget_state()
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
    f = {**f, "currency": catalog_currency(catalog)}  # not cached: follows RECOMMENDER_CURRENCY
    mode = st.session_state.get("mode", "product")

    with st.sidebar:
        filters = filter_widgets(f)
        weight = weight_widget(rec, mode)
        colour = colour_widget(rec, mode)
        diversity = diversity_widget()
        k = k_widget()
        about_panel(rec, f)

    query = query_widgets(f, catalog)
    scroll_to_top()
    if query is None:
        return
    st.divider()
    try:
        with st.spinner("Finding similar products..."):
            # A description has no image side: its (disabled) weight is not passed on. Left at its default, the
            # weight is not passed either, so the library adapts it to the query (adaptive_weight).
            at_default = weight == rec.default_weight(photo=mode == "photo")
            res = rec.recommend(**query, k=k, weight=None if mode == "text" or at_default else weight, filters=filters,
                                colour_weight=colour, diversity=diversity)
    except RecommenderError as exc:
        st.error(str(exc), icon=":material/error:")
        return
    results(res, catalog, filters, f["currency"], card_image, more_like, text_query=mode == "text",
            bought_together=lambda item_id: bought_together(item_id, catalog))


if __name__ == "__main__":
    main()
