"""tinymatch.tune: a study of tiny trials on synthetic data runs, prunes, resumes after a kill."""

import json

import matplotlib.figure
import pytest
from interrupts import Interrupt, KillAfterEpoch

from tinymatch import rundir
from tinymatch.config import Config
from tinymatch.search_space import (CATEGORICAL, FLOAT, NOT_YET_SEARCHABLE, Dimension, search_space,
                                    search_space_rows, space_values, suggest, trial_config)
from tinymatch.train import train

optuna = pytest.importorskip("optuna")  # the `tune` extra
from optuna.trial import TrialState  # noqa: E402

from tinymatch.tune import (REQUEUED_FROM, StudyMismatchError, _TrialWatcher, load_study,  # noqa: E402
                            run_study, study_figures, study_summary, trial_rows)

# Two dimensions keep the trials tiny and the TPE start-up random (seeded).
TINY_SPACE = (Dimension("learning_rate", FLOAT, 1e-3, 1e-2, log=True),
              Dimension("margin", FLOAT, 0.05, 0.5))


def tiny_config(synthetic_dir, **overrides):
    values = dict(data=str(synthetic_dir), epochs=2, warmup_epochs=0, steps_per_epoch=1,
                  early_stopping_patience=0, max_positive_pairs=50)
    values.update(overrides)
    return Config.from_profile("smoke", **values)


def tiny_study(name, config, study_dir, trials, dataset, **options):
    options.setdefault("trial_minutes", 0)
    return run_study(name, config, study_dir=study_dir, trials=trials, progress=False,
                     space=TINY_SPACE, dataset=dataset, **options)


# --- a study of three trials, run as 2 then resumed to 3 --------------------------------------------

@pytest.fixture(scope="module")
def resumed_study(tmp_path_factory, synthetic_dir, synthetic_dataset):
    study_dir = tmp_path_factory.mktemp("study")
    config = tiny_config(synthetic_dir)
    first = tiny_study("tiny", config, study_dir, 2, synthetic_dataset)
    mtimes = {p: p.stat().st_mtime_ns for p in study_dir.glob("trials/*/history.csv")}
    second = tiny_study("tiny", config, study_dir, 3, synthetic_dataset)
    return study_dir, first, second, mtimes


def test_study_writes_storage_trial_runs_and_best_config(resumed_study):
    study_dir, _, summary, _ = resumed_study
    assert (study_dir / "study.db").is_file()
    assert summary["storage"] == f"sqlite:///{(study_dir / 'study.db').resolve()}"
    assert summary["trials_complete"] == 3 and summary["trials_pruned"] == summary["trials_failed"] == 0
    assert summary["trials_budget_cut"] == 0
    for number in range(3):
        run_dir = study_dir / "trials" / f"{number:04d}"
        for name in ("config.json", "history.csv", "model.keras", "training.json", "trial.json"):
            assert (run_dir / name).is_file(), (number, name)
        record = json.loads((run_dir / "trial.json").read_text())
        assert record["state"] == "COMPLETE" and record["number"] == number
        assert len(rundir.read_history(run_dir)) == 2
    best = Config.load(study_dir / "best_config.json")
    assert best.learning_rate == pytest.approx(summary["best_params"]["learning_rate"])
    assert best.margin == pytest.approx(summary["best_params"]["margin"])
    assert summary["best_run_dir"] == str(study_dir / "trials" / f"{summary['best_trial']:04d}")


def test_objective_is_the_trials_best_val_auc(resumed_study):
    study_dir, _, summary, _ = resumed_study
    for row in trial_rows(study_dir):
        training = json.loads((study_dir / "trials" / f"{row['number']:04d}" / "training.json").read_text())
        assert row["value"] == pytest.approx(training["best_val_auc"])
    assert summary["best_value"] == max(row["value"] for row in trial_rows(study_dir))


