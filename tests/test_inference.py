"""The image network's runtimes: OpenVINO (default where installed) against TensorFlow, the cached
converted model, and what happens when that cache is damaged or cannot be written."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from recommender import HybridRecommender
from recommender.errors import RecommenderError
from recommender.features.embedders import ImageEmbedder
from recommender.features.images import load_for_model
from recommender.features.inference import _read_cached_ir, openvino_installed, plan_inference
from tests.conftest import DEMO_DIR

ROOT = DEMO_DIR.parents[1]

needs_openvino = pytest.mark.skipif(not openvino_installed(), reason="OpenVINO not installed (requirements.txt)")
PHOTOS = ["laptop.jpg", "tennis-ball.jpg", "t-shirt.png", "orchid.jpg", "basketball.jpg", "apple-juice.png"]


@pytest.fixture(scope="module")
def pixels():
    return np.stack([load_for_model(DEMO_DIR / "images" / n, 224) for n in PHOTOS])


@pytest.fixture()
def model_cache(tmp_path, monkeypatch):
    folder = tmp_path / "models"
    monkeypatch.setenv("RECOMMENDER_MODEL_CACHE", str(folder))
    return folder


@needs_openvino
def test_the_default_runtime_equals_tensorflow_and_shares_its_cache(pixels, lite0_embedder):
    params = {"backbone": "efficientnet_lite0", "flip_tta": True, "semantic": 0.5}
    tf_vectors = ImageEmbedder(**params, runtime="tensorflow").fit().embed_arrays(pixels)
    ov = ImageEmbedder(**params).fit()
    assert ov.runtime_ == "openvino f32" and plan_inference("auto").runtime == "openvino"
    np.testing.assert_allclose(ov.embed_arrays(pixels), tf_vectors, atol=2e-5)
    assert ov.identity().folder == ImageEmbedder(**params, runtime="tensorflow").identity().folder
    # One image at a time or many: the same vectors (the runtime queues one image per request).
    alone = np.concatenate([lite0_embedder.embed_arrays(pixels[i:i + 1]) for i in range(len(pixels))])
    np.testing.assert_allclose(lite0_embedder.embed_arrays(pixels), alone, atol=1e-6)


@needs_openvino
def test_bfloat16_is_close_to_float32_and_keeps_its_own_cache(pixels, lite0_embedder):
    plan = plan_inference("openvino-bf16")
    bf16 = ImageEmbedder("efficientnet_lite0", runtime="openvino-bf16").fit()
    assert bf16.runtime_ == f"openvino {plan.precision}"  # float32 on a CPU without bfloat16 units
    reference = lite0_embedder.embed_arrays(pixels)
    vectors = bf16.embed_arrays(pixels)
    cosines = (vectors * reference).sum(axis=1)
    assert cosines.min() > 0.995, cosines
    np.testing.assert_array_equal(np.argmax(vectors @ reference.T, axis=1), np.arange(len(PHOTOS)))
    same_folder = bf16.identity().folder == lite0_embedder.identity().folder
    assert same_folder == (plan.precision == "f32")


def _embed_in_child(cache) -> dict:
    code = (
        "import json, sys, numpy as np\n"
        "from recommender.features.embedders import ImageEmbedder\n"
        "from recommender.features.images import load_for_model\n"
        f"x = np.stack([load_for_model({str(DEMO_DIR / 'images' / PHOTOS[0])!r}, 224)])\n"
        "e = ImageEmbedder('efficientnet_lite0', runtime='openvino').fit()\n"
        "print(json.dumps({'tf': 'tensorflow' in sys.modules, 'v': e.embed_arrays(x)[0].tolist()}))\n")
    env = {**os.environ, "RECOMMENDER_MODEL_CACHE": str(cache)}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@needs_openvino
def test_the_model_is_converted_in_a_child_and_no_start_imports_tensorflow(tmp_path):
    first = _embed_in_child(tmp_path / "models")  # converts (in a child of its own) and caches
    (entry,) = (tmp_path / "models" / "openvino").iterdir()
    assert sorted(p.name for p in entry.iterdir()) == ["manifest.json", "model.bin", "model.xml"]
    again = _embed_in_child(tmp_path / "models")  # reads the cached model
    assert not first["tf"] and not again["tf"]  # 3-5 s and ~1 GB of TensorFlow kept out of the process
    np.testing.assert_array_equal(first["v"], again["v"])


@needs_openvino
@pytest.mark.parametrize("damage", ["flip-a-weight", "truncate-graph", "no-manifest"])
def test_a_damaged_cached_model_is_rebuilt_never_used(pixels, model_cache, damage):
    fresh = ImageEmbedder("efficientnet_lite0", runtime="openvino").fit()
    expected = fresh.embed_arrays(pixels[:2])
    (entry,) = (model_cache / "openvino").iterdir()
    assert _read_cached_ir(entry) is not None
    if damage == "flip-a-weight":
        data = bytearray((entry / "model.bin").read_bytes())
        data[len(data) // 2] ^= 0x40
        (entry / "model.bin").write_bytes(bytes(data))
    elif damage == "truncate-graph":
        (entry / "model.xml").write_bytes((entry / "model.xml").read_bytes()[:500])
    else:
        (entry / "manifest.json").unlink()
    assert _read_cached_ir(entry) is None  # what fit() sees: not used
    again = ImageEmbedder("efficientnet_lite0", runtime="openvino").fit()
    np.testing.assert_array_equal(again.embed_arrays(pixels[:2]), expected)
    assert _read_cached_ir(entry) is not None  # converted again and put back whole
    assert set(json.loads((entry / "manifest.json").read_text())) == {"model.xml", "model.bin"}


@needs_openvino
def test_an_unwritable_model_cache_still_embeds(pixels, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("RECOMMENDER_MODEL_CACHE", str(blocker / "models"))
    vectors = ImageEmbedder("efficientnet_lite0", runtime="openvino").fit().embed_arrays(pixels[:2])
    assert vectors.shape == (2, 1280) and np.isfinite(vectors).all()


def test_unknown_runtime_is_one_line(demo_catalog, tmp_path):
    expected = "image runtime must be one of auto, openvino, openvino-bf16, openvino-mixed, tensorflow, got 'cuda'"
    with pytest.raises(RecommenderError, match=expected):
        HybridRecommender(image_runtime="cuda", cache_dir=tmp_path).fit(demo_catalog)


def test_the_conversion_child_builds_image_embedders_only(capsys):
    from recommender.features.inference import _child_main

    assert _child_main("os:system", "{}") == 2
    assert _child_main("recommender.features.inference:nothing", "{}") == 2
    assert "not an image embedder" in capsys.readouterr().err


@needs_openvino
def test_the_graph_mirrors_each_image_exactly_as_numpy_does(pixels, lite0_embedder):
    """flip-TTA on OpenVINO: the second compilation reverses the width axis inside the graph (no numpy copy of the
    batch); its two views per image are the plain network's outputs for the image and for ``x[:, :, ::-1]``."""
    from recommender.features.postprocess import mirror_mean

    forward = lite0_embedder._forward
    both = forward.with_mirror(pixels)
    assert both.shape == (len(pixels), 2, lite0_embedder.feature_dim_)
    np.testing.assert_allclose(both[:, 0], forward(pixels), atol=1e-6)
    np.testing.assert_allclose(both[:, 1], forward(np.ascontiguousarray(pixels[:, :, ::-1])), atol=1e-6)
    assert not np.allclose(both[:, 0], both[:, 1], atol=1e-3)  # an asymmetric photo: the views differ
    flipped = ImageEmbedder("efficientnet_lite0", flip_tta=True).fit()
    np.testing.assert_allclose(flipped.embed_arrays(pixels), mirror_mean(both[:, 0], both[:, 1]), atol=1e-6)


