"""Verification and retrieval metrics on embeddings: small NumPy functions, each tested on its own.

Conventions used everywhere in tinymatch:

- A *distance* is smaller for more similar items; the matching *score* is `-distance`.
- A pair MATCHES when `distance <= threshold`.
- A ROC curve is a list of operating points (false accept rate, true accept rate), one per distinct
  distance threshold, from "nothing matches" (0, 0) to "everything matches" (1, 1).

Retrieval metrics follow the metric-learning literature (every item is a query against the rest of
its set; the query itself is never a neighbour; queries whose class has no other item are skipped):

- precision@1: fraction of queries whose nearest neighbour has the query's class.
- recall@k: fraction of queries with at least one same-class item among the k nearest neighbours
  (the definition of tensorflow-similarity and of most papers, e.g. "Recall@K" in the SOP/CUB
  benchmarks), not the fraction of all same-class items retrieved.
- MAP@R (Musgrave et al. 2020, "A Metric Learning Reality Check"): with R = number of other items of
  the query's class, MAP@R = 1/R * sum_{i=1..R} P(i) * rel(i), where P(i) is the precision at rank i
  and rel(i) = 1 when the i-th neighbour has the query's class.

Score normalisation by the training mean (`training_mean`, optional everywhere a distance is
taken): the pair score of unit embeddings a, b becomes s = a.b - (a.m + b.m) / 2, where m is the
mean embedding of the model's training images (mean-only adaptive score normalisation, as in
speaker verification: an image that is close to everything, a hub, gets less credit for being
close to this one). Each metric reports s in its own units, so thresholds and figures read as
before: squared-L2 2 - 2s = |a - b|^2 + a.m + b.m, L2 its square root (clamped at 0: two near
copies of an image pointing away from m score s > 1, and such pairs tie at 0), angular 1 - s. The
terms a.m are taken on the unit vectors of a and b. Pairs, retrieval and the Siamese model
(`tinymatch.model.PairDistance`) use the same formula; benchmarks/README.md has the measured gain.
"""

from __future__ import annotations

import numpy as np

DEFAULT_FARS = (1e-1, 1e-2, 1e-3)
_PAIR_CHUNK = 1 << 13  # pairs per block in pair_distances: 8,192 x D floats (cache-sized)
_QUERY_CHUNK = 1024  # queries per block in retrieval: 1,024 x N similarities at a time


# --- distances ------------------------------------------------------------------------------------

def _check_metric(distance_metric: str) -> None:
    if distance_metric not in ("L2", "squared-L2", "angular"):
        raise ValueError(f"distance_metric={distance_metric!r}: must be L2, squared-L2 or angular")


def typicality(embeddings: np.ndarray, training_mean) -> np.ndarray:
    """a.m of every row's unit vector a with the training mean m, float64 [N] (zeros without m):
    the term score normalisation subtracts (module docstring)."""
    embeddings = np.asarray(embeddings, dtype=np.float32)
    if training_mean is None:
        return np.zeros(len(embeddings))
    training_mean = np.asarray(training_mean, dtype=np.float32).ravel()
    if training_mean.shape != embeddings.shape[1:] or not np.all(np.isfinite(training_mean)):
        raise ValueError(f"training_mean: expected {embeddings.shape[1:]} finite values, "
                         f"got shape {training_mean.shape}")
    norms = np.maximum(np.linalg.norm(embeddings, axis=1), 1e-12)
    return (embeddings @ training_mean).astype(np.float64) / norms


def _metric_offset(terms: np.ndarray, distance_metric: str) -> np.ndarray:
    """What the normalisation adds to a squared-L2 distance (a.m + b.m) or an angular one (half)."""
    return terms / 2 if distance_metric == "angular" else terms


