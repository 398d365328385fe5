"""Atomic file writes: a crash or Ctrl-C never leaves a half-written output behind."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

# Every temporary a writer makes is `.<final name>.<random>.tmp[...]`: easy to find after a crash.
TEMP_SUFFIX = ".tmp"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed onto `path`.

    Works for files and directories. The temporary lives in the same directory so the final
    `os.replace` is atomic on POSIX. On error the temporary is removed and `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()  # let the caller create a file or a directory there
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_save_arrays(path: str | os.PathLike, array=None, **arrays) -> Path:
    """One array as .npy (`array`), or named arrays as .npz (`**arrays`), written atomically."""
    import numpy as np

    if (array is None) == (not arrays):
        raise TypeError("pass either one array (.npy) or named arrays (.npz)")
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        if array is not None:
            np.save(handle, array)
        else:
            np.savez(handle, **arrays)
    return Path(path)


def write_json(path: str | os.PathLike, value: Any) -> Path:
    """JSON with sorted keys and NumPy scalars/arrays converted, written atomically."""
    return atomic_write_text(path, json.dumps(value, indent=2, sort_keys=True, default=_to_builtin) + "\n")


def nan_to_none(value: Any) -> Any:
    """NaN -> None in nested dicts, lists and tuples (strict JSON has no NaN; null reads back)."""
    if isinstance(value, dict):
        return {key: nan_to_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [nan_to_none(item) for item in value]
    if isinstance(value, float) and value != value:
        return None
    return value


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"file not found: {path}") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None


def _to_builtin(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
