"""A build killed with SIGKILL at a random point resumes; two builds into one cache keep both.

The builds run in subprocesses over copies of the demo photos, embedded with the colour histogram
(the same build path as the CNN, without loading TensorFlow in every child).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from recommender.catalog.loader import load_catalog
from recommender.features.embedders import ColourEmbedder
from recommender.store.artifacts import MANIFEST, ArtifactStore
from recommender.store.build import build_embeddings
from tests.conftest import DEMO_DIR

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import sys
from recommender.catalog.loader import load_catalog
from recommender.features.embedders import ColourEmbedder
from recommender.store.build import build_embeddings

def progress(done, total):
    print(done, flush=True)

build_embeddings(load_catalog(sys.argv[1]), ColourEmbedder(batch_size=4), sys.argv[2], progress=progress,
                 checkpoint_every=int(sys.argv[3]), decode_workers=1)
print("finished", flush=True)
"""


def _catalog(folder: Path, n: int, tag: int) -> Path:
    """``n`` distinct small PNGs (demo photos, one pixel marking each copy) and their catalog."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = sorted((DEMO_DIR / "images").glob("*.jpg"))[:12]
    rows = []
    for i in range(n):
        img = Image.open(sources[i % len(sources)]).convert("RGB")
        img.thumbnail((128, 128))
        img.paste((tag % 256, (i * 37) % 256, (i * 91) % 256), (0, 0, 24, 24))  # distinct vectors too
        name = f"p{tag}-{i}.png"
        img.save(folder / name)
        rows.append({"id": f"p{tag}-{i}", "name": f"product {i}", "image": name})
    pd.DataFrame(rows).to_csv(folder / "catalog.csv", index=False)
    return folder / "catalog.csv"


def _child(catalog: Path, cache: Path, every: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", CHILD, str(catalog), str(cache), str(every)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sigkill_at_a_random_point_then_rebuild_reuses_finished_work(tmp_path, seed):
    n, every = 48, 8
    catalog_csv = _catalog(tmp_path / "shop", n, seed)
    cache = tmp_path / "cache"
    target = random.Random(seed).randrange(every + 1, n - 4)
    child = _child(catalog_csv, cache, every)
    done = 0
    for line in child.stdout:
        if line.strip().isdigit():
            done = int(line)
        if done >= target:
            child.send_signal(signal.SIGKILL)
            break
    child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL, child.stderr.read()
    # Every checkpoint before the progress line the parent saw is complete (progress follows it).
    saved = done // every * every

    catalog = load_catalog(catalog_csv)
    folder = ColourEmbedder().identity().folder
    (cache / folder / ".manifest.json.kill.tmp").write_bytes(b"{ half a manifest")  # as a kill mid-write leaves
    vectors, has_image, report, _ = build_embeddings(catalog, ColourEmbedder(), cache)
    assert report.reused >= saved and report.reused + report.embedded == n and has_image.all()
    fresh, _, _, _ = build_embeddings(catalog, ColourEmbedder(), tmp_path / "fresh-cache")
    np.testing.assert_array_equal(vectors, fresh)  # nothing corrupt was reused
    names = {p.name for p in (cache / folder).iterdir()}
    assert not [x for x in names if x.endswith(".tmp")]
    m = json.loads((cache / folder / MANIFEST).read_bytes())
    assert names == {".lock", MANIFEST, *(c["file"] for c in m["chunks"])}


def test_two_builds_into_one_cache_keep_both_sides(tmp_path):
    a = _catalog(tmp_path / "a", 32, 101)
    b = _catalog(tmp_path / "b", 32, 102)
    cache = tmp_path / "cache"
    children = [_child(a, cache, 4), _child(b, cache, 4)]
    for c in children:
        out, err = c.communicate(timeout=120)
        assert c.returncode == 0 and "finished" in out, err
    folder = ColourEmbedder().identity().folder
    ident = ColourEmbedder().identity()
    stored = ArtifactStore(cache).load(folder, ident.name, ident.preprocess, ident.weights)
    for csv in (a, b):
        _, has_image, report, _ = build_embeddings(load_catalog(csv), ColourEmbedder(), cache)
        assert (report.reused, report.embedded) == (32, 0) and has_image.all()
    assert len(stored.vectors) == 64
