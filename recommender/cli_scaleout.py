"""Scale-out options of the CLI: ``build --engine ray [--address ...]`` and ``--index milvus --milvus-uri ...``.

Thin over the library (:mod:`recommender.store.ray_build`, :mod:`recommender.index.milvus`); ``cli.py``
calls the three hooks below, so ``build`` and ``info`` keep working unchanged without the options.
Ray and pymilvus are imported only when an option asks for them.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

ENGINES = ("local", "ray")
INDEXES = ("exact", "milvus")


def add_index_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("index backend")
    g.add_argument("--index", choices=INDEXES, default="exact",
                   help="exact: in-process (default); milvus: mirror the catalog into a Milvus collection")
    g.add_argument("--milvus-uri", help="a milvus-lite file (*.db) or a server URL such as http://host:19530 "
                   "(default $RECOMMENDER_MILVUS_URI, else milvus.db in the cache folder)")
    g.add_argument("--milvus-token", help="server credentials user:password or API key (better: set "
                   "$RECOMMENDER_MILVUS_TOKEN, which is not shown in the process list)")
    g.add_argument("--milvus-collection", help="collection name (default: one per catalog and backbone)")


def add_build_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("build engine")
    g.add_argument("--engine", choices=ENGINES, default="local",
                   help="local: embed on this machine (default); ray: embed on a Ray cluster (pip install -r "
                   "requirements-ray.txt), into the same cache")
    g.add_argument("--address", help="Ray cluster: auto (the one this machine belongs to) or ray://head:10001 "
                   "(default: start a local Ray)")
    g.add_argument("--num-actors", type=int, default=2, help="model replicas on Ray, one CPU each (default 2)")
    add_index_options(p)


def _cache_dir(args, catalog) -> Path:
    from recommender.store.build import default_cache_dir

    return Path(args.cache) if args.cache else default_cache_dir(catalog)


def _milvus_uri(args, catalog) -> str:
    from recommender.index.milvus import ENV_URI

    return args.milvus_uri or os.environ.get(ENV_URI) or str(_cache_dir(args, catalog) / "milvus.db")


def before_build(args) -> None:
    """``--engine ray``: embed on Ray first, so the local fit that follows reuses every vector."""
    if getattr(args, "engine", "local") != "ray":
        return
    from recommender.catalog.loader import load_catalog
    from recommender.cli import _progress_bar
    from recommender.recommender import HybridRecommender
    from recommender.store.ray_build import build_with_ray

    catalog = load_catalog(args.catalog)
    rec = HybridRecommender(backbone=args.backbone, cache_dir=args.cache, image_runtime=args.image_runtime)
    print(rec.choose_features(catalog).note)  # on a bounded sample, locally: Ray embeds the chosen view only
    embedder = rec._image_embedder(args.backbone)
    report = build_with_ray(catalog, embedder, cache_dir=args.cache, address=args.address,
                            num_actors=args.num_actors, progress=_progress_bar("embedding on Ray"))
    print(f"ray build: {report.summary()}")


def after_build(args, rec) -> None:
    """``--index milvus``: mirror the fitted catalog into its Milvus collection (upserts and deletes)."""
    if getattr(args, "index", "exact") != "milvus":
        return
    from recommender.index.milvus import publish_recommender

    index = publish_recommender(rec, _milvus_uri(args, rec.catalog_), args.milvus_token, args.milvus_collection)
    stats = index.stats()
    index.close()
    print(f"index: milvus {stats['uri']} collection {stats['collection']}: {stats['size']} vectors, "
          f"{stats['dim']}-d")


def show_index(args, catalog) -> None:
    """``info --index milvus``: the backend and its collection's size."""
    if getattr(args, "index", "exact") != "milvus":
        print("index: exact (in-process)")
        return
    from recommender.index.milvus import catalog_collection, collection_stats
    from recommender.recommender import HybridRecommender

    ident = HybridRecommender(backbone=args.backbone, image_runtime=args.image_runtime)._image_embedder(
        args.backbone).identity()
    name = args.milvus_collection or catalog_collection(catalog, ident.folder)
    uri = _milvus_uri(args, catalog)
    stats = collection_stats(uri, args.milvus_token, name)
    if stats is None:
        from recommender.index.milvus import MilvusIndex

        shown = MilvusIndex(1, uri, "", name).stats_uri()  # credentials in a URL are masked
        print(f"index: milvus {shown}: no collection {name} yet (run: python -m recommender build --index milvus)")
    else:
        print(f"index: milvus {stats['uri']} collection {stats['collection']}: {stats['size']} vectors, "
              f"{stats['dim']}-d")
