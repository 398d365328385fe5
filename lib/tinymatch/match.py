"""Two image files in, a verdict out: `tinymatch match`, and the one reader of user image files.

`load_image_file` is what every image a user hands the library goes through. It refuses, with one
line naming the file (FileNotFoundError, or UnreadableImageError / ImageTooLargeError, both
ValueErrors), anything that is not a plain image:

- Only regular files are read, at most MAX_IMAGE_FILE_BYTES (256 MB) of them. The path is
  `stat`ed before it is opened, and the open file is checked again (non-blocking open, then
  `fstat`; `tinymatch.data.layout.read_regular_file`, the reader of dataset files too), so a FIFO,
  socket, device (e.g. a link to /dev/zero) or folder is an error, never a hang or an unbounded
  read.
- Only the raster formats in IMAGE_FORMATS are decoded (no plugin that runs an external program,
  such as EPS through Ghostscript).
- A pixel budget: the size an image declares in its header is checked before anything is decoded,
  so a decompression bomb (a huge declared size in a small file) costs nothing. The budget is
  MAX_IMAGE_PIXELS (40 megapixels, e.g. 8000 x 5000), or the `TINYMATCH_MAX_IMAGE_PIXELS`
  environment variable.
- Every mode comes out as 8-bit RGB, scaled rather than clipped: 16-bit grayscale (`I;16*`) is
  divided by 257 (65535 -> 255, so a 16-bit copy of an 8-bit image reads back as that image);
  32-bit integer (`I`) by the full scale its TIFF tags declare (bit depth, signed or not); float
  (`F`) is read as 0..1 (or 0..255 when its values go above 1). 16-bit RGB PNGs keep their high
  byte (Pillow's reading, which is the same scaling). Transparent pixels become white; CMYK,
  palette and grayscale are converted; an animated image or a multi-page TIFF gives its first
  frame.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from tinymatch.config import IMAGE_SIZE
from tinymatch.data.errors import DataError
from tinymatch.data.layout import read_regular_file

MAX_IMAGE_PIXELS = 40_000_000  # default pixel budget: 40 MP decodes to 120 MB of RGB
MAX_IMAGE_PIXELS_ENV_VAR = "TINYMATCH_MAX_IMAGE_PIXELS"
MAX_IMAGE_FILE_BYTES = 256 << 20  # a 40-megapixel 16-bit RGB TIFF is 240 MB uncompressed
IMAGE_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP", "PPM")
_HIGH_BIT_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_TRANSPARENT_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


class UnreadableImageError(ValueError):
    """An image file exists but is not a regular file or cannot be decoded."""


class ImageTooLargeError(UnreadableImageError):
    """An image declares more pixels than the pixel budget allows."""


def max_image_pixels() -> int:
    """The pixel budget: $TINYMATCH_MAX_IMAGE_PIXELS when set (a positive integer), else
    MAX_IMAGE_PIXELS."""
    text = os.environ.get(MAX_IMAGE_PIXELS_ENV_VAR, "").strip()
    if not text:
        return MAX_IMAGE_PIXELS
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{MAX_IMAGE_PIXELS_ENV_VAR}={text!r}: must be a positive whole number of pixels")
    return value


# --- reading one file -----------------------------------------------------------------------------

def read_image_bytes(path: Path) -> bytes:
    """The bytes of `path`: a non-empty regular file of at most MAX_IMAGE_FILE_BYTES (checked
    with `stat` before it is opened and `fstat` after, by the data layer's one reader)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        data = read_regular_file(path, MAX_IMAGE_FILE_BYTES, "an image file")
    except DataError as err:
        raise UnreadableImageError(str(err)) from None
    if not data:
        raise UnreadableImageError(f"{path} is empty (0 bytes), not an image")
    return data


def check_pixel_budget(path, width: int, height: int, budget: int | None = None) -> None:
    """Raise UnreadableImageError for an empty size, ImageTooLargeError above the budget."""
    budget = max_image_pixels() if budget is None else budget
    if width < 1 or height < 1:
        raise UnreadableImageError(f"{path} declares a {width} x {height} image: no pixels")
    if width * height > budget:
        raise ImageTooLargeError(
            f"{path} declares {width} x {height} = {width * height:,} pixels, over the budget of "
            f"{budget:,} (set {MAX_IMAGE_PIXELS_ENV_VAR} to allow more)")


def to_8_bit(image: Image.Image, path) -> Image.Image:
    """A high-bit-depth single-channel image (I;16*, I, F) scaled, not clipped, to mode L."""
    values = np.asarray(image)
    if image.mode.startswith("I;16"):
        scaled = values.astype(np.float64) / 257.0
    elif image.mode == "I":
        top = _full_scale(image)
        if values.size and (values.min() < 0 or values.max() > top):
            raise UnreadableImageError(f"{path}: integer image with values outside 0..{top}")
        scaled = values.astype(np.float64) * (255.0 / top)
    else:  # "F"
        if not np.all(np.isfinite(values)):
            raise UnreadableImageError(f"{path}: floating-point image with NaN or infinite values")
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        if low < 0 or high > 255:
            raise UnreadableImageError(f"{path}: floating-point image with values {low:g}..{high:g}, "
                                       "outside 0..1 and 0..255")
        scaled = values.astype(np.float64) * (255.0 if high <= 1 else 1.0)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L")


def _full_scale(image: Image.Image) -> int:
    """White of a 32-bit integer (mode I) image: from a TIFF's BitsPerSample and SampleFormat
    (signed: 2^(bits-1) - 1), else 65535 (older Pillows read 16-bit PNG grayscale as I)."""
    tags = getattr(image, "tag_v2", None)
    if tags is None or 258 not in tags:
        return 2 ** 16 - 1

    def first(value):
        return int(value[0] if isinstance(value, tuple) else value)

    bits = min(max(first(tags[258]), 1), 32)
    signed = 339 in tags and first(tags[339]) == 2
    return 2 ** (bits - 1) - 1 if signed else 2 ** bits - 1


def _to_rgb(image: Image.Image, path) -> Image.Image:
    if image.mode in _HIGH_BIT_DEPTH_MODES:
        image = to_8_bit(image, path)
    if image.mode in _TRANSPARENT_MODES or (image.mode == "P" and "transparency" in image.info):
        # Transparent pixels become white rather than whatever colour they hide.
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return image.convert("RGB")


def load_image_file(path, size: int = IMAGE_SIZE) -> np.ndarray:
    """float32 [size, size, 3] in 0..255 from an image file (any size within the pixel budget, any
    mode; see the module docstring).

    Raises FileNotFoundError for a missing file, ImageTooLargeError above the pixel budget and
    UnreadableImageError (a ValueError) naming the file for anything else that is not an image.
    """
    path = Path(path)
    budget = max_image_pixels()
    data = read_image_bytes(path)
    with warnings.catch_warnings():
        # Our budget is below PIL's own bomb limits; its warning would only repeat our check.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
        except Image.DecompressionBombError as err:  # PIL's own limit, far above the budget
            raise ImageTooLargeError(f"{path} declares an image over the budget of {budget:,} pixels "
                                     f"({str(err).split(',')[0]}; set {MAX_IMAGE_PIXELS_ENV_VAR} "
                                     "to allow more)") from None
        except UnidentifiedImageError:
            raise UnreadableImageError(f"cannot read image {path}: not an image in a format read here "
                                       f"({', '.join(IMAGE_FORMATS)})") from None
        except Exception as err:  # noqa: BLE001  any failure to parse an untrusted header
            raise UnreadableImageError(f"cannot read image {path}: {_reason(err)}") from None
        with image:
            check_pixel_budget(path, *image.size, budget=budget)
            try:
                image.seek(0)  # animated GIF / multi-page TIFF: the first frame
                image.load()
                rgb = _to_rgb(image, path)
            except UnreadableImageError:
                raise
            except Exception as err:  # noqa: BLE001  any decoder failure on untrusted data
                raise UnreadableImageError(f"cannot read image {path}: {_reason(err)}") from None
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.float32)


