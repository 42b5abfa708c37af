"""Extra CPU of query expansion (``qe_k``) per item query on a large catalog's candidate set.

    python bench/bench_query_expansion.py [--n 200000] [--candidates 768] [--queries 200]

A micro-benchmark of the functions the façade runs after its first pass (recommender/ranking/expansion.py):
the first ranking's top ``qe_k`` (2), both query expansions, and both sides re-scored over the same candidate
rows, with their float32 vectors as the first pass gathered them. Random vectors in bfloat16 (the serving
dtype beside an ANN index) and a words-only sparse metadata matrix (MiniLM is off at 1M), one BLAS thread as
in ``recommend``. Quality figures: ``bench_suite_levers.py --rows qe-off,baseline,...`` (docs/evaluation.md).
"""

from __future__ import annotations

import argparse
import sys
import time
import timeit
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.preprocessing import normalize

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recommender.blas import one_blas_thread  # noqa: E402
from recommender.ranking.expansion import expand_dense, expand_sparse  # noqa: E402
from recommender.ranking.hybrid import rank_candidates  # noqa: E402
from recommender.scoring import dense_scores, sparse_scores  # noqa: E402
from recommender.store.vector_file import BFLOAT16  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--candidates", type=int, default=768)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--qe-k", type=int, default=2)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    n, nnz, vocab = args.n, 30, 50_000
    vectors = rng.standard_normal((n, args.dim), dtype=np.float32).astype(BFLOAT16)
    meta = sp.csr_matrix((rng.random(n * nnz, dtype=np.float32), rng.integers(0, vocab, n * nnz),
                          np.arange(0, n * nnz + 1, nnz)), shape=(n, vocab))
    meta.sum_duplicates()
    meta = normalize(meta).astype(np.float32)
    extra = []
    with one_blas_thread():
        for _ in range(args.queries):
            rows = np.sort(rng.choice(n, args.candidates, replace=False))
            q, q_meta = np.asarray(vectors[rows[0]], np.float32), meta[rows[0]]
            block = np.asarray(vectors[rows], np.float32)  # the first pass's gather, kept
            img, met = block @ q, sparse_scores(meta, q_meta, rows)
            c = time.process_time()
            top = rank_candidates(rows, img, met, args.qe_k, 0.7).positions
            q2, q2_meta = expand_dense(q, vectors, top, 0.0), expand_sparse(q_meta, meta, top, 0.0)
            _ = block @ q2, sparse_scores(meta, q2_meta, rows)
            extra.append((time.process_time() - c) * 1e3)
        print(f"extra CPU per item query ({args.candidates} candidates, n={n}): p50 {np.percentile(extra, 50):.2f} ms, "
              f"p99 {np.percentile(extra, 99):.2f} ms")
        parts = {"first-pass top-k": lambda: rank_candidates(rows, img, met, args.qe_k, 0.7),
                 "expand image vector": lambda: expand_dense(q, vectors, top, 0.0),
                 "expand metadata row": lambda: expand_sparse(q_meta, meta, top, 0.0),
                 "re-score image (kept block)": lambda: block @ q2,
                 "re-score metadata": lambda: sparse_scores(meta, q2_meta, rows),
                 "(a second bfloat16 gather, avoided)": lambda: dense_scores(vectors, q2, rows)}
        for name, fn in parts.items():
            print(f"  {name:<38}{min(timeit.repeat(fn, number=20, repeat=3)) / 20 * 1e3:6.2f} ms")


if __name__ == "__main__":
    main()