def pair_distances(embeddings: np.ndarray, pairs, distance_metric: str = "L2", *,
                   training_mean=None) -> np.ndarray:
    """Distance of every pair (`pairs.first[i]`, `pairs.second[i]`), float32 [M].

    L2 is the Euclidean distance, squared-L2 its square, angular is 1 - cosine similarity (the
    metrics of tfa's triplet losses). With `training_mean`, the score-normalised distance (module
    docstring). Pairs are processed in blocks so memory stays bounded even for millions of pairs.
    """
    _check_metric(distance_metric)
    embeddings = np.asarray(embeddings, dtype=np.float32)
    first, second = np.asarray(pairs.first), np.asarray(pairs.second)
    squared_norms = np.einsum("ij,ij->i", embeddings, embeddings).astype(np.float64)
    terms = None if training_mean is None else typicality(embeddings, training_mean)
    out = np.empty(len(first), dtype=np.float32)
    for start in range(0, len(first), _PAIR_CHUNK):
        block_first, block_second = first[start:start + _PAIR_CHUNK], second[start:start + _PAIR_CHUNK]
        a = np.take(embeddings, block_first, axis=0)
        b = np.take(embeddings, block_second, axis=0)
        offset = 0.0 if terms is None else _metric_offset(terms[block_first] + terms[block_second],
                                                          distance_metric)
        if distance_metric == "angular":
            norms = np.sqrt(squared_norms[block_first] * squared_norms[block_second])
            cosine = np.einsum("ij,ij->i", a, b) / np.maximum(norms, 1e-12)
            out[start:start + len(a)] = 1.0 - cosine + offset
            continue
        # |a - b|^2 computed directly: the |a|^2 + |b|^2 - 2ab shortcut loses precision for near
        # duplicates, which are exactly the pairs a threshold must get right.
        a -= b
        squared = np.einsum("ij,ij->i", a, a) + offset
        out[start:start + len(a)] = (squared if distance_metric == "squared-L2"
                                     else np.sqrt(np.maximum(squared, 0)))
    return out


def as_pair_arrays(distances, same) -> tuple[np.ndarray, np.ndarray]:
    distances = np.asarray(distances, dtype=np.float64).ravel()
    same = np.asarray(same).astype(bool).ravel()
    if distances.shape != same.shape:
        raise ValueError(f"distances ({distances.size}) and same ({same.size}) differ in length")
    if not np.all(np.isfinite(distances)):
        raise ValueError("distances contain NaN or infinity")
    return distances, same


def _require_both_classes(same: np.ndarray) -> None:
    if same.all() or not same.any():
        raise ValueError("need at least one positive and one negative pair "
                         f"(got {int(same.sum())} positive, {int((~same).sum())} negative)")


# --- ROC ------------------------------------------------------------------------------------------

