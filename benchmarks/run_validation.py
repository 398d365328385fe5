"""What the validation-only benchmark scripts share: a finished run's own validation selection and
pairs (the ones its training picked its epoch on: `tinymatch.train`), its trained embedding, and a
command line that scores each run directory it is given.

Used by `preprojection_auc.py`, `test_time_views.py`, `cohort_scores.py` and
`whitening_scores.py`. None of them touches a test part, so their answers can steer a choice.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))


def unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@dataclass(frozen=True)
class RunValidation:
    config: Any  # tinymatch.config.Config
    dataset: Any  # tinymatch.data dataset: images and labels of the whole zip
    splits: Any  # the run's split (split.csv: read, never written)
    chosen: np.ndarray  # dataset indices of the validation selection
    images: np.ndarray  # their images, float32
    pairs: Any  # the validation pairs over `chosen` (first, second, same)


def run_validation(run_dir: Path) -> RunValidation:
    """The run's validation selection and pairs, exactly as its per-epoch val AUC used them."""
    from tinymatch import data, rundir
    from tinymatch.config import Config
    from tinymatch.train import val_selection_indices, val_selection_pairs

    config = Config.load(run_dir / "config.json")
    dataset = data.load_dataset_for(config, progress=False)
    splits = rundir.run_splits(run_dir, dataset, config)
    chosen = val_selection_indices(splits.indices(config.protocol, "val"), config.seed)
    pairs = val_selection_pairs(np.asarray(dataset.labels[chosen]), config)
    return RunValidation(config, dataset, splits, chosen,
                         np.asarray(dataset.images[chosen], dtype=np.float32), pairs)


def trained_embedding(run_dir: Path, flip_averaged: bool):
    """The run's model.keras: the flip-averaging wrapper as evaluated, or the embedding inside it."""
    from tinymatch.embed import load_embedding_model

    model = load_embedding_model(run_dir / "model.keras")
    if not flip_averaged and "embedding" in [layer.name for layer in model.layers]:
        model = model.get_layer("embedding")
    return model


COHORT_IMAGES = 15_000  # a fifth of the joint protocol's training part


@dataclass(frozen=True)
class CohortEmbeddings:
    val: np.ndarray  # the validation selection's embeddings (flip-averaged, as evaluated)
    cohort: np.ndarray  # those of a seeded sample of the run's training images
    cohort_labels: np.ndarray


def embed_val_and_cohort(run_dir: Path, validation: RunValidation,
                         cohort_images: int = COHORT_IMAGES) -> CohortEmbeddings:
    """The run's trained embedding (as evaluated) of its validation selection and of a seeded
    sample of `cohort_images` of its training part (never a val or test image)."""
    config, dataset = validation.config, validation.dataset
    training = validation.splits.indices(config.protocol, "train")
    cohort = np.sort(np.random.default_rng(config.seed).permutation(training)[:cohort_images])
    model = trained_embedding(run_dir, flip_averaged=True)

    def embed(images):
        return np.asarray(model.predict(images, batch_size=500, verbose=0))

    return CohortEmbeddings(embed(validation.images),
                            embed(np.asarray(dataset.images[cohort], np.float32)),
                            np.asarray(dataset.labels[cohort]))


def print_scores(run_dir: Path, scores: dict, seconds: float) -> None:
    print(run_dir, f"({seconds:.0f} s)")
    for name, value in scores.items():
        print(f"  {name}: {value}")


def main_over_runs(score_run: Callable[[Path], dict], usage: str, argv=None,
                   show: Callable[[Path, dict, float], None] = print_scores) -> int:
    """Score each finished run directory named on the command line; 2 (and why) when none is named
    or one has no model.keras."""
    run_dirs = [Path(arg) for arg in (sys.argv[1:] if argv is None else argv)]
    if not run_dirs:
        print(usage)
        return 2
    for run_dir in run_dirs:
        if not (run_dir / "model.keras").is_file():
            print(f"{run_dir}: no model.keras (a finished training run's directory is needed)", file=sys.stderr)
            return 2
        started = time.perf_counter()
        scores = score_run(run_dir)
        show(run_dir, scores, time.perf_counter() - started)
    return 0
