"""Tests of tinymatch.losses: tfa parity (golden fixture), brute force, XLA, mixed precision, Keras.

Three independent references:

* the golden fixture: 289 cases captured from tensorflow-addons 0.23.0 (loss and gradient);
* a brute-force NumPy implementation that loops over every (anchor, positive, negative) triplet,
  pytorch-metric-learning style, in float64;
* a line-by-line TensorFlow port of tfa's O(B^3) semi-hard loss, for gradients on batches with
  exact ties (duplicated embeddings), which the fixture does not cover.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from tinymatch.config import Config
from tinymatch.losses import (
    TripletHardLoss,
    TripletSemiHardLoss,
    make_loss,
    mining_stats,
    pairwise_distances,
    triplet_hard_loss,
    triplet_semihard_loss,
)

from tfa_reference import tfa_semihard_reference  # tests/tfa_reference.py

# Captured once from tensorflow-addons 0.23.0 (which no longer installs); committed beside the tests.
GOLDEN = Path(__file__).resolve().parent / "data" / "tfa_triplet_golden.npz"

LOSS_RTOL = 1e-5
# Gradient: |ours - tfa| <= GRAD_RTOL * |tfa| + GRAD_ATOL. The atol covers entries that are ~0
# (gradients are O(1e-3..1); float32 rounding differences are ~1e-7 absolute).
GRAD_RTOL = 1e-4
GRAD_ATOL = 1e-6
METRICS = ("L2", "squared-L2", "angular")


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------
def loss_and_grad(fn, labels, embeddings, **kwargs):
    embeddings = tf.constant(embeddings)
    with tf.GradientTape() as tape:
        tape.watch(embeddings)
        loss = fn(labels, embeddings, **kwargs)
    return float(loss), tape.gradient(loss, embeddings).numpy()


def golden_cases():
    data = np.load(GOLDEN)
    cases = json.loads(bytes(data["cases_json"]).decode())
    for index, case in enumerate(cases):
        yield (index, case, data[f"{index}/labels"], data[f"{index}/embeddings"],
               data[f"{index}/grad"])


def run_case(case, labels, embeddings):
    if case["kind"] == "semihard":
        return loss_and_grad(triplet_semihard_loss, labels, embeddings,
                             margin=case["margin"], distance_metric=case["metric"])
    return loss_and_grad(triplet_hard_loss, labels, embeddings, margin=case["margin"],
                         soft=case["soft"], distance_metric=case["metric"])


def numpy_distances(embeddings, metric):
    x = embeddings.astype(np.float64)
    if metric == "angular":
        unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6)
        return np.maximum(1.0 - unit @ unit.T, 0.0)
    squared = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    return squared if metric == "squared-L2" else np.sqrt(squared)


def brute_force_semihard(labels, embeddings, margin, metric):
    """Loop over every anchor-positive pair and every negative (tfa's definition)."""
    d = numpy_distances(embeddings, metric)
    n = len(labels)
    losses = []
    for a in range(n):
        negatives = [j for j in range(n) if labels[j] != labels[a]]
        for p in range(n):
            if p == a or labels[p] != labels[a]:
                continue
            farther = [d[a, j] for j in negatives if d[a, j] > d[a, p]]
            if farther:
                negative = min(farther)
            elif negatives:
                negative = max(d[a, j] for j in negatives)
            else:  # tfa: masked maximum of an empty mask is the row minimum
                negative = d[a].min()
            losses.append(max(margin + d[a, p] - negative, 0.0))
    return float(np.mean(losses)) if losses else 0.0


def brute_force_hard(labels, embeddings, margin, soft, metric):
    d = numpy_distances(embeddings, metric)
    n = len(labels)
    losses = []
    for a in range(n):
        positives = [d[a, j] for j in range(n) if j != a and labels[j] == labels[a]]
        negatives = [d[a, j] for j in range(n) if labels[j] != labels[a]]
        hardest_positive = max(positives) if positives else d[a].min()
        hardest_negative = min(negatives) if negatives else d[a].max()
        x = hardest_positive - hardest_negative
        losses.append(math.log1p(math.exp(x)) if soft else max(x + margin, 0.0))
    return float(np.mean(losses))


def random_batch(rng, batch_size, dim, num_classes, normalize=True):
    labels = rng.integers(0, num_classes, size=batch_size).astype(np.int32)
    embeddings = rng.normal(size=(batch_size, dim)).astype(np.float32)
    if normalize:
        embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    return labels, embeddings


# --------------------------------------------------------------------------------------------------
# golden fixture (tensorflow-addons 0.23.0)
# --------------------------------------------------------------------------------------------------
def test_golden_fixture_loss_and_gradient_match_tfa():
    checked, worst_loss, worst_grad = 0, 0.0, 0.0
    failures = []
    for index, case, labels, embeddings, tfa_grad in golden_cases():
        if not (math.isfinite(case["loss"]) and np.isfinite(tfa_grad).all()):
            continue  # the documented differences, tested below
        loss, grad = run_case(case, labels, embeddings)
        loss_error = abs(loss - case["loss"]) / max(abs(case["loss"]), 1e-12)
        grad_excess = np.abs(grad - tfa_grad) - (GRAD_RTOL * np.abs(tfa_grad) + GRAD_ATOL)
        worst_loss = max(worst_loss, loss_error)
        worst_grad = max(worst_grad, float(np.max(np.abs(grad - tfa_grad))))
        if loss_error > LOSS_RTOL or grad_excess.max() > 0:
            failures.append(f"case {index} ({case['kind']}, {case['metric']}, {case['note']}): "
                            f"loss {loss} vs tfa {case['loss']}, "
                            f"grad excess {grad_excess.max():.3g}")
        checked += 1
    assert not failures, "\n".join(failures)
    assert checked == 282  # 289 minus the NaN case and the 6 soft-margin overflows
    print(f"golden: {checked} cases, max rel loss error {worst_loss:.3g}, "
          f"max abs grad error {worst_grad:.3g}")


def test_golden_no_positive_pair_gives_zero_not_nan():
    (index, case, labels, embeddings, _), = [c for c in golden_cases() if c[1]["note"].endswith(
        "(tfa gives NaN)")]
    assert math.isnan(case["loss"])
    loss, grad = run_case(case, labels, embeddings)
    assert loss == 0.0
    assert np.all(grad == 0.0)


def test_golden_soft_margin_overflow_is_finite_where_tfa_is_inf():
    overflowing = [c for c in golden_cases() if not math.isfinite(c[1]["loss"])
                   and c[1]["kind"] == "hard"]
    assert len(overflowing) == 6
    for _, case, labels, embeddings, _ in overflowing:
        loss, grad = run_case(case, labels, embeddings)
        expected = _stable_brute_force_soft(labels, embeddings, case["metric"])
        assert loss == pytest.approx(expected, rel=1e-5)
        assert np.isfinite(grad).all()


def _stable_brute_force_soft(labels, embeddings, metric):
    d = numpy_distances(embeddings, metric)
    same = labels[:, None] == labels[None, :]
    positives = np.where(same & ~np.eye(len(labels), dtype=bool), d, -np.inf).max(1)
    negatives = np.where(~same, d, np.inf).min(1)
    return float(np.mean(np.logaddexp(0.0, positives - negatives)))


# --------------------------------------------------------------------------------------------------
# brute force (independent NumPy, float64)
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("normalize", [True, False])
def test_semihard_matches_brute_force_on_random_batches(metric, normalize):
    rng = np.random.default_rng(7)
    for batch_size, dim, num_classes in [(12, 3, 4), (24, 8, 6), (40, 16, 5)]:
        for margin in (0.2, 1.0):
            labels, embeddings = random_batch(rng, batch_size, dim, num_classes, normalize)
            ours = float(triplet_semihard_loss(labels, embeddings, margin, metric))
            expected = brute_force_semihard(labels, embeddings, margin, metric)
            assert ours == pytest.approx(expected, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("soft", [False, True])
def test_hard_matches_brute_force_on_random_batches(metric, soft):
    rng = np.random.default_rng(11)
    for batch_size, dim, num_classes in [(12, 3, 4), (24, 8, 6), (40, 16, 5)]:
        labels, embeddings = random_batch(rng, batch_size, dim, num_classes)
        ours = float(triplet_hard_loss(labels, embeddings, 0.5, soft, metric))
        expected = brute_force_hard(labels, embeddings, 0.5, soft, metric)
        assert ours == pytest.approx(expected, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize(
    "labels",
    [
        np.zeros(8, np.int32),  # all the same label: no negatives
        np.arange(8, dtype=np.int32),  # all distinct: no positives
        np.array([0, 0, 1, 2, 3, 4, 5, 6], np.int32),  # a single positive pair
    ],
    ids=["all-same-label", "all-distinct", "one-positive-pair"],
)
def test_degenerate_batches_match_brute_force(metric, labels):
    embeddings = np.random.default_rng(3).normal(size=(8, 5)).astype(np.float32)
    semihard = float(triplet_semihard_loss(labels, embeddings, 0.3, metric))
    assert semihard == pytest.approx(brute_force_semihard(labels, embeddings, 0.3, metric),
                                     rel=1e-5, abs=1e-6)
    for soft in (False, True):
        hard = float(triplet_hard_loss(labels, embeddings, 0.3, soft, metric))
        assert hard == pytest.approx(brute_force_hard(labels, embeddings, 0.3, soft, metric),
                                     rel=1e-5, abs=1e-6)


def test_no_valid_triplet_violating_the_margin_gives_zero_loss_and_gradient():
    # Two tight, far apart clusters: every negative is beyond every positive + margin.
    labels = np.array([0, 0, 0, 1, 1, 1], np.int32)
    embeddings = np.array([[0, 0], [0, 0.1], [0.1, 0], [5, 5], [5, 5.1], [5.1, 5]], np.float32)
    assert brute_force_semihard(labels, embeddings, 1.0, "L2") == 0.0
    loss, grad = loss_and_grad(triplet_semihard_loss, labels, embeddings, margin=1.0)
    assert loss == 0.0 and np.all(grad == 0.0)
    loss, grad = loss_and_grad(triplet_hard_loss, labels, embeddings, margin=1.0)
    assert loss == 0.0 and np.all(grad == 0.0)


# --------------------------------------------------------------------------------------------------
# gradients on exact ties, against the O(B^3) port
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("metric", METRICS)
def test_gradient_matches_tfa_port_with_tied_negatives(metric):
    rng = np.random.default_rng(5)
    labels = np.repeat(np.arange(6, dtype=np.int32), 3)
    embeddings = rng.integers(-3, 4, size=(18, 4)).astype(np.float32)  # small grid: many ties
    embeddings[[4, 5]] = embeddings[3]  # a class of three identical embeddings
    embeddings[9] = embeddings[0] + 1.0
    ours_loss, ours_grad = loss_and_grad(triplet_semihard_loss, labels, embeddings,
                                         margin=0.5, distance_metric=metric)
    ref_loss, ref_grad = loss_and_grad(tfa_semihard_reference, labels, embeddings,
                                       margin=0.5, metric=metric)
    assert ours_loss == pytest.approx(ref_loss, rel=1e-6)
    np.testing.assert_allclose(ours_grad, ref_grad, rtol=GRAD_RTOL, atol=GRAD_ATOL)


@pytest.mark.parametrize("seed", [0, 1])
def test_gradient_matches_tfa_port_on_random_batches(seed):
    labels, embeddings = random_batch(np.random.default_rng(seed), 48, 16, 8)
    _, ours = loss_and_grad(triplet_semihard_loss, labels, embeddings, margin=0.2)
    _, ref = loss_and_grad(tfa_semihard_reference, labels, embeddings, margin=0.2, metric="L2")
    np.testing.assert_allclose(ours, ref, rtol=GRAD_RTOL, atol=GRAD_ATOL)


def test_l2_gradient_is_finite_for_identical_embeddings():
    labels = np.array([0, 0, 1, 1], np.int32)
    embeddings = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], np.float32)
    for fn in (triplet_semihard_loss, triplet_hard_loss):
        _, grad = loss_and_grad(fn, labels, embeddings)
        assert np.isfinite(grad).all()


# --------------------------------------------------------------------------------------------------
# XLA and mixed precision
# --------------------------------------------------------------------------------------------------
def test_xla_compiled_loss_and_gradient_match_eager():
    labels, embeddings = random_batch(np.random.default_rng(2), 32, 16, 8)
    labels[:2] = 99  # plus a class with exactly one positive pair

    def all_losses_and_gradients(labels, embeddings):
        results = []
        for metric in METRICS:
            for fn in (triplet_semihard_loss, triplet_hard_loss):
                with tf.GradientTape() as tape:
                    tape.watch(embeddings)
                    loss = fn(labels, embeddings, 0.3, distance_metric=metric)
                results.append((loss, tape.gradient(loss, embeddings)))
        return results

    # one compilation for all six (loss, metric) combinations keeps the test fast
    compiled = tf.function(all_losses_and_gradients, jit_compile=True)
    xla = compiled(tf.constant(labels), tf.constant(embeddings))
    eager = all_losses_and_gradients(tf.constant(labels), tf.constant(embeddings))
    for (xla_loss, xla_grad), (eager_loss, eager_grad) in zip(xla, eager):
        assert float(xla_loss) == pytest.approx(float(eager_loss), rel=1e-5)
        np.testing.assert_allclose(xla_grad.numpy(), eager_grad.numpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
@pytest.mark.parametrize("fn", [triplet_semihard_loss, triplet_hard_loss])
def test_half_precision_embeddings_are_computed_in_float32(dtype, fn):
    labels, embeddings = random_batch(np.random.default_rng(4), 32, 16, 8)
    half = tf.cast(embeddings, dtype)
    with tf.GradientTape() as tape:
        tape.watch(half)
        loss = fn(labels, half)
    grad = tape.gradient(loss, half)
    assert loss.dtype == dtype and grad.dtype == dtype
    # same value as computing in float32 from the (rounded) half-precision inputs
    expected = fn(labels, tf.cast(half, tf.float32))
    assert float(loss) == float(tf.cast(expected, dtype))
    assert np.isfinite(grad.numpy().astype(np.float32)).all()


@pytest.mark.filterwarnings("ignore:overflow encountered in cast")  # Keras' loss-scale internals
def test_keras_fit_under_mixed_float16_policy():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = _tiny_model()
        assert model.outputs[0].dtype == "float16"  # half-precision embeddings reach the loss
        model.compile(optimizer="adam", loss=TripletSemiHardLoss(margin=0.5))
        history = _fit_a_little(model)
    finally:
        keras.config.set_dtype_policy(previous)
    assert np.isfinite(history.history["loss"]).all()


# --------------------------------------------------------------------------------------------------
# Keras integration
# --------------------------------------------------------------------------------------------------
def _tiny_model():
    inputs = keras.Input((6,))
    x = keras.layers.Dense(8)(inputs)
    outputs = keras.layers.UnitNormalization()(keras.layers.Dense(4)(x))
    return keras.Model(inputs, outputs)


def _fit_a_little(model, label_shape=(64,)):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(8), 8).astype(np.int32)
    features = (rng.normal(size=(64, 6)) + labels[:, None]).astype(np.float32)
    return model.fit(features, labels.reshape(label_shape), batch_size=32, epochs=2, verbose=0,
                     shuffle=False)


@pytest.mark.parametrize(
    "loss, label_shape",
    [(TripletSemiHardLoss(0.3), (64,)), (TripletSemiHardLoss(0.3), (64, 1)),
     (TripletHardLoss(0.3), (64, 1)),
     (TripletHardLoss(soft=True, distance_metric="angular"), (64,))],
    ids=["semihard-labels[B]", "semihard-labels[B,1]", "hard-labels[B,1]", "hard-soft-angular"])
def test_keras_compile_fit_lowers_the_loss(loss, label_shape):
    keras.utils.set_random_seed(0)
    model = _tiny_model()
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss=loss)
    history = _fit_a_little(model, label_shape)
    losses = history.history["loss"]
    assert np.isfinite(losses).all()
    assert losses[-1] <= losses[0]