def _reason(err: Exception) -> str:
    text = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


# --- two images, one verdict ----------------------------------------------------------------------

def match_files(siamese_path, image_a, image_b) -> dict:
    """Distance, stored threshold and verdict of two image files under a saved Siamese model.

    Both images are read first: a bad image fails in a fraction of a second, before the model
    (and TensorFlow) is loaded.
    """
    # Imported here, not at the top: TensorFlow costs ~7 s to import (measured on the 2-core
    # machine) and a bad image should fail without it.
    from tinymatch import model as model_module

    first, second = load_image_file(image_a), load_image_file(image_b)
    siamese = model_module.load_model(siamese_path)
    if len(siamese.inputs) != 2:
        raise model_module.NotATinymatchModelError(
            f"{siamese_path} is not a tinymatch Siamese model (expected two image inputs); "
            "pass RUN_DIR/siamese.keras")
    try:
        threshold = float(model_module.siamese_threshold(siamese))
        distance_metric = model_module.siamese_distance_metric(siamese)
        normalised = model_module.siamese_training_mean(siamese) is not None
    except ValueError:
        raise model_module.NotATinymatchModelError(
            f"{siamese_path} is not a tinymatch Siamese model (no stored threshold); "
            "pass RUN_DIR/siamese.keras") from None
    size = int(siamese.inputs[0].shape[1] or IMAGE_SIZE)
    if size != IMAGE_SIZE:
        first, second = load_image_file(image_a, size), load_image_file(image_b, size)
    outputs = siamese.predict_on_batch([first[None], second[None]])
    return {
        "image_a": str(image_a),
        "image_b": str(image_b),
        "distance": float(np.asarray(outputs["distance"]).ravel()[0]),
        "threshold": threshold,
        "match": bool(np.asarray(outputs["match"]).ravel()[0] > 0.5),
        "distance_metric": distance_metric,
        "score_normalisation": "training-mean" if normalised else "none",
    }


__all__ = ["load_image_file", "match_files", "read_image_bytes", "check_pixel_budget", "to_8_bit",
           "max_image_pixels", "UnreadableImageError", "ImageTooLargeError", "MAX_IMAGE_PIXELS",
           "MAX_IMAGE_PIXELS_ENV_VAR", "MAX_IMAGE_FILE_BYTES", "IMAGE_FORMATS"]
