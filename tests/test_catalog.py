import pandas as pd
import pytest

from recommender import CatalogError, load_catalog
from recommender.catalog.loader import REQUIRED_COLUMNS, Catalog
from tests.conftest import DEMO_DIR


def test_demo_catalog_is_complete_and_readable(demo_catalog):
    items = demo_catalog.items
    assert len(demo_catalog) == 89
    assert items["id"].is_unique
    assert set(REQUIRED_COLUMNS) <= set(items.columns)
    assert demo_catalog.image_problems() == []
    assert items["price"].notna().all() and (items["price"] > 0).all()
    # Both sources are present; brand/colour are left empty where the source has none.
    assert {"Electronics", "Apparel", "Groceries"} <= set(items["category"])
    assert (items["brand"] == "").sum() > 0


def test_views_belong_to_catalog_products(demo_catalog):
    views = pd.read_csv(DEMO_DIR / "views.csv", dtype=str)
    assert len(views) > 0
    assert set(views["id"]) <= set(demo_catalog.ids)
    assert all((DEMO_DIR / p).is_file() for p in views["image"])


def test_multi_valued_attributes_are_split(demo_catalog):
    attrs = demo_catalog.attributes(demo_catalog.position("ultraboost-running-shoe"))
    assert attrs["colour"] == ["blue", "pink"]
    assert "blue" in demo_catalog.values("colour")


def test_missing_image_column_is_refused_with_its_name(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("id,name,price\na,Alpha,1\n")
    with pytest.raises(CatalogError, match=r"missing required column\(s\): image"):
        load_catalog(path)


def test_every_problem_is_reported_at_once(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("id,name,image,price\na,A,a.jpg,1\na,B,b.jpg,x\n,C,,2\n")
    with pytest.raises(CatalogError) as err:
        load_catalog(path)
    msg = str(err.value)
    assert "empty id on line(s) 4" in msg
    assert "duplicate id(s): a" in msg
    assert "empty image path on line(s) 4" in msg
    assert "price is not a finite number on line(s) 3" in msg


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("c.txt", "id,name,image\n", "unsupported file type '.txt'"),
        ("c.csv", "", "the file is empty"),
        ("c.csv", "id,name,image\n", "no rows"),
        ("c.csv", b"id,name,image\n\xff\xfe,x,y\n", "not UTF-8"),
    ],
)
def test_bad_files_get_clear_errors(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(CatalogError, match=message):
        load_catalog(path)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(CatalogError, match="not found"):
        load_catalog(tmp_path / "nope.csv")
    with pytest.raises(CatalogError, match="is a folder"):
        load_catalog(tmp_path)


def test_parquet_and_color_alias(tmp_path, demo_catalog):
    df = demo_catalog.items.rename(columns={"colour": "Color"}).head(5)
    df["image"] = [str(DEMO_DIR / p) for p in df["image"]]  # absolute paths, inside an allowed root
    df.to_parquet(tmp_path / "c.parquet")
    cat = load_catalog(tmp_path / "c.parquet", image_roots=[DEMO_DIR])
    assert list(cat.ids) == list(demo_catalog.ids[:5])
    assert "colour" in cat.items.columns
    assert cat.image_problems() == []
    # Without the root they are outside the catalog's folder: reported, never read.
    outside = load_catalog(tmp_path / "c.parquet").image_problems()
    assert len(outside) == 5 and all("outside the catalog folder" in p.reason for p in outside)


def test_image_problems_lists_every_bad_row(small_catalog_dir):
    (small_catalog_dir / "images" / "laptop.jpg").write_bytes(b"this is not a jpeg")
    (small_catalog_dir / "images" / "orchid.jpg").unlink()
    problems = {p.id: p.reason for p in load_catalog(small_catalog_dir / "catalog.csv").image_problems()}
    assert problems.keys() == {"laptop", "orchid"}
    assert "not an image" in problems["laptop"]
    assert "not found" in problems["orchid"]


def test_fingerprint_changes_with_content(small_catalog_dir):
    a = load_catalog(small_catalog_dir / "catalog.csv")
    df = a.items.copy()
    df.loc[0, "name"] = "Renamed"
    df.to_csv(small_catalog_dir / "catalog.csv", index=False)
    b = load_catalog(small_catalog_dir / "catalog.csv")
    assert a.fingerprint() != b.fingerprint()


def test_ids_are_converted_once_and_follow_a_replaced_column(demo_catalog):
    assert demo_catalog.ids is demo_catalog.ids  # cached: no conversion per access
    items = demo_catalog.items.copy()
    cat = Catalog(items, demo_catalog.root)
    before = cat.ids
    items["id"] = items["id"].str.upper()
    assert cat.ids is not before and cat.ids[0] == before[0].upper()
