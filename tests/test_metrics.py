"""Every metric against scikit-learn or a brute-force reference on small hand-made cases."""

import numpy as np
import pytest
from sklearn import metrics as skm

from tinymatch import metrics as tm
from tinymatch.evaluate import Pairs

# A few scorers: perfect, reversed, random, and one full of ties.
RNG = np.random.default_rng(0)
CASES = {
    "perfect": (np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9]), np.array([1, 1, 1, 0, 0, 0], bool)),
    "reversed": (np.array([0.9, 0.8, 0.7, 0.1, 0.2, 0.3]), np.array([1, 1, 1, 0, 0, 0], bool)),
    "random": (RNG.random(400), RNG.random(400) < 0.5),
    "ties": (np.array([0.5, 0.5, 0.5, 0.2, 0.2, 0.9, 0.9, 0.5, 0.1, 0.9]),
             np.array([1, 0, 1, 1, 0, 0, 1, 0, 1, 0], bool)),
    "quantised": (np.round(RNG.random(300), 1), RNG.random(300) < 0.3),
}


def brute_force_points(distances, same):
    """(far, tar) of `distance <= t` for every candidate threshold, computed directly."""
    candidates = np.r_[-np.inf, np.unique(distances)]
    far = np.array([np.mean(distances[~same] <= t) for t in candidates])
    tar = np.array([np.mean(distances[same] <= t) for t in candidates])
    return candidates, far, tar


@pytest.mark.parametrize("name", CASES)
def test_roc_curve_matches_sklearn(name):
    distances, same = CASES[name]
    far, tar, thresholds = tm.roc_curve(distances, same)
    fpr, tpr, sk_thresholds = skm.roc_curve(same, -distances, drop_intermediate=False)
    np.testing.assert_allclose(far, fpr)
    np.testing.assert_allclose(tar, tpr)
    np.testing.assert_allclose(thresholds[1:], -sk_thresholds[1:])
    assert thresholds[0] == -np.inf


@pytest.mark.parametrize("name", CASES)
def test_roc_auc_matches_sklearn(name):
    distances, same = CASES[name]
    assert tm.roc_auc(distances, same) == pytest.approx(skm.roc_auc_score(same, -distances), abs=1e-12)


def test_auc_perfect_reversed_random():
    assert tm.roc_auc(*CASES["perfect"]) == 1.0
    assert tm.roc_auc(*CASES["reversed"]) == 0.0
    assert tm.roc_auc(*CASES["random"]) == pytest.approx(0.5, abs=0.08)
    # All distances tied: the ROC is the diagonal.
    assert tm.roc_auc(np.ones(6), CASES["perfect"][1]) == 0.5


def test_roc_needs_both_classes():
    with pytest.raises(ValueError, match="positive and one negative"):
        tm.roc_auc([0.1, 0.2], [True, True])


@pytest.mark.parametrize("name", ["random", "ties", "quantised"])
def test_bootstrap_ci_matches_resampled_sklearn(name):
    """The reweighting trick equals sklearn's AUC on explicitly resampled data, replicate by replicate."""
    distances, same = CASES[name]
    low, high = tm.bootstrap_auc_ci(distances, same, samples=60, seed=3)
    # Reference: the same random draws (over sorted positives and negatives), materialised.
    rng = np.random.default_rng(3)
    positives, negatives = np.sort(distances[same]), np.sort(distances[~same])
    aucs = []
    for _ in range(60):
        p = positives[rng.integers(0, len(positives), len(positives))]
        n = negatives[rng.integers(0, len(negatives), len(negatives))]
        labels = np.r_[np.ones(len(p)), np.zeros(len(n))]
        aucs.append(skm.roc_auc_score(labels, -np.r_[p, n]))
    ref_low, ref_high = np.percentile(aucs, [2.5, 97.5])
    assert low == pytest.approx(ref_low, abs=1e-12) and high == pytest.approx(ref_high, abs=1e-12)
    assert low <= tm.roc_auc(distances, same) <= high


