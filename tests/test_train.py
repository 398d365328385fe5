"""train(): a smoke run fills the run dir, resumes after an interruption, skips a finished run."""

import csv
import shutil

import keras
import numpy as np
import pytest
from interrupts import Interrupt, KillAfterEpoch

from tinymatch import callbacks as callbacks_module
from tinymatch import losses, rundir
from tinymatch.config import Config
from tinymatch.model import load_model, siamese_threshold
from tinymatch.model_files import store_weights_at_half_precision
from tinymatch.rundir import RunDir, RunLockedError, read_history
from tinymatch.train import ConfigMismatchError, TrainingFailedError, _optimizer, is_finished, train

RUN_FILES = ("config", "history", "model", "siamese", "split", "training", "environment")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, synthetic_dir):
    """One smoke training, interrupted in epoch 2 and resumed (shared by the tests below)."""
    config = Config.from_profile("smoke", data=str(synthetic_dir), epochs=2, warmup_epochs=1)
    run_dir = tmp_path_factory.mktemp("run")
    with pytest.raises(Interrupt):
        train(config, run_dir, progress=False, callbacks=[KillAfterEpoch(1)])
    interrupted = read_history(run_dir)
    result = train(config, run_dir, progress=False)
    return config, run_dir, interrupted, result


def test_interrupted_run_kept_its_completed_epochs(finished_run):
    _, run_dir, interrupted, _ = finished_run
    assert [row["epoch"] for row in interrupted] == [1]
    assert (run_dir / "checkpoints" / "last" / "training.keras").is_file()


def test_resume_continues_at_the_next_epoch(finished_run):
    config, run_dir, interrupted, result = finished_run
    history = read_history(run_dir)
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert history[0] == interrupted[0]  # the first epoch was not redone
    assert [row["phase"] for row in history] == ["warmup", "triplet", "triplet"]
    assert result.history[-1]["epoch"] == 3


def test_run_dir_has_every_output(finished_run):
    _, run_dir, _, result = finished_run
    for name in RUN_FILES:
        assert getattr(RunDir(run_dir), name).is_file(), name
    assert any((run_dir / "tensorboard").rglob("events.out.tfevents*"))
    assert 0.0 <= result.best_val_auc <= 1.0


def test_history_has_mining_health_columns(finished_run):
    _, run_dir, _, _ = finished_run
    with (run_dir / "history.csv").open() as handle:
        columns = next(csv.reader(handle))
    for column in ("loss", "active_fraction", "mean_positive_distance", "mean_negative_distance",
                   "val_auc", "lr", "seconds"):
        assert column in columns


def test_saved_models_reload(finished_run):
    _, run_dir, _, _ = finished_run
    embedding = load_model(run_dir / "model.keras")
    siamese = load_model(run_dir / "siamese.keras")
    assert embedding.output_shape[-1] == Config.from_profile("smoke").embedding_dim
    assert siamese_threshold(siamese) > 0
    # The archives are deflated (smaller committed reference models), and keras reads them.
    import zipfile

    with zipfile.ZipFile(run_dir / "model.keras") as archive:
        assert {m.compress_type for m in archive.infolist()} == {zipfile.ZIP_DEFLATED}
    assert not list(run_dir.glob(".*.tmp*")) and not list(run_dir.glob(".*.keras"))


def test_finished_run_is_skipped_and_other_configs_refused(finished_run):
    config, run_dir, _, _ = finished_run
    assert is_finished(run_dir, config)
    assert is_finished(run_dir, config.replace(bootstrap_samples=7))  # evaluation-only field
    assert not is_finished(run_dir, config.replace(epochs=5))
    stamp = (run_dir / "model.keras").stat().st_mtime_ns
    train(config, run_dir, progress=False)
    assert (run_dir / "model.keras").stat().st_mtime_ns == stamp
    with pytest.raises(ConfigMismatchError, match="epochs"):
        train(config.replace(epochs=5), run_dir, progress=False)


def test_cli_train_writes_a_run(tmp_path, synthetic_dir, finished_run):
    from tinymatch.cli import main

    config, run_dir, _, _ = finished_run
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    config_file = tmp_path / "config.json"
    config.save(config_file)
    # Same config, finished run: the command returns at once without training.
    assert main(["-q", "train", "--config", str(config_file), "--out", str(copy)]) == 0


