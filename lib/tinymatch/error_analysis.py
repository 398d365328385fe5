"""Error analysis of a trained run: where and how the model fails, from what evaluation saved.

Everything here reads the per-(protocol, model) arrays of `evaluation/` (pair distances with the
dataset indices of both images, the frozen threshold, the test queries' neighbours) plus the
dataset's labels; nothing is embedded again. The pure functions follow `tinymatch.metrics`'
conventions: smaller distance = more similar, a pair matches when `distance <= threshold`, and ties
in an AUC count one half. `analyse_run` computes them all for each protocol and writes
`RUN_DIR/error_analysis.json` (layout in its docstring); the report maps class ids to names.

- `per_class_scores`: which classes are hard (pair AUC and retrieval P@1 per class).
- `confused_class_pairs`: which classes the threshold mixes up.
- `hardest_errors`: the most confident wrong decisions, for example figures.
- `class_bootstrap_auc_ci`: the AUC's interval when the *classes* are resampled; with few held-out
  classes, which classes were held out matters more than which pairs were drawn.
- `retrieval_chance`: P@1 and MAP@R of a random ranking, to read retrieval figures against.
- `operating_points`: two thresholds chosen on val (best accuracy, a FAR target) judged on test.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from typing import Any, Iterable

import numpy as np

from tinymatch.config import EVALUATION_SPLITS, Config
from tinymatch.io_utils import nan_to_none, write_json
from tinymatch.metrics import as_pair_arrays, choose_threshold, confusion_at_threshold, roc_auc
from tinymatch.rundir import RunDir, read_evaluation_arrays


def _labelled_pairs(distances, same, first_labels, second_labels):
    """(distances, same, first_labels, second_labels) as checked 1-D arrays of one length."""
    distances, same = as_pair_arrays(distances, same)
    first_labels = np.asarray(first_labels).ravel()
    second_labels = np.asarray(second_labels).ravel()
    if not len(first_labels) == len(second_labels) == len(same):
        raise ValueError(f"{len(same)} pairs but {len(first_labels)} first and {len(second_labels)} "
                         "second labels")
    # Catches labels of the wrong images (e.g. positions in a part passed as dataset indices).
    if np.any(same != (first_labels == second_labels)):
        raise ValueError("`same` disagrees with the pairs' labels")
    return distances, same, first_labels, second_labels


# --- which classes are hard -----------------------------------------------------------------------

@dataclass(frozen=True)
class ClassScore:
    """One class's figures (see per_class_scores). roc_auc and precision_at_1 are NaN where
    undefined; num_queries counts the queries its precision_at_1 averages."""

    label: int
    roc_auc: float
    num_pairs: int
    num_positive: int
    num_negative: int
    precision_at_1: float
    num_queries: int


def per_class_scores(distances, same, first_labels, second_labels, query_labels,
                     neighbour_labels) -> list[ClassScore]:
    """Pair AUC and retrieval precision@1 of every class, one ClassScore per class, by label.

    A class's pairs are its positive pairs and every negative pair with the class on either side;
    its AUC is NaN when it has no positive or no negative pair. Its precision@1 is the fraction of
    its queries whose nearest neighbour (`neighbour_labels[:, 0]`) has its label, over the queries
    whose class has another item in the gallery (as `metrics.retrieval_metrics`: the queries are
    the gallery); NaN when there are none. Sort by AUC with `sorted_by_auc`.
    """
    distances, same, first_labels, second_labels = _labelled_pairs(distances, same, first_labels,
                                                                   second_labels)
    query_labels = np.asarray(query_labels).ravel()
    nearest_labels = np.asarray(neighbour_labels).reshape(len(query_labels), -1)[:, 0]
    rows = []
    for label in np.union1d(np.union1d(first_labels, second_labels), query_labels):
        involved = (first_labels == label) | (second_labels == label)
        num_positive = int(np.sum(same & involved))
        num_negative = int(np.sum(~same & involved))
        auc = roc_auc(distances[involved], same[involved]) if num_positive and num_negative else math.nan
        queries = query_labels == label
        num_queries = int(queries.sum()) if queries.sum() >= 2 else 0  # a lone query has no positive
        precision = float(np.mean(nearest_labels[queries] == label)) if num_queries else math.nan
        rows.append(ClassScore(int(label), float(auc), num_positive + num_negative, num_positive,
                               num_negative, precision, num_queries))
    return rows


def sorted_by_auc(rows: Iterable[ClassScore]) -> list[ClassScore]:
    """Worst AUC first, classes without an AUC last; ties by label."""
    return sorted(rows, key=lambda row: (math.isnan(row.roc_auc), row.roc_auc, row.label))


# --- which errors ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class ConfusedPair:
    """An unordered pair of classes (first_label < second_label) and its negative pairs."""

    first_label: int
    second_label: int
    num_negative: int
    false_accepts: int
    mean_distance: float


def confused_class_pairs(distances, same, first_labels, second_labels, threshold: float,
                         top: int = 10) -> list[ConfusedPair]:
    """The `top` unordered class pairs with the most false accepts among their negative pairs.

    Ties (including pairs without any false accept, which fill the list when fewer than `top`
    class pairs have one) are broken by the smaller mean distance, then by label.
    """
    distances, same, first_labels, second_labels = _labelled_pairs(distances, same, first_labels,
                                                                   second_labels)
    negative = ~same
    low = np.minimum(first_labels, second_labels)[negative]
    high = np.maximum(first_labels, second_labels)[negative]
    if not len(low):
        return []
    keys, inverse = np.unique(np.stack([low, high], axis=1), axis=0, return_inverse=True)
    inverse = inverse.ravel()
    counts = np.bincount(inverse, minlength=len(keys))
    false_accepts = np.bincount(inverse, weights=distances[negative] <= threshold, minlength=len(keys))
    mean_distance = np.bincount(inverse, weights=distances[negative], minlength=len(keys)) / counts
    order = np.lexsort((keys[:, 1], keys[:, 0], mean_distance, -false_accepts))[:top]
    return [ConfusedPair(int(keys[i, 0]), int(keys[i, 1]), int(counts[i]), int(false_accepts[i]),
                         float(mean_distance[i])) for i in order]


def hardest_errors(distances, same, threshold: float, top: int = 8) -> dict[str, np.ndarray]:
    """Pair indices of the most confident mistakes at `threshold`, int64, hardest first.

    "false_accepts": negative pairs that match, smallest distance first; "false_rejects":
    positive pairs that do not, largest distance first. Ties keep pair order.
    """
    distances, same = as_pair_arrays(distances, same)
    accepted = distances <= threshold
    false_accepts = np.flatnonzero(~same & accepted)
    false_rejects = np.flatnonzero(same & ~accepted)
    return {
        "false_accepts": false_accepts[np.argsort(distances[false_accepts], kind="stable")[:top]],
        "false_rejects": false_rejects[np.argsort(-distances[false_rejects], kind="stable")[:top]],
    }


# --- how sure: resampling classes -----------------------------------------------------------------

def class_weighted_auc(distances, same, first_labels, second_labels, class_counts) -> float:
    """ROC AUC when each class c occurs `class_counts[c]` times (one class resample).

    `class_counts` maps the classes in sorted order (`np.unique` of all pair labels) to their
    multiplicity m_c. A positive pair of class c counts m_c times, a negative pair (c1, c2)
    m_c1 * m_c2 times: the pairs a sample with those class copies would hold. Ties count one half,
    as `metrics.roc_auc`. NaN when the weighted pairs lack positives or negatives.
    """
    distances, same, first_labels, second_labels = _labelled_pairs(distances, same, first_labels,
                                                                   second_labels)
    classes, codes = np.unique(np.r_[first_labels, second_labels], return_inverse=True)
    first_code, second_code = codes[:len(first_labels)], codes[len(first_labels):]
    class_counts = np.asarray(class_counts, dtype=np.int64).ravel()
    if len(class_counts) != len(classes):
        raise ValueError(f"{len(class_counts)} class counts for {len(classes)} classes")
    prepared = _WeightedAuc(distances, same, first_code, second_code)
    return prepared(class_counts)


class _WeightedAuc:
    """Sorts the pairs once; each call is one O(M) weighted AUC (as metrics.bootstrap_auc_ci)."""

    def __init__(self, distances, same, first_code, second_code):
        positive_order = np.argsort(distances[same], kind="stable")
        negative_order = np.argsort(distances[~same], kind="stable")
        positives = distances[same][positive_order]
        negatives = distances[~same][negative_order]
        self.positive_class = first_code[same][positive_order]
        self.negative_first = first_code[~same][negative_order]
        self.negative_second = second_code[~same][negative_order]
        # For each positive, the block of negatives tied with it: [lower, upper) in sorted order.
        self.lower = np.searchsorted(negatives, positives, side="left")
        self.upper = np.searchsorted(negatives, positives, side="right")

    def __call__(self, class_counts: np.ndarray) -> float:
        positive_weight = class_counts[self.positive_class]
        negative_weight = class_counts[self.negative_first] * class_counts[self.negative_second]
        total_positive, total_negative = int(positive_weight.sum()), int(negative_weight.sum())
        if total_positive == 0 or total_negative == 0:
            return math.nan
        cumulative = np.r_[0, np.cumsum(negative_weight)]
        # Negatives closer than a positive count 0, tied ones 1/2, farther ones 1.
        closer_or_tied = positive_weight @ (cumulative[self.upper] + cumulative[self.lower]) / 2
        return float((total_positive * total_negative - closer_or_tied) / (total_positive * total_negative))


def class_bootstrap_auc_ci(distances, same, first_labels, second_labels, samples: int = 200,
                           seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the pair AUC when the classes are resampled with replacement.

    Replicate s draws K classes from the K classes of the pairs: with
    `rng = np.random.default_rng(seed)`, class_counts = bincount(rng.integers(0, K, K)) per
    replicate, scored by `class_weighted_auc`. A replicate whose classes have no positive or no
    negative pair (one distinct class drawn) has no AUC and is left out. It answers "how would the
    AUC move with other held-out classes?", which `metrics.bootstrap_auc_ci` (pairs resampled)
    does not: with few test classes, expect it to be the wider of the two.
    """
    distances, same, first_labels, second_labels = _labelled_pairs(distances, same, first_labels,
                                                                   second_labels)
    if samples < 1:
        raise ValueError(f"samples={samples}: must be >= 1")
    if not 0 < level < 1:
        raise ValueError(f"level={level!r}: must be in (0, 1)")
    classes, codes = np.unique(np.r_[first_labels, second_labels], return_inverse=True)
    prepared = _WeightedAuc(distances, same, codes[:len(same)], codes[len(same):])
    rng = np.random.default_rng(seed)
    num_classes = len(classes)
    aucs = np.array([prepared(np.bincount(rng.integers(0, num_classes, num_classes), minlength=num_classes))
                     for _ in range(samples)])
    aucs = aucs[~np.isnan(aucs)]
    if not len(aucs):
        raise ValueError(f"no class resample has both positive and negative pairs ({num_classes} classes)")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(aucs, [tail, 100 - tail])
    return float(low), float(high)


