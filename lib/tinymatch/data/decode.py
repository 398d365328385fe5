"""Decode the layout's images into a uint8 array: TensorFlow in parallel, PIL for what it refuses.

~1.8% of the official JPEGs are grayscale and come out as 3-channel RGB; images that are not
64x64 are resized to 64x64 with antialiased bilinear resampling. An image that declares more
than `MAX_DECODE_PIXELS` pixels (4096 x 4096) is refused before its pixels are decoded, so a
small file cannot make the decoder allocate gigabytes.

TensorFlow is imported inside the functions that use it: importing it takes 8-13 s on the 2-core
machine, which `tinymatch download`, `tinymatch --help` and a warm cache load must not pay.
"""

from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np
from PIL import Image

from tinymatch.config import IMAGE_SIZE
from tinymatch.data.errors import DataError
from tinymatch.data.layout import MAX_IMAGE_BYTES, DirLayout, Layout

logger = logging.getLogger(__name__)

MAX_DECODE_PIXELS = 4096 * 4096  # width x height an image may declare (Tiny ImageNet's are 64 x 64)
_DECODE_CHUNK = 256  # files handed from the reader to the decoder at a time


@dataclass
class DecodeResult:
    grayscale: np.ndarray  # bool [N]
    resized: np.ndarray  # bool [N]
    corrupt: list[int]  # indices that could not be decoded (skip_corrupt=True only)
    seconds: float


def decode_with_pil(data: bytes) -> tuple[np.ndarray, bool, bool]:
    """Fallback decoder for files TensorFlow refuses (CMYK JPEGs, other formats); raises if broken."""
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as err:  # PIL's own, far larger limit, checked on open
        raise ValueError(f"more pixels than the {MAX_DECODE_PIXELS:,} allowed ({err})") from None
    with image:
        width, height = image.size
        if width * height > MAX_DECODE_PIXELS:  # known from the header, before any pixel is decoded
            raise ValueError(f"{width} x {height} pixels, more than the {MAX_DECODE_PIXELS:,} allowed")
        image.load()  # PIL is lazy: this is where truncated files fail
        grayscale = image.mode in ("1", "L", "LA", "I", "I;16", "F")
        rgb = np.asarray(image.convert("RGB"))
    resized = rgb.shape[:2] != (IMAGE_SIZE, IMAGE_SIZE)
    if resized:
        import tensorflow as tf  # (see the module docstring)

        rgb = resize_to_image_size(tf.constant(rgb)).numpy()
    return rgb, grayscale, resized


def resize_to_image_size(image):
    """Antialiased bilinear resize to IMAGE_SIZE x IMAGE_SIZE, back to uint8."""
    import tensorflow as tf  # (see the module docstring)

    resized = tf.image.resize(image, [IMAGE_SIZE, IMAGE_SIZE], method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)


