"""Budgeted training: the step count a time budget allows, calibration in a real run, the guard."""

import json

import pytest
from interrupts import Interrupt, KillAfterEpoch

from tinymatch import budget, schedules
from tinymatch.config import Config, ConfigError
from tinymatch.rundir import read_history
from tinymatch.train import train


def _calibration(step=0.5, trace=4.0, overhead=6.0):
    return budget.Calibration(step_seconds=step, trace_seconds=trace, epoch_overhead_seconds=overhead,
                              calibration_seconds=10.0)


def test_steps_fill_what_the_budget_leaves_after_fixed_costs():
    # reserve 0.03 x 600 = 18 s; 0.97 x (600 - 30 - 18) = 535.44 s; minus 2 traces (8 s) and 10
    # epochs' overhead (60 s) = 467.44 s; over 10 epochs of 0.5 s steps: 93.5 -> 93 steps.
    steps = budget.steps_per_epoch_for_budget(600, 30, epochs=10, phases=2, calibration=_calibration())
    assert steps == 93
    # what is planned fits the budget less its reserve, one more step per epoch would not
    used = 30 + 2 * 4.0 + 10 * 6.0 + 10 * steps * 0.5
    assert used <= 600 - 18 and 30 + 2 * 4.0 + 10 * 6.0 + 10 * (steps + 1) * 0.5 > 0.97 * 552 + 30


def test_the_tail_reserve_is_a_minute_or_a_small_share_of_a_short_budget():
    assert budget.tail_reserve_seconds(44 * 60) == budget.TAIL_RESERVE_SECONDS == 60.0
    assert budget.tail_reserve_seconds(120) == pytest.approx(3.6)  # a 2-minute tuning trial
    assert budget.tail_reserve_seconds(0) == 0.0
    # a 44-minute budget with nothing spent plans 0.97 x (2640 - 60) s of epochs
    steps = budget.steps_per_epoch_for_budget(2640, 0, 1, 1, _calibration(step=1.0, trace=0, overhead=0))
    assert steps == int(0.97 * 2580)


def test_a_slower_machine_or_a_smaller_budget_gets_fewer_steps():
    base = budget.steps_per_epoch_for_budget(600, 0, 10, 1, _calibration())
    assert budget.steps_per_epoch_for_budget(600, 0, 10, 1, _calibration(step=1.0)) < base
    assert budget.steps_per_epoch_for_budget(300, 0, 10, 1, _calibration()) < base
    assert budget.steps_per_epoch_for_budget(600, 200, 10, 1, _calibration()) < base


def test_a_budget_too_small_for_one_step_names_the_field_and_the_minimum():
    with pytest.raises(budget.BudgetTooSmallError, match=r"time_budget_minutes=0\.5.*at least 2 minutes"):
        budget.steps_per_epoch_for_budget(30, 0, epochs=10, phases=1, calibration=_calibration())
    with pytest.raises(ValueError, match="epochs=0"):
        budget.steps_per_epoch_for_budget(600, 0, epochs=0, phases=1, calibration=_calibration())


def test_step_timer_separates_tracing_from_steady_steps():
    timer = budget.StepTimer()
    timer.started = 100.0
    timer.batch_ends = [105.0, 105.5, 106.0, 106.5, 107.0, 107.5]  # first step traced: 5 s
    step, trace = timer.step_and_trace_seconds(warmup_steps=2)
    assert step == pytest.approx(0.5)
    assert trace == pytest.approx(5.5 - 2 * 0.5)
    with pytest.raises(ValueError, match="need more than"):
        timer.step_and_trace_seconds(warmup_steps=6)


def test_budget_guard_stops_only_after_the_deadline():
    class _Model:
        stop_training = False

    guard = budget.BudgetGuard(deadline=float("inf"))
    guard.set_model(_Model())
    guard.on_epoch_end(0)
    assert not guard.stopped and not guard.model.stop_training
    guard.deadline = 0.0
    guard.on_epoch_end(1)
    assert guard.stopped and guard.model.stop_training