# --- chance levels and operating points -----------------------------------------------------------

def retrieval_chance(labels) -> dict:
    """Expected precision@1 and MAP@R of a uniformly random ranking, every item a query.

    Same conventions as `metrics.retrieval_metrics`: a query ranks the N - 1 other items, and
    queries whose class has no other item (R = 0) are skipped. Both values are exact expectations,
    averaged over the queries:

    - precision@1: R / (N - 1).
    - MAP@R: (H_R + (R - 1)(R - H_R) / (N - 2)) / (N - 1), with H_R = 1 + 1/2 + ... + 1/R
      (E[P(i) rel(i)] = (R/(N-1)) (1 + (i-1)(R-1)/(N-2)) / i, summed over i <= R and divided by R).
      For R << N this is about H_R / (N - 1): NOT the P@1 chance level but about R / H_R times
      smaller (~11x for Tiny ImageNet's 50 test images per class).

    Returns {"gallery_size", "num_queries", "precision_at_1", "map_at_r"} (NaN without queries).
    """
    labels = np.asarray(labels).ravel()
    n = len(labels)
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    relevant = (counts[inverse] - 1).astype(np.float64)
    relevant = relevant[relevant > 0]
    if not len(relevant):
        return {"gallery_size": n, "num_queries": 0, "precision_at_1": math.nan, "map_at_r": math.nan}
    harmonic = np.cumsum(1.0 / np.arange(1, relevant.max() + 1))[relevant.astype(np.int64) - 1]
    # N = 2 forces R = 1 and the second term vanishes; keep its 0 / 0 out.
    second_term = (relevant - 1) * (relevant - harmonic) / (n - 2) if n > 2 else 0.0
    return {
        "gallery_size": int(n),
        "num_queries": int(len(relevant)),
        "precision_at_1": float(np.mean(relevant / (n - 1))),
        "map_at_r": float(np.mean((harmonic + second_term) / (n - 1))),
    }