def decode_into(layout: Layout, paths: list[str], out: np.ndarray, *, skip_corrupt: bool,
                workers: int, progress: bool) -> DecodeResult:
    """Decode every file of `paths` into `out` (uint8 [N, 64, 64, 3]), in order.

    The bytes come from the zip (read by one Python thread) or the folder (read by TensorFlow);
    `workers` TensorFlow threads decode them. A file TensorFlow cannot decode (or that is not
    64x64) is dropped from the stream (`ignore_errors`), shows up as a gap in the indices and is
    decoded by PIL instead (resized if needed); only if PIL fails too is it corrupt.
    """
    import tensorflow as tf  # (see the module docstring)
    from tqdm.auto import tqdm

    count = len(paths)
    grayscale = np.zeros(count, dtype=bool)
    resized = np.zeros(count, dtype=bool)
    corrupt: list[int] = []
    read_errors: dict[int, str] = {}

    # From a folder, TensorFlow's threads read the files themselves (`read_file` in the map): the
    # walk has checked they are regular files and their sizes (an oversized one gets the empty
    # name, fails, and is reported by the fallback). From a zip, this one Python thread reads the
    # members (cheap: the official zip is stored, not deflated).
    from_files = isinstance(layout, DirLayout)

    def read_chunks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start in range(0, count, _DECODE_CHUNK):
            stop = min(start + _DECODE_CHUNK, count)
            if from_files:
                files = [layout.os_path(paths[i]) if layout.size(paths[i]) <= MAX_IMAGE_BYTES else ""
                         for i in range(start, stop)]
                yield np.arange(start, stop, dtype=np.int64), np.asarray(files, dtype=object)
                continue
            blobs = []
            for index in range(start, stop):
                try:
                    blobs.append(layout.read_image(paths[index]))
                except DataError as err:
                    read_errors[index] = str(err).split(": ", 1)[-1]
                    blobs.append(b"")  # fails to decode and is reported with the reason above
            yield np.arange(start, stop, dtype=np.int64), np.asarray(blobs, dtype=object)

    def decode(index, contents):
        # No tf.cond for resizing here: it halves the throughput. A file that is not 64x64 fails
        # `ensure_shape`, drops out of the stream and is resized by the PIL fallback (rare).
        if from_files:
            contents = tf.io.read_file(contents)
        shape = tf.image.extract_jpeg_shape(contents)
        small = tf.debugging.assert_less_equal(  # before decode_jpeg allocates the pixels
            tf.cast(shape[0], tf.int64) * tf.cast(shape[1], tf.int64), tf.constant(MAX_DECODE_PIXELS, tf.int64))
        with tf.control_dependencies([small]):
            image = tf.io.decode_jpeg(contents, channels=3)  # grayscale JPEGs come out as RGB
        return index, tf.ensure_shape(image, [IMAGE_SIZE, IMAGE_SIZE, 3]), shape[2] == 1

    signature = (tf.TensorSpec([None], tf.int64), tf.TensorSpec([None], tf.string))
    stream = tf.data.Dataset.from_generator(read_chunks, output_signature=signature).unbatch()
    stream = stream.map(decode, num_parallel_calls=workers, deterministic=True).ignore_errors()
    stream = stream.batch(512).prefetch(2)
    options = tf.data.Options()
    options.threading.private_threadpool_size = max(workers, 1)
    stream = stream.with_options(options)

    def fallback(index: int) -> None:
        try:
            if index in read_errors:
                raise OSError(read_errors[index])
            image, is_gray, was_resized = decode_with_pil(layout.read_image(paths[index]))
        except Exception as err:  # noqa: BLE001 - any failure means the file is unusable
            where = layout.display(paths[index])
            reason = str(err).split(": ", 1)[-1] if isinstance(err, DataError) else str(err)
            if not skip_corrupt:
                raise DataError(f"{where}: corrupt or unreadable image ({type(err).__name__}: {reason}); "
                                "pass skip_corrupt=True (CLI: --skip-corrupt) to skip such files") from None
            logger.warning("skipping corrupt image %s (%s: %s)", where, type(err).__name__, reason)
            corrupt.append(index)
            return
        out[index] = image
        grayscale[index], resized[index] = is_gray, was_resized

    started = time.perf_counter()
    next_index = 0
    with tqdm(total=count, unit="img", desc="decoding images", disable=not progress) as bar:
        for indices, images, gray in stream.as_numpy_iterator():
            last = int(indices[-1])
            if last - next_index + 1 != len(indices):  # gaps: files TensorFlow refused
                for missing in np.setdiff1d(np.arange(next_index, last + 1), indices):
                    fallback(int(missing))
            out[indices] = images
            grayscale[indices] = gray
            bar.update(last + 1 - next_index)
            next_index = last + 1
        for missing in range(next_index, count):
            fallback(missing)
        bar.update(count - next_index)
    return DecodeResult(grayscale, resized, sorted(corrupt), time.perf_counter() - started)


__all__ = ["DecodeResult", "decode_into", "decode_with_pil", "resize_to_image_size", "MAX_DECODE_PIXELS"]
