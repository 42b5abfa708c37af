"""One BLAS thread for a call: small products gain nothing from a second thread on these machines."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

# threadpoolctl's controllers of the loaded BLAS libraries, and len(sys.modules) when they were found: numpy,
# scipy.linalg and faiss each load their own OpenBLAS when first imported, so a new import means a new look.
_BLAS_LIBS: tuple[int, list] = (-1, [])


def find_blas_libraries() -> list:
    """threadpoolctl's controllers of the BLAS libraries loaded now. The first look costs ~17 ms (it inspects every
    loaded library): a fit calls this at its end so that the first query does not pay it."""
    global _BLAS_LIBS
    if _BLAS_LIBS[0] != len(sys.modules):
        from threadpoolctl import ThreadpoolController

        libs = [lib for lib in ThreadpoolController().lib_controllers if lib.user_api == "blas"]
        _BLAS_LIBS = (len(sys.modules), libs)
    return _BLAS_LIBS[1]


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """A context manager limiting BLAS to one thread while it is open, restoring the limits after.

    Queries: their matrix-vector products over a few thousand rows are too small to gain from a second
    thread, and on 2 shared cores OpenBLAS's threads spin waiting for each other (a 1000 x 2280 float32
    product measured 45 ms with 2 threads against 4 ms with one, load ~10; a whole item query at 20k products
    31 against 13 ms CPU). implicit's ALS parallelises itself and wants BLAS single-threaded.
    The limit is process-wide while open, so other threads get one BLAS thread meanwhile. The libraries'
    own get/set calls are used directly: threadpoolctl's ``limit()`` walks every loaded library on each
    call (0.5-0.7 ms, a tenth of a 100k query; bench_candidates.py profile).
    """
    libs = find_blas_libraries()
    before = [lib.get_num_threads() for lib in libs]
    for lib, n in zip(libs, before, strict=True):
        if n != 1:
            lib.set_num_threads(1)
    try:
        yield
    finally:
        for lib, n in zip(libs, before, strict=True):
            if n != 1:
                lib.set_num_threads(n)