def operating_points(val_distances, val_same, test_distances, test_same, target_far: float = 0.01) -> dict:
    """Two thresholds chosen on VAL, each judged on TEST.

    "accuracy": the maximum-accuracy threshold; "far": the largest threshold whose val FAR <=
    `target_far` (`metrics.choose_threshold`). Each holds "threshold", "val_far", "val_tar" and
    "test" (`metrics.confusion_at_threshold` plus "far" and "tar"), so the report can show how far
    the FAR promised on val drifts on test.
    """
    val_distances, val_same = as_pair_arrays(val_distances, val_same)
    test_distances, test_same = as_pair_arrays(test_distances, test_same)
    points: dict[str, Any] = {"target_far": float(target_far)}
    for method in ("accuracy", "far"):
        threshold = choose_threshold(val_distances, val_same, method, target_far)
        val_far, val_tar = _far_tar(val_distances, val_same, threshold)
        test = confusion_at_threshold(test_distances, test_same, threshold)
        test["far"], test["tar"] = _far_tar(test_distances, test_same, threshold)
        points[method] = {"threshold": threshold, "val_far": val_far, "val_tar": val_tar, "test": test}
    return points


def _far_tar(distances: np.ndarray, same: np.ndarray, threshold: float) -> tuple[float, float]:
    accepted = distances <= threshold
    far = float(accepted[~same].mean()) if (~same).any() else math.nan
    tar = float(accepted[same].mean()) if same.any() else math.nan
    return far, tar


