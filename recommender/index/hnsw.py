"""Approximate cosine search with an HNSW graph (faiss-cpu), behind :class:`VectorIndex`.

Chosen over hnswlib and usearch by ``bench/bench_index.py libs`` (table and reasons in
``docs/index.md``): the three search an unfiltered query equally fast with equal recall, but only
faiss applies a filter inside the graph walk in C++ (an ``IDSelectorBitmap``: 0.2 ms p50 at 100k with
a 10% or 1% filter); hnswlib calls back into Python for every visited node (~13 us each: 1.3 ms at 10%,
37 ms at 1%) and usearch's Python API has no filter at all. faiss's HNSW cannot delete or overwrite
a vector, so this class keeps faiss's sequential *slots* apart from the caller's ids: an upsert appends a new slot and
tombstones the old one, a removal tombstones; tombstoned slots are excluded by the same bitmap
that carries filters, and :meth:`compact` (automatic once tombstones outnumber live vectors)
rebuilds the graph without them.

Filters: an ``allow`` set of at most ``exact_below`` ids or ``exact_share`` of the live ones is
answered by an exact scan of just those rows (read back from the graph's storage, no second copy);
a larger one runs inside the graph walk with the beam (``efSearch``) widened for its selectivity.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from recommender.index.base import FEW_DENIED, VectorIndex, search_all_but, upsert_batch
from recommender.index.exact import l2_normalise, top_k_among

#: Defaults measured on Fashion-MNIST CNN vectors tiled to 100k and 1M (docs/index.md).
DEFAULT_M = 16
DEFAULT_EF_CONSTRUCTION = 100
DEFAULT_EF_SEARCH = 64
#: An allow-set this small (count, or share of the live ids) is scanned exactly: a filtered graph walk
#: has to visit about k / share nodes, and loses recall, when the share is small.
DEFAULT_EXACT_BELOW = 2_000
DEFAULT_EXACT_SHARE = 0.02
#: A filtered walk uses the beam ``ef_search / (4 * share)``, at most ``MAX_FILTERED_EF``: measured at 100k
#: (docs/index.md), recall@10 in the index's own space needs ef >= 128 at a 10% filter (.992) and 512 at 3%
#: (.995); beyond 512 faiss's walk got an order of magnitude slower (ef 533: 52 ms, 1024: 23 ms, vs 1.3 ms at 512).
FILTERED_EF_PER_SHARE = 0.25
MAX_FILTERED_EF = 512
STORAGES = ("float32", "float16")


class HNSWIndex(VectorIndex):
    """faiss HNSW graph over L2-normalised vectors labelled by the caller's int64 ids.

    Parameters: ``expected_size`` (informational: the graph grows as vectors are added), ``m`` (graph
    degree), ``ef_construction``, ``ef_search`` (beam width of an unfiltered search), ``exact_below`` /
    ``exact_share`` (when a filtered search becomes an exact scan of the allowed rows), ``storage``
    (``"float32"``, or ``"float16"``: half the vector memory, scores within ~1e-3).
    Writes (``add``/``remove``/``compact``) must not run concurrently with searches (faiss HNSW is
    not safe for that); searches may run concurrently with each other.
    """

    kind = "hnsw"
    _GRAPH = "hnsw.faiss"
    _STATE = "hnsw-state.npz"
    _META = "hnsw.json"

    def __init__(
        self,
        dim: int,
        expected_size: int = 0,
        m: int = DEFAULT_M,
        ef_construction: int = DEFAULT_EF_CONSTRUCTION,
        ef_search: int = DEFAULT_EF_SEARCH,
        exact_below: int = DEFAULT_EXACT_BELOW,
        exact_share: float = DEFAULT_EXACT_SHARE,
        storage: str = "float32",
    ) -> None:
        super().__init__(dim)
        if self.dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        if storage not in STORAGES:
            raise ValueError(f"storage must be one of {', '.join(STORAGES)}, got {storage!r}")
        self.expected_size = max(int(expected_size), 0)
        self.m = int(m)
        self.ef_construction = int(ef_construction)
        self.ef_search = int(ef_search)
        self.exact_below = int(exact_below)
        self.exact_share = float(exact_share)
        self.storage = storage
        self._graph = None  # created on the first add
        self._label = np.zeros(0, dtype=np.int64)  # slot -> caller id
        self._alive = np.zeros(0, dtype=bool)  # slot -> not tombstoned
        self._slot = np.zeros(0, dtype=np.int64)  # caller id -> slot, -1 if absent
        self._n_slots = 0
        self._n_live = 0
        self._alive_bits = None  # cached packed bitmap of _alive (None: stale)
        self._live_ids = None  # cached bool mask by id (None: stale)

    # -- state -------------------------------------------------------------------------------
    @property
    def ntotal(self) -> int:
        return self._n_live

    @property
    def n_tombstones(self) -> int:
        return self._n_slots - self._n_live

    def _new_graph(self):
        import faiss

        if self.storage == "float16":
            graph = faiss.IndexHNSWSQ(self.dim, faiss.ScalarQuantizer.QT_fp16, self.m, faiss.METRIC_INNER_PRODUCT)
        else:
            graph = faiss.IndexHNSWFlat(self.dim, self.m, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = self.ef_construction
        graph.hnsw.efSearch = self.ef_search
        return graph

    @staticmethod
    def _grown(a: np.ndarray, n: int, fill) -> np.ndarray:
        if n <= len(a):
            return a
        out = np.full(max(n, 2 * len(a)), fill, dtype=a.dtype)
        out[:len(a)] = a
        return out

    # -- VectorIndex -------------------------------------------------------------------------
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        x = l2_normalise(self._check(vectors))
        ids, x = upsert_batch(ids, x)
        if not len(ids):
            return
        if self._graph is None:
            self._graph = self._new_graph()
            if self.storage == "float16":
                self._graph.train(x[:1])  # fp16 needs no statistics; faiss still wants the call
        self._slot = self._grown(self._slot, int(ids.max()) + 1, -1)
        old = self._slot[ids]
        replaced = old[old >= 0]
        self._alive[replaced] = False  # upsert: tombstone the old slot, append the new vector
        start = self._n_slots
        self._graph.add(np.ascontiguousarray(x))
        self._n_slots = start + len(ids)
        self._label = self._grown(self._label, self._n_slots, -1)
        self._alive = self._grown(self._alive, self._n_slots, False)
        self._label[start:self._n_slots] = ids
        self._alive[start:self._n_slots] = True
        self._slot[ids] = np.arange(start, self._n_slots)
        self._n_live += len(ids) - len(replaced)
        self._alive_bits = self._live_ids = None
        self._maybe_compact()

    def remove(self, ids: np.ndarray) -> None:
        ids = np.unique(np.asarray(ids, dtype=np.int64).ravel())
        ids = ids[(ids >= 0) & (ids < len(self._slot))]
        slots = self._slot[ids]
        slots = slots[slots >= 0]
        if not len(slots):
            return
        self._alive[slots] = False
        self._slot[self._label[slots]] = -1
        self._n_live -= len(slots)
        self._alive_bits = self._live_ids = None
        self._maybe_compact()

    def _maybe_compact(self) -> None:
        # Amortised: a rebuild costs about what adding the live vectors cost, and is due only after as many
        # tombstones accumulated.
        if self.n_tombstones > max(self._n_live, 10_000):
            self.compact()

    def compact(self) -> None:
        """Rebuild the graph from the live vectors only (drops tombstones; ids and answers unchanged)."""
        live_slots = np.flatnonzero(self._alive[:self._n_slots])
        labels = self._label[live_slots]
        vectors = self._reconstruct(live_slots)
        self._graph = None
        self._label = np.zeros(0, dtype=np.int64)
        self._alive = np.zeros(0, dtype=bool)
        self._slot = np.full(len(self._slot), -1, dtype=np.int64)
        self._n_slots = self._n_live = 0
        self._alive_bits = self._live_ids = None
        if len(labels):
            self.add(labels, vectors)

    def search(
        self, q: np.ndarray, k: int, allow: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        q = self._check_query(q)
        k = self._check_k(k)
        if self._n_live == 0 or k == 0:
            return np.full((len(q), k), -np.inf, np.float32), np.full((len(q), k), -1, np.int64)
        if allow is None:
            bits = None
            if self.n_tombstones:
                if self._alive_bits is None:
                    self._alive_bits = np.packbits(self._alive[:self._n_slots], bitorder="little")
                bits = self._alive_bits
            return self._graph_search(q, k, self.ef_search, bits)
        denied = self._n_live - self._count_allowed(allow)
        if denied <= FEW_DENIED and self._n_live - denied > k:
            return search_all_but(self, q, k, allow, denied)
        allowed = self.allowed_ids(allow)
        if len(allowed) <= max(self.exact_below, k, self.exact_share * self._n_live):
            return top_k_among(q, self._reconstruct(self._slot[allowed]), allowed, k)
        share = len(allowed) / self._n_live
        ef = int(min(MAX_FILTERED_EF, max(self.ef_search * FILTERED_EF_PER_SHARE / share, self.ef_search, k)))
        mask = np.zeros(self._n_slots, dtype=bool)
        mask[self._slot[allowed]] = True
        return self._graph_search(q, k, ef, np.packbits(mask, bitorder="little"))

    def _allowed_live(self, allow: np.ndarray) -> np.ndarray:
        """``allow`` (a boolean mask by id) and-ed with the live ids, over the ids both cover."""
        allow = np.asarray(allow)
        if allow.dtype != bool or allow.ndim != 1:
            raise ValueError(f"allow must be a 1-d boolean mask by id, got {allow.dtype} {allow.shape}")
        if self._live_ids is None:
            self._live_ids = self._slot >= 0
        n = min(len(allow), len(self._slot))
        return allow[:n] & self._live_ids[:n]

    def _count_allowed(self, allow: np.ndarray) -> int:
        return int(np.count_nonzero(self._allowed_live(allow)))

    def get_vectors(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64).ravel()
        if len(ids) and (ids.min() < 0 or ids.max() >= len(self._slot) or (self._slot[ids] < 0).any()):
            raise KeyError("some ids are not in the index")
        return self._reconstruct(self._slot[ids])

    def allowed_ids(self, allow: np.ndarray) -> np.ndarray:
        """The live ids that ``allow`` (a boolean mask by id) permits, ascending."""
        return np.flatnonzero(self._allowed_live(allow))

    # -- search paths ------------------------------------------------------------------------
    def _stored(self) -> np.ndarray:
        """A zero-copy numpy view of the graph's vector storage (float32 or float16), valid until the next add."""
        import faiss

        storage = faiss.downcast_index(self._graph.storage)
        n = self._graph.ntotal
        if self.storage == "float16":
            raw = faiss.rev_swig_ptr(storage.codes.data(), n * storage.code_size)
            return raw.view(np.float16).reshape(n, self.dim)
        return faiss.rev_swig_ptr(storage.get_xb(), n * self.dim).reshape(n, self.dim)

    def _reconstruct(self, slots: np.ndarray) -> np.ndarray:
        # Gathering rows from the storage view is ~2x faster than faiss's reconstruct_batch (10k rows: 18 vs 41 ms).
        if not len(slots):
            return np.zeros((0, self.dim), np.float32)
        return self._stored()[np.asarray(slots, dtype=np.int64)].astype(np.float32, copy=False)

    def _graph_search(self, q: np.ndarray, k: int, ef: int, bits: np.ndarray | None):
        import faiss

        k_eff = min(k, self._n_slots)
        sel = None if bits is None else faiss.IDSelectorBitmap(bits)  # `bits` stays referenced for the search
        params = faiss.SearchParametersHNSW(sel=sel, efSearch=max(ef, k_eff))
        scores, slots = self._graph.search(np.ascontiguousarray(q), k_eff, params=params)
        found = slots >= 0
        ids = np.where(found, self._label[np.maximum(slots, 0)], -1)
        scores = np.where(found, scores, -np.inf).astype(np.float32)
        if k > k_eff:
            scores = np.pad(scores, ((0, 0), (0, k - k_eff)), constant_values=-np.inf)
            ids = np.pad(ids, ((0, 0), (0, k - k_eff)), constant_values=-1)
        return scores, ids

    # -- persistence -------------------------------------------------------------------------
    def save(self, folder: Path | str) -> None:
        import faiss

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {"dim": self.dim, "m": self.m, "ef_construction": self.ef_construction, "ef_search": self.ef_search,
                "exact_below": self.exact_below, "exact_share": self.exact_share, "storage": self.storage,
                "n_slots": self._n_slots, "n_live": self._n_live}
        if self._graph is not None:
            faiss.write_index(self._graph, str(folder / self._GRAPH))
        np.savez(folder / self._STATE, label=self._label[:self._n_slots], alive=self._alive[:self._n_slots],
                 n_ids=np.int64(len(self._slot)))
        (folder / self._META).write_text(json.dumps(meta))

    @classmethod
    def load(cls, folder: Path | str) -> HNSWIndex:
        import faiss

        folder = Path(folder)
        meta = json.loads((folder / cls._META).read_text())
        index = cls(int(meta["dim"]), 0, int(meta["m"]), int(meta["ef_construction"]), int(meta["ef_search"]),
                    int(meta["exact_below"]), float(meta["exact_share"]), str(meta["storage"]))
        with np.load(folder / cls._STATE, allow_pickle=False) as state:
            label, alive, n_ids = state["label"], state["alive"], int(state["n_ids"])
        n_slots, n_live = int(meta["n_slots"]), int(meta["n_live"])
        if (label.dtype != np.int64 or alive.dtype != bool or label.shape != (n_slots,) or alive.shape != (n_slots,)
                or int(alive.sum()) != n_live or (n_slots and (label.min() < 0 or label.max() >= n_ids))):
            raise ValueError(f"{folder}: slot table does not match the saved index")
        live_labels = label[alive]
        if len(np.unique(live_labels)) != n_live:
            raise ValueError(f"{folder}: an id is live in two slots")
        if n_slots:
            graph = faiss.read_index(str(folder / cls._GRAPH))
            if graph.d != index.dim or graph.ntotal != n_slots:
                raise ValueError(f"{folder}: the graph does not match its slot table")
            graph.hnsw.efSearch = index.ef_search
            index._graph = graph
        index._label, index._alive = label.copy(), alive.copy()
        index._slot = np.full(n_ids, -1, dtype=np.int64)
        index._slot[live_labels] = np.flatnonzero(alive)
        index._n_slots, index._n_live = n_slots, n_live
        return index
