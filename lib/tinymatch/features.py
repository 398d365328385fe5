"""Frozen-feature cache: a frozen pretrained backbone's pooled features of every image, computed
once, so training the embedding head (and every tuning trial) costs what a small MLP costs.

    image (64x64 uint8) -> Resize(image_size) -> EfficientNet-Lite (frozen) -> global average pool
        = features [1280]; twice per image: as it is (view 0) and mirrored left-right (view 1)

The features are exactly what the embedding model computes before its head (same `Resize`
layer, same backbone, flip applied to the 64x64 image as `build_flip_averaged_model` does), so a
head trained on them (`build_feature_head`) drops into the embedding model (`copy_head_weights`).

What a frozen backbone changes about augmentation: only the flip survives (`random_view` picks
view 0 or 1 per sample); crops, rotations and colour changes would need the backbone's forward
pass again, so they do not apply while the backbone is frozen.

Training on features (`trains_on_features`: a pretrained backbone frozen for the whole run):
`tinymatch.train` trains `build_feature_head` on P x K batches of cached features, measures the
validation AUC with `build_view_head`, and saves the best head inside the full image model
(`copy_head_weights` into `build_embedding_model(config)`), so model.keras takes images as usual.

Storage: `features/<backbone>-<key hash>.npy` (float16 [N, 2, D]; post-ReLU6 features lie in
0..6, where float16 keeps 3 significant digits) with a `.json` manifest written last, inside the
dataset's decoded-image cache entry (so it goes when that entry goes), else under the user cache.
The key holds the backbone, the weights' content digest, the input size, the views and the image
count: any change computes anew.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from keras import layers

from tinymatch import pretrained, rundir
from tinymatch.config import EFFICIENTNET_LITE_BACKBONES
from tinymatch.data.cache import user_cache_root
from tinymatch.io_utils import atomic_path, write_json
from tinymatch.model import IMAGE_SHAPE, Resize, embedding_head

logger = logging.getLogger(__name__)

FEATURES_FORMAT = 1
VIEWS = ("original", "mirrored")
FEATURE_DTYPE = np.float16
FROZEN_BACKBONES = EFFICIENTNET_LITE_BACKBONES  # the pretrained backbones that build offline
LOCK_WAIT_SECONDS = 3 * 3600.0  # a full extraction on 2 cores takes tens of minutes


@dataclass
class FeatureCache:
    """features: [N, len(VIEWS), D] (memory-mapped float16); key: what they were computed from."""

    features: np.ndarray
    key: dict
    path: Path
    computed: bool  # False: read from the cache
    seconds: float  # extraction time (of this call, or recorded when the cache was made)

    @property
    def images_per_second(self) -> float:
        return self.features.shape[0] * len(VIEWS) / self.seconds if self.seconds else float("nan")


def feature_key(config, weights_digest, num_images) -> dict:
    return {"format": FEATURES_FORMAT, "backbone": config.backbone, "weights": weights_digest,
            "image_size": int(config.image_size), "views": list(VIEWS), "num_images": int(num_images),
            "dtype": np.dtype(FEATURE_DTYPE).name}


def build_feature_extractor(config, name="feature_extractor"):
    """64x64 0..255 image -> the frozen backbone's pooled features (the embedding model's trunk).

    Returns (model, weights digest). Only pretrained backbones qualify: features of a frozen
    random network are not worth caching.
    """
    if config.backbone not in FROZEN_BACKBONES or not config.weights:
        raise ValueError(f"config.backbone={config.backbone!r}, config.weights={config.weights!r}: "
                         f"cached features need a pretrained {' or '.join(FROZEN_BACKBONES)} "
                         f"backbone (e.g. backbone='efficientnet_lite2', weights='efficientnet-lite2')")
    backbone = pretrained.build_backbone(config.image_size, config.weights, pooling="avg",
                                         variant=pretrained.variant_of_backbone(config.backbone))
    backbone.trainable = False
    inputs = keras.Input(IMAGE_SHAPE, name="image")
    x = Resize(config.image_size, name="resize")(inputs) if config.image_size != IMAGE_SHAPE[0] else inputs
    return keras.Model(inputs, backbone(x), name=name), backbone.weights_digest


def extract_features(extractor, images, out=None, batch_size=128, progress=False):
    """Features of `images` (uint8 [N, 64, 64, 3]) and of their mirror images: [N, 2, D].

    Written into `out` (an array or memmap of that shape) when given, chunk by chunk, so the
    images and features of a full dataset never sit in memory together.
    """
    dim = extractor.output_shape[-1]
    if out is None:
        out = np.empty((len(images), len(VIEWS), dim), FEATURE_DTYPE)
    predict = _inference_function(extractor)
    bar = _progress_bar(len(images), progress)
    for start in range(0, len(images), batch_size):
        batch = np.asarray(images[start:start + batch_size], dtype=np.float32)
        out[start:start + len(batch), 0] = predict(batch)
        out[start:start + len(batch), 1] = predict(batch[:, :, ::-1])
        bar.update(len(batch))
    bar.close()
    return out


def cached_features(dataset, config, batch_size=128, progress=True) -> FeatureCache:
    """The features of every image of `dataset`, from the cache, else extracted and cached."""
    extractor, digest = build_feature_extractor(config)
    key = feature_key(config, digest, len(dataset))
    folder = (Path(dataset.cache_path) if dataset.cache_path else user_cache_root()) / "features"
    stem = f"{config.backbone}-{hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]}"
    path, manifest_path = folder / f"{stem}.npy", folder / f"{stem}.json"
    cached = _read(path, manifest_path, key)
    if cached is not None:
        return cached
    with rundir.locked(folder, what="feature cache", wait=LOCK_WAIT_SECONDS):
        cached = _read(path, manifest_path, key)  # another process may have just written it
        if cached is not None:
            return cached
        started = time.perf_counter()
        shape = (len(dataset), len(VIEWS), extractor.output_shape[-1])
        with atomic_path(path) as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=FEATURE_DTYPE, shape=shape)
            extract_features(extractor, dataset.images, out=out, batch_size=batch_size,
                             progress=progress)
            out.flush()
            del out
        seconds = time.perf_counter() - started
        write_json(manifest_path, {"key": key, "seconds": seconds})  # last: the entry is complete
    logger.info("extracted %d x %d features in %.0f s (%.0f images/s)", shape[0], len(VIEWS),
                seconds, shape[0] * len(VIEWS) / seconds)
    return FeatureCache(np.load(path, mmap_mode="r"), key, path, True, seconds)


def _read(path, manifest_path, key):
    try:
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("key") != key:
            return None
        features = np.load(path, mmap_mode="r")
    except (OSError, ValueError, AttributeError):
        return None
    if features.shape[:2] != (key["num_images"], len(VIEWS)) or features.dtype != FEATURE_DTYPE:
        logger.warning("ignoring inconsistent feature cache %s", path)
        return None
    return FeatureCache(features, key, path, False, float(manifest.get("seconds", 0.0)))


# --------------------------------------------------------------------------------------------------
# The head trained on cached features

HEAD_LAYERS = ("head_hidden", "projection")  # the head's layers with weights


def build_feature_head(config, feature_dim, name="feature_head"):
    """Pooled features -> the embedding model's head (`model.embedding_head`: the same layers
    under the same names, see `copy_head_weights`)."""
    inputs = keras.Input((feature_dim,), name="features")
    return keras.Model(inputs, embedding_head(inputs, config), name=name)


def copy_head_weights(head, embedding_model):
    """Put a feature head's trained weights into the full embedding model (same backbone)."""
    names = {layer.name for layer in head.layers}
    for name in HEAD_LAYERS:
        if name in names:
            embedding_model.get_layer(name).set_weights(head.get_layer(name).get_weights())
    return embedding_model


