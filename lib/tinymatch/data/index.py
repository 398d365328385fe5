"""Parse the official layout: which images, which labels, which official subset, which boxes.

```
wnids.txt                                   class ids, one a line (their order = class index)
words.txt                                   wnid <tab> human-readable names, comma separated
train/<wnid>/images/*.JPEG                  500 images a class
train/<wnid>/<wnid>_boxes.txt               file <tab> x0 y0 x1 y1
val/images/*.JPEG  val/val_annotations.txt  file <tab> wnid <tab> x0 y0 x1 y1   (optional)
test/images/*.JPEG                          unlabelled                           (optional)
```

Nothing is decoded here: the result (`Index`) lists the files to decode, in order.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import numpy as np

from tinymatch.data.errors import DataError
from tinymatch.data.layout import Layout
from tinymatch.synthetic import LAYOUT_DIR

logger = logging.getLogger(__name__)

SUBSETS = ("train", "val", "test")
_IMAGE_SUFFIXES = (".jpeg", ".jpg")
_UNKNOWN_BOX = [-1, -1, -1, -1]


@dataclass
class Index:
    """What the layout lists (after max_classes / max_images_per_class), before decoding."""

    wnids: list[str]
    class_names: list[str]
    paths: list[str]
    labels: np.ndarray
    subsets: np.ndarray
    boxes: np.ndarray


def natural_key(name: str) -> list:
    """'x_2.JPEG' before 'x_10.JPEG': the numbered files in their natural order."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _is_image(name: str) -> bool:
    return name.lower().endswith(_IMAGE_SUFFIXES)


def _image_place(name: str) -> str | None:
    """'train' | 'val' | 'test' when `name` is where an image of that subset lives, else None."""
    parts = name.split("/")
    if not _is_image(name):
        return None
    if parts[0] == "train" and len(parts) == 4 and parts[2] == "images":
        return "train"
    if parts[0] in ("val", "test") and len(parts) == 3 and parts[1] == "images":
        return parts[0]
    return None


def _read_wnids(layout: Layout, names: set[str]) -> list[str]:
    if "wnids.txt" not in names and "wnids.txt" not in layout.folders():
        raise DataError(f"{layout.display('wnids.txt')}: missing. {layout.location} does not look "
                        f"like Tiny ImageNet (expected {LAYOUT_DIR}/wnids.txt, words.txt, train/...)")
    wnids = [line.strip() for line in layout.read_metadata("wnids.txt").splitlines() if line.strip()]
    if not wnids:
        raise DataError(f"{layout.display('wnids.txt')}: no class ids in it")
    bad = [w for w in wnids if "/" in w or w in (".", "..")]
    if bad:
        raise DataError(f"{layout.display('wnids.txt')}: {bad[0]!r} is not a class id")
    if len(set(wnids)) < len(wnids):
        duplicates = sorted({w for w in wnids if wnids.count(w) > 1})
        raise DataError(f"{layout.display('wnids.txt')}: duplicate class ids {duplicates[:5]}")
    return wnids


def _read_class_names(layout: Layout, names: set[str], wnids: list[str]) -> list[str]:
    """Short names (first comma item of words.txt); the wnid itself when words.txt lacks it."""
    words: dict[str, str] = {}
    if "words.txt" in names or "words.txt" in layout.folders():
        for line in layout.read_metadata("words.txt").splitlines():
            wnid, _, text = line.partition("\t")
            if text:
                words[wnid.strip()] = text.split(",")[0].strip()
    else:
        logger.warning("%s: missing; class names fall back to the wnids", layout.display("words.txt"))
    return [words.get(wnid, wnid) for wnid in wnids]


def _parse_box_fields(fields: list[str], layout: Layout, name: str, line_number: int) -> list[int]:
    try:
        return [int(v) for v in fields]
    except ValueError:
        raise DataError(f"{layout.display(name)} line {line_number}: box coordinates must be integers, "
                        f"got {fields}") from None


