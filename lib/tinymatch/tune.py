"""Hyperparameter tuning: an Optuna study whose trials are ordinary training runs.

`run_study(name, config, study_dir=..., trials=N, trial_minutes=M)` fills a study directory:

    study.db             Optuna's SQLite storage (`optuna-dashboard sqlite:///STUDY_DIR/study.db`)
    trials/0000/ ...     one run directory per trial (config.json, history.csv, model.keras, ...),
                         plus trial.json: number, state (COMPLETE / PRUNED / FAIL), value, params
    best_config.json     the full Config of the best complete trial, ready to train at full length

The objective is the best validation pair ROC AUC of the training protocol (`config.protocol`,
`joint` by default: the seen-train classes' val images); no test part is ever looked at.
The sampler is TPE, seeded with `config.seed`; the pruner (default: median) is fed that AUC
after every epoch.

Multi-fidelity: each trial runs the base config's epochs with its own params, but stops when its
wall-clock budget of `trial_minutes` is spent, counted from the trial's start (so model building
and the first epoch's tracing count too). It is checked after every batch; the cut epoch is still
evaluated and recorded, and the run's model files are written after it, so a trial takes its
budget plus about one evaluation. A trial whose planned schedule is longer than the budget ends
before its learning rate has decayed: choose the base config's `steps_per_epoch` so that a typical
trial's schedule fits the budget; `trial_rows` marks the trials that were cut (`budget_cut`) and
`study_summary` counts them (`trials_budget_cut`). A base config with a time budget (the `cpu`
profile, `tinymatch.budget`) does that by itself: each trial becomes a budgeted run of
`TRIAL_BUDGET_SHARE` x `trial_minutes`, so its schedule ends at zero when the trial ends (the
clock still guards it).

Resuming: the study is loaded from its storage (`load_if_exists`), finished trials (complete,
pruned, failed) are never run again, and the study continues until it has `trials` of them. A trial
that was still RUNNING when its process died (or was interrupted with Ctrl-C) is marked FAIL and
queued again with the same params; the new trial adopts its run directory, so training resumes
from the last epoch's checkpoint. One process works in a study directory at a time (a lock).

Figures for the report: `study_figures(study_dir)`; the search space as a table:
`tinymatch.search_space.search_space_rows()`; the trials as a table: `trial_rows(study_dir)`.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import keras
import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState
from optuna.visualization import matplotlib as plots
from tqdm.auto import tqdm

from tinymatch import data, rundir
from tinymatch.config import Config
from tinymatch.io_utils import write_json
from tinymatch.search_space import Dimension, search_space, search_space_rows, suggest, trial_config
from tinymatch.train import TrainingFailedError, train

REQUEUED_FROM = "requeued_from"  # user attr of a trial queued again after its process died
TPE_STARTUP_TRIALS = 10  # random trials before TPE models the results (Optuna's default)
# Median pruning only after a few complete trials, and never in a trial's first epochs.
PRUNER_STARTUP_TRIALS = 5
PRUNER_WARMUP_EPOCHS = 2
# A budgeted base: the share of a trial's minutes its training plans for (the rest: model
# building, the final threshold, noise), so that the clock rarely has to cut it.
TRIAL_BUDGET_SHARE = 0.9


class StudyMismatchError(ValueError):
    """The study directory holds another study, or this study with another setup."""


# --------------------------------------------------------------------------------------------------
# Running a study

def run_study(study_name: str, config: Config, *, study_dir, trials: int, trial_minutes: float,
              progress: bool = True, space: tuple[Dimension, ...] | None = None,
              pruner: optuna.pruners.BasePruner | None = None, dataset=None) -> dict:
    """Run (or resume) the study until it has `trials` finished trials; returns `study_summary`.

    config: the base configuration every trial starts from (its data, seed, epochs, steps).
    trial_minutes: each trial's wall-clock budget (0 = no budget: the base config's epochs).
    space: the searched dimensions (default: `search_space(config, <training classes>)`).
    pruner: default `MedianPruner` over per-epoch validation AUC. Not stored: pass the same one
    when resuming. dataset: a loaded `tinymatch.data.Dataset` (default: `config`'s data).
    """
    if not study_name or not str(study_name).strip():
        raise ValueError("study name: must not be empty")
    if int(trials) != trials or trials < 1:
        raise ValueError(f"trials={trials!r}: must be an integer >= 1")
    if not trial_minutes >= 0:  # (also refuses NaN)
        raise ValueError(f"trial_minutes={trial_minutes!r}: must be >= 0 (0 = no time budget)")
    study_dir = rundir.StudyDir(study_dir)
    with rundir.locked(study_dir.path, what="study directory"), _quiet_optuna():
        _check_one_study(study_dir, study_name)
        dataset = dataset if dataset is not None else data.load_dataset_for(config, progress=progress)
        if space is None:
            space = search_space(config, _training_classes(dataset, config))
        study = optuna.create_study(
            study_name=study_name, storage=study_dir.storage_url, direction="maximize",
            load_if_exists=True, pruner=pruner or default_pruner())
        # Seeded by config.seed, offset by the trials already there: a resumed study draws new
        # points instead of repeating its first process's random start-up trials.
        study.sampler = optuna.samplers.TPESampler(
            seed=(config.seed + len(study.get_trials(deepcopy=False))) % 2**32,
            n_startup_trials=TPE_STARTUP_TRIALS)
        _check_same_setup(study, study_dir, config, trial_minutes, space)
        _requeue_interrupted(study)
        budget = trial_minutes * 60.0 if trial_minutes > 0 else math.inf
        runner = _TrialRunner(study, study_dir, config, space, dataset, budget, progress)
        done = _finished_count(study)
        with tqdm(total=max(trials, done), initial=done, unit="trial", desc=f"study {study_name}",
                  disable=not progress) as bar:
            runner.bar = bar
            while _finished_count(study) < trials:
                frozen = runner.run(study.ask())
                bar.update(1)
                if progress:
                    bar.write(_trial_line(frozen))
        write_best_config(study, study_dir)
        return study_summary(study_dir.path, study_name)


def default_pruner() -> optuna.pruners.BasePruner:
    """Median pruning of the per-epoch validation AUC (robust with few trials; no extra knobs)."""
    return optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS,
                                       n_warmup_steps=PRUNER_WARMUP_EPOCHS)


@dataclass
class _TrialRunner:
    study: optuna.Study
    study_dir: rundir.StudyDir
    base: Config
    space: tuple[Dimension, ...]
    dataset: Any
    budget_seconds: float
    progress: bool
    bar: Any = None

    def run(self, trial: optuna.Trial) -> FrozenTrial:
        """Train one trial and tell the study its outcome (re-raising a training error)."""
        started = time.monotonic()
        run_dir = self.study_dir.trial_dir(trial.number)
        record = dict(study=self.study.study_name, number=trial.number,
                      run_dir=str(run_dir.relative_to(self.study_dir.path)),
                      requeued_from=trial.user_attrs.get(REQUEUED_FROM))
        earlier_seconds, watcher = 0.0, None
        try:
            record["params"] = params = suggest(trial, self.space)
            config = trial_config(self.base, params)
            if config.time_budget_minutes and math.isfinite(self.budget_seconds):
                config = config.replace(
                    time_budget_minutes=round(TRIAL_BUDGET_SHARE * self.budget_seconds / 60.0, 3))
            _adopt_interrupted_run(trial, run_dir, config, self.study_dir)
            earlier = rundir.read_history(run_dir)
            for row in earlier:  # an adopted run's epochs, so the pruner sees the whole curve
                trial.report(_float(row.get("val_auc")), int(row["epoch"]) - 1)
            earlier_seconds = sum(_float(row.get("seconds"), 0.0) for row in earlier)
            watcher = _TrialWatcher(trial, self.budget_seconds - earlier_seconds, self._show)
            if earlier and trial.should_prune():
                value, pruned_at = _float(earlier[-1].get("val_auc")), len(earlier)
            else:
                result = train(config, run_dir, dataset=self.dataset, progress=False,
                               callbacks=[watcher])
                value, pruned_at = float(result.best_val_auc), watcher.pruned_at
        except TrainingFailedError as err:  # diverged (e.g. too high a learning rate): a result
            self._record(trial, run_dir, record, started, earlier_seconds, watcher,
                         state=TrialState.FAIL, value=None, error=str(err))
            return self.study.tell(trial, state=TrialState.FAIL)
        except Exception as err:
            self._record(trial, run_dir, record, started, earlier_seconds, watcher,
                         state=TrialState.FAIL, value=None, error=f"{type(err).__name__}: {err}")
            self.study.tell(trial, state=TrialState.FAIL)
            raise
        except BaseException:  # Ctrl-C: like a kill, the trial is queued again
            _requeue(self.study, self.study.tell(trial, state=TrialState.FAIL))
            raise
        finally:
            keras.backend.clear_session()  # trials do not pile up graphs in one process
        if pruned_at is not None:
            state, told = TrialState.PRUNED, dict(state=TrialState.PRUNED)
        elif math.isfinite(value):
            state, told = TrialState.COMPLETE, dict(values=value)
        else:  # diverged: every epoch's AUC was NaN
            state, told = TrialState.FAIL, dict(state=TrialState.FAIL)
        record["pruned_at_epoch"] = pruned_at
        self._record(trial, run_dir, record, started, earlier_seconds, watcher, state=state,
                     value=value if math.isfinite(value) else None)
        return self.study.tell(trial, **told)

    def _record(self, trial, run_dir, record, started, earlier_seconds, watcher, *, state, value,
                error=None):
        """trial.json in the run directory, and the same facts as the trial's user attrs."""
        history = rundir.read_history(run_dir)
        record.update(state=state.name, value=value, epochs_run=len(history),
                      seconds=round(earlier_seconds + time.monotonic() - started, 1),
                      budget_cut=bool(watcher and watcher.budget_cut))
        if error:
            record["error"] = error
        if run_dir.is_dir():
            write_json(rundir.trial_record(run_dir), record)
        for key in ("run_dir", "seconds", "epochs_run", "budget_cut", "pruned_at_epoch", "error"):
            if record.get(key) is not None:
                trial.set_user_attr(key, record[key])

    def _show(self, text: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=True)


class _TrialWatcher(keras.callbacks.Callback):
    """Reports each epoch's val AUC to the trial; stops training when pruned or out of time.

    Runs after train's evaluation callback (which puts `val_auc` in the epoch logs).
    """

    def __init__(self, trial: optuna.Trial, budget_seconds: float, show=None):
        super().__init__()
        self.trial, self.show = trial, show
        # budget_seconds <= 0 with a budget set means "already spent" (an adopted run).
        self.deadline = time.monotonic() + budget_seconds if math.isfinite(budget_seconds) else None
        self.pruned_at: int | None = None
        self.budget_cut = False

    def on_train_batch_end(self, batch, logs=None):
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.budget_cut = True
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        value = _float((logs or {}).get("val_auc"))
        self.trial.report(value, epoch)
        if self.show:
            self.show(f"trial {self.trial.number} epoch {epoch + 1} val AUC {value:.4f}")
        if self.trial.should_prune():
            self.pruned_at = epoch + 1
            self.model.stop_training = True


# --------------------------------------------------------------------------------------------------
# Resuming

def _requeue_interrupted(study: optuna.Study) -> list[int]:
    """Mark trials left RUNNING by a dead process FAIL and queue their params again.

    Only called while holding the study directory's lock, so no live process owns them.
    """
    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for frozen in stale:
        _requeue(study, frozen)
    return [t.number for t in stale]


def _requeue(study: optuna.Study, frozen: FrozenTrial) -> None:
    # Queue first, then fail: a kill in between leaves a duplicate to run, never a lost trial.
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    if not any(t.user_attrs.get(REQUEUED_FROM) == frozen.number for t in waiting):
        study.enqueue_trial(frozen.params, user_attrs={REQUEUED_FROM: frozen.number})
    if frozen.state == TrialState.RUNNING:
        study.tell(frozen.number, state=TrialState.FAIL)


def _adopt_interrupted_run(trial, run_dir: Path, config: Config, study_dir: rundir.StudyDir) -> None:
    """A re-queued trial continues the interrupted trial's training (same params: same config)."""
    source = trial.user_attrs.get(REQUEUED_FROM)
    if source is None or run_dir.exists():
        return
    old = study_dir.trial_dir(int(source))
    try:
        same = Config.load(rundir.RunDir(old).config).training_key() == config.training_key()
    except (FileNotFoundError, ValueError):
        return
    if same:
        old.rename(run_dir)


def _finished_count(study: optuna.Study) -> int:
    """Complete, pruned and failed trials, not counting the failed ones that were queued again."""
    trials = study.get_trials(deepcopy=False)
    requeued = {t.user_attrs.get(REQUEUED_FROM) for t in trials}
    return sum(1 for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
               or (t.state == TrialState.FAIL and t.number not in requeued))


def _check_one_study(study_dir: rundir.StudyDir, study_name: str) -> None:
    if not study_dir.storage.is_file():
        return
    names = optuna.study.get_all_study_names(study_dir.storage_url)
    others = [n for n in names if n != study_name]
    if others:
        raise StudyMismatchError(f"{study_dir.path}: holds study {others[0]!r}; a study directory "
                                 f"holds one study, use another directory for {study_name!r}")


def _check_same_setup(study, study_dir, config: Config, trial_minutes: float, space) -> None:
    """A resumed study must keep its base config, budget and space (else trials do not compare)."""
    setup = dict(base_config=config.training_key(), trial_minutes=float(trial_minutes),
                 search_space=search_space_rows(space))
    saved = study.user_attrs
    if not saved:
        for key, value in setup.items():
            study.set_user_attr(key, value)
        return
    where = f"{study_dir.path}: study {study.study_name!r}"
    # A field added to Config after the study started reads as its default (the same setup).
    defaults = {spec.name: spec.default for spec in fields(Config)}
    changed = sorted(k for k, v in setup["base_config"].items()
                     if saved["base_config"].get(k, defaults.get(k)) != v)
    if changed:
        raise StudyMismatchError(f"{where} was started with another base config ({', '.join(changed)} "
                                 "differ); use the same config or another study")
    if saved["trial_minutes"] != setup["trial_minutes"]:
        raise StudyMismatchError(f"{where} was started with trial_minutes={saved['trial_minutes']:g}, "
                                 f"not {trial_minutes:g}; use the same budget or another study")
    if saved["search_space"] != setup["search_space"]:
        raise StudyMismatchError(f"{where} was started with another search space; use another study")


def _training_classes(dataset, config: Config) -> int:
    splits = data.make_splits_for(dataset, config)
    return len(np.unique(dataset.labels[splits.indices(config.protocol, "train")]))


# --------------------------------------------------------------------------------------------------
# Reading a study

def load_study(study_dir, study_name: str | None = None) -> optuna.Study:
    """The study stored in `study_dir` (its only one, unless `study_name` is given)."""
    study_dir = rundir.StudyDir(study_dir)
    if not study_dir.storage.is_file():
        raise FileNotFoundError(f"{study_dir.storage}: no study here (run `tinymatch tune` first)")
    names = optuna.study.get_all_study_names(study_dir.storage_url)
    if study_name is None:
        if len(names) != 1:
            raise StudyMismatchError(f"{study_dir.storage}: holds {len(names)} studies; name one")
        study_name = names[0]
    elif study_name not in names:
        raise StudyMismatchError(f"{study_dir.storage}: no study {study_name!r} (it holds "
                                 f"{', '.join(names) or 'none'})")
    with _quiet_optuna():
        return optuna.load_study(study_name=study_name, storage=study_dir.storage_url)


def write_best_config(study: optuna.Study, study_dir) -> Path | None:
    """best_config.json: the full Config of the best complete trial (None when there is none)."""
    study_dir = rundir.StudyDir(study_dir)
    best = _best_trial(study)
    if best is None:
        return None
    saved = rundir.RunDir(study_dir.trial_dir(best.number)).config
    config = Config.load(saved)
    return config.save(study_dir.best_config)


def study_summary(study_dir, study_name: str | None = None) -> dict:
    """Counts, best value, params and run directory of a study (JSON-serialisable)."""
    study_dir = rundir.StudyDir(study_dir)
    study = load_study(study_dir.path, study_name)
    trials = study.get_trials(deepcopy=False)
    count = {state: sum(1 for t in trials if t.state == state) for state in TrialState}
    best = _best_trial(study)
    return dict(
        study_name=study.study_name, storage=study_dir.storage_url, study_dir=str(study_dir.path),
        trial_minutes=study.user_attrs.get("trial_minutes"),
        trials_complete=count[TrialState.COMPLETE], trials_pruned=count[TrialState.PRUNED],
        trials_failed=count[TrialState.FAIL], trials_running=count[TrialState.RUNNING],
        trials_waiting=count[TrialState.WAITING],
        trials_budget_cut=sum(1 for t in trials if t.user_attrs.get("budget_cut")),
        best_trial=best.number if best else None, best_value=best.value if best else None,
        best_params=dict(best.params) if best else {},
        best_run_dir=str(study_dir.trial_dir(best.number)) if best else None,
        best_config=str(study_dir.best_config) if study_dir.best_config.is_file() else None)


def trial_rows(study_dir, study_name: str | None = None) -> list[dict]:
    """One dict per trial (number, state, value, seconds, epochs, budget_cut, params), for tables."""
    study = load_study(study_dir, study_name)
    rows = []
    for t in study.get_trials(deepcopy=False):
        rows.append(dict(number=t.number, state=t.state.name, value=t.value,
                         seconds=t.user_attrs.get("seconds"), epochs_run=t.user_attrs.get("epochs_run"),
                         budget_cut=t.user_attrs.get("budget_cut"),
                         pruned_at_epoch=t.user_attrs.get("pruned_at_epoch"), params=dict(t.params)))
    return rows


def study_figures(study_dir, study_name: str | None = None, *, max_parallel_params: int = 6) -> dict:
    """Optuna's matplotlib plots of the study, by name; a plot that needs more trials is left out.

    optimization_history, intermediate_values (the per-epoch val AUC of every trial: what the
    pruner saw): from one complete trial. param_importances (Optuna's default evaluator),
    parallel_coordinate and slice: from two complete trials with a varying param; the last two
    show the `max_parallel_params` most important params.
    """
    study = load_study(study_dir, study_name)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return {}
    figures = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # With few trials the importance evaluator warns that its estimate is coarse; the report
        # states the number of trials instead.
        warnings.simplefilter("ignore", UserWarning)
        figures["optimization_history"] = _figure(plots.plot_optimization_history(study))
        figures["intermediate_values"] = _figure(plots.plot_intermediate_values(study))
        varying = _varying_params(complete)
        if len(complete) < 2 or not varying:
            return figures
        shown = varying[:max_parallel_params]
        try:
            importances = optuna.importance.get_param_importances(study)
            figures["param_importances"] = _figure(plots.plot_param_importances(study))
            ranked = [name for name in importances if name in varying]
            shown = (ranked + [n for n in varying if n not in ranked])[:max_parallel_params]
        except (RuntimeError, ValueError):
            pass  # e.g. no param present in every complete trial
        figures["parallel_coordinate"] = _figure(plots.plot_parallel_coordinate(study, params=shown))
        figures["slice"] = _figure(plots.plot_slice(study, params=shown))
    return figures


# --------------------------------------------------------------------------------------------------
# Helpers

def _best_trial(study: optuna.Study) -> FrozenTrial | None:
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    return study.best_trial


def _varying_params(trials: list[FrozenTrial]) -> list[str]:
    names = sorted({name for t in trials for name in t.params})
    return [n for n in names if len({repr(t.params.get(n)) for t in trials}) > 1]


def _figure(plotted):
    """Optuna's matplotlib functions return Axes (or an array of them): their Figure."""
    axes = np.asarray(plotted, dtype=object).ravel()[0]
    return axes.figure


def _trial_line(trial: FrozenTrial) -> str:
    value = "-" if trial.value is None else f"{trial.value:.4f}"
    seconds = trial.user_attrs.get("seconds")
    took = f"{seconds:.0f} s" if seconds is not None else "-"
    params = ", ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
    extra = " (budget cut)" if trial.user_attrs.get("budget_cut") else ""
    return f"trial {trial.number:3d} {trial.state.name:<8} val AUC {value}  {took}{extra}  {params}"


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _float(value: Any, default: float = float("nan")) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


class _quiet_optuna:
    """Optuna logs every trial at INFO; run_study prints its own line per trial instead."""

    def __enter__(self):
        self.level = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)

    def __exit__(self, *exc):
        optuna.logging.set_verbosity(self.level)


__all__ = ["run_study", "default_pruner", "load_study", "study_summary", "trial_rows", "study_figures",
           "write_best_config", "StudyMismatchError", "REQUEUED_FROM"]
