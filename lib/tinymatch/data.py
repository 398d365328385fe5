"""Tiny ImageNet: the official layout, a decode-once cache, seeded splits and P x K batches.

The data path is a directory or the official zip; both hold the same layout under
`tiny-imagenet-200/`:

```
wnids.txt                                   class ids, one a line (their order = class index)
words.txt                                   wnid <tab> human-readable names, comma separated
train/<wnid>/images/*.JPEG                  500 images a class
train/<wnid>/<wnid>_boxes.txt               file <tab> x0 y0 x1 y1
val/images/*.JPEG  val/val_annotations.txt  file <tab> wnid <tab> x0 y0 x1 y1   (optional)
test/images/*.JPEG                          unlabelled                           (optional)
```

`load_dataset` decodes every JPEG once (TensorFlow's `decode_jpeg` in a parallel `tf.data` map,
~1.8% of the files are grayscale and come out as 3-channel RGB; images that are not 64x64 are
resized to 64x64 with antialiased bilinear resampling) into a uint8 `.npy` that later runs open
memory-mapped in well under a second. The cache is keyed by the source's identity, so replacing the
zip or editing the folder rebuilds it, and it is written into a temporary directory renamed into
place at the end: an interrupted run never leaves half a cache and never removes a good one.

`make_splits` turns a dataset into two seeded protocols, saved as a CSV every later step reads:
seen classes (image-disjoint train/val/test inside every class) and unseen classes
(class-disjoint). `pk_dataset` serves class-balanced P x K batches for triplet mining.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import re
import shutil
import socket
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from tinymatch.io_utils import atomic_path, atomic_write_text, write_json
from tinymatch.synthetic import IMAGE_SIZE, LAYOUT_DIR, make_synthetic_dataset

logger = logging.getLogger(__name__)

OFFICIAL_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
OFFICIAL_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
OFFICIAL_SIZE = 248_100_043
CACHE_ENV_VAR = "TINYMATCH_CACHE"
CACHE_FORMAT = 1  # bump when the cache contents change meaning
SUBSETS = ("train", "val", "test")
PROTOCOLS = ("seen", "unseen", "official-val")
_IMAGE_SUFFIXES = (".jpeg", ".jpg")
_DECODE_CHUNK = 256  # files handed from the reader to the decoder at a time
_STALE_TEMP_SECONDS = 6 * 3600


class DataError(ValueError):
    """A dataset, cache, split or download problem; the message names the file at fault."""


class DownloadError(DataError):
    """The download could not be completed (no network, HTTP error, interrupted transfer)."""


# ==================================================================================================
# The layout, read from a directory or a zip
# ==================================================================================================

class _Layout:
    """Read-only access to the files of the official layout; names are relative to its root."""

    location: Path  # the layout directory, or the zip file

    def names(self) -> list[str]:
        raise NotImplementedError

    def read(self, name: str) -> bytes:
        raise NotImplementedError

    def display(self, name: str) -> str:
        """Where a file is, for error messages."""
        raise NotImplementedError

    def identity(self) -> dict[str, Any]:
        """Cheap description that changes whenever the source does (the cache key)."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class _DirLayout(_Layout):
    def __init__(self, root: Path):
        self.location = root.resolve()
        self._stats: dict[str, tuple[int, int]] | None = None

    def _walk(self) -> dict[str, tuple[int, int]]:
        if self._stats is None:
            stats = {}
            for folder, _, files in os.walk(self.location):
                relative = Path(folder).relative_to(self.location).as_posix()
                prefix = "" if relative == "." else relative + "/"
                for file_name in files:
                    stat = os.stat(os.path.join(folder, file_name))
                    stats[prefix + file_name] = (stat.st_size, stat.st_mtime_ns)
            self._stats = stats
        return self._stats

    def names(self) -> list[str]:
        return sorted(self._walk())

    def read(self, name: str) -> bytes:
        return (self.location / name).read_bytes()

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


class _ZipLayout(_Layout):
    def __init__(self, path: Path):
        self.location = path.resolve()
        self._zip: zipfile.ZipFile | None = None
        self._prefix = ""
        self._names: list[str] | None = None

    def _archive(self) -> zipfile.ZipFile:
        if self._zip is None:
            try:
                self._zip = zipfile.ZipFile(self.location)
            except (zipfile.BadZipFile, OSError, EOFError) as err:
                raise DataError(f"{self.location}: not a valid zip file (truncated or damaged "
                                f"download? re-run `tinymatch download`): {err}") from None
            entries = [n for n in self._zip.namelist() if not n.endswith("/")]
            # The official zip has everything under tiny-imagenet-200/; accept any single prefix.
            wnids = sorted((n for n in entries if n.rsplit("/", 1)[-1] == "wnids.txt"), key=len)
            if wnids:
                self._prefix = wnids[0][: -len("wnids.txt")]
            elif any(n.startswith(LAYOUT_DIR + "/") for n in entries):
                self._prefix = LAYOUT_DIR + "/"
            self._names = sorted(n[len(self._prefix):] for n in entries if n.startswith(self._prefix))
        return self._zip

    def names(self) -> list[str]:
        self._archive()
        return list(self._names or [])

    def read(self, name: str) -> bytes:
        return self._archive().read(self._prefix + name)

    def display(self, name: str) -> str:
        self._archive()
        return f"{self.location}:{self._prefix}{name}"

    def identity(self) -> dict[str, Any]:
        stat = self.location.stat()
        return {"kind": "zip", "path": str(self.location), "size": stat.st_size,
                "mtime_ns": stat.st_mtime_ns}

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
            self._zip = None


def _not_found_message(path: Path) -> str:
    return (f"dataset not found: {path}. Download it with `tinymatch download`, or point "
            "--data PATH (or TINYMATCH_DATA=PATH) at a local copy: the official zip or its "
            f"unpacked {LAYOUT_DIR}/ folder")


def _open_layout(data: str | os.PathLike) -> _Layout:
    """The layout at `data`: a zip, the layout folder, or a folder holding either of them."""
    path = Path(data).expanduser()
    if not path.exists():
        raise FileNotFoundError(_not_found_message(path))
    if path.is_file():
        return _ZipLayout(path)
    for candidate in (path, path / LAYOUT_DIR):
        if (candidate / "wnids.txt").is_file():
            return _DirLayout(candidate)
    if (path / f"{LAYOUT_DIR}.zip").is_file():
        return _ZipLayout(path / f"{LAYOUT_DIR}.zip")
    if (path / LAYOUT_DIR).is_dir():
        return _DirLayout(path / LAYOUT_DIR)
    return _DirLayout(path)  # parsing reports the missing wnids.txt