def test_resume_runs_only_the_missing_trial(resumed_study):
    study_dir, first, second, mtimes = resumed_study
    assert first["trials_complete"] == 2 and second["trials_complete"] == 3
    assert len(mtimes) == 2
    for path, mtime in mtimes.items():  # the first two trials were not trained again
        assert path.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in (study_dir / "trials").iterdir()) == ["0000", "0001", "0002"]
    params = [tuple(row["params"].values()) for row in trial_rows(study_dir)]
    assert len(set(params)) == 3  # the resumed process did not repeat the first one's draws


def test_study_figures_and_tables(resumed_study):
    study_dir, _, _, _ = resumed_study
    figures = study_figures(study_dir)
    for name in ("optimization_history", "intermediate_values", "param_importances",
                 "parallel_coordinate", "slice"):
        assert isinstance(figures[name], matplotlib.figure.Figure), name
    rows = trial_rows(study_dir)
    assert [r["number"] for r in rows] == [0, 1, 2]
    assert all(r["state"] == "COMPLETE" and r["epochs_run"] == 2 and not r["budget_cut"] for r in rows)


def test_report_study_part_cites_the_study_and_draws_its_figures(resumed_study, tmp_path):
    from tinymatch.report import study as study_report
    study_dir, _, summary, _ = resumed_study
    drawn = study_report.save_study_figures(study_dir, tmp_path)
    assert drawn == ["study_history", "study_importances", "study_slice"]
    assert all((tmp_path / f"{stem}.png").stat().st_size > 1000 for stem in drawn)
    text = study_report.study_markdown(study_dir)
    facts = study_report.study_facts(study_dir)
    assert "3 trials: 3 complete, 0 pruned" in text
    assert f"{summary['best_value']:.3f}" in text and f"number {summary['best_trial']}" in text
    assert facts["search_space"] == search_space_rows(TINY_SPACE)  # as the study stored it
    for row in facts["search_space"]:
        assert f"| {row['parameter']} |" in text
    best_rows = [line for line in study_report.best_trials_table(study_dir).splitlines()[2:]]
    assert best_rows[0].startswith(f"| {summary['best_trial']} |")  # ranked by the objective


def test_report_sets_the_run_recipe_beside_the_best_trials(resumed_study):
    from tinymatch.report import study as study_report
    study_dir = resumed_study[0]
    best = Config.load(study_dir / "best_config.json")
    table, outside = study_report.recipe_table(study_dir, best)
    assert outside == 0
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in table.splitlines()[2:]}
    assert set(rows) == {"learning_rate", "margin"}  # the dimensions the study searched
    assert rows["margin"][1] == rows["margin"][2] == f"{best.margin:.2g}"  # this run = best trial
    assert rows["margin"][4].startswith("yes")
    # A recipe written down from the trials with rounded values still lies within them; a value
    # 1% past the best trials' largest does not.
    top_margins = [r["params"]["margin"] for r in study_report._best_complete(
        study_report.study_facts(study_dir)["trial_rows"], 5)]
    for factor, expected in ((1 + 5e-4, 0), (1.01, 1)):
        nudged = Config.from_dict(best.to_dict() | {"margin": max(top_margins) * factor})
        assert study_report.recipe_table(study_dir, nudged)[1] == expected, factor
    far = Config.load(study_dir / "best_config.json").to_dict() | {"margin": 0.9}
    table, outside = study_report.recipe_table(study_dir, Config.from_dict(far))
    assert outside == 1 and "| 0.9 |" in table and "**no**" in table
    text = study_report.study_markdown(study_dir, run_config=Config.from_dict(far))
    assert "1 of its 2 searched parameters lies outside" in text and "| this run |" in text
    assert "| this run |" not in study_report.study_markdown(study_dir)  # no run, no table
    assert "Outside the searched space" not in text  # only a searched value differs
    # A field the study held fixed, changed in the run, is named with the base's value.
    deeper = Config.from_dict(best.to_dict() | {"blocks_per_stage": 2, "zoom": 0.15})
    text = study_report.study_markdown(study_dir, run_config=deeper)
    assert "Outside the searched space" in text
    assert "`blocks_per_stage` 2 (the base's 1)" in text and "`zoom` 0.15 (the base's 0.3)" in text


