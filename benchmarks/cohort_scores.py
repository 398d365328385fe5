"""Validation pair AUC of a trained run when a pair's score also uses the training images.

Two inference-time scorings that need no new training, measured against the plain distance the
evaluation uses (cosine of the flip-averaged unit embeddings; ranks pairs as the L2 distance does):
- **Cohort score normalisation** (adaptive S-norm from speaker verification, mean-only variant):
  `cos(a, b) - (mu_a + mu_b) / 2`, where `mu_x` is the mean cosine of `x` to its `k` nearest
  training images. It discounts images that are close to everything (hubs). With `k` = the whole
  cohort, `mu_x` is `x . m` for the cohort's mean embedding `m`: one vector to ship, the
  `training-mean` score normalisation of `tinymatch.metrics` (also scored here, as shipped, with
  its precision@1 on the validation selection).
- **Class-centroid posteriors**: the softmax over the cosine to each training class's mean
  embedding, at a temperature; a pair scores the dot product of its two posteriors, alone or
  added to the cosine. It asks "would both images be filed under the same training class?".

The cohort is a seeded sample of the run's training part (never a val or test image). Scored on
the run's own validation selection and pairs (those its training picked its epoch on), so it
never touches a test part and its answer can steer a choice.

The cohort size and the temperature are free choices, so the script also splits the validation
classes in two seeded halves: the best scoring is chosen on the pairs within the first half's
classes and reported on the pairs within the second's (pairs across the halves are left out of
both), which says how much of a gain survives choosing it.

Usage:
    python benchmarks/cohort_scores.py runs/lad1337 runs/lad1338
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from run_validation import embed_val_and_cohort, main_over_runs, run_validation
NEIGHBOURS = (50, 200, 1000)
TEMPERATURE_SCALES = (10, 20, 40)
POSTERIOR_WEIGHTS = (0.3, 1.0)
# The shipped normalisation subtracts (a.m + b.m) / 2; these weigh that term otherwise (1 = shipped).
TRAINING_MEAN_WEIGHTS = (0.5, 1.5, 2.0)


def mean_neighbour_similarity(similarities: np.ndarray, k: int) -> np.ndarray:
    """Each row's mean over its k largest entries (rows: images; columns: the cohort)."""
    return -np.mean(np.partition(-similarities, k - 1, axis=1)[:, :k], axis=1)


def class_posteriors(similarities: np.ndarray, scale: float) -> np.ndarray:
    """Softmax over classes of `scale` x cosine to each class centroid."""
    logits = scale * (similarities - similarities.max(axis=1, keepdims=True))
    weights = np.exp(logits)
    return weights / weights.sum(axis=1, keepdims=True)


def score_run(run_dir: Path) -> dict:
    from tinymatch.metrics import pair_distances, retrieval_metrics, roc_auc

    validation = run_validation(run_dir)
    config, dataset, pairs = validation.config, validation.dataset, validation.pairs
    embedded = embed_val_and_cohort(run_dir, validation)
    val, cohort_embeddings, cohort_labels = embedded.val, embedded.cohort, embedded.cohort_labels
    first, second = pairs.first, pairs.second
    cosine = np.sum(val[first] * val[second], axis=1)

    plain = "cosine (as evaluated)"
    similarity_of = {plain: cosine}  # scoring -> each pair's similarity (larger = more alike)
    similarities = val @ cohort_embeddings.T
    for k in NEIGHBOURS:
        mu = mean_neighbour_similarity(similarities, k)
        similarity_of[f"cohort-normalised, k={k}"] = cosine - 0.5 * (mu[first] + mu[second])
    shipped = "training mean (as shipped: tinymatch.metrics)"
    training_mean = cohort_embeddings.mean(axis=0)
    similarity_of[shipped] = 1 - pair_distances(val, pairs, "angular", training_mean=training_mean)
    typical = val @ training_mean
    for weight in TRAINING_MEAN_WEIGHTS:
        similarity_of[f"training mean, {weight} x its term"] = cosine - weight * 0.5 * (typical[first] + typical[second])
    classes = np.unique(cohort_labels)
    centroids = np.stack([cohort_embeddings[cohort_labels == c].mean(axis=0) for c in classes])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    to_centroids = val @ centroids.T
    for scale in TEMPERATURE_SCALES:
        posteriors = class_posteriors(to_centroids, scale)
        agreement = np.sum(posteriors[first] * posteriors[second], axis=1)
        similarity_of[f"centroid posteriors, scale {scale}"] = agreement
        for weight in POSTERIOR_WEIGHTS:
            similarity_of[f"cosine + {weight} x centroid posteriors, scale {scale}"] = cosine + weight * agreement

    def auc(similarity, mask=slice(None)):  # roc_auc takes distances: smaller = more alike
        return round(roc_auc(-similarity[mask], pairs.same[mask]), 4)

    scores = {name: auc(similarity) for name, similarity in similarity_of.items()}
    labels = np.asarray(dataset.labels[validation.chosen])
    scores["precision@1: cosine / training mean"] = tuple(
        round(retrieval_metrics(val, labels, distance_metric="angular", training_mean=mean)["precision_at_1"], 4)
        for mean in (None, training_mean))
    choosing, confirming = class_half_masks(labels, first, second, config.seed)
    on_first_half = {name: auc(similarity, choosing) for name, similarity in similarity_of.items()}
    chosen = max((name for name in similarity_of if name != plain), key=on_first_half.get)
    scores[f"held out: chosen on the first half's {choosing.sum()} pairs"] = chosen
    scores["held out: cosine / chosen, first half"] = (on_first_half[plain], on_first_half[chosen])
    scores[f"held out: cosine / chosen, second half ({confirming.sum()} pairs)"] = (
        auc(cosine, confirming), auc(similarity_of[chosen], confirming))
    return scores


def class_half_masks(labels: np.ndarray, first: np.ndarray, second: np.ndarray, seed: int):
    """(pairs within the first half of the classes, pairs within the second): the classes of
    `labels` in two seeded halves; a pair across the halves is in neither."""
    classes = np.random.default_rng(seed).permutation(np.unique(labels))
    in_first = np.isin(labels, classes[: len(classes) // 2])
    return in_first[first] & in_first[second], ~in_first[first] & ~in_first[second]


def main(argv=None) -> int:
    return main_over_runs(score_run, __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
