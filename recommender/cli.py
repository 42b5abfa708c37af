"""``python -m recommender``: build, recommend, evaluate, info.

Only argparse and the standard library are imported at module level, so ``--help`` is instant;
each command imports what it needs.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import NoReturn

from recommender.errors import RecommenderError

BACKBONE_CHOICES = ["auto", "vgg16", "resnet50", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]


def _progress_bar(desc: str):
    from tqdm import tqdm

    bar = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=desc, unit="img", file=sys.stderr)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return update


def _catalog(args):
    from recommender.catalog.loader import load_catalog

    return load_catalog(args.catalog)


def cmd_build(args) -> int:
    from recommender.cli_scaleout import after_build, before_build
    from recommender.recommender import HybridRecommender
    from recommender.store.build import cache_required

    before_build(args)  # --engine ray

    # The same configuration `recommend` and the app use, so the cache it fills is the one they read.
    catalog = _catalog(args)
    with cache_required(catalog, args.cache):  # an unwritable cache fails here, before any embedding
        rec = HybridRecommender(backbone=args.backbone, cache_dir=args.cache, image_runtime=args.image_runtime).fit(
            catalog, progress=_progress_bar("embedding"))
    report = rec.build_report_
    print(f"backbone: {report.backbone} ({report.reason})")
    print(f"image pipeline: {rec.image_pipeline_description()}")
    print(rec.features_note_)
    print(rec.adapter_note_)
    print(report.summary())
    print(f"cache: {report.cache_dir}")
    for p in report.skipped:
        print(f"  skipped {p.id}: {p.reason} ({p.path})")
    after_build(args, rec)  # --index milvus
    return 0


def cmd_recommend(args) -> int:
    from recommender.ranking.hybrid import Filters
    from recommender.recommender import HybridRecommender

    # Bad filters or an unreadable photo fail before the fit, which can embed a whole catalog first.
    filters = Filters(category=args.category, sub_category=args.sub_category, brand=args.brand,
                      colour=args.colour, price_min=args.price_min, price_max=args.price_max)
    image = Path(args.image) if args.image else None
    if image is not None:
        from recommender.features.images import open_image

        open_image(image)  # ImageError now; recommend decodes it again (one photo: under 1 s at the pixel limit)
    rec = HybridRecommender(backbone=args.backbone, cache_dir=args.cache, label_projection=args.label_projection,
                            image_runtime=args.image_runtime).fit(
        _catalog(args), progress=_progress_bar("embedding"))
    result = rec.recommend(item=args.item, image=image, text=args.text, k=args.k, weight=args.weight,
                           filters=filters, colour_weight=args.colour_weight, diversity=args.diversity)
    if args.json:
        print(json.dumps({"backbone": rec.backbone_, **result.to_dict()}, indent=2, ensure_ascii=False))
        return 0
    print(f"{result.query} - image weight {result.weight:g}, {result.n_candidates} candidates, "
          f"backbone {rec.backbone_}")
    for note in result.notes:
        print(f"note: {note}")
    if not result.items:
        print(f"no results: {result.empty_reason}")
        return 0
    if result.weak:  # the app's "No good match" state, in words a terminal user sees first
        print(f"no good match: even the best result scores below {rec.weak_score:g}")
    frame = result.to_frame(rec.catalog_)
    cols = ["rank", "id", "name", "score", "image_score", "metadata_score", "why"]
    import pandas as pd

    with pd.option_context("display.max_colwidth", 60, "display.width", 200):
        print(frame[cols].to_string(index=False))
    return 0


def cmd_evaluate(args) -> int:
    from recommender.evaluation.protocols import gallery_with_views, leave_one_out, multi_view, photo_to_product

    catalog = _catalog(args)
    views = args.views or catalog.root / "views.csv"
    protocols = args.protocol or ((["loo"] if args.label else [])
                                  + (["multiview", "uploads"] if views.is_file() or not args.label else []))
    levers = {"flip_tta": args.flip_tta, "semantic": args.semantic, "dba_k": args.dba_k,
              "colour_weight": args.colour_weight, "photo_colour_weight": args.photo_colour_weight,
              "text_weighting": args.text_weighting, "label_projection": args.label_projection,
              "projection_mix": args.projection_mix, "adapter": getattr(args, "adapter", None),
              "text_embedding": getattr(args, "text_embedding", None)}
    # Only the levers given on the command line; the rest keep the recommender's defaults.
    params = {"backbone": args.backbone, "cache_dir": args.cache, "image_runtime": args.image_runtime,
              **{k: v for k, v in levers.items() if v is not None}}
    from recommender.recommender import HybridRecommender

    if args.suite:
        from recommender.evaluation.suite import run_from_cli

        return run_from_cli(args, params)
    results = {}
    if "loo" in protocols:
        if not args.label:
            raise RecommenderError("leave-one-out needs --label COLUMN (e.g. --label sub_category)")
        results["leave_one_out"] = leave_one_out(
            catalog, args.label, args.k, args.weights, exclude=args.exclude or (), mmr_lambdas=args.mmr or (),
            progress=_progress_bar("embedding"), recommender=HybridRecommender(**params),
            max_queries=args.max_queries or None)
    if "multiview" in protocols:
        if not Path(views).is_file():
            raise RecommenderError(f"multi-view needs a views file: {views} not found (give --views CSV)")
        results["multi_view"] = multi_view(catalog, views, args.k, progress=_progress_bar("embedding"),
                                           recommender=HybridRecommender(**params))
    if "uploads" in protocols:
        if not Path(views).is_file():
            raise RecommenderError(f"photo-to-product needs a views file: {views} not found (give --views CSV)")
        results["photo_to_product"] = photo_to_product(catalog, views, args.k, progress=_progress_bar("embedding"),
                                                       recommender=HybridRecommender(**params))
    text = json.dumps(results, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    if args.json:
        print(text)
    else:
        from recommender.evaluation.summary import summary_text

        print(summary_text(results), end="")
        print(f"full results: {args.out}" if args.out else "full results (per class, sweeps, examples): "
              "--json, or --out FILE")
    if args.report:
        from recommender.evaluation.report import write_report

        gallery = gallery_with_views(catalog, views)[0] if "multi_view" in results else None
        md = write_report(results, args.report, catalog, gallery)
        print(f"report: {md}", file=sys.stderr)
    return 0


def cmd_info(args) -> int:
    from recommender.features.embedders import resolve_backbone
    from recommender.recommender import HybridRecommender
    from recommender.store.artifacts import ArtifactStore, file_sha256
    from recommender.store.build import default_cache_dir

    catalog = _catalog(args)
    items = catalog.items
    print(f"catalog: {catalog.source} ({len(catalog)} products)")
    for col in ("category", "sub_category", "brand", "colour"):
        filled = int((items[col] != "").sum())
        print(f"  {col}: {len(catalog.values(col))} values, filled for {filled}/{len(catalog)}")
    prices = items["price"].dropna()
    if len(prices):
        print(f"  price: {prices.min():g} - {prices.max():g} ({len(prices)} priced)")
    choice = resolve_backbone(args.backbone)
    print(f"backbone: {choice.name} ({choice.reason})")
    from recommender.cli_scaleout import show_index

    show_index(args, catalog)
    ident = HybridRecommender(backbone=args.backbone, image_runtime=args.image_runtime)._image_embedder(
        args.backbone).identity()
    store = ArtifactStore(args.cache or default_cache_dir(catalog))
    manifest = store.manifest(ident.folder)
    if manifest is None:
        print(f"cache: none yet in {store.folder(ident.folder)} (run: python -m recommender build)")
        return 0
    cached = {e["sha256"] for e in manifest.get("items", [])}
    present = [catalog.image_path(i) for i in range(len(catalog)) if catalog.image_path(i).is_file()]
    hits = sum(file_sha256(p) in cached for p in present)
    print(f"cache: {store.folder(ident.folder)}: {len(cached)} vectors, {manifest['feature_dim']}-d, "
          f"made {manifest.get('created')}; {hits}/{len(catalog)} catalog images cached, "
          f"{len(catalog) - len(present)} image files missing")
    return 0


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr (exit 2), like every other bad input.

    argparse's default prints the whole usage block first; for a command with twenty options that buries
    the one line that says what is wrong. Subcommand parsers inherit this class.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from recommender.catalog.loader import DEMO_CATALOG

    parser = OneLineErrorParser(
        prog="python -m recommender",
        description="Hybrid product recommender: image (CNN) + metadata (TF-IDF/one-hot) similarity.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    sub = parser.add_subparsers(dest="command", required=True)

    def projection(p: argparse.ArgumentParser) -> None:
        p.add_argument("--label-projection", metavar="COLUMN", help="opt-in: learn the catalog's own labels in "
                       "this column from its images and add them to the image side (evaluated out of fold)")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--catalog", type=Path, default=DEMO_CATALOG,
                       help="catalog .csv or .parquet (default: the bundled demo catalog)")
        p.add_argument("--backbone", choices=BACKBONE_CHOICES, default="auto",
                       help="image model (default auto: VGG16 if its weights are here, else EfficientNet-Lite0)")
        p.add_argument("--cache", type=Path, default=None,
                       help="embedding cache folder (default: .cache beside the catalog)")
        from recommender.features.inference import RUNTIMES

        p.add_argument("--image-runtime", choices=RUNTIMES, default="auto",
                       help="what runs the image network (default auto: OpenVINO float32 where installed); "
                       "openvino-mixed and openvino-bf16 are faster with vectors (and a cache) of their own")

    p = sub.add_parser("build", help="embed the catalog's images into the cache")
    common(p)
    from recommender.cli_scaleout import add_build_options, add_index_options

    add_build_options(p)
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("recommend", help="products like an item, a photo or a description")
    common(p)
    q = p.add_mutually_exclusive_group()
    q.add_argument("--item", help="id of a catalog product")
    q.add_argument("--image", help="path of a photo")
    p.add_argument("--text", help="a description (alone, or with --image)")
    p.add_argument("--weight", type=float, default=None,
                   help="image weight w in [0, 1]: 1 = looks only, 0 = metadata only (default: 0.5 for an item, "
                        "adapted per query; 0.7 for a photo)")
    p.add_argument("--colour-weight", type=float, help="share of colour in the image similarity, 0-1 "
                   "(default 0 for --item, 0.3 for --image: a photo usually asks for that very product)")
    p.add_argument("--diversity", type=float, help="MMR re-ranking for less alike results, 0-1 (default 0)")
    p.add_argument("--k", type=int, default=10, help="number of results (default 10)")
    for name in ("category", "sub-category", "brand", "colour"):
        p.add_argument(f"--{name}", action="append", metavar="VALUE",
                       help=f"keep only this {name} (repeat for several)")
    p.add_argument("--price-min", type=float)
    p.add_argument("--price-max", type=float)
    p.add_argument("--json", action="store_true", help="print JSON")
    projection(p)
    p.set_defaults(func=cmd_recommend)

    p = sub.add_parser("evaluate", help="offline quality: leave-one-out by a label, multi-view retrieval "
                       "(a summary table; --json/--out for everything)")
    common(p)
    p.add_argument("--label", help="leave-one-out: column whose equal values count as relevant")
    p.add_argument("--protocol", nargs="+", choices=["loo", "multiview", "uploads"],
                   help="default: loo when --label is given, plus multiview and uploads (photo to product) "
                   "when a views file exists")
    p.add_argument("--views", type=Path, help="multi-view: id,image CSV of extra shots (default: views.csv "
                   "beside the catalog)")
    p.add_argument("--k", type=int, nargs="+", default=[1, 3, 5, 10])
    p.add_argument("--weights", type=float, nargs="+", default=[round(w / 10, 1) for w in range(11)],
                   help="image weights to sweep (default 0, 0.1, ..., 1)")
    p.add_argument("--mmr", type=float, nargs="+", metavar="LAMBDA",
                   help="also measure MMR re-ranking at these lambdas (1 = off)")
    p.add_argument("--flip-tta", action=argparse.BooleanOptionalAction, default=None,
                   help="embed images also mirrored and average (default off: twice the build time, no measured gain)")
    p.add_argument("--semantic", type=float, help="share of ImageNet class probabilities in the image vector "
                   "(default 0.5; 0 = pooled features only)")
    p.add_argument("--dba-k", type=int, help="database-side augmentation neighbours, self-dominant "
                   "(default 0 = off)")
    p.add_argument("--colour-weight", type=float, help="share of colour similarity in the image side of "
                   "catalog-item queries (default 0)")
    p.add_argument("--photo-colour-weight", type=float, help="the same for photo queries (default 0.3)")
    p.add_argument("--text-weighting", choices=["tfidf", "bm25"], help="metadata text weighting (default tfidf)")
    p.add_argument("--adapter", choices=["auto", "on", "off"], help="shop-photo adapter (default auto)")
    p.add_argument("--text-embedding", choices=["auto", "minilm", "off"],
                   help="sentence embedding on the metadata side (default auto: on when installed, <= 20k products)")
    projection(p)
    p.add_argument("--projection-mix", type=float, help="share of the label block in the image vector (default 0.5)")
    p.add_argument("--exclude", nargs="+", help="more metadata fields to leave out")
    p.add_argument("--max-queries", type=int, default=5000, metavar="N",
                   help="leave-one-out: at most N queries, a seeded sample, each ranked against the whole catalog "
                   "(default 5000: +-.01 intervals; an hour at 100k products for all; 0 = every product)")
    p.add_argument("--json", action="store_true", help="print the full results as JSON instead of the summary")
    p.add_argument("--out", type=Path, help="also write the full results as JSON to this file")
    p.add_argument("--report", type=Path, metavar="DIR", help="write report.json, report.md and plots to DIR")
    from recommender.evaluation.suite import register as register_suite

    register_suite(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("info", help="catalog size, backbone and cache state")
    common(p)
    add_index_options(p)
    p.set_defaults(func=cmd_info)
    from recommender.cli_cf import register as register_cf  # customers: recommend --user, evaluate --interactions

    register_cf(sub)
    from recommender.api.cli import register as register_api  # import, serve, reindex

    register_api(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s: %(message)s")
    # Python warnings (Pillow's "Truncated File Read" on a broken TIFF, library deprecations) are
    # for developers: shown with -v, otherwise kept off the one-line errors and the results.
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").setLevel(logging.WARNING if args.verbose else logging.ERROR)
    # Pillow logs a decoder's complaint about one file ("More samples per pixel than can be
    # decoded") at ERROR before raising; the file's own ImageError already says it is unusable.
    logging.getLogger("PIL").setLevel(logging.WARNING if args.verbose else logging.CRITICAL)
    try:
        return args.func(args)
    except RecommenderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
