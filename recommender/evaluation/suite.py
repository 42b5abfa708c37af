"""The benchmark suite: every catalog and protocol we can measure, in one command, one table.

``python -m recommender evaluate --suite [--out DIR]`` runs

* **demo** (the bundled 89-product catalog): leave-one-out by ``sub_category`` (headline: hybrid P@5 at
  the recommender's own weight - not the best of a sweep, which would be tuned on what is reported),
  multi-view retrieval of a product's other shots (photo path R@5) and photo->product uploads of the
  15 extra shots (R@1);
* **grocery** (``../shared/data/grocery``; skipped with the reason when the data is absent - never
  committed): leave-one-out of its 81 studio-shot products by ``category`` (Apple, Milk, Juice, ...; hybrid
  P@5 at the recommender's weight: the suite's second catalog for "more like this", so an item-query lever
  is not judged on the demo alone) and photo->product on the ``val`` split (R@1);
* **Fashion-MNIST** image-only leave-one-out by class (P@10) on the committed 1k slice, or on the full
  10k test set with ``--fashion full`` (Debian's ``dataset-fashion-mnist``);
* any catalog given with ``--catalog PATH --label COLUMN`` (leave-one-out hybrid P@5; multi-view and
  uploads too when a ``views.csv`` lies beside it).

Each protocol reports its n and bootstrap 95% intervals; the **objective** is the unweighted mean of
the protocols' headline metrics. A default may change only when it raises the objective and is not
significantly worse on any one protocol (see docs/evaluation.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from recommender.catalog.loader import DEMO_CATALOG, Catalog, load_catalog
from recommender.errors import RecommenderError
from recommender.evaluation.grocery import GROCERY_ROOT, fashion_catalog, grocery_available, grocery_views

SUITE_KS = (1, 3, 5, 10)
GROCERY_LOO_LABEL = "category"  # the coarse class (Apple, Milk, ...); sub_category is 3 groups (Fruit, ...)
DEFAULT_CACHE_ROOT = Path(".cache") / "suite"


@dataclass(frozen=True)
class Headline:
    """Which figure of a protocol's result stands for it in the summary."""

    protocol: str  # key in the suite's results
    kind: str  # leave_one_out | multi_view | photo_to_product
    method: str  # method inside the protocol's "methods"
    metric: str
    what: str = ""


@dataclass
class SuiteResult:
    params: dict
    results: dict[str, dict] = field(default_factory=dict)
    headlines: list[Headline] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def summary_rows(self) -> list[dict]:
        rows = []
        for h in self.headlines:
            s = self.results[h.protocol]["methods"][h.method][h.metric]
            rows.append({"protocol": h.protocol, "metric": f"{h.method} {h.metric}", "what": h.what,
                         "mean": s["mean"], "ci95": s["ci95"], "n": s["n"],
                         "seconds": round(self.seconds.get(h.protocol, 0.0), 1)})
        return rows

    @property
    def objective(self) -> float | None:
        rows = self.summary_rows()
        return round(sum(r["mean"] for r in rows) / len(rows), 4) if rows else None

    def headline_values(self, h: Headline) -> list[float]:
        """Per-query values of a headline, in query order (for paired comparisons)."""
        return self.results[h.protocol]["per_query"][h.method][h.metric]

    def to_dict(self) -> dict:
        # Per-query values only for the headlines: enough to compare runs, small enough to commit.
        results = {n: {k: v for k, v in r.items() if k != "per_query"} for n, r in self.results.items()}
        return {"params": self.params, "objective": self.objective, "summary": self.summary_rows(),
                "skipped": self.skipped, "results": results,
                "headline_per_query": {h.protocol: self.headline_values(h) for h in self.headlines}}