def test_fixed_steps_over_a_budgeted_profile_turn_its_budget_off(tmp_path):
    """A partial config, or a config.json saved before time budgets existed, that sets
    steps_per_epoch over the cpu profile (44-minute budget) reads as fixed steps."""
    assert Config.from_profile("cpu").time_budget_minutes == 44.0
    fixed = Config.from_profile("cpu", steps_per_epoch=650)
    assert (fixed.steps_per_epoch, fixed.time_budget_minutes) == (650, 0.0)
    old = Config.from_profile("cpu", steps_per_epoch=650).to_dict()
    del old["time_budget_minutes"]
    (tmp_path / "config.json").write_text(json.dumps(old))
    assert Config.load(tmp_path / "config.json") == fixed


def test_a_budget_and_fixed_steps_are_refused_together():
    with pytest.raises(ConfigError, match="steps_per_epoch=4 with config.time_budget_minutes=5"):
        Config.from_profile("smoke", time_budget_minutes=5.0)
    with pytest.raises(ConfigError, match="time_budget_minutes needs one machine"):
        Config.from_profile("smoke", time_budget_minutes=5.0, steps_per_epoch=0, strategy="multi-worker")
    with pytest.raises(ConfigError, match="time_budget_minutes"):
        Config.from_profile("smoke", time_budget_minutes=-1.0, steps_per_epoch=0)


def _budget_config(synthetic_dir, **overrides):
    values = dict(data=str(synthetic_dir), warmup_epochs=1, epochs=2, steps_per_epoch=0,
                  time_budget_minutes=10.0, early_stopping_patience=0, lr_schedule="linear")
    values.update(overrides)
    return Config.from_profile("smoke", **values)


def _at_most(steps, monkeypatch):
    """The real planning, capped at `steps` (a generous budget keeps the tests independent of the
    machine's speed; the cap keeps them short)."""
    plan = budget.steps_per_epoch_for_budget
    monkeypatch.setattr(budget, "steps_per_epoch_for_budget",
                        lambda *args, **kwargs: min(steps, plan(*args, **kwargs)))


def test_a_budgeted_run_calibrates_once_and_its_schedule_ends_at_zero(tmp_path, synthetic_dir, monkeypatch):
    """The step count is measured before epoch 1, kept by a run killed after it, and the resumed
    run's learning rate still reaches zero at its last step."""
    _at_most(4, monkeypatch)
    config = _budget_config(synthetic_dir)
    run_dir = tmp_path / "run"
    with pytest.raises(Interrupt):
        train(config, run_dir, progress=False, callbacks=[KillAfterEpoch(1)])
    state = json.loads((run_dir / "checkpoints" / "last" / "state.json").read_text())
    planned = state["steps_per_epoch"]
    assert planned >= 1
    assert set(state["calibration"]) == {"step_seconds", "trace_seconds", "epoch_overhead_seconds",
                                         "calibration_seconds"}
    assert not list(run_dir.glob(".calibration.*"))  # the calibration's files are gone
    train(config, run_dir, progress=False)
    summary = json.loads((run_dir / "training.json").read_text())
    assert summary["finished"] and summary["steps_per_epoch"] == planned  # not re-calibrated
    assert summary["time_budget_minutes"] == 10.0 and summary["budget_exhausted"] is False
    assert summary["calibration"] == state["calibration"]
    history = read_history(run_dir)
    assert [row["phase"] for row in history] == ["warmup", "triplet", "triplet"]
    assert history[-1]["lr"] == pytest.approx(0.0, abs=1e-9)