def test_bootstrap_ci_of_perfect_scorer_is_one():
    assert tm.bootstrap_auc_ci(*CASES["perfect"], samples=20, seed=0) == (1.0, 1.0)


def test_equal_error_rate_hand_made():
    assert tm.equal_error_rate(*CASES["perfect"]) == 0.0
    assert tm.equal_error_rate(*CASES["reversed"]) == 1.0
    # 2 positives at 0.1, 0.3; 2 negatives at 0.2, 0.4: at t=0.1 far 0, frr .5; t=0.2 far .5, frr .5.
    assert tm.equal_error_rate([0.1, 0.3, 0.2, 0.4], [1, 1, 0, 0]) == 0.5
    # Crossing between points: far 0 -> 0.5 while frr 1/3 -> 1/3 ... interpolation on the ROC.
    distances = np.array([0.1, 0.2, 0.4, 0.3, 0.5])
    same = np.array([1, 1, 1, 0, 0], bool)
    # Points (far, frr): (0,1) (0,2/3) (0,1/3) (.5,1/3) (.5,0) (1,0): crossing on the segment
    # (0, 1/3)->(.5, 1/3): far = 1/3.
    assert tm.equal_error_rate(distances, same) == pytest.approx(1 / 3)


@pytest.mark.parametrize("name", CASES)
def test_equal_error_rate_between_discrete_bounds(name):
    distances, same = CASES[name]
    _, far, tar = brute_force_points(distances, same)
    frr = 1 - tar
    eer = tm.equal_error_rate(distances, same)
    # The crossing lies between the best min(far, frr) and max(far, frr) over operating points.
    assert np.max(np.minimum(far, frr)) - 1e-12 <= eer <= np.min(np.maximum(far, frr)) + 1e-12


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("far_target", [0.1, 0.01, 0.001, 0.5])
def test_tar_at_far_brute_force(name, far_target):
    distances, same = CASES[name]
    _, far, tar = brute_force_points(distances, same)
    assert tm.tar_at_far(distances, same, far_target) == pytest.approx(tar[far <= far_target].max())


def test_distance_histograms_count_every_pair():
    distances, same = CASES["random"]
    hist = tm.distance_histograms(distances, same, bins=10)
    assert len(hist["bins"]) == 11
    assert hist["positive"].sum() == same.sum() and hist["negative"].sum() == (~same).sum()


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("method", ["accuracy", "youden", "far"])
def test_choose_threshold_is_optimal_by_brute_force(name, method):
    distances, same = CASES[name]
    threshold = tm.choose_threshold(distances, same, method, target_far=0.1)
    candidates, far, tar = brute_force_points(distances, same)
    predicted = distances <= threshold
    got_far, got_tar = np.mean(predicted[~same]), np.mean(predicted[same])
    if method == "accuracy":
        accuracy = (tar * same.sum() + (1 - far) * (~same).sum()) / len(same)
        assert np.mean(predicted == same) == pytest.approx(accuracy.max())
    elif method == "youden":
        assert got_tar - got_far == pytest.approx(np.max(tar - far))
    else:
        assert got_far <= 0.1
        assert got_tar == pytest.approx(tar[far <= 0.1].max())


def test_choose_threshold_lies_between_distances():
    # Perfect separation between 0.3 and 0.7: the midpoint.
    assert tm.choose_threshold(*CASES["perfect"], "accuracy") == pytest.approx(0.5)
    with pytest.raises(ValueError, match="method"):
        tm.choose_threshold(*CASES["perfect"], "median")


