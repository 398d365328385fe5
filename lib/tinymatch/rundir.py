"""The run directory: every file name in it, its readers and writers, its lock and its leftovers.

A run directory is everything one run produces, and nothing a run produces lives elsewhere:

    config.json         the configuration
    environment.json    the versions and hardware it ran on (`tinymatch.environment`)
    split.csv           the seeded split the model was trained and selected on
    history.csv         one row per epoch (HISTORY_COLUMNS)
    training.json       training summary: best epoch and AUC, threshold, wall time, finished flag
    model.keras         the best embedding model
    siamese.keras       that model in a Siamese wrapper with its frozen threshold
    metrics.json        evaluation figures
    test_metrics.json   the test parts alone at the training threshold (ablation runs)
    error_analysis.json where the trained model fails, from evaluation/ (`tinymatch.error_analysis`)
    checkpoints/last/   resume state (training.keras + state.json), replaced atomically per epoch
    tensorboard/        TensorBoard logs; the Embedding Projector export in tensorboard/projector/,
                        so one `tensorboard --logdir RUN_DIR/tensorboard` shows scalars and projector
    embeddings/         cached embeddings of the model
    pairs/, evaluation/ evaluation pairs and per-(protocol, model) plot arrays (`.npz`)
    notebooks/          executed copies of the report's notebooks
    figs/               the report's figures
    report.html, report.pdf
    data_facts.json, model_facts.json   what the report's notebooks measured

No other module spells one of these names: they ask this one (`RunDir(path).metrics`, ...).
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from tinymatch.config import Config
from tinymatch.io_utils import TEMP_SUFFIX, atomic_save_arrays, atomic_write_text, read_json

HISTORY_COLUMNS = ("epoch", "phase", "loss", "accuracy", "active_fraction",
                   "mean_positive_distance", "mean_negative_distance", "val_auc", "lr", "seconds")
LOCK_NAME = ".lock"


class RunLockedError(RuntimeError):
    """Another live process holds the run directory (or cache entry)."""


@dataclass(frozen=True)
class RunDir:
    """Paths of one run directory. Creating the object touches nothing on disk."""

    path: Path

    def __init__(self, path: str | os.PathLike) -> None:
        object.__setattr__(self, "path", Path(path))

    # files
    @property
    def config(self) -> Path: return self.path / "config.json"
    @property
    def metrics(self) -> Path: return self.path / "metrics.json"
    @property
    def test_metrics(self) -> Path: return self.path / "test_metrics.json"
    @property
    def error_analysis(self) -> Path: return self.path / "error_analysis.json"
    @property
    def history(self) -> Path: return self.path / "history.csv"
    @property
    def training(self) -> Path: return self.path / "training.json"
    @property
    def model(self) -> Path: return self.path / "model.keras"
    @property
    def siamese(self) -> Path: return self.path / "siamese.keras"
    @property
    def split(self) -> Path: return self.path / "split.csv"
    @property
    def data_facts(self) -> Path: return self.path / "data_facts.json"
    @property
    def model_facts(self) -> Path: return self.path / "model_facts.json"
    @property
    def report_html(self) -> Path: return self.path / "report.html"
    @property
    def report_pdf(self) -> Path: return self.path / "report.pdf"
    @property
    def lock(self) -> Path: return self.path / LOCK_NAME
    @property  # config job: tinymatch.environment.environment_info() of the run (train writes it)
    def environment(self) -> Path: return self.path / "environment.json"

    # folders
    @property
    def checkpoint(self) -> Path: return self.path / "checkpoints" / "last"
    @property
    def checkpoint_model(self) -> Path: return self.checkpoint / "training.keras"
    @property
    def checkpoint_state(self) -> Path: return self.checkpoint / "state.json"
    @property
    def tensorboard(self) -> Path: return self.path / "tensorboard"
    @property
    def projector(self) -> Path: return self.tensorboard / "projector"
    @property
    def embeddings(self) -> Path: return self.path / "embeddings"
    @property
    def pairs(self) -> Path: return self.path / "pairs"
    @property
    def evaluation(self) -> Path: return self.path / "evaluation"
    @property
    def notebooks(self) -> Path: return self.path / "notebooks"
    @property
    def figs(self) -> Path: return self.path / "figs"

    def pairs_file(self, protocol: str, part: str) -> Path:
        return self.pairs / f"{protocol}_{part}.npz"

    def evaluation_file(self, protocol: str, model: str) -> Path:
        return self.evaluation / f"{protocol}_{model}.npz"


# --- history.csv: the one reader and writer -------------------------------------------------------

def write_history(run_dir: str | os.PathLike, rows: list[dict]) -> Path:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _format(row.get(k, "")) for k in HISTORY_COLUMNS})
    return atomic_write_text(RunDir(run_dir).history, buffer.getvalue())


def read_history(run_dir: str | os.PathLike) -> list[dict]:
    """history.csv as a list of row dicts (numbers as floats, `phase` as text); [] when absent."""
    path = RunDir(run_dir).history
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return [{k: _maybe_float(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def history_columns(rows: list[dict]) -> dict[str, list]:
    """Row dicts -> {column: values}, the shape plots take."""
    return {name: [row.get(name) for row in rows] for name in HISTORY_COLUMNS}


def _format(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else value


def _maybe_float(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


# --- reading a whole run --------------------------------------------------------------------------

def read_json_if_present(path: Path) -> Any:
    return read_json(path) if path.is_file() else None


# --- lock and leftovers ---------------------------------------------------------------------------

def _lock_holder(lock: Path) -> tuple[int, str]:
    try:
        text = lock.read_text()
    except (FileNotFoundError, IsADirectoryError, UnicodeDecodeError):
        return 0, ""
    first, _, rest = text.partition("\n")
    try:
        return int(first.strip()), rest.strip()
    except ValueError:
        return 0, ""


@contextmanager
def locked(directory: str | os.PathLike, *, what: str = "run directory", wait: float = 0.0,
           poll: float = 0.5) -> Iterator[Path]:
    """Hold `directory/.lock` for the duration: one process at a time works in a directory.

    The lock is an `fcntl.flock` on the file (released by the kernel when the holder dies, so a
    killed process never leaves a stale lock) whose text names the holder (pid, host, command).
    A second process waits up to `wait` seconds, then raises RunLockedError naming the holder.
    """
    import fcntl
    import socket
    import sys

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lock_path = directory / LOCK_NAME
    handle = open(lock_path, "a+")
    deadline = time.monotonic() + wait
    try:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    pid, detail = _lock_holder(lock_path)
                    holder = f"process {pid} ({detail})" if pid else "another process"
                    raise RunLockedError(f"{directory}: the {what} is in use by {holder}; wait for it "
                                         f"to finish or use another directory") from None
                time.sleep(poll)
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n{socket.gethostname()} {' '.join(sys.argv)[:200]}\n")
        handle.flush()
        yield lock_path
    finally:
        handle.close()  # closing releases the flock


def remove_leftovers(directory: str | os.PathLike, *, recursive_into: tuple[str, ...] = ("checkpoints",)) -> list[Path]:
    """Remove temporaries (`.<name>.*.tmp*`) a killed writer left in `directory`.

    Call it only while holding `locked(directory)`: then no live process of ours can own them.
    Looks in the directory itself and in the named sub-folders. Returns what was removed.
    """
    directory = Path(directory)
    removed = []
    folders = [directory] + [directory / name for name in recursive_into]
    for folder in folders:
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            if entry.name.startswith(".") and TEMP_SUFFIX in entry.name and entry.name != LOCK_NAME:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
                removed.append(entry)
    return removed


# --- report job: everything the report reads from a run directory ---------------------------------

# RunDir properties, read by read_run when present (each optional: older runs lack error_analysis)
RUN_JSON_FILES = ("metrics", "data_facts", "model_facts", "training", "error_analysis")


def read_run(run_dir: str | os.PathLike) -> dict[str, Any]:
    """A run directory as one dict: `run_dir`, `config` (a Config), the JSON files that exist
    (`metrics`, `data_facts`, `model_facts`, `training`, `error_analysis`) and `history`
    ({column: values}, the shape `history_columns` gives) when history.csv exists. Missing files
    are left out."""
    paths = RunDir(run_dir)
    run: dict[str, Any] = {"run_dir": paths.path, "config": Config.load(paths.config)}
    for name in RUN_JSON_FILES:
        value = read_json_if_present(getattr(paths, name))
        if value is not None:
            run[name] = value
    if paths.history.is_file():
        run["history"] = history_columns(read_history(paths.path))
    return run


# --- evaluate job: the evaluation arrays (pairs/ and evaluation/ .npz files) ----------------------
# pairs/<protocol>_<part>.npz: positions into the part, whether each pair shares a class, and the
# part's dataset indices. evaluation/<protocol>_<model>.npz: what the report plots of one
# (protocol, model): pair distances per part (with dataset indices), ROC and histograms of the test
# part, and the test part's retrieval neighbours (dataset indices).
PAIRS_ARRAY_KEYS = ("first", "second", "same", "indices")
EVALUATION_PART_KEYS = ("distances", "same", "first", "second")  # stored as "<part>_<key>"
EVALUATION_ARRAY_KEYS = ("threshold", "roc_far", "roc_tar", "roc_thresholds", "hist_bins",
                         "hist_positive", "hist_negative", "retrieval_queries", "retrieval_labels",
                         "neighbours", "neighbour_distances")


def evaluation_array_keys(parts: tuple[str, ...] = ("val", "test")) -> tuple[str, ...]:
    """Every key of an evaluation/ file whose pairs cover `parts` (official-val: ("test",))."""
    return EVALUATION_ARRAY_KEYS + tuple(f"{part}_{key}" for part in parts for key in EVALUATION_PART_KEYS)


def _read_arrays(path: Path, what: str, required: tuple[str, ...]) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path} (evaluate the run first)")
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {key: stored[key] for key in stored.files}
    except (OSError, ValueError, EOFError) as err:
        raise ValueError(f"{path}: not an .npz file of {what}: {err}") from None
    missing = [key for key in required if key not in arrays]
    if missing:
        raise ValueError(f"{path}: {what} without {', '.join(missing)}")
    return arrays


def read_evaluation_arrays(run_dir: str | os.PathLike, protocol: str, model: str = "trained") -> dict:
    """RUN_DIR/evaluation/<protocol>_<model>.npz as {key: array} (keys: `evaluation_array_keys`)."""
    return _read_arrays(RunDir(run_dir).evaluation_file(protocol, model), "evaluation arrays",
                        evaluation_array_keys(("test",)))


def read_pairs_arrays(run_dir: str | os.PathLike, protocol: str, part: str) -> dict:
    """RUN_DIR/pairs/<protocol>_<part>.npz as {key: array} (keys: PAIRS_ARRAY_KEYS)."""
    return _read_arrays(RunDir(run_dir).pairs_file(protocol, part), "evaluation pairs", PAIRS_ARRAY_KEYS)


def write_evaluation_arrays(run_dir: str | os.PathLike, protocol: str, model: str, arrays: dict) -> Path:
    """Write RUN_DIR/evaluation/<protocol>_<model>.npz atomically; refuses a file without the keys
    the readers need."""
    missing = [key for key in evaluation_array_keys(("test",)) if key not in arrays]
    if missing:
        raise ValueError(f"evaluation arrays of {protocol}/{model} without {', '.join(missing)}")
    return atomic_save_arrays(RunDir(run_dir).evaluation_file(protocol, model), **arrays)


__all__ = ["RunDir", "HISTORY_COLUMNS", "RunLockedError", "read_history", "write_history",
           "history_columns", "locked", "remove_leftovers", "read_json_if_present"]
__all__ += ["read_run", "RUN_JSON_FILES"]  # report job
__all__ += ["PAIRS_ARRAY_KEYS", "EVALUATION_PART_KEYS", "EVALUATION_ARRAY_KEYS", "evaluation_array_keys",
            "read_evaluation_arrays", "read_pairs_arrays", "write_evaluation_arrays"]  # evaluate job


# --- tuning study directory (tune job) -----------------------------------------------------------
# A study directory holds one Optuna study: its SQLite storage (optuna-dashboard opens it), the
# best trial's full config, and one ordinary run directory per trial (with trial.json: the
# trial's number, state (COMPLETE / PRUNED / FAIL), value and params).

TRIAL_RECORD_NAME = "trial.json"


@dataclass(frozen=True)
class StudyDir:
    """Paths of one study directory. Creating the object touches nothing on disk."""

    path: Path

    def __init__(self, path: str | os.PathLike) -> None:
        object.__setattr__(self, "path", Path(path))

    def __fspath__(self) -> str:  # a StudyDir is accepted wherever a path is
        return str(self.path)

    @property
    def storage(self) -> Path: return self.path / "study.db"
    @property
    def storage_url(self) -> str: return f"sqlite:///{self.storage.resolve()}"
    @property
    def best_config(self) -> Path: return self.path / "best_config.json"
    @property
    def trials(self) -> Path: return self.path / "trials"

    def trial_dir(self, number: int) -> Path:
        """The run directory of trial `number` (zero-padded, so listings sort by number)."""
        return self.trials / f"{number:04d}"


def trial_record(run_dir: str | os.PathLike) -> Path:
    """A trial's record in its run directory (written by tinymatch.tune)."""
    return Path(run_dir) / TRIAL_RECORD_NAME