def test_optimizer_schedule_peaks_at_the_requested_rate():
    config = Config.from_profile("smoke", learning_rate=1e-3)
    # The linear warm-up starts at a tenth of the peak.
    finetune = _optimizer(config, total_steps=100, peak_learning_rate=2e-4).learning_rate
    assert float(np.asarray(finetune)) == pytest.approx(2e-5)
    default = _optimizer(config, total_steps=100).learning_rate
    assert float(np.asarray(default)) == pytest.approx(1e-4)


@pytest.mark.parametrize("weight_decay, expected", [(0.0, 1.0), (0.05, 1 - 1e-4 * 0.05)])
def test_sgd_takes_the_configured_weight_decay(weight_decay, expected):
    """SGD's decay is Keras' decoupled one: with a zero gradient, one step at rate r shrinks each
    weight by r x decay (the warm-up's first rate is a tenth of the peak), and none without it."""
    import keras

    config = Config.from_profile("smoke", optimizer="sgd", learning_rate=1e-3,
                                 weight_decay=weight_decay)
    optimizer = _optimizer(config, total_steps=100)
    weight = keras.Variable(np.ones(3, "float32"))
    optimizer.apply_gradients([(np.zeros(3, "float32"), weight)])
    np.testing.assert_allclose(np.asarray(weight), expected, rtol=1e-6)


def test_one_input_pipeline_per_phase_and_flip_averaged_outputs(tmp_path, synthetic_dir, monkeypatch):
    """Epochs of one phase share a fit and an input iterator (destroying a tf.data iterator could
    stall for a minute), and the history still has one row per epoch."""
    from tinymatch import data

    created = []
    original = data.pk_dataset

    def counting_pk_dataset(*args, **kwargs):
        if kwargs.get("repeat", True):
            created.append(kwargs.get("seed"))
        return original(*args, **kwargs)

    monkeypatch.setattr(data, "pk_dataset", counting_pk_dataset)
    config = Config.from_profile("smoke", data=str(synthetic_dir), warmup_epochs=2, epochs=3,
                                 steps_per_epoch=2, early_stopping_patience=0, test_time_flip=True)
    train(config, tmp_path / "run", progress=False)
    history = read_history(tmp_path / "run")
    assert [row["epoch"] for row in history] == [1, 2, 3, 4, 5]
    assert [row["phase"] for row in history] == ["warmup"] * 2 + ["triplet"] * 3
    assert all(row["seconds"] > 0 for row in history)
    assert len(created) == 2  # one per phase, not one per epoch
    # test_time_flip: the saved embedding and the Siamese model see an image and its mirror alike.
    images = np.random.default_rng(3).uniform(0, 255, (3, 64, 64, 3)).astype(np.float32)
    embedding = load_model(tmp_path / "run" / "model.keras")
    np.testing.assert_allclose(np.asarray(embedding(images)), np.asarray(embedding(images[:, :, ::-1])),
                               atol=1e-5)
    siamese = load_model(tmp_path / "run" / "siamese.keras")
    distance = np.asarray(siamese([images, images[:, :, ::-1]])["distance"])
    np.testing.assert_allclose(distance, 0.0, atol=1e-3)


class _StopTraining(keras.callbacks.Callback):
    """A user's callback that ends training (e.g. a stop button in a notebook)."""

    def on_epoch_end(self, epoch, logs=None):
        self.model.stop_training = True


def test_a_callback_can_stop_training(tmp_path, synthetic_dir):
    config = Config.from_profile("smoke", data=str(synthetic_dir), warmup_epochs=2, epochs=2,
                                 steps_per_epoch=2, early_stopping_patience=0)
    result = train(config, tmp_path / "run", progress=False, callbacks=[_StopTraining()])
    assert [row["epoch"] for row in read_history(tmp_path / "run")] == [1]
    assert (tmp_path / "run" / "siamese.keras").is_file() and result.history[-1]["epoch"] == 1