# ==================================================================================================
# Parsing: which files, which labels
# ==================================================================================================

@dataclass
class _Index:
    """What the layout lists (after max_classes / max_images_per_class), before decoding."""

    wnids: list[str]
    class_names: list[str]
    paths: list[str]
    labels: np.ndarray
    subsets: np.ndarray
    boxes: np.ndarray


def _natural_key(name: str) -> list:
    """'x_2.JPEG' before 'x_10.JPEG': the numbered files in their natural order."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _is_image(name: str) -> bool:
    return name.lower().endswith(_IMAGE_SUFFIXES)


def _read_text(layout: _Layout, name: str) -> str:
    try:
        return layout.read(name).decode("utf-8", errors="replace")
    except (zipfile.BadZipFile, zlib.error, EOFError) as err:
        raise DataError(f"{layout.display(name)}: unreadable ({err})") from None


def _read_wnids(layout: _Layout, names: set[str]) -> list[str]:
    if "wnids.txt" not in names:
        raise DataError(f"{layout.display('wnids.txt')}: missing. {layout.location} does not look "
                        f"like Tiny ImageNet (expected {LAYOUT_DIR}/wnids.txt, words.txt, train/...)")
    wnids = [line.strip() for line in _read_text(layout, "wnids.txt").splitlines() if line.strip()]
    if not wnids:
        raise DataError(f"{layout.display('wnids.txt')}: no class ids in it")
    duplicates = sorted({w for w in wnids if wnids.count(w) > 1}) if len(set(wnids)) < len(wnids) else []
    if duplicates:
        raise DataError(f"{layout.display('wnids.txt')}: duplicate class ids {duplicates[:5]}")
    return wnids


def _read_class_names(layout: _Layout, names: set[str], wnids: list[str]) -> list[str]:
    """Short names (first comma item of words.txt); the wnid itself when words.txt lacks it."""
    words: dict[str, str] = {}
    if "words.txt" in names:
        for line in _read_text(layout, "words.txt").splitlines():
            wnid, _, text = line.partition("\t")
            if text:
                words[wnid.strip()] = text.split(",")[0].strip()
    else:
        logger.warning("%s: missing; class names fall back to the wnids", layout.display("words.txt"))
    return [words.get(wnid, wnid) for wnid in wnids]


def _parse_box_fields(fields: list[str], layout: _Layout, name: str, line_number: int) -> list[int]:
    try:
        return [int(v) for v in fields]
    except ValueError:
        raise DataError(f"{layout.display(name)} line {line_number}: box coordinates must be integers, "
                        f"got {fields}") from None


def _read_train_boxes(layout: _Layout, name: str) -> dict[str, list[int]]:
    boxes = {}
    for line_number, line in enumerate(_read_text(layout, name).splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 5:
            raise DataError(f"{layout.display(name)} line {line_number}: expected "
                            f"'file x0 y0 x1 y1', got {line!r}")
        boxes[fields[0]] = _parse_box_fields(fields[1:], layout, name, line_number)
    return boxes


def _read_val_annotations(layout: _Layout, wnid_index: dict[str, int],
                          val_images: set[str]) -> dict[str, tuple[int, list[int]]]:
    name = "val/val_annotations.txt"
    annotations = {}
    for line_number, line in enumerate(_read_text(layout, name).splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 6:
            raise DataError(f"{layout.display(name)} line {line_number}: expected "
                            f"'file wnid x0 y0 x1 y1', got {line!r}")
        file_name, wnid = fields[0], fields[1]
        if wnid not in wnid_index:
            raise DataError(f"{layout.display(name)} line {line_number}: unknown class {wnid!r} "
                            f"(not in wnids.txt)")
        if file_name not in val_images:
            raise DataError(f"{layout.display(name)} line {line_number}: image "
                            f"{layout.display('val/images/' + file_name)} not found")
        annotations[file_name] = (wnid_index[wnid], _parse_box_fields(fields[2:], layout, name, line_number))
    return annotations


def _parse_layout(layout: _Layout, *, max_classes: int = 0, max_images_per_class: int = 0) -> _Index:
    """List the images of the layout with labels, official subsets and boxes.

    A subset is deterministic: the first `max_classes` classes in wnids.txt order and, per class,
    the first `max_images_per_class` images in natural file-name order (train and official val
    alike; the unlabelled official test images are capped at `max_images_per_class` too).
    """
    names = layout.names()
    name_set = set(names)
    all_wnids = _read_wnids(layout, name_set)
    train_images: dict[str, list[str]] = {}
    val_images, test_images = [], []
    for name in names:
        parts = name.split("/")
        if parts[0] == "train" and len(parts) == 4 and parts[2] == "images" and _is_image(name):
            train_images.setdefault(parts[1], []).append(parts[3])
        elif parts[:2] == ["val", "images"] and len(parts) == 3 and _is_image(name):
            val_images.append(parts[2])
        elif parts[:2] == ["test", "images"] and len(parts) == 3 and _is_image(name):
            test_images.append(parts[2])

    unknown = sorted(set(train_images) - set(all_wnids))
    if unknown:
        raise DataError(f"{layout.display('train/' + unknown[0])}: class folder not listed in "
                        f"{layout.display('wnids.txt')} ({len(unknown)} such folder(s))")
    for wnid in all_wnids:
        if not train_images.get(wnid):
            raise DataError(f"{layout.display(f'train/{wnid}/images/')}: class {wnid} has no images "
                            f"(every class in wnids.txt needs at least one training image)")

    wnids = all_wnids[:max_classes] if max_classes > 0 else list(all_wnids)
    class_names = _read_class_names(layout, name_set, wnids)
    cap = max_images_per_class if max_images_per_class > 0 else None
    paths: list[str] = []
    labels: list[int] = []
    subsets: list[str] = []
    boxes: list[list[int]] = []
    unknown_box = [-1, -1, -1, -1]

    for label, wnid in enumerate(wnids):
        box_file = f"train/{wnid}/{wnid}_boxes.txt"
        class_boxes = _read_train_boxes(layout, box_file) if box_file in name_set else {}
        for file_name in sorted(train_images[wnid], key=_natural_key)[:cap]:
            paths.append(f"train/{wnid}/images/{file_name}")
            labels.append(label)
            subsets.append("train")
            boxes.append(class_boxes.get(file_name, unknown_box))

    if val_images:
        if "val/val_annotations.txt" not in name_set:
            raise DataError(f"{layout.display('val/val_annotations.txt')}: missing, but val/images "
                            f"holds {len(val_images)} images (their labels are in that file)")
        annotations = _read_val_annotations(layout, {w: i for i, w in enumerate(all_wnids)},
                                            set(val_images))
        missing = sorted(set(val_images) - set(annotations))
        if missing:
            raise DataError(f"{layout.display('val/images/' + missing[0])}: no line for it in "
                            f"{layout.display('val/val_annotations.txt')} ({len(missing)} image(s))")
        taken = np.zeros(len(all_wnids), dtype=np.int64)
        for file_name in sorted(val_images, key=_natural_key):
            label, box = annotations[file_name]
            if label >= len(wnids) or (cap is not None and taken[label] >= cap):
                continue
            taken[label] += 1
            paths.append(f"val/images/{file_name}")
            labels.append(label)
            subsets.append("val")
            boxes.append(box)

    for file_name in sorted(test_images, key=_natural_key)[:cap]:
        paths.append(f"test/images/{file_name}")
        labels.append(-1)
        subsets.append("test")
        boxes.append(unknown_box)

    return _Index(wnids=wnids, class_names=class_names, paths=paths,
                  labels=np.asarray(labels, dtype=np.int32),
                  subsets=np.asarray(subsets, dtype="<U5"),
                  boxes=np.asarray(boxes, dtype=np.int32).reshape(-1, 4))


# ==================================================================================================
# Decoding: TensorFlow in parallel, PIL for whatever it refuses
# ==================================================================================================

@dataclass
class _DecodeResult:
    grayscale: np.ndarray  # bool [N]
    resized: np.ndarray  # bool [N]
    corrupt: list[int]  # indices that could not be decoded (skip_corrupt=True only)
    seconds: float


def _decode_with_pil(data: bytes) -> tuple[np.ndarray, bool, bool]:
    """Fallback decoder for files TensorFlow refuses (CMYK JPEGs, other formats); raises if broken."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image.load()  # PIL is lazy: this is where truncated files fail
        grayscale = image.mode in ("1", "L", "LA", "I", "I;16", "F")
        rgb = np.asarray(image.convert("RGB"))
    resized = rgb.shape[:2] != (IMAGE_SIZE, IMAGE_SIZE)
    if resized:
        import tensorflow as tf

        rgb = _resize_to_image_size(tf.constant(rgb)).numpy()
    return rgb, grayscale, resized


