"""A terminal-sized summary of ``python -m recommender evaluate``: one table per protocol.

The full results (per-class figures, sweeps, examples: thousands of lines of JSON) go to ``--json``
or ``--out FILE``; this is what a person reads first. Means with their bootstrap 95% intervals.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

METHOD_LABELS = {
    "image": "image only", "metadata": "metadata only", "photo": "own photo uploaded",
    "default": "default", "colour0": "colour 0",
}
MULTI_VIEW_LABELS = {"photo": "shot as a photo query", "item": "shot as a catalog item"}


def _num(v: float | None, digits: int = 3) -> str:
    """``.865``, ``-.022``, ``1.000`` - the README's style."""
    if v is None:
        return "-"
    text = f"{v:.{digits}f}"
    return text.replace("0.", ".", 1) if text.startswith(("0.", "-0.")) else text


def _cell(summary: Mapping | None, with_ci: bool) -> str:
    if not isinstance(summary, Mapping) or summary.get("mean") is None:
        return "-"
    if not with_ci:
        return _num(summary["mean"])
    lo, hi = summary.get("ci95", [None, None])
    return f"{_num(summary['mean'])} [{_num(lo, 2)}, {_num(hi, 2)}]"


def _label(method: str, labels: Mapping[str, str] = METHOD_LABELS) -> str:
    if method.startswith("hybrid_w"):
        return f"hybrid w={method.removeprefix('hybrid_w')}"
    return labels.get(method, METHOD_LABELS.get(method, method))


def _ks(methods: Mapping[str, Mapping], family: str) -> list[int]:
    first = next(iter(methods.values()), {})
    return sorted(int(m.split("@")[1]) for m in first if m.startswith(f"{family}@"))


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
            .rstrip() for r in rows]


def method_table(methods: Mapping[str, Mapping], family: str, marked: str | None = None,
                 labels: Mapping[str, str] = METHOD_LABELS) -> list[str]:
    """Rows = methods, columns = ``family@k`` with intervals, then nDCG and MAP at the largest k."""
    ks = _ks(methods, family)
    if not ks:
        return []
    kmax = max(ks)
    head = ["method", *(f"{family}@{k}" for k in ks), f"nDCG@{kmax}", f"MAP@{kmax}"]
    rows = [head]
    for name, metrics in methods.items():
        label = _label(name, labels) + (" *" if name == marked else "")
        rows.append([label, *(_cell(metrics.get(f"{family}@{k}"), True) for k in ks),
                     _cell(metrics.get(f"nDCG@{kmax}"), False), _cell(metrics.get(f"MAP@{kmax}"), False)])
    return _table(rows)


def _comparisons(comparisons: Sequence[Mapping], labels: Mapping[str, str] = METHOD_LABELS) -> list[str]:
    out = []
    for c in comparisons:
        sign = "+" if c["mean_diff"] >= 0 else ""
        verdict = "significant" if c.get("significant") else "within noise"
        pair = f"{_label(c['a'], labels)} - {_label(c['b'], labels)}"
        out.append(f"  {pair}, {c['metric']}: {sign}{_num(c['mean_diff'])} "
                   f"[{_num(c['lo'], 2)}, {_num(c['hi'], 2)}] ({verdict})")
    return out


def _leave_one_out(r: Mapping) -> list[str]:
    best = r.get("best", {})
    sampled = r.get("n_sampled_from", r["n_queries"])
    lines = [f"Leave-one-out by {r['label']}: {r['n_queries']} queries over {r['n_products']} products "
             f"({r.get('n_skipped_queries', 0)} skipped"
             f"{f'; a seeded sample of the {sampled} eligible' if sampled > r['n_queries'] else ''})",
             f"  image pipeline: {r.get('image_pipeline', '')}"]
    if r.get("excluded_from_metadata"):
        lines.append(f"  kept out of the metadata side: {', '.join(r['excluded_from_metadata'])}")
    lines += ["", *method_table(r["methods"], "P", best.get("method"))]
    if best:
        lines.append(f"  * best hybrid by {best['by']}: w = {best['weight']:g}")
    lines += ["", "Paired differences (bootstrap 95%):", *_comparisons(r.get("comparisons", []))]
    if r.get("mmr"):
        lines += ["", "MMR diversity re-ranking of the best hybrid:"]
        for row in r["mmr"]:
            metric = next(k for k in row if k.startswith("P@"))
            div = next(k for k in row if k.startswith("diversity@"))
            lines.append(f"  lambda {row['lambda']:g}: {metric} {_cell(row[metric], True)}, "
                         f"{div} {_cell(row[div], True)}")
    return lines


def _multi_view(r: Mapping) -> list[str]:
    colour = r.get("colour_weight", {})
    lines = [f"Multi-view: {r['n_queries']} shots, each finding its product's other shots among {r['n_images']} "
             "images",
             f"  image pipeline: {r.get('image_pipeline', '')}; colour: photo {colour.get('photo', '?')}, "
             f"item {colour.get('item', '?')}", "", *method_table(r["methods"], "R", labels=MULTI_VIEW_LABELS)]
    sweep = r.get("colour_sweep") or []
    if sweep:
        metric = "R@5" if "R@5" in sweep[0] else next(k for k in sweep[0] if k.startswith("R@"))
        lines += ["", f"Colour sweep (photo queries, {metric}): " + ", ".join(
            f"{s['colour_weight']:g} -> {_num(s[metric]['mean'])}" for s in sweep)]
    lines += ["", "Paired differences (bootstrap 95%):", *_comparisons(r.get("comparisons", []), MULTI_VIEW_LABELS)]
    return lines


def _photo_to_product(r: Mapping) -> list[str]:
    return [f"Photo to product: {r['n_queries']} extra shots uploaded, {r['n_products']} products",
            f"  image pipeline: {r.get('image_pipeline', '')}; image weight {r.get('weight', '?')}", "",
            *method_table(r["methods"], "R"), "", "Paired differences (bootstrap 95%):",
            *_comparisons(r.get("comparisons", []))]


SECTIONS = {"leave_one_out": _leave_one_out, "multi_view": _multi_view, "photo_to_product": _photo_to_product}


def summary_text(results: Mapping[str, Mapping]) -> str:
    """The evaluation's results as a few readable tables (mean [95% interval] per method and metric)."""
    blocks = []
    for name, result in results.items():
        section = SECTIONS.get(name)
        if section is not None:
            blocks.append("\n".join(section(result)))
    return "\n\n".join(blocks) + "\n"