# --- a whole run ----------------------------------------------------------------------------------

def analyse_run(run_dir: str | os.PathLike, labels, *, protocols=None, model: str = "trained",
                class_names=None) -> dict:
    """Error analysis of `model` on each protocol with saved arrays; writes RUN_DIR/error_analysis.json.

    labels: the dataset's labels (indexed by the dataset indices evaluation saved). protocols:
    default `config.EVALUATION_SPLITS`; one without an evaluation file is left out. The class
    bootstrap uses the run config's `bootstrap_samples` and `seed` (none when 0 samples), the FAR
    operating point its `target_far` (defaults 200, 0, 0.01 without a config.json). class_names
    (the dataset's, by class id): written as "class_names" {id: name} for the classes the file
    names, so the report can name them without the dataset.

    error_analysis.json (class ids are ints; NaN is written as null):
      {"model", "bootstrap_samples", "seed", "target_far",
       "protocols": {"<protocol>": {
          "threshold", "num_test_pairs", "num_test_classes", "roc_auc",
          "roc_auc_class_ci95": [low, high] | null,
          "per_class": [ClassScore fields...]            worst AUC first, no-AUC classes last,
          "confused_pairs": [ConfusedPair fields...]     most false accepts first (top 10),
          "hardest_errors": {"false_accepts" | "false_rejects":
              [{"pair", "first", "second", "first_label", "second_label", "distance"}]},  8 each;
              "pair": index into the test pairs, first/second: dataset indices
          "retrieval_chance": retrieval_chance(test queries' labels),
          "operating_points": operating_points(...)      only when the file has val pairs
       }}}
    Returns that dict (with NaN, not None).
    """
    paths = RunDir(run_dir)
    labels = np.asarray(labels).ravel()
    config = Config.load(paths.config) if paths.config.is_file() else None
    samples = config.bootstrap_samples if config else 200
    seed = config.seed if config else 0
    target_far = config.target_far if config else 0.01
    result: dict[str, Any] = {"model": model, "bootstrap_samples": samples, "seed": seed,
                              "target_far": target_far, "protocols": {}}
    for protocol in EVALUATION_SPLITS if protocols is None else protocols:
        if not paths.evaluation_file(protocol, model).is_file():
            continue
        arrays = read_evaluation_arrays(paths.path, protocol, model)
        result["protocols"][protocol] = _analyse_protocol(arrays, labels, samples, seed, target_far)
    if class_names is not None:
        named = sorted({row["label"] for analysis in result["protocols"].values()
                        for row in analysis["per_class"]})
        result["class_names"] = {str(label): str(class_names[label]) for label in named}
    write_json(paths.error_analysis, nan_to_none(result))
    return result