@pytest.mark.parametrize("name", CASES)
def test_confusion_matches_sklearn(name):
    distances, same = CASES[name]
    threshold = float(np.median(distances))
    report = tm.confusion_at_threshold(distances, same, threshold)
    predicted = distances <= threshold
    np.testing.assert_array_equal(report["matrix"], skm.confusion_matrix(same, predicted, labels=[False, True]))
    np.testing.assert_allclose(report["normalized"],
                               skm.confusion_matrix(same, predicted, labels=[False, True], normalize="true"))
    assert report["accuracy"] == pytest.approx(skm.accuracy_score(same, predicted))
    assert report["precision"] == pytest.approx(skm.precision_score(same, predicted, zero_division=0))
    assert report["recall"] == pytest.approx(skm.recall_score(same, predicted, zero_division=0))
    assert report["f1"] == pytest.approx(skm.f1_score(same, predicted, zero_division=0))


def test_confusion_nothing_predicted_has_zero_precision():
    report = tm.confusion_at_threshold([0.5, 0.6], [True, False], threshold=0.1)
    assert report["precision"] == 0.0 and report["f1"] == 0.0 and report["matrix"] == [[1, 0], [1, 0]]


@pytest.mark.parametrize("metric", ["L2", "squared-L2", "angular"])
def test_pair_distances_brute_force(metric):
    rng = np.random.default_rng(1)
    embeddings = rng.normal(size=(20, 5)).astype(np.float32)
    pairs = Pairs(rng.integers(0, 20, 30), rng.integers(0, 20, 30), np.zeros(30, bool))
    got = tm.pair_distances(embeddings, pairs, metric)
    for i, (a, b) in enumerate(zip(pairs.first, pairs.second)):
        u, v = embeddings[a].astype(np.float64), embeddings[b].astype(np.float64)
        want = {"L2": np.linalg.norm(u - v), "squared-L2": np.sum((u - v) ** 2),
                "angular": 1 - u @ v / np.linalg.norm(u) / np.linalg.norm(v)}[metric]
        assert got[i] == pytest.approx(want, abs=1e-5)


# --- score normalisation by the training mean -------------------------------------------------------

def normalised_score(u, v, mean):
    """The reference: cosine of u and v less half of each one's unit vector's dot with the mean."""
    u, v = u / np.linalg.norm(u), v / np.linalg.norm(v)
    return u @ v - (u @ mean + v @ mean) / 2


def unit_rows(rng, n, dim):
    vectors = rng.normal(size=(n, dim))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("metric", ["L2", "squared-L2", "angular"])
def test_normalised_pair_distances_brute_force(metric):
    rng = np.random.default_rng(2)
    embeddings = unit_rows(rng, 25, 6)
    mean = (0.4 * unit_rows(rng, 1, 6)[0]).astype(np.float64)
    pairs = Pairs(rng.integers(0, 25, 60), rng.integers(0, 25, 60), np.zeros(60, bool))
    got = tm.pair_distances(embeddings, pairs, metric, training_mean=mean)
    for i, (a, b) in enumerate(zip(pairs.first, pairs.second)):
        score = normalised_score(embeddings[a].astype(np.float64), embeddings[b].astype(np.float64), mean)
        want = {"L2": np.sqrt(max(2 - 2 * score, 0)), "squared-L2": 2 - 2 * score, "angular": 1 - score}[metric]
        assert got[i] == pytest.approx(want, abs=1e-5)


def test_normalised_distance_of_a_zero_mean_is_the_plain_one():
    rng = np.random.default_rng(3)
    embeddings = unit_rows(rng, 10, 4)
    pairs = Pairs(rng.integers(0, 10, 20), rng.integers(0, 10, 20), np.zeros(20, bool))
    np.testing.assert_allclose(tm.pair_distances(embeddings, pairs, "L2", training_mean=np.zeros(4)),
                               tm.pair_distances(embeddings, pairs, "L2"), atol=1e-6)