def roc_curve(distances, same) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(far, tar, thresholds): one point per distinct distance, plus the "nothing matches" start.

    Point i is the operating point of `distance <= thresholds[i]`; thresholds[0] = -inf (no pair
    matches). Equals `sklearn.metrics.roc_curve(same, -distances, drop_intermediate=False)` with
    thresholds negated back into distance units.
    """
    distances, same = as_pair_arrays(distances, same)
    _require_both_classes(same)
    order = np.argsort(distances, kind="stable")
    sorted_distances, sorted_same = distances[order], same[order]
    true_accepts = np.cumsum(sorted_same)
    false_accepts = np.cumsum(~sorted_same)
    # Only the last item of each run of tied distances is an operating point.
    last_of_tie = np.r_[sorted_distances[1:] != sorted_distances[:-1], True]
    tar = np.r_[0, true_accepts[last_of_tie]] / same.sum()
    far = np.r_[0, false_accepts[last_of_tie]] / (~same).sum()
    thresholds = np.r_[-np.inf, sorted_distances[last_of_tie]]
    return far, tar, thresholds


def roc_auc(distances, same) -> float:
    """Area under the ROC curve (trapezoids; ties count one half, as roc_auc_score)."""
    far, tar, _ = roc_curve(distances, same)
    return float(np.trapezoid(tar, far))


def bootstrap_auc_ci(distances, same, *, samples: int = 200, seed: int = 0,
                     confidence: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the ROC AUC, resampling positives and negatives separately.

    Stratified resampling keeps both classes present in every replicate. Each replicate reweights
    the sorted pairs (multiplicity from the resample) instead of re-sorting them: O(M) a replicate,
    ~8 ms for a million pairs on one idle core (benchmarks/README.md, "Evaluation").
    """
    distances, same = as_pair_arrays(distances, same)
    _require_both_classes(same)
    if samples < 1:
        raise ValueError(f"samples={samples}: must be >= 1")
    positives = np.sort(distances[same])  # sorted: the gathers below walk memory in order
    negatives = np.sort(distances[~same])
    # For each positive, the block of negatives tied with it: [lower, upper) in sorted order.
    lower = np.searchsorted(negatives, positives, side="left")
    upper = np.searchsorted(negatives, positives, side="right")
    has_ties = bool(np.any(lower != upper))
    rng = np.random.default_rng(seed)
    num_pos, num_neg = len(positives), len(negatives)
    aucs = np.empty(samples)
    index_type = np.int32 if len(distances) < 2**31 else np.int64  # int32 draws are ~2x faster
    for s in range(samples):
        pos_weight = np.bincount(rng.integers(0, num_pos, num_pos, dtype=index_type), minlength=num_pos)
        neg_weight = np.bincount(rng.integers(0, num_neg, num_neg, dtype=index_type), minlength=num_neg)
        cumulative = np.r_[0, np.cumsum(neg_weight)]
        # Negatives farther than the positive count 1 (correct order), tied ones 1/2:
        # (num_neg - C[upper]) + (C[upper] - C[lower]) / 2 = num_neg - (C[upper] + C[lower]) / 2.
        # Integer dot products: exact, and they keep BLAS threads (which spin) out of the loop.
        closer_or_tied = pos_weight @ cumulative[upper]
        if has_ties:
            closer_or_tied = (closer_or_tied + pos_weight @ cumulative[lower]) / 2
        aucs[s] = (num_neg * num_pos - closer_or_tied) / (num_pos * num_neg)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(aucs, [tail, 100 - tail])
    return float(low), float(high)


def equal_error_rate(distances, same) -> float:
    """The rate where false accepts equal false rejects (1 - TAR), on the linearly interpolated ROC."""
    far, tar, _ = roc_curve(distances, same)
    return _eer_from_curve(far, tar)


def _eer_from_curve(far: np.ndarray, tar: np.ndarray) -> float:
    gap = far - (1 - tar)  # far - frr: from -1 (nothing matches) to +1 (everything), non-decreasing
    crossing = int(np.searchsorted(gap, 0, side="left"))
    if gap[crossing] == 0:
        return float(far[crossing])
    # Linear interpolation between the two operating points around the crossing.
    t = -gap[crossing - 1] / (gap[crossing] - gap[crossing - 1])
    return float(far[crossing - 1] + t * (far[crossing] - far[crossing - 1]))


def tar_at_far(distances, same, far: float) -> float:
    """Best true accept rate among thresholds whose false accept rate is at most `far` (no interpolation)."""
    curve_far, curve_tar, _ = roc_curve(distances, same)
    return _tar_at_far_from_curve(curve_far, curve_tar, far)


def _tar_at_far_from_curve(far: np.ndarray, tar: np.ndarray, target: float) -> float:
    return float(tar[far <= target + 1e-12].max())


def distance_histograms(distances, same, bins: int = 50) -> dict[str, np.ndarray]:
    """Counts of positive and negative pair distances on shared bins (for the overlap figure)."""
    distances, same = as_pair_arrays(distances, same)
    edges = np.histogram_bin_edges(distances, bins=bins)
    return {
        "bins": edges,
        "positive": np.histogram(distances[same], bins=edges)[0],
        "negative": np.histogram(distances[~same], bins=edges)[0],
    }


# --- threshold ------------------------------------------------------------------------------------