@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")
def test_loss_objects_round_trip_through_keras_serialization(tmp_path):
    for loss in (TripletSemiHardLoss(margin=0.25, distance_metric="angular", name="semi"),
                 TripletHardLoss(margin=0.7, soft=True, distance_metric="squared-L2")):
        restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
        assert type(restored) is type(loss)
        assert restored.get_config() == loss.get_config()
    config = TripletHardLoss(margin=0.7, soft=True).get_config()
    assert config["margin"] == 0.7 and config["soft"] is True and config["distance_metric"] == "L2"

    model = _tiny_model()
    loss = TripletSemiHardLoss(margin=0.25, distance_metric="angular")
    model.compile(optimizer="adam", loss=loss)
    model.save(tmp_path / "model.keras")
    reloaded = keras.saving.load_model(tmp_path / "model.keras")
    assert isinstance(reloaded.loss, TripletSemiHardLoss)
    assert reloaded.loss.margin == 0.25 and reloaded.loss.distance_metric == "angular"


def test_loss_object_equals_functional_loss():
    labels, embeddings = random_batch(np.random.default_rng(9), 16, 4, 4)
    assert float(TripletSemiHardLoss(0.4, "squared-L2")(labels, embeddings)) == pytest.approx(
        float(triplet_semihard_loss(labels, embeddings, 0.4, "squared-L2")))
    hard = TripletHardLoss(0.4, True, "angular")(labels[:, None], embeddings)
    assert float(hard) == pytest.approx(
        float(triplet_hard_loss(labels, embeddings, 0.4, True, "angular")))


