"""The Streamlit app, driven headless with ``streamlit.testing.v1.AppTest`` on the real demo catalog.

The fitted recommender is cached per process (``st.cache_resource``), so only the first test pays
for the fit (~1 s with the embedding cache in data/demo/.cache) and the first photo query for
loading TensorFlow and the image model (a few seconds).
"""

from __future__ import annotations

import io
import shutil
import struct
import zlib
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from recommender import load_catalog
from recommender.catalog.loader import DEMO_CATALOG
from recommender.errors import ImageError
from recommender.features.images import MAX_PIXELS
from recommender.features.uploads import MAX_UPLOAD_BYTES, display_name, open_upload, read_upload, sniff_format
from recommender.recommender import DEFAULT_PHOTO_WEIGHT, DEFAULT_WEIGHT

APP = str(Path(__file__).resolve().parents[1] / "app.py")
IMAGES = DEMO_CATALOG.parent / "images"
TIMEOUT = 120  # seconds per script run: generous for a cold TensorFlow import on a 2-core CI box


@pytest.fixture(scope="module")
def catalog():
    return load_catalog(DEMO_CATALOG)


@pytest.fixture
def app(monkeypatch) -> AppTest:
    monkeypatch.delenv("RECOMMENDER_CATALOG", raising=False)
    monkeypatch.delenv("RECOMMENDER_BACKBONE", raising=False)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def run(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def result_ids(at: AppTest) -> list[str]:
    """Product ids of the result cards, best first (each card has a "More like this" button)."""
    return [b.key.removeprefix("more_") for b in at.button if b.key and b.key.startswith("more_")]


def plain(elements) -> str:
    """The text of markdown elements without the app's escaping backslashes."""
    return " ".join(e.value for e in elements).replace("\\", "")


def pick(at: AppTest, item: str) -> AppTest:
    at.segmented_control(key="mode").set_value("product")
    at.selectbox(key="product").set_value(item)
    return run(at)


def upload(at: AppTest, name: str, data: bytes, mime: str = "image/jpeg") -> AppTest:
    at.segmented_control(key="mode").set_value("photo")
    run(at)
    at.file_uploader(key="upload").set_value((name, data, mime))
    return run(at)


def attribute(catalog, item_id: str, col: str):
    return catalog.items[col].iat[catalog.position(item_id)]


# -- opening -------------------------------------------------------------------------------
def test_opens_on_the_demo_catalog_with_results(app, catalog):
    assert app.title[0].value == "Find similar products"
    assert app.segmented_control(key="mode").value == "product"
    ids = result_ids(app)
    assert len(ids) == app.slider(key="k").value == 12
    assert app.selectbox(key="product").value not in ids  # the query product is never its own result
    assert app.subheader[0].value == "12 results"
    # Sidebar: filters built from the catalog, the weight at the library's default.
    for col in ("category", "sub_category", "brand", "colour"):
        assert app.multiselect(key=f"filter_{col}").options == catalog.values(col)
    assert app.select_slider(key="weight_product").value == DEFAULT_WEIGHT
    assert "shifted per product" in plain(app.sidebar.caption)  # the default weight adapts to each product
    # Each card: a score breakdown (two bars), a "why" line, details with an image download.
    assert len(app.progress) == 2 * len(ids)
    assert len(app.expander) >= len(ids)
    labels = [b.proto.label for b in app.get("download_button")]
    assert labels.count("Download image") == len(ids) and "Download CSV" in labels


def test_developer_details_sit_in_the_about_expander(app):
    about = next(e for e in app.sidebar.expander if e.label == "About this catalog")
    text = " ".join(m.value for m in about.markdown)
    infos = " ".join(i.value for i in about.info)
    assert "89 products, prices in USD" in text.replace("\\", "")
    if "EfficientNet-Lite0" in text:
        assert "VGG16 weights are not on this machine" in infos
    else:
        assert "VGG16" in text
    captions = " ".join(c.value for c in about.caption).replace("\\", "")  # md() escapes _ ( )
    assert "features gap (auto)" in captions and "sub_category" in captions  # the demo keeps the pooled head
    # The shopper's part of the sidebar no longer names the model.
    outside = [m.value for m in app.sidebar.markdown if m not in about.markdown]
    assert not any("EfficientNet" in v or "VGG16" in v for v in outside)


def test_no_icon_or_favicon_from_the_internet():
    source = Path(APP).read_text()
    assert 'page_icon="🛍️"' in source and "page_icon=\":material" not in source


# -- filters, weight, k --------------------------------------------------------------------
def test_category_filter_changes_the_results(app, catalog):
    before = result_ids(app)
    app.multiselect(key="filter_category").set_value(["Home & Garden"])
    after = result_ids(run(app))
    assert after and after != before
    assert {attribute(catalog, i, "category") for i in after} == {"Home & Garden"}


def test_price_filter_keeps_only_products_in_range(app, catalog):
    app.select_slider(key="filter_price").set_value((5.0, 20.0))
    ids = result_ids(run(app))
    assert ids
    assert all(5 <= attribute(catalog, i, "price") <= 20 for i in ids)


def test_clear_filters_resets_the_price_slider_and_it_stays_reset(app, catalog):
    full = app.select_slider(key="filter_price").value
    before = result_ids(app)
    app.select_slider(key="filter_price").set_value((5.0, 20.0))
    app.multiselect(key="filter_category").set_value(["Sports & Outdoor"])
    assert result_ids(run(app)) != before
    next(b for b in app.sidebar.button if b.proto.label == "Clear filters").click()
    run(app)
    assert app.select_slider(key="filter_price").value == full
    # AppTest keeps no browser-side slider state, so check what the browser is told: only a value the
    # script sets (set_value) moves the browser's slider; a forgotten one (the old reset popped it)
    # keeps showing the old range there and sends it back on the next interaction.
    assert app.select_slider(key="filter_price").proto.set_value
    assert app.multiselect(key="filter_category").value == []
    assert result_ids(app) == before
    # The next, unrelated interaction does not bring the old range back.
    app.slider(key="k").set_value(20)
    ids = result_ids(run(app))
    assert app.select_slider(key="filter_price").value == full
    assert len(ids) == 20 and ids[:12] == before
    assert any(attribute(catalog, i, "price") > 20 for i in ids)


def test_one_product_left_is_singular(app, catalog):
    pick(app, "laptop")
    app.multiselect(key="filter_brand").set_value(["Logitech"])
    assert (catalog.items["brand"] == "Logitech").sum() == 1  # the filter leaves exactly one product
    run(app)
    caption = plain(app.caption)
    assert "1 product passes the filters" in caption and "1 products" not in caption
    assert app.subheader[0].value == "1 result" and len(result_ids(app)) == 1
    app.multiselect(key="filter_brand").set_value(["Nike"])
    app.multiselect(key="filter_category").set_value(["Sports & Outdoor"])
    n = len(catalog.items[(catalog.items["brand"] == "Nike") & (catalog.items["category"] == "Sports & Outdoor")])
    run(app)
    assert n > 1 and f"{n} products pass the filters" in plain(app.caption)


def test_clear_filters_restores_the_results(app):
    before = result_ids(app)
    app.multiselect(key="filter_brand").set_value(["Nike"])
    assert result_ids(run(app)) != before
    next(b for b in app.sidebar.button if b.proto.label == "Clear filters").click()
    assert result_ids(run(app)) == before
    assert app.multiselect(key="filter_brand").value == []


def test_weight_slider_changes_the_order(app):
    pick(app, "laptop")
    app.select_slider(key="weight_product").set_value(1.0)
    image_only = result_ids(run(app))
    assert "100%** image" in plain(app.sidebar.caption)
    # The card breakdown follows: at weight 1 the metadata side contributes nothing.
    assert {p.text for p in app.progress if p.text.startswith("metadata")} == {"metadata 0.00"}
    app.select_slider(key="weight_product").set_value(0.0)
    metadata_only = result_ids(run(app))
    assert {p.text for p in app.progress if p.text.startswith("image")} == {"image 0.00"}
    assert image_only != metadata_only
    app.select_slider(key="weight_product").set_value(DEFAULT_WEIGHT)
    assert result_ids(run(app)) not in (image_only, metadata_only)


def test_colour_slider_brings_up_the_same_colour(app, catalog):
    pick(app, "yellow-plimsolls")
    app.select_slider(key="weight_product").set_value(1.0)
    by_shape = result_ids(run(app))
    app.slider(key="colour_product").set_value(1.0)
    by_colour = result_ids(run(app))
    assert by_shape != by_colour
    # By shape: other shoes. By colour alone: yellow-orange things such as the orange juice.
    assert "ultraboost-running-shoe" in by_shape and "ultraboost-running-shoe" not in by_colour
    assert "orange-juice" in by_colour and "orange-juice" not in by_shape


def test_diversity_slider_reranks_and_says_so(app):
    pick(app, "nebula-night-sky-paint")
    plain_ids = result_ids(run(app))
    app.slider(key="diversity").set_value(0.8)
    varied = result_ids(run(app))
    assert varied[0] == plain_ids[0] and varied != plain_ids
    assert "diversity 0.8" in (plain(app.caption) + plain(app.info)).lower()


def test_number_of_results(app):
    app.slider(key="k").set_value(5)
    assert len(result_ids(run(app))) == 5
    assert app.subheader[0].value == "5 results"


def test_empty_state_names_the_filter_that_emptied_it(app):
    pick(app, "laptop")
    app.multiselect(key="filter_category").set_value(["Sports & Outdoor"])
    app.multiselect(key="filter_brand").set_value(["Apple"])
    run(app)
    assert result_ids(app) == []
    warning = plain(app.warning)
    assert "No product passes the filters (category Sports & Outdoor, brand Apple)" in warning
    assert "[" not in warning and "'" not in warning  # no Python list in a message
    assert app.subheader[0].value == "0 results"


def test_prices_show_the_catalog_currency(app):
    captions = plain(app.caption)
    assert "$" in captions  # the demo catalog is priced in USD
    assert app.select_slider(key="filter_price").label == "Price (USD)"


def test_currency_setting_reaches_the_page(monkeypatch):
    monkeypatch.setenv("RECOMMENDER_CURRENCY", "EUR")
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    run(at)
    assert "€" in plain(at.caption) and "$" not in plain(at.caption)


def test_weight_slider_is_disabled_for_a_description(app):
    assert not app.select_slider(key="weight_product").disabled
    app.segmented_control(key="mode").set_value("text")
    run(app)
    assert app.select_slider(key="weight_text").disabled
    assert "has no image" in plain(app.sidebar.caption)


def test_weight_slider_starts_at_each_modes_default_and_keeps_the_shoppers_choice(app):
    # A product's own metadata is a strong signal, a photo's is borrowed: the two defaults differ.
    assert DEFAULT_WEIGHT != DEFAULT_PHOTO_WEIGHT
    app.select_slider(key="weight_product").set_value(0.9)
    run(app)
    assert "90%** image" in plain(app.sidebar.caption)
    assert "image weight 0.90" in plain(app.caption)  # moved off its default: used as given, not adapted
    app.segmented_control(key="mode").set_value("photo")
    run(app)
    assert app.select_slider(key="weight_photo").value == DEFAULT_PHOTO_WEIGHT
    assert f"{DEFAULT_PHOTO_WEIGHT:.0%}** image" in plain(app.sidebar.caption)
    app.segmented_control(key="mode").set_value("product")
    run(app)
    assert app.select_slider(key="weight_product").value == 0.9  # kept while the photo mode was shown


# -- queries -------------------------------------------------------------------------------
def scroll_scripts(at: AppTest) -> list[str]:
    return [h.proto.body for h in at.get("html") if "scrollTo" in h.proto.body]


def test_more_like_this_requeries_with_that_product(app):
    pick(app, "laptop")
    first = result_ids(app)
    target = first[1]
    assert scroll_scripts(app) == []
    app.button(key=f"more_{target}").click()
    run(app)
    assert app.segmented_control(key="mode").value == "product"
    assert app.selectbox(key="product").value == target
    after = result_ids(app)
    assert target not in after and after != first
    assert len(scroll_scripts(app)) == 1  # back to the top, where the new query is
    app.slider(key="k").set_value(8)
    assert scroll_scripts(run(app)) == []  # only right after "More like this"


def test_description_and_product_survive_mode_switches(app):
    pick(app, "basketball")
    app.segmented_control(key="mode").set_value("text")
    run(app)
    app.text_input(key="text").set_value("wireless mouse")
    text_ids = result_ids(run(app))
    app.segmented_control(key="mode").set_value("photo")
    run(app)
    app.segmented_control(key="mode").set_value("product")
    run(app)
    assert app.selectbox(key="product").value == "basketball"
    app.segmented_control(key="mode").set_value("text")
    run(app)
    assert app.text_input(key="text").value == "wireless mouse"
    assert result_ids(app) == text_ids


def test_photo_and_its_description_survive_mode_switches_and_more_like_this(app):
    upload(app, "tennis-ball.jpg", TENNIS)
    app.text_input(key="upload_text").set_value("yellow ball")
    photo_ids = result_ids(run(app))
    app.slider(key="colour_photo").set_value(0.5)
    photo_ids = result_ids(run(app))
    app.button(key=f"more_{photo_ids[1]}").click()  # leaves photo mode
    run(app)
    assert app.segmented_control(key="mode").value == "product"
    app.segmented_control(key="mode").set_value("photo")
    run(app)
    assert app.text_input(key="upload_text").value == "yellow ball"
    assert app.slider(key="colour_photo").value == 0.5
    assert result_ids(app) == photo_ids
    assert "Your photo: tennis-ball.jpg" in plain(app.caption)
    assert "uploaded image + text 'yellow ball'" in plain(app.caption)
    # "Remove photo" forgets it.
    next(b for b in app.button if b.proto.label == "Remove photo").click()
    run(app)
    assert result_ids(app) == [] and any("Upload a photo" in i.value for i in app.info)


def test_an_upload_is_decoded_once_not_on_every_rerun(app, monkeypatch):
    import recommender.features.uploads as uploads

    calls = []
    real = uploads.open_upload

    def spy(*args, **kwargs):
        calls.append(args[1] if len(args) > 1 else kwargs.get("name"))
        return real(*args, **kwargs)

    monkeypatch.setattr(uploads, "open_upload", spy)
    # Bytes no other test uploads (st.cache_data is shared by the whole test process).
    buf = io.BytesIO()
    Image.open(IMAGES / "basketball.jpg").rotate(3, fillcolor="white").save(buf, format="JPEG")
    upload(app, "once.jpg", buf.getvalue())
    first = result_ids(app)
    assert first[0] == "basketball"
    for k in (5, 9, 12):
        app.slider(key="k").set_value(k)
        run(app)
    app.segmented_control(key="mode").set_value("product")
    run(app)
    app.segmented_control(key="mode").set_value("photo")
    assert result_ids(run(app)) == first
    assert calls == ["once.jpg"]


def test_text_query(app, catalog):
    app.segmented_control(key="mode").set_value("text")
    run(app)
    assert result_ids(app) == []  # nothing typed yet: a hint, no error
    assert any("Type a description" in i.value for i in app.info)
    app.text_input(key="text").set_value("running shoe")
    ids = result_ids(run(app))
    assert ids and "Shoe" in attribute(catalog, ids[0], "name")


def test_a_description_that_matches_nothing_says_so(app):
    app.segmented_control(key="mode").set_value("text")
    run(app)
    app.text_input(key="text").set_value("zzqx blorf")
    run(app)
    assert result_ids(app) == [] and app.subheader[0].value == "0 results"
    assert "No product matches 'zzqx blorf'" in plain(app.warning)


def test_a_weak_match_is_flagged_and_messages_have_no_python_lists(app):
    app.segmented_control(key="mode").set_value("text")
    run(app)
    # (Was "cheap nike shoes under 50": with the text embedding its best match scores .36, not poor.)
    app.text_input(key="text").set_value("nike garden hose under 50")
    ids = result_ids(run(app))
    shown = plain(app.warning) + plain(app.info)
    assert ids and "No good match" in plain(app.warning)
    assert "price <= 50" in shown and "['" not in shown  # the library's note, without a Python list


def test_upload_a_photo_finds_that_product_first(app):
    upload(app, "tennis-ball.jpg", (IMAGES / "tennis-ball.jpg").read_bytes())
    assert not app.error
    ids = result_ids(app)
    assert ids[0] == "tennis-ball"
    assert any("tennis-ball.jpg" in img.captions for img in app.image)  # the query image
    # No description: the metadata side is inferred from the closest matches, and said so.
    assert any("closest image matches" in i.value for i in app.info)


def test_colour_slider_starts_at_each_modes_default(app):
    run(app)
    assert app.slider(key="colour_product").value == 0.0
    upload(app, "plimsolls-back.png", (IMAGES / "yellow-plimsolls_4.png").read_bytes(), "image/png")
    assert app.slider(key="colour_photo").value == 0.3
    # The back view of the yellow plimsolls (not a catalog image) finds that product first.
    assert result_ids(app)[0] == "yellow-plimsolls"
    app.slider(key="colour_photo").set_value(0.0)
    assert "yellow-plimsolls" not in result_ids(run(app))[:3]


def test_upload_with_a_description(app):
    upload(app, "ball.png", _png_bytes(IMAGES / "basketball.jpg"), "image/png")
    app.text_input(key="upload_text").set_value("Wilson basketball")
    ids = result_ids(run(app))
    assert ids[0] == "basketball"
    assert "uploaded image + text 'Wilson basketball'" in plain(app.caption)


def _png_bytes(path: Path, mode: str = "RGBA") -> bytes:
    buf = io.BytesIO()
    Image.open(path).convert(mode).save(buf, format="PNG")
    return buf.getvalue()


def _bomb_png(width: int = 12_000, height: int = 12_000) -> bytes:
    """A tiny PNG file that claims to be 144 megapixels (a decompression bomb)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


TENNIS = (IMAGES / "tennis-ball.jpg").read_bytes()
BAD_UPLOADS = {
    "text-as-jpg": ("notes.jpg", b"just some text, not a photo", "not a JPEG, PNG or WebP image"),
    "empty": ("empty.png", b"", "the file is empty"),
    "truncated": ("cut.jpg", TENNIS[: len(TENNIS) // 3], "corrupt or truncated"),
    "over-size": ("huge.jpg", b"\xff\xd8\xff" + b"\0" * MAX_UPLOAD_BYTES, "over the upload limit"),
    "decompression-bomb": ("bomb.png", _bomb_png(), "too many pixels"),
}


@pytest.mark.parametrize("case", list(BAD_UPLOADS))
def test_a_bad_upload_shows_an_error_and_the_app_keeps_running(app, case):
    name, data, reason = BAD_UPLOADS[case]
    upload(app, name, data)
    errors = [e.value for e in app.error]
    assert len(errors) == 1 and name in errors[0] and reason in errors[0], errors
    assert result_ids(app) == []
    if case == "truncated":  # then a good photo works in the same session
        app.file_uploader(key="upload").set_value(("tennis-ball.jpg", TENNIS, "image/jpeg"))
        assert result_ids(run(app))[0] == "tennis-ball"
        assert not app.error


def test_first_start_builds_embeddings_with_a_progress_bar(tmp_path, monkeypatch):
    """A catalog without cached embeddings: the app embeds its images, showing counts."""
    rows = pd.read_csv(DEMO_CATALOG, dtype=str, keep_default_na=False).head(5)
    (tmp_path / "images").mkdir()
    for image in rows["image"]:
        shutil.copy(DEMO_CATALOG.parent / image, tmp_path / image)
    rows.to_csv(tmp_path / "catalog.csv", index=False)
    monkeypatch.setenv("RECOMMENDER_CATALOG", str(tmp_path / "catalog.csv"))

    from streamlit.delta_generator import DeltaGenerator

    shown: list[str] = []
    real_progress = DeltaGenerator.progress

    def spy(self, value, text=None, **kwargs):
        shown.append(text or "")
        return real_progress(self, value, text=text, **kwargs)

    monkeypatch.setattr(DeltaGenerator, "progress", spy)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    run(at)
    assert "First start: embedding catalog images 5/5" in shown
    assert (tmp_path / ".cache").is_dir()
    ids = result_ids(at)
    assert 1 <= len(ids) <= 4 and set(ids) <= set(rows["id"]) - {at.selectbox(key="product").value}
    assert "5 products: 5 embedded" in plain(at.sidebar.caption)


# -- recommender/features/uploads.py ------------------------------------------------------
def test_read_upload_accepts_the_three_formats():
    jpeg = TENNIS
    png = _png_bytes(IMAGES / "tennis-ball.jpg")
    buf = io.BytesIO()
    Image.open(IMAGES / "tennis-ball.jpg").save(buf, format="WEBP")
    webp = buf.getvalue()
    for name, data, fmt in (("a.JPG", jpeg, "JPEG"), ("a.jpeg", jpeg, "JPEG"), ("a.png", png, "PNG"),
                            ("a.webp", webp, "WebP")):
        assert read_upload(data, name) == data
        assert sniff_format(data) == fmt
        up = open_upload(data, name)
        assert up.image.mode == "RGB" and up.image.size == Image.open(io.BytesIO(data)).size
        assert up.format == fmt and up.data == data


@pytest.mark.parametrize(("name", "data", "message"), [
    ("notes.txt", TENNIS, "unsupported file type (.txt)"),
    ("photo", TENNIS, "unsupported file type (no extension)"),
    ("anim.gif", b"GIF89a" + b"\0" * 20, "unsupported file type (.gif)"),
    ("empty.jpg", b"", "the file is empty"),
    ("big.jpg", b"\xff\xd8\xff" + b"\0" * 2000, "over the upload limit of 1 KB"),
    ("gif.png", b"GIF89a" + b"\0" * 20, "not a JPEG, PNG or WebP image"),
])
def test_read_upload_rejects_before_decoding(name, data, message):
    with pytest.raises(ImageError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        read_upload(data, name, max_bytes=1024)
    assert str(info.value).startswith(display_name(name))


def test_open_upload_validates_the_content():
    with pytest.raises(ImageError, match="cut.jpg: corrupt or truncated"):
        open_upload(TENNIS[:500], "cut.jpg")
    with pytest.raises(ImageError, match="bomb.png: .*too many pixels"):
        open_upload(_bomb_png(), "bomb.png")
    with pytest.raises(ImageError, match="too many pixels"):
        open_upload(TENNIS, "small-limit.jpg", max_pixels=100)
    assert MAX_PIXELS < 12_000 * 12_000


def test_transparent_png_upload_is_flattened_onto_white():
    img = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    up = open_upload(buf.getvalue(), "clear.png")
    assert up.image.mode == "RGB" and up.image.getpixel((0, 0)) == (255, 255, 255)


def test_display_name_drops_folders_from_client_file_names():
    assert display_name("../../etc/passwd.jpg") == "passwd.jpg"
    assert display_name("C:\\Users\\me\\shoe.png") == "shoe.png"
    assert display_name("") == "uploaded file"
    assert len(display_name("x" * 300 + ".jpg")) == 80
