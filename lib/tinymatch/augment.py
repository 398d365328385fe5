"""Image augmentation as one fast Keras layer.

The recipe is the classic Keras one: RandomZoom(0.3), RandomFlip("horizontal"), RandomRotation(0.2),
RandomTranslation(0.2, 0.2), RandomBrightness(0.2) and RandomContrast(0.2). Chaining those six
Keras layers resamples every image four times and is known to slow CPU training several-fold
(keras-cv #581, keras #20283). `ImageAugmentation` draws the same random transforms with the same
factors, but composes zoom, rotation, translation and flip into ONE affine matrix per image and
resamples the whole batch with a single `keras.ops.image.affine_transform` call; brightness and
contrast are two vectorised arithmetic ops. Like the Keras layers it is only active with
`training=True`, so it can live inside the embedding model and costs nothing at inference.

With `output_size` set (a network input smaller than the image), the layer also does the model's
downsizing: at inference a plain bilinear resize (what `keras.layers.Resizing` does), in training
the same resample that applies the random transform reads the full-resolution image straight onto
the smaller output grid. Why: augmenting after the resize resamples an already downsized image a
second time, so training images come out blurrier than the test images (one bilinear resize);
augmenting at full resolution before the resize avoids that but costs 4x (the resample's cost
follows the output pixel count). Fused, the cost is that of the small output and, for the identity
transform, the output equals the inference-time resize exactly.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from tinymatch.config import FLIP_MODES  # the shared vocabulary: "" = no flip


@keras.saving.register_keras_serializable(package="tinymatch")
class ImageAugmentation(keras.layers.Layer):
    """Random zoom + flip + rotation + translation + brightness + contrast, float32 0..255 images.

    Factors follow the Keras layers of the same name:
      zoom: the scale is drawn from [1 - zoom, 1 + zoom] (as `RandomZoom(zoom)`, aspect kept).
      flip: "horizontal", "vertical", "horizontal_and_vertical" or "" (no flip), each with p=0.5.
      rotation: a fraction of a full turn; the angle is drawn from [-rotation, rotation] * 2 pi.
      translation: a fraction of the image side; shifts drawn from [-translation, translation].
      brightness: a delta drawn from [-brightness, brightness] * 255 is added to every pixel.
      contrast: each channel is stretched around its mean by a factor in [1 - contrast, 1 + contrast].
    Geometric transforms fill with reflection (the Keras default). Outputs are clipped to 0..255.
    """

    def __init__(self, zoom=0.3, flip="horizontal", rotation=0.2, translation=0.2, brightness=0.2,
                 contrast=0.2, seed=None, output_size=None, **kwargs):
        super().__init__(**kwargs)
        if flip is None:
            flip = ""
        if flip not in FLIP_MODES:
            raise ValueError(f"flip={flip!r}: must be one of {FLIP_MODES}")
        for name, value in (("zoom", zoom), ("rotation", rotation), ("translation", translation),
                            ("brightness", brightness), ("contrast", contrast)):
            if not 0 <= value < (1 if name in ("zoom", "contrast", "brightness") else 10):
                raise ValueError(f"{name}={value!r}: must be >= 0 (and < 1 for zoom/contrast/brightness)")
        self.zoom = float(zoom)
        self.flip = flip
        self.rotation = float(rotation)
        self.translation = float(translation)
        self.brightness = float(brightness)
        self.contrast = float(contrast)
        if output_size is not None and int(output_size) < 1:
            raise ValueError(f"output_size={output_size!r}: must be a positive side in pixels or None")
        self.output_size = None if output_size is None else int(output_size)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = False

    def _uniform(self, batch, low, high):
        return keras.random.uniform((batch,), minval=low, maxval=high, seed=self.seed_generator)

    def _coin(self, batch):
        """+1 or -1 with probability 1/2 each (a flip of one axis)."""
        draw = keras.random.uniform((batch,), seed=self.seed_generator)
        return ops.where(draw < 0.5, -1.0, 1.0)

    def affine_transforms(self, batch, height, width):
        """[batch, 8] output->input transforms (the ImageProjectiveTransform layout)."""
        one = ops.ones((batch,))
        zero = ops.zeros((batch,))
        scale = self._uniform(batch, 1.0 - self.zoom, 1.0 + self.zoom) if self.zoom else one
        angle = (self._uniform(batch, -self.rotation, self.rotation) * 2.0 * math.pi
                 if self.rotation else zero)
        flip_x = self._coin(batch) if "horizontal" in self.flip else one
        flip_y = self._coin(batch) if "vertical" in self.flip else one
        if self.translation:
            shift_x = self._uniform(batch, -self.translation, self.translation) * width
            shift_y = self._uniform(batch, -self.translation, self.translation) * height
        else:
            shift_x = shift_y = zero
        cos, sin = ops.cos(angle), ops.sin(angle)
        # Input point = centre + scale * R(angle) * flip * (output point - centre) - shift.
        a00, a01 = scale * cos * flip_x, -scale * sin * flip_y
        a10, a11 = scale * sin * flip_x, scale * cos * flip_y
        centre_x, centre_y = (width - 1) / 2.0, (height - 1) / 2.0
        offset_x = centre_x - a00 * centre_x - a01 * centre_y - shift_x
        offset_y = centre_y - a10 * centre_x - a11 * centre_y - shift_y
        return ops.stack([a00, a01, offset_x, a10, a11, offset_y, zero, zero], axis=1)

    def augment(self, images):
        images = ops.cast(images, "float32")
        shape = ops.shape(images)
        batch, height, width = shape[0], images.shape[1], images.shape[2]
        output_shape = (self.output_size, self.output_size) if self.output_size else (height, width)
        resizing = output_shape != (height, width)
        if self.zoom or self.rotation or self.translation or self.flip or resizing:
            transforms = self.affine_transforms(batch, float(height), float(width))
            if resizing:
                transforms = _onto_grid(transforms, height / output_shape[0], width / output_shape[1])
            images = _resample(images, transforms, output_shape)
        if self.brightness:
            delta = self._uniform(batch, -self.brightness, self.brightness) * 255.0
            images = images + ops.reshape(delta, (-1, 1, 1, 1))
        if self.contrast:
            factor = ops.reshape(self._uniform(batch, 1.0 - self.contrast, 1.0 + self.contrast),
                                 (-1, 1, 1, 1))
            mean = ops.mean(images, axis=(1, 2), keepdims=True)
            images = (images - mean) * factor + mean
        return ops.clip(images, 0.0, 255.0)

    def call(self, inputs, training=None):
        if not training:
            return inputs if self.output_size is None else resize_bilinear(inputs, self.output_size)
        return self.augment(inputs)

    def compute_output_shape(self, input_shape):
        if self.output_size is None:
            return input_shape
        return (input_shape[0], self.output_size, self.output_size, *input_shape[3:])

    def get_config(self):
        config = super().get_config()
        config.update(zoom=self.zoom, flip=self.flip, rotation=self.rotation,
                      translation=self.translation, brightness=self.brightness,
                      contrast=self.contrast, seed=self.seed, output_size=self.output_size)
        return config


def _onto_grid(transforms, scale_y, scale_x):
    """Compose [batch, 8] full-resolution transforms with the map from a smaller output grid.

    Output pixel p of the small grid sits at (p + 0.5) * scale - 0.5 in full-resolution pixels
    (half-pixel centres, as the bilinear resize), so the composed transform is
    A' = A * diag(scale), offset' = offset + A @ (scale - 1) / 2.
    """
    a00, a01, off_x, a10, a11, off_y, c0, c1 = ops.unstack(transforms, 8, axis=1)
    shift_x, shift_y = (scale_x - 1.0) / 2.0, (scale_y - 1.0) / 2.0
    return ops.stack([a00 * scale_x, a01 * scale_y, off_x + a00 * shift_x + a01 * shift_y,
                      a10 * scale_x, a11 * scale_y, off_y + a10 * shift_x + a11 * shift_y,
                      c0, c1], axis=1)


def resize_bilinear(images, size, dtype="float32"):
    """Bilinear resize of channels-last images to size x size (`keras.layers.Resizing`'s result)."""
    return ops.image.resize(ops.cast(images, dtype), (size, size), interpolation="bilinear",
                            data_format="channels_last")


def _resample(images, transforms, output_shape):
    """Bilinear projective resample onto an `output_shape` grid (reflect fill).

    The op under `keras.ops.image.affine_transform`, called directly: that function always outputs
    the input's size, the fused resize needs a smaller grid (tinymatch trains on TensorFlow).
    """
    import tensorflow as tf

    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=ops.cast(transforms, "float32"), output_shape=list(output_shape),
        fill_value=0.0, interpolation="BILINEAR", fill_mode="REFLECT")


