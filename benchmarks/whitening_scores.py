"""Validation pair AUC and precision@1 of a trained run when the embeddings are centred, whitened
or within-class normalised with statistics of the training images, before the cosine.

Inference-time transforms learnt from the run's own training images (never a val or test image),
measured against the plain cosine and the shipped `training-mean` score normalisation:
- **centred**: `unit(x - m)` with `m` the training images' mean embedding (the mean-only
  normalisation subtracts `m`'s share of the score; this removes it from the vectors);
- **PCA whitening** with a power (Jégou and Chum 2012, "Negative evidences and co-occurrences in
  image retrieval"): `unit(diag((l + s * mean(l)) ** -p/2) U^T (x - m))` over the training
  covariance's eigen-pairs (l, U), shrinkage `s` against tiny eigenvalues;
- **within-class covariance normalisation** (WCCN, Hatch et al. 2006, from speaker verification):
  `unit(W^-1/2 (x - m))` with `W` the training images' covariance around their class means,
  shrunk towards its mean eigenvalue by `s`. It damps the directions in which images of one
  class vary, learnt from the training classes, so on unseen classes it helps only as far as
  those directions are shared.

Same protocol as `cohort_scores.py`: the run's own validation selection and pairs; the best
transform is chosen on the pairs within one seeded half of the validation classes and reported on
the other half's, which says how much of a gain survives choosing it.

Usage:
    python benchmarks/whitening_scores.py runs/auto_1337 runs/auto_1338
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from cohort_scores import class_half_masks
from run_validation import embed_val_and_cohort, main_over_runs, run_validation, unit

WHITENING_POWERS = (0.25, 0.5, 1.0)
WHITENING_SHRINKAGE = (0.1, 1.0)
WCCN_SHRINKAGE = (0.1, 0.3, 0.6)


def covariance_eigen(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(eigenvalues, eigenvectors) of the rows' covariance: one decomposition serves every
    whitening power and shrinkage."""
    return np.linalg.eigh(np.cov(vectors, rowvar=False))


def pca_whitening(eigen: tuple[np.ndarray, np.ndarray], power: float, shrinkage: float) -> np.ndarray:
    """The matrix that whitens centred rows to `power` (1: full) over the covariance's `eigen`."""
    eigenvalues, eigenvectors = eigen
    eigenvalues = np.clip(eigenvalues, 0, None) + shrinkage * eigenvalues.mean()
    return eigenvectors * eigenvalues ** (-power / 2)


def within_class_covariance(vectors: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The rows' covariance around their class means."""
    centred = vectors.copy()
    for label in np.unique(labels):
        members = labels == label
        centred[members] -= vectors[members].mean(axis=0)
    return centred.T @ centred / len(vectors)


def within_class_normalisation(within: np.ndarray, shrinkage: float) -> np.ndarray:
    """The matrix `W^-1/2` for the within-class covariance `within` shrunk towards its mean
    eigenvalue by `shrinkage`."""
    dimension = len(within)
    shrunk = (1 - shrinkage) * within + shrinkage * np.trace(within) / dimension * np.eye(dimension)
    eigenvalues, eigenvectors = np.linalg.eigh(shrunk)
    return eigenvectors * np.clip(eigenvalues, 1e-12, None) ** -0.5


def score_run(run_dir: Path) -> dict:
    from tinymatch.metrics import pair_distances, retrieval_metrics, roc_auc

    validation = run_validation(run_dir)
    config, dataset, pairs = validation.config, validation.dataset, validation.pairs
    embedded = embed_val_and_cohort(run_dir, validation)
    val, cohort_embeddings = embedded.val.astype(np.float64), embedded.cohort.astype(np.float64)
    cohort_labels = embedded.cohort_labels
    labels = np.asarray(dataset.labels[validation.chosen])
    training_mean = cohort_embeddings.mean(axis=0)

    centred_val = val - training_mean
    plain, shipped = "cosine (as evaluated)", "training mean (as shipped)"
    vectors_of = {plain: val, "centred": unit(centred_val)}
    eigen = covariance_eigen(cohort_embeddings)
    for power in WHITENING_POWERS:
        for shrinkage in WHITENING_SHRINKAGE:
            vectors_of[f"PCA whitening, power {power}, shrinkage {shrinkage}"] = unit(
                centred_val @ pca_whitening(eigen, power, shrinkage))
    within = within_class_covariance(cohort_embeddings, cohort_labels)
    for shrinkage in WCCN_SHRINKAGE:
        vectors_of[f"WCCN, shrinkage {shrinkage}"] = unit(
            centred_val @ within_class_normalisation(within, shrinkage))

    # The shipped scoring, on float32 vectors as tinymatch.metrics gets them.
    val32, training_mean32 = embedded.val, training_mean.astype(np.float32)
    first, second = pairs.first, pairs.second
    similarity_of = {name: np.sum(v[first] * v[second], axis=1) for name, v in vectors_of.items()}
    similarity_of[shipped] = 1 - pair_distances(val32, pairs, "angular", training_mean=training_mean32)

    def auc(similarity, mask=slice(None)):  # roc_auc takes distances: smaller = more alike
        return round(roc_auc(-similarity[mask], pairs.same[mask]), 4)

    def precision_at_1(name):
        vectors, mean = ((val32, training_mean32) if name == shipped
                         else (vectors_of[name].astype(np.float32), None))
        return retrieval_metrics(vectors, labels, distance_metric="angular",
                                 training_mean=mean)["precision_at_1"]

    scores = {name: (auc(similarity), round(precision_at_1(name), 4))
              for name, similarity in similarity_of.items()}
    choosing, confirming = class_half_masks(labels, first, second, config.seed)
    on_first_half = {name: auc(similarity, choosing) for name, similarity in similarity_of.items()}
    chosen = max((name for name in similarity_of if name not in (plain, shipped)), key=on_first_half.get)
    scores[f"held out: chosen on the first half's {choosing.sum()} pairs"] = chosen
    scores["held out: cosine / shipped / chosen, first half"] = (
        on_first_half[plain], on_first_half[shipped], on_first_half[chosen])
    scores[f"held out: cosine / shipped / chosen, second half ({confirming.sum()} pairs)"] = tuple(
        auc(similarity_of[name], confirming) for name in (plain, shipped, chosen))
    return scores


def main(argv=None) -> int:
    print("each scoring: (val pair AUC, val precision@1)")
    return main_over_runs(score_run, __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