def test_normalisation_discounts_an_image_close_to_the_mean():
    """Two pairs at the same cosine: the one whose image lies along the training mean (a hub) is
    the farther after normalisation."""
    embeddings = np.array([[1, 0, 0], [0.8, 0.6, 0], [0, 1, 0], [0, 0.8, 0.6]], np.float32)
    pairs = Pairs(np.array([0, 2]), np.array([1, 3]), np.zeros(2, bool))
    plain = tm.pair_distances(embeddings, pairs, "angular")
    assert plain[0] == pytest.approx(plain[1])
    hub_first = tm.pair_distances(embeddings, pairs, "angular", training_mean=np.array([0.5, 0, 0]))
    assert hub_first[0] > hub_first[1]


def test_training_mean_of_the_wrong_size_is_a_named_error():
    with pytest.raises(ValueError, match="training_mean"):
        tm.pair_distances(np.eye(3, dtype=np.float32), Pairs(np.array([0]), np.array([1]), np.zeros(1, bool)),
                          training_mean=np.zeros(4))


@pytest.mark.parametrize("metric", ["L2", "squared-L2", "angular"])
def test_normalised_retrieval_brute_force(metric):
    """Ranking, precision@1 and neighbour distances against the explicit normalised scores."""
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 6, 50)
    centres = rng.normal(size=(6, 8))
    embeddings = centres[labels] + rng.normal(scale=1.5, size=(50, 8))
    embeddings = (embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)).astype(np.float32)
    mean = embeddings[:30].astype(np.float64).mean(axis=0)
    got = tm.retrieval_metrics(embeddings, labels, k=3, distance_metric=metric, return_neighbours=True,
                               training_mean=mean)
    vectors = embeddings.astype(np.float64)
    scores = np.array([[normalised_score(u, v, mean) for v in vectors] for u in vectors])
    np.fill_diagonal(scores, -np.inf)
    ranked = np.argsort(-scores, axis=1, kind="stable")[:, :3]
    np.testing.assert_array_equal(got["neighbours"], ranked)
    has_positive = np.array([np.sum(labels == c) > 1 for c in labels])
    assert got["precision_at_1"] == pytest.approx(np.mean((labels[ranked[:, 0]] == labels)[has_positive]))
    best = np.take_along_axis(scores, ranked, axis=1)
    want = {"L2": np.sqrt(np.maximum(2 - 2 * best, 0)), "squared-L2": 2 - 2 * best, "angular": 1 - best}[metric]
    np.testing.assert_allclose(got["neighbour_distances"], want, atol=1e-5)


# --- retrieval ------------------------------------------------------------------------------------

def brute_force_retrieval(embeddings, labels, k):
    """Rank by explicit Euclidean distances, query removed; queries without positives skipped."""
    distances = np.linalg.norm(embeddings[:, None] - embeddings[None], axis=-1)
    p1, hits, aps = [], [], []
    for q in range(len(labels)):
        others = np.array([i for i in range(len(labels)) if i != q])
        ranked = others[np.argsort(distances[q, others], kind="stable")]
        relevant = labels[ranked] == labels[q]
        r = int(relevant.sum())
        if r == 0:
            continue
        p1.append(relevant[0])
        hits.append(relevant[:k].any())
        ap = sum(relevant[:i + 1].sum() / (i + 1) for i in range(r) if relevant[i]) / r
        aps.append(ap)
    return np.mean(p1), np.mean(hits), np.mean(aps), len(aps)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("metric", ["L2", "angular"])
def test_retrieval_metrics_brute_force(seed, metric):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 5, 40)
    labels[0] = 9  # a class with a single item: skipped as a query
    centres = rng.normal(size=(10, 8))
    embeddings = (centres[labels] + rng.normal(scale=1.0, size=(40, 8))).astype(np.float32)
    if metric == "angular":  # on unit vectors the angular ranking equals the Euclidean one
        embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    got = tm.retrieval_metrics(embeddings, labels, k=5, distance_metric=metric)
    p1, recall, map_r, queries = brute_force_retrieval(embeddings, labels, 5)
    assert got["precision_at_1"] == pytest.approx(p1)
    assert got["recall_at_k"] == pytest.approx(recall)
    assert got["map_at_r"] == pytest.approx(map_r)
    assert got["num_queries"] == queries and got["num_queries_without_positive"] == 1