def test_resume_with_another_setup_is_refused(resumed_study, synthetic_dir, synthetic_dataset):
    study_dir, _, _, _ = resumed_study
    with pytest.raises(StudyMismatchError, match="margin"):
        tiny_study("tiny", tiny_config(synthetic_dir, margin=0.3), study_dir, 3, synthetic_dataset)
    with pytest.raises(StudyMismatchError, match="trial_minutes"):
        tiny_study("tiny", tiny_config(synthetic_dir), study_dir, 3, synthetic_dataset, trial_minutes=5)
    with pytest.raises(StudyMismatchError, match="holds study 'tiny'"):
        tiny_study("other", tiny_config(synthetic_dir), study_dir, 3, synthetic_dataset)


# --- pruning, budget, interrupted trials ----------------------------------------------------------

def test_trial_below_the_threshold_is_pruned_after_its_first_epoch(tmp_path, synthetic_dir,
                                                                   synthetic_dataset):
    # No AUC can reach 1.1: the pruner stops the trial after the first reported epoch.
    summary = tiny_study("pruned", tiny_config(synthetic_dir), tmp_path, 1, synthetic_dataset,
                         pruner=optuna.pruners.ThresholdPruner(lower=1.1))
    assert summary["trials_pruned"] == 1 and summary["trials_complete"] == 0
    assert summary["best_trial"] is None and not (tmp_path / "best_config.json").exists()
    run_dir = tmp_path / "trials" / "0000"
    record = json.loads((run_dir / "trial.json").read_text())
    assert record["state"] == "PRUNED" and record["pruned_at_epoch"] == 1
    assert len(rundir.read_history(run_dir)) == 1  # the second epoch never ran


class _FakeTrial:
    number = 0

    def __init__(self, prune_after=None):
        self.reported, self.prune_after = {}, prune_after

    def report(self, value, step):
        self.reported[step] = value

    def should_prune(self):
        return self.prune_after is not None and len(self.reported) >= self.prune_after


class _FakeModel:
    stop_training = False


def _watched(watcher):
    watcher.set_model(_FakeModel())
    return watcher


def test_watcher_stops_when_the_time_budget_is_spent():
    within = _watched(_TrialWatcher(_FakeTrial(), budget_seconds=3600))
    within.on_train_batch_end(0)
    assert not within.model.stop_training and not within.budget_cut
    spent = _watched(_TrialWatcher(_FakeTrial(), budget_seconds=0))
    spent.on_train_batch_end(0)
    assert spent.model.stop_training and spent.budget_cut
    unlimited = _watched(_TrialWatcher(_FakeTrial(), budget_seconds=float("inf")))
    unlimited.on_train_batch_end(0)
    assert not unlimited.model.stop_training


def test_watcher_reports_each_epoch_and_stops_when_pruned():
    trial = _FakeTrial(prune_after=2)
    watcher = _watched(_TrialWatcher(trial, budget_seconds=float("inf")))
    watcher.on_epoch_end(0, dict(val_auc=0.6))
    assert trial.reported == {0: 0.6} and not watcher.model.stop_training
    watcher.on_epoch_end(1, dict(val_auc=0.7))
    assert watcher.model.stop_training and watcher.pruned_at == 2


def test_queued_trial_resumes_the_interrupted_training(tmp_path, synthetic_dir, synthetic_dataset):
    base = tiny_config(synthetic_dir)
    study_dir = rundir.StudyDir(tmp_path)
    study = optuna.create_study(study_name="resume", storage=study_dir.storage_url,
                                direction="maximize")
    interrupted = study.ask()
    params = suggest(interrupted, TINY_SPACE)
    with pytest.raises(Interrupt):
        train(trial_config(base, params), study_dir.trial_dir(0), dataset=synthetic_dataset,
              progress=False, callbacks=[KillAfterEpoch(1)])
    first_epoch = rundir.read_history(study_dir.trial_dir(0))
    assert len(first_epoch) == 1

    # The process died inside trial 0: it is still RUNNING in the storage.
    summary = tiny_study("resume", base, tmp_path, 1, synthetic_dataset)
    assert summary["trials_complete"] == 1 and summary["best_trial"] == 1
    assert summary["trials_failed"] == 1 and summary["trials_running"] == 0
    stale, resumed = load_study(tmp_path).get_trials()
    assert stale.state == TrialState.FAIL
    assert resumed.user_attrs[REQUEUED_FROM] == 0 and resumed.params == interrupted.params
    adopted = study_dir.trial_dir(1)
    assert not study_dir.trial_dir(0).exists()
    history = rundir.read_history(adopted)
    assert len(history) == 2 and _numbers(history[0]) == _numbers(first_epoch[0])  # not trained again
    assert resumed.intermediate_values.keys() == {0, 1}  # the pruner saw both epochs


