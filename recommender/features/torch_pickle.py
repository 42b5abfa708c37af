"""Read a legacy (pre-zip) PyTorch ``state_dict`` file with numpy only.

``torch.save(obj, f, _use_new_zipfile_serialization=False)`` (and every ``torch.save`` before
PyTorch 1.6) writes a flat stream:

1. a pickled magic number (``0x1950A86A20F9469CFC6C``),
2. a pickled protocol version (``1001``),
3. a pickled ``sys_info`` dict (endianness, C type sizes),
4. the pickled object itself; every tensor is ``torch._utils._rebuild_tensor_v2(storage, ...)``
   where ``storage`` is a *persistent id* ``('storage', StorageType, key, location, numel,
   view_metadata)`` instead of inline data,
5. a pickled list of the storage keys, in the order their bytes follow,
6. for each key: an 8-byte little-endian element count, then the raw element bytes.

Unpickling is arbitrary code execution if any global may be resolved, so we never call
``pickle.load``: :class:`_RestrictedUnpickler` resolves only the handful of names a state dict
needs, and maps them to inert placeholders, so torch is never imported (nor needed).
"""

from __future__ import annotations

import collections
import io
import math
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = [
    "LEGACY_MAGIC_NUMBER",
    "LEGACY_PROTOCOL_VERSION",
    "RefusedGlobalError",
    "load_legacy_torch_state_dict",
]

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