def test_the_budget_runs_from_the_training_call_and_the_tail_is_recorded(tmp_path, synthetic_dir,
                                                                        monkeypatch):
    """Loading before the first epoch is spent from the budget (a slow split here: 2 s), and
    training.json records what followed each fit and the final threshold."""
    import time

    from tinymatch import rundir

    spent = []
    plan = budget.steps_per_epoch_for_budget

    def recording(budget_seconds, spent_seconds, *args, **kwargs):
        spent.append(spent_seconds)
        return min(3, plan(budget_seconds, spent_seconds, *args, **kwargs))

    monkeypatch.setattr(budget, "steps_per_epoch_for_budget", recording)
    run_splits = rundir.run_splits
    monkeypatch.setattr(rundir, "run_splits",
                        lambda *args, **kwargs: (time.sleep(2.0), run_splits(*args, **kwargs))[1])
    run_dir = tmp_path / "run"
    train(_budget_config(synthetic_dir), run_dir, progress=False)
    assert spent[0] >= 2.0  # the calibration's plan already counts the loading
    summary = json.loads((run_dir / "training.json").read_text())
    assert len(summary["fit_teardown_seconds"]) == 2  # one fit per phase
    assert all(0 <= s < 60 for s in summary["fit_teardown_seconds"])
    assert summary["finish_seconds"] >= 0 and summary["tail_reserve_seconds"] == pytest.approx(18.0)
    assert 2.0 <= summary["budget_used_seconds"] <= summary["wall_seconds"] + 1.0


def test_a_spent_budget_ends_the_run_after_a_whole_epoch(tmp_path, synthetic_dir, monkeypatch):
    """A machine that slows down mid-run: the guard stops after the epoch in progress, the run
    still finishes (best model, Siamese model, training.json) and is not trained on when re-run."""
    monkeypatch.setattr(budget, "steps_per_epoch_for_budget", lambda *args, **kwargs: 2)
    monkeypatch.setattr(budget.BudgetGuard, "__init__",
                        lambda self, deadline: (budget.keras.callbacks.Callback.__init__(self),
                                                setattr(self, "deadline", 0.0),
                                                setattr(self, "stopped", False))[0])
    config = _budget_config(synthetic_dir)
    run_dir = tmp_path / "run"
    train(config, run_dir, progress=False)
    summary = json.loads((run_dir / "training.json").read_text())
    assert summary["finished"] and summary["budget_exhausted"] is True
    assert summary["epochs_run"] == 1 and summary["steps_per_epoch"] == 2
    assert (run_dir / "model.keras").is_file() and (run_dir / "siamese.keras").is_file()
    train(config, run_dir, progress=False)  # a finished run is reused as it is
    assert len(read_history(run_dir)) == 1


def test_the_re_plan_message_says_why_the_steps_moved(capsys):
    """A changed pace is named as such; the same pace with less time left is not called a change."""
    import time

    from tinymatch.train import _Session

    session = _Session.__new__(_Session)
    session.config = Config.from_profile("smoke", time_budget_minutes=10.0, steps_per_epoch=0)
    session.progress, session.total_epochs, session.budget_exhausted = True, 5, False
    session.steps_per_epoch = 100
    session.budget_plan = [dict(from_epoch=1, steps_per_epoch=100, step_seconds=1.0, source="calibration")]
    for pace, said in ((2.0, "epochs took 2.000 s a step, not 1.000 s: epochs 4-5 get"),
                       (1.0, "at 1.000 s a step, the time left: epochs 4-5 get")):
        session._plan_from = lambda epoch, pace=pace: (37, pace)
        session.history, session.budget_started = [{}] * 3, time.time()
        session.steps_per_epoch = 100
        assert session._replan_budget(3)
        assert said in capsys.readouterr().out
        session.budget_plan[-1]["step_seconds"] = 1.0  # the next case starts from a 1 s plan