def _read_train_boxes(layout: Layout, name: str) -> dict[str, list[int]]:
    boxes = {}
    for line_number, line in enumerate(layout.read_metadata(name).splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 5:
            raise DataError(f"{layout.display(name)} line {line_number}: expected "
                            f"'file x0 y0 x1 y1', got {line!r}")
        boxes[fields[0]] = _parse_box_fields(fields[1:], layout, name, line_number)
    return boxes


def _read_val_annotations(layout: Layout, wnid_index: dict[str, int],
                          val_images: set[str]) -> dict[str, tuple[int, list[int]]]:
    name = "val/val_annotations.txt"
    annotations = {}
    for line_number, line in enumerate(layout.read_metadata(name).splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 6:
            raise DataError(f"{layout.display(name)} line {line_number}: expected "
                            f"'file wnid x0 y0 x1 y1', got {line!r}")
        file_name, wnid = fields[0], fields[1]
        if wnid not in wnid_index:
            raise DataError(f"{layout.display(name)} line {line_number}: unknown class {wnid!r} "
                            f"(not in wnids.txt)")
        if file_name not in val_images:
            raise DataError(f"{layout.display(name)} line {line_number}: image "
                            f"{layout.display('val/images/' + file_name)} not found")
        annotations[file_name] = (wnid_index[wnid], _parse_box_fields(fields[2:], layout, name, line_number))
    return annotations


def _list_images(layout: Layout, names: list[str]) -> tuple[dict[str, list[str]], list[str], list[str]]:
    """Train images by class folder, val and test image file names."""
    for folder in sorted(layout.folders()):
        if _image_place(folder):
            raise DataError(f"{layout.display(folder)}: is a folder, expected an image file")
    train: dict[str, list[str]] = {}
    val, test = [], []
    for name in names:
        place = _image_place(name)
        parts = name.split("/")
        if place == "train":
            train.setdefault(parts[1], []).append(parts[3])
        elif place == "val":
            val.append(parts[2])
        elif place == "test":
            test.append(parts[2])
    return train, val, test


def parse_layout(layout: Layout, *, max_classes: int = 0, max_images_per_class: int = 0) -> Index:
    """List the images of the layout with labels, official subsets and boxes.

    A subset is deterministic: the first `max_classes` classes in wnids.txt order and, per class,
    the first `max_images_per_class` images in natural file-name order (train and official val
    alike; the unlabelled official test images are capped at `max_images_per_class` too).
    """
    names = layout.names()
    name_set = set(names)
    folders = layout.folders()
    all_wnids = _read_wnids(layout, name_set)
    train_images, val_images, test_images = _list_images(layout, names)

    unknown = sorted(set(train_images) - set(all_wnids))
    if unknown:
        raise DataError(f"{layout.display('train/' + unknown[0])}: class folder not listed in "
                        f"{layout.display('wnids.txt')} ({len(unknown)} such folder(s))")
    for wnid in all_wnids:
        if not train_images.get(wnid):
            raise DataError(f"{layout.display(f'train/{wnid}/images/')}: class {wnid} has no images "
                            f"(every class in wnids.txt needs at least one training image)")

    wnids = all_wnids[:max_classes] if max_classes > 0 else list(all_wnids)
    class_names = _read_class_names(layout, name_set, wnids)
    cap = max_images_per_class if max_images_per_class > 0 else None
    paths: list[str] = []
    labels: list[int] = []
    subsets: list[str] = []
    boxes: list[list[int]] = []

    for label, wnid in enumerate(wnids):
        box_file = f"train/{wnid}/{wnid}_boxes.txt"
        present = box_file in name_set or box_file in folders
        class_boxes = _read_train_boxes(layout, box_file) if present else {}
        for file_name in sorted(train_images[wnid], key=natural_key)[:cap]:
            paths.append(f"train/{wnid}/images/{file_name}")
            labels.append(label)
            subsets.append("train")
            boxes.append(class_boxes.get(file_name, _UNKNOWN_BOX))

    if val_images:
        if "val/val_annotations.txt" not in name_set | folders:
            raise DataError(f"{layout.display('val/val_annotations.txt')}: missing, but val/images "
                            f"holds {len(val_images)} images (their labels are in that file)")
        annotations = _read_val_annotations(layout, {w: i for i, w in enumerate(all_wnids)},
                                            set(val_images))
        missing = sorted(set(val_images) - set(annotations))
        if missing:
            raise DataError(f"{layout.display('val/images/' + missing[0])}: no line for it in "
                            f"{layout.display('val/val_annotations.txt')} ({len(missing)} image(s))")
        taken = np.zeros(len(all_wnids), dtype=np.int64)
        for file_name in sorted(val_images, key=natural_key):
            label, box = annotations[file_name]
            if label >= len(wnids) or (cap is not None and taken[label] >= cap):
                continue
            taken[label] += 1
            paths.append(f"val/images/{file_name}")
            labels.append(label)
            subsets.append("val")
            boxes.append(box)

    for file_name in sorted(test_images, key=natural_key)[:cap]:
        paths.append(f"test/images/{file_name}")
        labels.append(-1)
        subsets.append("test")
        boxes.append(_UNKNOWN_BOX)

    return Index(wnids=wnids, class_names=class_names, paths=paths,
                 labels=np.asarray(labels, dtype=np.int32),
                 subsets=np.asarray(subsets, dtype="<U5"),
                 boxes=np.asarray(boxes, dtype=np.int32).reshape(-1, 4))


__all__ = ["Index", "SUBSETS", "parse_layout", "natural_key"]
