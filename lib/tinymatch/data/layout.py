"""Read-only, bounded access to the files of the official layout, from a directory or the zip.

The data path is a directory or the official zip; both hold the same layout under
`tiny-imagenet-200/` (see `tinymatch.data.index` for what the files mean). This module only lists
and reads files; it never writes, never extracts, and never trusts the source:

- Only regular files are read. A FIFO, device, socket (or a symlink to one, such as `/dev/zero`)
  is refused by `stat` before it is opened, and opened with `O_NONBLOCK` so that even a file
  swapped for a FIFO after the check cannot block the read.
- Every read is bounded: a metadata file (`wnids.txt`, `words.txt`, `*_boxes.txt`,
  `val_annotations.txt`) may hold at most `MAX_METADATA_BYTES` (8 MiB; the official `words.txt`,
  the largest, is 2.7 MB), an image at most `MAX_IMAGE_BYTES` (1 MiB; a 64x64 JPEG is 2-3 kB).
- A directory dataset is walked with symlinks followed (a dataset may be a farm of links); a link
  that leads back to a folder above it is a loop and an error naming it. Every file name must be
  valid UTF-8; an error names a file whose name is not (as the bytes' repr).
- A zip must list every entry once (a duplicate could put one image in train and test), with
  relative names (no absolute path, no `..`); a member's declared size is checked before a read.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import zipfile
import zlib
from pathlib import Path
from typing import Any

from tinymatch.data.errors import DataError
from tinymatch.synthetic import LAYOUT_DIR

MAX_METADATA_BYTES = 8 << 20  # per metadata file (the official words.txt is 2.7 MB)
MAX_IMAGE_BYTES = 1 << 20  # per image (a 64x64 JPEG is 2-3 kB)
# Failures of zipfile's reader on a damaged or unusual member: all mean "unreadable".
_ZIP_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError, NotImplementedError)


def shown(path: str | os.PathLike) -> str:
    """`path` for a message: as text, or as the repr of its bytes when it is not valid UTF-8."""
    text = os.fspath(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return repr(os.fsencode(text))
    return text


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a regular file"


def _too_large(where: str, size: int, limit: int, what: str) -> DataError:
    return DataError(f"{where}: {size:,} bytes, more than the {limit:,} allowed for {what} "
                     "(not a Tiny ImageNet file?)")


def read_regular_file(path: str | os.PathLike, limit: int, what: str = "this file") -> bytes:
    """The bytes of `path`, which must be a regular file of at most `limit` bytes."""
    where = shown(path)
    try:
        before = os.stat(path)
    except OSError as err:
        raise DataError(f"{where}: cannot read ({err.strerror})") from None
    if not stat.S_ISREG(before.st_mode):
        raise DataError(f"{where}: {_kind(before.st_mode)}, not a regular file; only files are read")
    if before.st_size > limit:
        raise _too_large(where, before.st_size, limit, what)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as err:
        raise DataError(f"{where}: cannot open ({err.strerror})") from None
    with os.fdopen(fd, "rb") as handle:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode):  # swapped between the stat and the open
            raise DataError(f"{where}: {_kind(opened.st_mode)}, not a regular file; only files are read")
        data = handle.read(limit + 1)
    if len(data) > limit:  # grew since the stat
        raise _too_large(where, len(data), limit, what)
    return data


class Layout:
    """Read-only access to the files of the official layout; names are relative to its root."""

    location: Path  # the layout directory, or the zip file

    def names(self) -> list[str]:
        """Every file, sorted."""
        raise NotImplementedError

    def folders(self) -> set[str]:
        """Every folder (including those only implied by a zip's file names)."""
        raise NotImplementedError

    def size(self, name: str) -> int:
        raise NotImplementedError

    def read(self, name: str, limit: int, what: str) -> bytes:
        raise NotImplementedError

    def read_metadata(self, name: str) -> str:
        """A text file of the layout (at most MAX_METADATA_BYTES), undecodable bytes replaced."""
        if name in self.folders():
            raise DataError(f"{self.display(name)}: is a folder, expected a text file")
        return self.read(name, MAX_METADATA_BYTES, "a metadata file").decode("utf-8", errors="replace")

    def read_image(self, name: str) -> bytes:
        """An image's bytes (at most MAX_IMAGE_BYTES)."""
        return self.read(name, MAX_IMAGE_BYTES, "an image")

    def display(self, name: str) -> str:
        """Where a file is, for error messages."""
        raise NotImplementedError

    def identity(self) -> dict[str, Any]:
        """Cheap description that changes whenever the source does (the cache key)."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class DirLayout(Layout):
    def __init__(self, root: Path):
        self.location = root.resolve()
        self._stats: dict[str, tuple[int, int]] | None = None
        self._folders: set[str] = set()

    def _walk(self) -> dict[str, tuple[int, int]]:
        """{name: (size, mtime_ns)} of every file; raises DataError on anything but files and folders."""
        if self._stats is not None:
            return self._stats
        stats: dict[str, tuple[int, int]] = {}
        root = os.stat(self.location)
        # (prefix, folder, {(device, inode): path} of the folders above): a link back to one of
        # them is a loop. A link to a sibling is not, and is simply read twice.
        stack = [("", str(self.location), {(root.st_dev, root.st_ino): str(self.location)})]
        while stack:
            prefix, folder, above = stack.pop()
            try:
                entries = sorted(os.scandir(folder), key=lambda e: e.name)
            except OSError as err:
                raise DataError(f"{shown(folder)}: cannot list the folder ({err.strerror})") from None
            for entry in entries:
                where = shown(entry.path)
                if shown(entry.name) != entry.name:  # (the folder above may be named anyhow)
                    raise DataError(f"{where}: file name is not valid UTF-8; rename it")
                try:
                    info = entry.stat()  # follows symlinks
                except OSError as err:
                    if err.errno == errno.ELOOP:
                        raise DataError(f"{where}: symbolic link loop (too many levels of links)") from None
                    if isinstance(err, FileNotFoundError):
                        raise DataError(f"{where}: broken symbolic link") from None
                    raise DataError(f"{where}: cannot read ({err.strerror})") from None
                name = prefix + entry.name
                if stat.S_ISDIR(info.st_mode):
                    key = (info.st_dev, info.st_ino)
                    if key in above:
                        raise DataError(f"{where}: symbolic link loop (it leads back to {above[key]})")
                    self._folders.add(name)
                    stack.append((name + "/", entry.path, {**above, key: entry.path}))
                elif stat.S_ISREG(info.st_mode):
                    stats[name] = (info.st_size, info.st_mtime_ns)
                else:
                    raise DataError(f"{where}: {_kind(info.st_mode)}, not a regular file; a dataset "
                                    "folder may hold only files and folders")
        self._stats = stats
        return stats

    def names(self) -> list[str]:
        return sorted(self._walk())

    def folders(self) -> set[str]:
        self._walk()
        return set(self._folders)

    def size(self, name: str) -> int:
        return self._walk()[name][0]

    def os_path(self, name: str) -> str:
        return str(self.location / name)

    def read(self, name: str, limit: int, what: str) -> bytes:
        return read_regular_file(self.location / name, limit, what)

    def display(self, name: str) -> str:
        return str(self.location / name)

    def identity(self) -> dict[str, Any]:
        # A fingerprint of every file's name, size and mtime: a second walk costs ~1 s for the
        # 100k files, far less than decoding, and catches added, removed and rewritten files.
        digest = hashlib.sha256()
        for name, (size, mtime_ns) in sorted(self._walk().items()):
            digest.update(f"{name}\t{size}\t{mtime_ns}\n".encode())
        return {"kind": "dir", "path": str(self.location), "files": len(self._walk()),
                "fingerprint": digest.hexdigest()}


class ZipLayout(Layout):
    def __init__(self, path: Path):
        self.location = path.resolve()
        self._zip: zipfile.ZipFile | None = None
        self._prefix = ""
        self._infos: dict[str, zipfile.ZipInfo] = {}
        self._folders: set[str] = set()

    def _archive(self) -> zipfile.ZipFile:
        if self._zip is None:
            try:
                self._zip = zipfile.ZipFile(self.location)
            except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
                raise DataError(f"{self.location}: not a valid zip file (truncated or damaged "
                                f"download? re-run `tinymatch download`): {err}") from None
            self._index(self._zip.infolist())
        return self._zip

    def _index(self, infos: list[zipfile.ZipInfo]) -> None:
        seen: set[str] = set()
        for info in infos:
            name = info.filename
            parts = name.rstrip("/").split("/")
            if name.startswith("/") or ".." in parts or (parts and parts[0].endswith(":")):
                raise DataError(f"{self.location}: entry {name!r} has an absolute or '..' path; "
                                "not a Tiny ImageNet zip")
            if name in seen:
                raise DataError(f"{self.location}: entry {name!r} appears more than once; a dataset "
                                "zip must list every file once (re-create or re-download it)")
            seen.add(name)
        entries = sorted(n for n in seen if not n.endswith("/"))
        # The official zip has everything under tiny-imagenet-200/; accept any single prefix.
        wnids = sorted((n for n in entries if n.rsplit("/", 1)[-1] == "wnids.txt"), key=len)
        if wnids:
            self._prefix = wnids[0][: -len("wnids.txt")]
        elif any(n.startswith(LAYOUT_DIR + "/") for n in entries):
            self._prefix = LAYOUT_DIR + "/"
        by_name = {info.filename: info for info in infos}
        for full in seen:
            if not full.startswith(self._prefix):
                continue
            name = full[len(self._prefix):]
            parents = name.rstrip("/").split("/")[:-1]
            self._folders.update("/".join(parents[:i + 1]) for i in range(len(parents)))
            if full.endswith("/"):
                self._folders.add(name.rstrip("/"))
            elif name:
                self._infos[name] = by_name[full]

    def names(self) -> list[str]:
        self._archive()
        return sorted(self._infos)

    def folders(self) -> set[str]:
        self._archive()
        return set(self._folders)

    def size(self, name: str) -> int:
        self._archive()
        return self._infos[name].file_size

    def read(self, name: str, limit: int, what: str) -> bytes:
        archive = self._archive()
        info = self._infos.get(name)
        if info is None:
            raise DataError(f"{self.display(name)}: not in the zip")
        if info.file_size > limit:  # the declared size: nothing is read
            raise _too_large(self.display(name), info.file_size, limit, what)
        try:
            with archive.open(info) as handle:
                data = handle.read(limit + 1)
        except _ZIP_READ_ERRORS as err:
            raise DataError(f"{self.display(name)}: unreadable ({err})") from None
        if len(data) > limit:
            raise _too_large(self.display(name), len(data), limit, what)
        return data

    def display(self, name: str) -> str:
        self._archive()
        return f"{self.location}:{self._prefix}{name}"

    def identity(self) -> dict[str, Any]:
        info = self.location.stat()
        return {"kind": "zip", "path": str(self.location), "size": info.st_size,
                "mtime_ns": info.st_mtime_ns}

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
            self._zip = None


def not_found_message(path: Path) -> str:
    return (f"dataset not found: {shown(path)}. Download it with `tinymatch download`, or point "
            "--data PATH (or TINYMATCH_DATA=PATH) at a local copy: the official zip or its "
            f"unpacked {LAYOUT_DIR}/ folder")


def _is_file(path: Path, refusal: str = "not a regular file; only files are read") -> bool:
    """A regular file (symlinks followed); a FIFO, device or socket there is an error."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    if stat.S_ISREG(mode):
        return True
    if not stat.S_ISDIR(mode):
        raise DataError(f"{shown(path)}: {_kind(mode)}, {refusal}")
    return False


def open_layout(data: str | os.PathLike) -> Layout:
    """The layout at `data`: a zip, the layout folder, or a folder holding either of them."""
    path = Path(data).expanduser()
    try:
        path.stat()
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise DataError(f"{shown(path)}: symbolic link loop") from None
        raise FileNotFoundError(not_found_message(path)) from None
    if _is_file(path, "not a dataset (the zip or a folder)"):
        return ZipLayout(path)
    for candidate in (path, path / LAYOUT_DIR):
        if _is_file(candidate / "wnids.txt"):
            return DirLayout(candidate)
    if _is_file(path / f"{LAYOUT_DIR}.zip"):
        return ZipLayout(path / f"{LAYOUT_DIR}.zip")
    if (path / LAYOUT_DIR).is_dir():
        return DirLayout(path / LAYOUT_DIR)
    return DirLayout(path)  # parsing reports the missing wnids.txt


__all__ = ["Layout", "DirLayout", "ZipLayout", "open_layout", "read_regular_file", "shown",
           "not_found_message", "MAX_METADATA_BYTES", "MAX_IMAGE_BYTES"]