def choose_threshold(distances, same, method: str = "accuracy", target_far: float = 1e-2) -> float:
    """Distance threshold chosen on these (validation) pairs.

    method: "accuracy" (maximum accuracy), "youden" (maximum TAR - FAR, Youden's J) or "far"
    (largest threshold whose FAR <= target_far). The threshold returned lies half way between the
    chosen distance and the next larger one, so it classifies these pairs exactly as the chosen
    operating point while leaving a margin for unseen pairs. Ties are broken towards the smaller
    threshold (fewer false accepts).
    """
    distances, same = as_pair_arrays(distances, same)
    far, tar, thresholds = roc_curve(distances, same)
    if method == "accuracy":
        num_pos, num_neg = same.sum(), (~same).sum()
        objective = (tar * num_pos + (1 - far) * num_neg) / (num_pos + num_neg)
    elif method == "youden":
        objective = tar - far
    elif method == "far":
        if not 0 < target_far < 1:
            raise ValueError(f"target_far={target_far!r}: must be in (0, 1)")
        objective = np.where(far <= target_far + 1e-12, thresholds, -np.inf)
    else:
        raise ValueError(f"threshold method={method!r}: must be accuracy, youden or far")
    best = int(np.argmax(objective))  # first maximum = smallest threshold
    if best == 0:  # "nothing matches": just below the smallest distance
        return float(np.nextafter(thresholds[1], -np.inf))
    if best == len(thresholds) - 1:
        return float(thresholds[best])
    return float((thresholds[best] + thresholds[best + 1]) / 2)


def confusion_at_threshold(distances, same, threshold: float) -> dict:
    """Confusion matrix [[tn, fp], [fn, tp]] (rows: true, columns: predicted) and its summaries.

    `normalized` divides each row by its true-class count (sklearn's normalize="true"). Precision,
    recall and F1 are those of the "same" class; 0 when undefined (sklearn's zero_division=0).
    """
    distances, same = as_pair_arrays(distances, same)
    predicted = distances <= threshold
    tp = int(np.sum(predicted & same))
    fp = int(np.sum(predicted & ~same))
    fn = int(np.sum(~predicted & same))
    tn = int(np.sum(~predicted & ~same))
    matrix = np.array([[tn, fp], [fn, tp]])
    rows = matrix.sum(axis=1, keepdims=True)
    normalized = np.divide(matrix, rows, out=np.zeros((2, 2)), where=rows > 0)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "threshold": float(threshold),
        "matrix": matrix.tolist(),
        "normalized": normalized.tolist(),
        "accuracy": (tp + tn) / max(len(same), 1),
        "precision": precision,
        "recall": recall,
        "f1": f1,
    }


def verification_metrics(distances, same, *, bootstrap_samples: int = 200, seed: int = 0,
                         fars=DEFAULT_FARS) -> dict:
    """Threshold-free figures of one set of pairs: AUC with its bootstrap 95% interval, EER, TAR@FAR."""
    distances, same = as_pair_arrays(distances, same)
    far, tar, _ = roc_curve(distances, same)  # sorted once, shared by every figure below
    metrics = {
        "num_pairs": int(len(same)),
        "num_positive": int(same.sum()),
        "num_negative": int((~same).sum()),
        "roc_auc": float(np.trapezoid(tar, far)),
        "eer": _eer_from_curve(far, tar),
        "tar_at_far": {str(target): _tar_at_far_from_curve(far, tar, target) for target in fars},
    }
    if bootstrap_samples > 0:
        metrics["roc_auc_ci95"] = list(bootstrap_auc_ci(distances, same, samples=bootstrap_samples, seed=seed))
    return metrics


# --- retrieval ------------------------------------------------------------------------------------

def similarity_setup(embeddings: np.ndarray, distance_metric: str, *, training_mean=None):
    """(queries, gallery, bias) such that `queries @ gallery.T - bias` ranks like the distance.

    L2 and squared-L2 use ab - |b|^2 / 2 = (|a|^2 - |a-b|^2) / 2: no scaled copy of the gallery is
    made (raw-pixel baselines are 12,288-d, so a copy would cost as much as the embeddings). With
    `training_mean`, the bias also holds the gallery item's half of the normalisation (the query's
    half is the same for every candidate, so it does not change the ranking).
    """
    _check_metric(distance_metric)
    vectors = np.asarray(embeddings, dtype=np.float32)
    offset = _metric_offset(typicality(vectors, training_mean), distance_metric)  # each item's share
    if distance_metric == "angular":  # 1 - cos + offset_a + offset_b
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors, vectors, offset.astype(np.float32)
    # |a|^2 + |b|^2 - 2ab + offset_a + offset_b = (|a|^2 + offset_a) - 2(ab - |b|^2/2 - offset_b/2)
    return vectors, vectors, ((np.einsum("ij,ij->i", vectors, vectors) + offset) / 2).astype(np.float32)


