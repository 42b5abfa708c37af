import numpy as np
import pytest
from sklearn.base import clone

from recommender.metadata import MetadataEncoder


def test_rows_are_unit_length_and_float32(demo_catalog):
    m = MetadataEncoder().fit_transform(demo_catalog.items)
    assert m.shape[0] == len(demo_catalog) and m.dtype == np.float32
    np.testing.assert_allclose(np.sqrt(m.multiply(m).sum(axis=1)).A.ravel(), 1.0, rtol=1e-5)


def test_estimator_contract(demo_catalog):
    enc = MetadataEncoder(exclude=("brand",))
    assert not hasattr(enc, "vectorizers_")  # no work in __init__
    assert enc.fit(demo_catalog.items) is enc
    assert clone(enc).get_params()["exclude"] == ("brand",)


def test_excluded_and_empty_fields_are_not_features(demo_catalog):
    enc = MetadataEncoder(exclude=("sub_category", "category")).fit(demo_catalog.items)
    assert set(enc.field_weights_) == {"name", "description", "brand", "colour"}
    items = demo_catalog.items.assign(brand="")
    assert "brand" not in MetadataEncoder().fit(items).field_weights_


def test_nearest_by_metadata_is_sensible(demo_catalog):
    m = MetadataEncoder().fit_transform(demo_catalog.items)
    i = demo_catalog.position("freerun-running-shoe")
    sims = (m @ m[i].T).toarray().ravel()
    sims[i] = -1
    top = demo_catalog.items.iloc[np.argsort(-sims)[:3]]
    assert (top["sub_category"] == "Footwear").all()


def test_field_weights_change_what_counts(demo_catalog):
    items = demo_catalog.items
    i = demo_catalog.position("hi-top-basketball-shoe")  # Nike, white
    def nearest(**weights):
        m = MetadataEncoder(text_fields={"name": 1.0}, categorical_fields=weights).fit_transform(items)
        sims = (m @ m[i].T).toarray().ravel()
        sims[i] = -1
        return items.iloc[int(np.argmax(sims))]
    assert nearest(brand=10.0, colour=0.1)["brand"] == "Nike"
    assert "white" in nearest(brand=0.1, colour=10.0)["colour"]


def test_text_query_recognises_attributes(demo_catalog):
    enc = MetadataEncoder().fit(demo_catalog.items)
    vec, attrs = enc.transform_text("A black Nike running shoe")
    assert attrs == {"brand": ["nike"], "colour": ["black"]}
    assert vec.shape == (1, enc.n_features_out_)
    _, none = enc.transform_text("something unrelated")
    assert none == {}


def test_no_usable_field_is_an_error(demo_catalog):
    with pytest.raises(ValueError, match="no usable metadata field"):
        MetadataEncoder(text_fields={}, categorical_fields={"nope": 1.0}).fit(demo_catalog.items)