def test_bad_arguments_are_refused_with_one_line(tmp_path, synthetic_dir):
    with pytest.raises(ValueError, match="trials"):
        run_study("s", tiny_config(synthetic_dir), study_dir=tmp_path, trials=0, trial_minutes=1)
    with pytest.raises(ValueError, match="trial_minutes"):
        run_study("s", tiny_config(synthetic_dir), study_dir=tmp_path, trials=1, trial_minutes=-1)
    with pytest.raises(FileNotFoundError, match="no study here"):
        study_summary(tmp_path / "nothing")


def _numbers(row):
    return {k: v for k, v in row.items() if v == v}  # NaN (no accuracy in a triplet epoch) != NaN


# --- the search space (no training) ----------------------------------------------------------------

@pytest.mark.parametrize("profile", ["smoke", "cpu"])
def test_every_point_of_the_default_space_is_a_valid_config(profile):
    base = Config.from_profile(profile)
    classes = 8 if profile == "smoke" else 150
    space = search_space(base, train_classes=classes)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(60):
        trial = study.ask()
        config = trial_config(base, suggest(trial, space))
        study.tell(trial, 0.5)
        assert config.warmup_epochs + config.epochs == base.warmup_epochs + base.epochs
        assert config.epochs >= 1
        assert config.classes_per_batch * config.images_per_class == \
            base.classes_per_batch * base.images_per_class
        assert 2 <= config.classes_per_batch <= classes
        if config.warmup_head == "normface":
            assert config.warmup_margin == 0


def test_space_follows_the_base_config():
    names = [d.name for d in search_space(Config.from_profile("cpu"), train_classes=150)]
    for name in ("learning_rate", "finetune_lr_ratio", "lr_schedule", "warmup_share", "margin",
                 "warmup_head", "warmup_margin", "weight_decay", "embedding_dim", "width",
                 "images_per_class", "image_size", "warmup_scale", "label_smoothing", "ema_decay",
                 "zoom", "rotation", "translation", "blocks_per_stage"):
        assert name in names
    resnet = [d.name for d in search_space(Config.from_profile("cpu", backbone="resnet50"))]
    assert not {"width", "stem_stride", "blocks_per_stage"} & set(resnet)  # compact-backbone knobs only
    one_epoch = Config.from_profile("smoke", epochs=1, warmup_epochs=0)
    assert "warmup_share" not in [d.name for d in search_space(one_epoch)]
    (k,) = [d for d in search_space(Config.from_profile("smoke"), train_classes=8)
            if d.name == "images_per_class"]
    assert k.choices == (4, 8)  # batch 24: K=2 would need 12 classes per batch, only 8 train


def test_trial_config_maps_relative_params():
    base = Config.from_profile("cpu")  # 17 epochs in all, 64 x 2 batches
    config = trial_config(base, dict(learning_rate=2e-3, finetune_lr_ratio=0.5, warmup_share=0.5,
                                     images_per_class=8, warmup_head="normface"))
    assert config.finetune_learning_rate == pytest.approx(1e-3)
    assert (config.warmup_epochs, config.epochs) == (9, 8)  # 8.5 rounds half up
    assert (config.classes_per_batch, config.images_per_class) == (16, 8)
    assert trial_config(base, dict(warmup_share=0.9)).epochs >= 1


