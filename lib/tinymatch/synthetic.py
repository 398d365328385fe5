"""A tiny, learnable stand-in for Tiny ImageNet, written in the official layout.

Every test in the project and the `smoke` profile run on this instead of the 248 MB download.
Each class is drawn as stripes of its own colour, orientation and frequency, with a random phase
and pixel noise per image, so a few-thousand-parameter CNN separates the classes within a couple of
epochs (`learnable=True`), while `learnable=False` gives class-independent noise (a chance-level
control). The layout mirrors the real one down to the file names:

```
tiny-imagenet-200/
    wnids.txt  words.txt
    train/<wnid>/images/<wnid>_<i>.JPEG   train/<wnid>/<wnid>_boxes.txt
    val/images/val_<i>.JPEG               val/val_annotations.txt
    test/images/test_<i>.JPEG
```

Some training images are saved as grayscale JPEGs (as ~1.8% of the real ones are), and some can be
made corrupt (a truncated JPEG or bytes that are not a JPEG at all) to exercise error handling.
"""

from __future__ import annotations

import colorsys
import io
import os
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from tinymatch.config import IMAGE_SIZE
from tinymatch.io_utils import atomic_path

LAYOUT_DIR = "tiny-imagenet-200"  # the official layout's top folder (in the zip and unpacked)
# A fixed timestamp keeps the zip byte-identical for the same arguments.
_ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)
_COLOUR_NAMES = ("red", "orange", "yellow", "lime", "green", "teal", "cyan", "azure", "blue",
                 "violet", "magenta", "rose")


def synthetic_wnid(class_index: int) -> str:
    """WordNet-style id of synthetic class `class_index` ('n' + 8 digits, like the real ones)."""
    return f"n{90000000 + class_index:08d}"


def class_pattern(class_index: int, num_classes: int) -> dict:
    """Colour (RGB 0..255), stripe angle (radians) and frequency (cycles per image) of a class."""
    # Hues spread evenly; angles and frequencies cycle at different rates so that classes that
    # share a similar hue (many classes) still differ in texture.
    hue = class_index / max(num_classes, 1)
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.75, 0.9)
    angle = (class_index * 0.618034 % 1.0) * np.pi
    frequency = 2.0 + 1.5 * (class_index % 4)
    return {"colour": np.array([red, green, blue]) * 255.0, "angle": angle, "frequency": frequency}


def class_name(class_index: int, num_classes: int) -> str:
    pattern = class_pattern(class_index, num_classes)
    colour = _COLOUR_NAMES[int(class_index / max(num_classes, 1) * len(_COLOUR_NAMES))]
    return f"c{class_index:02d} {colour} {np.degrees(pattern['angle']):.0f}deg stripes"


