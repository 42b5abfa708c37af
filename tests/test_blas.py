"""BLAS limited to one thread for a query, and the libraries found at fit rather than in the first query."""

from __future__ import annotations

import numpy as np
import threadpoolctl

from recommender import HybridRecommender
from recommender.blas import find_blas_libraries, one_blas_thread


def test_one_thread_inside_and_the_limits_restored_after():
    libs = find_blas_libraries()
    assert libs, "numpy's OpenBLAS is always loaded"
    for lib in libs:
        lib.set_num_threads(2)
    with one_blas_thread():
        assert [lib.get_num_threads() for lib in libs] == [1] * len(libs)
    assert [lib.get_num_threads() for lib in libs] == [2] * len(libs)


def test_the_first_query_after_a_fit_does_not_look_for_libraries(demo_catalog, monkeypatch):
    rec = HybridRecommender().fit_vectors(demo_catalog, np.eye(len(demo_catalog), 8, dtype=np.float32))
    looks = []
    real = threadpoolctl.ThreadpoolController
    monkeypatch.setattr(threadpoolctl, "ThreadpoolController", lambda: looks.append(1) or real())
    first = rec.recommend(item=str(demo_catalog.items["id"].iat[0]), k=3)
    assert len(first.items) == 3
    assert looks == []  # threadpoolctl's first look (~17 ms) happened at fit
