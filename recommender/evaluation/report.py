"""An evaluation report a person can read: JSON, a short Markdown page, and plots.

``python -m recommender evaluate ... --report DIR`` writes ``DIR/report.json``, ``DIR/report.md`` and
the PNG figures it links: P@k against the image weight (with 95% bands), per-class precision, the
MMR precision/diversity trade-off, and example queries with their results (green = relevant).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from recommender.catalog.loader import Catalog


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path


def _fmt(summary: dict) -> str:
    lo, hi = summary["ci95"]
    return f"{summary['mean']:.3f} [{lo:.3f}, {hi:.3f}]"


def plot_sweep(loo: dict, path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4))
    weights = [row["weight"] for row in loo["sweep"]]
    metrics = [m for m in loo["sweep"][0] if m.startswith("P@")]
    for m in metrics:
        mean = [row[m]["mean"] for row in loo["sweep"]]
        lo = [row[m]["ci95"][0] for row in loo["sweep"]]
        hi = [row[m]["ci95"][1] for row in loo["sweep"]]
        ax.plot(weights, mean, marker="o", label=m)
        ax.fill_between(weights, lo, hi, alpha=0.15)
    ax.axvline(loo["best"]["weight"], color="grey", linestyle=":", label=f"best w = {loo['best']['weight']:g}")
    ax.set_xlabel("image weight w   (0 = metadata only, 1 = image only)")
    ax.set_ylabel("precision")
    ax.set_title(f"Leave-one-out by {loo['label']} ({loo['n_queries']} queries)")
    ax.legend(loc="lower center", ncol=3, fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_per_class(loo: dict, path: Path) -> Path:
    plt = _plt()
    per = loo["per_class"]
    methods = list(per)
    classes = sorted(per[methods[-1]], key=lambda c: per[methods[-1]][c])
    fig, ax = plt.subplots(figsize=(6.4, 0.32 * len(classes) + 1.2))
    y = np.arange(len(classes))
    h = 0.8 / len(methods)
    for j, m in enumerate(methods):
        ax.barh(y + j * h, [per[m][c] for c in classes], height=h, label=m)
    ax.set_yticks(y + 0.4 - h / 2, classes, fontsize=8)
    ax.set_xlabel(loo["best"]["by"])
    ax.set_xlim(0, 1)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(f"Per-{loo['label']} precision")
    return _save(fig, path)


def plot_mmr(loo: dict, path: Path) -> Path:
    plt = _plt()
    metric = loo["best"]["by"]
    div_key = next(k for k in loo["mmr"][0] if k.startswith("diversity"))
    x = [row[div_key]["mean"] for row in loo["mmr"]]
    y = [row[metric]["mean"] for row in loo["mmr"]]
    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.plot(x, y, marker="o")
    for row, xi, yi in zip(loo["mmr"], x, y, strict=True):
        ax.annotate(f"λ={row['lambda']:g}", (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel(f"intra-list {div_key}")
    ax.set_ylabel(metric)
    ax.set_title("MMR: precision vs diversity")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_examples(examples: list[dict], catalog: Catalog, path: Path, thumb: int = 96) -> Path:
    """Each row: the query image, then its top results framed green (relevant) or red (not)."""
    from PIL import Image, ImageDraw

    from recommender.features.images import open_image, pad_to_square

    def tile(item_id: str, colour: tuple[int, int, int] | None) -> Image.Image:
        base = item_id.split("#")[0]
        try:
            pos = catalog.position(item_id)
        except KeyError:
            pos = catalog.position(base)
        img = Image.fromarray(pad_to_square(open_image(catalog.image_path(pos)), thumb - 8))
        framed = Image.new("RGB", (thumb, thumb), colour or (255, 255, 255))
        framed.paste(img, (4, 4))
        return framed

    cols = 1 + max(len(e["results"]) for e in examples)
    label_h = 14
    sheet = Image.new("RGB", (cols * (thumb + 6), len(examples) * (thumb + label_h + 6)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, ex in enumerate(examples):
        y = r * (thumb + label_h + 6)
        draw.text((2, y), f"query {ex['query'][:14]}", fill=(0, 0, 0))
        sheet.paste(tile(ex["query"], (60, 60, 60)), (0, y + label_h))
        for c, res in enumerate(ex["results"], start=1):
            colour = (34, 160, 70) if res["relevant"] else (210, 50, 50)
            draw.text((c * (thumb + 6) + 2, y), res["id"][:15], fill=(0, 0, 0))
            sheet.paste(tile(res["id"], colour), (c * (thumb + 6), y + label_h))
    sheet.save(path)
    return path


def write_report(results: dict[str, dict], out_dir: Path | str, catalog: Catalog,
                 gallery: Catalog | None = None) -> Path:
    """Write report.json, report.md and figures for the protocols in ``results``; returns report.md."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    lines = ["# Evaluation report", ""]
    loo = results.get("leave_one_out")
    if loo:
        lines += [f"## Leave-one-out by `{loo['label']}`", "",
                  f"{loo['n_queries']} queries over {loo['n_products']} products; image pipeline "
                  f"{loo['image_pipeline']}; excluded from metadata: {', '.join(loo['excluded_from_metadata'])}. "
                  "Mean with bootstrap 95% interval.", ""]
        metrics = [m for m in loo["methods"]["image"] if m.startswith(("P@", "nDCG@", "MAP"))]
        lines.append("| method | " + " | ".join(metrics) + " |")
        lines.append("|---" * (len(metrics) + 1) + "|")
        for name, s in loo["methods"].items():
            lines.append(f"| {name} | " + " | ".join(_fmt(s[m]) for m in metrics) + " |")
        lines += ["", f"Best weight by {loo['best']['by']}: **w = {loo['best']['weight']:g}**.", "",
                  "| comparison | metric | difference [95% CI] | different? |", "|---|---|---|---|"]
        for c in loo["comparisons"]:
            lines.append(f"| {c['a']} − {c['b']} | {c['metric']} | {c['mean_diff']:+.3f} "
                         f"[{c['lo']:+.3f}, {c['hi']:+.3f}] | {'yes' if c['significant'] else 'no'} |")
        lines += ["", f"![weight sweep]({plot_sweep(loo, out / 'sweep.png').name})", "",
                  f"![per class]({plot_per_class(loo, out / 'per_class.png').name})", ""]
        if loo.get("mmr"):
            lines += [f"![mmr]({plot_mmr(loo, out / 'mmr.png').name})", ""]
        lines += ["Example queries (best hybrid; green = same label):", "",
                  f"![examples]({plot_examples(loo['examples'], catalog, out / 'examples.png').name})", ""]
    mv = results.get("multi_view")
    if mv:
        metrics = [m for m in mv["methods"]["photo"] if m.startswith(("R@", "P@1", "hit@", "MAP"))]
        colour = mv["colour_weight"]
        lines += ["## Multi-view retrieval (image only)", "",
                  f"{mv['n_queries']} query images of {mv['n_products_with_views']} products with several shots, "
                  f"gallery of {mv['n_images']} images; pipeline {mv['image_pipeline']}. Each shot is scored as "
                  f"an uploaded photo (colour {colour['photo']:g}) and as a catalog item (colour {colour['item']:g}).",
                  "", "| path | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
        lines += [f"| {name} | " + " | ".join(_fmt(s[m]) for m in metrics) + " |" for name, s in mv["methods"].items()]
        for c in mv.get("comparisons", []):
            lines += ["", f"{c['a']} − {c['b']}, {c['metric']}: {c['mean_diff']:+.3f} [{c['lo']:+.3f}, {c['hi']:+.3f}]"
                      f" ({'different' if c['significant'] else 'not different'})."]
        if mv.get("colour_sweep"):
            rs = [m for m in metrics if m.startswith("R@")]
            lines += ["", "Photo path at other colour shares:", "", "| colour | " + " | ".join(rs) + " |",
                      "|---" * (len(rs) + 1) + "|"]
            lines += [f"| {row['colour_weight']:g} | " + " | ".join(_fmt(row[r]) for r in rs) + " |"
                      for row in mv["colour_sweep"]]
        if gallery is not None:
            grid = plot_examples(mv["examples"], gallery, out / "multiview.png")
            lines += ["", f"![multi-view examples (photo path)]({grid.name})"]
        lines.append("")
    up = results.get("photo_to_product")
    if up:
        metrics = [m for m in up["methods"]["default"] if m.startswith(("R@", "MAP"))]
        lines += ["## Photo to product (uploads)", "",
                  f"{up['n_queries']} extra shots, none of them in the catalog, each uploaded as a photo query "
                  f"against {up['n_products']} products; the relevant result is the shot's own product "
                  "(R@k = found in the top k). `default`: the recommender's settings; `image`: image side "
                  "only; `colour0`: default without colour.", "",
                  "| method | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
        lines += [f"| {name} | " + " | ".join(_fmt(s[m]) for m in metrics) + " |" for name, s in up["methods"].items()]
        lines += [""] + [f"{c['a']} − {c['b']}, {c['metric']}: {c['mean_diff']:+.3f} [{c['lo']:+.3f}, {c['hi']:+.3f}] "
                         f"({'different' if c['significant'] else 'not different'})." for c in up["comparisons"]]
        lines.append("")
    md = out / "report.md"
    md.write_text("\n".join(lines), encoding="utf-8")
    return md