def test_a_later_phase_is_planned_from_the_measured_epochs(synthetic_dir):
    """A calibration that got the step time wrong (0.5 s; the epochs took 1 s a step) is corrected
    when the triplet phase starts: its steps come from the warm-up's measured seconds (its first
    epoch, which pays for tracing, left out), and the plan records both."""
    import time

    from tinymatch.train import _Session

    config = _budget_config(synthetic_dir, warmup_epochs=3, epochs=2, time_budget_minutes=10.0)
    session = _Session.__new__(_Session)  # the planning alone: no data, no model
    session.config, session.progress, session.total_epochs = config, False, 5
    session.steps_per_epoch, session.budget_exhausted, session.traced_epochs = 50, False, {0}
    session.calibration = dict(step_seconds=0.5, trace_seconds=4.0, epoch_overhead_seconds=5.0,
                               calibration_seconds=20.0)
    session.budget_plan = [dict(from_epoch=1, steps_per_epoch=50, step_seconds=0.5, source="calibration")]
    session.history = [dict(phase="warmup", seconds=s) for s in (80.0, 55.0, 55.0)]  # 1 s a step + 5 s
    session.budget_started = time.time() - 210.0  # 20 s calibration + 190 s of epochs
    assert session._replan_budget(3)
    # 0.97 x (600 - 210 - 18) = 360.84; minus 1 trace (4) and 2 epochs' overhead (10) = 346.84;
    # / (2 x 1.0)
    assert session.steps_per_epoch in (172, 173)  # (a few ms pass between the two clocks)
    assert session.budget_plan[-1] == dict(from_epoch=4, steps_per_epoch=session.steps_per_epoch,
                                           step_seconds=1.0, source="measured epochs")
    assert session._replan_budget(0) and len(session.budget_plan) == 2  # nothing to measure yet
    session.budget_started = time.time() - 600.0  # all spent: the run ends before the new phase
    assert not session._replan_budget(3) and session.budget_exhausted


def test_the_plan_gives_each_epoch_its_steps_and_a_re_plan_needs_a_real_change():
    plan = [dict(from_epoch=1, steps_per_epoch=549), dict(from_epoch=4, steps_per_epoch=500),
            dict(from_epoch=15, steps_per_epoch=520)]
    assert [budget.steps_of_epoch(plan, e) for e in (1, 3, 4, 14, 15, 17)] == [549, 549, 500, 500, 520, 520]
    with pytest.raises(ValueError, match="epoch 0"):
        budget.steps_of_epoch(plan, 0)
    # 5% of 549 is 27.45 steps: 522 and 576 keep the plan, 521 and 577 change it
    assert not budget.needs_replan(549, 522) and budget.needs_replan(549, 521)
    assert not budget.needs_replan(549, 576) and budget.needs_replan(549, 577)


class _EpochSteps(budget.keras.callbacks.Callback):
    """The training batches each epoch ran (0-based epoch -> count), across several `fit`s."""

    def __init__(self):
        super().__init__()
        self.steps, self.epoch = {}, None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self.steps[self.epoch] = self.steps.get(self.epoch, 0) + 1


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_a_phase_whose_pace_is_off_is_re_planned_after_its_first_measured_epoch(tmp_path, synthetic_dir,
                                                                             monkeypatch, schedule):
    """A machine that runs slower than its calibration (here: the plan from the measured epochs
    halves the steps). The warm-up's first epoch pays for tracing and measures nothing; after its
    second the phase continues at the new pace, with the same optimizer and a schedule rebuilt
    for the phase's new length, so the warm-up's schedule still reaches its floor (zero for
    linear, 1% of the peak for cosine) at its last step. The triplet phase starts at the new pace
    and keeps it (the plan is unchanged)."""
    calls = []

    def slower_than_calibrated(*args, **kwargs):
        calls.append(args)
        return 4 if len(calls) == 1 else 2

    monkeypatch.setattr(budget, "steps_per_epoch_for_budget", slower_than_calibrated)
    counter = _EpochSteps()
    run_dir = tmp_path / "run"
    config = _budget_config(synthetic_dir, warmup_epochs=3, epochs=2, lr_schedule=schedule)
    train(config, run_dir, progress=False, callbacks=[counter])
    assert counter.steps == {0: 4, 1: 4, 2: 2, 3: 2, 4: 2}
    summary = json.loads((run_dir / "training.json").read_text())
    assert [(e["from_epoch"], e["steps_per_epoch"], e.get("within_phase", False))
            for e in summary["budget_plan"]] == [(1, 4, False), (3, 2, True)]
    assert summary["steps_per_epoch"] == 2 and summary["finished"]
    assert len(summary["fit_teardown_seconds"]) == 3  # the warm-up's two fits and the triplet phase's
    history = read_history(run_dir)
    assert [row["phase"] for row in history] == ["warmup"] * 3 + ["triplet"] * 2
    floor = config.learning_rate * schedules.COSINE_FLOOR if schedule == "cosine" else 0.0
    assert history[1]["lr"] > floor and history[2]["lr"] == pytest.approx(floor, abs=1e-9)
    assert history[-1]["lr"] == pytest.approx(floor * (config.finetune_learning_rate or config.learning_rate)
                                              / config.learning_rate, abs=1e-9)