# Legacy storage classes -> numpy dtypes. The legacy format writes elements in the saving
# machine's byte order; we only accept little-endian files (checked against sys_info), so the
# dtypes are pinned to '<' and the result does not depend on this machine's byte order.
# BFloat16Storage is deliberately absent: numpy has no bfloat16, and silently widening it would
# hide a format surprise.
_STORAGE_DTYPES: dict[str, np.dtype] = {
    "DoubleStorage": np.dtype("<f8"),
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


# The placeholders are frozen *slotted* dataclasses: a hostile BUILD opcode can then neither
# update a __dict__ nor setattr on them, so fields validated at creation stay validated.
class RefusedGlobalError(pickle.UnpicklingError):
    """The pickle asked for a global (function/class) outside the allow-list; nothing was run."""


@dataclass(frozen=True, slots=True)
class _StorageType:
    """Inert stand-in for a ``torch.<X>Storage`` class: it only carries the element dtype."""

    name: str
    dtype: np.dtype


@dataclass(frozen=True, slots=True)
class _StorageRef:
    """A persistent id from the pickle: which storage (and which slice of it) a tensor uses.

    The storage bytes only come *after* the pickled object, so tensors are built lazily.
    """

    key: str
    dtype: np.dtype
    numel: int
    # Legacy files may share one storage between several "view" storages; a view is a
    # contiguous element range [view_offset, view_offset + numel) of the root storage.
    view_offset: int = 0


@dataclass(frozen=True, slots=True)
class _TensorRef:
    """Arguments of ``torch._utils._rebuild_tensor_v2``, resolved once storages are read."""

    storage: _StorageRef
    storage_offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _index(value: Any, what: str) -> int:
    """A non-negative Python int (bools and ints-in-disguise such as strings are refused)."""
    if type(value) is not int or value < 0:
        raise pickle.UnpicklingError(f"invalid {what}: {value!r}")
    return value


def _rebuild_tensor_v2(
    storage: _StorageRef,
    storage_offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    requires_grad: bool = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> _TensorRef:
    """Numpy-side replacement for ``torch._utils._rebuild_tensor_v2``.

    ``requires_grad``/``backward_hooks``/``metadata`` only matter to autograd, so they are
    accepted and dropped.
    """
    if not isinstance(storage, _StorageRef):
        raise pickle.UnpicklingError(f"tensor storage is not a persistent storage id: {storage!r}")
    if not isinstance(size, tuple) or not isinstance(stride, tuple) or len(size) != len(stride):
        raise pickle.UnpicklingError(f"tensor size {size!r} and stride {stride!r} are not matching tuples")
    # Negative strides or offsets would let as_strided (which does no bounds checks) read memory
    # outside the storage, so everything is pinned to non-negative ints here.
    size_t = tuple(_index(s, "tensor size") for s in size)
    stride_t = tuple(_index(s, "tensor stride") for s in stride)
    return _TensorRef(storage, _index(storage_offset, "storage offset"), size_t, stride_t)


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that can only build plain containers, tensor references and storage types.

    Anything else (``os.system``, ``builtins.eval``, ``torch.nn.Module`` subclasses...) raises
    :class:`pickle.UnpicklingError` *before* the object is looked up, so a hostile file cannot
    run code through ``REDUCE``/``BUILD``/``INST``.
    """

    def find_class(self, module: str, name: str) -> Any:
        # OrderedDict is what ``Module.state_dict()`` returns; it is also used for the (empty)
        # backward_hooks argument of _rebuild_tensor_v2.
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name, _STORAGE_DTYPES[name])
        raise RefusedGlobalError(f"refusing to load global {module}.{name} from a torch pickle")

    def persistent_load(self, pid: Any) -> _StorageRef:
        # ('storage', storage_type, root_key, location, numel[, view_metadata])
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        if len(pid) not in (5, 6):
            raise pickle.UnpicklingError(f"malformed storage persistent id {pid!r}")
        storage_type, key, _location, numel = pid[1:5]
        view_metadata = pid[5] if len(pid) == 6 else None
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unsupported storage type {storage_type!r}")
        if not isinstance(key, str):
            raise pickle.UnpicklingError(f"malformed storage persistent id {pid!r}")
        numel = _index(numel, "storage size")
        if view_metadata is None:
            return _StorageRef(key, storage_type.dtype, numel)
        # view_metadata = (view_key, offset_in_root, view_numel): the view is what the tensor sees.
        if not isinstance(view_metadata, tuple) or len(view_metadata) != 3:
            raise pickle.UnpicklingError(f"malformed storage view metadata {view_metadata!r}")
        _view_key, view_offset, view_numel = view_metadata
        return _StorageRef(
            key,
            storage_type.dtype,
            _index(view_numel, "storage view size"),
            _index(view_offset, "storage view offset"),
        )


def _load_record(f: IO[bytes]) -> Any:
    """One pickle record from the stream, through the restricted unpickler."""
    return _RestrictedUnpickler(f).load()


def _read_storages(f: IO[bytes], dtypes: dict[str, np.dtype], remaining: int) -> dict[str, np.ndarray]:
    """Read the storage-key list and the raw storage blobs that follow the pickled object."""
    keys = _load_record(f)
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ValueError("corrupt torch file: storage key list is not a list of strings")
    storages: dict[str, np.ndarray] = {}
    for key in keys:
        if key not in dtypes:
            raise ValueError(f"corrupt torch file: storage {key!r} is not referenced by any tensor")
        header = f.read(8)
        if len(header) != 8:
            raise ValueError(f"truncated torch file: no element count for storage {key!r}")
        (numel,) = struct.unpack("<q", header)
        dtype = dtypes[key]
        nbytes = numel * dtype.itemsize
        # Check against the real file size before reading so a forged count cannot make us
        # allocate gigabytes.
        if numel < 0 or nbytes > remaining - f.tell():
            raise ValueError(f"truncated torch file: storage {key!r} claims {numel} elements")
        data = f.read(nbytes)
        storages[key] = np.frombuffer(data, dtype=dtype, count=numel)
    missing = set(dtypes) - set(storages)
    if missing:
        raise ValueError(f"corrupt torch file: storages never written: {sorted(missing)[:5]}")
    return storages


def _materialise(ref: _TensorRef, storages: dict[str, np.ndarray]) -> np.ndarray:
    """Turn a tensor reference into a C-contiguous numpy array (a copy, never a view)."""
    root = storages[ref.storage.key]
    # The tensor indexes into its (possibly view) storage; fold both offsets into the root.
    start = ref.storage.view_offset + ref.storage_offset
    if ref.storage.view_offset + ref.storage.numel > root.size:
        raise ValueError(f"storage view of {ref.storage.key!r} exceeds the stored data")
    numel = math.prod(ref.size)
    if numel == 0:
        return np.zeros(ref.size, dtype=root.dtype)
    # Zero strides could expand a tiny storage into a huge array; parameters never do that, so
    # refuse it rather than allocate whatever a file asks for.
    if numel > ref.storage.numel:
        raise ValueError(f"tensor of {numel} elements is larger than its storage {ref.storage.key!r}")
    # Highest element index the strides can reach; as_strided does no bounds checking itself,
    # so this check is what keeps a malformed file from reading arbitrary memory.
    last = start + sum((n - 1) * s for n, s in zip(ref.size, ref.stride, strict=True))
    if last >= ref.storage.view_offset + ref.storage.numel or start >= root.size:
        raise ValueError(
            f"tensor (offset {start}, size {ref.size}, stride {ref.stride}) overruns storage "
            f"{ref.storage.key!r} of {root.size} elements"
        )
    base = root[start:]
    itemsize = root.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        base, shape=ref.size, strides=tuple(s * itemsize for s in ref.stride), writeable=False
    )
    # np.array(copy=True, order="C") detaches from the file buffer and fixes any odd strides.
    return np.array(view, copy=True, order="C")


def _check_header(f: IO[bytes]) -> None:
    head = f.read(4)
    f.seek(0)
    if head.startswith(b"PK\x03\x04"):
        raise ValueError(
            "this is a zip-format torch checkpoint (torch>=1.6 default); only the legacy "
            "format (_use_new_zipfile_serialization=False) is supported"
        )
    try:
        magic = _load_record(f)
    except RefusedGlobalError:
        raise  # a hostile pickle, not merely a foreign file: keep the precise error
    except Exception as exc:  # any decoding failure here just means "not a torch pickle"
        raise ValueError(f"not a legacy torch pickle: cannot read magic number ({exc})") from exc
    if magic != LEGACY_MAGIC_NUMBER:
        raise ValueError(f"not a legacy torch pickle: wrong magic number {magic!r}")
    version = _load_record(f)
    if version != LEGACY_PROTOCOL_VERSION:
        raise ValueError(f"unsupported legacy torch protocol version {version!r}")
    sys_info = _load_record(f)
    if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
        raise ValueError("only little-endian legacy torch files are supported")


def load_legacy_torch_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Load a legacy-format ``torch.save`` state dict as ``{name: C-contiguous ndarray}``.

    Raises ``ValueError`` for zip-format, truncated or otherwise malformed files and
    ``pickle.UnpicklingError`` if the pickle references any global outside the allow-list.
    """
    raw = Path(path).read_bytes()
    f = io.BytesIO(raw)
    _check_header(f)

    obj = _load_record(f)
    if not isinstance(obj, dict):
        raise ValueError(f"expected a state dict (mapping), got {type(obj).__name__}")
    refs: dict[str, _TensorRef] = {}
    for name, value in obj.items():
        if not isinstance(name, str) or not isinstance(value, _TensorRef):
            raise ValueError(f"state dict entry {name!r} is not a tensor")
        refs[name] = value

    # One storage may back several tensors; they must all agree on its dtype.
    dtypes: dict[str, np.dtype] = {}
    for name, ref in refs.items():
        previous = dtypes.setdefault(ref.storage.key, ref.storage.dtype)
        if previous != ref.storage.dtype:
            raise ValueError(f"storage {ref.storage.key!r} used with two dtypes (at {name!r})")

    storages = _read_storages(f, dtypes, len(raw))
    return {name: _materialise(ref, storages) for name, ref in refs.items()}