def test_early_stopping_judges_the_triplet_phase_by_its_own_best(tmp_path, synthetic_dir, monkeypatch):
    """The triplet phase restarts the learning rate and first loses val AUC: it is stopped for not
    improving on its own best, not for staying below the warm-up's best (the model kept is still
    the best of the whole run)."""
    import json

    scripted = iter([0.80, 0.90, 0.50, 0.60, 0.55, 0.54, 0.70])  # warm-up 2 epochs, triplet 5
    monkeypatch.setattr(callbacks_module, "val_auc", lambda *args, **kwargs: next(scripted))
    config = Config.from_profile("smoke", data=str(synthetic_dir), warmup_epochs=2, epochs=5,
                                 steps_per_epoch=1, early_stopping_patience=2)
    train(config, tmp_path / "run", progress=False)
    history = read_history(tmp_path / "run")
    assert [row["val_auc"] for row in history] == pytest.approx([0.80, 0.90, 0.50, 0.60, 0.55, 0.54])
    summary = json.loads((tmp_path / "run" / "training.json").read_text())
    assert summary["stopped_early"] and summary["best_epoch"] == 2


def test_mixed_precision_on_a_cpu_trains_in_bfloat16(tmp_path, synthetic_dir):
    """CPUs have no fast float16: mixed precision means bfloat16 there; embeddings stay float32."""
    import json

    config = Config.from_profile("smoke", data=str(synthetic_dir), warmup_epochs=1, epochs=1,
                                 steps_per_epoch=2, early_stopping_patience=0, mixed_precision=True)
    train(config, tmp_path / "run", progress=False)
    summary = json.loads((tmp_path / "run" / "training.json").read_text())
    assert summary["dtype_policy"] == "mixed_bfloat16"
    assert keras.mixed_precision.global_policy().name == "float32"  # restored afterwards
    embedding = load_model(tmp_path / "run" / "model.keras")
    images = np.random.default_rng(4).uniform(0, 255, (3, 64, 64, 3)).astype(np.float32)
    vectors = np.asarray(embedding(images))
    assert vectors.dtype == np.float32 and np.all(np.isfinite(vectors))
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_auto_precision_times_both_and_a_resumed_run_keeps_the_choice(tmp_path, synthetic_dir, monkeypatch):
    """mixed_precision="auto" times a few steps in float32 and in bfloat16 before training, trains
    in the chosen one, records both timings, and a resumed run keeps the checkpoint's precision
    without timing again."""
    import json

    from tinymatch import train as train_module

    timed = []

    def choose_mixed(step_seconds):
        timed.append(dict(step_seconds))
        return "mixed_bfloat16"  # (what the machine would choose is up to the machine)

    monkeypatch.setattr(train_module, "choose_precision", choose_mixed)
    config = Config.from_profile("smoke", data=str(synthetic_dir), warmup_epochs=1, epochs=1,
                                 steps_per_epoch=2, early_stopping_patience=0, mixed_precision="auto")
    run_dir = tmp_path / "run"
    with pytest.raises(Interrupt):
        train(config, run_dir, progress=False, callbacks=[KillAfterEpoch(1)])
    assert keras.mixed_precision.global_policy().name == "float32"  # restored after the kill too
    assert len(timed) == 1 and sorted(timed[0]) == ["float32", "mixed_bfloat16"]
    assert all(seconds > 0 for seconds in timed[0].values())

    def must_not_time(step_seconds):
        raise AssertionError("a resumed run timed the precisions again")

    monkeypatch.setattr(train_module, "choose_precision", must_not_time)
    train(config, run_dir, progress=False)
    summary = json.loads((run_dir / "training.json").read_text())
    assert summary["finished"] and summary["dtype_policy"] == "mixed_bfloat16"
    assert summary["precision_timing"]["chosen"] == "mixed_bfloat16"
    rounds = summary["precision_timing"]["rounds"]
    assert 1 <= len(rounds["float32"]) == len(rounds["mixed_bfloat16"]) <= train_module.PRECISION_TIMING_ROUNDS
    assert {k: min(v) for k, v in rounds.items()} == pytest.approx(timed[0], abs=1e-4)  # the fastest round
    assert summary["precision_timing"]["step_seconds"] == pytest.approx(timed[0], abs=1e-4)
    assert keras.mixed_precision.global_policy().name == "float32"


