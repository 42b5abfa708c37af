"""Interactions files: hostile input is refused with every problem named by its lines."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest

from recommender.catalog.interactions import InteractionsError, interactions_from_frame, load_interactions
from recommender.catalog.loader import catalog_from_frame, load_catalog
from recommender.errors import RecommenderError

HEADER = "user_id,item_id,weight,timestamp\n"


@pytest.fixture(scope="module")
def tiny_catalog():
    return catalog_from_frame(pd.DataFrame({"id": ["a", "b", "c"], "name": ["A", "B", "C"], "image": ""}), ".")


def write(tmp_path, text: str, name: str = "events.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_imageless_catalog_loads_but_a_blank_image_among_images_does_not(tmp_path):
    cat = load_catalog(write(tmp_path, "id,name,image,price\na,A,,1\nb,B,,2\n", "cat.csv"))
    assert list(cat.ids) == ["a", "b"]
    with pytest.raises(RecommenderError, match=r"empty image path on line\(s\) 3"):
        load_catalog(write(tmp_path, "id,name,image\na,A,a.jpg\nb,B,\n", "mixed.csv"))


def test_valid_file_loads_with_aliases_dates_and_defaults(tmp_path, tiny_catalog):
    path = write(tmp_path, "customer_id,product_id,quantity,date\n"
                           "u1,a,2,2011-12-09 12:50\nu1,b,,1323435000\nu2,c,1.5,2011-12-09T12:50:00Z\n")
    it = load_interactions(path, tiny_catalog)
    f = it.frame
    assert list(f["user_id"]) == ["u1", "u1", "u2"]
    assert list(f["weight"]) == [2.0, 1.0, 1.5]  # a blank weight counts once
    assert f["timestamp"].iat[0] == f["timestamp"].iat[2] == 1323435000
    assert set(f["kind"]) == {"purchase"}
    m = it.matrix(tiny_catalog.ids)
    assert m.shape == (2, 3) and m[0, 0] == 2.0 and m[1, 2] == 1.5


def test_every_problem_is_named_with_its_lines(tmp_path, tiny_catalog):
    path = write(tmp_path, HEADER + "\n".join([
        "u1,a,1,1300000000",        # line 2: fine
        "u1,zz,1,1300000000",       # 3: unknown item
        "u2,b,-3,1300000000",       # 4: negative
        "u2,b,inf,1300000000",      # 5: not finite
        "u2,b,nan,1300000000",      # 6: not finite
        "u2,b,lots,1300000000",     # 7: not a number
        "u3,c,1,yesterday-ish",     # 8: bad timestamp
        "u3,c,1,1300000000000",     # 9: milliseconds, out of range
        ",c,1,1300000000",          # 10: empty user
        "u4,,1,1300000000",         # 11: empty item
    ]) + "\n")
    with pytest.raises(InteractionsError) as err:
        load_interactions(path, tiny_catalog)
    msg = str(err.value)
    assert "1 item id(s) not in the catalog (zz) on line(s) 3" in msg
    assert "weight is negative on line(s) 4" in msg
    assert "weight is not finite on line(s) 5, 6" in msg
    assert "weight is not a number on line(s) 7" in msg
    assert "timestamp is not a date/time or unix seconds on line(s) 8, 9" in msg
    assert "empty user_id on line(s) 10" in msg
    assert "empty item_id on line(s) 11" in msg
    assert "\n" not in msg  # one line for the CLI


@pytest.mark.parametrize(("name", "content", "expected"), [
    ("e.csv", "user_id,item_id\nu,a\n", "missing required column(s): timestamp"),
    ("e.csv", HEADER, "no rows"),
    ("e.csv", "user_id,item_id,timestamp,user\nu,a,1,v\n", "column(s) given twice"),
    ("e.txt", HEADER + "u,a,1,1\n", "unsupported file type"),
    ("e.parquet", "not parquet at all", "cannot be parsed as PARQUET"),
])
def test_unusable_files_are_refused_in_one_line(tmp_path, tiny_catalog, name, content, expected):
    with pytest.raises(InteractionsError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        load_interactions(write(tmp_path, content, name), tiny_catalog)


def test_missing_folder_and_corrupt_gzip_are_named(tmp_path, tiny_catalog):
    with pytest.raises(InteractionsError, match="not found"):
        load_interactions(tmp_path / "nope.csv", tiny_catalog)
    with pytest.raises(InteractionsError, match="is a folder"):
        load_interactions(tmp_path, tiny_catalog)
    bad = tmp_path / "e.csv.gz"
    bad.write_bytes(gzip.compress(HEADER.encode())[:15])
    with pytest.raises(InteractionsError, match="gzip"):
        load_interactions(bad, tiny_catalog)


def test_typed_parquet_is_validated_too(tmp_path, tiny_catalog):
    df = pd.DataFrame({"user_id": ["u1", "u2", "u3"], "item_id": ["a", "b", "c"],
                       "weight": [1.0, np.inf, -1.0], "timestamp": [1.3e9, np.nan, 1.3e9]})
    path = tmp_path / "e.parquet"
    df.to_parquet(path)
    with pytest.raises(InteractionsError) as err:
        load_interactions(path, tiny_catalog)
    assert "weight is not finite on line(s) 3" in str(err.value)
    assert "weight is negative on line(s) 4" in str(err.value)
    assert "timestamp is not a date/time or unix seconds on line(s) 3" in str(err.value)
    ok = interactions_from_frame(df.iloc[[0]], tiny_catalog)
    assert ok.frame["timestamp"].iat[0] == 1_300_000_000
