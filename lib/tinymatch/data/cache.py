"""Decode once, then memory-map: `load_dataset` and its on-disk cache of decoded images.

The cache entry of a source is a folder `<stem>-<digest>/` holding `images.npy` (uint8
[N, 64, 64, 3], opened memory-mapped in well under a second), `meta.npz` (labels, subsets, paths,
grayscale, resized, boxes) and `manifest.json` (written last; its `key` names the source's
identity, the subset and the cache format). Replacing the zip or editing the folder changes the
key, so the entry is rebuilt and the stale one removed.

Writes are safe against crashes and against each other:
- an entry is written into a temporary folder renamed into place at the end, so an interrupted
  run never leaves half a cache and never removes a good one;
- a build holds the cache folder's lock (`rundir.locked`): a second process that needs the same
  (or any) entry waits for the first (up to `CACHE_LOCK_WAIT_SECONDS`), then finds the finished
  entry instead of decoding again; under the lock no live writer can own a temporary folder, so
  any left by a killed run are removed at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np

from tinymatch import rundir
from tinymatch.config import IMAGE_SIZE
from tinymatch.data.dataset import Dataset
from tinymatch.data.decode import DecodeResult, decode_into
from tinymatch.data.errors import DataError
from tinymatch.data.index import Index, parse_layout
from tinymatch.data.layout import Layout, open_layout
from tinymatch.io_utils import atomic_path, write_json

logger = logging.getLogger(__name__)

CACHE_ENV_VAR = "TINYMATCH_CACHE"
CACHE_FORMAT = 1  # bump when the cache contents change meaning
CACHE_LOCK_WAIT_SECONDS = 3600.0  # a cold decode of the full set takes about a minute on 2 cores
_LOCK_WHAT = "decoded-image cache"
# Temporary entries made by `atomic_path`: `.<stem>-<16 hex digits>.<random>.tmp`.
_TEMPORARY_ENTRY = re.compile(r"\..+-[0-9a-f]{16}\..+\.tmp")


def user_cache_root() -> Path:
    """$TINYMATCH_CACHE, else $XDG_CACHE_HOME/tinymatch, else ~/.cache/tinymatch."""
    env = os.environ.get(CACHE_ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tinymatch"


def default_cache_dir(source: str | os.PathLike) -> Path:
    """$TINYMATCH_CACHE, else `cache/` beside the data, else ~/.cache/tinymatch (read-only data)."""
    if os.environ.get(CACHE_ENV_VAR):
        return user_cache_root()
    beside = Path(source).expanduser().resolve().parent / "cache"
    existing = beside if beside.exists() else beside.parent
    # Mode bits too, not just os.access: root may write anywhere, but a folder marked read-only
    # (like a shared data folder) should not grow a cache.
    if os.access(existing, os.W_OK) and existing.stat().st_mode & 0o222:
        return beside
    fallback = user_cache_root()
    logger.info("%s is not writable; caching decoded images in %s", existing, fallback)
    return fallback


def _cache_key(identity: dict, max_classes: int, max_images_per_class: int) -> dict:
    return {"format": CACHE_FORMAT, "image_size": IMAGE_SIZE, "source": identity,
            "max_classes": int(max_classes), "max_images_per_class": int(max_images_per_class)}


def _cache_entry(cache_root: Path, layout: Layout, key: dict) -> Path:
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


def _write_cache_metadata(folder: Path, index: Index, keep: np.ndarray, decoded: DecodeResult,
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


def _remove_dead_temporaries(cache_root: Path) -> None:
    """Temporary entries of killed builds. Call only under the lock: then none has a live writer."""
    for other in cache_root.iterdir():
        if _TEMPORARY_ENTRY.fullmatch(other.name) and other.is_dir() and not other.is_symlink():
            logger.info("removing %s, left by a decode that was killed", other)
            shutil.rmtree(other, ignore_errors=True)


def _remove_stale_entries(cache_root: Path, entry: Path, key: dict) -> None:
    """Drop caches of an older version of the same source (same subset)."""
    for other in cache_root.iterdir():
        if other == entry or other.name.startswith("."):
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


def _cache_lock(cache_root: Path) -> contextlib.ExitStack:
    """Hold the cache folder's lock; if another build holds it, say so and wait for it."""
    stack = contextlib.ExitStack()
    try:
        try:
            stack.enter_context(rundir.locked(cache_root, what=_LOCK_WHAT))
        except rundir.RunLockedError as err:
            logger.warning("%s; waiting up to %.0f s for it", err, CACHE_LOCK_WAIT_SECONDS)
            stack.enter_context(rundir.locked(cache_root, what=_LOCK_WHAT, wait=CACHE_LOCK_WAIT_SECONDS))
    except rundir.RunLockedError as err:
        raise DataError(str(err)) from None
    except OSError as err:
        raise DataError(f"cache directory {cache_root} is not writable ({err.strerror}); choose "
                        "another with cache_dir (CLI: --cache-dir) or TINYMATCH_CACHE") from None
    return stack


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
    layout = open_layout(data)
    try:
        key = _cache_key(layout.identity(), max_classes, max_images_per_class)
        cache_root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir(layout.location)
        entry = _cache_entry(cache_root, layout, key)
        dataset = _read_cache(entry, key)
        if dataset is None:
            try:
                cache_root.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise DataError(f"cache directory {cache_root} cannot be created ({err.strerror}); "
                                "choose another with cache_dir (CLI: --cache-dir) or TINYMATCH_CACHE") from None
            with _cache_lock(cache_root):
                dataset = _read_cache(entry, key)  # built by the process we waited for?
                if dataset is None:
                    _remove_dead_temporaries(cache_root)
                    dataset = _build_cache(layout, entry, key, max_classes=max_classes,
                                           max_images_per_class=max_images_per_class,
                                           skip_corrupt=skip_corrupt,
                                           workers=max(1, workers or os.cpu_count() or 1),
                                           progress=progress)
        if dataset.from_cache:
            logger.info("loaded %d images from cache %s", len(dataset), entry)
    finally:
        layout.close()
    if dataset.corrupt and not skip_corrupt:
        raise DataError(f"{dataset.source}: {len(dataset.corrupt)} corrupt image(s), e.g. "
                        f"{dataset.corrupt[0]} (the cache was built with skip_corrupt=True); "
                        "pass skip_corrupt=True (CLI: --skip-corrupt) to skip them")
    return dataset


def _build_cache(layout: Layout, entry: Path, key: dict, *, max_classes: int,
                 max_images_per_class: int, skip_corrupt: bool, workers: int,
                 progress: bool) -> Dataset:
    index = parse_layout(layout, max_classes=max_classes, max_images_per_class=max_images_per_class)
    logger.info("decoding %d images from %s into %s", len(index.paths), layout.location, entry)
    with atomic_path(entry) as folder:
        folder.mkdir()
        images = np.lib.format.open_memmap(folder / "images.npy", mode="w+", dtype=np.uint8,
                                           shape=(len(index.paths), IMAGE_SIZE, IMAGE_SIZE, 3))
        decoded = decode_into(layout, index.paths, images, skip_corrupt=skip_corrupt,
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


__all__ = ["load_dataset", "default_cache_dir", "user_cache_root", "CACHE_ENV_VAR", "CACHE_FORMAT",
           "CACHE_LOCK_WAIT_SECONDS"]
