"""``build --engine ray`` on a local Ray (2 CPUs): same vectors as the local build, shared store, retries.

Skips where the optional ``ray[data]`` is absent, but fails in CI (``CI=true``), where .ci/run installs
requirements-ray.txt. Each build starts model actors (TensorFlow in each), so this module takes about
a minute on 2 cores; the retry tests use the model-free colour embedder.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from recommender import HybridRecommender, load_catalog
from recommender.features.embedders import ColourEmbedder, ImageEmbedder
from recommender.store.artifacts import ArtifactStore
from recommender.store.build import build_embeddings, image_hashes

if importlib.util.find_spec("ray") is None or importlib.util.find_spec("ray.data") is None:
    reason = "ray[data] is not installed (pip install -r requirements-ray.txt)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the Ray build tests: {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)

import ray  # noqa: E402

from recommender.store.ray_build import RayBuildError, build_with_ray  # noqa: E402

BACKBONE = "efficientnet_lite0"


class FailOnceEmbedder(ColourEmbedder):
    """Raises in the first batch any actor embeds (once per marker file, across processes).

    A colour histogram rather than the CNN: the retry logic is the same, and no TensorFlow loads.
    """

    marker = ""

    def embed_arrays(self, pixels: np.ndarray) -> np.ndarray:
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return super().embed_arrays(pixels)
        os.close(fd)
        raise RuntimeError("injected worker failure")


class AlwaysFailEmbedder(ColourEmbedder):
    def embed_arrays(self, pixels: np.ndarray) -> np.ndarray:
        raise RuntimeError("injected permanent failure")


@pytest.fixture(scope="module")
def local_ray():
    # The test classes above live in a module Ray's workers cannot import: ship them by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=256 << 20)
    yield
    ray.shutdown()


def demo_embedder() -> ImageEmbedder:
    """The image model exactly as the recommender configures it (so the store folder is the same)."""
    return HybridRecommender(backbone=BACKBONE)._image_embedder(BACKBONE)


def stored_vectors(cache: Path, catalog) -> np.ndarray:
    ident = demo_embedder().identity()
    stored = ArtifactStore(cache).load(ident.folder, ident.name, ident.preprocess, ident.weights)
    return np.stack([stored.vectors[h] for h in image_hashes(catalog)])


def test_bad_settings_and_addresses_get_one_line_errors(small_catalog_dir):
    # First in this module: Ray is not running yet, so the address is really tried.
    catalog = load_catalog(small_catalog_dir / "catalog.csv")
    with pytest.raises(RayBuildError, match="at least"):
        build_with_ray(catalog, demo_embedder(), num_actors=0)
    with pytest.raises(RayBuildError, match="cannot start or reach Ray at not-an-address"):
        build_with_ray(catalog, demo_embedder(), address="not-an-address")
    assert not ray.is_initialized()


def test_ray_build_equals_the_local_build_and_a_rerun_embeds_nothing(local_ray, demo_recommender, tmp_path):
    catalog = demo_recommender.catalog_
    seen = []
    report = build_with_ray(catalog, demo_embedder(), cache_dir=tmp_path, progress=lambda d, t: seen.append((d, t)))
    assert report.embedded == len(catalog) == 89 and report.reused == 0 and not report.skipped
    # Products sharing one picture are embedded once: progress counts distinct images.
    distinct = len(set(image_hashes(catalog)))
    assert seen[-1] == (distinct, distinct) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    # demo_recommender embedded the same images locally (its own cache): the vectors agree.
    np.testing.assert_allclose(stored_vectors(tmp_path, catalog), demo_recommender.raw_image_vectors_, atol=1e-4)

    again = build_with_ray(catalog, demo_embedder(), cache_dir=tmp_path)
    assert again.embedded == 0 and again.reused == len(catalog)
    # ...and the local build reads what Ray wrote: nothing left to embed, same vectors.
    local = HybridRecommender(backbone=BACKBONE, cache_dir=tmp_path).fit(catalog)
    assert local.build_report_.embedded == 0 and local.build_report_.reused == len(catalog)
    np.testing.assert_allclose(local.image_vectors_, demo_recommender.image_vectors_, atol=1e-4)


def test_a_failed_batch_is_retried_not_lost_or_duplicated(local_ray, small_catalog_dir, tmp_path):
    (small_catalog_dir / "images" / "broken.jpg").write_bytes(b"not an image")
    catalog = load_catalog(small_catalog_dir / "catalog.csv")
    items = catalog.items.copy()
    items.loc[len(items)] = {**items.iloc[0].to_dict(), "id": "broken", "image": "images/broken.jpg"}
    items.to_csv(small_catalog_dir / "catalog.csv", index=False)
    catalog = load_catalog(small_catalog_dir / "catalog.csv")
    embedder = FailOnceEmbedder()
    embedder.marker = str(tmp_path / "failed-once")
    report = build_with_ray(catalog, embedder, cache_dir=tmp_path / "ray", batch_size=2, max_retries=2)
    assert Path(embedder.marker).exists(), "the injected failure did not happen"
    assert report.embedded == 6 and [p.id for p in report.skipped] == ["broken"]
    # Every vector is there, once, and equals the local build's.
    local, has_image, _, _ = build_embeddings(catalog, ColourEmbedder(), tmp_path / "local")
    ident = ColourEmbedder().identity()
    stored = ArtifactStore(tmp_path / "ray").load(ident.folder, ident.name, ident.preprocess, ident.weights)
    assert len(stored.vectors) == 6 and list(stored.failures.values()) == [report.skipped[0].reason]
    ray_vectors = np.stack([stored.vectors[h] for h in image_hashes(catalog)[:6]])
    np.testing.assert_allclose(ray_vectors, local[has_image], atol=1e-6)
    # The unreadable image is remembered as a failure, like the local build does: not retried next time.
    again = build_with_ray(catalog, AlwaysFailEmbedder(), cache_dir=tmp_path / "ray")
    assert again.embedded == 0 and again.reused == 6 and [p.id for p in again.skipped] == ["broken"]


def test_a_batch_failing_every_time_stops_the_build_and_keeps_the_store(local_ray, small_catalog_dir, tmp_path):
    catalog = load_catalog(small_catalog_dir / "catalog.csv")
    cache = tmp_path / "cache"
    with pytest.raises(RayBuildError, match="stopped after 0 of 6"):
        build_with_ray(catalog, AlwaysFailEmbedder(), cache_dir=cache, max_retries=1)
    assert not list(cache.glob("*/manifest.json"))  # nothing half-written
