"""One BLAS thread for a call: small products gain nothing from a second thread on these machines."""

from __future__ import annotations

_CONTROLLER = None  # threadpoolctl's controller, made on first use (it walks the loaded libraries)


def one_blas_thread():
    """A context manager limiting BLAS to one thread while it is open, restoring the limits after.

    Queries: their matrix-vector products over a few thousand rows are too small to gain from a second
    thread, and on 2 shared cores OpenBLAS's threads spin waiting for each other (a 1000 x 2280 float32
    product measured 45 ms with 2 threads against 4 ms with one, load ~10; a whole item query at 20k products
    31 against 13 ms CPU). implicit's ALS parallelises itself and wants BLAS single-threaded.
    The limit is process-wide while open (threadpoolctl), so other threads get one BLAS thread meanwhile.
    """
    global _CONTROLLER
    if _CONTROLLER is None:
        from threadpoolctl import ThreadpoolController

        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=1, user_api="blas")