@pytest.mark.parametrize("seconds, chosen", [
    ({"float32": 0.255, "mixed_bfloat16": 0.211}, "mixed_bfloat16"),  # AMD Zen 4: 1.21x
    ({"float32": 0.200, "mixed_bfloat16": 0.189}, "mixed_bfloat16"),  # just over the required 5%
    ({"float32": 0.200, "mixed_bfloat16": 0.195}, "float32"),  # within a timing's noise
    ({"float32": 0.180, "mixed_bfloat16": 0.990}, "float32"),  # emulated bfloat16: 5.5x slower
    ({"mixed_float16": 0.05, "float32": 0.10}, "mixed_float16"),  # a GPU
])
def test_choose_precision_takes_the_mixed_policy_only_when_clearly_faster(seconds, chosen):
    from tinymatch.train import choose_precision

    assert choose_precision(seconds) == chosen


def test_choose_precision_names_what_it_missed():
    from tinymatch.train import choose_precision

    with pytest.raises(ValueError, match="float32 and one mixed policy"):
        choose_precision({"mixed_bfloat16": 0.1})
    with pytest.raises(ValueError, match="float32 and one mixed policy"):
        choose_precision({"float32": 0.1, "mixed_bfloat16": 0.1, "mixed_float16": 0.1})


def test_half_precision_weights_keep_the_models_working(finished_run, tmp_path):
    from tinymatch.cli import main

    _, run_dir, _, _ = finished_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    images = np.random.default_rng(5).uniform(0, 255, (4, 64, 64, 3)).astype(np.float32)
    before = np.asarray(load_model(copy / "model.keras")(images))
    threshold = siamese_threshold(load_model(copy / "siamese.keras"))
    assert main(["-q", "half-precision", str(copy)]) == 0
    embedding = load_model(copy / "model.keras")
    for weight in embedding.weights:
        values = np.asarray(weight.numpy())
        np.testing.assert_array_equal(values, values.astype(np.float16).astype(np.float32))
    np.testing.assert_allclose(np.asarray(embedding(images)), before, atol=5e-3)
    assert siamese_threshold(load_model(copy / "siamese.keras")) == threshold
    (copy / "metrics.json").write_text("{}")
    with pytest.raises(ValueError, match="metrics.json"):
        store_weights_at_half_precision(copy)


def test_cosface_warmup_resumes_from_its_checkpoint(tmp_path, synthetic_dir):
    """The CosFace head and its loss are registered: a run killed after its first warm-up epoch
    reloads the compiled checkpoint (cosine classifier, margin loss, optimizer) and goes on."""
    import json

    config = Config.from_profile("smoke", data=str(synthetic_dir), warmup_epochs=2, epochs=1,
                                 steps_per_epoch=2, early_stopping_patience=0,
                                 warmup_head="cosface", warmup_margin=0.2, mixed_precision=True)
    run_dir = tmp_path / "run"
    with pytest.raises(Interrupt):
        train(config, run_dir, progress=False, callbacks=[KillAfterEpoch(1)])
    checkpoint = load_model(run_dir / "checkpoints" / "last" / "training.keras", compile=True)
    assert type(checkpoint.get_layer("classifier")).__name__ == "CosineClassifier"
    assert checkpoint.loss.margin == pytest.approx(0.2)
    train(config, run_dir, progress=False)
    history = read_history(run_dir)
    assert [row["phase"] for row in history] == ["warmup", "warmup", "triplet"]
    assert all(0.0 <= row["accuracy"] <= 1.0 for row in history[:2])
    assert json.loads((run_dir / "training.json").read_text())["finished"]