def test_retrieval_hand_made_map_at_r():
    # 1-D points: class A at 0, 1, 10; class B at 2.4, 3.4. Query 0 (A): R=2, ranking 1(A) 2.4 3.4
    # 10(A) -> AP@R = (1/1 + 0)/2 = 0.5. Query 1 (A): ranking 0(A) 2.4 ... -> 0.5. Query 10 (A):
    # ranking 3.4 2.4 1(A) 0(A) -> 0. Query 2.4 (B): ranking 3.4(B) -> R=1: 1. Query 3.4 (B): 1.
    embeddings = np.array([[0.0], [1.0], [10.0], [2.4], [3.4]], np.float32)
    labels = np.array([0, 0, 0, 1, 1])
    got = tm.retrieval_metrics(embeddings, labels, k=2)
    assert got["map_at_r"] == pytest.approx((0.5 + 0.5 + 0 + 1 + 1) / 5)
    assert got["precision_at_1"] == pytest.approx(4 / 5)
    assert got["recall_at_k"] == pytest.approx(4 / 5)  # query 10's top 2 are both B


def test_perfect_embeddings_score_one():
    labels = np.repeat(np.arange(4), 5)
    embeddings = np.eye(4, dtype=np.float32)[labels]
    got = tm.retrieval_metrics(embeddings, labels, k=3)
    assert got["precision_at_1"] == got["recall_at_k"] == got["map_at_r"] == 1.0


def test_retrieval_chunks_and_neighbours(monkeypatch):
    """Block boundaries change nothing; neighbours are the nearest others, query excluded."""
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 6, 70)
    embeddings = rng.normal(size=(70, 4)).astype(np.float32)
    whole = tm.retrieval_metrics(embeddings, labels, k=4, return_neighbours=True)
    monkeypatch.setattr(tm, "_QUERY_CHUNK", 16)
    chunked = tm.retrieval_metrics(embeddings, labels, k=4, return_neighbours=True)
    for key in ("precision_at_1", "recall_at_k", "map_at_r"):
        assert whole[key] == pytest.approx(chunked[key])
    np.testing.assert_array_equal(whole["neighbours"], chunked["neighbours"])
    distances = np.linalg.norm(embeddings[:, None] - embeddings[None], axis=-1)
    np.fill_diagonal(distances, np.inf)
    np.testing.assert_array_equal(whole["neighbours"], np.argsort(distances, axis=1)[:, :4])
    np.testing.assert_allclose(whole["neighbour_distances"], np.sort(distances, axis=1)[:, :4], atol=1e-4)
    np.testing.assert_array_equal(tm.nearest_neighbours(embeddings, 4), whole["neighbours"])


@pytest.mark.parametrize("depth", [1, 7, 100])
def test_top_k_rows_sampled_path_equals_stable_argsort(depth):
    """Large rows take the sampled-bound path; quantised values make many ties; -inf is allowed."""
    rng = np.random.default_rng(depth)
    similarity = np.round(rng.random((40, 6000)), 3).astype(np.float32)
    similarity[:, ::7] = -np.inf
    indices, values = tm.top_k_rows(similarity, depth)
    expected = np.argsort(-similarity, axis=1, kind="stable")[:, :depth]
    np.testing.assert_array_equal(indices, expected)
    np.testing.assert_array_equal(values, np.take_along_axis(similarity, expected, axis=1))


def test_non_finite_inputs_are_named_errors():
    with pytest.raises(ValueError, match="NaN"):
        tm.retrieval_metrics(np.array([[np.nan], [1.0], [2.0]]), np.array([0, 0, 1]))
    with pytest.raises(ValueError, match="NaN"):
        tm.roc_auc([np.nan, 0.1], [True, False])