def get_image_augmentation_layer(zoom=0.3, flip="horizontal", rotation=0.2, translation=0.2,
                                 brightness=0.2, contrast=0.2, seed=None, name="augmentation",
                                 output_size=None):
    """The training-time augmentation layer (input float32 0..255; identity unless training).

    output_size: also downsize to this side (fused with the random transform, see the module doc).
    """
    return ImageAugmentation(zoom=zoom, flip=flip, rotation=rotation, translation=translation,
                             brightness=brightness, contrast=contrast, seed=seed, name=name,
                             output_size=output_size)


def get_keras_augmentation_layers(zoom=0.3, flip="horizontal", rotation=0.2, translation=0.2,
                                  brightness=0.2, contrast=0.2, seed=None):
    """The same recipe as a chain of stock Keras layers: the slow reference for benchmarks."""
    layers = [keras.layers.RandomZoom(zoom, seed=seed)]
    if flip:
        layers.append(keras.layers.RandomFlip(flip, seed=seed))
    layers += [keras.layers.RandomRotation(rotation, seed=seed),
               keras.layers.RandomTranslation(translation, translation, seed=seed),
               keras.layers.RandomBrightness(brightness, value_range=(0, 255), seed=seed),
               keras.layers.RandomContrast(contrast, seed=seed)]
    return keras.Sequential(layers, name="keras_augmentation")


def augmentation_layer_for(config, seed=None, output_size=None):
    """The augmentation layer configured by `config` (zoom/flip/.../contrast), or None if off."""
    if not config.augment:
        return None
    return get_image_augmentation_layer(
        zoom=config.zoom, flip=config.flip, rotation=config.rotation,
        translation=config.translation, brightness=config.brightness, contrast=config.contrast,
        seed=config.seed if seed is None else seed, output_size=output_size)


__all__ = ["ImageAugmentation", "get_image_augmentation_layer", "augmentation_layer_for",
           "resize_bilinear", "get_keras_augmentation_layers"]
