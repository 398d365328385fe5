"""Distribution strategies: one device, all local GPUs (or N logical CPUs), several machines.

`config.strategy` picks TensorFlow's own engine (`tf.distribute`); `model.fit` stays the loop:

    none          the default strategy: one device, exactly the single-machine behaviour
    mirrored      `MirroredStrategy` over every local GPU; with `config.logical_devices = N > 0`
                  over N logical CPU devices instead (how the tests exercise it on a CPU)
    multi-worker  `MultiWorkerMirroredStrategy`, the cluster read from the `TF_CONFIG` environment
                  variable (the same command on every machine, only TF_CONFIG differs)

**Order matters.** Logical devices can only be configured, and collective ops (multi-worker)
only set up, before TensorFlow initialises its runtime: `make_strategy` must run before any
other TensorFlow work in the process (`train.train` calls it first; a notebook must restart its
kernel to change it). Asking for a different number of logical devices afterwards is a clear
error, not a silent single-device run.

**Mining under data parallelism: per-replica P x K batches.** Semi-hard (and hard) mining needs
positives inside the batch it mines, so each replica's share must itself hold whole classes with
K images each. Every replica therefore receives its own full P x K batch: the input is built with
`distribute_datasets_from_function`, one P x K generator per input pipeline (one per worker),
seeded by the pipeline's id, whose consecutive batches go to that worker's replicas in turn
(checked by tests/test_distribute.py). The global batch is replicas x P x K images, and one
epoch of `steps_per_epoch` steps sees replicas times as many images. The alternative, gathering
every replica's embeddings before mining, was not taken: it needs a cross-replica all-gather in
the loss and its B^2 distance matrix grows with the square of the replica count.

Effect on the loss: each replica computes the tfa loss of its own P x K batch (tfa semantics per
batch, unchanged), so a replica mines negatives only among its own P classes, not among all
replicas x P: semi-hard negatives are drawn from a smaller pool than one batch of replicas x P
classes would offer (the same pool as a single-device run with P classes). The loss of a step is
the mean of the replicas' losses and its gradient the mean of theirs: Keras divides each
replica's loss by the replica count and sums the gradients (`losses` makes the scalar triplet
losses take part in that division). Two replicas may draw the same class in one step (their
samplers are independent); that is harmless because nothing is mined across replicas.

**Multi-worker.** Only the chief (worker 0, or the `chief` task) writes the run directory. Every
other worker writes the same files into its own folder, `worker_dir(run_dir, strategy)`, under
the system's temporary directory, keyed by the run directory and the worker's index: that
folder is its Keras `BackupAndRestore`-style backup, so a worker that dies and is started again
with the same command (on the same machine) resumes from its last completed epoch, like the
chief does from the run directory. When a worker dies, the others' collective operations fail
(TensorFlow's MultiWorkerMirroredStrategy cannot shrink a cluster; `train` then ends with a
one-line `WorkerLostError`): every worker that stopped is started again with the same command,
and they continue from their backups. The workers first check that they all resume from the
same epoch (`check_workers_agree`); a worker killed in the moment between the chief's backup of
an epoch and its own would disagree, which is a clear error, not a hang. At the end of every
epoch the workers average their BatchNormalization statistics (`average_statistics`), so they
evaluate, keep and stop on the same model. `prepare_fit` works around two Keras 3 bugs of `fit`
under this strategy (tensorflow/tensorflow#72388).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable

import tensorflow as tf

from tinymatch.config import STRATEGIES, Config

PIPELINE_SEED_STRIDE = 100_003  # seed offset of each input pipeline's P x K sampler (a prime)
WORKER_DIR_ENV = "TINYMATCH_WORKER_DIR"  # overrides where non-chief workers keep their files
_STRATEGIES: dict[tuple, tf.distribute.Strategy] = {}  # make_strategy's, one per kind and process


def make_strategy(config: Config) -> tf.distribute.Strategy:
    """The `tf.distribute.Strategy` that `config.strategy` names (see the module docstring).

    Call it before any other TensorFlow work in the process. Raises ValueError naming the field
    when the request cannot be met (no TF_CONFIG, devices already initialised differently).
    """
    name, logical = config.strategy, config.logical_devices
    if name == "none":
        return tf.distribute.get_strategy()
    key = (name, logical, os.environ.get("TF_CONFIG", ""))
    if key not in _STRATEGIES:
        # One instance per process: two strategies over the same devices would reuse the same
        # collective keys, and a second multi-worker strategy cannot be set up at all.
        _STRATEGIES[key] = _new_strategy(name, logical)
    return _STRATEGIES[key]


def _new_strategy(name: str, logical: int) -> tf.distribute.Strategy:
    if name == "mirrored":
        if logical > 0:
            return tf.distribute.MirroredStrategy(
                [device.name for device in configure_logical_cpus(logical)])
        return tf.distribute.MirroredStrategy()
    if name == "multi-worker":
        cluster = tf_config()
        if not cluster.get("cluster"):
            raise ValueError("config.strategy='multi-worker' needs the TF_CONFIG environment variable "
                             "(the cluster and this worker's task), see README 'Scaling out'")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"config.strategy={name!r}: must be one of {', '.join(STRATEGIES)}")


def configure_logical_cpus(count: int) -> list:
    """Split the first physical CPU into `count` logical devices (before TensorFlow initialises)."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu) or []
    if len(current) != count:
        try:
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)])
        except RuntimeError:
            raise ValueError(
                f"config.logical_devices={count}: TensorFlow's devices were already initialised in "
                f"this process ({max(1, len(current))} CPU device(s)); set the strategy before any "
                f"other TensorFlow work (a fresh process or notebook kernel)") from None
    return tf.config.list_logical_devices("CPU")[:count]


