"""Triplet losses with the semantics of the retired `tfa.losses`, in O(B^2) memory.

TensorFlow Addons is gone, but its two triplet losses are what most Siamese/metric-learning
tutorials were written against. This module re-implements them so that a model trained here is
trained on the *same* objective:

* `TripletSemiHardLoss` (FaceNet's semi-hard mining, Schroff et al. 2015). For every
  anchor-positive pair `(a, p)` the negative is the *closest negative farther than the positive*
  (`d(a, n) > d(a, p)`); when no such negative exists, the *farthest* negative of the anchor. The
  loss is `max(margin + d(a, p) - d(a, n), 0)` averaged over all anchor-positive pairs (`a != p`).
* `TripletHardLoss` (batch-hard, Hermans et al. 2017). For every anchor, the farthest positive and
  the closest negative; `max(d_ap - d_an + margin, 0)`, or `softplus(d_ap - d_an)` with
  `soft=True`; averaged over all anchors of the batch.

Distances (`distance_metric`): `"L2"`, `"squared-L2"` or `"angular"` (1 - cosine similarity of the
L2-normalised embeddings), computed exactly as tfa did, including its zero handling: squared
distances are clamped at 0 and exact zeros are masked so that `sqrt` has a finite gradient. A
callable `embeddings -> [B, B]` is accepted too, as in tfa.

Faithfulness. The arithmetic of tfa is reproduced, not just the idea: the fallbacks use tfa's
`masked_minimum` / `masked_maximum` with their row max / row min offsets, which decide what
happens in degenerate batches (an anchor without negatives falls back to the *row minimum* of the
distance matrix, an anchor without positives in the hard loss to the row minimum as well), and
which decide how the gradient is shared between tied distances (equally, as TensorFlow's
`reduce_min`/`reduce_max` gradients do). `tests/test_losses.py` checks loss *and* gradient against
289 cases captured from tensorflow-addons 0.23.0.

What is different from tfa, on purpose:

1. Memory. tfa finds the semi-hard negatives with a `[B*B, B]` tile of the distance matrix: O(B^3)
   memory (4 GiB of float32 at B=1024, before its boolean mask and gradient). Here each anchor's
   negative distances are sorted once (`[B, B]`) and, for every anchor-positive pair, the first
   negative farther than the positive is found with `tf.searchsorted`; a custom gradient hands the
   gradient to that negative (split equally among exact ties, as tfa does). Everything is O(B^2).
2. A batch without any anchor-positive pair gives a semi-hard loss of 0 with a zero gradient;
   tfa divides 0 by 0 and returns NaN (which poisons the weights). Batch-hard was already finite.
3. `soft=True` uses a numerically stable softplus. tfa computed `log1p(exp(x))`, which overflows
   to `inf` (and a NaN gradient) once `d_ap - d_an > ~88`, e.g. with unnormalised embeddings and
   squared-L2 distances. Where tfa is finite the two agree.
4. Ties with the row maximum: when the semi-hard negative of a pair is exactly the row maximum of
   the distance matrix *and* a non-negative sits at that same maximum, tfa spreads part of the
   gradient over the row's maxima; here it goes to the tied negatives only. Same loss value.
   (tfa also computes the negative as `(d - row_max) + row_max`; we return `d` itself, which can
   differ by one float32 rounding of the row maximum.)

Half precision: float16 / bfloat16 embeddings are cast to float32 before any distance is computed
(as tfa did); the functional losses return the embeddings' dtype, the Keras `Loss` classes compute
in their own dtype (float32 by default, also under a `mixed_float16` policy).

Labels: integer class ids, shape `[B]` or `[B, 1]`. Note that Keras' `Loss.__call__` converts
`y_true` to the loss dtype (float32), so ids must stay below 2**24 to remain distinct.
"""

from __future__ import annotations

from typing import Any, Callable, Union

import keras
import tensorflow as tf

DISTANCE_METRICS = ("L2", "squared-L2", "angular")
LOSS_KINDS = ("semihard", "hard")

DistanceMetric = Union[str, Callable[[tf.Tensor], tf.Tensor]]

__all__ = [
    "AdditiveMarginSoftmaxLoss",
    "DISTANCE_METRICS",
    "SmoothedSoftmaxLoss",
    "TripletHardLoss",
    "TripletSemiHardLoss",
    "make_loss",
    "mining_stats",
    "pairwise_distances",
    "smoothed_softmax_cross_entropy",
    "triplet_hard_loss",
    "triplet_semihard_loss",
]


