"""Read a legacy (pre-zip) PyTorch `state_dict` file into NumPy arrays, without torch and without
executing anything from the file.

A `.pth` file is a pickle, and a pickle is a program: unpickling calls whatever importable function
the file names. `torch.load` of an untrusted file can therefore run arbitrary code. This reader
uses a restricted `pickle.Unpickler` whose `find_class` resolves only the few names a tensor
`state_dict` needs, each mapped to a small local function that builds plain data; any other name
(`os.system`, `builtins.eval`, ...) is refused with `UnsafePickleError` before it can be called.

The legacy format written by `torch.save(..., _use_new_zipfile_serialization=False)` is five
pickles and the raw storage bytes, one after another:

    magic number (int)  |  protocol version (1001)  |  system info (dict: little_endian, type_sizes)
    the object (tensors refer to their storages by persistent id
        ("storage", <torch.XStorage>, key, location, numel[, view metadata]))
    the storage keys (list)  |  for each key in that order: int64 numel, then numel elements

Differences from `torch.load`: only tensors (and dicts/lists/tuples of them) come back, as NumPy
arrays (copies, C-contiguous); big-endian files and bfloat16 storages are refused.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
from pathlib import Path

import numpy as np

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001

STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class UnsafePickleError(ValueError):
    """The pickle names something outside the allow-list (it would run code); nothing was called."""


class TorchFileError(ValueError):
    """The file is not a readable legacy PyTorch tensor file."""


class _StorageType:
    """Stands for `torch.<X>Storage` in the pickle: only its dtype is used."""

    def __init__(self, name):
        self.name = name
        self.dtype = np.dtype(STORAGE_DTYPES[name])


class _Storage:
    """One storage: a key, a dtype and a size, then its elements once the data section is read."""

    def __init__(self, key, dtype, numel):
        self.key, self.dtype, self.numel = key, dtype, numel
        self.array = None


class _StorageView:
    """A slice of a root storage (old torch versions pickled storage views)."""

    def __init__(self, root, offset, numel):
        self.root, self.offset, self.numel = root, offset, numel
        self.dtype = root.dtype

    @property
    def array(self):
        return self.root.array[self.offset:self.offset + self.numel]


class _TensorSpec:
    """A tensor to build once its storage's bytes are known."""

    def __init__(self, storage, offset, shape, stride):
        self.storage, self.offset = storage, int(offset)
        self.shape = tuple(int(n) for n in shape)
        self.stride = tuple(int(n) for n in stride)

    def materialize(self):
        flat = self.storage.array
        if not self.shape:
            return np.array(flat[self.offset], dtype=flat.dtype)
        # Highest element index the tensor touches must lie inside its storage.
        last = self.offset + sum((n - 1) * s for n, s in zip(self.shape, self.stride) if n > 0)
        if min(self.shape) > 0 and (self.offset < 0 or last >= flat.size or min(self.stride) < 0):
            raise TorchFileError(f"tensor of shape {self.shape} reaches outside its storage")
        if min(self.shape) == 0:
            return np.zeros(self.shape, flat.dtype)
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset:], self.shape, [s * flat.itemsize for s in self.stride], writeable=False)
        return np.ascontiguousarray(view)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    if not isinstance(storage, (_Storage, _StorageView)):
        raise TorchFileError("tensor without a storage")
    return _TensorSpec(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    return data


# The whole allow-list: (module, name) -> what the pickle gets instead of the torch object.
_SAFE_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, storages, allow_globals=True):
        super().__init__(file, encoding="utf-8")
        self._storages = storages
        self._allow_globals = allow_globals

    def find_class(self, module, name):
        found = _SAFE_GLOBALS.get((module, name)) if self._allow_globals else None
        if found is None:
            raise UnsafePickleError(f"refusing to load {module}.{name}: not a tensor or storage "
                                    f"name (a pickle can run code; only tensor data is read)")
        return found

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise TorchFileError(f"unsupported persistent id {pid!r:.80}")
        storage_type, key, _location, numel = pid[1:5]
        view = pid[5] if len(pid) == 6 else None
        if not isinstance(numel, int) or numel < 0:
            raise TorchFileError(f"storage {key!r}: invalid size {numel!r:.40}")
        storage = self._storages.setdefault(str(key), _Storage(str(key), storage_type.dtype, numel))
        if view is None:
            return storage
        view_key, offset, view_numel = view
        return self._storages.setdefault(("view", str(view_key)),
                                         _StorageView(storage, int(offset), int(view_numel)))