def test_space_values_invert_trial_config():
    """A config read back in the space's terms gives the params that made it (the warm-up share is
    exact here: 0.3 of 10 epochs), and conditional dimensions whose condition fails are left out."""
    base = Config.from_profile("cpu", warmup_epochs=5, epochs=5)
    params = dict(learning_rate=4e-3, finetune_lr_ratio=0.25, lr_schedule="linear", warmup_share=0.3,
                  margin=0.2, warmup_head="cosface", warmup_margin=0.1, warmup_scale=16.0,
                  label_smoothing=0.1, triplet_softmax_weight=0.5, optimizer="adamw",
                  weight_decay=1e-3, ema_decay=0.99, embedding_dim=256, width=32,
                  images_per_class=4, image_size=48, stem_stride=1, warmup_image_size=32,
                  zoom=0.1, rotation=0.05, translation=0.15, blocks_per_stage=2)
    assert set(params) == {d.name for d in search_space()}  # every dimension is checked
    values = space_values(trial_config(base, params))
    assert values.keys() == params.keys()
    for name, value in params.items():
        assert values[name] == (pytest.approx(value) if isinstance(value, float) else value), name
    plain = space_values(Config.from_profile("cpu", warmup_head="normface", warmup_margin=0.0,
                                             optimizer="adam", finetune_learning_rate=0.0,
                                             warmup_epochs=12, epochs=5))
    assert "warmup_margin" not in plain and "weight_decay" not in plain
    assert plain["finetune_lr_ratio"] == 1.0  # 0 means "the warm-up's rate"
    assert plain["warmup_share"] == pytest.approx(12 / 17)


def test_search_space_rows_are_a_table():
    rows = search_space_rows()
    assert {"parameter", "kind", "values", "scale", "when", "sets"} <= set(rows[0])
    by_name = {r["parameter"]: r for r in rows}
    assert by_name["learning_rate"]["scale"] == "log"
    assert by_name["warmup_margin"]["when"] == "warmup_head = cosface"
    assert by_name["margin"]["values"] == "0.05 - 0.5"
    assert CATEGORICAL == by_name["embedding_dim"]["kind"]
    assert by_name["lr_schedule"]["values"] == "cosine, linear, onecycle, constant"
    assert by_name["label_smoothing"]["values"] == "0 - 0.2 (step 0.05)"
    assert by_name["ema_decay"]["values"] == "0.0, 0.99, 0.999"
    assert any("progressive resizing" in reason for _, reason in NOT_YET_SEARCHABLE)
    assert by_name["warmup_image_size"]["values"] == "0, 32, 48"


def test_a_trial_without_warmup_or_at_one_size_does_not_resize():
    base = Config.from_profile("cpu")  # 48 px
    assert trial_config(base, dict(warmup_image_size=32)).warmup_image_size == 32
    assert trial_config(base, dict(warmup_image_size=48)).warmup_image_size == 0
    assert trial_config(base, dict(warmup_image_size=32, warmup_share=0.0)).warmup_image_size == 0


def test_a_budgeted_base_makes_each_trial_a_budgeted_run(tmp_path, synthetic_dir, synthetic_dataset,
                                                         monkeypatch):
    """With a time budget in the base (the cpu profile), a trial plans its schedule for its own
    minutes (so it ends at zero when the trial ends) instead of the base's budget."""
    from tinymatch import tune
    from tinymatch.train import TrainResult

    seen = []

    def fake_train(config, run_dir, **kwargs):  # what best_config.json is read from
        seen.append(config)
        run_dir.mkdir(parents=True, exist_ok=True)
        config.save(run_dir / "config.json")
        return TrainResult(run_dir, [], 0.5)

    monkeypatch.setattr(tune, "train", fake_train)
    base = tiny_config(synthetic_dir, steps_per_epoch=0, time_budget_minutes=45.0)
    tiny_study("budgeted", base, tmp_path, 1, synthetic_dataset, trial_minutes=2.0)
    assert seen[0].time_budget_minutes == pytest.approx(tune.TRIAL_BUDGET_SHARE * 2.0)
    assert seen[0].steps_per_epoch == 0
