"""A run directory -> the inputs of the report's figures (`tinymatch.plots` takes them as they are).

Everything here reads what training and evaluation wrote (`history.csv`, `metrics.json`, the
per-(split, model) arrays in `evaluation/`), through `tinymatch.rundir`, and reshapes it; nothing
is computed again.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np

from tinymatch.config import EVALUATION_SPLITS, MODEL_NAMES, SPLIT_EVALUATIONS
from tinymatch.rundir import RunDir, history_columns, read_history

# How figures and tables name the models every evaluation scores (config.MODEL_NAMES).
MODEL_LABELS = {"trained": "trained model", "untrained": "untrained network", "raw_pixels": "raw pixels"}


def protocols_in(metrics: Mapping[str, Any], *, official_val: bool = False) -> list[str]:
    """Evaluation splits in `metrics` with a trained model (seen, unseen; official-val when asked)."""
    names = EVALUATION_SPLITS if official_val else SPLIT_EVALUATIONS
    return [p for p in names if isinstance(metrics.get(p), dict) and "trained" in metrics[p]]


def evaluation_arrays(run_dir, protocol: str, model: str = "trained") -> dict[str, np.ndarray]:
    """The plot arrays `tinymatch.evaluate` saved for one (split, model)."""
    path = RunDir(run_dir).evaluation_file(protocol, model)
    if not path.is_file():
        raise FileNotFoundError(f"evaluation arrays not found: {path} (run 03_evaluate first)")
    with np.load(path) as arrays:
        return {key: arrays[key] for key in arrays.files}


def retrieval_labels(run_dir, protocol: str, model: str = "trained") -> np.ndarray:
    """Only the retrieval queries' labels of one (split, model): the other arrays stay on disk."""
    path = RunDir(run_dir).evaluation_file(protocol, model)
    if not path.is_file():
        raise FileNotFoundError(f"evaluation arrays not found: {path} (run 03_evaluate first)")
    with np.load(path) as arrays:
        return arrays["retrieval_labels"]


def roc_inputs(run_dir, metrics) -> tuple[dict, dict]:
    """({split: {model label: (far, tar, auc)}}, {split: (far, tar)}) for plots.roc."""
    curves, points = {}, {}
    for protocol in protocols_in(metrics):
        named = {}
        for model in MODEL_NAMES:
            if model in metrics[protocol]:
                arrays = evaluation_arrays(run_dir, protocol, model)
                named[MODEL_LABELS[model]] = (arrays["roc_far"], arrays["roc_tar"],
                                              metrics[protocol][model]["test"]["roc_auc"])
        curves[protocol] = named
        points[protocol] = operating_point(metrics[protocol]["trained"]["test"]["confusion"])
    return curves, points


def operating_point(confusion: Mapping[str, Any]) -> tuple[float, float]:
    """(false accept rate, true accept rate) of a confusion matrix [[tn, fp], [fn, tp]]."""
    (tn, fp), (fn, tp) = confusion["matrix"]
    return fp / max(tn + fp, 1), tp / max(fn + tp, 1)


def confusion_inputs(metrics) -> dict[str, list]:
    return {p: metrics[p]["trained"]["test"]["confusion"]["matrix"] for p in protocols_in(metrics)}


def score_normalisation(metrics: Mapping[str, Any]) -> str:
    """How a metrics.json scored its pairs ("none" for one written before the setting existed)."""
    return metrics.get("score_normalisation", "none")


def distance_axis_label(metrics) -> str:
    """What the pair distances of `metrics` measure, for a figure's axis."""
    if score_normalisation(metrics) == "training-mean":
        return "embedding distance, normalised by the training mean"
    return "embedding distance"


def histogram_inputs(run_dir, metrics) -> dict[str, tuple]:
    groups = {}
    for protocol in protocols_in(metrics):
        arrays = evaluation_arrays(run_dir, protocol)
        groups[protocol] = (arrays["test_distances"], arrays["test_same"], metrics[protocol]["trained"]["threshold"])
    return groups


def retrieval_inputs(run_dir, dataset, protocol: str = "seen", *, queries: int = 6, seed: int = 0) -> dict:
    """Keyword arguments of plots.retrieval_examples for `queries` random test queries."""
    arrays = evaluation_arrays(run_dir, protocol)
    query_indices, neighbours = arrays["retrieval_queries"], arrays["neighbours"][:, :5]
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(query_indices), size=min(queries, len(query_indices)), replace=False))
    labels, names = np.asarray(dataset.labels), dataset.class_names
    chosen, found = query_indices[rows], neighbours[rows]
    return {
        "query_images": np.asarray(dataset.images[chosen]),
        "neighbour_images": np.asarray(dataset.images[found.reshape(-1)]).reshape(
            *found.shape, *dataset.images.shape[1:]),
        "correct": labels[found] == labels[chosen][:, None],
        "query_names": [names[labels[i]] for i in chosen],
        "neighbour_names": [[names[labels[i]] for i in row] for row in found],
    }


def history_arrays(columns: Mapping[str, Sequence]) -> dict[str, np.ndarray]:
    """`rundir.history_columns` -> {column: array}: numbers as floats (blank -> NaN), a text
    column (phase) as text; columns the file does not have (all None) are left out."""
    arrays = {}
    for name, values in columns.items():
        if all(value is None for value in values):
            continue
        if any(isinstance(value, str) and value.strip() for value in values):
            arrays[name] = np.array(["" if value is None else str(value) for value in values])
        else:
            arrays[name] = np.array([value if isinstance(value, (int, float)) else np.nan for value in values],
                                    dtype=float)
    return arrays


def run_history(run: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The training history of a `rundir.read_run` dict as arrays ({} when the run has none)."""
    return history_arrays(run.get("history", {}))


def training_history(run_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """RUN_DIR/history.csv as plots.training_curves takes it."""
    path = RunDir(run_dir).history
    if not path.is_file():
        raise FileNotFoundError(f"training history not found: {path} (run 02_train first)")
    return history_arrays(history_columns(read_history(run_dir)))


__all__ = ["MODEL_LABELS", "protocols_in", "evaluation_arrays", "roc_inputs", "operating_point",
           "confusion_inputs", "histogram_inputs", "retrieval_inputs", "history_arrays", "run_history", "training_history"]