def compare(a: SuiteResult, b: SuiteResult) -> list[dict]:
    """Paired bootstrap of ``a - b`` on every headline both runs measured (same queries, same order)."""
    from recommender.evaluation.metrics import paired_bootstrap_diff

    theirs = {h.protocol: h for h in b.headlines}
    out = []
    for h in a.headlines:
        if h.protocol not in theirs or theirs[h.protocol].metric != h.metric:
            continue
        d = paired_bootstrap_diff(a.headline_values(h), b.headline_values(theirs[h.protocol]))
        out.append({"protocol": h.protocol, "metric": h.metric, **{k: (round(v, 4) if isinstance(v, float) else v)
                                                                   for k, v in d.items()}})
    return out


def _hybrid_method(weight: float) -> str:
    return f"hybrid_w{weight:g}"


def run_suite(
    params: Mapping[str, object] | None = None,
    *,
    demo: Path | str | None = DEMO_CATALOG,
    grocery_root: Path | str | None = GROCERY_ROOT,
    grocery_split: str = "val",
    fashion: str | None = "slice",
    fashion_limit: int | None = None,
    catalogs: Sequence[tuple[Path | str, str]] = (),
    cache_root: Path | str | None = None,
    ks: Sequence[int] = SUITE_KS,
    log=None,
) -> SuiteResult:
    """Run every available protocol with ``HybridRecommender(**params)`` and collect the headlines.

    ``demo`` / ``grocery_root`` / ``fashion`` = ``None`` leave that part out; ``fashion`` is ``"slice"``
    (committed 1k) or ``"full"`` (10k, needs Debian's package). ``catalogs``: ``(path, label)`` pairs
    of other catalogs. ``cache_root`` holds the embedding caches and the rendered Fashion-MNIST
    images (default ``.cache/suite``), so a second run only re-embeds the upload queries.
    """
    from recommender.evaluation.protocols import leave_one_out, multi_view, photo_to_product
    from recommender.recommender import HybridRecommender

    params = dict(params or {})
    cache_root = Path(cache_root or DEFAULT_CACHE_ROOT)
    ks = tuple(ks)
    suite = SuiteResult(params={k: (str(v) if isinstance(v, Path) else v) for k, v in params.items()})
    say = log or (lambda msg: None)

    def rec(cache: str) -> HybridRecommender:
        return HybridRecommender(**{"cache_dir": cache_root / cache, **params})

    probe = rec("x")
    weight = float(probe.weight)
    hybrid = _hybrid_method(weight)
    # As recommend(item=...) without a weight: adapted per query where items are expanded (exact scans here).
    at_weight = f"hybrid at w={weight:g}" + (", adapted per query" if probe.adaptive_weight else "")

    def timed(name: str, fn):
        say(f"suite: {name} ...")
        t0 = time.perf_counter()
        out = fn()
        suite.seconds[name] = time.perf_counter() - t0
        suite.results[name] = out
        say(f"suite: {name} done in {suite.seconds[name]:.0f} s")
        return out

    def catalog_protocols(prefix: str, catalog: Catalog, label: str, cache: str) -> None:
        timed(f"{prefix}/loo", lambda: leave_one_out(catalog, label, ks, (weight,), recommender=rec(cache),
                                                          per_query=True))
        suite.headlines.append(Headline(f"{prefix}/loo", "leave_one_out", hybrid, "P@5",
                                        f"leave-one-out by {label}, {at_weight}"))
        views = catalog.root / "views.csv"
        if views.is_file():
            timed(f"{prefix}/multiview", lambda: multi_view(catalog, views, ks, per_query=True,
                                                                  recommender=rec(cache + "-gallery")))
            suite.headlines.append(Headline(f"{prefix}/multiview", "multi_view", "photo", "R@5",
                                            "other shots of the product, photo path"))
            timed(f"{prefix}/uploads", lambda: photo_to_product(catalog, views, ks, recommender=rec(cache),
                                                                      per_query=True))
            suite.headlines.append(Headline(f"{prefix}/uploads", "photo_to_product", "default", "R@1",
                                            "extra shots uploaded as photos"))

    if demo is not None:
        catalog_protocols("demo", load_catalog(demo), "sub_category", "demo")

    if grocery_root is not None:
        reason = grocery_available(grocery_root)
        if reason:
            suite.skipped["grocery"] = reason
        else:
            from recommender.evaluation.grocery import load_grocery

            catalog, _ = load_grocery(grocery_root)
            timed("grocery/loo", lambda: leave_one_out(catalog, GROCERY_LOO_LABEL, ks, (weight,),
                                                       recommender=rec("grocery"), per_query=True))
            suite.headlines.append(Headline("grocery/loo", "leave_one_out", hybrid, "P@5",
                                            f"leave-one-out by {GROCERY_LOO_LABEL}, {at_weight}"))
            with tempfile.TemporaryDirectory() as tmp:
                views = grocery_views(grocery_root, grocery_split, Path(tmp) / "views.csv")
                # The shop's labelled photos (for the adapter) are the train split, never the reported one.
                train = grocery_views(grocery_root, "train", Path(tmp) / "train.csv") if grocery_split != "train" \
                    else False
                name = f"grocery/{grocery_split}"
                timed(name, lambda: photo_to_product(catalog, views, ks, recommender=rec("grocery"),
                                                        per_query=True, photos=train))
            suite.results[name]["split"] = grocery_split
            suite.headlines.append(Headline(name, "photo_to_product", "default", "R@1",
                                            f"shop photos ({grocery_split}) -> studio product photo"))

    if fashion is not None:
        from recommender.evaluation.fashion_mnist import available

        if fashion == "full" and not available():
            suite.skipped["fashion-mnist"] = "full Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)"
        else:
            tag = "fashion-mnist-" + fashion + (f"-{fashion_limit}" if fashion_limit else "")
            csv = fashion_catalog(cache_root / tag, full=fashion == "full", limit=fashion_limit)
            name = f"fashion-mnist/{fashion}"
            timed(name, lambda: leave_one_out(load_catalog(csv), "category", ks, (weight,), per_query=True,
                                              recommender=rec(tag + "-cache")))
            suite.headlines.append(Headline(name, "leave_one_out", "image", "P@10",
                                            "image-only leave-one-out by class"))

    for i, (path, label) in enumerate(catalogs):
        catalog = load_catalog(path)
        catalog_protocols(f"catalog{i + 1}:{Path(path).parent.name or Path(path).stem}", catalog, label,
                          f"catalog{i + 1}")
    return suite