def _similarity_to_distance(similarity: np.ndarray, query_offset: np.ndarray, distance_metric: str):
    """Distances from `similarity_setup`'s ranking values; `query_offset`: per query, |a|^2 plus
    its normalisation term (L2 metrics), or its normalisation term alone (angular)."""
    if distance_metric == "angular":
        return 1 - similarity + query_offset[:, None]
    squared = query_offset[:, None] - 2 * similarity  # |a|^2 - 2(ab - |b|^2/2)
    # Not clamped at 0 for squared-L2: a normalised distance may be below it (as in pair_distances).
    return squared if distance_metric == "squared-L2" else np.sqrt(np.maximum(squared, 0))


def top_k_rows(similarity: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """Column indices and values of the `depth` largest entries of every row, largest first.

    Ties keep column order. Instead of a row-wise argpartition over all N columns (slow), the
    depth-th largest value of a fixed random sample of columns gives a lower bound on each row's
    depth-th largest value; only the entries above that bound (a few times `depth` per row) are
    sorted. The bound is exact: a subset's k-th largest never exceeds the full row's.
    """
    num_rows, n = similarity.shape
    if not 1 <= depth <= n:
        raise ValueError(f"depth={depth}: must be between 1 and {n}")
    sample_size = max(16 * depth, 1024)
    if 2 * sample_size >= n:  # small galleries: sorting everything is cheap
        order = np.argsort(-similarity, axis=1, kind="stable")[:, :depth]
        return order, np.take_along_axis(similarity, order, axis=1)
    columns = np.random.default_rng(0).choice(n, size=sample_size, replace=False)
    bound = np.partition(similarity[:, columns], sample_size - depth, axis=1)[:, sample_size - depth]
    rows, cols = np.nonzero(similarity >= bound[:, None])  # row-major: columns ascending per row
    # Pack each row's candidates to the left of a small [rows, max candidates] array, then sort that.
    counts = np.bincount(rows, minlength=num_rows)
    slot = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
    packed_values = np.full((num_rows, counts.max()), -np.inf, similarity.dtype)
    packed_columns = np.zeros((num_rows, counts.max()), np.int64)
    packed_values[rows, slot] = similarity[rows, cols]
    packed_columns[rows, slot] = cols
    order = np.argsort(-packed_values, axis=1, kind="stable")[:, :depth]  # padding sorts last
    return (np.take_along_axis(packed_columns, order, axis=1),
            np.take_along_axis(packed_values, order, axis=1))


def _ranked_neighbours(embeddings, depth: int, distance_metric: str, visit, training_mean=None) -> None:
    """Call `visit(rows, ranked_indices, ranked_similarity)` for blocks of queries (nearest first).

    Each query's own similarity is set to -inf so it never appears among its neighbours. Memory is
    bounded by one block of `_QUERY_CHUNK x N` similarities.
    """
    queries, gallery, bias = similarity_setup(embeddings, distance_metric, training_mean=training_mean)
    n = len(gallery)
    depth = min(depth, n - 1)
    for start in range(0, n, _QUERY_CHUNK):
        rows = np.arange(start, min(start + _QUERY_CHUNK, n))
        similarity = queries[rows] @ gallery.T
        similarity -= bias[None, :]
        similarity[np.arange(len(rows)), rows] = -np.inf
        ranked, ranked_similarity = top_k_rows(similarity, depth)
        visit(rows, ranked, ranked_similarity)


def retrieval_metrics(embeddings, labels, *, k: int = 5, distance_metric: str = "L2",
                      return_neighbours: bool = False, training_mean=None) -> dict:
    """precision@1, recall@k and MAP@R with every item as a query against all the others.

    See the module docstring for the definitions (and for `training_mean`). With
    `return_neighbours`, the dict also holds "neighbours" (int64 [N, k], positions in
    `embeddings`, nearest first) and "neighbour_distances" (float32 [N, k]) for example figures.
    """
    embeddings = np.asarray(embeddings)
    labels = np.asarray(labels).ravel()
    n = len(labels)
    if n < 2 or len(embeddings) != n:
        raise ValueError(f"retrieval needs >= 2 embeddings with one label each (got {len(embeddings)}, {n})")
    if k < 1:
        raise ValueError(f"k={k}: must be >= 1")
    if not np.all(np.isfinite(embeddings)):
        raise ValueError("embeddings contain NaN or infinity (a diverged model?)")
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    relevant_count = counts[inverse] - 1  # R: other items of the query's class
    depth = max(k, int(relevant_count.max()), 1)
    k_eff = min(k, n - 1)
    precision_at_1 = np.zeros(n)
    hit_at_k = np.zeros(n)
    average_precision = np.zeros(n)
    neighbours = np.zeros((n, k_eff), np.int64)
    neighbour_similarity = np.zeros((n, k_eff), np.float32)

    def visit(rows, ranked, ranked_similarity):
        relevant = labels[ranked] == labels[rows][:, None]  # [B, depth]
        precision_at_1[rows] = relevant[:, 0]
        hit_at_k[rows] = relevant[:, :k_eff].any(axis=1)
        r = relevant_count[rows]
        ranks = np.arange(1, relevant.shape[1] + 1)
        within_r = ranks[None, :] <= r[:, None]
        precision_at_i = np.cumsum(relevant, axis=1) / ranks[None, :]
        summed = np.sum(precision_at_i * (relevant & within_r), axis=1)
        average_precision[rows] = np.divide(summed, r, out=np.zeros(len(rows)), where=r > 0)
        neighbours[rows] = ranked[:, :k_eff]
        neighbour_similarity[rows] = ranked_similarity[:, :k_eff]

    _ranked_neighbours(embeddings, depth, distance_metric, visit, training_mean)
    has_positive = relevant_count > 0
    num_queries = int(has_positive.sum())

    def mean(values):
        return float(values[has_positive].mean()) if num_queries else float("nan")

    result = {
        "precision_at_1": mean(precision_at_1),
        "recall_at_k": mean(hit_at_k),
        "k": int(k),
        "map_at_r": mean(average_precision),
        "num_queries": num_queries,
        "num_queries_without_positive": int(n - num_queries),
    }
    if return_neighbours:
        vectors = np.asarray(embeddings, dtype=np.float32)
        query_offset = _metric_offset(typicality(vectors, training_mean), distance_metric)
        if distance_metric != "angular":
            query_offset = query_offset + np.einsum("ij,ij->i", vectors, vectors)
        result["neighbours"] = neighbours
        result["neighbour_distances"] = _similarity_to_distance(
            neighbour_similarity, query_offset, distance_metric).astype(np.float32)
    return result


def nearest_neighbours(embeddings, k: int, distance_metric: str = "L2") -> np.ndarray:
    """int64 [N, k]: the k nearest other items of every item, nearest first (chunked, bounded memory)."""
    embeddings = np.asarray(embeddings)
    n = len(embeddings)
    if not 1 <= k <= n - 1:
        raise ValueError(f"k={k}: must be between 1 and {n - 1} (number of items - 1)")
    out = np.zeros((n, k), np.int64)

    def visit(rows, ranked, _):
        out[rows] = ranked

    _ranked_neighbours(embeddings, k, distance_metric, visit)
    return out


__all__ = [
    "DEFAULT_FARS", "pair_distances", "roc_curve", "roc_auc", "bootstrap_auc_ci", "equal_error_rate",
    "tar_at_far", "distance_histograms", "choose_threshold", "confusion_at_threshold",
    "verification_metrics", "retrieval_metrics", "nearest_neighbours", "top_k_rows",
    "similarity_setup", "typicality",
]