def test_budget_recipe_options_train_and_resume(tmp_path, synthetic_dir):
    """Label smoothing, the warm-up's logit scale, a linear schedule and EMA weights: a run killed
    after its first epoch reloads its checkpoint (schedule, smoothed loss, EMA averages) and
    finishes; the kept model is the EMA model."""
    import json

    config = Config.from_profile("smoke", data=str(synthetic_dir), warmup_epochs=1, epochs=2,
                                 steps_per_epoch=3, early_stopping_patience=0, label_smoothing=0.1,
                                 warmup_scale=8.0, lr_schedule="linear", ema_decay=0.9)
    run_dir = tmp_path / "run"
    with pytest.raises(Interrupt):
        train(config, run_dir, progress=False, callbacks=[KillAfterEpoch(1)])
    checkpoint = load_model(run_dir / "checkpoints" / "last" / "training.keras", compile=True)
    assert checkpoint.loss.label_smoothing == pytest.approx(0.1)
    assert float(checkpoint.get_layer("logit_scale").scale) == 8.0
    assert checkpoint.optimizer.use_ema and checkpoint.optimizer.ema_momentum == pytest.approx(0.9)
    assert type(checkpoint.optimizer._learning_rate).__name__ == "LinearBudgetSchedule"
    train(config, run_dir, progress=False)
    history = read_history(run_dir)
    assert [row["phase"] for row in history] == ["warmup", "triplet", "triplet"]
    assert history[-1]["lr"] == pytest.approx(0.0, abs=1e-9)  # the schedule ends at zero
    summary = json.loads((run_dir / "training.json").read_text())
    assert summary["finished"]
    # model.keras holds the EMA weights, not the checkpoint's raw ones.
    embedding = load_model(run_dir / "checkpoints" / "last" / "training.keras").get_layer("embedding")
    kept = load_model(run_dir / "model.keras")
    if summary["best_epoch"] == len(history):
        raw = embedding.get_layer("projection").get_weights()[0]
        assert not np.allclose(kept.get_layer("projection").get_weights()[0], raw)


class _ClassifierRecorder(keras.callbacks.Callback):
    """The classifier's weights when each `fit` begins and ends (None: that model has none)."""

    def __init__(self):
        super().__init__()
        self.begins, self.ends = [], []

    def _classifier(self):
        try:
            return [np.array(w) for w in self.model.get_layer("classifier").get_weights()]
        except ValueError:
            return None

    def on_train_begin(self, logs=None):
        self.begins.append(self._classifier())

    def on_train_end(self, logs=None):
        self.ends.append(self._classifier())


def _assert_same_weights(first, second):
    assert first is not None and second is not None
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("resumed_at_the_phase_change", [False, True])
def test_triplet_phase_can_keep_the_warmup_classifier(tmp_path, synthetic_dir,
                                                       resumed_at_the_phase_change):
    """triplet_softmax_weight > 0: the triplet phase trains on both losses, starting from the
    warm-up's classifier, in one session and when resumed from the warm-up's checkpoint."""
    config = Config.from_profile("smoke", data=str(synthetic_dir), warmup_epochs=1, epochs=2,
                                 steps_per_epoch=2, early_stopping_patience=0,
                                 triplet_softmax_weight=4.0)  # CE x 4 >> triplet loss
    run_dir = tmp_path / "run"
    recorder = _ClassifierRecorder()
    if resumed_at_the_phase_change:
        with pytest.raises(Interrupt):  # killed in the first triplet epoch
            train(config, run_dir, progress=False, callbacks=[recorder, KillAfterEpoch(1)])
    train(config, run_dir, progress=False, callbacks=[recorder])
    _assert_same_weights(recorder.begins[-1], recorder.ends[0])  # triplet start == warm-up end
    checkpoint = load_model(run_dir / "checkpoints" / "last" / "training.keras", compile=True)
    assert sorted(checkpoint.loss) == ["classifier", "embedding"]
    history = read_history(run_dir)
    assert [row["phase"] for row in history] == ["warmup", "triplet", "triplet"]
    assert all(0.0 <= row["accuracy"] <= 1.0 for row in history)  # the head's accuracy throughout
    # The triplet rows log the triplet part (bounded by margin + max distance), not the sum with CE.
    assert all(row["loss"] <= config.margin + 2.0 for row in history[1:])


def test_the_classifier_survives_the_end_of_the_frozen_epochs(tmp_path, synthetic_dir):
    """Unfreezing the backbone rebuilds the warm-up model; its classifier goes on where it was."""
    config = Config.from_profile("smoke", data=str(synthetic_dir), warmup_epochs=2, epochs=1,
                                 freeze_backbone_epochs=1, steps_per_epoch=2,
                                 early_stopping_patience=0)
    recorder = _ClassifierRecorder()
    train(config, tmp_path / "run", progress=False, callbacks=[recorder])
    assert len(recorder.begins) == 3  # frozen warm-up, warm-up, triplet
    _assert_same_weights(recorder.begins[1], recorder.ends[0])
    assert recorder.begins[2] is None  # the triplet loss alone: no classifier


# --- faults: non-finite loss, leftovers of a killed run, two runs into one directory ---------------

