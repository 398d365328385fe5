"""Budgeted training: how many steps per epoch fit a wall-clock budget on the machine at hand.

A recipe written as "17 epochs of 650 steps" takes one hour on one 2-core machine and four on
another (benchmarks/README.md, "Throughput of the cpu profile"). A recipe written as "17 epochs in
45 minutes" takes 45 minutes everywhere and trains as far as the machine allows, with its learning
rate schedule still ending at zero at the last step: budgeted training (Li et al. 2020, "Budgeted
training: rethinking deep neural network training under resource constraints"), where a schedule
that decays to zero over the budget beats one cut short.

`config.time_budget_minutes > 0` asks for it. Before the first epoch the run times a few training
steps of a throw-away copy of its first phase's model on the real input pipeline (`StepTimer`),
and one epoch's fixed work (embedding the validation selection, writing the checkpoint), and
`steps_per_epoch_for_budget` turns the measurements into a step count. A run whose phases differ
in image size (progressive resizing, `config.warmup_image_size`) also times a copy of each other
size's model, and plans each epoch's steps at its own size's cost. A short calibration can
miss a machine's sustained speed (measured: 1.30 s a step in calibration, 1.50 s in the epochs that
followed; on a 2-core AMD EPYC, 0.257 s calibrated and 0.292 s sustained), so the run plans the
remaining epochs again from the seconds its recent epochs took:

- when a later phase starts (the triplet phase after the warm-up), always;
- within a phase, after an epoch whose measured pace would change the remaining epochs' steps by
  more than REPLAN_TOLERANCE (`ReplanCheck`). Re-planning only at phase starts let the warm-up
  overrun and the triplet phase absorb the whole shortfall (measured: 258 triplet steps an epoch
  instead of 549, benchmarks/README.md "Four images a class in a batch"). A within-phase re-plan
  ends the phase's `fit` after that epoch and continues it with the new steps per epoch; the
  phase's optimizer (and its moments) stays, and its learning-rate schedule is rebuilt for the
  phase's new length (steps done + the remaining epochs' new steps), so it still ends at the
  phase's last step. The steps done stay, so the schedule's position within the phase jumps a
  little, and the training step is traced again (~6 s on the cpu profile). Ending a `fit` can also
  block on its input's teardown (measured 0-59 s), so a re-plan to fewer steps is always taken
  (the plan would overrun) and one to more steps only when the gain outlasts the teardowns' mean
  so far (EXPECTED_TEARDOWN_SECONDS before any is measured).

Each phase's schedule is built for its own steps, so the last phase still ends at zero at the
budget's end. The pace is measured on the last REPLAN_WINDOW_EPOCHS epochs of the phase, leaving out
each `fit`'s first epoch (it pays for tracing). The plan (every re-planning included, `budget_plan`)
is stored in the checkpoint, so a resumed run keeps it. `BudgetGuard` stops at the end of an epoch
if the budget is spent anyway (a machine that slowed down in the last epoch): the run then ends
early, never mid-epoch.

What the budget covers: the whole training call from the moment it starts (loading the image
cache, the split, calibration, training steps, per-epoch validation and checkpoints), and a
reserve at the end (`tail_reserve_seconds`) for what follows the last epoch: the end of the last
`fit` and the final Siamese threshold. That tail was measured at 3-58 s on the cpu profile (the
end of a `fit` that feeds a tf.data input sometimes blocks for most of a minute; a 44-minute
budget counted from the first epoch then ended its `tinymatch train` command at 45.2 minutes).
What it does not cover: importing TensorFlow (seconds, before the call), and one-time work a
later run reuses: decoding the zip into the image cache, extracting cached features.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import keras

CALIBRATION_WARMUP_STEPS = 3  # untimed: tracing and the first batches' allocations
CALIBRATION_STEPS = 20  # timed
SAFETY = 0.97  # share of the remaining budget that is planned (the rest absorbs noise)
TAIL_RESERVE_SECONDS = 60.0  # kept for after the last epoch (measured: up to 58 s on the cpu profile)
TAIL_RESERVE_SHARE = 0.03  # ... but never more than this share of a short budget (a tuning trial's)
REPLAN_TOLERANCE = 0.05  # a within-phase re-plan changes the steps per epoch by more than this share
REPLAN_WINDOW_EPOCHS = 3  # the pace of a phase: its last epochs (recent speed, a few epochs' noise)
# What ending a `fit` is expected to cost before any was measured (tf.data's teardown measured
# 0-59 s on the cpu profile, 0 s for most fits; a prior that errs towards not re-planning for a gain).
EXPECTED_TEARDOWN_SECONDS = 30.0


def tail_reserve_seconds(budget_seconds: float) -> float:
    """Seconds of a budget kept for after the last epoch: TAIL_RESERVE_SECONDS, or
    TAIL_RESERVE_SHARE of a budget too short to give up a minute (a 2-minute trial keeps 3.6 s)."""
    return min(TAIL_RESERVE_SECONDS, TAIL_RESERVE_SHARE * max(0.0, budget_seconds))


class BudgetTooSmallError(ValueError):
    """Not even one step per epoch fits the time budget."""


@dataclass(frozen=True)
class Calibration:
    """What one run measured before its first epoch (seconds)."""

    step_seconds: float  # one training step, after tracing
    trace_seconds: float  # the extra cost of a `fit`'s first steps (paid once per training phase)
    epoch_overhead_seconds: float  # per epoch: validation embedding, mining probe, checkpoints
    calibration_seconds: float  # what calibrating itself cost (spent from the budget)

    def to_dict(self) -> dict[str, float]:
        return {k: round(v, 4) for k, v in asdict(self).items()}


def steps_per_epoch_for_budget(budget_seconds: float, spent_seconds: float, epochs: int,
                               phases: int, calibration: Calibration, safety: float = SAFETY,
                               relative_step_costs: Sequence[float] | None = None) -> int:
    """The most steps per epoch such that `epochs` epochs in `phases` fits finish within
    `budget_seconds`, `spent_seconds` of which are gone, leaving the tail reserve
    (`tail_reserve_seconds`) for after the last epoch:

        steps = floor((safety x (budget - spent - reserve) - phases x trace - epochs x overhead)
                      / (step x sum of the epochs' relative step costs))

    `relative_step_costs`: one per epoch, a step's cost in that epoch over `calibration.step_seconds`
    (progressive resizing: an epoch on smaller images costs less a step); default 1 for every epoch.
    Raises BudgetTooSmallError (naming config.time_budget_minutes and the smallest budget that
    would give one step) when that is below 1.
    """
    if epochs < 1 or phases < 1 or calibration.step_seconds <= 0:
        raise ValueError(f"epochs={epochs}, phases={phases}, step_seconds="
                         f"{calibration.step_seconds}: must all be positive")
    costs = [1.0] * epochs if relative_step_costs is None else [float(c) for c in relative_step_costs]
    if len(costs) != epochs or not all(c > 0 and math.isfinite(c) for c in costs):
        raise ValueError(f"relative_step_costs={relative_step_costs!r}: need {epochs} positive numbers")
    step_epochs = sum(costs)  # epochs' worth of calibrated steps
    fixed = phases * calibration.trace_seconds + epochs * calibration.epoch_overhead_seconds
    reserve = tail_reserve_seconds(budget_seconds)
    available = safety * (budget_seconds - spent_seconds - reserve) - fixed
    steps = math.floor(available / (step_epochs * calibration.step_seconds))
    if steps < 1:
        needed = (fixed + step_epochs * calibration.step_seconds) / safety + spent_seconds + reserve
        raise BudgetTooSmallError(
            f"config.time_budget_minutes={budget_seconds / 60:g}: too small for {epochs} epochs on "
            f"this machine (one step {calibration.step_seconds:.2f} s, each epoch's validation and "
            f"checkpoint {calibration.epoch_overhead_seconds:.1f} s); at least "
            f"{math.ceil(needed / 60)} minutes are needed for one step per epoch")
    return int(steps)


def steps_of_epoch(plan: Sequence[dict], epoch: int) -> int:
    """The steps planned for 1-based `epoch` by a `budget_plan` (each entry: steps per epoch from
    its `from_epoch` on, entries in order)."""
    steps = [entry["steps_per_epoch"] for entry in plan if entry["from_epoch"] <= epoch]
    if not steps:
        raise ValueError(f"epoch {epoch}: the budget plan {list(plan)!r} starts later")
    return int(steps[-1])


def needs_replan(planned_steps: int, measured_steps: int, tolerance: float = REPLAN_TOLERANCE) -> bool:
    """Whether a plan from the measured pace differs enough from the running one to stop and
    re-plan: by more than `tolerance` of the running plan, either way."""
    return abs(measured_steps - planned_steps) > tolerance * planned_steps


class ReplanCheck(keras.callbacks.Callback):
    """After each epoch: `propose(next_epoch)` returns the steps per epoch a re-plan would give the
    epochs from 0-based `next_epoch` on, or None to keep the plan. A proposal stops the `fit` after
    this epoch, and `from_epoch` says where the caller re-plans (from the time left then, after the
    `fit` has ended). Asks nothing when an earlier callback already stopped training (early
    stopping, a spent budget, a user's callback)."""

    def __init__(self, propose):
        super().__init__()
        self.propose = propose
        self.from_epoch: int | None = None

    def on_epoch_end(self, epoch, logs=None):
        if self.model.stop_training:
            return
        if self.propose(epoch + 1) is not None:
            self.from_epoch = epoch + 1
            self.model.stop_training = True


class StepTimer(keras.callbacks.Callback):
    """Records when `fit` started and when each training batch ended."""

    def __init__(self):
        super().__init__()
        self.started = math.nan
        self.batch_ends: list[float] = []

    def on_train_begin(self, logs=None):
        self.started = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.batch_ends.append(time.perf_counter())

    def step_and_trace_seconds(self, warmup_steps: int) -> tuple[float, float]:
        """(seconds per step after the first `warmup_steps`, their extra cost over as many
        ordinary steps): the timed steps are every batch after the warm-up ones."""
        ends = self.batch_ends
        if len(ends) <= warmup_steps or warmup_steps < 1:
            raise ValueError(f"{len(ends)} batches timed: need more than warmup_steps={warmup_steps}")
        step = (ends[-1] - ends[warmup_steps - 1]) / (len(ends) - warmup_steps)
        trace = max(0.0, ends[warmup_steps - 1] - self.started - warmup_steps * step)
        return step, trace


class FitEndTimer(keras.callbacks.Callback):
    """When `fit` called its callbacks' end (`ended`, time.perf_counter()): the seconds from there
    to `fit` returning are its input's teardown, part of what the tail reserve is for."""

    def __init__(self):
        super().__init__()
        self.ended = math.nan

    def on_train_end(self, logs=None):
        self.ended = time.perf_counter()


class BudgetGuard(keras.callbacks.Callback):
    """Stops training at the end of an epoch once `deadline` (time.time()) has passed."""

    def __init__(self, deadline: float):
        super().__init__()
        self.deadline = deadline
        self.stopped = False

    def on_epoch_end(self, epoch, logs=None):
        if time.time() > self.deadline:
            self.stopped = True
            self.model.stop_training = True


__all__ = ["Calibration", "BudgetTooSmallError", "steps_per_epoch_for_budget", "StepTimer",
           "ReplanCheck", "needs_replan", "steps_of_epoch", "REPLAN_TOLERANCE", "REPLAN_WINDOW_EPOCHS",
           "EXPECTED_TEARDOWN_SECONDS",
           "BudgetGuard", "FitEndTimer", "tail_reserve_seconds", "TAIL_RESERVE_SECONDS",
           "TAIL_RESERVE_SHARE", "CALIBRATION_STEPS", "CALIBRATION_WARMUP_STEPS", "SAFETY"]
