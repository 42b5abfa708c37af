"""Build the committed Online Retail demo (data/online-retail/) from the shared copy of the dataset.

    python scripts/build_online_retail_demo.py [--source ../shared/data/online-retail] [--out data/online-retail]

Writes three Parquet files, validated by the project's own loaders on the way out:
- ``catalog.parquet``: the products (id, name = the shop's description text, price = median unit price
  in GBP; no images, categories or brands: the source has none, and none are invented);
- ``interactions.parquet``: every purchase line (user_id, item_id, weight = quantity, timestamp = unix
  seconds, kind = purchase);
- ``customers.parquet``: user_id, country (the most frequent on their invoices), purchases, first and
  last purchase time.
The licence and attribution are in NOTICE.md beside them (written by hand, not by this script).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recommender.catalog.interactions import load_interactions  # noqa: E402
from recommender.catalog.loader import load_catalog  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", type=Path, default=Path("../shared/data/online-retail"))
    parser.add_argument("--out", type=Path, default=Path("data/online-retail"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    catalog = load_catalog(args.source / "catalog.csv")
    items = catalog.items[["id", "name", "description", "category", "sub_category", "brand", "colour", "price",
                           "image"]]
    items.to_parquet(args.out / "catalog.parquet", index=False, compression="zstd")

    interactions = load_interactions(args.source / "interactions.csv.gz", catalog).frame
    interactions = interactions.astype({"weight": "int32"}).sort_values(["timestamp", "user_id"], kind="stable")
    interactions.to_parquet(args.out / "interactions.parquet", index=False, compression="zstd")

    baskets = pd.read_csv(args.source / "baskets.csv.gz", dtype={"user_id": str, "item_id": str})
    country = baskets.groupby("user_id")["country"].agg(lambda s: s.value_counts().index[0])
    per_user = interactions.groupby("user_id").agg(purchases=("item_id", "size"),
                                                   first_purchase=("timestamp", "min"),
                                                   last_purchase=("timestamp", "max"))
    customers = per_user.join(country).reset_index()[["user_id", "country", "purchases", "first_purchase",
                                                      "last_purchase"]]
    customers.to_parquet(args.out / "customers.parquet", index=False, compression="zstd")

    # Read back through the loaders: what is committed must load.
    check = load_catalog(args.out / "catalog.parquet")
    n = len(load_interactions(args.out / "interactions.parquet", check))
    for f in sorted(args.out.glob("*.parquet")):
        print(f"{f}: {f.stat().st_size / 1e6:.2f} MB")
    print(f"{len(check)} products, {n} purchases, {len(customers)} customers")


if __name__ == "__main__":
    main()