def test_unknown_distance_metric_is_a_clear_value_error():
    with pytest.raises(ValueError, match="distance_metric='cosine'"):
        TripletSemiHardLoss(distance_metric="cosine")
    with pytest.raises(ValueError, match="distance_metric"):
        pairwise_distances(np.zeros((2, 2), np.float32), "manhattan")


def test_callable_distance_metric_is_used():
    labels, embeddings = random_batch(np.random.default_rng(1), 12, 4, 3)

    def manhattan(x):
        return tf.reduce_sum(tf.abs(x[:, None, :] - x[None, :, :]), axis=-1)

    d = np.abs(embeddings[:, None] - embeddings[None]).sum(-1)
    np.testing.assert_allclose(pairwise_distances(embeddings, manhattan), d, rtol=1e-6)
    assert np.isfinite(float(triplet_semihard_loss(labels, embeddings, 0.5, manhattan)))


# --------------------------------------------------------------------------------------------------
# pairwise_distances, mining_stats, make_loss
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("metric", METRICS)
def test_pairwise_distances_match_numpy(metric):
    embeddings = np.random.default_rng(0).normal(size=(10, 7)).astype(np.float32)
    ours = pairwise_distances(embeddings, metric).numpy()
    assert ours.dtype == np.float32 and ours.shape == (10, 10)
    np.testing.assert_allclose(ours, numpy_distances(embeddings, metric), rtol=1e-5, atol=1e-5)
    if metric != "angular":  # tfa zeroes the diagonal of the Euclidean ones only
        assert np.all(np.diag(ours) == 0.0)


