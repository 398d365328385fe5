"""tf.distribute on the CPU: mirrored over 2 logical devices, multi-worker over 2 local processes.

Logical devices and collective ops must be set up before TensorFlow initialises, so every case
runs in a fresh Python subprocess (bounded by a timeout) and reports back as JSON on stdout.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from tinymatch.config import Config
from tinymatch.rundir import RunDir, read_history

SMOKE = dict(augment=False, classes_per_batch=3, images_per_class=4, warmup_epochs=1, epochs=1,
             steps_per_epoch=3, early_stopping_patience=0, eval_batch_size=64)


def _python(script: str, *args: str, timeout: float, env: dict | None = None):
    """Run `script` in a fresh interpreter; its last stdout line is JSON."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script), *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


MIRRORED = """
    import json, sys
    import numpy as np
    from tinymatch import distribute
    from tinymatch.config import Config

    config = Config.from_dict(json.loads(sys.argv[1]))
    strategy = distribute.make_strategy(config)  # first: logical devices before TF initialises

    import keras
    import tensorflow as tf
    from tinymatch import data, losses
    from tinymatch.model import build_embedding_model
    from tinymatch.train import train

    result = {"replicas": strategy.num_replicas_in_sync}
    dataset = data.load_dataset(config.data, progress=False)
    P, K = config.classes_per_batch, config.images_per_class

    # 1. The input train() uses: every replica gets a whole P x K batch of its own.
    batches = distribute.distribute_batches(strategy, lambda pipeline: data.pk_dataset(
        dataset.images, dataset.labels, classes_per_batch=P, images_per_class=K,
        seed=distribute.pipeline_seed(config.seed, pipeline), repeat=True))
    images, labels = next(iter(batches))
    images = [np.asarray(t) for t in strategy.experimental_local_results(images)]
    labels = [np.asarray(t) for t in strategy.experimental_local_results(labels)]
    result["replica_class_counts"] = [sorted(np.unique(l, return_counts=True)[1].tolist()) for l in labels]

    # 2. One step under the strategy == the single-device losses of each replica's share.
    with strategy.scope():
        model = build_embedding_model(config, include_augmentation=False)
        model.compile(optimizer=keras.optimizers.SGD(0.5), loss=losses.make_loss(config))
    initial = [np.array(w) for w in model.get_weights()]
    reference = build_embedding_model(config, include_augmentation=False)  # no strategy
    reference.set_weights(initial)
    loss_fn = losses.make_loss(config)
    shares, gradients = [], []
    for share_images, share_labels in zip(images, labels):
        with tf.GradientTape() as tape:
            loss = loss_fn(share_labels, reference(share_images, training=True))
        shares.append(float(loss))
        gradients.append([np.asarray(g) for g in tape.gradient(loss, reference.trainable_weights)])
    stacked = (np.stack(images), np.stack(labels))  # element r -> replica r
    step = distribute.distribute_batches(
        strategy, lambda pipeline: tf.data.Dataset.from_tensor_slices(stacked))
    logged = model.fit(step, epochs=1, steps_per_epoch=1, verbose=0).history["loss"][0]
    expected = [w - 0.5 * (g0 + g1) / 2 for w, g0, g1 in
                zip([np.asarray(w) for w in reference.trainable_weights], *gradients)]
    result.update(share_losses=shares, logged_loss=float(logged), max_weight_error=max(
        float(np.max(np.abs(np.asarray(w) - e))) for w, e in zip(model.trainable_weights, expected)),
        max_weight_change=max(float(np.max(np.abs(0.5 * (g0 + g1) / 2)))
                              for g0, g1 in zip(*gradients)))

    # 3. A smoke run trains under the strategy.
    run = train(config, sys.argv[2], progress=False)
    result["history"] = run.history
    print(json.dumps(result))
"""


@pytest.fixture(scope="module")
def mirrored_run(tmp_path_factory, synthetic_dir):
    # margin 1.5 (of at most 2 between unit vectors): every share has a loss and a gradient
    config = Config.from_profile("smoke", data=str(synthetic_dir), strategy="mirrored",
                                 logical_devices=2, margin=1.5, **SMOKE)
    run_dir = tmp_path_factory.mktemp("mirrored")
    result = _python(MIRRORED, json.dumps(config.to_dict()), str(run_dir), timeout=600)
    return config, run_dir, result


def test_mirrored_gives_every_replica_a_whole_pk_batch(mirrored_run):
    config, _, result = mirrored_run
    assert result["replicas"] == 2
    whole = [config.images_per_class] * config.classes_per_batch  # P classes, K images each
    assert result["replica_class_counts"] == [whole, whole]


def test_mirrored_step_loss_is_the_mean_of_the_per_share_losses(mirrored_run):
    """No double averaging: the logged loss is the mean of the replicas' tfa losses, and the
    update is the mean of their gradients (not the sum)."""
    _, _, result = mirrored_run
    shares = result["share_losses"]
    assert all(loss > 0 for loss in shares)
    assert result["logged_loss"] == pytest.approx(np.mean(shares), rel=1e-5, abs=1e-6)
    assert result["max_weight_error"] < 1e-5 + 1e-3 * result["max_weight_change"]