def read_state_dict(path) -> dict[str, np.ndarray]:
    """The tensors of a legacy PyTorch `state_dict` file, name -> NumPy array, in file order.

    Raises FileNotFoundError, UnsafePickleError (the file names a non-tensor global: nothing from
    it was called) or TorchFileError (not a legacy PyTorch tensor file, or truncated).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"PyTorch weights file not found: {path}") from None
    if data[:2] == b"PK":
        raise TorchFileError(f"{path}: a zip-format PyTorch file; only the legacy format is read")
    try:
        result = loads(data)
    except (UnsafePickleError, TorchFileError) as err:
        raise type(err)(f"{path}: {err}") from None
    if not isinstance(result, dict):
        raise TorchFileError(f"{path}: holds a {type(result).__name__}, not a state_dict")
    return result


def loads(data: bytes):
    """`read_state_dict` on bytes; returns the unpickled object with tensors as NumPy arrays."""
    stream = io.BytesIO(data)
    header = [_load_plain(stream) for _ in range(3)]
    if header[0] != MAGIC_NUMBER:
        raise TorchFileError("not a legacy PyTorch file (wrong magic number)")
    if header[1] != PROTOCOL_VERSION:
        raise TorchFileError(f"unsupported PyTorch protocol version {header[1]!r:.40}")
    if not (isinstance(header[2], dict) and header[2].get("little_endian", True)):
        raise TorchFileError("big-endian PyTorch files are not supported")
    storages = {}
    obj = _load(stream, storages)
    keys = _load_plain(stream)
    if not isinstance(keys, list):
        raise TorchFileError("storage key list missing")
    for key in keys:
        storage = storages.get(str(key))
        if storage is None:
            raise TorchFileError(f"data for unknown storage {key!r:.40}")
        storage.array = _read_storage(stream, storage)
    missing = [s.key for k, s in storages.items() if not isinstance(k, tuple) and s.array is None]
    if missing:
        raise TorchFileError(f"no data for storages {missing[:3]}")
    return _materialize(obj)


def _load(stream, storages):
    try:
        return _RestrictedUnpickler(stream, storages).load()
    except (UnsafePickleError, TorchFileError):
        raise
    except Exception as err:  # malformed pickles raise many types
        raise TorchFileError(f"unreadable pickle ({type(err).__name__}: {err})") from None


def _load_plain(stream):
    """A pickle that may hold plain data only (no globals at all)."""
    try:
        return _RestrictedUnpickler(stream, {}, allow_globals=False).load()
    except UnsafePickleError:
        raise
    except Exception as err:
        raise TorchFileError(f"unreadable header ({type(err).__name__}: {err})") from None


def _read_storage(stream, storage):
    size_bytes = stream.read(8)
    if len(size_bytes) != 8:
        raise TorchFileError(f"storage {storage.key}: truncated")
    (numel,) = struct.unpack("<q", size_bytes)
    if numel != storage.numel:
        raise TorchFileError(f"storage {storage.key}: {numel} elements, expected {storage.numel}")
    raw = stream.read(numel * storage.dtype.itemsize)
    if len(raw) != numel * storage.dtype.itemsize:
        raise TorchFileError(f"storage {storage.key}: truncated")
    return np.frombuffer(raw, dtype=storage.dtype.newbyteorder("<"))


def _materialize(obj):
    if isinstance(obj, _TensorSpec):
        return obj.materialize()
    if isinstance(obj, dict):
        return type(obj)((key, _materialize(value)) for key, value in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialize(value) for value in obj)
    return obj


__all__ = ["read_state_dict", "loads", "UnsafePickleError", "TorchFileError", "STORAGE_DTYPES"]