# -- the report ----------------------------------------------------------------------------------


def _fmt(mean: float, ci: Sequence[float]) -> str:
    return f"{mean:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def summary_markdown(suite: SuiteResult, title: str = "Benchmark suite") -> str:
    lines = [f"# {title}", "",
             "Headline metric per protocol: mean over queries with its bootstrap 95% interval and n. "
             f"Objective (mean of the headlines): **{suite.objective}**.", "",
             "| protocol | headline | mean [95% CI] | n | what | s |", "|---|---|---|---|---|---|"]
    for r in suite.summary_rows():
        lines.append(f"| {r['protocol']} | {r['metric']} | {_fmt(r['mean'], r['ci95'])} | {r['n']} | {r['what']} "
                     f"| {r['seconds']:.0f} |")
    for name, reason in suite.skipped.items():
        lines.append(f"| {name} | skipped | - | 0 | {reason} | |")
    pipelines = {n: r.get("image_pipeline") for n, r in suite.results.items() if r.get("image_pipeline")}
    if pipelines:
        lines += ["", "Image pipeline: " + "; ".join(sorted(set(pipelines.values()))) + "."]
    lines += ["", f"Parameters: `{json.dumps(suite.params, sort_keys=True)}`", ""]
    return "\n".join(lines)


def plot_summary(suite: SuiteResult, path: Path) -> Path:
    from recommender.evaluation.report import _plt, _save

    plt = _plt()
    rows = suite.summary_rows()
    fig, ax = plt.subplots(figsize=(6.4, 0.45 * len(rows) + 1.2))
    y = list(range(len(rows)))
    means = [r["mean"] for r in rows]
    err = [[r["mean"] - r["ci95"][0] for r in rows], [r["ci95"][1] - r["mean"] for r in rows]]
    ax.barh(y, means, xerr=err, color="#4c72b0", capsize=3)
    ax.set_yticks(y, [f"{r['protocol']}\n{r['metric']}" for r in rows], fontsize=8)
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.set_xlabel("headline metric (95% bootstrap interval)")
    ax.set_title(f"Benchmark suite - objective {suite.objective}")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def write_suite_report(suite: SuiteResult, out_dir: Path | str) -> Path:
    """``suite.json``, ``summary.md`` (+ ``summary.png``) and, for the demo, the full report with plots."""
    from recommender.evaluation.report import write_report

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "suite.json").write_text(json.dumps(suite.to_dict(), indent=2) + "\n", encoding="utf-8")
    md = summary_markdown(suite)
    if suite.headlines:
        md += f"\n![suite summary]({plot_summary(suite, out / 'summary.png').name})\n"
    demo = {k.split("/")[1]: v for k, v in suite.results.items() if k.startswith("demo/")}
    if demo:
        from recommender.evaluation.protocols import gallery_with_views

        catalog = load_catalog(DEMO_CATALOG)
        keyed = {{"loo": "leave_one_out", "multiview": "multi_view", "uploads": "photo_to_product"}[k]: v
                 for k, v in demo.items()}
        gallery = gallery_with_views(catalog, catalog.root / "views.csv")[0] if "multi_view" in keyed else None
        write_report(keyed, out / "demo", catalog, gallery)
        md += "\nDemo protocols in full (plots, comparisons): [demo/report.md](demo/report.md)\n"
    path = out / "summary.md"
    path.write_text(md, encoding="utf-8")
    return path


