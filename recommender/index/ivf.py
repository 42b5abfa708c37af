"""Approximate cosine search with an inverted file (faiss IVF, float16 codes), behind :class:`VectorIndex`.

Chosen for the façade at a million products over HNSW by build time (docs/index.md, "IVF or HNSW"):
an HNSW graph over 1M 256-d vectors took 620 s to build on these 2 cores, far over a 3-minute fit,
whereas IVF trains k-means on a sample (``train_rows``) and then only assigns each vector to its
nearest centroid. A search scans the ``nprobe`` lists nearest the query.

Unlike faiss's HNSW, an IVF index removes and replaces vectors natively (``remove_ids``), so ids are
faiss's own labels (the caller's ids) and an upsert is a remove then an add: no slots, no tombstones.

Filters run inside the scan (an ``IDSelectorBitmap`` by id). A filter keeping a share ``s`` of the
live ids scans ``nprobe / sqrt(s)`` lists (more lists, because each holds fewer allowed vectors); at
or below ``exact_share`` every list is scanned: an exact search of the allowed vectors (in the
index's own space), costing one bitmap test per stored vector.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from recommender.index.base import FEW_DENIED, VectorIndex, search_all_but, upsert_batch
from recommender.index.exact import l2_normalise

#: Rows of k-means training per list (faiss warns below 39); the sample is at most :data:`MAX_TRAIN_ROWS`.
TRAIN_ROWS_PER_LIST = 64
MAX_TRAIN_ROWS = 131_072
DEFAULT_NPROBE = 16
DEFAULT_EXACT_SHARE = 0.02
STORAGES = ("float32", "float16")


def default_nlist(n: int) -> int:
    """Lists for ``n`` vectors: about ``sqrt(n)`` (1,000 at 1M: ~1k vectors a list), at least 1."""
    return int(min(max(round(math.sqrt(max(n, 1))), 1), 16_384))


class IVFIndex(VectorIndex):
    """faiss ``IndexIVFScalarQuantizer`` (fp16) or ``IndexIVFFlat`` over L2-normalised vectors, by the caller's ids.

    Parameters: ``expected_size`` (sets the number of lists, ``nlist``, unless given; the first ``add``
    trains the centroids on a sample of its rows, so it should hold a representative share of the
    catalog), ``nprobe`` (lists scanned by an unfiltered search), ``exact_share`` (at or below this
    share of the live ids, a filtered search scans every list), ``storage`` (``"float16"`` codes or
    ``"float32"``). Writes must not run concurrently with searches.
    """

    kind = "ivf"
    _FILE = "ivf.faiss"
    _STATE = "ivf-state.npz"
    _META = "ivf.json"

    def __init__(self, dim: int, expected_size: int = 0, nlist: int | None = None, nprobe: int = DEFAULT_NPROBE,
                 exact_share: float = DEFAULT_EXACT_SHARE, storage: str = "float16") -> None:
        super().__init__(dim)
        if self.dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        if storage not in STORAGES:
            raise ValueError(f"storage must be one of {', '.join(STORAGES)}, got {storage!r}")
        if nlist is not None and int(nlist) < 1:
            raise ValueError(f"nlist must be >= 1, got {nlist}")
        if int(nprobe) < 1:
            raise ValueError(f"nprobe must be >= 1, got {nprobe}")
        self.expected_size = max(int(expected_size), 0)
        self.nlist = None if nlist is None else int(nlist)
        self.nprobe = int(nprobe)
        self.exact_share = float(exact_share)
        self.storage = storage
        self._ivf = None  # trained on the first non-empty add
        self._live = np.zeros(0, dtype=bool)  # by id
        self._n_live = 0

    @property
    def ntotal(self) -> int:
        return self._n_live

    def _trained(self, x: np.ndarray):
        import faiss

        wanted = self.nlist or default_nlist(max(self.expected_size, len(x)))
        # k-means needs a few rows per centroid: a small first add gets fewer lists, fixed from then on.
        nlist = max(1, min(wanted, len(x) // 39))
        quantizer = faiss.IndexFlatIP(self.dim)
        if self.storage == "float16":
            ivf = faiss.IndexIVFScalarQuantizer(quantizer, self.dim, nlist, faiss.ScalarQuantizer.QT_fp16,
                                                faiss.METRIC_INNER_PRODUCT)
        else:
            ivf = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.own_fields = True
        quantizer.this.disown()  # the IVF index owns (and frees) its quantizer
        rows = min(len(x), MAX_TRAIN_ROWS, TRAIN_ROWS_PER_LIST * nlist)
        sample = x if rows == len(x) else x[np.sort(np.random.default_rng(0).choice(len(x), rows, replace=False))]
        ivf.cp.max_points_per_centroid = TRAIN_ROWS_PER_LIST  # no second subsampling inside faiss
        ivf.train(np.ascontiguousarray(sample))
        ivf.nprobe = min(self.nprobe, nlist)
        _with_direct_map(ivf)
        return ivf

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        x = l2_normalise(self._check(vectors))
        ids, x = upsert_batch(ids, x)
        if not len(ids):
            return
        if self._ivf is None:
            self._ivf = self._trained(x)
        self._drop(ids)  # upsert: the old vector of a present id goes first
        if int(ids.max()) >= len(self._live):
            grown = np.zeros(max(int(ids.max()) + 1, 2 * len(self._live)), dtype=bool)
            grown[:len(self._live)] = self._live
            self._live = grown
        for s in range(0, len(ids), 65_536):  # bounded temporaries on a million-row add
            self._ivf.add_with_ids(np.ascontiguousarray(x[s:s + 65_536]), ids[s:s + 65_536])
        self._live[ids] = True
        self._n_live += len(ids)

    def _drop(self, ids: np.ndarray) -> None:
        import faiss

        ids = ids[ids < len(self._live)]
        present = ids[self._live[ids]]
        if not len(present):
            return
        self._ivf.remove_ids(faiss.IDSelectorArray(present))  # the direct map removes by array only
        self._live[present] = False
        self._n_live -= len(present)

    def remove(self, ids: np.ndarray) -> None:
        ids = np.unique(np.asarray(ids, dtype=np.int64).ravel())
        if self._ivf is not None:
            self._drop(ids[ids >= 0])

    def search(self, q: np.ndarray, k: int, allow: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        q = self._check_query(q)
        k = self._check_k(k)
        if self._n_live == 0 or k == 0:
            return np.full((len(q), k), -np.inf, np.float32), np.full((len(q), k), -1, np.int64)
        nlist = self._ivf.nlist
        nprobe, sel, bits = min(self.nprobe, nlist), None, None
        if allow is not None:
            allow = np.asarray(allow)
            if allow.dtype != bool or allow.ndim != 1:
                raise ValueError(f"allow must be a 1-d boolean mask by id, got {allow.dtype} {allow.shape}")
            mask = np.zeros(len(self._live), dtype=bool)
            n = min(len(allow), len(mask))
            mask[:n] = allow[:n] & self._live[:n]
            kept = int(np.count_nonzero(mask))
            if kept == 0:
                return np.full((len(q), k), -np.inf, np.float32), np.full((len(q), k), -1, np.int64)
            if self._n_live - kept <= FEW_DENIED and kept > k:
                return search_all_but(self, q, k, allow, self._n_live - kept)
            share = kept / self._n_live
            nprobe = nlist if share <= self.exact_share else min(nlist, math.ceil(nprobe / math.sqrt(share)))
            bits = np.packbits(mask, bitorder="little")
            sel = faiss.IDSelectorBitmap(bits)  # `bits` stays referenced for the search
        params = faiss.SearchParametersIVF(sel=sel, nprobe=nprobe)
        scores, ids = self._ivf.search(np.ascontiguousarray(q), k, params=params)
        found = ids >= 0
        return np.where(found, scores, -np.inf).astype(np.float32), np.where(found, ids, -1).astype(np.int64)

    def get_vectors(self, ids: np.ndarray) -> np.ndarray:
        """The stored vectors of these live ids (decoded float16 codes), by faiss's id map."""
        ids = np.asarray(ids, dtype=np.int64).ravel()
        if len(ids) and (ids.min() < 0 or ids.max() >= len(self._live) or not self._live[ids].all()):
            raise KeyError("some ids are not in the index")
        if not len(ids):
            return np.zeros((0, self.dim), np.float32)
        return self._ivf.reconstruct_batch(ids).astype(np.float32, copy=False)

    # -- persistence -------------------------------------------------------------------------
    def save(self, folder: Path | str) -> None:
        import faiss

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {"dim": self.dim, "nlist": self.nlist, "nprobe": self.nprobe, "exact_share": self.exact_share,
                "storage": self.storage, "n_live": self._n_live}
        if self._ivf is not None:
            faiss.write_index(self._ivf, str(folder / self._FILE))
        np.savez(folder / self._STATE, live=self._live)
        (folder / self._META).write_text(json.dumps(meta))

    @classmethod
    def load(cls, folder: Path | str) -> IVFIndex:
        import faiss

        folder = Path(folder)
        meta = json.loads((folder / cls._META).read_text())
        index = cls(int(meta["dim"]), 0, meta["nlist"], int(meta["nprobe"]), float(meta["exact_share"]),
                    str(meta["storage"]))
        with np.load(folder / cls._STATE, allow_pickle=False) as state:
            live = state["live"]
        n_live = int(meta["n_live"])
        if live.dtype != bool or live.ndim != 1 or int(live.sum()) != n_live:
            raise ValueError(f"{folder}: the id table does not match the saved index")
        if n_live or (folder / cls._FILE).exists():
            ivf = faiss.read_index(str(folder / cls._FILE))
            if ivf.d != index.dim or ivf.ntotal != n_live:
                raise ValueError(f"{folder}: the inverted file does not match its id table")
            index._ivf = _with_direct_map(ivf)  # saved before the map existed: built from the lists
        index._live, index._n_live = live.copy(), n_live
        return index


def _with_direct_map(ivf):
    """``ivf`` with faiss's id -> (list, offset) hash map: what ``get_vectors`` (the index interface's stored
    vectors) reads, kept up to date by faiss on add and remove; 42 bytes a vector at 1M (bench_scale)."""
    import faiss

    if ivf.direct_map.type != faiss.DirectMap.Hashtable:
        ivf.set_direct_map_type(faiss.DirectMap.Hashtable)
    return ivf
