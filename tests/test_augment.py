"""The augmentation layer: shapes, identity at inference, randomness in training, factors kept."""

import numpy as np
import pytest

from tinymatch.augment import ImageAugmentation, augmentation_layer_for, get_image_augmentation_layer
from tinymatch.config import Config


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return rng.uniform(0, 255, (8, 64, 64, 3)).astype(np.float32)


def test_shape_dtype_and_value_range(images):
    out = np.asarray(get_image_augmentation_layer(seed=1)(images, training=True))
    assert out.shape == images.shape and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 255


def test_identity_at_inference(images):
    layer = get_image_augmentation_layer(seed=1)
    np.testing.assert_array_equal(np.asarray(layer(images)), images)
    np.testing.assert_array_equal(np.asarray(layer(images, training=False)), images)


def test_training_outputs_differ_between_calls_and_images(images):
    layer = get_image_augmentation_layer(seed=1)
    first = np.asarray(layer(images, training=True))
    second = np.asarray(layer(images, training=True))
    assert not np.allclose(first, images)
    assert not np.allclose(first, second)


def test_all_factors_zero_is_identity(images):
    layer = ImageAugmentation(zoom=0, flip="", rotation=0, translation=0, brightness=0, contrast=0)
    np.testing.assert_allclose(np.asarray(layer(images, training=True)), images, atol=1e-3)


def test_brightness_shift_stays_within_its_factor():
    flat = np.full((64, 64, 64, 3), 128.0, np.float32)
    layer = ImageAugmentation(zoom=0, flip="", rotation=0, translation=0, brightness=0.2, contrast=0,
                              seed=3)
    shift = np.asarray(layer(flat, training=True))[:, 0, 0, 0] - 128.0
    assert np.all(np.abs(shift) <= 0.2 * 255 + 1e-3)
    assert shift.std() > 5  # really random, not a constant


def test_contrast_factor_range():
    rng = np.random.default_rng(1)
    images = rng.uniform(50, 200, (32, 16, 16, 1)).astype(np.float32)
    layer = ImageAugmentation(zoom=0, flip="", rotation=0, translation=0, brightness=0, contrast=0.2,
                              seed=4)
    out = np.asarray(layer(images, training=True))
    ratio = out.std(axis=(1, 2, 3)) / images.std(axis=(1, 2, 3))
    assert np.all(ratio >= 0.8 - 1e-3) and np.all(ratio <= 1.2 + 1e-3)


def test_horizontal_flip_only_mirrors():
    image = np.tile(np.arange(8, dtype=np.float32)[None, :, None], (8, 1, 3))[None].repeat(64, axis=0)
    layer = ImageAugmentation(zoom=0, flip="horizontal", rotation=0, translation=0, brightness=0,
                              contrast=0, seed=5)
    out = np.asarray(layer(image, training=True))
    flipped = np.all(np.isclose(out, image[:, :, ::-1]), axis=(1, 2, 3))
    kept = np.all(np.isclose(out, image), axis=(1, 2, 3))
    assert np.all(flipped | kept) and flipped.any() and kept.any()


def test_config_round_trip_and_factory():
    layer = augmentation_layer_for(Config.from_profile("smoke", zoom=0.1, rotation=0.05))
    clone = ImageAugmentation.from_config(layer.get_config())
    assert clone.zoom == 0.1 and clone.rotation == 0.05 and clone.flip == "horizontal"
    assert augmentation_layer_for(Config.from_profile("smoke", augment=False)) is None


def test_bad_flip_mode_is_named():
    with pytest.raises(ValueError, match="flip"):
        ImageAugmentation(flip="diagonal")


# --- fused resize (output_size): the model's downsizing inside the augmentation resample ---------

def _smooth_images(count=16, size=64):
    """Smooth colour gradients: resampling them twice or once should give nearly the same image."""
    grid = np.linspace(0.0, 1.0, size, dtype=np.float32)
    x, y = np.meshgrid(grid, grid)
    phases = np.random.default_rng(2).uniform(0, 2 * np.pi, (count, 3))
    channels = [127.5 + 100 * np.sin(2.0 * x[None] + 1.5 * y[None] + phases[:, c, None, None])
                for c in range(3)]
    return np.stack(channels, axis=-1).astype(np.float32)


def test_fused_resize_at_inference_is_keras_resizing(images):
    import keras

    layer = get_image_augmentation_layer(seed=1, output_size=32)
    expected = np.asarray(keras.layers.Resizing(32, 32)(images))
    np.testing.assert_allclose(np.asarray(layer(images)), expected, atol=1e-4)
    assert layer.compute_output_shape((None, 64, 64, 3)) == (None, 32, 32, 3)


@pytest.mark.parametrize("size", [32, 48])
def test_fused_resize_with_identity_transform_equals_the_resize(images, size):
    import keras

    layer = ImageAugmentation(zoom=0, flip="", rotation=0, translation=0, brightness=0, contrast=0,
                              output_size=size)
    trained = np.asarray(layer(images, training=True))
    assert trained.shape == (len(images), size, size, 3)
    np.testing.assert_allclose(trained, np.asarray(keras.layers.Resizing(size, size)(images)), atol=1e-3)


def test_fused_resize_matches_augmenting_at_full_resolution_then_resizing():
    """Same seed = same random transforms: fused (one resample) vs augment at 64 + resize (two)."""
    import keras

    images = _smooth_images()
    factors = dict(zoom=0.3, flip="horizontal", rotation=0.2, translation=0.2, brightness=0.2,
                   contrast=0.2, seed=7)
    fused = np.asarray(ImageAugmentation(output_size=32, **factors)(images, training=True))
    two_step = np.asarray(keras.layers.Resizing(32, 32)(
        ImageAugmentation(**factors)(images, training=True)))
    assert fused.shape == two_step.shape == (16, 32, 32, 3)
    assert not np.allclose(fused, np.asarray(keras.layers.Resizing(32, 32)(images)), atol=5)
    # On smooth images one resample or two agree to ~1 grey level (a one-pixel misregistration of
    # the grid would show as ~3.5 on average).
    np.testing.assert_allclose(fused, two_step, atol=1.5)
    assert np.abs(fused - two_step).mean() < 0.1


def test_fused_resize_round_trips_its_config():
    layer = get_image_augmentation_layer(seed=1, output_size=32)
    assert ImageAugmentation.from_config(layer.get_config()).output_size == 32
    with pytest.raises(ValueError, match="output_size"):
        ImageAugmentation(output_size=0)