def tf_config() -> dict:
    """The parsed TF_CONFIG environment variable ({} when unset)."""
    text = os.environ.get("TF_CONFIG", "")
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"TF_CONFIG is not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise ValueError("TF_CONFIG must hold a JSON object with 'cluster' and 'task'")
    return value


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True on the one process that writes the run directory (always, except on other workers)."""
    if not is_multi_worker(strategy):
        return True
    resolver = strategy.cluster_resolver
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type == "chief":
        return True
    # Without a `chief` task, worker 0 is the chief (TensorFlow's convention).
    return task_type == "worker" and task_id == 0 and "chief" not in resolver.cluster_spec().jobs


def worker_dir(run_dir, strategy: tf.distribute.Strategy) -> Path:
    """Where this process writes: the run directory for the chief, else its own backup folder.

    A non-chief worker's folder is `$TINYMATCH_WORKER_DIR` when set, else
    `<tmp>/tinymatch-workers/<hash of the run dir>/<task>-<id>`: the same folder every time the
    same command starts on the same machine, so a restarted worker finds its last epoch there.
    """
    if is_chief(strategy):
        return Path(run_dir)
    resolver = strategy.cluster_resolver
    task = f"{resolver.task_type}-{resolver.task_id}"
    base = os.environ.get(WORKER_DIR_ENV)
    if base:
        return Path(base) / task
    key = hashlib.sha256(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / "tinymatch-workers" / key / task


def distribute_batches(strategy: tf.distribute.Strategy,
                       make_batches: Callable[[int], tf.data.Dataset]):
    """Per-replica P x K input: `make_batches(pipeline_id)` yields one replica's batch per element.

    One device: that dataset itself. Otherwise `distribute_datasets_from_function` calls it once
    per input pipeline (worker) and hands its consecutive batches to the worker's replicas in turn,
    so every replica trains on a whole P x K batch (see the module docstring).
    """
    if strategy.num_replicas_in_sync == 1 and not is_multi_worker(strategy):
        return make_batches(0)

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        return make_batches(context.input_pipeline_id)

    return strategy.distribute_datasets_from_function(dataset_fn)


def check_workers_agree(strategy: tf.distribute.Strategy, value: int, what: str) -> None:
    """Multi-worker: raise ValueError unless every worker holds the same `value` (e.g. the epoch it
    resumes from); workers that disagreed would wait for each other forever. No-op otherwise."""
    if not is_multi_worker(strategy):
        return

    @tf.function
    def moments():
        # n * sum(v^2) == sum(v)^2 exactly when all values are equal (Cauchy-Schwarz).
        v = tf.constant(float(value), tf.float32)
        context = tf.distribute.get_replica_context()
        return context.all_reduce(tf.distribute.ReduceOp.SUM, tf.stack([tf.ones([], tf.float32), v, v * v]))

    count, total, squares = strategy.experimental_local_results(strategy.run(moments))[0].numpy()
    if abs(count * squares - total * total) > 1e-6 * max(1.0, total * total):
        raise ValueError(f"the workers disagree on {what} (this worker: {value}, mean of all: "
                         f"{total / count:g}); restart every worker from the same backups")


def prepare_fit(model, strategy: tf.distribute.Strategy, element_spec: Callable[[], object]) -> None:
    """Multi-worker: work around two Keras 3 bugs of `fit` under MultiWorkerMirroredStrategy
    (tensorflow/tensorflow#72388). No-op for the other strategies.

    1. `fit` first reduces one distributed batch across the workers only to learn its shapes,
       and that reduce of an (images, labels) pair fails ("Attempt to convert a value
       (PerReplica...) to a Tensor"). The shapes are known (`element_spec()`: one replica's
       batch spec): build from them and skip that step on this model.
    2. Every step, the metrics are averaged across workers with `reduce("MEAN", v, axis=0)`,
       which fails for scalars ("Invalid reduction dimension 0 for input with 0 dimensions").
       Inside the replicas the metrics are handed over as 1-element vectors, whose mean along
       axis 0 is the scalar mean over all replicas, the same on every worker.
    """
    if not is_multi_worker(strategy):
        return
    with strategy.scope():
        model._symbolic_build(data_batch=element_spec())
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
    metrics_result = model.get_metrics_result

    def get_metrics_result():
        results = metrics_result()
        if tf.distribute.in_cross_replica_context():
            return results
        return {name: tf.reshape(value, [1]) for name, value in results.items()}

    model.get_metrics_result = get_metrics_result


def average_statistics(model, strategy: tf.distribute.Strategy) -> None:
    """Multi-worker: set `model`'s non-trainable float variables (BatchNormalization's moving
    statistics) to their mean over the workers. No-op for the other strategies.

    Gradients are all-reduced, but the moving statistics are updated by each worker from its own
    batches, so the workers' copies drift apart. Averaged at the end of every epoch (every worker
    calls this then), all workers evaluate, choose the best epoch, stop early and save the same model.
    """
    if not is_multi_worker(strategy):
        return
    variables = [v for v in model.non_trainable_variables
                 if tf.as_dtype(v.dtype).is_floating]
    if not variables:
        return

    @tf.function
    def mean():
        context = tf.distribute.get_replica_context()
        return context.all_reduce(tf.distribute.ReduceOp.MEAN, [tf.identity(v.value) for v in variables])

    averaged = strategy.experimental_local_results(strategy.run(mean))[0]
    for variable, value in zip(variables, averaged):
        variable.assign(value)


def pipeline_seed(seed: int, pipeline_id: int) -> int:
    """The P x K sampler seed of an input pipeline (pipeline 0 keeps `seed`: one device unchanged)."""
    return seed + PIPELINE_SEED_STRIDE * pipeline_id


def embed(model, images, batch_size: int, strategy: tf.distribute.Strategy):
    """`model.predict` where it is safe; a plain batched loop on multi-worker, where `predict`
    would shard the images across workers and each would see only its own part."""
    import numpy as np

    if not is_multi_worker(strategy):
        return model.predict(images, batch_size=batch_size, verbose=0)
    parts = [np.asarray(model(images[start:start + batch_size], training=False))
             for start in range(0, len(images), batch_size)]
    return np.concatenate(parts) if parts else np.zeros((0,) + tuple(model.output_shape[1:]), np.float32)


__all__ = ["make_strategy", "configure_logical_cpus", "tf_config", "is_multi_worker",
           "is_chief", "worker_dir", "distribute_batches", "check_workers_agree", "prepare_fit", "average_statistics", "pipeline_seed", "embed"]
