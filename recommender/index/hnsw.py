"""Approximate cosine search with an HNSW graph (hnswlib), behind :class:`VectorIndex`.

Chosen over faiss-cpu and usearch by ``bench/bench_index.py libs`` (table and reasons in
``docs/index.md``): every operation the interface needs is native here - upsert (re-adding a label
moves its vector in place), ``mark_deleted``, ``resize_index`` growth, a filter applied *during* the
graph walk, ``save_index``/``load_index``.

Filters: an ``allow`` mask with few allowed ids (at most ``exact_below`` or ``exact_share`` of the
live ones) is answered by an exact scan of just those rows (their vectors read back from the
graph's storage, so no second copy is kept); a larger one is applied inside the search, with the
beam (``ef``) widened in proportion to how selective the filter is, so that recall holds.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from recommender.index.base import VectorIndex, check_ids
from recommender.index.exact import l2_normalise, top_k_among

#: Defaults measured on Fashion-MNIST CNN vectors tiled to 100k and 1M (docs/index.md): recall@10 >= .95
#: against the exact ranking in the same space, single-query p50 around a millisecond.
DEFAULT_M = 16
DEFAULT_EF_CONSTRUCTION = 100
DEFAULT_EF_SEARCH = 64
#: An allow-set this small (count, or share of the live ids) is scanned exactly: cheaper than a filtered
#: graph walk, which must visit about k / share nodes, and exact.
DEFAULT_EXACT_BELOW = 2_000
DEFAULT_EXACT_SHARE = 0.02
#: Cap on the widened beam of a filtered search.
MAX_FILTERED_EF = 1_024


class HNSWIndex(VectorIndex):
    """hnswlib HNSW graph over L2-normalised float32 vectors; labels are the caller's ids.

    Parameters: ``expected_size`` (initial capacity; the graph grows by doubling beyond it),
    ``m`` (graph degree), ``ef_construction``, ``ef_search`` (beam width of an unfiltered search),
    ``exact_below`` / ``exact_share`` (when a filtered search becomes an exact scan of the allowed rows),
    ``threads`` (for ``add``; searches of one query use one thread), ``seed``.
    """

    kind = "hnsw"
    _FILE = "hnsw.bin"
    _META = "hnsw.json"
    _LIVE = "live.npy"

    def __init__(
        self,
        dim: int,
        expected_size: int = 0,
        m: int = DEFAULT_M,
        ef_construction: int = DEFAULT_EF_CONSTRUCTION,
        ef_search: int = DEFAULT_EF_SEARCH,
        exact_below: int = DEFAULT_EXACT_BELOW,
        exact_share: float = DEFAULT_EXACT_SHARE,
        threads: int = -1,
        seed: int = 100,
    ) -> None:
        super().__init__(dim)
        if self.dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.expected_size = max(int(expected_size), 0)
        self.m = int(m)
        self.ef_construction = int(ef_construction)
        self.ef_search = int(ef_search)
        self.exact_below = int(exact_below)
        self.exact_share = float(exact_share)
        self.threads = int(threads)
        self.seed = int(seed)
        self._graph = None  # created on the first add: an empty hnswlib index still costs its capacity
        self._live = np.zeros(0, dtype=bool)  # by id: added and not removed
        self._n_live = 0

    # -- state -------------------------------------------------------------------------------
    @property
    def ntotal(self) -> int:
        return self._n_live

    @property
    def capacity(self) -> int:
        return 0 if self._graph is None else int(self._graph.get_max_elements())

    def _ensure(self, extra: int) -> None:
        import hnswlib

        if self._graph is None:
            self._graph = hnswlib.Index(space="ip", dim=self.dim)
            self._graph.init_index(max_elements=max(self.expected_size, extra, 16), M=self.m,
                                   ef_construction=self.ef_construction, random_seed=self.seed)
            self._graph.set_ef(self.ef_search)
            return
        need = self._graph.get_current_count() + extra
        if need > self._graph.get_max_elements():
            self._graph.resize_index(max(need, 2 * self._graph.get_max_elements()))

    def _grow_live(self, n: int) -> None:
        if n > len(self._live):
            live = np.zeros(max(n, 2 * len(self._live)), dtype=bool)
            live[:len(self._live)] = self._live
            self._live = live

    # -- VectorIndex -------------------------------------------------------------------------
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        x = l2_normalise(self._check(vectors))
        ids = check_ids(ids, len(x))
        if not len(ids):
            return
        # The last vector of an id repeated within one call wins, as in ExactIndex.
        _, last = np.unique(ids[::-1], return_index=True)
        keep = np.sort(len(ids) - 1 - last)
        ids, x = ids[keep], x[keep]
        self._grow_live(int(ids.max()) + 1)
        fresh = ~self._live[ids]
        self._ensure(int(fresh.sum()))
        # Re-adding a label updates its vector in place (and revives it if it was removed).
        self._graph.add_items(x, ids.astype(np.uint64), num_threads=self.threads)
        self._live[ids] = True
        self._n_live += int(fresh.sum())

    def remove(self, ids: np.ndarray) -> None:
        ids = np.unique(np.asarray(ids, dtype=np.int64).ravel())
        ids = ids[(ids >= 0) & (ids < len(self._live))]
        for i in ids[self._live[ids]]:
            self._graph.mark_deleted(int(i))
        self._n_live -= int(self._live[ids].sum())
        self._live[ids] = False

    def search(
        self, q: np.ndarray, k: int, allow: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        q = self._check_query(q)
        k = self._check_k(k)
        n_q = len(q)
        if self._n_live == 0 or k == 0:
            return np.full((n_q, k), -np.inf, np.float32), np.full((n_q, k), -1, np.int64)
        if allow is None:
            return self._graph_search(q, k, self.ef_search, None)
        allowed = self.allowed_ids(allow)
        if len(allowed) <= max(self.exact_below, k, self.exact_share * self._n_live):
            return self._exact_over(q, k, allowed)
        share = len(allowed) / self._n_live
        ef = int(min(MAX_FILTERED_EF, max(self.ef_search, self.ef_search / share ** 0.5)))
        mask = np.zeros(len(self._live), dtype=bool)
        mask[allowed] = True
        return self._graph_search(q, k, ef, mask)

    def get_vectors(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64).ravel()
        if len(ids) and (ids.min() < 0 or ids.max() >= len(self._live) or not self._live[ids].all()):
            raise KeyError("some ids are not in the index")
        if not len(ids):
            return np.zeros((0, self.dim), np.float32)
        return np.asarray(self._graph.get_items(ids.astype(np.uint64), return_type="numpy"), dtype=np.float32)

    # -- search paths ------------------------------------------------------------------------
    def allowed_ids(self, allow: np.ndarray) -> np.ndarray:
        """The live ids that ``allow`` (a boolean mask by id) permits, ascending."""
        allow = np.asarray(allow)
        if allow.dtype != bool or allow.ndim != 1:
            raise ValueError(f"allow must be a 1-d boolean mask by id, got {allow.dtype} {allow.shape}")
        n = min(len(allow), len(self._live))
        return np.flatnonzero(allow[:n] & self._live[:n])

    def _graph_search(self, q: np.ndarray, k: int, ef: int, mask: np.ndarray | None):
        k_eff = min(k, self._n_live)
        self._graph.set_ef(max(ef, k_eff))
        try:
            if mask is None:
                labels, dist = self._graph.knn_query(q, k_eff, num_threads=1)
            else:
                labels, dist = self._graph.knn_query(q, k_eff, num_threads=1, filter=mask.__getitem__)
        except RuntimeError:
            # hnswlib raises when the walk finds fewer than k (tiny or heavily deleted graphs): be exact.
            return self._exact_over(q, k, np.flatnonzero(self._live if mask is None else mask & self._live))
        finally:
            self._graph.set_ef(self.ef_search)
        scores = (1.0 - dist).astype(np.float32)  # hnswlib's "ip" distance is 1 - dot
        ids = labels.astype(np.int64)
        if k > k_eff:
            scores = np.pad(scores, ((0, 0), (0, k - k_eff)), constant_values=-np.inf)
            ids = np.pad(ids, ((0, 0), (0, k - k_eff)), constant_values=-1)
        return scores, ids

    def _exact_over(self, q: np.ndarray, k: int, allowed: np.ndarray):
        return top_k_among(q, self.get_vectors(allowed), allowed, k)

    # -- persistence -------------------------------------------------------------------------
    def save(self, folder: Path | str) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {"dim": self.dim, "m": self.m, "ef_construction": self.ef_construction, "ef_search": self.ef_search,
                "exact_below": self.exact_below, "exact_share": self.exact_share, "n_live": self._n_live,
                "empty": self._graph is None}
        if self._graph is not None:
            self._graph.save_index(str(folder / self._FILE))
        np.save(folder / self._LIVE, self._live)
        (folder / self._META).write_text(json.dumps(meta))

    @classmethod
    def load(cls, folder: Path | str) -> HNSWIndex:
        import hnswlib

        folder = Path(folder)
        meta = json.loads((folder / cls._META).read_text())
        index = cls(int(meta["dim"]), 0, int(meta["m"]), int(meta["ef_construction"]), int(meta["ef_search"]),
                    int(meta["exact_below"]), float(meta["exact_share"]))
        live = np.load(folder / cls._LIVE, allow_pickle=False)
        if live.dtype != bool or live.ndim != 1 or int(live.sum()) != int(meta["n_live"]):
            raise ValueError(f"{folder}: live-id mask does not match the saved index")
        if not meta["empty"]:
            graph = hnswlib.Index(space="ip", dim=index.dim)
            graph.load_index(str(folder / cls._FILE))
            if graph.dim != index.dim or graph.get_current_count() < int(live.sum()):
                raise ValueError(f"{folder}: the graph does not match its metadata")
            graph.set_ef(index.ef_search)
            index._graph = graph
        index._live = live
        index._n_live = int(live.sum())
        return index
