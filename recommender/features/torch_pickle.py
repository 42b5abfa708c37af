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

A hostile file cannot hang or exhaust the reader either: it runs on the pure-Python unpickler with
a budget of opcodes per record, only the opcodes a state dict uses (no sets, no object
construction), dict keys limited to strings and ints (no hash of a memoised "billion laughs"
tuple), and no error message ever formats what the file built (only its type and a bounded
excerpt). Every failure is one documented type: :class:`WeightsFileError` (a ``ValueError`` and a
``RecommenderError``); refused globals are its subclass :class:`RefusedGlobalError`.
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

from recommender.errors import WeightsFileError

__all__ = [
    "LEGACY_MAGIC_NUMBER",
    "LEGACY_PROTOCOL_VERSION",
    "RefusedGlobalError",
    "WeightsFileError",
    "load_legacy_torch_state_dict",
]

# A real state dict record takes ~30 opcodes per tensor (EfficientNet-Lite0: ~8k in all); the raw
# tensor bytes follow outside the pickle. Anything far beyond is not a state dict.
MAX_RECORD_OPCODES = 2_000_000
MAX_FILE_BYTES = 2 << 30

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
class RefusedGlobalError(WeightsFileError):
    """The pickle asked for a global (function/class) outside the allow-list; nothing was run."""


def _describe(value: Any, limit: int = 60) -> str:
    """A bounded description of something a file built: never a full repr (a memoised structure
    of 40 levels repr()s to 2**40 elements; 100k levels of nesting overflow the stack)."""
    if isinstance(value, str | bytes) or type(value) in (int, float, bool) or value is None:
        text = value[:limit] if isinstance(value, str | bytes) else value
        shown = repr(text) if not isinstance(value, int) or value.bit_length() < 200 else "<huge int>"
        return shown + ("..." if isinstance(value, str | bytes) and len(value) > limit else "")
    if isinstance(value, tuple | list | dict):
        return f"a {type(value).__name__} of {len(value)} items"
    return f"a {type(value).__name__}"


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
        raise WeightsFileError(f"invalid {what}: {_describe(value)}")
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
        raise WeightsFileError(f"tensor storage is not a persistent storage id: {_describe(storage)}")
    if not isinstance(size, tuple) or not isinstance(stride, tuple) or len(size) != len(stride):
        raise WeightsFileError(f"tensor size ({_describe(size)}) and stride ({_describe(stride)}) "
                               "are not matching tuples")
    # Negative strides or offsets would let as_strided (which does no bounds checks) read memory
    # outside the storage, so everything is pinned to non-negative ints here.
    size_t = tuple(_index(s, "tensor size") for s in size)
    stride_t = tuple(_index(s, "tensor stride") for s in stride)
    return _TensorRef(storage, _index(storage_offset, "storage offset"), size_t, stride_t)


def _ordered_dict(*args: Any) -> collections.OrderedDict:
    """``OrderedDict()`` as a state dict's REDUCE calls it; built from pairs only with str/int keys."""
    if not args:
        return collections.OrderedDict()
    if len(args) != 1 or not isinstance(args[0], list):
        raise WeightsFileError("OrderedDict called with unexpected arguments")
    out = collections.OrderedDict()
    for pair in args[0]:
        if not (isinstance(pair, list | tuple) and len(pair) == 2 and type(pair[0]) in (str, int)):
            raise WeightsFileError("OrderedDict built from something other than (name, value) pairs")
        out[pair[0]] = pair[1]
    return out


class _RestrictedUnpickler(pickle._Unpickler):  # noqa: SLF001 - the pure-Python one can be bounded
    """Unpickler that can only build plain containers, tensor references and storage types.

    Anything else (``os.system``, ``builtins.eval``, ``torch.nn.Module`` subclasses...) raises
    :class:`RefusedGlobalError` *before* the object is looked up, so a hostile file cannot run
    code through ``REDUCE``/``BUILD``; ``INST``/``OBJ``/``NEWOBJ``, sets and extension codes are
    not opcodes a state dict uses and are refused outright. Dict keys must be ``str`` or ``int``.
    """

    dispatch = dict(pickle._Unpickler.dispatch)  # noqa: SLF001

    def __init__(self, f: IO[bytes]) -> None:
        super().__init__(f)
        self._budget = MAX_RECORD_OPCODES

    def _setitems(self) -> None:
        items = self.pop_mark()
        target = self.stack[-1]
        if len(items) % 2:
            raise WeightsFileError("SETITEMS with an odd number of items")
        for i in range(0, len(items), 2):
            _set(target, items[i], items[i + 1])

    def _setitem(self) -> None:
        value = self.stack.pop()
        key = self.stack.pop()
        _set(self.stack[-1], key, value)

    def find_class(self, module: str, name: str) -> Any:
        # OrderedDict is what ``Module.state_dict()`` returns; it is also used for the (empty)
        # backward_hooks argument of _rebuild_tensor_v2.
        if (module, name) == ("collections", "OrderedDict"):
            return _ordered_dict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name, _STORAGE_DTYPES[name])
        raise RefusedGlobalError(f"refusing to load global {str(module)[:100]}.{str(name)[:100]} "
                                 "from a torch pickle")

    def persistent_load(self, pid: Any) -> _StorageRef:
        # ('storage', storage_type, root_key, location, numel[, view_metadata])
        if not isinstance(pid, tuple) or not pid or not isinstance(pid[0], str) or pid[0] != "storage":
            raise WeightsFileError(f"unsupported persistent id ({_describe(pid)})")
        if len(pid) not in (5, 6):
            raise WeightsFileError(f"malformed storage persistent id ({_describe(pid)})")
        storage_type, key, _location, numel = pid[1:5]
        view_metadata = pid[5] if len(pid) == 6 else None
        if not isinstance(storage_type, _StorageType):
            raise WeightsFileError(f"unsupported storage type ({_describe(storage_type)})")
        if not isinstance(key, str):
            raise WeightsFileError(f"malformed storage key ({_describe(key)})")
        numel = _index(numel, "storage size")
        if view_metadata is None:
            return _StorageRef(key, storage_type.dtype, numel)
        # view_metadata = (view_key, offset_in_root, view_numel): the view is what the tensor sees.
        if not isinstance(view_metadata, tuple) or len(view_metadata) != 3:
            raise WeightsFileError(f"malformed storage view metadata ({_describe(view_metadata)})")
        _view_key, view_offset, view_numel = view_metadata
        return _StorageRef(
            key,
            storage_type.dtype,
            _index(view_numel, "storage view size"),
            _index(view_offset, "storage view offset"),
        )


