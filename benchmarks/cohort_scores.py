"""Validation pair AUC of a trained run when a pair's score also uses the training images.

Two inference-time scorings that need no new training, measured against the plain distance the
evaluation uses (cosine of the flip-averaged unit embeddings; ranks pairs as the L2 distance does):
- **Cohort score normalisation** (adaptive S-norm from speaker verification, mean-only variant):
  `cos(a, b) - (mu_a + mu_b) / 2`, where `mu_x` is the mean cosine of `x` to its `k` nearest
  training images. It discounts images that are close to everything (hubs).
- **Class-centroid posteriors**: the softmax over the cosine to each training class's mean
  embedding, at a temperature; a pair scores the dot product of its two posteriors, alone or
  added to the cosine. It asks "would both images be filed under the same training class?".

The cohort is a seeded sample of the run's training part (never a val or test image). Scored on
the run's own validation selection and pairs (those its training picked its epoch on), so it
never touches a test part and its answer can steer a choice.

Usage:
    python benchmarks/cohort_scores.py runs/lad1337 runs/lad1338
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

COHORT_IMAGES = 15_000  # a fifth of the joint protocol's training part
NEIGHBOURS = (50, 200, 1000)
TEMPERATURE_SCALES = (10, 20, 40)
POSTERIOR_WEIGHTS = (0.3, 1.0)


def mean_neighbour_similarity(similarities: np.ndarray, k: int) -> np.ndarray:
    """Each row's mean over its k largest entries (rows: images; columns: the cohort)."""
    return -np.mean(np.partition(-similarities, k - 1, axis=1)[:, :k], axis=1)


def class_posteriors(similarities: np.ndarray, scale: float) -> np.ndarray:
    """Softmax over classes of `scale` x cosine to each class centroid."""
    logits = scale * (similarities - similarities.max(axis=1, keepdims=True))
    weights = np.exp(logits)
    return weights / weights.sum(axis=1, keepdims=True)


def score_run(run_dir: Path) -> dict:
    from tinymatch import data, rundir
    from tinymatch.config import Config
    from tinymatch.embed import load_embedding_model
    from tinymatch.metrics import roc_auc
    from tinymatch.train import val_selection_indices, val_selection_pairs

    config = Config.load(run_dir / "config.json")
    dataset = data.load_dataset_for(config, progress=False)
    splits = rundir.run_splits(run_dir, dataset, config)  # the run's split.csv: read, never written
    chosen = val_selection_indices(splits.indices(config.protocol, "val"), config.seed)
    pairs = val_selection_pairs(np.asarray(dataset.labels[chosen]), config)
    training = splits.indices(config.protocol, "train")
    cohort = np.sort(np.random.default_rng(config.seed).permutation(training)[:COHORT_IMAGES])
    model = load_embedding_model(run_dir / "model.keras")  # flip-averaged, as evaluated

    def embed(indices):
        return np.asarray(model.predict(np.asarray(dataset.images[indices], np.float32),
                                        batch_size=500, verbose=0))

    val, cohort_embeddings = embed(chosen), embed(cohort)
    cohort_labels = np.asarray(dataset.labels[cohort])
    first, second = pairs.first, pairs.second
    cosine = np.sum(val[first] * val[second], axis=1)

    def auc(similarity):  # roc_auc takes distances: smaller = more alike
        return round(roc_auc(-similarity, pairs.same), 4)

    scores = {"cosine (as evaluated)": auc(cosine)}
    similarities = val @ cohort_embeddings.T
    for k in NEIGHBOURS:
        mu = mean_neighbour_similarity(similarities, k)
        scores[f"cohort-normalised, k={k}"] = auc(cosine - 0.5 * (mu[first] + mu[second]))
    classes = np.unique(cohort_labels)
    centroids = np.stack([cohort_embeddings[cohort_labels == c].mean(axis=0) for c in classes])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    to_centroids = val @ centroids.T
    for scale in TEMPERATURE_SCALES:
        posteriors = class_posteriors(to_centroids, scale)
        agreement = np.sum(posteriors[first] * posteriors[second], axis=1)
        scores[f"centroid posteriors, scale {scale}"] = auc(agreement)
        for weight in POSTERIOR_WEIGHTS:
            scores[f"cosine + {weight} x centroid posteriors, scale {scale}"] = auc(cosine + weight * agreement)
    return scores


def main(argv=None) -> int:
    run_dirs = [Path(arg) for arg in (sys.argv[1:] if argv is None else argv)]
    if not run_dirs:
        print(__doc__)
        return 2
    for run_dir in run_dirs:
        if not (run_dir / "model.keras").is_file():
            print(f"{run_dir}: no model.keras (a finished training run's directory is needed)", file=sys.stderr)
            return 2
        started = time.perf_counter()
        scores = score_run(run_dir)
        print(run_dir, f"({time.perf_counter() - started:.0f} s)")
        for name, value in scores.items():
            print(f"  {name}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
