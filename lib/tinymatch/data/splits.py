"""Seeded splits of the official train images, saved as the CSV every later step reads.

Two protocols over the same rows: *seen* classes (image-disjoint train/val/test inside every
class) and *unseen* classes (class-disjoint), plus the dataset's own labelled val images
('official-val'). The *joint* training protocol trains on the seen-train images of the unseen
protocol's training classes, so one model is judged honestly on both.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinymatch.config import TRAINING_PROTOCOLS, part_sizes, unseen_class_counts, unseen_train_class_count
from tinymatch.data.dataset import Dataset
from tinymatch.data.errors import DataError
from tinymatch.data.index import SUBSETS
from tinymatch.io_utils import atomic_write_text

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class Splits:
    """Two split protocols over the rows of a Dataset ('' = the image is not used by it).

    seen: image-disjoint 'train' | 'val' | 'test' inside every class (official train images only).
    unseen: class-disjoint, every image of a class has the same part.
    Official val images are '' in both and form the extra test protocol 'official-val'.
    The other fields are copied from the dataset so the split can describe itself in `save`.
    """

    seen: np.ndarray
    unseen: np.ndarray
    official: np.ndarray | None = None  # the dataset's official subsets, for 'official-val'
    labels: np.ndarray | None = None
    paths: list[str] | None = None
    wnids: list[str] | None = None

    def __len__(self) -> int:
        return len(self.seen)

    def indices(self, protocol: str, part: str = "train") -> np.ndarray:
        """Row indices (int64) of `part` of `protocol`; 'official-val' ignores `part`."""
        if protocol == "official-val":
            if self.official is None or self.labels is None:
                raise ValueError("protocol 'official-val' needs Splits made from a dataset")
            found = np.flatnonzero((self.official == "val") & (self.labels >= 0))
            if not len(found):
                raise DataError("protocol 'official-val': this dataset has no labelled official "
                                "val images (the train-only copy has none)")
            return found.astype(np.int64)
        if protocol not in TRAINING_PROTOCOLS:
            raise ValueError(f"protocol={protocol!r}: must be one of "
                             f"{', '.join(TRAINING_PROTOCOLS + ('official-val',))}")
        if part not in SUBSETS:
            raise ValueError(f"part={part!r}: must be one of {', '.join(SUBSETS)}")
        if protocol == "joint":
            # Train on the seen-train images of the unseen protocol's training classes, so one
            # model is honest on both protocols: new images of its classes, and new classes.
            trained_class = self.unseen == "train"
            if part == "train":
                mask = (self.seen == "train") & trained_class
            else:
                mask = ((self.seen == part) & trained_class) | (self.unseen == part)
            return np.flatnonzero(mask).astype(np.int64)
        column = self.seen if protocol == "seen" else self.unseen
        return np.flatnonzero(column == part).astype(np.int64)

    def evaluation_indices(self, trained_on: str, protocol: str, part: str) -> np.ndarray:
        """`part` of `protocol` restricted to what a model trained on `trained_on` never saw.

        - 'official-val', or the protocol the model was trained on: its own part.
        - trained on 'joint': 'seen' = held-out images of the classes it trained on; 'unseen' = the
          classes held out of training altogether.
        - trained on 'seen' and asked for 'unseen' (or the reverse): the model has trained on
          images of those classes, so the protocol cannot be judged; raises DataError.
        """
        if protocol == "official-val" or protocol == trained_on:
            return self.indices(protocol, part)
        if trained_on == "joint" and protocol == "seen":
            trained_class = self.unseen == "train"
            return np.flatnonzero((self.seen == part) & trained_class).astype(np.int64)
        if trained_on == "joint" and protocol == "unseen":
            return self.indices("unseen", part)
        raise DataError(f"a model trained on the {trained_on!r} protocol has seen images of the "
                        f"{protocol!r} protocol's {part} classes; train with protocol 'joint' to "
                        "evaluate both")

    def save(self, path: str | os.PathLike, dataset: Dataset | None = None) -> Path:
        """CSV with columns index,path,wnid,label,seen,unseen (written atomically)."""
        paths = dataset.paths if dataset is not None else self.paths
        labels = dataset.labels if dataset is not None else self.labels
        wnids = dataset.wnids if dataset is not None else self.wnids
        if paths is None or labels is None or wnids is None:
            raise ValueError("Splits.save needs the dataset (pass it, or build the splits with make_splits)")
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["index", "path", "wnid", "label", "seen", "unseen"])
        for row, (path_in_layout, label) in enumerate(zip(paths, labels)):
            wnid = wnids[label] if label >= 0 else ""
            writer.writerow([row, path_in_layout, wnid, int(label), self.seen[row], self.unseen[row]])
        return atomic_write_text(path, buffer.getvalue())

    @classmethod
    def load(cls, path: str | os.PathLike, dataset: Dataset) -> "Splits":
        """Read a split CSV and apply it to `dataset`, matching rows by the images' paths.

        The split covers the official train images it was made on. It applies to any dataset
        whose labelled train images are exactly those (same paths, same classes), whatever else
        the dataset holds: a copy with the official val/ or test/ added gets the same split, its
        extra images in no part. Any other dataset raises DataError naming an image that differs.
        """
        path = Path(path)
        try:
            with open(path, newline="") as handle:
                rows = list(csv.DictReader(handle))
        except FileNotFoundError:
            raise FileNotFoundError(f"split file not found: {path}") from None
        expected = {"index", "path", "wnid", "label", "seen", "unseen"}
        if not rows or not expected <= set(rows[0]):
            raise DataError(f"{path}: not a split file (needs columns {', '.join(sorted(expected))})")
        by_path = {row["path"]: row for row in rows}
        if len(by_path) != len(rows):
            raise DataError(f"{path}: an image is listed twice; not a split file of tinymatch")
        seen = np.full(len(dataset), "", dtype="<U5")
        unseen = np.full(len(dataset), "", dtype="<U5")
        for row_number, path_in_layout in enumerate(dataset.paths):
            row = by_path.get(path_in_layout)
            if row is None:
                continue
            label = int(dataset.labels[row_number])
            if row["wnid"] != (dataset.wnids[label] if label >= 0 else ""):
                raise DataError(f"{path}: {path_in_layout!r} is class {row['wnid']!r} in the split but "
                                f"not in the dataset {dataset.source}; the split belongs to another dataset")
            seen[row_number], unseen[row_number] = row["seen"], row["unseen"]
        in_dataset = set(dataset.paths)
        split_train = {row["path"] for row in rows if row["seen"] or row["unseen"]}
        dataset_train = {p for p, subset, label in zip(dataset.paths, dataset.subsets, dataset.labels)
                         if subset == "train" and label >= 0}
        missing = sorted(split_train - in_dataset)
        extra = sorted(dataset_train - split_train)
        if missing or extra:
            example = (f"{missing[0]!r} is in the split but not in the dataset" if missing else
                       f"{extra[0]!r} is in the dataset but not in the split")
            raise DataError(f"{path}: the split was made on {len(split_train)} train images, the dataset "
                            f"{dataset.source} has {len(dataset_train)} ({example}); the split belongs "
                            "to another dataset")
        return cls(seen=seen, unseen=unseen, official=dataset.subsets, labels=dataset.labels,
                   paths=list(dataset.paths), wnids=list(dataset.wnids))


def make_splits(dataset: Dataset, *, seed: int, val_fraction: float = 0.1, test_fraction: float = 0.1,
                unseen_train_classes: int = 150) -> Splits:
    """Seeded splits of the official train images into the 'seen' and 'unseen' protocols.

    seen: each class's images are shuffled and cut into val (`val_fraction`), test
        (`test_fraction`) and train (the rest).
    unseen: the classes are shuffled; the first `unseen_train_classes` give all their images to
        train; the held-out classes are divided between val and test in the ratio
        `val_fraction : test_fraction` (at least 1 val class, at least 2 when 4 or more are held
        out, so the val part has negative pairs).
    """
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 < value < 1:
            raise ValueError(f"{name}={value!r}: must be in (0, 1)")
    candidates = (dataset.subsets == "train") & (dataset.labels >= 0)
    classes = np.unique(dataset.labels[candidates])
    if not 1 <= unseen_train_classes <= len(classes) - 2:
        raise ValueError(f"unseen_train_classes={unseen_train_classes}: must be between 1 and "
                         f"{len(classes) - 2} for a dataset of {len(classes)} classes (two or more "
                         "classes must be held out for val and test)")
    seen = np.full(len(dataset), "", dtype="<U5")
    rng = np.random.default_rng([seed, 0])
    for label in classes:
        members = rng.permutation(np.flatnonzero(candidates & (dataset.labels == label)))
        val, test = part_sizes(len(members), val_fraction, test_fraction)
        seen[members[:val]] = "val"
        seen[members[val:val + test]] = "test"
        seen[members[val + test:]] = "train"

    unseen = np.full(len(dataset), "", dtype="<U5")
    order = np.random.default_rng([seed, 1]).permutation(classes)
    held_out = order[unseen_train_classes:]
    # The held-out classes are shared between val and test in the ratio val:test of the fractions
    # (the defaults give 25 + 25 of 50): enough classes on both sides for a stable threshold.
    _, val_classes, _ = unseen_class_counts(len(classes), unseen_train_classes, val_fraction, test_fraction)
    for part, part_classes in (("train", order[:unseen_train_classes]),
                               ("val", held_out[:val_classes]), ("test", held_out[val_classes:])):
        unseen[candidates & np.isin(dataset.labels, part_classes)] = part
    return Splits(seen=seen, unseen=unseen, official=dataset.subsets, labels=dataset.labels,
                  paths=list(dataset.paths), wnids=list(dataset.wnids))


def make_splits_for(dataset: Dataset, config) -> Splits:
    """`make_splits` with the config's seed and fractions.

    When the dataset has too few classes for `config.unseen_train_classes` (a subset or the
    synthetic data under a full-size profile), the same share of classes as 150/200 is used instead
    and a warning is logged.
    """
    classes = len(np.unique(dataset.labels[(dataset.subsets == "train") & (dataset.labels >= 0)]))
    train_classes = unseen_train_class_count(classes, config.unseen_train_classes)
    if train_classes != config.unseen_train_classes:
        logger.warning("unseen_train_classes=%d does not fit %d classes; using %d",
                       config.unseen_train_classes, classes, train_classes)
    return make_splits(dataset, seed=config.seed, val_fraction=config.val_fraction,
                       test_fraction=config.test_fraction, unseen_train_classes=train_classes)


__all__ = ["Splits", "make_splits", "make_splits_for"]
