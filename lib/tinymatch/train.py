"""Training: P x K batches, triplet loss, checkpoints that survive being killed.

`train(config, run_dir)` fills a run directory (file names: `tinymatch.rundir.RunDir`):

    config.json     the configuration (a re-run with the same training key resumes or is skipped)
    environment.json  the versions and hardware of the run (`tinymatch.environment`)
    split.csv       the seeded split the model was trained and selected on
    history.csv     one row per epoch: loss, mining health, val AUC, learning rate, seconds
    model.keras     the best embedding model (by validation pair ROC AUC)
    siamese.keras   that model in a Siamese wrapper, threshold chosen on validation pairs
    training.json   summary: best epoch and AUC, threshold, epochs run, wall time, finished flag
                    (or `finished: false` and `failed`: why the run stopped without a result)
    tensorboard/    TensorBoard logs (train loss, val AUC, mining stats per epoch)
    checkpoints/    last/ = the compiled training model (optimizer state included) + state.json

Training runs in epochs of `steps_per_epoch` P x K batches. An optional classification warm-up
(`warmup_epochs`: a softmax head on the unit-norm embedding, NormFace style, or with
`warmup_head="cosface"` cosine scores to unit class centres with an additive margin) gives the triplet loss
a head start: from scratch, semi-hard mining finds few informative triplets while the embedding is
still random. `triplet_softmax_weight` keeps the classification loss on beside the triplet loss
in the triplet phase. Transfer learning can keep the backbone frozen for `freeze_backbone_epochs`;
a pretrained backbone frozen for every epoch is run once per image instead (`tinymatch.features`:
its features are cached) and only the head trains, on the cached features; model.keras is then
the full image model with the trained head in it, as in any other run.
Whenever the training model is rebuilt (a phase change, or the end of the frozen epochs), the
classifier's weights carry over to the new one if it has a classifier too. Progressive resizing
(`warmup_image_size`): the warm-up trains an embedding model built for that smaller input and the
triplet phase one built for `image_size`, with the first one's weights (the backbones have no
size-dependent weights); model.keras is whichever epoch's model was best, each taking 64x64 images.

After every epoch the checkpoint directory is replaced atomically, so killing the process at any
moment and re-running the same command continues after the last completed epoch. A run holds the
run directory's lock for its whole length (a second run into it fails at once, naming the holder)
and first removes the temporaries a killed run left behind. A loss that becomes NaN or infinite
stops the run: it is marked failed in training.json, and the last good checkpoint and best model
are kept. Under a `tf.distribute` strategy (`config.strategy`, see `tinymatch.distribute`) every
replica trains on its own P x K batch, and only the chief writes the run directory.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tinymatch import augment as augment_module
from tinymatch import budget, data, distribute, ema, features, losses, rundir, schedules
from tinymatch.callbacks import EpochBookkeeping, EpochEvaluation, StopOnNonFiniteLoss, val_auc
from tinymatch.config import Config, ConfigError
from tinymatch.environment import environment_info
from tinymatch.io_utils import TEMP_SUFFIX, atomic_path, read_json, write_json
from tinymatch.metrics import choose_threshold, pair_distances
from tinymatch.model import (CosineClassifier, backbone_of, build_embedding_model,
                             build_flip_averaged_model, build_siamese_model, load_model)
from tinymatch.model_files import save_model, store_weights_at_half_precision  # noqa: F401 (re-export)
from tinymatch.pairs import Pairs, make_pairs
from tinymatch.rundir import RunDir, read_history

VAL_SELECTION_IMAGES = 2000  # val images embedded after every epoch to pick the best checkpoint


class ConfigMismatchError(ValueError):
    """The run directory holds a training with a different configuration."""


class TrainingFailedError(ValueError):
    """The run stopped without a usable result (e.g. its loss became non-finite)."""


class WorkerLostError(ValueError):
    """Multi-worker: a peer died or restarted mid-run; this worker must be started again too."""


@dataclass
class TrainResult:
    run_dir: Path
    history: list[dict] = field(default_factory=list)
    best_val_auc: float = float("nan")


# --------------------------------------------------------------------------------------------------
# Public API

def train(config: Config, run_dir, *, dataset=None, progress: bool = True, callbacks=()) -> TrainResult:
    """Train the embedding model of `config` into `run_dir` (resuming if interrupted).

    dataset: a `tinymatch.data.Dataset` (default: `data.load_dataset_for(config)`).
    callbacks: extra Keras callbacks for every epoch's `fit` (e.g. to stop from a notebook).
    Raises `rundir.RunLockedError` when another process trains into `run_dir`, and
    `TrainingFailedError` when the loss becomes non-finite (the run is marked failed).
    """
    # First, before any other TensorFlow work: logical devices and collective ops (multi-worker)
    # can only be set up before TensorFlow initialises its runtime.
    strategy = distribute.make_strategy(config)
    run_dir = distribute.worker_dir(run_dir, strategy)  # the chief's is the run directory
    with rundir.locked(run_dir):
        rundir.remove_leftovers(run_dir)  # under the lock: whoever left them is dead
        if is_finished(run_dir, config):
            return _finished_result(run_dir)
        _check_resumable(run_dir, config)
        write_json(RunDir(run_dir).environment, environment_info())
        started = time.time()
        policy_before = keras.mixed_precision.global_policy().name
        if config.mixed_precision is True:  # ("auto" is chosen in the session, by timing)
            keras.mixed_precision.set_global_policy(mixed_precision_policy())
        try:
            keras.utils.set_random_seed(config.seed)
            session = _Session(config, run_dir, dataset, progress, list(callbacks), strategy, started)
            try:
                session.run()
            except (tf.errors.AbortedError, tf.errors.UnavailableError) as err:
                if not distribute.is_multi_worker(strategy):
                    raise
                reason = str(err.message).strip().splitlines()[0][:300]
                raise WorkerLostError(
                    f"{run_dir}: a peer worker failed or restarted ({reason}); start every stopped "
                    f"worker again with the same command: they resume from the last epoch") from None
            if session.failure:
                session.mark_failed(started)
                raise TrainingFailedError(
                    f"{run_dir}: training failed: {session.failure}; kept the last good checkpoint "
                    f"(epoch {session.state.get('epoch', 0)}) and best model")
            return session.finish(started)
        finally:
            keras.mixed_precision.set_global_policy(policy_before)


def mixed_precision_policy() -> str:
    """The Keras policy of `config.mixed_precision`: float16 on a GPU, bfloat16 on a CPU.

    CPUs have no fast float16 arithmetic; oneDNN runs bfloat16 natively only on CPUs with
    AVX512-BF16 or AMX and emulates it elsewhere, and even native it won on some CPU kinds and
    lost on others (benchmarks/README.md, "Precision"): `mixed_precision="auto"` times both.
    Variables, the loss and the unit-norm embedding stay float32 either way. A model saved from a
    mixed-precision run keeps its layers' policy, so it also infers in that precision.
    """
    return "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"


# The mixed policy must take at most this share of float32's seconds a step to be chosen by
# `mixed_precision="auto"`: rounding the activations to 8 mantissa bits is only worth a clear gain,
# and a 20-step timing moves by a few per cent between identical runs.
PRECISION_SPEEDUP_REQUIRED = 0.95
# `mixed_precision="auto"` times each policy in up to this many interleaved rounds of the
# calibration's steps and keeps each one's fastest round: on a 2-core AMD EPYC Zen 4 single rounds
# of the `cpu` profile's warm-up step ranged 0.313-0.339 s (float32) and 0.252-0.299 s (bfloat16),
# and one round chose float32 where three showed bfloat16 12-25% faster. A first round that already
# differs by PRECISION_CLEAR_RATIO (emulated bfloat16: 5.5x) decides alone.
PRECISION_TIMING_ROUNDS = 3
PRECISION_CLEAR_RATIO = 1.5


def choose_precision(step_seconds: dict[str, float]) -> str:
    """The policy `mixed_precision="auto"` trains in, from the seconds a training step took in
    "float32" and in the mixed policy (the one other key; each its fastest timing round): the
    mixed one only when it took at most PRECISION_SPEEDUP_REQUIRED of float32's time.

    Measured on the `cpu` profile's network: 1.21x faster in bfloat16 on an AMD EPYC Zen 4
    (AVX512-BF16), 5.5x slower on an AMD EPYC without it (oneDNN emulates bfloat16), 1.3x slower on
    an Intel CPU with AVX512-BF16 but no AMX (benchmarks/README.md, "Precision")."""
    mixed = [policy for policy in step_seconds if policy != "float32"]
    if "float32" not in step_seconds or len(mixed) != 1:
        raise ValueError(f"choose_precision: expected float32 and one mixed policy, got {sorted(step_seconds)}")
    fast_enough = step_seconds[mixed[0]] <= PRECISION_SPEEDUP_REQUIRED * step_seconds["float32"]
    return mixed[0] if fast_enough else "float32"


def is_finished(run_dir, config: Config) -> bool:
    """True when `run_dir` holds a finished training of a config with the same training key."""
    paths = RunDir(run_dir)
    if not all(p.is_file() for p in (paths.training, paths.config, paths.model, paths.siamese)):
        return False
    try:
        saved = Config.load(paths.config)
        finished = read_json(paths.training).get("finished", False)
    except (ValueError, FileNotFoundError):
        return False
    return bool(finished) and saved.training_key() == config.training_key()


# --------------------------------------------------------------------------------------------------
# One training session (fresh or resumed)

class _Session:
    def __init__(self, config, run_dir, dataset, progress, extra_callbacks, strategy, started=None):
        self.config = config
        self.started = time.time() if started is None else started  # (the training call's start)
        self.run_dir = Path(run_dir)
        self.paths = RunDir(run_dir)
        self.progress = progress
        self.extra_callbacks = extra_callbacks
        self.strategy = strategy
        self.failure = ""  # why the run stopped without a result (set by StopOnNonFiniteLoss)
        self.dataset = dataset if dataset is not None else data.load_dataset_for(config, progress=progress)
        # A backbone frozen throughout: its features are computed once (cached) and the head
        # trains on them; `self.inputs` is what training batches are gathered from.
        self.on_features = features.trains_on_features(config)
        if self.on_features and config.warmup_image_size not in (0, config.image_size):
            raise ConfigError(f"config.warmup_image_size={config.warmup_image_size}: a backbone "
                              "frozen for the whole run trains on features cached at image_size "
                              f"({config.image_size}); set warmup_image_size=0")
        self.feature_cache = (features.cached_features(self.dataset, config, progress=progress)
                              if self.on_features else None)
        self.inputs = self.feature_cache.features if self.on_features else self.dataset.images
        # One-time work that later runs reuse is not charged to a time budget (tinymatch.budget).
        self.cache_seconds = ((self.dataset.decode_seconds if self.dataset.decoded else 0.0)
                              + (self.feature_cache.seconds if self.on_features
                                 and self.feature_cache.computed else 0.0))
        self.fit_teardown_seconds: list[float] = []
        self.traced_epochs: set[int] = set()  # 0-based epochs that began a `fit` (they pay for tracing)
        self.budget_started: float | None = None  # time.time(); set when training starts (run)
        self._image_model = None  # feature runs: the full model that model.keras holds
        # Resuming: keep exactly the split the checkpoint was trained on.
        self.splits = rundir.run_splits(run_dir, self.dataset, config, save=True)
        config.save(self.paths.config)

        train_idx = self.splits.indices(config.protocol, "train")
        val_idx = self.splits.indices(config.protocol, "val")
        if len(train_idx) == 0 or len(val_idx) == 0:
            raise ValueError(f"config.protocol={config.protocol!r}: the split has no train or no val images")
        # pk_dataset gathers each batch from the memory map: no copy of the training images.
        self.train_indices = np.sort(np.asarray(train_idx, dtype=np.int64))
        self.train_labels = np.asarray(self.dataset.labels[self.train_indices], dtype=np.int32)
        self.val_images, self.val_labels, self.val_inputs = self._val_selection(val_idx)
        self.val_pairs = val_selection_pairs(self.val_labels, config)
        # Every replica trains on its own P x K batch (tinymatch.distribute): a step sees
        # replicas x P x K images, and the default epoch is one pass over the training images.
        self.replicas = strategy.num_replicas_in_sync
        self.global_batch = self.replicas * config.classes_per_batch * config.images_per_class
        self.total_epochs = config.warmup_epochs + config.epochs
        self.class_lookup = _class_lookup(self.train_labels)
        # XLA has no kernel for the image transform op: with jit_compile, augment in tf.data.
        self.pipeline_augmentation = (augment_module.augmentation_layer_for(config)
                                      if config.jit_compile else None)
        self.state = _load_state(run_dir)
        # A time budget's step count is measured before the first epoch (`_calibrate`) and kept
        # in the checkpoint, so a resumed run trains the steps it planned.
        if config.time_budget_minutes:
            self.steps_per_epoch = int(self.state.get("steps_per_epoch", 0))
            self.calibration = self.state.get("calibration")
            self.budget_plan = list(self.state.get("budget_plan") or (
                [dict(from_epoch=1, steps_per_epoch=self.steps_per_epoch, source="calibration",
                      step_seconds=self.calibration["step_seconds"])] if self.calibration else []))
        else:
            self.steps_per_epoch = config.steps_per_epoch or max(1, len(self.train_indices) // self.global_batch)
            self.calibration = None
            self.budget_plan = []
        self.budget_exhausted = bool(self.state.get("budget_exhausted", False))
        self.precision_timing = self.state.get("precision_timing")  # mixed_precision="auto"

    # ---- data ------------------------------------------------------------------------------------
    def _val_selection(self, val_idx):
        """(images, labels, inputs): the val images that pick the best epoch, and what the
        trained model takes of them (the images, or both views' cached features)."""
        chosen = val_selection_indices(val_idx, self.config.seed)
        images = np.asarray(self.dataset.images[chosen], dtype=np.float32)
        inputs = np.asarray(self.inputs[chosen], dtype=np.float32) if self.on_features else images
        return images, np.asarray(self.dataset.labels[chosen]), inputs

    def _batches(self, phase, epoch):
        """The input of one `fit`: a P x K batch per replica and step."""
        return distribute.distribute_batches(
            self.strategy, lambda pipeline: self._replica_batches(phase, epoch, pipeline))

    def _replica_batches(self, phase, epoch, pipeline):
        c = self.config
        # Seeded by the epoch the fit starts at: a resumed run sees fresh (and reproducible)
        # batches; each input pipeline (worker) draws its own.
        ds = data.pk_dataset(self.inputs, self.dataset.labels,
                             classes_per_batch=c.classes_per_batch,
                             images_per_class=c.images_per_class,
                             seed=distribute.pipeline_seed(c.seed + epoch, pipeline),
                             augment=(features.random_view if self.on_features
                                      else self.pipeline_augmentation),
                             repeat=True, indices=self.train_indices)
        if phase == "triplet" and not self._joint_triplet_phase():
            return ds
        lookup = tf.constant(self.class_lookup)

        def targets(images, labels):
            ids = tf.gather(lookup, labels)  # the classifier's label ids
            # With both losses, both outputs take the ids (the triplet loss only compares them).
            return images, (ids if phase == "warmup" else dict(embedding=ids, classifier=ids))

        return ds.map(targets, num_parallel_calls=tf.data.AUTOTUNE)

    def _joint_triplet_phase(self):
        return self.config.triplet_softmax_weight > 0

    def _probe_batch(self):
        """A fixed P x K batch on which the mining health is measured after every epoch."""
        ds = data.pk_dataset(self.inputs, self.dataset.labels,
                             classes_per_batch=self.config.classes_per_batch,
                             images_per_class=self.config.images_per_class,
                             seed=self.config.seed,
                             augment=features.original_view if self.on_features else None,
                             repeat=False, indices=self.train_indices)
        images, labels = next(iter(ds))
        return images.numpy(), labels.numpy()

    # ---- models (built under the strategy's scope, in `run`) --------------------------------------
    def _segment(self, epoch):
        """(phase, frozen): the optimizer is rebuilt whenever it changes."""
        phase = "warmup" if epoch < self.config.warmup_epochs else "triplet"
        return phase, epoch < self.config.freeze_backbone_epochs

    def _segment_epochs(self, segment, from_epoch=0):
        """How many epochs from 0-based `from_epoch` on belong to `segment`."""
        return sum(1 for e in range(from_epoch, self.total_epochs) if self._segment(e) == segment)

    def _build_training_model(self, embedding, segment, previous=None):
        """The compiled model of `segment`; `previous` (the last segment's training model) hands
        over its classifier when both have one (`_carry_over_classifier`)."""
        phase, frozen = segment
        c = self.config
        if not self.on_features:  # (a feature head has no backbone)
            backbone_of(embedding).trainable = not frozen
        inputs = keras.Input(embedding.input_shape[1:], name="image")
        outputs = embedding(inputs)
        loss_weights = None
        if phase == "warmup":
            outputs, loss = self._warmup_head(outputs)
            metrics = ["accuracy"]
        elif self._joint_triplet_phase():
            scores, classifier_loss = self._warmup_head(outputs)
            outputs = dict(embedding=outputs, classifier=scores)
            loss = dict(embedding=losses.make_loss(c), classifier=classifier_loss)
            loss_weights = dict(embedding=1.0, classifier=c.triplet_softmax_weight)
            metrics = dict(classifier=["accuracy"])
        else:
            loss = losses.make_loss(c)
            metrics = None
        model = keras.Model(inputs, outputs, name=f"training_{phase}")
        _carry_over_classifier(previous, model)
        total_steps = self.steps_per_epoch * self._segment_epochs(segment)
        model.compile(optimizer=_optimizer(c, total_steps, self._peak_learning_rate(segment)), loss=loss,
                      loss_weights=loss_weights, metrics=metrics, jit_compile=c.jit_compile)
        return model

    def _peak_learning_rate(self, segment) -> float:
        """After a warm-up the triplet phase fine-tunes: optionally at a lower peak LR, so the
        restarted schedule does not undo what the classifier learned."""
        c = self.config
        return (c.finetune_learning_rate if segment[0] == "triplet" and c.warmup_epochs
                and c.finetune_learning_rate else c.learning_rate)

    def _warmup_head(self, embeddings):
        return warmup_head(embeddings, int(self.class_lookup.max()) + 1, self.config)

    def _restore_or_build(self, epoch):
        """The compiled training model for `epoch`: from the checkpoint when it is the same segment."""
        segment = self._segment(epoch)
        if self.state and self.paths.checkpoint_model.is_file():
            restored = load_model(self.paths.checkpoint_model, compile=True)
            if tuple(self.state["segment"]) == segment:
                return restored, restored.get_layer("embedding")
            embedding = self._embedding_for(segment, restored.get_layer("embedding"))
        elif self.on_features:
            restored = None
            embedding = features.build_feature_head(self.config, self.inputs.shape[-1],
                                                    name="embedding")
        else:
            restored = None
            embedding = self._embedding_for(segment)
        return self._build_training_model(embedding, segment, previous=restored), embedding

    def _image_size(self, segment) -> int:
        """The network input side of `segment`: config.warmup_image_size during a warm-up that
        sets one (progressive resizing), else config.image_size."""
        if segment[0] == "warmup" and self.config.warmup_image_size:
            return self.config.warmup_image_size
        return self.config.image_size

    def _embedding_for(self, segment, embedding=None):
        """The embedding model at `segment`'s image size: `embedding` itself when it already is,
        else a new one (built at that size) with `embedding`'s weights, layer by layer. Every
        backbone is convolutional up to its global pooling, so no weight depends on the size."""
        size = self._image_size(segment)
        if embedding is not None and (self.on_features or _input_side(embedding) == size):
            return embedding
        resized = build_embedding_model(self.config.replace(image_size=size),
                                        include_augmentation=self.pipeline_augmentation is None)
        if embedding is not None:
            for layer in resized.layers:
                if layer.weights:
                    layer.set_weights(embedding.get_layer(layer.name).get_weights())
        return resized

    # ---- the loop ----------------------------------------------------------------------------------
    def run(self):
        start_epoch = self.state.get("epoch", 0)
        self.history = read_history(self.run_dir)[:start_epoch]
        self.first_epoch = len(self.history)  # epochs before this session (resumed runs)
        self.best_auc = self.state.get("best_auc", float("-inf"))
        self.best_epoch = self.state.get("best_epoch", -1)
        self.stopped_early = bool(self.state.get("stopped_early", False))
        distribute.check_workers_agree(self.strategy, start_epoch, "the epoch to resume from")
        if start_epoch >= self.total_epochs or self.stopped_early or self.budget_exhausted:
            return
        probe = self._probe_batch()
        # The budget runs from the training call's start, less one-time cache work; a resumed run
        # has also spent its finished epochs' seconds (and its calibration, when it had one).
        self.budget_started = (self.started + self.cache_seconds
                               - sum(float(row.get("seconds") or 0) for row in self.history))
        if self.calibration and self.history:
            self.budget_started -= float(self.calibration.get("calibration_seconds", 0.0))
        if self.precision_timing and self.history:
            self.budget_started -= float(self.precision_timing.get("seconds", 0.0))
        # Model, optimizer, metrics and checkpoint restore all under the strategy's scope, so
        # their variables are mirrored across replicas (the default strategy: one device).
        with self.strategy.scope():
            if self.config.mixed_precision == "auto":
                # A resumed run keeps the precision its checkpoint was trained in.
                policy = (self.precision_timing or {}).get("chosen") or self._choose_precision(start_epoch)
                keras.mixed_precision.set_global_policy(policy)
            if self.config.time_budget_minutes and not self.steps_per_epoch:
                self._calibrate(start_epoch)
            self._fit_segments(start_epoch, probe)

    def _throwaway_embedding(self, segment):
        """A fresh embedding model of `segment` (a feature head on cached features) for timing."""
        if self.on_features:
            return features.build_feature_head(self.config, self.inputs.shape[-1], name="embedding")
        return self._embedding_for(segment)

    def _choose_precision(self, start_epoch) -> str:
        """config.mixed_precision == "auto": time throw-away copies of the first phase's model in
        float32 and in the mixed policy on the real input (as the calibration times its steps), in
        interleaved rounds, and return the faster by `choose_precision` on each policy's fastest
        round; the timings go into the checkpoint and training.json (`precision_timing`)."""
        c = self.config
        segment = self._segment(start_epoch)
        began = time.time()
        models = {}
        for policy in ("float32", mixed_precision_policy()):
            keras.mixed_precision.set_global_policy(policy)
            models[policy] = self._build_training_model(self._throwaway_embedding(segment), segment)
        rounds = {policy: [] for policy in models}
        for _ in range(PRECISION_TIMING_ROUNDS):
            for policy, model in models.items():
                keras.mixed_precision.set_global_policy(policy)
                rounds[policy].append(self._time_steps(model, segment, start_epoch)[0])
            fastest = {policy: min(times) for policy, times in rounds.items()}
            ratio = max(fastest.values()) / min(fastest.values())
            if ratio >= PRECISION_CLEAR_RATIO:  # (emulated bfloat16: no need to time it again)
                break
        del models
        chosen = choose_precision(fastest)
        keras.utils.set_random_seed(c.seed)  # the real model starts as it would without the timing
        self.precision_timing = dict(step_seconds={k: round(v, 4) for k, v in fastest.items()},
                                     rounds={k: [round(t, 4) for t in v] for k, v in rounds.items()},
                                     chosen=chosen, seconds=round(time.time() - began, 1))
        if self.progress:
            timed = ", ".join(f"{policy} {t:.3f} s" for policy, t in fastest.items())
            print(f"precision: a step takes {timed} on this machine (fastest of {len(rounds['float32'])} "
                  f"rounds) -> {chosen}", flush=True)
        return chosen

    def _calibrate(self, start_epoch):
        """Set steps_per_epoch from the time budget (`tinymatch.budget`): time a few steps of a
        throw-away copy of the first phase's model, one validation embedding and one checkpoint."""
        c = self.config
        segment = self._segment(start_epoch)
        self.steps_per_epoch = 1000  # (the throw-away model's schedule length; never trained out)
        began = time.time()
        embedding = self._throwaway_embedding(segment)
        model = self._build_training_model(embedding, segment)
        step_seconds, trace_seconds = self._time_steps(model, segment, start_epoch)
        # Progressive resizing: a step of each other image size, on a throw-away model of its own.
        seconds_by_size = {self._image_size(segment): step_seconds}
        for later in sorted({self._segment(e) for e in range(start_epoch, self.total_epochs)}):
            if self.on_features or self._image_size(later) in seconds_by_size:
                continue
            other = self._build_training_model(self._embedding_for(later), later)
            seconds_by_size[self._image_size(later)] = self._time_steps(other, later, start_epoch)[0]
            del other
        overhead_began = time.perf_counter()
        self.inference_model(embedding).predict(self.val_inputs, batch_size=c.eval_batch_size, verbose=0)
        # Both files an epoch may write; in a temporary folder of the run directory (a killed
        # run's is removed by the next one, like every temporary).
        with tempfile.TemporaryDirectory(prefix=".calibration.", suffix=TEMP_SUFFIX,
                                         dir=self.run_dir) as folder:
            model.save(Path(folder) / "training.keras")
            save_model(self.model_to_save(embedding), Path(folder) / "best.keras")
        overhead = time.perf_counter() - overhead_began
        calibration = budget.Calibration(step_seconds, trace_seconds, overhead, time.time() - began)
        del model, embedding
        keras.utils.set_random_seed(c.seed)  # the real model starts as it would without calibration
        epochs = self.total_epochs - start_epoch
        self.calibration = calibration.to_dict()
        if len(seconds_by_size) > 1:  # (JSON keys: strings)
            self.calibration["step_seconds_by_image_size"] = {
                str(size): round(seconds, 4) for size, seconds in sorted(seconds_by_size.items())}
        self.steps_per_epoch = budget.steps_per_epoch_for_budget(
            c.time_budget_minutes * 60.0, time.time() - self.budget_started, epochs,
            self._phases_from(start_epoch), calibration,
            relative_step_costs=self._relative_step_costs(start_epoch, self._image_size(segment)))
        self.budget_plan = [dict(from_epoch=start_epoch + 1, steps_per_epoch=self.steps_per_epoch,
                                 step_seconds=round(step_seconds, 4), source="calibration")]
        if self.progress:
            sizes = (" (" + ", ".join(f"{s} px {t:.3f} s" for s, t in sorted(seconds_by_size.items())) + ")"
                     if len(seconds_by_size) > 1 else "")
            print(f"time budget {c.time_budget_minutes:g} min: a step takes {step_seconds:.3f} s{sizes}, "
                  f"an epoch's validation and checkpoint {overhead:.1f} s on this machine -> "
                  f"{epochs} epochs of {self.steps_per_epoch} steps", flush=True)

    def _time_steps(self, model, segment, start_epoch):
        """(seconds a step, tracing's extra seconds) of `model` on `segment`'s real input."""
        timer = budget.StepTimer()
        steps = budget.CALIBRATION_WARMUP_STEPS + budget.CALIBRATION_STEPS
        model.fit(self._batches(segment[0], start_epoch), epochs=1, steps_per_epoch=steps,
                  shuffle=False, verbose=0, callbacks=[timer])
        return timer.step_and_trace_seconds(budget.CALIBRATION_WARMUP_STEPS)

    def _relative_step_costs(self, from_epoch, reference_size) -> list[float]:
        """Each epoch's step cost from `from_epoch` on, over a step at `reference_size`, from the
        calibration's per-size timings (1 for every epoch without progressive resizing)."""
        by_size = (self.calibration or {}).get("step_seconds_by_image_size") or {}
        reference = by_size.get(str(reference_size))
        return [by_size[str(self._image_size(self._segment(e)))] / reference
                if reference and str(self._image_size(self._segment(e))) in by_size else 1.0
                for e in range(from_epoch, self.total_epochs)]

    def _measured_step_seconds(self, epoch) -> float:
        """Seconds a step of the phase that epoch `epoch - 1` (0-based) belongs to, from its last
        REPLAN_WINDOW_EPOCHS epochs up to there: each epoch's seconds less the calibrated
        validation and checkpoint, over the steps the plan gave it. The phase's first epoch and
        the first epoch of each later `fit` pay for tracing and are left out (unless nothing else
        is measured yet)."""
        window = (self._steady_epochs(epoch) or self._phase_epochs(epoch))[-budget.REPLAN_WINDOW_EPOCHS:]
        overhead = float(self.calibration["epoch_overhead_seconds"])
        return max(1e-3, float(np.mean([
            (float(row.get("seconds") or 0) - overhead) / budget.steps_of_epoch(self.budget_plan, index + 1)
            for index, row in window])))

    def _phase_epochs(self, epoch) -> list[tuple[int, dict]]:
        """(0-based index, history row) of the epochs before `epoch` in the phase of `epoch - 1`."""
        phase = self.history[epoch - 1]["phase"]
        return [(index, row) for index, row in enumerate(self.history[:epoch]) if row["phase"] == phase]

    def _steady_epochs(self, epoch) -> list[tuple[int, dict]]:
        """`_phase_epochs` less the phase's first epoch and each later `fit`'s first (tracing)."""
        return [(index, row) for index, row in self._phase_epochs(epoch)[1:]
                if index not in self.traced_epochs]

    def _plan_from(self, epoch, extra_seconds=0.0) -> tuple[int, float]:
        """(steps per epoch, measured seconds a step) for the epochs from 0-based `epoch` on, from
        the pace of the epochs just before it and the budget left now, less `extra_seconds`;
        raises budget.BudgetTooSmallError when not even one step an epoch fits."""
        c = self.config
        step_seconds = self._measured_step_seconds(epoch)
        measured = budget.Calibration(step_seconds, float(self.calibration["trace_seconds"]),
                                      float(self.calibration["epoch_overhead_seconds"]),
                                      float(self.calibration["calibration_seconds"]))
        finished_size = self._image_size(self._segment(epoch - 1))
        steps = budget.steps_per_epoch_for_budget(
            c.time_budget_minutes * 60.0, time.time() - self.budget_started + extra_seconds,
            self.total_epochs - epoch, self._phases_from(epoch), measured,
            relative_step_costs=self._relative_step_costs(epoch, finished_size))
        return steps, step_seconds

    def _replan_budget(self, epoch, within_phase=False) -> bool:
        """Plan the remaining epochs' steps from the seconds the finished epochs took (a short
        calibration can miss a machine's sustained speed), so the schedules still end at the
        budget's end: at the start of a later phase of a budgeted run, and within a phase when
        `ReplanCheck` found the pace off (`within_phase`). False when the budget is already spent
        (the run ends here)."""
        c = self.config
        if not c.time_budget_minutes or epoch == 0 or len(self.history) < epoch:
            return True
        try:
            steps, step_seconds = self._plan_from(epoch)
        except budget.BudgetTooSmallError:
            self.budget_exhausted = True
            if self.progress:
                print(f"time budget of {c.time_budget_minutes:g} min spent before epoch {epoch + 1}: "
                      "training stops here")
            return False
        if steps != self.steps_per_epoch:
            entry = dict(from_epoch=epoch + 1, steps_per_epoch=steps,
                         step_seconds=round(step_seconds, 4), source="measured epochs")
            if within_phase:
                entry["within_phase"] = True
            self.budget_plan.append(entry)
            if self.progress:
                planned = self.budget_plan[-2]["step_seconds"]
                # The same pace can still move the steps: a fit's teardown or a slow epoch's
                # validation spent time the plan had given to steps.
                pace = (f"epochs took {step_seconds:.3f} s a step, not {planned:.3f} s"
                        if f"{step_seconds:.3f}" != f"{planned:.3f}" else
                        f"at {step_seconds:.3f} s a step, the time left")
                print(f"time budget: {pace}: epochs {epoch + 1}-{self.total_epochs} get {steps} steps "
                      f"each (were {self.steps_per_epoch})", flush=True)
            self.steps_per_epoch = steps
        return True

    def _propose_replan(self, epoch) -> int | None:
        """`ReplanCheck`'s question after epoch `epoch - 1` (0-based): the steps per epoch the
        epochs from `epoch` on would get from the measured pace, when the next epoch is still in
        the same segment and that differs from the plan by more than budget.REPLAN_TOLERANCE;
        None otherwise (a spent budget is left to `BudgetGuard`).

        A re-plan ends the `fit`, and ending one can block on its input's teardown (measured 0-59 s
        on the cpu profile; `fit_teardown_seconds`). Fewer steps are always taken (the plan would
        overrun the budget); more steps only when they are still more than the tolerance after
        the teardowns' mean so far (budget.EXPECTED_TEARDOWN_SECONDS before any) is paid. Measured
        before that rule: a last epoch proposed over 5% above its 444 steps paid 11 s of teardown
        and got 435 (runs/replan7dec_1337); a warm-up proposed over 5% above 493 paid 50 s and got
        509 (runs/replan7dec_1338)."""
        if (epoch >= self.total_epochs or self._segment(epoch) != self._segment(epoch - 1)
                or len(self.history) < epoch or not self._steady_epochs(epoch)):
            return None  # (a tracing epoch alone is no measure of the pace)
        try:
            steps, _ = self._plan_from(epoch)
            if steps > self.steps_per_epoch:
                teardown = (float(np.mean(self.fit_teardown_seconds)) if self.fit_teardown_seconds
                            else budget.EXPECTED_TEARDOWN_SECONDS)
                # (a gain the teardown would eat is no reason to end the fit)
                steps = max(self.steps_per_epoch, self._plan_from(epoch, extra_seconds=teardown)[0])
        except budget.BudgetTooSmallError:
            return None
        return steps if budget.needs_replan(self.steps_per_epoch, steps) else None

    def _replan_within_phase(self, model, segment, epoch) -> bool:
        """Continue `segment` from 0-based `epoch` with re-planned steps per epoch: the same
        model and optimizer, the learning-rate schedule rebuilt over the phase's new length (steps
        done so far + its remaining epochs' steps), and the training step traced again (the
        schedule's length is part of the traced function). False when the budget ran out
        meanwhile (the run ends here)."""
        before = self.steps_per_epoch
        if not self._replan_budget(epoch, within_phase=True):
            return False
        if self.steps_per_epoch == before:
            return True
        remaining = self._segment_epochs(segment, from_epoch=epoch)
        done = int(np.asarray(model.optimizer.iterations))
        schedule = schedules.learning_rate_schedule(self.config.lr_schedule, self._peak_learning_rate(segment),
                                                    done + remaining * self.steps_per_epoch)
        if not isinstance(schedule, float):  # (a constant rate does not depend on the length)
            model.optimizer.learning_rate = schedule
            model.train_function = None  # retraced by the next `fit`
        return True

    def _budget_deadline(self) -> float:
        """time.time() after which no epoch starts: the budget's end less its tail reserve."""
        seconds = 60.0 * self.config.time_budget_minutes
        return self.budget_started + seconds - budget.tail_reserve_seconds(seconds)

    def _phases_from(self, epoch) -> int:
        """How many phases (segments) the epochs from `epoch` on span."""
        return len({self._segment(e) for e in range(epoch, self.total_epochs)})

    def _starts_phase(self, epoch) -> bool:
        return 0 < epoch < self.total_epochs and self._segment(epoch) != self._segment(epoch - 1)

    def _fit_segments(self, start_epoch, probe):
        if self._starts_phase(start_epoch) and not self._replan_budget(start_epoch):
            return
        model, embedding = self._restore_or_build(start_epoch)
        tensorboard = keras.callbacks.TensorBoard(str(self.paths.tensorboard), write_graph=False,
                                                  update_freq="epoch", profile_batch=0)
        epoch = start_epoch
        previous = None
        # One `fit` (and one input iterator) per segment, not per epoch: destroying a tf.data
        # iterator could block for up to a minute (TF 2.21, observed on every other epoch of the
        # cpu profile, ~40% of its epoch time), and per-epoch work is done by callbacks anyway.
        while epoch < self.total_epochs and not self.stopped_early:
            segment = self._segment(epoch)
            if model is None:
                if not self._replan_budget(epoch):
                    self._checkpoint(previous, epoch, self._segment(epoch - 1))  # (records the flag)
                    break
                embedding = self._embedding_for(segment, embedding)
                model = self._build_training_model(embedding, segment, previous=previous)
            end = epoch
            while end < self.total_epochs and self._segment(end) == segment:
                end += 1
            batches = self._batches(segment[0], epoch)
            distribute.prepare_fit(model, self.strategy, lambda: self._replica_batches(
                segment[0], epoch, 0).element_spec)
            ema.keep_raw_weights_after_fit(model.optimizer)
            evaluation = EpochEvaluation(self, embedding, probe, model)
            bookkeeping = EpochBookkeeping(self, embedding, model, segment, evaluation)
            budgeted = bool(self.config.time_budget_minutes)
            guard = [budget.BudgetGuard(self._budget_deadline())] if budgeted else []
            replan = [budget.ReplanCheck(self._propose_replan)] if budgeted else []
            self.traced_epochs.add(epoch)
            fit_end = budget.FitEndTimer()
            # Extra callbacks run after the evaluation (they see val_auc) and before the epoch's
            # checkpoint (a callback that interrupts the run loses only the unfinished epoch).
            model.fit(batches, initial_epoch=epoch, epochs=end,
                      steps_per_epoch=self.steps_per_epoch, shuffle=False,
                      verbose=1 if self.progress else 0,
                      callbacks=[StopOnNonFiniteLoss(self), evaluation, *self.extra_callbacks,
                                 bookkeeping, tensorboard, *guard, *replan, fit_end])
            self.fit_teardown_seconds.append(round(time.perf_counter() - fit_end.ended, 1))
            if guard and guard[0].stopped and len(self.history) < self.total_epochs:
                self.budget_exhausted = True
                self._checkpoint(model, len(self.history), segment)  # (records the flag)
                if self.progress:
                    print(f"time budget of {self.config.time_budget_minutes:g} min spent after "
                          f"{len(self.history)} of {self.total_epochs} epochs: training stops here")
                break
            if (replan and replan[0].from_epoch == len(self.history)
                    and not self.failure and not self.stopped_early):
                epoch = len(self.history)  # the same phase goes on, at the re-planned pace
                if self._replan_within_phase(model, segment, epoch):
                    continue
                self._checkpoint(model, epoch, segment)  # (records the flag)
                break
            if len(self.history) == epoch or model.stop_training or self.failure:
                break  # stopped by a callback (early stopping, a user's callback, a NaN loss)
            epoch = len(self.history)
            previous, model = model, None

    def inference_model(self, embedding):
        """What embeds `val_inputs`: the embedding, flip-averaged when config.test_time_flip
        (for a feature head: the head on both cached views)."""
        if not self.config.test_time_flip and not self.on_features:
            return embedding
        cached = getattr(self, "_inference", None)
        if cached is None or cached[0] is not embedding:
            wrapped = (features.build_view_head(embedding, self.config.test_time_flip)
                       if self.on_features else build_flip_averaged_model(embedding))
            self._inference = (embedding, wrapped)
        return self._inference[1]

    def model_to_save(self, embedding):
        """What model.keras holds: the inference model on images. A feature head goes into the
        full embedding model (frozen pretrained backbone + this head), flip-averaged when
        config.test_time_flip."""
        if not self.on_features:
            return self.inference_model(embedding)
        if self._image_model is None:
            # No augmentation layer: nothing trained through it (frozen backbone, cached views).
            full = build_embedding_model(self.config, include_augmentation=False)
            self._image_model = (full, build_flip_averaged_model(full)
                                 if self.config.test_time_flip else full)
        features.copy_head_weights(embedding, self._image_model[0])
        return self._image_model[1]

    def end_epoch(self, embedding, model, segment, row):
        """After each epoch: keep the best model, check early stopping, write the checkpoint.

        Returns True when training should stop (early stopping).
        """
        c = self.config
        epoch = len(self.history)  # 0-based index of the epoch that just ended
        row.update(epoch=epoch + 1, phase=segment[0])
        self.history.append(row)
        never_saved = not self.paths.model.is_file()
        if row["val_auc"] > self.best_auc or never_saved:  # (NaN AUC: keep something)
            self.best_auc, self.best_epoch = row["val_auc"], epoch + 1
            with ema.averaged_weights(model.optimizer):
                save_model(self.model_to_save(embedding), self.paths.model)
        wait = self.triplet_epochs_without_gain()
        self.stopped_early = (c.early_stopping_patience > 0 and segment[0] == "triplet"
                              and wait >= c.early_stopping_patience)
        self._checkpoint(model, epoch + 1, segment)
        if self.stopped_early and self.progress:
            print(f"early stopping: no val AUC gain in the triplet phase for {wait} epochs "
                  f"(best of the run {self.best_auc:.4f} at epoch {self.best_epoch})")
        return self.stopped_early

    def triplet_epochs_without_gain(self) -> int:
        """Triplet-phase epochs since that phase's best val AUC (from the history, so a resumed run
        counts the same). Early stopping watches the triplet phase against its own best: its
        restarted learning rate first costs val AUC, so the warm-up's best is no fair yardstick."""
        aucs = np.array([row["val_auc"] for row in self.history if row["phase"] == "triplet"], float)
        aucs = np.where(np.isnan(aucs), -np.inf, aucs)  # a NaN epoch is never a gain
        if not len(aucs) or aucs.max() == -np.inf:
            return len(aucs)
        return len(aucs) - 1 - int(np.argmax(aucs))

    def _checkpoint(self, model, epochs_done, segment):
        """history.csv, then checkpoints/last/ (model + state) replaced in one atomic rename."""
        rundir.write_history(self.run_dir, self.history)
        state = dict(epoch=epochs_done, segment=list(segment), best_auc=self.best_auc,
                     best_epoch=self.best_epoch, stopped_early=self.stopped_early,
                     budget_exhausted=self.budget_exhausted)
        if self.config.time_budget_minutes:
            state.update(steps_per_epoch=self.steps_per_epoch, calibration=self.calibration,
                         budget_plan=self.budget_plan)
        if self.precision_timing:  # (mixed_precision="auto": its choice, kept by a resumed run)
            state.update(precision_timing=self.precision_timing)
        with atomic_path(self.paths.checkpoint) as tmp:
            tmp.mkdir()
            model.save(tmp / self.paths.checkpoint_model.name)
            write_json(tmp / self.paths.checkpoint_state.name, state)
        self.state = state

    def _summary(self, started) -> dict:
        # Epoch times survive interruptions (history.csv); add this session's overhead on top.
        epoch_seconds = sum(float(row.get("seconds") or 0) for row in self.history)
        session_epochs = sum(float(row.get("seconds") or 0) for row in self.history[self.first_epoch:])
        overhead = max(0.0, time.time() - started - session_epochs)
        return dict(
            best_val_auc=self.best_auc, best_epoch=self.best_epoch, epochs_run=len(self.history),
            stopped_early=self.stopped_early, threshold_method=self.config.threshold_method,
            steps_per_epoch=self.steps_per_epoch, train_images=len(self.train_indices),
            trained_on="cached features" if self.on_features else "images",
            val_selection_images=len(self.val_images), val_pairs=len(self.val_pairs),
            strategy=self.config.strategy, replicas=self.replicas, global_batch=self.global_batch,
            dtype_policy=keras.mixed_precision.global_policy().name,
            **({"precision_timing": self.precision_timing} if self.precision_timing else {}),
            epoch_seconds=round(epoch_seconds, 1), wall_seconds=round(epoch_seconds + overhead, 1),
            fit_teardown_seconds=self.fit_teardown_seconds, **self._budget_summary())

    def _budget_summary(self) -> dict:
        if not self.config.time_budget_minutes:
            return {}
        used = (dict(budget_used_seconds=round(time.time() - self.budget_started, 1))
                if self.budget_started is not None else {})  # (absent: nothing trained this call)
        return dict(time_budget_minutes=self.config.time_budget_minutes,
                    calibration=self.calibration, budget_plan=self.budget_plan,
                    replan_tolerance=budget.REPLAN_TOLERANCE,
                    budget_exhausted=self.budget_exhausted,
                    tail_reserve_seconds=budget.tail_reserve_seconds(
                        60.0 * self.config.time_budget_minutes), **used)

    def mark_failed(self, started):
        """training.json says the run failed and why; nothing else is touched."""
        write_json(self.paths.training, dict(self._summary(started), finished=False,
                                             failed=self.failure))

    def finish(self, started) -> TrainResult:
        """Siamese model with the threshold chosen on val pairs; summary file; the result."""
        began = time.perf_counter()
        best = load_model(self.paths.model)
        embeddings = best.predict(self.val_images, batch_size=self.config.eval_batch_size, verbose=0)
        distances = pair_distances(embeddings, self.val_pairs, self.config.distance_metric)
        threshold = float(choose_threshold(distances, self.val_pairs.same, self.config.threshold_method,
                                           self.config.target_far))
        siamese = build_siamese_model(best, threshold, self.config.distance_metric)
        save_model(siamese, self.paths.siamese, clone=False)
        summary = dict(self._summary(started), finished=True, threshold=threshold,
                       finish_seconds=round(time.perf_counter() - began, 1))
        if self.on_features:
            # The saved image model against the selection it was picked by (on cached features).
            summary.update(feature_extraction_seconds=round(self.feature_cache.seconds, 1),
                           feature_extraction_images_per_second=round(
                               self.feature_cache.images_per_second, 1),
                           best_val_auc_on_images=val_auc(embeddings, self.val_pairs,
                                                          self.config.distance_metric))
        write_json(self.paths.training, summary)
        return TrainResult(self.run_dir, self.history, self.best_auc)


# --------------------------------------------------------------------------------------------------
# Helpers

def warmup_head(embeddings, classes: int, config):
    """(class scores, loss) of the warm-up classifier over `classes` that config.warmup_head names."""
    c = config
    if c.warmup_head == "cosface":
        cosines = CosineClassifier(classes, dtype="float32", name="classifier")(embeddings)
        return cosines, losses.AdditiveMarginSoftmaxLoss(c.warmup_scale, c.warmup_margin, c.label_smoothing)
    logits = keras.layers.Rescaling(c.warmup_scale, name="logit_scale")(embeddings)
    logits = keras.layers.Dense(classes, use_bias=False, dtype="float32", name="classifier")(logits)
    if c.label_smoothing:
        return logits, losses.SmoothedSoftmaxLoss(c.label_smoothing)
    return logits, keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def val_selection_indices(val_indices, seed: int) -> np.ndarray:
    """The val images embedded after every epoch to pick the best checkpoint: a seeded sample of
    at most VAL_SELECTION_IMAGES, sorted (reads from the memory map in order)."""
    return np.sort(np.random.default_rng(seed).permutation(val_indices)[:VAL_SELECTION_IMAGES])


def val_selection_pairs(labels, config) -> Pairs:
    """The pairs of the selection's `labels` that the per-epoch val AUC is measured on: the
    evaluation's sampler (random negatives), so a training run's val AUC is the evaluation's."""
    return make_pairs(labels, max_positive_pairs=config.max_positive_pairs, seed=config.seed)


def _optimizer(config, total_steps, peak_learning_rate=None):
    """The configured optimizer, its learning rate scheduled over the phase's `total_steps`
    (`tinymatch.schedules`), with a moving average of the weights when `config.ema_decay`."""
    peak = peak_learning_rate or config.learning_rate
    lr = schedules.learning_rate_schedule(config.lr_schedule, peak, total_steps)
    averaging = dict(use_ema=True, ema_momentum=config.ema_decay) if config.ema_decay else {}
    if config.optimizer == "adam":
        return keras.optimizers.Adam(lr, **averaging)
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(lr, weight_decay=config.weight_decay or 1e-4, **averaging)
    # Keras' weight decay is decoupled (each step takes lr x decay of every weight), so with
    # momentum 0.9 a decay d here shrinks the weights as a coupled L2 of d / 10 would.
    return keras.optimizers.SGD(lr, momentum=0.9, nesterov=True,
                                weight_decay=config.weight_decay or None, **averaging)


def _carry_over_classifier(previous, model):
    """Copy the classifier's weights into `model` when both have one (same classes): from the
    frozen to the unfrozen warm-up, and into a triplet phase that keeps the classification loss."""
    if previous is None:
        return
    try:
        source, target = previous.get_layer("classifier"), model.get_layer("classifier")
    except ValueError:
        return  # one of the two has no classifier
    target.set_weights(source.get_weights())


def _input_side(embedding) -> int:
    """The side of the images the embedding's backbone runs on (after its resize)."""
    return int(backbone_of(embedding).input_shape[1])


def _class_lookup(labels):
    """original class index -> 0..C-1 among the training classes (for the warm-up softmax)."""
    classes = np.unique(labels)
    lookup = np.zeros(int(classes.max()) + 1, dtype=np.int32)
    lookup[classes] = np.arange(len(classes), dtype=np.int32)
    return lookup


def _load_state(run_dir):
    path = RunDir(run_dir).checkpoint_state
    return read_json(path) if path.is_file() else {}


def _check_resumable(run_dir, config):
    saved_path = RunDir(run_dir).config
    if not saved_path.is_file():
        return
    saved = Config.load(saved_path)
    if saved.training_key() != config.training_key():
        changed = sorted(k for k, v in config.training_key().items() if saved.training_key().get(k) != v)
        raise ConfigMismatchError(
            f"{saved_path}: this run directory holds a training with a different config "
            f"({', '.join(changed)} differ); use another --out or delete the directory")


def _finished_result(run_dir):
    summary = read_json(RunDir(run_dir).training)
    return TrainResult(Path(run_dir), read_history(run_dir),
                       float(summary.get("best_val_auc", float("nan"))))


# store_weights_at_half_precision: re-exported for `tinymatch half-precision` (lives in model_files).
__all__ = ["train", "is_finished", "TrainResult", "ConfigMismatchError", "TrainingFailedError",
           "WorkerLostError", "mixed_precision_policy", "choose_precision", "PRECISION_SPEEDUP_REQUIRED",
           "PRECISION_TIMING_ROUNDS", "PRECISION_CLEAR_RATIO",
           "store_weights_at_half_precision",
           "val_selection_indices", "val_selection_pairs", "warmup_head"]
