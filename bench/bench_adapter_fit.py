"""What the façade's shop-photo adapter step costs on grocery: ``fit`` with ``adapter`` off / auto, with the
cross-validated decision cold (its cache removed) and then cached. Embeddings come from the suite's cache
(``.cache/suite/grocery``; a first run embeds the 2,640 ``train`` photos once).

Run from the repo root: ``python bench/bench_adapter_fit.py [--repeats 1]``
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from recommender.evaluation.grocery import GROCERY_ROOT, grocery_views, load_grocery  # noqa: E402
from recommender.recommender import HybridRecommender  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=Path(".cache/suite/grocery"))
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    catalog, _ = load_grocery()
    train = grocery_views(GROCERY_ROOT, "train", Path(tempfile.mkdtemp()) / "train.csv")
    for _ in range(args.repeats):
        for label in ("decision cold", "decision cached"):
            if label == "decision cold":
                shutil.rmtree(args.cache / "adapter", ignore_errors=True)
            for mode in ("off", "auto"):
                t0 = time.perf_counter()
                rec = HybridRecommender(backbone="efficientnet_lite0", cache_dir=args.cache, adapter=mode).fit(
                    catalog, photos=train)
                print(f"{label:16} adapter={mode:4} fit {time.perf_counter() - t0:6.1f} s  {rec.adapter_note_}",
                      flush=True)


if __name__ == "__main__":
    main()