def render_image(class_index: int, num_classes: int, rng: np.random.Generator, *,
                 learnable: bool = True, size: int = IMAGE_SIZE) -> np.ndarray:
    """One uint8 [size, size, 3] image of a class: coloured stripes, random phase and noise."""
    if not learnable:
        colour = rng.uniform(40, 215, size=3)
        return np.clip(colour + rng.normal(0, 40, (size, size, 3)), 0, 255).astype(np.uint8)
    pattern = class_pattern(class_index, num_classes)
    coords = np.arange(size, dtype=np.float64) / size
    y, x = np.meshgrid(coords, coords, indexing="ij")
    angle = pattern["angle"] + rng.normal(0, 0.08)  # a little jitter, still clearly one class
    along = x * np.cos(angle) + y * np.sin(angle)
    stripes = np.sin(2 * np.pi * (pattern["frequency"] * along + rng.uniform(0, 1)))
    brightness = 0.55 + 0.4 * stripes[..., None]
    image = pattern["colour"][None, None, :] * brightness + rng.normal(0, 12, (size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def _jpeg_bytes(image: np.ndarray, *, grayscale: bool = False) -> bytes:
    pil = Image.fromarray(image)
    if grayscale:
        pil = pil.convert("L")  # saved as a 1-channel JPEG, like the real grayscale files
    buffer = io.BytesIO()
    pil.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _corrupt_bytes(kind: int, image: np.ndarray) -> bytes:
    """Alternate between a JPEG cut in half and bytes that are not an image at all."""
    if kind % 2 == 0:
        data = _jpeg_bytes(image)
        return data[: len(data) // 2]
    return b"this is not a JPEG file\n" * 8


def _random_box(rng: np.random.Generator, size: int = IMAGE_SIZE) -> tuple[int, int, int, int]:
    x0, y0 = (int(v) for v in rng.integers(0, size // 2, size=2))
    x1, y1 = (int(v) for v in rng.integers(size // 2, size, size=2))
    return x0, y0, x1, y1


def build_layout_files(*, num_classes: int = 6, images_per_class: int = 10, val_per_class: int = 2,
                       test_images: int = 4, grayscale: int = 2, corrupt: int = 0, seed: int = 0,
                       learnable: bool = True, odd_sized: int = 0) -> dict[str, bytes]:
    """The synthetic dataset as {path inside the layout: file bytes}."""
    if num_classes < 1 or images_per_class < 1:
        raise ValueError("num_classes and images_per_class must be >= 1")
    if grayscale + corrupt + odd_sized > num_classes * images_per_class:
        raise ValueError("grayscale + corrupt + odd_sized exceeds the number of training images")
    rng = np.random.default_rng(seed)
    files: dict[str, bytes] = {}
    wnids = [synthetic_wnid(c) for c in range(num_classes)]
    files["wnids.txt"] = "".join(f"{w}\n" for w in wnids).encode()
    # Like the real words.txt, it also lists ids that are not classes of the dataset.
    words = [f"{w}\t{class_name(c, num_classes)}, synthetic class {c}" for c, w in enumerate(wnids)]
    words += [f"n{80000000 + k:08d}\tunused synset {k}, distractor" for k in range(3)]
    files["words.txt"] = ("\n".join(words) + "\n").encode()

    # Special training images, spread over classes: grayscale ones are image 0 of classes 0, 1, ...,
    # corrupt ones the last image, odd-sized ones image 1 (wrapping round when there are many).
    def spread(count: int, position: int) -> set[tuple[int, int]]:
        return {(k % num_classes, (position + k // num_classes) % images_per_class) for k in range(count)}

    gray_set = spread(grayscale, 0)
    corrupt_list = sorted(spread(corrupt, images_per_class - 1) - gray_set)
    odd_set = spread(odd_sized, 1) - gray_set - set(corrupt_list)

    for c, wnid in enumerate(wnids):
        boxes = []
        for i in range(images_per_class):
            name = f"{wnid}_{i}.JPEG"
            size = 80 if (c, i) in odd_set else IMAGE_SIZE
            image = render_image(c, num_classes, rng, learnable=learnable, size=size)
            if (c, i) in corrupt_list:
                data = _corrupt_bytes(corrupt_list.index((c, i)), image)
            else:
                data = _jpeg_bytes(image, grayscale=(c, i) in gray_set)
            files[f"train/{wnid}/images/{name}"] = data
            boxes.append("\t".join([name, *map(str, _random_box(rng))]))
        files[f"train/{wnid}/{wnid}_boxes.txt"] = ("\n".join(boxes) + "\n").encode()

    if val_per_class > 0:
        annotations = []
        for k in range(num_classes * val_per_class):
            c = k % num_classes
            name = f"val_{k}.JPEG"
            files[f"val/images/{name}"] = _jpeg_bytes(render_image(c, num_classes, rng, learnable=learnable))
            annotations.append("\t".join([name, wnids[c], *map(str, _random_box(rng))]))
        files["val/val_annotations.txt"] = ("\n".join(annotations) + "\n").encode()

    for k in range(test_images):
        c = int(rng.integers(num_classes))
        files[f"test/images/test_{k}.JPEG"] = _jpeg_bytes(render_image(c, num_classes, rng, learnable=learnable))
    return files


def make_synthetic_dataset(root: str | os.PathLike, *, num_classes: int = 6, images_per_class: int = 10,
                           val_per_class: int = 2, test_images: int = 4, grayscale: int = 2,
                           corrupt: int = 0, as_zip: bool = False, seed: int = 0,
                           learnable: bool = True, odd_sized: int = 0) -> Path:
    """Write a small synthetic Tiny ImageNet in the official layout; return its dir or zip path.

    Args:
        root: directory to write into; the dataset is `root/tiny-imagenet-200/` (or
            `root/tiny-imagenet-200.zip` with `as_zip=True`, whose entries start with
            `tiny-imagenet-200/` like the official zip).
        num_classes, images_per_class: training images, `train/<wnid>/images/<wnid>_<i>.JPEG`.
        val_per_class: labelled official-val images per class (0: no `val/` folder).
        test_images: unlabelled official-test images (0: no `test/` folder).
        grayscale: how many training images are saved as 1-channel JPEGs.
        corrupt: how many training images are replaced by broken files (alternately a truncated
            JPEG and non-JPEG bytes); loading then needs `skip_corrupt=True`.
        seed: the same seed writes byte-identical files.
        learnable: class-dependent patterns (True) or class-independent noise (False).
        odd_sized: how many training images are saved at 80x80 instead of 64x64.
    """
    root = Path(root)
    files = build_layout_files(num_classes=num_classes, images_per_class=images_per_class,
                               val_per_class=val_per_class, test_images=test_images,
                               grayscale=grayscale, corrupt=corrupt, seed=seed, learnable=learnable,
                               odd_sized=odd_sized)
    root.mkdir(parents=True, exist_ok=True)
    if as_zip:
        target = root / f"{LAYOUT_DIR}.zip"
        with atomic_path(target) as tmp:
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as archive:
                for name in sorted(files):
                    archive.writestr(zipfile.ZipInfo(f"{LAYOUT_DIR}/{name}", _ZIP_DATE_TIME), files[name])
        return target
    target = root / LAYOUT_DIR
    with atomic_path(target) as tmp:
        for name, data in files.items():
            path = tmp / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    return target


__all__ = ["make_synthetic_dataset", "build_layout_files", "render_image", "class_pattern",
           "synthetic_wnid", "LAYOUT_DIR"]
