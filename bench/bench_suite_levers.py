"""Every image lever on the benchmark suite: one row per setting, each a paired difference to the baseline.

Rows change one thing at a time from the baseline (today's defaults), then combinations. Each row runs
the whole suite (demo loo / multi-view / uploads, grocery val photo->product, Fashion-MNIST slice) end to
end through ``HybridRecommender``; the only shortcut is that an uploaded query photo is embedded once per
image configuration and reused by the rows that differ only after embedding (scores, not vectors).

Lite1/Lite2 rows give the classifier-head share (``semantic``) to every Lite backbone, which the façade
today gives to Lite0 only (``has_classifier_head`` in features/embedders.py is the test to use).

Run from the repo root (grocery data in ../shared/data/grocery)::

    python bench/bench_suite_levers.py [--rows baseline,colour0,...] [--fashion slice|full|none] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from recommender import recommender as facade  # noqa: E402
from recommender.evaluation.metrics import paired_bootstrap_diff  # noqa: E402
from recommender.evaluation.suite import compare, run_suite, summary_markdown  # noqa: E402
from recommender.features.embedders import (  # noqa: E402
    DEFAULT_COLOUR_QUERY_CROP,
    ColourEmbedder,
    ImageEmbedder,
    has_classifier_head,
)
from recommender.features.images import open_image  # noqa: E402

BASE = {"backbone": "efficientnet_lite0"}
COLOUR_CROP = DEFAULT_COLOUR_QUERY_CROP  # the façade's: an upload's colour on its centre 60% (session 16)
# name -> (HybridRecommender params on top of BASE, query side: (image centre crops, colour crop))
ROWS: dict[str, tuple[dict, tuple[tuple[float, ...], float]]] = {
    "baseline": ({}, ((), COLOUR_CROP)),
    "features-gap": ({"features": "gap"}, ((), COLOUR_CROP)),
    # TensorFlow float32 vs the default runtime (OpenVINO; bfloat16 on CPUs with bfloat16 units)
    "runtime-tensorflow": ({"image_runtime": "tensorflow"}, ((), COLOUR_CROP)),
    "runtime-bf16": ({"image_runtime": "openvino-bf16"}, ((), COLOUR_CROP)),
    "runtime-mixed": ({"image_runtime": "openvino-mixed"}, ((), COLOUR_CROP)),  # float32 first half, bfloat16 after
    "features-grid": ({"features": "grid"}, ((), COLOUR_CROP)),
    "adapter-off": ({"adapter": "off"}, ((), COLOUR_CROP)),
    "no-flip-adapter-off": ({"flip_tta": False, "adapter": "off"}, ((), COLOUR_CROP)),
    "colour0": ({"photo_colour_weight": 0.0}, ((), COLOUR_CROP)),
    "colour0.1": ({"photo_colour_weight": 0.1}, ((), COLOUR_CROP)),
    "no-flip": ({"flip_tta": False}, ((), COLOUR_CROP)),
    "flip": ({"flip_tta": True}, ((), COLOUR_CROP)),  # flip-TTA, the default until session 17
    "semantic0": ({"semantic": 0.0}, ((), COLOUR_CROP)),
    "semantic0.3": ({"semantic": 0.3}, ((), COLOUR_CROP)),
    "dba0": ({"dba_k": 0}, ((), COLOUR_CROP)),
    "w0.8": ({"weight": 0.8}, ((), COLOUR_CROP)),
    "lite1": ({"backbone": "efficientnet_lite1"}, ((), COLOUR_CROP)),
    "lite2": ({"backbone": "efficientnet_lite2"}, ((), COLOUR_CROP)),
    "lite1-no-flip": ({"backbone": "efficientnet_lite1", "flip_tta": False}, ((), COLOUR_CROP)),
    "lite2-no-flip": ({"backbone": "efficientnet_lite2", "flip_tta": False}, ((), COLOUR_CROP)),
    "no-flip-crop0.7": ({"flip_tta": False}, ((0.7,), COLOUR_CROP)),
    "no-flip-colour-crop0.6": ({"flip_tta": False}, ((), 0.6)),
    "crop0.7": ({}, ((0.7,), COLOUR_CROP)),
    "crops0.5+0.75": ({}, ((0.5, 0.75), 1.0)),
    "colour-crop0.6": ({}, ((), 0.6)),
    "colour-whole": ({}, ((), 1.0)),  # an upload's colour on the whole photo: the default before session 16
    "text-off": ({"text_embedding": "off"}, ((), COLOUR_CROP)),
    "text-minilm": ({"text_embedding": "minilm"}, ((), COLOUR_CROP)),
    # query-side expansion (pseudo-relevance feedback, ranking/expansion.py): item queries; -photos also uploads
    "qe-off": ({"qe_k": 0}, ((), COLOUR_CROP)),  # the pipeline before query expansion became the default (qe_k=2)
    "qe1": ({"qe_k": 1}, ((), COLOUR_CROP)),
    "qe1-a3": ({"qe_k": 1, "qe_alpha": 3.0}, ((), COLOUR_CROP)),
    "qe2": ({"qe_k": 2}, ((), COLOUR_CROP)),
    "qe3": ({"qe_k": 3}, ((), COLOUR_CROP)),
    "qe2-a3": ({"qe_k": 2, "qe_alpha": 3.0}, ((), COLOUR_CROP)),
    "qe3-a3": ({"qe_k": 3, "qe_alpha": 3.0}, ((), COLOUR_CROP)),
    "qe2-photos": ({"qe_k": 2, "qe_photos": True}, ((), COLOUR_CROP)),
    "qe3-photos": ({"qe_k": 3, "qe_photos": True}, ((), COLOUR_CROP)),
    # issue 12, demo P@5 >= .75: self-dominant DBA (catalog side, neighbours through the index) on top of
    # query expansion (qe_k="auto" = 2 on these exactly scanned catalogs); names: dba<k>-a<alpha>-m<mix>
    "dba2-a3-m0.5": ({"dba_k": 2, "dba_alpha": 3.0, "dba_mix": 0.5}, ((), COLOUR_CROP)),
    "dba2-a3-m0.3": ({"dba_k": 2, "dba_alpha": 3.0, "dba_mix": 0.3}, ((), COLOUR_CROP)),
    "dba1-a3-m0.5": ({"dba_k": 1, "dba_alpha": 3.0, "dba_mix": 0.5}, ((), COLOUR_CROP)),
    "dba1-a3-m0.3": ({"dba_k": 1, "dba_alpha": 3.0, "dba_mix": 0.3}, ((), COLOUR_CROP)),
    "dba2-a0-m0.5": ({"dba_k": 2, "dba_alpha": 0.0, "dba_mix": 0.5}, ((), COLOUR_CROP)),  # neighbours alike, not cos**3
    "dba2-a0-m0.9": ({"dba_k": 2, "dba_alpha": 0.0, "dba_mix": 0.9}, ((), COLOUR_CROP)),
    "w0.6": ({"weight": 0.6}, ((), COLOUR_CROP)),
    "w0.5": ({"weight": 0.5}, ((), COLOUR_CROP)),
    "w0.4": ({"weight": 0.4}, ((), COLOUR_CROP)),
    # since session 18 `weight` is the item queries' (0.5) and `photo_weight` the uploads' (0.7)
    "item-w0.7": ({"weight": 0.7}, ((), COLOUR_CROP)),  # the item weight before session 18
    "photo-w0.6": ({"photo_weight": 0.6}, ((), COLOUR_CROP)),
    "photo-w0.8": ({"photo_weight": 0.8}, ((), COLOUR_CROP)),
    # variants of the expansion's feedback (ExpansionMixin class attributes, EXPANSION_ATTRS; defaults = today's)
    "qe-decay0.5": ({"qe_decay": 0.5}, ((), COLOUR_CROP)),  # rank-weighted: the 2nd feedback row weighs half
    "qe-mass0.5": ({"qe_side_mass": (0.5, 0.5)}, ((), COLOUR_CROP)),  # the query keeps half, not 1/3
    "qe-mass-img0": ({"qe_side_mass": (0.0, 1.0)}, ((), COLOUR_CROP)),  # only the metadata row is expanded
    "qe-mass-meta0": ({"qe_side_mass": (1.0, 0.0)}, ((), COLOUR_CROP)),  # only the image vector is expanded
    "qe-mass-meta2": ({"qe_side_mass": (1.0, 2.0)}, ((), COLOUR_CROP)),  # the metadata row's feedback counts double
    # an item query's weight moved towards the side whose best match stands out of its standout_k + 1 best
    # (ranking/hybrid.standout_weight; the default since session 18 with standout_k 5)
    "adaptive-off": ({"adaptive_weight": False}, ((), COLOUR_CROP)),
    "standout3": ({"standout_k": 3}, ((), COLOUR_CROP)),
    "standout10": ({"standout_k": 10}, ((), COLOUR_CROP)),
}
#: Row parameters that are ExpansionMixin class attributes rather than HybridRecommender arguments: set on the
#: class for that row only (ranking/expansion.py).
EXPANSION_ATTRS = ("qe_decay", "qe_side_mass", "standout_k")
#: Non-headline figures also compared per query (protocol, method, metric): grocery R@5 is issue 12's second target.
EXTRA = [("grocery/val", "default", "R@5")]


#: Per row: ColourEmbedder arguments (catalog side and uploads alike), from --combo '{"colour": {...}}'.
COLOUR_ARGS: dict[str, dict] = {}
#: Per row: ImageEmbedder arguments (catalog side and uploads alike), from --combo '{"embedder": {...}}',
#: e.g. {"semantic_temperature": 1.0}; a new setting gets its own cache folder.
EMBEDDER_ARGS: dict[str, dict] = {}


def _install_query_side(crops: tuple[float, ...], colour_crop: float, memo: dict, colour_args: dict,
                        embedder_args: dict | None = None) -> None:
    """Point the façade at embedders with these query-side settings, and memoise upload vectors."""
    original_image_embedder = facade.HybridRecommender._image_embedder

    def image_embedder(self, backbone: str, features: str | None = None) -> ImageEmbedder:
        emb = original_image_embedder(self, backbone, features)
        name = emb.identity().name
        if has_classifier_head(name) and not emb.semantic and self.semantic:
            emb.set_params(semantic=self.semantic)  # see the module docstring
        return emb.set_params(query_crops=crops, **(embedder_args or {}))

    def embed_upload(self, image):
        image_key = ("image", self.embedder.identity().folder, crops, str(image))
        colour_key = ("colour", colour_crop, json.dumps(colour_args, sort_keys=True), str(image))
        if image_key not in memo or colour_key not in memo:
            img = open_image(image)
            if image_key not in memo:
                memo[image_key] = self.embedder.embed_query(img)
            if colour_key not in memo:
                memo[colour_key] = self._colour_embedder.embed_query(img)
        vec = memo[image_key]
        if getattr(self, "adapter_", None) is not None:  # as querying._embed_upload does
            vec = self.adapter_.transform_queries(vec[None])[0]
        return vec, memo[colour_key]

    facade.HybridRecommender._image_embedder = image_embedder
    facade.HybridRecommender._embed_upload = embed_upload
    facade.ColourEmbedder = partial(ColourEmbedder, query_crop=colour_crop, **colour_args)
    return original_image_embedder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, from: {', '.join(ROWS)}")
    ap.add_argument("--combo", action="append", default=[], metavar="NAME=JSON",
                    help='extra row, e.g. combo=\'{"params": {"photo_colour_weight": 0}, "crops": [0.7]}\'')
    ap.add_argument("--fashion", choices=["slice", "full", "none"], default="slice")
    ap.add_argument("--cache", type=Path, default=Path(".cache/suite"))
    ap.add_argument("--out", type=Path, help="write every row's suite JSON + comparisons here")
    args = ap.parse_args()

    rows = {name: ROWS[name] for name in args.rows.split(",") if name}
    for spec in args.combo:
        name, _, js = spec.partition("=")
        d = json.loads(js)
        rows[name] = (d.get("params", {}), (tuple(d.get("crops", ())), float(d.get("colour_crop", COLOUR_CROP))))
        if d.get("colour"):  # ColourEmbedder arguments for this row (e.g. {"centre_sigma": 0.5})
            COLOUR_ARGS[name] = d["colour"]
        if d.get("embedder"):  # ImageEmbedder arguments for this row (e.g. {"semantic_temperature": 1.0})
            EMBEDDER_ARGS[name] = d["embedder"]
    memo: dict = {}
    original = facade.HybridRecommender._image_embedder
    original_upload = facade.HybridRecommender._embed_upload
    results, baseline, baseline_extra = {}, None, {}
    table = ["| row | " + " | ".join(["objective"]) + " | per protocol: mean (diff to baseline [95% CI]) |",
             "|---|---|---|"]
    for name, (params, (crops, colour_crop)) in rows.items():
        facade.HybridRecommender._image_embedder = original
        facade.HybridRecommender._embed_upload = original_upload
        _install_query_side(crops, colour_crop, memo, COLOUR_ARGS.get(name, {}), EMBEDDER_ARGS.get(name, {}))
        for attr in EXPANSION_ATTRS:  # back to the class default, then this row's value
            if attr in vars(facade.HybridRecommender):
                delattr(facade.HybridRecommender, attr)
        for attr in set(params) & set(EXPANSION_ATTRS):
            value = params[attr]
            setattr(facade.HybridRecommender, attr, tuple(value) if isinstance(value, list) else value)
        t0 = time.perf_counter()
        suite = run_suite({**BASE, **{k: v for k, v in params.items() if k not in EXPANSION_ATTRS}},
                          cache_root=args.cache,
                          fashion=None if args.fashion == "none" else args.fashion,
                          log=lambda m: print(m, file=sys.stderr))
        elapsed = time.perf_counter() - t0
        print(summary_markdown(suite, title=f"row {name} ({elapsed:.0f} s)"), flush=True)
        if baseline is None:
            baseline = suite
        diffs = compare(suite, baseline)
        cells = []
        for row, d in zip(suite.summary_rows(), diffs, strict=True):
            star = "*" if d["significant"] else ""
            cells.append(f"{row['protocol']} {row['mean']:.3f} ({d['mean_diff']:+.3f} [{d['lo']:+.3f}, "
                         f"{d['hi']:+.3f}]{star})")
        table.append(f"| {name} | {suite.objective:.4f} | " + "; ".join(cells) + " |")
        print("\n".join(table), flush=True)
        extra = {f"{p} {m} {k}": suite.results[p]["per_query"][m][k] for p, m, k in EXTRA
                 if p in suite.results and "per_query" in suite.results[p]}
        extra_diffs = {key: paired_bootstrap_diff(v, baseline_extra[key]) for key, v in extra.items()
                       if key in baseline_extra}
        if not baseline_extra:
            baseline_extra.update(extra)
        for key, v in extra.items():
            d = extra_diffs.get(key, {"mean_diff": 0.0, "lo": 0.0, "hi": 0.0, "significant": False})
            print(f"  {name} {key}: {sum(v) / len(v):.3f} ({d['mean_diff']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]"
                  f"{'*' if d['significant'] else ''})", flush=True)
        results[name] = {"params": params, "query_crops": list(crops), "colour_crop": colour_crop,
                         "seconds": round(elapsed, 1), "suite": suite.to_dict(), "vs_baseline": diffs,
                         "extra_per_query": extra, "extra_vs_baseline": extra_diffs}
        if args.out:
            args.out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print("\nFinal table (first row = baseline; * = paired 95% interval excludes 0):")
    print("\n".join(table))


if __name__ == "__main__":
    main()
