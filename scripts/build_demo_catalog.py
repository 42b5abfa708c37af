"""Rebuild ``data/demo/`` from two real, permissively licensed e-commerce demo catalogs.

Sources (both install offline from the package registries):

* npm ``@vendure/create@2.3.4`` (MIT): ``package/assets/products.csv`` + ``package/assets/images/``
  (54 products, Unsplash photos).
* PyPI ``saleor==2.10.1`` (BSD-3-Clause): ``saleor/static/populatedb_data.json`` +
  ``saleor/static/placeholders/`` (35 products, studio renders on white).

Usage::

    python scripts/build_demo_catalog.py            # fetches both packages with npm / pip
    python scripts/build_demo_catalog.py \
        --vendure vendure-create-2.3.4.tgz --saleor saleor-2.10.1-py3-none-any.whl

The output is deterministic for the same inputs, so re-running it leaves git clean.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections import defaultdict
from pathlib import Path

from PIL import Image, ImageOps

REPO = Path(__file__).resolve().parents[1]
MAX_SIDE = 512
COLUMNS = ["id", "name", "description", "category", "sub_category", "brand", "colour", "price", "image"]
VENDURE_SPEC = "@vendure/create@2.3.4"
SALEOR_SPEC = "saleor==2.10.1"


def fetch_vendure(workdir: Path) -> Path:
    subprocess.run(["npm", "pack", VENDURE_SPEC, "--silent"], cwd=workdir, check=True, stdout=subprocess.PIPE)
    return next(workdir.glob("vendure-create-*.tgz"))


def fetch_saleor(workdir: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--python-version", "3.8",
         "--only-binary=:all:", SALEOR_SPEC, "-d", str(workdir), "-q"],
        check=True,
    )
    return next(workdir.glob("saleor-*.whl"))


class VendureSource:
    """Reads products.csv and photos straight out of the npm tarball."""

    def __init__(self, tgz: Path) -> None:
        self._tar = tarfile.open(tgz, "r:gz")  # noqa: SIM115 - read on demand, lives with the object

    def read(self, member: str) -> bytes:
        f = self._tar.extractfile(f"package/assets/{member}")
        if f is None:
            raise FileNotFoundError(member)
        return f.read()

    def products(self) -> list[dict]:
        text = self.read("products.csv").decode("utf-8")
        # Every cell is padded with spaces to align the columns; variant rows have an empty name
        # and belong to the product row above them.
        reader = csv.DictReader(io.StringIO(text))
        rows = [{k.strip(): (v or "").strip() for k, v in r.items()} for r in reader]
        products: list[dict] = []
        for row in rows:
            if row["name"]:
                products.append({"row": row, "prices": []})
            if row["price"]:
                products[-1]["prices"].append(float(row["price"]))
        out = []
        for p in products:
            row = p["row"]
            facets: dict[str, list[str]] = defaultdict(list)
            for facet in filter(None, row["facets"].split("|")):
                key, _, value = facet.partition(":")
                facets[key.strip()].append(value.strip())
            cats = facets.get("category", [])
            assets = [a.strip() for a in row["assets"].split("|") if a.strip()]
            out.append(
                {
                    "id": row["slug"],
                    "name": row["name"],
                    "description": row["description"],
                    "category": cats[0] if cats else "",
                    "sub_category": cats[1] if len(cats) > 1 else "",
                    "brand": "|".join(facets.get("brand", [])),
                    "colour": "|".join(facets.get("color", [])),
                    # The product's "from" price: the cheapest of its variants.
                    "price": f"{min(p['prices']):.2f}" if p["prices"] else "",
                    "images": [f"images/{a}" for a in assets],
                }
            )
        return out


class SaleorSource:
    """Reads the populatedb fixture and placeholder renders out of the Saleor wheel."""

    def __init__(self, whl: Path) -> None:
        self._zip = zipfile.ZipFile(whl)

    def read(self, member: str) -> bytes:
        return self._zip.read(f"saleor/static/{member}")

    def products(self) -> list[dict]:
        fixture = json.loads(self.read("populatedb_data.json"))
        by_model: dict[str, dict[int, dict]] = defaultdict(dict)
        for obj in fixture:
            by_model[obj["model"]][obj["pk"]] = obj["fields"]
        categories = by_model["product.category"]
        images: dict[int, list[tuple[int, str]]] = defaultdict(list)
        for img in by_model["product.productimage"].values():
            # Fixture names carry a 7-character random upload suffix ("_stdygda.png") that the
            # shipped placeholder files do not.
            name = re.sub(r"_[A-Za-z0-9]{7}(\.\w+)$", r"\1", Path(img["image"]).name)
            images[img["product"]].append((img["sort_order"] or 0, f"placeholders/{name}"))
        out = []
        for pk, p in sorted(by_model["product.product"].items()):
            cat = categories[p["category"]]
            parent = categories[cat["parent"]]["name"] if cat["parent"] else ""
            price = p.get("minimal_variant_price_amount") or p.get("price_amount") or ""
            out.append(
                {
                    "id": p["slug"],
                    "name": p["name"],
                    "description": p["description"],
                    "category": parent or cat["name"],
                    "sub_category": cat["name"] if parent else "",
                    # Saleor's demo data assigns no brand and no colour: left empty, never guessed.
                    "brand": "",
                    "colour": "",
                    "price": f"{float(price):.2f}" if price else "",
                    "images": [path for _, path in sorted(images[pk])],
                }
            )
        return out


def save_image(data: bytes, dest_stem: Path) -> str:
    """Downscale to MAX_SIDE and save; JPEG photos stay JPEG, palette PNG renders stay palette PNG."""
    img = Image.open(io.BytesIO(data))
    img = ImageOps.exif_transpose(img)
    fmt = img.format or ("JPEG" if img.mode == "RGB" else "PNG")
    if fmt == "JPEG":
        img = img.convert("RGB")
        img.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
        path = dest_stem.with_suffix(".jpg")
        img.save(path, "JPEG", quality=85, optimize=True, progressive=True)
    else:
        img = img.convert("RGBA")
        img.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
        # Back to a 256-colour palette: keeps the files small and the real-world palette +
        # transparency case in the demo data.
        img = img.quantize(colors=256, method=Image.Quantize.FASTOCTREE)
        path = dest_stem.with_suffix(".png")
        img.save(path, "PNG", optimize=True)
    return path.name


def build(vendure: Path, saleor: Path, out: Path) -> None:
    sources = [("vendure", VendureSource(vendure)), ("saleor", SaleorSource(saleor))]
    images_dir = out / "images"
    if images_dir.exists():
        shutil.rmtree(images_dir)
    images_dir.mkdir(parents=True)
    rows, views, seen = [], [], set()
    for _, source in sources:
        for p in source.products():
            if p["id"] in seen:
                raise SystemExit(f"duplicate product id across sources: {p['id']}")
            seen.add(p["id"])
            if not p["images"]:
                raise SystemExit(f"product {p['id']} has no image")
            files = []
            for i, member in enumerate(p["images"]):
                stem = p["id"] if i == 0 else f"{p['id']}_{i + 1}"
                files.append("images/" + save_image(source.read(member), images_dir / stem))
            rows.append({**{k: p[k] for k in COLUMNS if k != "image"}, "image": files[0]})
            views.extend({"id": p["id"], "image": f} for f in files[1:])
    with open(out / "catalog.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    with open(out / "views.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["id", "image"], lineterminator="\n")
        w.writeheader()
        w.writerows(views)
    size = sum(p.stat().st_size for p in images_dir.iterdir())
    print(f"{len(rows)} products, {len(views)} extra views, {len(list(images_dir.iterdir()))} images, "
          f"{size / 1e6:.1f} MB -> {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vendure", type=Path, help=f"{VENDURE_SPEC} tarball (fetched with npm if omitted)")
    ap.add_argument("--saleor", type=Path, help=f"{SALEOR_SPEC} wheel (fetched with pip if omitted)")
    ap.add_argument("--out", type=Path, default=REPO / "data" / "demo")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        vendure = args.vendure or fetch_vendure(Path(tmp))
        saleor = args.saleor or fetch_saleor(Path(tmp))
        build(vendure, saleor, args.out)


if __name__ == "__main__":
    main()