def trains_on_features(config) -> bool:
    """True when training never updates the backbone: a pretrained frozen backbone, frozen for
    every epoch. Then only the head trains, on cached features (`tinymatch.train`)."""
    return (config.backbone in FROZEN_BACKBONES and bool(config.weights)
            and config.freeze_backbone_epochs >= config.warmup_epochs + config.epochs)


def random_view(views):
    """The flip augmentation of a frozen backbone, in the input pipeline: each row's original or
    mirrored features at random. float32 [B, VIEWS, D] -> [B, D]."""
    import tensorflow as tf

    choice = tf.random.uniform(tf.shape(views)[:1], 0, len(VIEWS), dtype=tf.int32)
    return tf.gather(views, choice, axis=1, batch_dims=1)


def original_view(views):
    """[B, VIEWS, D] -> [B, D]: the features of the image as it is (no augmentation)."""
    return views[:, 0]


def build_view_head(head, flip_average, name="feature_views_head"):
    """The head on both cached views [VIEWS, D] -> embedding: the unit-norm sum of the two views'
    embeddings when `flip_average` (what `build_flip_averaged_model` gives on the images), else
    the original view's embedding. Shares the head's weights; used while training only."""
    inputs = keras.Input((len(VIEWS), head.input_shape[-1]), name="feature_views")
    if not flip_average:
        return keras.Model(inputs, head(inputs[:, 0]), name=name)
    summed = layers.Add(name="flip_sum")([head(inputs[:, view]) for view in range(len(VIEWS))])
    outputs = layers.UnitNormalization(dtype="float32", name="flip_unit_norm")(summed)
    return keras.Model(inputs, outputs, name=name)


def embed_features(head, features, indices=None, batch_size=4096):
    """Flip-averaged embeddings from cached features: the unit-norm sum of the head's embeddings
    of both views (what `build_flip_averaged_model` gives on the images), float32 [N, dim]."""
    rows = np.arange(len(features)) if indices is None else np.asarray(indices)
    predict = _inference_function(head)
    out = [np.zeros((0, head.output_shape[-1]), np.float32)]
    for start in range(0, len(rows), batch_size):
        chunk = np.asarray(features[rows[start:start + batch_size]], np.float32)
        summed = predict(chunk[:, 0]) + predict(chunk[:, 1])
        out.append(summed / np.maximum(np.linalg.norm(summed, axis=1, keepdims=True), 1e-12))
    return np.concatenate(out)


def _inference_function(model):
    import tensorflow as tf

    # One traced graph for every batch size; no XLA (measured: XLA's depthwise convolutions on
    # CPU are over ten times slower).
    function = tf.function(lambda images: model(images, training=False), reduce_retracing=True)
    return lambda batch: function(tf.constant(batch)).numpy()


def _progress_bar(total, enabled):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="features", unit="img", disable=not enabled, mininterval=5.0)


__all__ = ["cached_features", "extract_features", "build_feature_extractor", "build_feature_head",
           "copy_head_weights", "trains_on_features", "random_view", "original_view",
           "build_view_head", "embed_features", "feature_key", "FeatureCache", "VIEWS",
           "FROZEN_BACKBONES"]