class _PoisonWeights(keras.callbacks.Callback):
    """Sets a weight to NaN at the first batch of the given (0-based) epoch: the loss diverges."""

    def __init__(self, epoch):
        super().__init__()
        self.target, self.epoch = epoch, -1

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if self.epoch == self.target and batch == 0:
            weight = self.model.trainable_weights[0]
            weight.assign(np.full(weight.shape, np.nan, weight.dtype))


def test_a_non_finite_loss_fails_the_run_and_keeps_the_last_good_epoch(tmp_path, synthetic_dir):
    import json

    config = Config.from_profile("smoke", data=str(synthetic_dir), warmup_epochs=1, epochs=2,
                                 steps_per_epoch=2, early_stopping_patience=0)
    run_dir = tmp_path / "run"
    with pytest.raises(TrainingFailedError, match="epoch 2, step 1"):
        train(config, run_dir, progress=False, callbacks=[_PoisonWeights(1)])
    paths = RunDir(run_dir)
    summary = json.loads(paths.training.read_text())
    assert summary["finished"] is False and "nan" in summary["failed"]
    assert not is_finished(run_dir, config)
    assert [row["epoch"] for row in read_history(run_dir)] == [1]  # the failed epoch is not recorded
    assert json.loads(paths.checkpoint_state.read_text())["epoch"] == 1
    for path in (paths.model, paths.checkpoint_model):  # neither overwritten by the NaN weights
        weights = load_model(path).get_weights()
        assert all(np.all(np.isfinite(w)) for w in weights), path


class _NaNLoss(keras.losses.Loss):
    def call(self, y_true, y_pred):
        return keras.ops.mean(y_pred) * float("nan")


def test_cli_reports_a_diverged_run_in_one_line(tmp_path, synthetic_dir, monkeypatch, capsys):
    from tinymatch.cli import main

    monkeypatch.setattr(losses, "make_loss", lambda config: _NaNLoss())
    config_file = tmp_path / "config.json"
    Config.from_profile("smoke", data=str(synthetic_dir), warmup_epochs=0, epochs=1,
                        steps_per_epoch=2).save(config_file)
    assert main(["-q", "train", "--config", str(config_file), "--out", str(tmp_path / "run")]) != 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "training failed" in lines[0] and "nan" in lines[0], lines
    assert not RunDir(tmp_path / "run").model.exists()  # nothing good to keep


def test_a_rerun_removes_what_a_killed_run_left(finished_run, tmp_path):
    config, run_dir, _, _ = finished_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    leftovers = [copy / ".model.keras.k3j2.tmp", copy / ".siamese.keras.x8.tmp.keras",
                 copy / ".history.csv.a1.tmp"]
    for path in leftovers:
        path.write_bytes(b"")
    half_checkpoint = copy / "checkpoints" / ".last.q9.tmp"
    half_checkpoint.mkdir()
    (half_checkpoint / "training.keras").write_bytes(b"")
    train(config, copy, progress=False)  # finished: returns at once, but cleans up first
    assert not any(path.exists() for path in leftovers) and not half_checkpoint.exists()
    assert RunDir(copy).model.is_file() and RunDir(copy).checkpoint_model.is_file()


def test_model_file_temporaries_match_the_leftover_pattern(tmp_path, monkeypatch):
    """A writer killed inside Keras' save leaves `.<name>.<random>.tmp*` names only."""
    from tinymatch import model_files

    seen = []
    original = keras.Model.save

    def recording_save(self, path, *args, **kwargs):
        seen.append(sorted(p.name for p in tmp_path.iterdir()) + [str(path)])
        return original(self, path, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "save", recording_save)
    inputs = keras.Input((3,))
    model_files.save_model(keras.Model(inputs, keras.layers.Dense(2)(inputs)), tmp_path / "model.keras")
    written = seen[0][-1].rsplit("/", 1)[-1]
    assert written.startswith(".model.keras.") and ".tmp" in written
    assert rundir.remove_leftovers(tmp_path) == []  # nothing left once it succeeded


def test_a_second_run_into_a_busy_directory_fails_at_once(finished_run, tmp_path):
    import os
    import time

    config, run_dir, _, _ = finished_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    began = time.monotonic()
    with rundir.locked(copy):
        with pytest.raises(RunLockedError, match=f"process {os.getpid()}"):
            train(config, copy, progress=False)
    assert time.monotonic() - began < 30