def test_mining_stats_on_a_hand_made_batch():
    # anchors 0/1 (class 0) are 1 apart; class-1 points 2 and 3 sit at distance 1.5 and 3 from 0.
    labels = np.array([0, 0, 1, 1], np.int32)
    embeddings = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.5], [0.0, 3.0]], np.float32)
    stats = {k: float(v) for k, v in mining_stats(labels, embeddings, margin=1.0).items()}
    d = numpy_distances(embeddings, "L2")
    expected_active = [
        1.0 + d[0, 1] - 1.5 > 0,  # (0, 1): semi-hard negative of 0 beyond 1 is point 2 (1.5)
        1.0 + d[1, 0] - d[1, 2] > 0,  # (1, 0)
        1.0 + d[2, 3] - d[2, 1] > 0,  # (2, 3): no negative beyond 1.5 -> farthest, d(2,1)
        1.0 + d[3, 2] - d[3, 0] > 0,  # (3, 2): negative 0 at 3.0 > 1.5
    ]
    assert stats["active_fraction"] == pytest.approx(np.mean(expected_active))
    assert stats["mean_positive_distance"] == pytest.approx((1.0 + 1.5) / 2)
    negatives = [d[0, 2], d[0, 3], d[1, 2], d[1, 3]]
    assert stats["mean_negative_distance"] == pytest.approx(np.mean(negatives), rel=1e-6)