# --------------------------------------------------------------------------------------------------
# Distances
# --------------------------------------------------------------------------------------------------
def _check_distance_metric(distance_metric: DistanceMetric) -> None:
    if callable(distance_metric) or distance_metric in DISTANCE_METRICS:
        return
    raise ValueError(
        f"distance_metric={distance_metric!r}: must be one of {', '.join(DISTANCE_METRICS)} "
        "or a callable embeddings -> [B, B] distances"
    )


def _euclidean_distances(embeddings: tf.Tensor, squared: bool) -> tf.Tensor:
    """tfa's `metric_learning.pairwise_distance`, operation for operation."""
    squared_norms = tf.math.reduce_sum(tf.math.square(embeddings), axis=1, keepdims=True)
    distances_squared = (
        squared_norms
        + tf.transpose(squared_norms)
        - 2.0 * tf.matmul(embeddings, embeddings, transpose_b=True)
    )
    # The expansion |x|^2 + |y|^2 - 2xy can dip below zero by rounding: clamp.
    distances_squared = tf.math.maximum(distances_squared, 0.0)
    # sqrt has an infinite derivative at 0: add a tiny constant there, then zero those entries
    # again, so identical embeddings give distance 0 *and* a zero (finite) gradient.
    is_zero = tf.math.less_equal(distances_squared, 0.0)
    if squared:
        distances = distances_squared
    else:
        distances = tf.math.sqrt(distances_squared + tf.cast(is_zero, tf.float32) * 1e-16)
    distances = distances * tf.cast(tf.math.logical_not(is_zero), tf.float32)
    off_diagonal = 1.0 - tf.linalg.diag(tf.ones([tf.shape(embeddings)[0]]))
    return distances * off_diagonal


def _angular_distances(embeddings: tf.Tensor) -> tf.Tensor:
    """tfa's `metric_learning.angular_distance`: 1 - cosine similarity, clamped at 0."""
    unit = tf.math.l2_normalize(embeddings, axis=1)
    return tf.math.maximum(1.0 - tf.matmul(unit, unit, transpose_b=True), 0.0)


def pairwise_distances(embeddings, distance_metric: DistanceMetric = "L2") -> tf.Tensor:
    """All pairwise distances of a batch of embeddings, `[B, D] -> [B, B]` float32.

    Args:
        embeddings: `[B, D]` tensor; half-precision input is computed in float32.
        distance_metric: `"L2"`, `"squared-L2"`, `"angular"` (1 - cosine similarity) or a
            callable taking the float32 embeddings and returning `[B, B]` distances.
    """
    _check_distance_metric(distance_metric)
    embeddings = tf.convert_to_tensor(embeddings)
    if embeddings.dtype != tf.float32:
        embeddings = tf.cast(embeddings, tf.float32)
    if callable(distance_metric):
        return tf.cast(distance_metric(embeddings), tf.float32)
    if distance_metric == "angular":
        return _angular_distances(embeddings)
    return _euclidean_distances(embeddings, squared=distance_metric == "squared-L2")