def test_gpu_profile_starts_offline_on_a_cpu(tmp_path, synthetic_dir):
    """`tinymatch train --profile gpu` needs no download (from-scratch weights) and runs on a
    machine without a GPU (mirrored over the CPU, bfloat16); a few steps on the synthetic data."""
    import json

    from tinymatch.cli import main

    partial = tmp_path / "few_steps.json"  # the synthetic data's size, one step: the model is the gpu one
    partial.write_text(json.dumps(dict(
        max_classes=12, max_images_per_class=24, unseen_train_classes=8, classes_per_batch=6,
        val_fraction=0.2, test_fraction=0.2, max_positive_pairs=300, eval_batch_size=64,
        warmup_epochs=1, epochs=1, steps_per_epoch=1)))
    run_dir = tmp_path / "run"
    assert main(["-q", "train", "--profile", "gpu", "--data", str(synthetic_dir), "--config",
                 str(partial), "--out", str(run_dir)]) == 0
    paths = RunDir(run_dir)
    saved = Config.load(paths.config)
    assert saved.profile == "gpu" and saved.weights == "" and saved.strategy == "mirrored"
    summary = json.loads(paths.training.read_text())
    assert summary["finished"] and summary["dtype_policy"] == "mixed_bfloat16"
    assert json.loads(paths.environment.read_text())  # versions and hardware recorded


def test_progressive_resizing_warms_up_small_and_ends_at_full_size(tmp_path, synthetic_dir, monkeypatch):
    """warmup_image_size: the warm-up trains a 32-pixel embedding, the triplet phase a 64-pixel
    one that starts from its weights, also across a kill at the phase change; the time budget
    times both sizes; the saved models take 64x64 images."""
    import json

    from tinymatch import budget
    from tinymatch.model import backbone_of

    plan = budget.steps_per_epoch_for_budget  # the real planning, capped at 3 steps (short test)
    monkeypatch.setattr(budget, "steps_per_epoch_for_budget",
                        lambda *args, **kwargs: min(3, plan(*args, **kwargs)))

    config = Config.from_profile("smoke", data=str(synthetic_dir), warmup_epochs=1, epochs=1,
                                 steps_per_epoch=0, time_budget_minutes=10.0, warmup_image_size=32,
                                 early_stopping_patience=0)
    run_dir = tmp_path / "run"
    sides = []

    class RecordSide(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            sides.append(int(backbone_of(self.model.get_layer("embedding")).input_shape[1]))

    with pytest.raises(Interrupt):
        train(config, run_dir, progress=False, callbacks=[RecordSide(), KillAfterEpoch(1)])
    warmed = load_model(run_dir / "checkpoints" / "last" / "training.keras").get_layer("embedding")
    assert backbone_of(warmed).input_shape[1] == 32
    train(config, run_dir, progress=False, callbacks=[RecordSide()])
    # killed at the end of the triplet epoch, before its checkpoint: the resumed run builds the
    # 64-pixel model again from the warm-up's 32-pixel checkpoint
    assert sides == [32, 64, 64]
    summary = json.loads((run_dir / "training.json").read_text())
    assert summary["finished"]
    assert set(summary["calibration"]["step_seconds_by_image_size"]) == {"32", "64"}
    model = load_model(run_dir / "model.keras")
    assert model.input_shape[1:] == (64, 64, 3)
    assert model.predict(np.zeros((2, 64, 64, 3), np.float32), verbose=0).shape == (2, 16)


def test_a_resized_embedding_keeps_every_weight(synthetic_dir):
    from tinymatch.model import backbone_of
    from tinymatch.train import _Session

    config = Config.from_profile("smoke", data=str(synthetic_dir), warmup_epochs=1, epochs=1,
                                 warmup_image_size=32)
    session = _Session.__new__(_Session)
    session.config, session.on_features, session.pipeline_augmentation = config, False, None
    small = session._embedding_for(("warmup", False))
    assert backbone_of(small).input_shape[1] == 32
    assert session._embedding_for(("warmup", False), small) is small  # already that size
    large = session._embedding_for(("triplet", False), small)
    assert backbone_of(large).input_shape[1] == 64
    for a, b in zip(small.weights, large.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