def test_a_run_killed_after_a_within_phase_re_plan_resumes_with_the_new_plan(tmp_path, synthetic_dir,
                                                                           monkeypatch):
    """The checkpoint after a re-plan holds the new steps per epoch and the rebuilt schedule: the
    resumed run trains the warm-up's last epoch at the new pace and its schedule ends at zero."""
    calls = []
    monkeypatch.setattr(budget, "steps_per_epoch_for_budget",
                        lambda *args, **kwargs: (calls.append(args), 4 if len(calls) == 1 else 2)[1])
    config = _budget_config(synthetic_dir, warmup_epochs=4, epochs=1)
    run_dir = tmp_path / "run"
    with pytest.raises(Interrupt):  # killed in epoch 4, after epoch 3 ran the re-planned 2 steps
        train(config, run_dir, progress=False, callbacks=[KillAfterEpoch(3)])
    state = json.loads((run_dir / "checkpoints" / "last" / "state.json").read_text())
    assert state["epoch"] == 3 and state["steps_per_epoch"] == 2
    counter = _EpochSteps()
    train(config, run_dir, progress=False, callbacks=[counter])
    assert counter.steps == {3: 2, 4: 2}
    summary = json.loads((run_dir / "training.json").read_text())
    assert [(e["from_epoch"], e["steps_per_epoch"]) for e in summary["budget_plan"]] == [(1, 4), (3, 2)]
    history = read_history(run_dir)
    assert history[3]["lr"] == pytest.approx(0.0, abs=1e-9) and history[2]["lr"] > 0


def test_a_within_phase_proposal_takes_fewer_steps_always_and_more_only_past_the_teardown(synthetic_dir):
    """After the warm-up's second epoch (1 s a step measured, the first epoch left out as tracing):
    0.97 x (600 - 155 - 18) = 414.19 s, less 2 traces (8) and 3 epochs' overhead (15) = 391.19 s,
    over 3 epochs -> 130 steps. Planned 120: a gain of 8%, re-planned when the fits so far ended
    at once, not when a teardown of 60 s (their mean) or of the 30-s prior (none measured yet) is
    paid first (110 / 120 steps: no gain left). Planned 150: 130 is always taken."""
    import time

    from tinymatch.train import _Session

    config = _budget_config(synthetic_dir, warmup_epochs=3, epochs=2, time_budget_minutes=10.0)
    session = _Session.__new__(_Session)
    session.config, session.progress, session.total_epochs = config, False, 5
    session.budget_exhausted, session.traced_epochs, session.fit_teardown_seconds = False, {0}, []
    session.calibration = dict(step_seconds=0.5, trace_seconds=4.0, epoch_overhead_seconds=5.0,
                               calibration_seconds=20.0)
    session.history = [dict(phase="warmup", seconds=s) for s in (80.0, 55.0)]  # 50 steps of 1 s + 5 s

    def propose(planned, teardowns=()):
        session.steps_per_epoch = planned
        session.budget_plan = [dict(from_epoch=1, steps_per_epoch=50, step_seconds=0.5, source="calibration")]
        session.fit_teardown_seconds = list(teardowns)
        session.budget_started = time.time() - 155.0
        return session._propose_replan(2)

    assert propose(120, teardowns=[0.0]) in (129, 130)  # (a few ms pass between the two clocks)
    assert propose(120, teardowns=[0.0, 120.0]) is None
    assert propose(120) is None
    assert propose(150) in (129, 130) and propose(150, teardowns=[0.0, 120.0]) in (129, 130)
    assert propose(126, teardowns=[0.0]) is None  # within 5%
    assert session._propose_replan(3) is None  # the next epoch starts a new phase: planned there
    session.traced_epochs = {0, 1}  # both epochs began a fit: no steady epoch measures the pace
    assert propose(150) is None


