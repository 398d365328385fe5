"""Learning-rate schedules of a training phase, each ending where the phase's step budget ends.

    cosine    linear warm-up (5% of the steps, at most 500) from peak/10 to the peak, then cosine
              decay to peak/100 (Keras' `CosineDecay`; the project's original schedule)
    linear    the same warm-up, then linear decay to exactly zero at the last step: budgeted
              training (Li et al. 2020, "Budgeted training: rethinking deep neural network
              training under resource constraints") found it the best schedule for a fixed budget
    onecycle  linear ramp from peak/25 to the peak over the first 30% of the steps, then linear
              decay to zero (Smith and Topin 2019, "Super-convergence"; the fast-training records'
              triangular schedule)
    constant  the peak throughout

`LinearBudgetSchedule` is registered with Keras, so a checkpoint's optimizer reloads with it.
Difference from the references: one-cycle here also ramps momentum in the paper; Adam's betas stay
fixed.
"""

from __future__ import annotations

import keras
from keras import ops

WARMUP_SHARE = 0.05  # cosine and linear: share of the steps spent warming up
MAX_WARMUP_STEPS = 500
ONECYCLE_RAMP_SHARE = 0.3
ONECYCLE_START_FRACTION = 1 / 25  # the one-cycle ramp starts at peak/25 (Smith and Topin's default)
WARMUP_START_FRACTION = 0.1  # cosine and linear warm-ups start at peak/10
COSINE_FLOOR = 0.01  # cosine ends at peak x this


@keras.saving.register_keras_serializable(package="tinymatch")
class LinearBudgetSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Piecewise linear: `start` -> `peak` over `ramp_steps`, then `peak` -> 0 at `total_steps`
    (and 0 after). `ramp_steps=0` starts at the peak."""

    def __init__(self, peak, total_steps, ramp_steps, start):
        self.peak = float(peak)
        self.total_steps = int(total_steps)
        self.ramp_steps = int(ramp_steps)
        self.start = float(start)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        ramp = max(self.ramp_steps, 1)
        rising = self.start + (self.peak - self.start) * ops.minimum(step / ramp, 1.0)
        falling_steps = max(self.total_steps - self.ramp_steps, 1)
        falling = self.peak * ops.clip(1.0 - (step - self.ramp_steps) / falling_steps, 0.0, 1.0)
        return ops.where(step < self.ramp_steps, rising, falling)

    def get_config(self):
        return dict(peak=self.peak, total_steps=self.total_steps, ramp_steps=self.ramp_steps,
                    start=self.start)


def warmup_steps(total_steps: int) -> int:
    """Steps of the cosine and linear schedules' warm-up: 5% of the phase, 1..500."""
    return max(1, min(MAX_WARMUP_STEPS, int(total_steps * WARMUP_SHARE)))


def learning_rate_schedule(kind: str, peak: float, total_steps: int):
    """The learning rate (a schedule, or a float for `constant`) of a phase of `total_steps`."""
    total_steps = max(1, int(total_steps))
    if kind == "constant":
        return float(peak)
    if kind == "cosine":
        warmup = warmup_steps(total_steps)
        return keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=peak * WARMUP_START_FRACTION, warmup_target=peak,
            warmup_steps=warmup, decay_steps=max(1, total_steps - warmup), alpha=COSINE_FLOOR)
    if kind == "linear":
        return LinearBudgetSchedule(peak, total_steps, warmup_steps(total_steps),
                                    peak * WARMUP_START_FRACTION)
    if kind == "onecycle":
        return LinearBudgetSchedule(peak, total_steps, int(total_steps * ONECYCLE_RAMP_SHARE),
                                    peak * ONECYCLE_START_FRACTION)
    raise ValueError(f"lr_schedule={kind!r}: must be cosine, linear, onecycle or constant")


__all__ = ["LinearBudgetSchedule", "learning_rate_schedule", "warmup_steps"]