def test_mirrored_smoke_run_trains(mirrored_run):
    _, run_dir, result = mirrored_run
    summary = json.loads(RunDir(run_dir).training.read_text())
    assert summary["finished"] and summary["replicas"] == 2 and summary["strategy"] == "mirrored"
    assert summary["global_batch"] == 2 * 3 * 4
    assert [row["epoch"] for row in read_history(run_dir)] == [1, 2]
    assert all(np.isfinite(row["loss"]) for row in result["history"])


# --- multi-worker: two local processes ------------------------------------------------------------

WORKER = """
    import sys
    from tinymatch.cli import main
    sys.exit(main(["-q", "train", "--config", sys.argv[1], "--out", sys.argv[2]]))
"""


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


class _Cluster:
    """Two worker processes of one multi-worker run on 127.0.0.1 (worker 0 is the chief)."""

    def __init__(self, tmp_path, config):
        self.config_file = tmp_path / "config.json"
        config.save(self.config_file)
        self.run_dir = tmp_path / "run"
        self.worker_base = tmp_path / "workers"
        self.logs = tmp_path / "logs"
        self.logs.mkdir()
        self.ports = _free_ports(2)
        self.processes = [None, None]
        self.starts = [0, 0]

    def worker_dir(self, index):
        return self.run_dir if index == 0 else self.worker_base / f"worker-{index}"

    def start(self, index):
        tf_config = {"cluster": {"worker": [f"127.0.0.1:{p}" for p in self.ports]},
                     "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config),
               "TINYMATCH_WORKER_DIR": str(self.worker_base), "CUDA_VISIBLE_DEVICES": ""}
        self.starts[index] += 1
        log = open(self.logs / f"worker-{index}-{self.starts[index]}.log", "w")
        self.processes[index] = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(WORKER), str(self.config_file), str(self.run_dir)],
            stdout=log, stderr=subprocess.STDOUT, env=env)

    def log_tail(self):
        return "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in sorted(self.logs.iterdir()))

    def stop(self):
        for process in self.processes:
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()


def _weights(path):
    from tinymatch.model import load_model

    return load_model(path).get_weights()


def _assert_workers_agree(cluster):
    chief, worker = RunDir(cluster.worker_dir(0)), RunDir(cluster.worker_dir(1))
    for name in ("model", "checkpoint_model"):
        for a, b in zip(_weights(getattr(chief, name)), _weights(getattr(worker, name)), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


MULTI_WORKER = dict(SMOKE, strategy="multi-worker")


def _state_epoch(run_dir):
    path = RunDir(run_dir).checkpoint_state
    try:
        return json.loads(path.read_text())["epoch"]
    except (FileNotFoundError, ValueError, KeyError):
        return 0


def test_multi_worker_run_survives_a_killed_worker(tmp_path, synthetic_dataset, synthetic_dir):
    """A two-worker smoke run finishes with both workers on the same weights, and only the chief
    writes the run directory, although worker 1 is killed with SIGKILL in the middle of epoch 2
    and started again. The chief's collectives fail once its peer is gone (MultiWorkerMirroredStrategy cannot shrink a cluster),
    so the test acts as the job's supervisor: it restarts whichever worker exited with an error,
    with the same command. Both resume from their epoch-1 backups and the run finishes; no epoch
    is recorded twice and the workers end on the same weights."""
    config = Config.from_profile("smoke", data=str(synthetic_dir),
                                 **dict(MULTI_WORKER, warmup_epochs=1, epochs=2, steps_per_epoch=12))
    cluster = _Cluster(tmp_path, config)
    deadline = time.monotonic() + 540
    try:
        cluster.start(0)
        cluster.start(1)
        while min(_state_epoch(cluster.worker_dir(i)) for i in (0, 1)) < 1:
            assert time.monotonic() < deadline, cluster.log_tail()
            assert all(p.poll() is None for p in cluster.processes), cluster.log_tail()
            time.sleep(0.2)
        time.sleep(1.0)  # into epoch 2
        cluster.processes[1].send_signal(signal.SIGKILL)
        cluster.processes[1].wait()
        cluster.start(1)
        finished = [False, False]
        while not all(finished):
            assert time.monotonic() < deadline, cluster.log_tail()
            for index, process in enumerate(cluster.processes):
                code = process.poll()
                if code == 0:
                    finished[index] = True
                elif code is not None:  # failed with its peer: the supervisor restarts it
                    assert cluster.starts[index] < 4, cluster.log_tail()
                    cluster.start(index)
            time.sleep(0.5)
    finally:
        cluster.stop()
    assert [row["epoch"] for row in read_history(cluster.run_dir)] == [1, 2, 3], cluster.log_tail()
    summary = json.loads(RunDir(cluster.run_dir).training.read_text())
    assert summary["finished"] and summary["replicas"] == 2 and summary["global_batch"] == 2 * 3 * 4
    _assert_workers_agree(cluster)
    # Only the chief wrote the run directory: the other worker wrote into its own folder.
    assert RunDir(cluster.worker_dir(1)).training.is_file()
    if cluster.starts[0] > 1:  # the chief stopped with its peer: one line that says what to do
        log = (cluster.logs / "worker-0-1.log").read_text()
        assert "a peer worker failed or restarted" in log and "Traceback" not in log, log[-3000:]