def test_mining_stats_show_collapse_and_empty_batches():
    labels = np.array([0, 0, 1, 1], np.int32)
    collapsed = np.ones((4, 3), np.float32)
    stats = mining_stats(labels, collapsed, margin=0.5)
    assert float(stats["active_fraction"]) == 1.0
    assert float(stats["mean_positive_distance"]) == 0.0
    assert float(stats["mean_negative_distance"]) == 0.0
    no_pairs = mining_stats(np.arange(4), collapsed, margin=0.5)
    assert all(math.isfinite(float(v)) for v in no_pairs.values())
    assert float(no_pairs["active_fraction"]) == 0.0


def test_make_loss_from_config():
    semihard = make_loss(Config(loss="semihard", margin=0.3, distance_metric="angular"))
    assert isinstance(semihard, TripletSemiHardLoss)
    assert (semihard.margin, semihard.distance_metric) == (0.3, "angular")
    hard = make_loss(Config(loss="hard", margin=0.4, soft=True))
    assert isinstance(hard, TripletHardLoss) and hard.soft and hard.margin == 0.4


# --------------------------------------------------------------------------------------------------
# The warm-up's CosFace loss
# --------------------------------------------------------------------------------------------------
def _cosface_brute_force(labels, cosines, scale, margin):
    """Per-sample CosFace cross-entropy, one sample at a time, in float64."""
    losses = []
    for label, row in zip(labels, cosines.astype(np.float64)):
        logits = scale * row
        logits[label] -= scale * margin
        losses.append(np.log(np.sum(np.exp(logits - logits.max()))) + logits.max() - logits[label])
    return float(np.mean(losses))