@needs_openvino
def test_a_model_cut_at_a_clean_cut_composes_back_to_itself():
    """A residual block: the tensors inside it are not cuts (the skip connection reads past them); the block's
    input and output are. Head then tail gives the whole model's output."""
    import openvino as ov
    import openvino.opset13 as ops

    from recommender.features.graph_split import clean_cuts, split_model

    rng = np.random.default_rng(0)

    def conv(x, c_in, c_out):
        return ops.convolution(x, ops.constant(rng.normal(size=(c_out, c_in, 1, 1)).astype(np.float32)),
                               [1, 1], [0, 0], [0, 0], [1, 1])

    x = ops.parameter([1, 3, 8, 8], np.float32, name="x")
    stem = ops.relu(conv(x, 3, 4))
    inner = ops.relu(conv(stem, 4, 4))
    block = ops.add(conv(inner, 4, 4), stem)
    model = ov.Model([ops.result(conv(block, 4, 2))], [x], "toy")
    order = [op.get_name() for op in model.get_ordered_ops()]
    cuts = {order[i] for i in clean_cuts(model)}
    assert stem.get_name() in cuts and block.get_name() in cuts
    assert inner.get_name() not in cuts  # the skip connection still reads ``stem`` after it
    image = rng.normal(size=(1, 3, 8, 8)).astype(np.float32)

    def run(m, data):  # float32 said explicitly: on CPUs with bfloat16 units OpenVINO's default is bfloat16
        return ov.Core().compile_model(m, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(data)[0]

    whole = run(model, image)
    for fraction in (0.0, 0.5, 0.99):
        head, tail = split_model(model, fraction)
        np.testing.assert_allclose(run(tail, run(head, image)), whole, rtol=1e-5, atol=1e-6)


@needs_openvino
def test_mixed_precision_is_closer_to_float32_than_bfloat16_and_keeps_its_own_cache(pixels, lite0_embedder):
    plan = plan_inference("openvino-mixed")
    if plan.precision != "mixed":
        pytest.skip("this CPU has no bfloat16 units: openvino-mixed runs float32")
    params = {"backbone": "efficientnet_lite0", "flip_tta": True, "semantic": 0.5}
    reference = ImageEmbedder(**params).fit().embed_arrays(pixels)
    mixed = ImageEmbedder(**params, runtime="openvino-mixed").fit()
    assert mixed.runtime_ == "openvino mixed"
    bf16 = ImageEmbedder(**params, runtime="openvino-bf16").fit().embed_arrays(pixels)
    off_mixed = 1 - (mixed.embed_arrays(pixels) * reference).sum(axis=1)
    off_bf16 = 1 - (bf16 * reference).sum(axis=1)
    assert 0 < off_mixed.mean() < off_bf16.mean() and off_mixed.max() < 1e-3, (off_mixed, off_bf16)
    runtimes = ("auto", "openvino-bf16", "openvino-mixed")
    assert len({ImageEmbedder(**params, runtime=r).identity().folder for r in runtimes}) == 3