def _resize_to_image_size(image):
    """Antialiased bilinear resize to IMAGE_SIZE x IMAGE_SIZE, back to uint8."""
    import tensorflow as tf

    resized = tf.image.resize(image, [IMAGE_SIZE, IMAGE_SIZE], method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)


def _decode_into(layout: _Layout, paths: list[str], out: np.ndarray, *, skip_corrupt: bool,
                 workers: int, progress: bool) -> _DecodeResult:
    """Decode every file of `paths` into `out` (uint8 [N, 64, 64, 3]), in order.

    The bytes come from the zip (read by one Python thread) or the folder (read by TensorFlow);
    `workers` TensorFlow threads decode them. A file TensorFlow cannot decode (or that is not
    64x64) is dropped from the stream (`ignore_errors`), shows up as a gap in the indices and is
    decoded by PIL instead (resized if needed); only if PIL fails too is it corrupt.
    """
    import tensorflow as tf
    from tqdm.auto import tqdm

    count = len(paths)
    grayscale = np.zeros(count, dtype=bool)
    resized = np.zeros(count, dtype=bool)
    corrupt: list[int] = []
    read_errors: dict[int, str] = {}

    # From a folder, TensorFlow's threads read the files themselves (`read_file` in the map); from a
    # zip, this one Python thread reads the members (cheap: the official zip is stored, not deflated).
    from_files = isinstance(layout, _DirLayout)

    def read_chunks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start in range(0, count, _DECODE_CHUNK):
            stop = min(start + _DECODE_CHUNK, count)
            if from_files:
                files = [layout.display(paths[index]) for index in range(start, stop)]
                yield np.arange(start, stop, dtype=np.int64), np.asarray(files, dtype=object)
                continue
            blobs = []
            for index in range(start, stop):
                try:
                    blobs.append(layout.read(paths[index]))
                except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as err:
                    read_errors[index] = f"unreadable: {err}"
                    blobs.append(b"")  # fails to decode and is reported with the reason above
            yield np.arange(start, stop, dtype=np.int64), np.asarray(blobs, dtype=object)

    def decode(index, contents):
        # No tf.cond for resizing here: it halves the throughput. A file that is not 64x64 fails
        # `ensure_shape`, drops out of the stream and is resized by the PIL fallback (rare).
        if from_files:
            contents = tf.io.read_file(contents)
        channels = tf.image.extract_jpeg_shape(contents)[2]
        image = tf.io.decode_jpeg(contents, channels=3)  # grayscale JPEGs come out as RGB
        return index, tf.ensure_shape(image, [IMAGE_SIZE, IMAGE_SIZE, 3]), channels == 1

    signature = (tf.TensorSpec([None], tf.int64), tf.TensorSpec([None], tf.string))
    stream = tf.data.Dataset.from_generator(read_chunks, output_signature=signature).unbatch()
    stream = stream.map(decode, num_parallel_calls=workers, deterministic=True).ignore_errors()
    stream = stream.batch(512).prefetch(2)
    options = tf.data.Options()
    options.threading.private_threadpool_size = max(workers, 1)
    stream = stream.with_options(options)

    def fallback(index: int) -> None:
        try:
            if index in read_errors:
                raise OSError(read_errors[index])
            image, is_gray, was_resized = _decode_with_pil(layout.read(paths[index]))
        except Exception as err:  # noqa: BLE001 - any failure means the file is unusable
            where = layout.display(paths[index])
            if not skip_corrupt:
                raise DataError(f"{where}: corrupt or unreadable image ({type(err).__name__}: {err}); "
                                "pass skip_corrupt=True (CLI: --skip-corrupt) to skip such files") from None
            logger.warning("skipping corrupt image %s (%s: %s)", where, type(err).__name__, err)
            corrupt.append(index)
            return
        out[index] = image
        grayscale[index], resized[index] = is_gray, was_resized

    started = time.perf_counter()
    next_index = 0
    with tqdm(total=count, unit="img", desc="decoding images", disable=not progress) as bar:
        for indices, images, gray in stream.as_numpy_iterator():
            last = int(indices[-1])
            if last - next_index + 1 != len(indices):  # gaps: files TensorFlow refused
                for missing in np.setdiff1d(np.arange(next_index, last + 1), indices):
                    fallback(int(missing))
            out[indices] = images
            grayscale[indices] = gray
            bar.update(last + 1 - next_index)
            next_index = last + 1
        for missing in range(next_index, count):
            fallback(missing)
        bar.update(count - next_index)
    return _DecodeResult(grayscale, resized, sorted(corrupt), time.perf_counter() - started)