@pytest.mark.parametrize("margin", [0.0, 0.2, 0.35])
def test_additive_margin_softmax_matches_brute_force(margin):
    from tinymatch.losses import AdditiveMarginSoftmaxLoss

    rng = np.random.default_rng(int(margin * 100))
    labels = rng.integers(0, 7, size=12)
    cosines = rng.uniform(-1, 1, size=(12, 7)).astype(np.float32)
    loss = AdditiveMarginSoftmaxLoss(scale=16.0, margin=margin)
    expected = _cosface_brute_force(labels, cosines, 16.0, margin)
    assert float(loss(labels, cosines)) == pytest.approx(expected, rel=1e-5)
    assert float(loss(labels[:, None], cosines)) == pytest.approx(expected, rel=1e-5)  # [B, 1] labels
    # Margin 0 is plain softmax cross-entropy over the scaled cosines.
    if margin == 0.0:
        plain = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, 16.0 * cosines)
        assert float(loss(labels, cosines)) == pytest.approx(float(plain), rel=1e-5)


def test_additive_margin_softmax_serialises_and_rejects_bad_arguments():
    from tinymatch.losses import AdditiveMarginSoftmaxLoss

    loss = AdditiveMarginSoftmaxLoss(scale=20.0, margin=0.3)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(restored) is AdditiveMarginSoftmaxLoss
    assert (restored.scale, restored.margin) == (20.0, 0.3)
    with pytest.raises(ValueError, match="margin"):
        AdditiveMarginSoftmaxLoss(margin=-0.1)
    with pytest.raises(ValueError, match="scale"):
        AdditiveMarginSoftmaxLoss(scale=0.0)


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.2])
def test_label_smoothing_matches_keras_dense_cross_entropy(smoothing):
    from tinymatch.losses import AdditiveMarginSoftmaxLoss, SmoothedSoftmaxLoss

    rng = np.random.default_rng(7)
    labels = rng.integers(0, 5, size=10)
    logits = rng.normal(scale=3.0, size=(10, 5)).astype(np.float32)
    reference = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=smoothing)
    expected = float(reference(np.eye(5, dtype=np.float32)[labels], logits))
    assert float(SmoothedSoftmaxLoss(smoothing)(labels, logits)) == pytest.approx(expected, rel=1e-5)
    # CosFace smooths the same target; with margin 0 its logits are scale x cosines.
    cosines = np.tanh(logits / 3.0)
    cosface = AdditiveMarginSoftmaxLoss(scale=16.0, margin=0.0, label_smoothing=smoothing)
    expected = float(reference(np.eye(5, dtype=np.float32)[labels], 16.0 * cosines))
    assert float(cosface(labels, cosines)) == pytest.approx(expected, rel=1e-5)
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(SmoothedSoftmaxLoss(smoothing)))
    assert restored.label_smoothing == smoothing
    with pytest.raises(ValueError, match="label_smoothing"):
        SmoothedSoftmaxLoss(1.0)