def _set(target: Any, key: Any, value: Any) -> None:
    # Only str/int keys: hashing a memoised tuple-of-tuples would take 2**depth steps.
    if type(key) not in (str, int):
        raise WeightsFileError(f"dict key is {_describe(key)}, not a name")
    if not isinstance(target, dict):
        raise WeightsFileError(f"SETITEM on {_describe(target)}")
    target[key] = value


def _refused(self: _RestrictedUnpickler) -> None:
    raise WeightsFileError("the pickle uses an opcode a state dict never needs (object construction, "
                           "sets, extension codes or protocol-5 buffers)")


def _counted(op: Any) -> Any:
    def run(self: _RestrictedUnpickler) -> None:
        self._budget -= 1
        if self._budget < 0:
            raise WeightsFileError(f"a record of over {MAX_RECORD_OPCODES:,} pickle opcodes is not a state dict")
        op(self)
    return run


for _code, _op in list(_RestrictedUnpickler.dispatch.items()):
    _RestrictedUnpickler.dispatch[_code] = _counted(_op)
for _opcode in (pickle.SETITEM, pickle.SETITEMS):
    _RestrictedUnpickler.dispatch[_opcode[0]] = _counted(
        _RestrictedUnpickler._setitem if _opcode == pickle.SETITEM else _RestrictedUnpickler._setitems)
# BYTEARRAY8 allocates the length it claims before reading (a 556-byte file asked for 14 GB in the
# fuzz); out-of-band buffers need a buffer list we never give. Torch's legacy format is protocol 2.
for _opcode in (pickle.INST, pickle.OBJ, pickle.NEWOBJ, pickle.NEWOBJ_EX, pickle.EMPTY_SET, pickle.ADDITEMS,
                pickle.FROZENSET, pickle.EXT1, pickle.EXT2, pickle.EXT4, pickle.BYTEARRAY8, pickle.NEXT_BUFFER,
                pickle.READONLY_BUFFER):
    _RestrictedUnpickler.dispatch[_opcode[0]] = _refused
del _code, _op, _opcode


def _load_record(f: IO[bytes]) -> Any:
    """One pickle record from the stream, through the restricted unpickler."""
    return _RestrictedUnpickler(f).load()


def _read_storages(f: IO[bytes], dtypes: dict[str, np.dtype], remaining: int) -> dict[str, np.ndarray]:
    """Read the storage-key list and the raw storage blobs that follow the pickled object."""
    keys = _load_record(f)
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise WeightsFileError("corrupt torch file: storage key list is not a list of strings")
    storages: dict[str, np.ndarray] = {}
    for key in keys:
        if key not in dtypes:
            raise WeightsFileError(f"corrupt torch file: storage {_describe(key)} is not referenced by any tensor")
        header = f.read(8)
        if len(header) != 8:
            raise WeightsFileError(f"truncated torch file: no element count for storage {_describe(key)}")
        (numel,) = struct.unpack("<q", header)
        dtype = dtypes[key]
        nbytes = numel * dtype.itemsize
        # Check against the real file size before reading so a forged count cannot make us
        # allocate gigabytes.
        if numel < 0 or nbytes > remaining - f.tell():
            raise WeightsFileError(f"truncated torch file: storage {_describe(key)} claims {numel} elements")
        data = f.read(nbytes)
        storages[key] = np.frombuffer(data, dtype=dtype, count=numel)
    missing = set(dtypes) - set(storages)
    if missing:
        raise WeightsFileError(f"corrupt torch file: {len(missing)} storage(s) never written, e.g. "
                               f"{_describe(sorted(missing)[0])}")
    return storages