def test_cheaper_epochs_leave_more_steps_for_each_epoch():
    """Progressive resizing: epochs on small images count at their relative step cost. 8 epochs at
    half a step's cost and 2 at full cost are 6 epochs' worth: 467.44 s / (6 x 0.5 s) -> 155."""
    costs = [0.5] * 8 + [1.0, 1.0]
    steps = budget.steps_per_epoch_for_budget(600, 30, 10, 2, _calibration(), relative_step_costs=costs)
    assert steps == 155
    assert budget.steps_per_epoch_for_budget(600, 30, 10, 2, _calibration(),
                                             relative_step_costs=[1.0] * 10) == 93
    with pytest.raises(ValueError, match="relative_step_costs"):
        budget.steps_per_epoch_for_budget(600, 30, 10, 2, _calibration(), relative_step_costs=[1.0] * 9)
    with pytest.raises(ValueError, match="relative_step_costs"):
        budget.steps_per_epoch_for_budget(600, 30, 2, 1, _calibration(), relative_step_costs=[1.0, 0.0])


def test_a_larger_later_phase_is_planned_at_its_calibrated_cost(synthetic_dir):
    """A warm-up on 32-pixel images measured at 0.5 s a step; the calibration timed a 64-pixel step
    at 4 x a 32-pixel one, so the triplet phase plans 2 s a step, not the warm-up's 0.5 s."""
    import time

    from tinymatch.train import _Session

    config = _budget_config(synthetic_dir, warmup_epochs=3, epochs=2, image_size=64, warmup_image_size=32)
    session = _Session.__new__(_Session)
    session.config, session.progress, session.total_epochs = config, False, 5
    session.steps_per_epoch, session.budget_exhausted, session.traced_epochs = 50, False, {0}
    session.calibration = dict(step_seconds=0.25, trace_seconds=4.0, epoch_overhead_seconds=5.0,
                               calibration_seconds=20.0,
                               step_seconds_by_image_size={"32": 0.25, "64": 1.0})
    session.budget_plan = [dict(from_epoch=1, steps_per_epoch=50, step_seconds=0.25, source="calibration")]
    session.history = [dict(phase="warmup", seconds=s) for s in (45.0, 30.0, 30.0)]  # 0.5 s a step + 5 s
    session.budget_started = time.time() - 125.0
    assert session._relative_step_costs(0, 32) == [1.0, 1.0, 1.0, 4.0, 4.0]
    assert session._replan_budget(3)
    # 0.97 x (600 - 125 - 18) = 443.29; minus 1 trace and 2 overheads = 429.29; / (2 epochs x 4 x 0.5 s)
    assert session.steps_per_epoch in (106, 107)
    assert session.budget_plan[-1]["step_seconds"] == 0.5  # what the warm-up measured (32 px)


def test_warmup_image_size_needs_both_phases():
    with pytest.raises(ConfigError, match="warmup_image_size=32 needs both phases"):
        Config.from_profile("smoke", warmup_image_size=32, warmup_epochs=0)
    with pytest.raises(ConfigError, match="warmup_image_size=16: must be 0"):
        Config.from_profile("smoke", warmup_image_size=16, warmup_epochs=1)
    assert Config.from_profile("smoke", warmup_image_size=32, warmup_epochs=1).warmup_image_size == 32