# ==================================================================================================
# The cache
# ==================================================================================================

def default_cache_dir(source: str | os.PathLike) -> Path:
    """$TINYMATCH_CACHE, else `cache/` beside the data, else ~/.cache/tinymatch (read-only data)."""
    env = os.environ.get(CACHE_ENV_VAR)
    if env:
        return Path(env).expanduser()
    beside = Path(source).expanduser().resolve().parent / "cache"
    existing = beside if beside.exists() else beside.parent
    # Mode bits too, not just os.access: root may write anywhere, but a folder marked read-only
    # (like a shared data folder) should not grow a cache.
    if os.access(existing, os.W_OK) and existing.stat().st_mode & 0o222:
        return beside
    fallback = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tinymatch"
    logger.info("%s is not writable; caching decoded images in %s", existing, fallback)
    return fallback


def _cache_key(identity: dict, max_classes: int, max_images_per_class: int) -> dict:
    return {"format": CACHE_FORMAT, "image_size": IMAGE_SIZE, "source": identity,
            "max_classes": int(max_classes), "max_images_per_class": int(max_images_per_class)}


def _cache_entry(cache_root: Path, layout: _Layout, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    stem = layout.location.name.removesuffix(".zip")
    return cache_root / f"{stem}-{digest}"


def _read_cache(entry: Path, key: dict) -> Dataset | None:
    """The cached dataset at `entry`, or None when it is missing, stale or damaged."""
    manifest_path = entry / "manifest.json"
    if not manifest_path.is_file():
        return None
    try:
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("key") != key:
            return None
        images = np.load(entry / "images.npy", mmap_mode="r")
        with np.load(entry / "meta.npz") as meta:
            columns = {name: meta[name] for name in ("labels", "subsets", "paths", "grayscale",
                                                     "resized", "boxes")}
    except (OSError, ValueError, KeyError) as err:
        logger.warning("ignoring damaged cache %s (%s); decoding again", entry, err)
        return None
    count = manifest["num_images"]
    if images.shape != (count, IMAGE_SIZE, IMAGE_SIZE, 3) or any(len(v) != count for v in columns.values()):
        logger.warning("ignoring inconsistent cache %s; decoding again", entry)
        return None
    return Dataset(source=Path(manifest["source"]), wnids=list(manifest["wnids"]),
                   class_names=list(manifest["class_names"]), images=images,
                   labels=columns["labels"].astype(np.int32), subsets=columns["subsets"],
                   paths=columns["paths"].tolist(), grayscale=columns["grayscale"].astype(bool),
                   boxes=columns["boxes"].astype(np.int32), corrupt=list(manifest["corrupt"]),
                   resized=columns["resized"].astype(bool), cache_path=entry, from_cache=True,
                   decoded=0, decode_seconds=float(manifest.get("decode_seconds", 0.0)))


def _write_cache_metadata(folder: Path, index: _Index, keep: np.ndarray, decoded: _DecodeResult,
                          manifest: dict) -> None:
    np.savez(folder / "meta.npz", labels=index.labels[keep], subsets=index.subsets[keep],
             paths=np.asarray(index.paths)[keep], grayscale=decoded.grayscale[keep],
             resized=decoded.resized[keep], boxes=index.boxes[keep])
    write_json(folder / "manifest.json", manifest)  # written last: the entry is complete


def _drop_rows(folder: Path, keep: np.ndarray) -> None:
    """Rewrite images.npy without the rows of corrupt files (rare: skip_corrupt only)."""
    full = np.load(folder / "images.npy", mmap_mode="r")
    compact = np.lib.format.open_memmap(folder / "images.compact.npy", mode="w+", dtype=np.uint8,
                                        shape=(int(keep.sum()),) + full.shape[1:])
    kept = np.flatnonzero(keep)
    for start in range(0, len(kept), 8192):
        compact[start:start + 8192] = full[kept[start:start + 8192]]
    compact.flush()
    del compact, full
    os.replace(folder / "images.compact.npy", folder / "images.npy")


def _remove_stale_entries(cache_root: Path, entry: Path, key: dict) -> None:
    """Drop caches of an older version of the same source (same subset), and dead temp dirs."""
    for other in cache_root.iterdir():
        if other == entry:
            continue
        if other.name.startswith(f".{entry.name}.") and other.name.endswith(".tmp"):
            if time.time() - other.stat().st_mtime > _STALE_TEMP_SECONDS:
                shutil.rmtree(other, ignore_errors=True)  # left behind by a killed run
            continue
        try:
            old_key = json.loads((other / "manifest.json").read_text())["key"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        same_source = old_key.get("source", {}).get("path") == key["source"]["path"]
        same_subset = all(old_key.get(k) == key[k] for k in ("max_classes", "max_images_per_class"))
        if same_source and same_subset:
            logger.info("removing stale cache %s (its source has changed)", other)
            shutil.rmtree(other, ignore_errors=True)


# ==================================================================================================
# The dataset
# ==================================================================================================

@dataclass(eq=False, repr=False)
class Dataset:
    """Decoded Tiny ImageNet: one row per image, images memory-mapped from the cache.

    images: uint8 [N, 64, 64, 3] RGB; labels: int32 [N] class index (-1: unlabelled official test);
    subsets: str [N] official subset 'train' | 'val' | 'test'; paths: path inside the layout;
    grayscale: bool [N] (decoded from a 1-channel JPEG); boxes: int32 [N, 4] x0 y0 x1 y1 (-1 unknown);
    corrupt: layout paths skipped with skip_corrupt=True. `from_cache` / `decoded` say whether this
    load decoded anything (0 images when the cache was used).
    """

    source: Path
    wnids: list[str]
    class_names: list[str]
    images: np.ndarray
    labels: np.ndarray
    subsets: np.ndarray
    paths: list[str]
    grayscale: np.ndarray
    boxes: np.ndarray
    corrupt: list[str] = field(default_factory=list)
    resized: np.ndarray | None = None  # bool [N]: the file was not 64x64 and was resized
    cache_path: Path | None = None
    from_cache: bool = False
    decoded: int = 0
    decode_seconds: float = 0.0

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.wnids)

    def __repr__(self) -> str:
        counts = ", ".join(f"{s}={int((self.subsets == s).sum())}" for s in SUBSETS)
        return (f"Dataset(source={str(self.source)!r}, classes={self.num_classes}, images={len(self)} "
                f"({counts}), grayscale={int(self.grayscale.sum())}, corrupt={len(self.corrupt)})")


def load_dataset(data: str | os.PathLike, cache_dir: str | os.PathLike | None = None, *,
                 skip_corrupt: bool = False, max_classes: int = 0, max_images_per_class: int = 0,
                 workers: int | None = None, progress: bool = True) -> Dataset:
    """Load Tiny ImageNet from a directory or zip, decoding it only the first time.

    Args:
        data: the official zip, the `tiny-imagenet-200/` folder, or a folder containing either.
        cache_dir: where decoded images are kept (None: `default_cache_dir(data)`).
        skip_corrupt: log and skip undecodable files (listed in `Dataset.corrupt`) instead of
            raising a `DataError` that names the first one.
        max_classes, max_images_per_class: a deterministic subset (0 = all): the first classes in
            wnids.txt order, the first images of each in natural file-name order. Part of the cache
            key, so subsets and the full set have separate caches.
        workers: decoding threads (None: every CPU core).
        progress: tqdm bar while decoding.
    """
    if max_classes < 0 or max_images_per_class < 0:
        raise ValueError("max_classes and max_images_per_class must be >= 0 (0 = all)")
    layout = _open_layout(data)
    try:
        key = _cache_key(layout.identity(), max_classes, max_images_per_class)
        cache_root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir(layout.location)
        entry = _cache_entry(cache_root, layout, key)
        dataset = _read_cache(entry, key)
        if dataset is None:
            dataset = _build_cache(layout, entry, key, max_classes=max_classes,
                                   max_images_per_class=max_images_per_class,
                                   skip_corrupt=skip_corrupt, workers=max(1, workers or os.cpu_count() or 1),
                                   progress=progress)
        else:
            logger.info("loaded %d images from cache %s", len(dataset), entry)
    finally:
        layout.close()
    if dataset.corrupt and not skip_corrupt:
        raise DataError(f"{dataset.source}: {len(dataset.corrupt)} corrupt image(s), e.g. "
                        f"{dataset.corrupt[0]} (the cache was built with skip_corrupt=True); "
                        "pass skip_corrupt=True (CLI: --skip-corrupt) to skip them")
    return dataset


def _build_cache(layout: _Layout, entry: Path, key: dict, *, max_classes: int,
                 max_images_per_class: int, skip_corrupt: bool, workers: int,
                 progress: bool) -> Dataset:
    index = _parse_layout(layout, max_classes=max_classes, max_images_per_class=max_images_per_class)
    logger.info("decoding %d images from %s into %s", len(index.paths), layout.location, entry)
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"cache directory {entry.parent} cannot be created ({err}); "
                        "choose another with cache_dir (CLI: --cache-dir) or TINYMATCH_CACHE") from None
    with atomic_path(entry) as folder:
        folder.mkdir()
        images = np.lib.format.open_memmap(folder / "images.npy", mode="w+", dtype=np.uint8,
                                           shape=(len(index.paths), IMAGE_SIZE, IMAGE_SIZE, 3))
        decoded = _decode_into(layout, index.paths, images, skip_corrupt=skip_corrupt,
                               workers=workers, progress=progress)
        images.flush()
        del images
        keep = np.ones(len(index.paths), dtype=bool)
        keep[decoded.corrupt] = False
        if decoded.corrupt:
            _drop_rows(folder, keep)
        manifest = {"key": key, "source": str(layout.location), "num_images": int(keep.sum()),
                    "wnids": index.wnids, "class_names": index.class_names,
                    "corrupt": [index.paths[i] for i in decoded.corrupt],
                    "decode_seconds": round(decoded.seconds, 3),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        _write_cache_metadata(folder, index, keep, decoded, manifest)
    _remove_stale_entries(entry.parent, entry, key)
    dataset = _read_cache(entry, key)
    if dataset is None:  # pragma: no cover - we just wrote it
        raise DataError(f"{entry}: cache unreadable right after writing it")
    dataset.from_cache = False
    dataset.decoded = len(index.paths)
    logger.info("decoded %d images in %.1f s (%.0f images/s)", len(index.paths), decoded.seconds,
                len(index.paths) / max(decoded.seconds, 1e-9))
    return dataset


SYNTHETIC = "synthetic"
_SMOKE_SYNTHETIC = dict(num_classes=12, images_per_class=24, val_per_class=4, test_images=8, grayscale=3)


def synthetic_data_path(config) -> Path:
    """The synthetic dataset of the smoke profile (written on first use, then reused) under
    `config.cache_dir`, else $TINYMATCH_CACHE, else data/."""
    root = Path(config.cache_dir or os.environ.get(CACHE_ENV_VAR) or "data").expanduser()
    folder = root / f"synthetic-seed{config.seed}"
    if not (folder / LAYOUT_DIR / "wnids.txt").is_file():
        make_synthetic_dataset(folder, seed=config.seed, **_SMOKE_SYNTHETIC)
    return folder / LAYOUT_DIR


def load_dataset_for(config, progress: bool = True) -> Dataset:
    """`load_dataset` with the data fields of a `Config`.

    `config.data` "" means $TINYMATCH_DATA, else data/tiny-imagenet-200(.zip) — except for the
    `smoke` profile, where "" (and, for any profile, the word "synthetic") means the small
    synthetic dataset, written under `config.cache_dir` (else $TINYMATCH_CACHE, else data/) on
    first use.
    """
    from tinymatch.config import resolve_data_path

    if config.data == SYNTHETIC or (not config.data and config.profile == "smoke"):
        source = synthetic_data_path(config)
    else:
        source = resolve_data_path(config.data)
    return load_dataset(source, config.cache_dir or None, skip_corrupt=config.skip_corrupt,
                        max_classes=config.max_classes,
                        max_images_per_class=config.max_images_per_class, progress=progress)


# ==================================================================================================
# Summary
# ==================================================================================================

def _per_class(labels: np.ndarray, num_classes: int) -> dict[str, float] | None:
    labels = labels[labels >= 0]
    if not len(labels):
        return None
    counts = np.bincount(labels, minlength=num_classes)
    return {"min": int(counts.min()), "max": int(counts.max()), "mean": round(float(counts.mean()), 2)}


def summarize(dataset: Dataset) -> dict[str, Any]:
    """Counts of a dataset: classes, images per official subset, per-class counts, grayscale, corrupt."""
    subsets = {}
    for subset in SUBSETS:
        mask = dataset.subsets == subset
        labels = dataset.labels[mask]
        subsets[subset] = {
            "images": int(mask.sum()),
            "grayscale": int(dataset.grayscale[mask].sum()),
            "classes": int(len(np.unique(labels[labels >= 0]))),
            "per_class": _per_class(labels, dataset.num_classes),
        }
    resized = dataset.resized if dataset.resized is not None else np.zeros(len(dataset), bool)
    return {
        "source": str(dataset.source),
        "classes": dataset.num_classes,
        "images": {**{s: subsets[s]["images"] for s in SUBSETS}, "total": len(dataset)},
        "per_class": {s: subsets[s]["per_class"] for s in ("train", "val")},
        "subsets": subsets,
        "grayscale": int(dataset.grayscale.sum()),
        "resized": int(resized.sum()),
        "boxes": int((dataset.boxes[:, 0] >= 0).sum()),
        "corrupt": len(dataset.corrupt),
        "corrupt_files": list(dataset.corrupt),
        "cache": str(dataset.cache_path) if dataset.cache_path else None,
        "from_cache": dataset.from_cache,
        "decode_seconds": dataset.decode_seconds,
    }


def format_summary(summary: dict[str, Any]) -> str:
    """A readable table of `summarize`'s dict."""
    rows = [("subset", "images", "grayscale", "classes", "per class min / max / mean")]
    for subset in SUBSETS:
        info = summary["subsets"][subset]
        per_class = info["per_class"]
        spread = (f"{per_class['min']:,} / {per_class['max']:,} / {per_class['mean']:,.1f}"
                  if per_class else "-")
        classes = f"{info['classes']:,}" if subset != "test" else "(unlabelled)"
        rows.append((subset, f"{info['images']:,}", f"{info['grayscale']:,}", classes, spread))
    rows.append(("total", f"{summary['images']['total']:,}", f"{summary['grayscale']:,}",
                 f"{summary['classes']:,}", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]

    def line(row):
        cells = [row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(row[1:-1], widths[1:-1])]
        return "  ".join(cells + [row[-1]]).rstrip()

    total = max(summary["images"]["total"], 1)
    out = [f"Tiny ImageNet at {summary['source']}",
           f"  classes:   {summary['classes']:,}",
           f"  images:    {summary['images']['total']:,} "
           f"(train {summary['images']['train']:,}, val {summary['images']['val']:,}, "
           f"test {summary['images']['test']:,})",
           f"  grayscale: {summary['grayscale']:,} ({100 * summary['grayscale'] / total:.2f}%, converted to RGB)",
           f"  resized:   {summary['resized']:,} (not 64x64, resized to 64x64)",
           f"  corrupt:   {summary['corrupt']:,}" + (" skipped" if summary["corrupt"] else ""),
           ""]
    out += [line(rows[0]), "  ".join("-" * w for w in widths)] + [line(r) for r in rows[1:]]
    for name in summary["corrupt_files"][:20]:
        out.append(f"  corrupt file skipped: {name}")
    if len(summary["corrupt_files"]) > 20:
        out.append(f"  ... and {len(summary['corrupt_files']) - 20} more")
    if summary.get("cache"):
        how = "loaded from cache" if summary.get("from_cache") else "decoded into cache"
        out.append(f"\n{how}: {summary['cache']}")
    return "\n".join(out)


# ==================================================================================================
# Download
# ==================================================================================================

def _md5(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _offline_hint(url: str, reason: Any) -> str:
    return (f"cannot download {url} ({reason}). Without network, copy the official "
            f"tiny-imagenet-200.zip (or its unpacked {LAYOUT_DIR}/ folder) to this machine and point "
            "tinymatch at it with --data PATH or TINYMATCH_DATA=PATH")


def download(dest: str | os.PathLike, *, url: str = OFFICIAL_URL, md5: str | None = OFFICIAL_MD5,
             progress: bool = True, timeout: float = 10.0) -> Path:
    """Fetch the dataset zip to `dest`: resumable, md5-verified, renamed into place at the end.

    Bytes arrive in `dest + '.part'`; a second call after an interruption asks the server for the
    rest (HTTP Range) and appends. The finished file's md5 must equal `md5` (None: not checked),
    otherwise the `.part` is deleted and `DataError` names it. An existing `dest` with the right
    md5 is returned as is. `timeout` (s) bounds connecting and every read, so no network fails fast.
    """
    from tqdm.auto import tqdm

    dest = Path(dest).expanduser()
    if dest.is_file():
        if md5 is None or _md5(dest) == md5:
            logger.info("%s is already there and verified", dest)
            return dest
        raise DataError(f"{dest}: exists but its md5 is not {md5}; delete it and run again")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    response = None
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if not (err.code == 416 and offset):  # 416: the .part already holds every byte
            raise DownloadError(f"{url}: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError) as err:
        raise DownloadError(_offline_hint(url, getattr(err, "reason", err))) from None

    if response is not None:
        with response:
            if offset and response.status != 206:  # the server ignored Range: start again
                logger.info("server does not resume downloads; starting %s again", part)
                offset = 0
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length else None
            try:
                with open(part, "ab" if offset else "wb") as handle, \
                        tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                             desc=dest.name, disable=not progress) as bar:
                    while block := response.read(1 << 20):
                        handle.write(block)
                        bar.update(len(block))
            except (OSError, socket.timeout) as err:
                raise DownloadError(f"download of {url} interrupted ({err}); run again to resume "
                                    f"from {part}") from None
    if md5 is not None:
        actual = _md5(part)
        if actual != md5:
            part.unlink()
            raise DataError(f"{part}: md5 checksum mismatch (got {actual}, expected {md5}); "
                            "the partial file was deleted, run again to download afresh")
    os.replace(part, dest)
    return dest


# ==================================================================================================
# Splits
# ==================================================================================================

@dataclass(eq=False)
class Splits:
    """Two split protocols over the rows of a Dataset ('' = the image is not used by it).

    seen: image-disjoint 'train' | 'val' | 'test' inside every class (official train images only).
    unseen: class-disjoint, every image of a class has the same part.
    Official val images are '' in both and form the extra test protocol 'official-val'.
    The other fields are copied from the dataset so the split can describe itself in `save`.
    """

    seen: np.ndarray
    unseen: np.ndarray
    official: np.ndarray | None = None  # the dataset's official subsets, for 'official-val'
    labels: np.ndarray | None = None
    paths: list[str] | None = None
    wnids: list[str] | None = None

    def __len__(self) -> int:
        return len(self.seen)

    def indices(self, protocol: str, part: str = "train") -> np.ndarray:
        """Row indices (int64) of `part` of `protocol`; 'official-val' ignores `part`."""
        if protocol == "official-val":
            if self.official is None or self.labels is None:
                raise ValueError("protocol 'official-val' needs Splits made from a dataset")
            found = np.flatnonzero((self.official == "val") & (self.labels >= 0))
            if not len(found):
                raise DataError("protocol 'official-val': this dataset has no labelled official "
                                "val images (the train-only copy has none)")
            return found.astype(np.int64)
        if protocol not in ("seen", "unseen", "joint"):
            raise ValueError(f"protocol={protocol!r}: must be one of {', '.join(PROTOCOLS)}, joint")
        if part not in SUBSETS:
            raise ValueError(f"part={part!r}: must be one of {', '.join(SUBSETS)}")
        if protocol == "joint":
            # Train on the seen-train images of the unseen protocol's training classes, so one
            # model is honest on both protocols: new images of its classes, and new classes.
            trained_class = self.unseen == "train"
            if part == "train":
                mask = (self.seen == "train") & trained_class
            else:
                mask = ((self.seen == part) & trained_class) | (self.unseen == part)
            return np.flatnonzero(mask).astype(np.int64)
        column = self.seen if protocol == "seen" else self.unseen
        return np.flatnonzero(column == part).astype(np.int64)

    def evaluation_indices(self, trained_on: str, protocol: str, part: str) -> np.ndarray:
        """`part` of `protocol` restricted to what a model trained on `trained_on` never saw.

        - 'official-val', or the protocol the model was trained on: its own part.
        - trained on 'joint': 'seen' = held-out images of the classes it trained on; 'unseen' = the
          classes held out of training altogether.
        - trained on 'seen' and asked for 'unseen' (or the reverse): the model has trained on
          images of those classes, so the protocol cannot be judged; raises DataError.
        """
        if protocol == "official-val" or protocol == trained_on:
            return self.indices(protocol, part)
        if trained_on == "joint" and protocol == "seen":
            trained_class = self.unseen == "train"
            return np.flatnonzero((self.seen == part) & trained_class).astype(np.int64)
        if trained_on == "joint" and protocol == "unseen":
            return self.indices("unseen", part)
        raise DataError(f"a model trained on the {trained_on!r} protocol has seen images of the "
                        f"{protocol!r} protocol's {part} classes; train with protocol 'joint' to "
                        "evaluate both")

    def save(self, path: str | os.PathLike, dataset: Dataset | None = None) -> Path:
        """CSV with columns index,path,wnid,label,seen,unseen (written atomically)."""
        paths = dataset.paths if dataset is not None else self.paths
        labels = dataset.labels if dataset is not None else self.labels
        wnids = dataset.wnids if dataset is not None else self.wnids
        if paths is None or labels is None or wnids is None:
            raise ValueError("Splits.save needs the dataset (pass it, or build the splits with make_splits)")
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["index", "path", "wnid", "label", "seen", "unseen"])
        for row, (path_in_layout, label) in enumerate(zip(paths, labels)):
            wnid = wnids[label] if label >= 0 else ""
            writer.writerow([row, path_in_layout, wnid, int(label), self.seen[row], self.unseen[row]])
        return atomic_write_text(path, buffer.getvalue())

    @classmethod
    def load(cls, path: str | os.PathLike, dataset: Dataset) -> "Splits":
        """Read a split CSV and check it describes exactly the rows of `dataset`."""
        path = Path(path)
        try:
            with open(path, newline="") as handle:
                rows = list(csv.DictReader(handle))
        except FileNotFoundError:
            raise FileNotFoundError(f"split file not found: {path}") from None
        expected = {"index", "path", "wnid", "label", "seen", "unseen"}
        if not rows or not expected <= set(rows[0]):
            raise DataError(f"{path}: not a split file (needs columns {', '.join(sorted(expected))})")
        if len(rows) != len(dataset):
            raise DataError(f"{path}: {len(rows)} rows but the dataset {dataset.source} has "
                            f"{len(dataset)} images; make the splits again for this dataset")
        for row_number, (row, path_in_layout) in enumerate(zip(rows, dataset.paths)):
            if row["path"] != path_in_layout or int(row["index"]) != row_number:
                raise DataError(f"{path} row {row_number + 1}: {row['path']!r} but the dataset has "
                                f"{path_in_layout!r} there; the split belongs to another dataset")
        seen = np.asarray([row["seen"] for row in rows], dtype="<U5")
        unseen = np.asarray([row["unseen"] for row in rows], dtype="<U5")
        return cls(seen=seen, unseen=unseen, official=dataset.subsets, labels=dataset.labels,
                   paths=list(dataset.paths), wnids=list(dataset.wnids))


def _part_sizes(count: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """(val, test) counts out of `count`, keeping at least one for train (and one each if >= 3)."""
    val, test = round(val_fraction * count), round(test_fraction * count)
    if count >= 3:
        val, test = max(val, 1), max(test, 1)
    while val + test >= count and (val or test):
        if val >= test:
            val -= 1
        else:
            test -= 1
    return val, test


def make_splits(dataset: Dataset, *, seed: int, val_fraction: float = 0.1, test_fraction: float = 0.1,
                unseen_train_classes: int = 150) -> Splits:
    """Seeded splits of the official train images into the 'seen' and 'unseen' protocols.

    seen: each class's images are shuffled and cut into val (`val_fraction`), test
        (`test_fraction`) and train (the rest).
    unseen: the classes are shuffled; the first `unseen_train_classes` give all their images to
        train; the held-out classes are divided between val and test in the ratio
        `val_fraction : test_fraction` (at least 1 val class, at least 2 when 4 or more are held
        out, so the val part has negative pairs).
    """
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 < value < 1:
            raise ValueError(f"{name}={value!r}: must be in (0, 1)")
    candidates = (dataset.subsets == "train") & (dataset.labels >= 0)
    classes = np.unique(dataset.labels[candidates])
    if not 1 <= unseen_train_classes <= len(classes) - 2:
        raise ValueError(f"unseen_train_classes={unseen_train_classes}: must be between 1 and "
                         f"{len(classes) - 2} for a dataset of {len(classes)} classes (two or more "
                         "classes must be held out for val and test)")
    seen = np.full(len(dataset), "", dtype="<U5")
    rng = np.random.default_rng([seed, 0])
    for label in classes:
        members = rng.permutation(np.flatnonzero(candidates & (dataset.labels == label)))
        val, test = _part_sizes(len(members), val_fraction, test_fraction)
        seen[members[:val]] = "val"
        seen[members[val:val + test]] = "test"
        seen[members[val + test:]] = "train"

    unseen = np.full(len(dataset), "", dtype="<U5")
    order = np.random.default_rng([seed, 1]).permutation(classes)
    held_out = order[unseen_train_classes:]
    minimum = 2 if len(held_out) >= 4 else 1
    # The held-out classes are shared between val and test in the ratio val:test of the fractions
    # (the defaults give 25 + 25 of 50): enough classes on both sides for a stable threshold.
    val_share = val_fraction / (val_fraction + test_fraction)
    val_classes = min(max(round(val_share * len(held_out)), minimum), len(held_out) - 1)
    for part, part_classes in (("train", order[:unseen_train_classes]),
                               ("val", held_out[:val_classes]), ("test", held_out[val_classes:])):
        unseen[candidates & np.isin(dataset.labels, part_classes)] = part
    return Splits(seen=seen, unseen=unseen, official=dataset.subsets, labels=dataset.labels,
                  paths=list(dataset.paths), wnids=list(dataset.wnids))


def make_splits_for(dataset: Dataset, config) -> Splits:
    """`make_splits` with the config's seed and fractions.

    When the dataset has too few classes for `config.unseen_train_classes` (a subset or the
    synthetic data under a full-size profile), the same share of classes as 150/200 is used instead
    and a warning is logged.
    """
    classes = len(np.unique(dataset.labels[(dataset.subsets == "train") & (dataset.labels >= 0)]))
    train_classes = config.unseen_train_classes
    if train_classes > classes - 2:
        train_classes = max(1, min(classes - 2, round(classes * 0.75)))
        logger.warning("unseen_train_classes=%d does not fit %d classes; using %d",
                       config.unseen_train_classes, classes, train_classes)
    return make_splits(dataset, seed=config.seed, val_fraction=config.val_fraction,
                       test_fraction=config.test_fraction, unseen_train_classes=train_classes)


# ==================================================================================================
# P x K batches
# ==================================================================================================

class PKSampler:
    """Row indices of class-balanced batches: P distinct classes, K images of each.

    Every class keeps its own shuffled queue, so over an epoch each image is used about equally.
    A class with fewer than K images is sampled with replacement (its images repeat in the batch).
    Deterministic for a seed; successive calls continue the same random stream.
    """

    def __init__(self, labels: np.ndarray, *, classes_per_batch: int, images_per_class: int, seed: int,
                 indices: np.ndarray | None = None):
        labels = np.asarray(labels)
        rows = np.arange(len(labels)) if indices is None else np.asarray(indices, dtype=np.int64)
        rows = rows[labels[rows] >= 0]
        self.classes = np.unique(labels[rows])
        if classes_per_batch < 1 or images_per_class < 1:
            raise ValueError("classes_per_batch and images_per_class must be >= 1")
        if len(self.classes) < classes_per_batch:
            raise ValueError(f"classes_per_batch={classes_per_batch}: only {len(self.classes)} "
                             "labelled classes to draw from")
        self.p, self.k = classes_per_batch, images_per_class
        self.rng = np.random.default_rng(seed)
        self.members = [rows[labels[rows] == c] for c in self.classes]
        self.queues = [self.rng.permutation(m) for m in self.members]
        self.positions = [0] * len(self.members)
        self.num_rows = len(rows)

    def _take(self, slot: int) -> np.ndarray:
        members = self.members[slot]
        if len(members) < self.k:
            return self.rng.choice(members, self.k, replace=True)
        if self.positions[slot] + self.k > len(members):
            self.queues[slot] = self.rng.permutation(members)
            self.positions[slot] = 0
        start = self.positions[slot]
        self.positions[slot] += self.k
        return self.queues[slot][start:start + self.k]

    def next_batch(self) -> np.ndarray:
        chosen = self.rng.choice(len(self.members), self.p, replace=False)
        return np.concatenate([self._take(slot) for slot in chosen])

    def steps_per_epoch(self) -> int:
        return max(1, self.num_rows // (self.p * self.k))



def run_splits(run_dir, dataset: Dataset, config, *, save: bool = False) -> Splits:
    """The split of a run: RUN_DIR/split.csv when it exists (what the run was trained on), else a
    fresh seeded split, written there when `save` (training does; evaluation only reads)."""
    path = Path(run_dir) / "split.csv"
    if path.is_file():
        return Splits.load(path, dataset)
    splits = make_splits_for(dataset, config)
    if save:
        splits.save(path)  # atomic
    return splits

def pk_dataset(images: np.ndarray, labels: np.ndarray, *, classes_per_batch: int, images_per_class: int,
               seed: int, augment: Callable | None = None, repeat: bool = True,
               indices: np.ndarray | None = None):
    """A `tf.data.Dataset` of class-balanced (float32 [P*K, 64, 64, 3] in 0..255, int32 [P*K]).

    Indices are drawn in NumPy (`PKSampler`) and the batch is gathered from `images` (a memory map
    is fine: only the batch is read); rows with label -1 are never drawn. `indices` restricts the
    draw to those rows without copying the images (e.g. `splits.indices('seen', 'train')`).
    `augment` is an optional hook applied to every float32 batch (a Keras layer is called with
    `training=True`). With `repeat=False` the dataset ends after one epoch of
    `len(rows) // (P*K)` batches; iterating it again continues the random stream.
    """
    import tensorflow as tf

    labels = np.asarray(labels)
    if len(images) != len(labels):
        raise ValueError(f"images ({len(images)}) and labels ({len(labels)}) differ in length")
    sampler = PKSampler(labels, classes_per_batch=classes_per_batch, images_per_class=images_per_class,
                        seed=seed, indices=indices)
    batch = classes_per_batch * images_per_class

    def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        steps = None if repeat else sampler.steps_per_epoch()
        step = 0
        while steps is None or step < steps:
            rows = sampler.next_batch()
            order = np.argsort(rows, kind="stable")  # sorted reads are kinder to a memory map
            gathered = np.empty((batch,) + images.shape[1:], dtype=images.dtype)
            gathered[order] = images[rows[order]]
            yield gathered, labels[rows].astype(np.int32)
            step += 1

    signature = (tf.TensorSpec((batch,) + tuple(images.shape[1:]), tf.as_dtype(images.dtype)),
                 tf.TensorSpec((batch,), tf.int32))
    stream = tf.data.Dataset.from_generator(batches, output_signature=signature)
    if augment is None:
        stream = stream.map(lambda x, y: (tf.cast(x, tf.float32), y))
    else:  # one map for cast + augmentation; batches are augmented in parallel
        stream = stream.map(lambda x, y: (_apply_augment(augment, tf.cast(x, tf.float32)), y),
                            num_parallel_calls=tf.data.AUTOTUNE)
    return stream.prefetch(tf.data.AUTOTUNE)


def _apply_augment(augment: Callable, images):
    import keras

    if isinstance(augment, keras.layers.Layer):
        return augment(images, training=True)
    return augment(images)


__all__ = [
    "DataError", "DownloadError", "Dataset", "Splits", "PKSampler", "load_dataset", "load_dataset_for",
    "summarize", "format_summary", "download", "make_splits", "make_splits_for", "run_splits", "pk_dataset",
    "make_synthetic_dataset", "default_cache_dir", "synthetic_data_path", "OFFICIAL_URL",
    "OFFICIAL_MD5", "OFFICIAL_SIZE", "IMAGE_SIZE",
]