def _materialise(ref: _TensorRef, storages: dict[str, np.ndarray]) -> np.ndarray:
    """Turn a tensor reference into a C-contiguous numpy array (a copy, never a view)."""
    root = storages[ref.storage.key]
    # The tensor indexes into its (possibly view) storage; fold both offsets into the root.
    start = ref.storage.view_offset + ref.storage_offset
    if ref.storage.view_offset + ref.storage.numel > root.size:
        raise WeightsFileError(f"storage view of {_describe(ref.storage.key)} exceeds the stored data")
    numel = math.prod(ref.size)
    if numel == 0:
        return np.zeros(ref.size, dtype=root.dtype)
    # Zero strides could expand a tiny storage into a huge array; parameters never do that, so
    # refuse it rather than allocate whatever a file asks for.
    if numel > ref.storage.numel:
        raise WeightsFileError(f"tensor of {numel} elements is larger than its storage {_describe(ref.storage.key)}")
    # Highest element index the strides can reach; as_strided does no bounds checking itself,
    # so this check is what keeps a malformed file from reading arbitrary memory.
    last = start + sum((n - 1) * s for n, s in zip(ref.size, ref.stride, strict=True))
    if last >= ref.storage.view_offset + ref.storage.numel or start >= root.size:
        raise WeightsFileError(
            f"tensor (offset {start}, {len(ref.size)} dimensions) overruns storage "
            f"{_describe(ref.storage.key)} of {root.size} elements"
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
        raise WeightsFileError(
            "this is a zip-format torch checkpoint (torch>=1.6 default); only the legacy "
            "format (_use_new_zipfile_serialization=False) is supported"
        )
    try:
        magic = _load_record(f)
    except RefusedGlobalError:
        raise  # a hostile pickle, not merely a foreign file: keep the precise error
    except Exception as exc:  # noqa: BLE001 - any decoding failure here just means "not a torch pickle"
        raise WeightsFileError(f"not a legacy torch pickle: cannot read magic number ({_error_text(exc)})") from None
    if type(magic) is not int or magic != LEGACY_MAGIC_NUMBER:
        raise WeightsFileError(f"not a legacy torch pickle: wrong magic number ({_describe(magic)})")
    version = _load_record(f)
    if type(version) is not int or version != LEGACY_PROTOCOL_VERSION:
        raise WeightsFileError(f"unsupported legacy torch protocol version ({_describe(version)})")
    sys_info = _load_record(f)
    if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
        raise WeightsFileError("only little-endian legacy torch files are supported")


def _error_text(exc: BaseException) -> str:
    # Our own messages are bounded already; the pickle module's can quote what the file holds.
    text = str(exc) if isinstance(exc, WeightsFileError) else type(exc).__name__ + (
        f": {str(exc)[:120]}" if isinstance(exc, pickle.UnpicklingError | EOFError | ValueError) else "")
    return text.splitlines()[0] if text else type(exc).__name__


def load_legacy_torch_state_dict(path: str | Path, max_bytes: int = MAX_FILE_BYTES) -> dict[str, np.ndarray]:
    """Load a legacy-format ``torch.save`` state dict as ``{name: C-contiguous ndarray}``.

    Raises :class:`WeightsFileError` (a ``ValueError``) for a missing, zip-format, truncated,
    oversized, malformed or hostile file - and only that; :class:`RefusedGlobalError`, its
    subclass, if the pickle references any global outside the allow-list (nothing is run).
    """
    try:
        return _load(Path(path), max_bytes)
    except WeightsFileError:
        raise
    except MemoryError:
        raise WeightsFileError(f"{path}: too large to read into memory") from None
    except Exception as exc:  # noqa: BLE001 - the parse boundary of an untrusted file, one error type
        raise WeightsFileError(f"{path}: malformed torch file ({_error_text(exc)})") from None


def _load(path: Path, max_bytes: int) -> dict[str, np.ndarray]:
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise WeightsFileError(f"{path}: {size:,} bytes is larger than any weights file read here "
                                   f"(limit {max_bytes:,})")
        raw = path.read_bytes()
    except OSError as exc:
        raise WeightsFileError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    f = io.BytesIO(raw)
    _check_header(f)

    obj = _load_record(f)
    if not isinstance(obj, dict):
        raise WeightsFileError(f"expected a state dict (mapping), got {type(obj).__name__}")
    refs: dict[str, _TensorRef] = {}
    for name, value in obj.items():
        if not isinstance(name, str) or not isinstance(value, _TensorRef):
            raise WeightsFileError(f"state dict entry {_describe(name)} is not a tensor")
        refs[name] = value

    # One storage may back several tensors; they must all agree on its dtype.
    dtypes: dict[str, np.dtype] = {}
    for name, ref in refs.items():
        previous = dtypes.setdefault(ref.storage.key, ref.storage.dtype)
        if previous != ref.storage.dtype:
            raise WeightsFileError(f"storage {_describe(ref.storage.key)} used with two dtypes (at {_describe(name)})")

    storages = _read_storages(f, dtypes, len(raw))
    return {name: _materialise(ref, storages) for name, ref in refs.items()}