__all__ += ["StudyDir", "TRIAL_RECORD_NAME", "trial_record"]  # tune job


# --- ablation directory (ablation job) -----------------------------------------------------------
# An ablation directory holds one run directory per (variant, seed) and ablation.json, the summary.

@dataclass(frozen=True)
class AblationDir:
    """Paths of one ablation directory. Creating the object touches nothing on disk."""

    path: Path

    def __init__(self, path: str | os.PathLike) -> None:
        object.__setattr__(self, "path", Path(path))

    def __fspath__(self) -> str:
        return str(self.path)

    @property
    def summary(self) -> Path: return self.path / "ablation.json"

    def run_dir(self, variant: str, seed: int) -> Path:
        """The run directory of one variant and seed."""
        return self.path / variant / f"seed-{seed}"


__all__ += ["AblationDir"]  # ablation job


# --- the run's split (data job) -------------------------------------------------------------------

def run_splits(run_dir: str | os.PathLike, dataset, config, *, save: bool = False):
    """The `tinymatch.data.Splits` of a run: its split.csv when it exists (what the run was trained
    on), else a fresh seeded split of `dataset` for `config`, written there when `save` (training
    does; evaluation only reads)."""
    # Imported here, not at the top: tinymatch.data imports this module (cache lock), so a
    # top-level import would be circular.
    from tinymatch.data.splits import Splits, make_splits_for

    path = RunDir(run_dir).split
    if path.is_file():
        return Splits.load(path, dataset)
    splits = make_splits_for(dataset, config)
    if save:
        splits.save(path)  # atomic
    return splits


__all__ += ["run_splits"]  # data job