# -- the CLI -------------------------------------------------------------------------------------


def register(parser: argparse.ArgumentParser) -> None:
    """Add the suite's options to ``evaluate``."""
    g = parser.add_argument_group("benchmark suite")
    g.add_argument("--suite", action="store_true",
                   help="run the benchmark suite: demo (loo, multi-view, uploads), grocery val photo->product, "
                   "Fashion-MNIST image-only, and --catalog if it is not the demo; prints one summary table")
    g.add_argument("--grocery", type=Path, default=GROCERY_ROOT, metavar="DIR",
                   help=f"grocery data folder (default {GROCERY_ROOT}; skipped when absent)")
    g.add_argument("--fashion", choices=["slice", "full", "none"], default="slice",
                   help="Fashion-MNIST: committed 1k slice (default), full 10k test set, or none")


def run_from_cli(args: argparse.Namespace, params: Mapping[str, object]) -> int:
    """``evaluate --suite``: run, print the summary table (and JSON with --out/--report)."""
    catalogs = []
    if Path(args.catalog).resolve() != DEMO_CATALOG.resolve():
        if not args.label:
            raise RecommenderError("a catalog in the suite needs --label COLUMN (e.g. --label category)")
        catalogs.append((args.catalog, args.label))
    params = {k: v for k, v in params.items() if k != "cache_dir"}  # one cache folder per suite catalog
    ks = sorted(set(args.k) | set(SUITE_KS))  # the headlines need P@5, P@10, R@1, R@5
    suite = run_suite(params, grocery_root=args.grocery, fashion=None if args.fashion == "none" else args.fashion,
                      catalogs=catalogs, cache_root=args.cache, ks=ks, log=lambda m: print(m, file=sys.stderr))
    print(summary_markdown(suite))
    out = args.out or args.report  # with --suite, --out names a folder: suite.json, summary.md, plots
    if out:
        print(f"report: {write_suite_report(suite, out)}", file=sys.stderr)
    return 0