def _analyse_protocol(arrays: dict, labels: np.ndarray, samples: int, seed: int, target_far: float) -> dict:
    distances, same = arrays["test_distances"], arrays["test_same"].astype(bool)
    first, second = arrays["test_first"], arrays["test_second"]
    first_labels, second_labels = labels[first], labels[second]
    threshold = float(arrays["threshold"])
    rows = per_class_scores(distances, same, first_labels, second_labels, arrays["retrieval_labels"],
                            labels[arrays["neighbours"]])
    errors = hardest_errors(distances, same, threshold)
    analysis = {
        "threshold": threshold,
        "num_test_pairs": int(len(same)),
        "num_test_classes": int(len(np.unique(np.r_[first_labels, second_labels]))),
        "roc_auc": roc_auc(distances, same),
        "roc_auc_class_ci95": (list(class_bootstrap_auc_ci(distances, same, first_labels, second_labels,
                                                           samples=samples, seed=seed))
                               if samples > 0 else None),
        "per_class": [asdict(row) for row in sorted_by_auc(rows)],
        "confused_pairs": [asdict(row) for row in confused_class_pairs(distances, same, first_labels,
                                                                       second_labels, threshold)],
        "hardest_errors": {
            kind: [{"pair": int(i), "first": int(first[i]), "second": int(second[i]),
                    "first_label": int(first_labels[i]), "second_label": int(second_labels[i]),
                    "distance": float(distances[i])} for i in indices]
            for kind, indices in errors.items()},
        "retrieval_chance": retrieval_chance(arrays["retrieval_labels"]),
    }
    if "val_distances" in arrays:  # official-val has a test part only
        analysis["operating_points"] = operating_points(arrays["val_distances"], arrays["val_same"],
                                                        distances, same, target_far)
    return analysis


__all__ = ["ClassScore", "ConfusedPair", "per_class_scores", "sorted_by_auc", "confused_class_pairs",
           "hardest_errors", "class_weighted_auc", "class_bootstrap_auc_ci", "retrieval_chance",
           "operating_points", "analyse_run"]
