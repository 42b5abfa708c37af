import io
import json
import os
import struct
import subprocess
import sys

import pytest
from PIL import Image

from recommender.catalog.loader import DEMO_CATALOG
from recommender.cli import main
from recommender.features.inference import plan_inference

REPO = DEMO_CATALOG.parents[2]


def test_help_is_fast_and_does_not_import_tensorflow():
    code = ("import sys; from recommender.cli import build_parser; build_parser(); "
            "print('tensorflow' in sys.modules, 'sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
    helped = subprocess.run([sys.executable, "-m", "recommender", "--help"], cwd=REPO, capture_output=True, text=True)
    assert helped.returncode == 0 and "recommend" in helped.stdout and "evaluate" in helped.stdout


def test_build_then_info(small_catalog_dir, tmp_path, capsys, lite0_embedder):
    cat = str(small_catalog_dir / "catalog.csv")
    cache = str(tmp_path / "cache")
    assert main(["build", "--catalog", cat, "--cache", cache, "--backbone", "efficientnet_lite0"]) == 0
    out = capsys.readouterr().out
    assert "6 products: 6 embedded, 0 reused" in out
    assert main(["build", "--catalog", cat, "--cache", cache, "--backbone", "efficientnet_lite0"]) == 0
    assert "0 embedded, 6 reused" in capsys.readouterr().out
    assert main(["info", "--catalog", cat, "--cache", cache, "--backbone", "efficientnet_lite0"]) == 0
    assert "6/6 catalog images cached" in capsys.readouterr().out
    # Another runtime's vectors are another cache: nothing of it built yet.
    assert main(["info", "--catalog", cat, "--cache", cache, "--backbone", "efficientnet_lite0",
                 "--image-runtime", "openvino-mixed"]) == 0
    out = capsys.readouterr().out
    assert ("cache: none yet" in out) == plan_inference("openvino-mixed").tag.startswith("+"), out


def test_recommend_json(small_catalog_dir, tmp_path, capsys):
    args = ["recommend", "--catalog", str(small_catalog_dir / "catalog.csv"), "--cache", str(tmp_path / "c"),
            "--backbone", "efficientnet_lite0", "--item", "ultraboost-running-shoe", "--k", "3", "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["backbone"] == "efficientnet_lite0" and len(out["results"]) == 3
    assert all(r["id"] != "ultraboost-running-shoe" for r in out["results"])


def test_recommend_text_with_filters_prints_a_table(small_catalog_dir, tmp_path, capsys):
    args = ["recommend", "--catalog", str(small_catalog_dir / "catalog.csv"), "--cache", str(tmp_path / "c"),
            "--backbone", "efficientnet_lite0", "--text", "wine", "--category", "Groceries"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "red-wine" in out and "laptop" not in out


def test_recommend_says_when_even_the_best_match_is_weak(demo_recommender, capsys):
    """Issue 9.3: the 'no good match' state reaches the terminal, not only the app and --json."""
    common = ["recommend", "--cache", str(demo_recommender.cache_dir), "--backbone", "efficientnet_lite0"]
    # (Was "cheap nike shoes under 50": with the text embedding its best match scores .36, not poor.)
    assert main([*common, "--text", "nike garden hose under 50"]) == 0
    weak = capsys.readouterr().out
    assert "no good match: even the best result scores below 0.25" in weak and "hand-trowel" in weak
    assert main([*common, "--text", "wireless mouse"]) == 0
    strong = capsys.readouterr().out
    assert "cordless-mouse" in strong and "no good match" not in strong


def test_evaluate_passes_the_opt_in_levers(demo_recommender, tmp_path, capsys):
    """--label-projection and --text-weighting reach the recommender the evaluation fits."""
    out_json = tmp_path / "eval.json"
    args = ["evaluate", "--cache", str(demo_recommender.cache_dir), "--backbone", "efficientnet_lite0",
            "--label", "sub_category", "--protocol", "loo", "--k", "1", "5", "--weights", "0.7",
            "--label-projection", "sub_category", "--projection-mix", "0.3", "--text-weighting", "bm25",
            "--out", str(out_json)]
    assert main(args) == 0
    loo = json.loads(out_json.read_text())["leave_one_out"]
    assert loo["image_pipeline"].endswith("label projection 'sub_category' 0.3 + photo colour 0.3")
    assert loo["n_queries"] == 89 and set(loo["results"]) == {"image", "metadata", "photo", "hybrid_w0.7"}
    assert f"full results: {out_json}" in capsys.readouterr().out


def test_evaluate_prints_a_summary_table_and_json_on_request(demo_recommender, tmp_path, capsys):
    args = ["evaluate", "--cache", str(demo_recommender.cache_dir), "--backbone", "efficientnet_lite0",
            "--label", "sub_category", "--protocol", "loo", "--k", "1", "5", "--weights", "0.5", "0.7"]
    assert main(args) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "Leave-one-out by sub_category: 89 queries over 89 products (0 skipped)"
    header = next(line for line in lines if line.startswith("method"))
    assert header.split() == ["method", "P@1", "P@5", "nDCG@5", "MAP@5"]
    rows = {line.split("  ")[0].strip(): line for line in lines if line.startswith(("image only", "hybrid w="))}
    # " *" marks the best weight (w=0.7 words-only, w=0.5 with the text embedding)
    assert {k.removesuffix(" *") for k in rows} >= {"image only", "hybrid w=0.5", "hybrid w=0.7"}
    assert any(k.endswith("*") for k in rows)
    image_row = rows.get("image only", rows.get("image only *", ""))
    assert "[" in image_row and "{" not in out  # means with intervals, no JSON
    assert len(lines) < 40 and "--json" in lines[-1]
    # --json: the full results on stdout instead, the same as --out writes.
    out_json = tmp_path / "eval.json"
    assert main([*args, "--json", "--out", str(out_json)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out_json.read_text())
    assert printed["leave_one_out"]["n_queries"] == 89 and "per_class" in printed["leave_one_out"]


def test_label_projection_on_an_unknown_column_is_a_message(small_catalog_dir, tmp_path, capsys):
    args = ["recommend", "--catalog", str(small_catalog_dir / "catalog.csv"), "--cache", str(tmp_path / "c"),
            "--backbone", "efficientnet_lite0", "--item", "laptop", "--label-projection", "genre"]
    assert main(args) == 2
    assert "column 'genre' is not in the catalog" in capsys.readouterr().err


def test_a_negative_query_budget_is_refused_before_the_fit(tmp_path, capsys):
    args = ["evaluate", "--cache", str(tmp_path / "c"), "--label", "sub_category", "--protocol", "loo",
            "--max-queries", "-1"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "max_queries must be at least 1, got -1" in err, err
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize(
    ("csv", "message"),
    [("id,name,price\na,A,1\n", "missing required column(s): image"),
     ("id,name,image\na,A,a.jpg\na,B,b.jpg\n", "duplicate id(s): a")],
)
def test_bad_catalog_is_a_message_not_a_traceback(tmp_path, capsys, csv, message):
    path = tmp_path / "bad.csv"
    path.write_text(csv)
    assert main(["build", "--catalog", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_corrupt_image_is_reported_by_build(small_catalog_dir, tmp_path, capsys, lite0_embedder):
    (small_catalog_dir / "images" / "orchid.jpg").write_bytes(b"GIF89a broken")
    args = ["build", "--catalog", str(small_catalog_dir / "catalog.csv"), "--cache", str(tmp_path / "c"),
            "--backbone", "efficientnet_lite0"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "5 embedded" in out and "1 skipped" in out and "skipped orchid:" in out


def test_unknown_item_and_bad_image_exit_2(small_catalog_dir, tmp_path, capsys):
    base = ["recommend", "--catalog", str(small_catalog_dir / "catalog.csv"), "--cache", str(tmp_path / "c"),
            "--backbone", "efficientnet_lite0"]
    assert main([*base, "--item", "nope"]) == 2
    assert "no product with id 'nope'" in capsys.readouterr().err
    bad = tmp_path / "upload.png"
    bad.write_text("not an image")
    assert main([*base, "--image", str(bad)]) == 2
    assert "not an image" in capsys.readouterr().err


def test_image_commands_keep_tensorflow_noise_off_stderr(small_catalog_dir, tmp_path):
    """A cold build imports TensorFlow: no CUDA probe, oneDNN or absl preamble lines reach the terminal."""
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "RECOMMENDER_TF_LOGS")}
    cmd = [sys.executable, "-m", "recommender", "build", "--catalog", str(small_catalog_dir / "catalog.csv"),
           "--cache", str(tmp_path / "c"), "--backbone", "efficientnet_lite0"]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "6 embedded" in out.stdout
    for noise in ("absl::InitializeLog", "cuda", "cuInit", "oneDNN", "cpu_feature_guard"):
        assert noise not in out.stderr, out.stderr


def test_quiet_tensorflow_filter_keeps_real_errors(capfd):
    from recommender._quiet_tensorflow import filtered_stderr, is_noise

    noise = ["WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
             "I0000 00:00:1795618476.068434   13810 cudart_stub.cc:31] Could not find cuda drivers on your machine\n",
             "E0000 00:00:1795618424.169448   13154 cuda_platform.cc:52] failed call to cuInit: INTERNAL\n",
             "2025-09-17 14:44:05.157831: I external/local_xla/xla/tsl/cuda/cudart_stub.cc:32] Could not find\n"]
    real = ["E0000 00:00:1.0   1 op_kernel.cc:1] OOM when allocating tensor\n", "Traceback (most recent call last):\n"]
    assert all(is_noise(line) for line in noise) and not any(is_noise(line) for line in real)
    with filtered_stderr():
        for line in noise + real:
            os.write(2, line.encode())
    assert capfd.readouterr().err == "".join(real)


def _tiff(**save_args) -> bytes:
    buf = io.BytesIO()
    Image.open(DEMO_CATALOG.parent / "images" / "laptop.jpg").convert("RGB").resize((48, 36)).save(
        buf, "TIFF", **save_args)
    return buf.getvalue()


def _lzw_tiff_with_garbage_codes() -> bytes:
    """An LZW TIFF whose strip holds codes libtiff rejects: its error handler printed a line on fd 2."""
    data = _tiff(compression="tiff_lzw")
    return data[:100] + b"\xff" * 100 + data[200:]


def _tiff_with_tag(tag: int, value: int) -> bytes:
    """A plain TIFF with one inline SHORT/LONG tag of its IFD (Pillow writes it at offset 8) set to ``value``."""
    data = bytearray(_tiff())
    for entry in range(struct.unpack_from("<H", data, 8)[0]):
        if struct.unpack_from("<H", data, 10 + 12 * entry)[0] == tag:
            struct.pack_into("<I", data, 10 + 12 * entry + 8, value)
    return bytes(data)


BROKEN_TIFFS = {
    "lzw codes libtiff rejects": _lzw_tiff_with_garbage_codes,  # libtiff printed a line on fd 2
    "tag offset past the end": lambda: _tiff_with_tag(258, 0x7FFFFF00),  # Pillow warned "Truncated File Read"
    "8 samples per pixel": lambda: _tiff_with_tag(277, 8),  # Pillow logged an ERROR line
}


@pytest.mark.parametrize("case", [*BROKEN_TIFFS, "nan price bound"])
def test_bad_query_input_is_one_stderr_line_and_fails_before_the_fit(small_catalog_dir, tmp_path, case):
    """Issue 8's promise, exit 2 and exactly one line: no libtiff, Pillow warning or log line; no embedding first."""
    photo = tmp_path / "photo.tif"
    if case in BROKEN_TIFFS:
        photo.write_bytes(BROKEN_TIFFS[case]())
    query = ["--image", str(photo)] if case in BROKEN_TIFFS else ["--price-min", "nan", "--item", "laptop"]
    cache = tmp_path / "cache"
    run = subprocess.run([sys.executable, "-m", "recommender", "recommend", "--catalog",
                          str(small_catalog_dir / "catalog.csv"), "--cache", str(cache), *query],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and run.stderr.startswith("error: "), run.stderr
    assert not cache.exists()  # refused before the fit embedded the catalog


@pytest.mark.parametrize("argv", [["recommend", "--k", "abc"], ["recommend", "--item", "x", "--image", "y"],
                                  ["no-such-command"], ["evaluate", "--protocol", "nope"],
                                  ["build", "--image-runtime", "cuda"]])
def test_a_usage_mistake_is_one_line_not_the_usage_block(argv, capsys):
    """argparse's default prints a 20-line usage block before the error; the promise is one line, exit 2."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2
    assert err.count("\n") == 1 and "error: " in err and "--help" in err, err
