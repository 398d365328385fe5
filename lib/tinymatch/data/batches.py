"""Class-balanced P x K batches for triplet mining: P classes, K images of each.

`PKSampler` draws the row indices in NumPy; `pk_dataset` gathers them into a `tf.data` stream.
TensorFlow is imported inside `pk_dataset`: importing it takes 8-13 s on the 2-core machine,
which `tinymatch download`, `--help` and anything that only reads a dataset must not pay.
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np


class PKSampler:
    """Row indices of class-balanced batches: P distinct classes, K images of each.

    Every class keeps its own shuffled queue, so over an epoch each image is used about equally.
    A class with fewer than K images is sampled with replacement (its images repeat in the batch).
    Deterministic for a seed; successive calls continue the same random stream.
    """

    def __init__(self, labels: np.ndarray, *, classes_per_batch: int, images_per_class: int, seed: int,
                 indices: np.ndarray | None = None):
        labels = np.asarray(labels)
        rows = np.arange(len(labels)) if indices is None else np.asarray(indices, dtype=np.int64)
        rows = rows[labels[rows] >= 0]
        self.classes = np.unique(labels[rows])
        if classes_per_batch < 1 or images_per_class < 1:
            raise ValueError("classes_per_batch and images_per_class must be >= 1")
        if len(self.classes) < classes_per_batch:
            raise ValueError(f"classes_per_batch={classes_per_batch}: only {len(self.classes)} "
                             "labelled classes to draw from")
        self.p, self.k = classes_per_batch, images_per_class
        self.rng = np.random.default_rng(seed)
        self.members = [rows[labels[rows] == c] for c in self.classes]
        self.queues = [self.rng.permutation(m) for m in self.members]
        self.positions = [0] * len(self.members)
        self.num_rows = len(rows)

    def _take(self, slot: int) -> np.ndarray:
        members = self.members[slot]
        if len(members) < self.k:
            return self.rng.choice(members, self.k, replace=True)
        if self.positions[slot] + self.k > len(members):
            self.queues[slot] = self.rng.permutation(members)
            self.positions[slot] = 0
        start = self.positions[slot]
        self.positions[slot] += self.k
        return self.queues[slot][start:start + self.k]

    def next_batch(self) -> np.ndarray:
        chosen = self.rng.choice(len(self.members), self.p, replace=False)
        return np.concatenate([self._take(slot) for slot in chosen])

    def steps_per_epoch(self) -> int:
        return max(1, self.num_rows // (self.p * self.k))


def pk_dataset(images: np.ndarray, labels: np.ndarray, *, classes_per_batch: int, images_per_class: int,
               seed: int, augment: Callable | None = None, repeat: bool = True,
               indices: np.ndarray | None = None):
    """A `tf.data.Dataset` of class-balanced (float32 [P*K, 64, 64, 3] in 0..255, int32 [P*K]).

    Indices are drawn in NumPy (`PKSampler`) and the batch is gathered from `images` (a memory map
    is fine: only the batch is read); rows with label -1 are never drawn. `indices` restricts the
    draw to those rows without copying the images (e.g. `splits.indices('seen', 'train')`).
    `augment` is an optional hook applied to every float32 batch (a Keras layer is called with
    `training=True`). With `repeat=False` the dataset ends after one epoch of
    `len(rows) // (P*K)` batches; iterating it again continues the random stream.
    """
    import tensorflow as tf  # (see the module docstring)

    labels = np.asarray(labels)
    if len(images) != len(labels):
        raise ValueError(f"images ({len(images)}) and labels ({len(labels)}) differ in length")
    sampler = PKSampler(labels, classes_per_batch=classes_per_batch, images_per_class=images_per_class,
                        seed=seed, indices=indices)
    batch = classes_per_batch * images_per_class

    def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        steps = None if repeat else sampler.steps_per_epoch()
        step = 0
        while steps is None or step < steps:
            rows = sampler.next_batch()
            order = np.argsort(rows, kind="stable")  # sorted reads are kinder to a memory map
            gathered = np.empty((batch,) + images.shape[1:], dtype=images.dtype)
            gathered[order] = images[rows[order]]
            yield gathered, labels[rows].astype(np.int32)
            step += 1

    signature = (tf.TensorSpec((batch,) + tuple(images.shape[1:]), tf.as_dtype(images.dtype)),
                 tf.TensorSpec((batch,), tf.int32))
    stream = tf.data.Dataset.from_generator(batches, output_signature=signature)
    if augment is None:
        stream = stream.map(lambda x, y: (tf.cast(x, tf.float32), y))
    else:  # one map for cast + augmentation; batches are augmented in parallel
        stream = stream.map(lambda x, y: (_apply_augment(augment, tf.cast(x, tf.float32)), y),
                            num_parallel_calls=tf.data.AUTOTUNE)
    return stream.prefetch(tf.data.AUTOTUNE)


def _apply_augment(augment: Callable, images):
    import keras  # (imports TensorFlow: see the module docstring)

    if isinstance(augment, keras.layers.Layer):
        return augment(images, training=True)
    return augment(images)


__all__ = ["PKSampler", "pk_dataset"]