# --------------------------------------------------------------------------------------------------
# tfa's masked reductions (O(B^2), kept verbatim: their offsets define the degenerate cases)
# --------------------------------------------------------------------------------------------------
def _masked_maximum(data: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Row-wise max of `data` where `mask` is 1; the row *minimum* of `data` if none is."""
    row_minimums = tf.math.reduce_min(data, axis=1, keepdims=True)
    return tf.math.reduce_max((data - row_minimums) * mask, axis=1, keepdims=True) + row_minimums


def _masked_minimum(data: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Row-wise min of `data` where `mask` is 1; the row *maximum* of `data` if none is."""
    row_maximums = tf.math.reduce_max(data, axis=1, keepdims=True)
    return tf.math.reduce_min((data - row_maximums) * mask, axis=1, keepdims=True) + row_maximums


# --------------------------------------------------------------------------------------------------
# Semi-hard negatives in O(B^2)
# --------------------------------------------------------------------------------------------------
def _tie_groups(sorted_rows: tf.Tensor):
    """For rows sorted ascending: the rank where each entry's run of equal values starts, and
    the length of that run. Linear-time (cumsum + segment reductions), no extra sort or search."""
    batch_size = tf.shape(sorted_rows)[0]
    width = tf.shape(sorted_rows)[1]
    starts_run = tf.concat(
        [tf.ones([batch_size, 1], tf.bool), sorted_rows[:, 1:] != sorted_rows[:, :-1]], axis=1)
    run_index = tf.math.cumsum(tf.cast(starts_run, tf.int32), axis=1) - 1
    segments = tf.reshape(tf.range(batch_size)[:, None] * width + run_index, [-1])
    ranks = tf.reshape(tf.broadcast_to(tf.range(width), tf.shape(sorted_rows)), [-1])
    num_segments = batch_size * width
    run_start = tf.math.unsorted_segment_min(ranks, segments, num_segments)
    run_length = tf.math.unsorted_segment_sum(tf.ones_like(ranks), segments, num_segments)
    run_start = tf.reshape(run_start, [batch_size, width])
    run_length = tf.reshape(run_length, [batch_size, width])
    return (tf.gather(run_start, run_index, axis=1, batch_dims=1),
            tf.gather(run_length, run_index, axis=1, batch_dims=1))


def _semihard_negatives_outside(distances: tf.Tensor, negatives: tf.Tensor):
    """For every pair `(a, p)`: the smallest `d(a, n)` over negatives `n` with `d(a, n) > d(a, p)`.

    Returns `(values, found)`, both `[B, B]` indexed `[anchor, positive]`; `found` is False where
    no negative of `a` is farther than `p` (the value there is meaningless and must be masked out).

    How, without tfa's `[B*B, B]` tile: sort each anchor's negative distances once (non-negatives
    pushed to the end as +inf). The number of negatives with `d(a, n) <= d(a, p)` is then
    `searchsorted(sorted_row, d(a, p), side="right")` and the wanted negative sits at that rank.
    """
    batch_size = tf.shape(distances)[0]
    anchors = tf.range(batch_size)[:, None]
    negative_distances = tf.where(negatives, distances, tf.constant(float("inf")))
    order = tf.argsort(negative_distances, axis=1, stable=True)  # [a, rank] -> column
    sorted_distances = tf.gather(negative_distances, order, axis=1, batch_dims=1)
    num_negatives = tf.math.reduce_sum(tf.cast(negatives, tf.int32), axis=1, keepdims=True)

    # rank of the semi-hard negative of (a, p) in anchor a's sorted negatives
    first = tf.searchsorted(sorted_distances, distances, side="right")
    found = first < num_negatives
    first = tf.minimum(first, batch_size - 1)
    # Exact ties: tfa's reduce_min shares the gradient equally among tied negatives. `first` is
    # the start of its run of equal distances (everything before it is <= d(a, p)).
    run_start, run_length = _tie_groups(sorted_distances)
    tie_counts = tf.cast(tf.gather(run_length, first, axis=1, batch_dims=1), tf.float32)

    @tf.custom_gradient
    def pick(distances_in):
        picked = tf.gather(
            tf.gather(distances_in, order, axis=1, batch_dims=1), first, axis=1, batch_dims=1)

        def grad(upstream):
            upstream = tf.where(found, upstream, 0.0) / tie_counts
            # Sum, per anchor, the upstream of all pairs whose tie run starts at rank r ...
            per_start = tf.math.unsorted_segment_sum(
                tf.reshape(upstream, [-1]), tf.reshape(anchors * batch_size + first, [-1]),
                batch_size * batch_size)
            per_start = tf.reshape(per_start, [batch_size, batch_size])
            # ... give every rank of the run its share, and send ranks back to their columns.
            per_rank = tf.gather(per_start, run_start, axis=1, batch_dims=1)
            per_column = tf.math.unsorted_segment_sum(
                tf.reshape(per_rank, [-1]), tf.reshape(anchors * batch_size + order, [-1]),
                batch_size * batch_size)
            return tf.reshape(per_column, [batch_size, batch_size])

        return picked, grad

    return pick(distances), found


# --------------------------------------------------------------------------------------------------
# Functional losses
# --------------------------------------------------------------------------------------------------
def _prepare(y_true, y_pred):
    """Labels as a `[B, 1]` tensor, embeddings as float32; remember the input dtype."""
    labels = tf.convert_to_tensor(y_true)
    embeddings = tf.convert_to_tensor(y_pred)
    labels = tf.reshape(labels, [tf.shape(labels)[0], 1])
    return labels, embeddings, embeddings.dtype


def _return_dtype(loss: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
    # tfa returned half-precision losses for half-precision embeddings; so do we.
    return tf.cast(loss, dtype) if dtype in (tf.float16, tf.bfloat16) else loss


def _semihard_loss_matrix(labels, distances, margin):
    """`[B, B]` hinge-free loss `margin + d(a, p) - d(a, n*)` and the anchor-positive mask."""
    adjacency = tf.math.equal(labels, tf.transpose(labels))
    not_adjacency = tf.math.logical_not(adjacency)
    outside, found = _semihard_negatives_outside(distances, not_adjacency)
    # fallback: the farthest negative (tfa: masked maximum, row minimum if there is none)
    inside = _masked_maximum(distances, tf.cast(not_adjacency, tf.float32))
    semihard = tf.where(found, outside, tf.broadcast_to(inside, tf.shape(distances)))
    loss_matrix = margin + distances - semihard
    positives = tf.cast(adjacency, tf.float32) - tf.linalg.diag(tf.ones([tf.shape(labels)[0]]))
    return loss_matrix, positives


def triplet_semihard_loss(y_true, y_pred, margin: float = 1.0,
                          distance_metric: DistanceMetric = "L2") -> tf.Tensor:
    """Semi-hard triplet loss (tfa semantics, O(B^2) memory). See the module docstring."""
    labels, embeddings, dtype = _prepare(y_true, y_pred)
    distances = pairwise_distances(embeddings, distance_metric)
    loss_matrix, positives = _semihard_loss_matrix(labels, distances, margin)
    hinge = tf.math.maximum(loss_matrix * positives, 0.0)
    # tfa: sum / num_positives, NaN without positive pairs; here 0 with a zero gradient.
    loss = tf.math.divide_no_nan(tf.math.reduce_sum(hinge), tf.math.reduce_sum(positives))
    return _return_dtype(loss, dtype)


def triplet_hard_loss(y_true, y_pred, margin: float = 1.0, soft: bool = False,
                      distance_metric: DistanceMetric = "L2") -> tf.Tensor:
    """Batch-hard triplet loss (tfa semantics; stable softplus). See the module docstring."""
    labels, embeddings, dtype = _prepare(y_true, y_pred)
    distances = pairwise_distances(embeddings, distance_metric)
    adjacency = tf.math.equal(labels, tf.transpose(labels))
    not_adjacency = tf.cast(tf.math.logical_not(adjacency), tf.float32)
    hardest_negatives = _masked_minimum(distances, not_adjacency)
    positives = tf.cast(adjacency, tf.float32) - tf.linalg.diag(tf.ones([tf.shape(labels)[0]]))
    hardest_positives = _masked_maximum(distances, positives)
    if soft:
        loss = tf.math.softplus(hardest_positives - hardest_negatives)
    else:
        loss = tf.math.maximum(hardest_positives - hardest_negatives + margin, 0.0)
    return _return_dtype(tf.math.reduce_mean(loss), dtype)


def mining_stats(labels, embeddings, margin: float,
                 distance_metric: DistanceMetric = "L2") -> dict[str, tf.Tensor]:
    """Health of semi-hard mining on one batch; float32 scalar tensors, no gradient.

    Returns:
        `active_fraction`: fraction of anchor-positive pairs whose semi-hard loss is > 0 (near 0:
        mining has nothing left to learn from, or the embedding collapsed; near 1: early training),
        `mean_positive_distance` (over anchor-positive pairs, `a != p`) and
        `mean_negative_distance` (over anchor-negative pairs). Each is 0 when its set is empty.
    """
    labels, embeddings, _ = _prepare(labels, embeddings)
    distances = tf.stop_gradient(pairwise_distances(embeddings, distance_metric))
    loss_matrix, positives = _semihard_loss_matrix(labels, distances, margin)
    negatives = tf.cast(tf.math.not_equal(labels, tf.transpose(labels)), tf.float32)
    num_positives = tf.math.reduce_sum(positives)
    active = tf.cast(loss_matrix > 0.0, tf.float32) * positives
    return {
        "active_fraction": tf.math.divide_no_nan(tf.math.reduce_sum(active), num_positives),
        "mean_positive_distance": tf.math.divide_no_nan(
            tf.math.reduce_sum(distances * positives), num_positives),
        "mean_negative_distance": tf.math.divide_no_nan(
            tf.math.reduce_sum(distances * negatives), tf.math.reduce_sum(negatives)),
    }


# --------------------------------------------------------------------------------------------------
# Keras losses
# --------------------------------------------------------------------------------------------------
def _serialize_metric(distance_metric: DistanceMetric) -> Any:
    if callable(distance_metric):
        return keras.saving.serialize_keras_object(distance_metric)
    return distance_metric


def _deserialize_metric(config: dict) -> dict:
    config = dict(config)
    if not isinstance(config.get("distance_metric", "L2"), str):
        config["distance_metric"] = keras.saving.deserialize_keras_object(config["distance_metric"])
    return config


# --- tf.distribute (distribute helper's section) ---------------------------------------------------

def _replica_share(loss_object: keras.losses.Loss, loss: tf.Tensor) -> tf.Tensor:
    """The scalar batch loss divided by the replica count under a `tf.distribute` strategy.

    Keras sums the replicas' gradients and so divides every replica's mean loss by the replica
    count (and multiplies it back for the logged loss), but only for losses it reduces itself: a
    loss that is already a scalar skips that step, which would make the gradient of a step the sum
    of the replicas' gradients, not their mean. One replica (no strategy): unchanged.
    """
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    if replicas == 1 or loss_object.reduction not in ("sum_over_batch_size", "mean",
                                                      "mean_with_sample_weight"):
        return loss
    return loss * tf.cast(1.0 / replicas, loss.dtype)


@keras.saving.register_keras_serializable(package="tinymatch")
class TripletSemiHardLoss(keras.losses.Loss):
    """Semi-hard triplet loss, `tfa.losses.TripletSemiHardLoss` semantics in O(B^2) memory.

    `y_true`: integer labels `[B]` or `[B, 1]`; `y_pred`: embeddings `[B, D]` (usually
    L2-normalised). Returns the mean hinge over all anchor-positive pairs of the batch, so batches
    must contain several images per class (P x K sampling).

    Args:
        margin: the margin of the hinge, in distance units.
        distance_metric: `"L2"`, `"squared-L2"`, `"angular"` or a callable.
        name: optional name of the loss.
        **kwargs: passed to `keras.losses.Loss` (`reduction`, `dtype`).

    Example:

    ```python
    model.compile(optimizer="adam", loss=TripletSemiHardLoss(margin=0.5))
    model.fit(images, labels, batch_size=128)  # class-balanced batches work best
    ```
    """

    def __init__(self, margin: float = 1.0, distance_metric: DistanceMetric = "L2",
                 name: str | None = None, **kwargs):
        _check_distance_metric(distance_metric)
        super().__init__(name=name, **kwargs)
        self.margin = float(margin)
        self.distance_metric = distance_metric

    def call(self, y_true, y_pred):
        return _replica_share(self, triplet_semihard_loss(y_true, y_pred, self.margin,
                                                          self.distance_metric))

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(margin=self.margin, distance_metric=_serialize_metric(self.distance_metric))
        return config

    @classmethod
    def from_config(cls, config: dict) -> "TripletSemiHardLoss":
        return cls(**_deserialize_metric(config))


@keras.saving.register_keras_serializable(package="tinymatch")
class TripletHardLoss(keras.losses.Loss):
    """Batch-hard triplet loss, `tfa.losses.TripletHardLoss` semantics.

    For every anchor: the farthest positive and the closest negative of the batch. The mean over
    anchors of `max(d_ap - d_an + margin, 0)`, or of `softplus(d_ap - d_an)` when `soft=True`
    (the margin is then unused, as in tfa).

    Args:
        margin: the margin of the hinge, in distance units.
        soft: use the soft margin `softplus(d_ap - d_an)` instead of the hinge.
        distance_metric: `"L2"`, `"squared-L2"`, `"angular"` or a callable.
        name: optional name of the loss.
        **kwargs: passed to `keras.losses.Loss` (`reduction`, `dtype`).
    """

    def __init__(self, margin: float = 1.0, soft: bool = False,
                 distance_metric: DistanceMetric = "L2", name: str | None = None, **kwargs):
        _check_distance_metric(distance_metric)
        super().__init__(name=name, **kwargs)
        self.margin = float(margin)
        self.soft = bool(soft)
        self.distance_metric = distance_metric

    def call(self, y_true, y_pred):
        return _replica_share(self, triplet_hard_loss(y_true, y_pred, self.margin, self.soft,
                                                      self.distance_metric))

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(margin=self.margin, soft=self.soft,
                      distance_metric=_serialize_metric(self.distance_metric))
        return config

    @classmethod
    def from_config(cls, config: dict) -> "TripletHardLoss":
        return cls(**_deserialize_metric(config))


def smoothed_softmax_cross_entropy(labels, logits, label_smoothing: float = 0.0) -> tf.Tensor:
    """Per-sample softmax cross-entropy of integer `labels` [B] against `logits` [B, C], with the
    one-hot target smoothed as Keras' `CategoricalCrossentropy(label_smoothing=s)` does:
    `(1 - s) * one_hot + s / C`. float32 [B]."""
    logits = tf.cast(logits, tf.float32)
    labels = tf.cast(tf.reshape(labels, [-1]), tf.int32)
    if not label_smoothing:
        return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    classes = tf.shape(logits)[-1]
    target = (tf.one_hot(labels, classes, dtype=tf.float32) * (1.0 - label_smoothing)
              + label_smoothing / tf.cast(classes, tf.float32))
    return tf.nn.softmax_cross_entropy_with_logits(labels=target, logits=logits)


def _check_label_smoothing(label_smoothing: float) -> float:
    if not 0 <= label_smoothing < 1:
        raise ValueError(f"label_smoothing={label_smoothing!r}: must be in [0, 1)")
    return float(label_smoothing)


@keras.saving.register_keras_serializable(package="tinymatch")
class SmoothedSoftmaxLoss(keras.losses.Loss):
    """Softmax cross-entropy over integer labels and logits, with label smoothing (Szegedy et al.
    2016): Keras' `SparseCategoricalCrossentropy` has no smoothing, its dense twin needs one-hot
    labels. `label_smoothing=0` is `SparseCategoricalCrossentropy(from_logits=True)`."""

    def __init__(self, label_smoothing: float = 0.0, name: str | None = None, **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = _check_label_smoothing(label_smoothing)

    def call(self, y_true, y_pred):
        return smoothed_softmax_cross_entropy(y_true, y_pred, self.label_smoothing)

    def get_config(self) -> dict:
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


@keras.saving.register_keras_serializable(package="tinymatch")
class AdditiveMarginSoftmaxLoss(keras.losses.Loss):
    """CosFace / AM-softmax (Wang et al. 2018): softmax cross-entropy over `scale * (cos - margin)`
    for the true class and `scale * cos` for the others.

    `y_true`: integer class indices `[B]` or `[B, 1]`; `y_pred`: cosine similarities `[B, C]` (the
    output of `tinymatch.model.CosineClassifier`). `margin=0` is normalised softmax (NormFace).
    The margin makes each class's images agree within a tighter angle than the softmax alone
    needs, which is what pair distances between unseen images are judged by. `label_smoothing`
    smooths the target as `SmoothedSoftmaxLoss` does (the margin stays on the true class).
    """

    def __init__(self, scale: float = 16.0, margin: float = 0.2, label_smoothing: float = 0.0,
                 name: str | None = None, **kwargs):
        if scale <= 0:
            raise ValueError(f"scale={scale!r}: must be > 0")
        if margin < 0:
            raise ValueError(f"margin={margin!r}: must be >= 0")
        super().__init__(name=name, **kwargs)
        self.scale = float(scale)
        self.margin = float(margin)
        self.label_smoothing = _check_label_smoothing(label_smoothing)

    def call(self, y_true, y_pred):
        cosines = tf.cast(y_pred, tf.float32)
        labels = tf.cast(tf.reshape(y_true, [-1]), tf.int32)
        target = tf.one_hot(labels, tf.shape(cosines)[-1], dtype=tf.float32)
        logits = self.scale * (cosines - self.margin * target)
        return smoothed_softmax_cross_entropy(labels, logits, self.label_smoothing)

    def get_config(self) -> dict:
        return {**super().get_config(), "scale": self.scale, "margin": self.margin,
                "label_smoothing": self.label_smoothing}


def make_loss(config) -> keras.losses.Loss:
    """The triplet loss a `tinymatch.config.Config` asks for (`loss`, `margin`, `soft`,
    `distance_metric`)."""
    if config.loss == "semihard":
        return TripletSemiHardLoss(margin=config.margin, distance_metric=config.distance_metric)
    if config.loss == "hard":
        return TripletHardLoss(margin=config.margin, soft=config.soft,
                               distance_metric=config.distance_metric)
    raise ValueError(f"config.loss={config.loss!r}: must be one of {', '.join(LOSS_KINDS)}")
