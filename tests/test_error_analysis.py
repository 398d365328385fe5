"""Error analysis against brute-force references on small hand-made cases, and on a fake run."""

import itertools
import json
import math

import numpy as np
import pytest
from matplotlib.figure import Figure

from tinymatch.io_utils import nan_to_none
from tinymatch import error_analysis as ea
from tinymatch import plots
from tinymatch.config import Config
from tinymatch.metrics import retrieval_metrics, pair_distances, roc_auc, roc_curve
from tinymatch.pairs import make_pairs
from tinymatch.rundir import RunDir, evaluation_array_keys, read_run, write_evaluation_arrays


def mann_whitney_auc(distances, same):
    """P(positive closer than negative) + P(tie) / 2, over every (positive, negative) couple."""
    positives, negatives = distances[same], distances[~same]
    if not len(positives) or not len(negatives):
        return math.nan
    wins = sum((p < n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


def labelled_case(seed=0, num_pairs=120, num_classes=5):
    """Random pairs of `num_classes` classes with quantised (tied) distances; positives closer."""
    rng = np.random.default_rng(seed)
    first = rng.integers(0, num_classes, num_pairs)
    second = np.where(rng.random(num_pairs) < 0.4, first, rng.integers(0, num_classes, num_pairs))
    same = first == second
    distances = np.round(rng.random(num_pairs) + 0.4 * ~same, 1)
    return distances, same, first, second


# --- per-class scores -----------------------------------------------------------------------------

def test_per_class_scores_match_a_brute_force_reference():
    distances, same, first, second = labelled_case()
    # Class 4's pairs are all negative (no AUC); class 7 appears only as a query; class 3 has one query.
    keep = ~((first == 4) & same)
    distances, same, first, second = distances[keep], same[keep], first[keep], second[keep]
    rng = np.random.default_rng(1)
    query_labels = np.r_[np.repeat([0, 1, 2, 4, 7], 6), 3]
    neighbour_labels = rng.integers(0, 8, size=(len(query_labels), 3))
    neighbour_labels[::2, 0] = query_labels[::2]  # some hits

    rows = {row.label: row for row in ea.per_class_scores(distances, same, first, second, query_labels,
                                                          neighbour_labels)}
    assert sorted(rows) == [0, 1, 2, 3, 4, 7]
    for label, row in rows.items():
        involved = [i for i in range(len(same)) if first[i] == label or second[i] == label]
        expected_auc = mann_whitney_auc(distances[involved], same[involved])
        assert row.num_pairs == len(involved)
        assert row.num_positive == sum(same[i] for i in involved)
        assert row.num_negative == sum(not same[i] for i in involved)
        if math.isnan(expected_auc):
            assert math.isnan(row.roc_auc)
        else:
            assert row.roc_auc == pytest.approx(expected_auc, abs=1e-12)
        queries = [q for q in range(len(query_labels)) if query_labels[q] == label]
        if len(queries) < 2:
            assert row.num_queries == 0 and math.isnan(row.precision_at_1)
        else:
            hits = [neighbour_labels[q][0] == label for q in queries]
            assert row.num_queries == len(queries) and row.precision_at_1 == pytest.approx(np.mean(hits))
    assert math.isnan(rows[4].roc_auc) and math.isnan(rows[7].roc_auc) and rows[7].num_pairs == 0

    ordered = ea.sorted_by_auc(rows.values())
    aucs = [row.roc_auc for row in ordered]
    assert aucs[:4] == sorted(aucs[:4]) and all(math.isnan(auc) for auc in aucs[4:])


def test_labels_that_disagree_with_same_are_refused():
    distances, same, first, second = labelled_case()
    with pytest.raises(ValueError, match="disagrees"):
        ea.per_class_scores(distances, ~same, first, second, [0, 0], [[0], [0]])


# --- confused pairs and hardest errors ------------------------------------------------------------

def test_confused_class_pairs_match_a_brute_force_count():
    distances, same, first, second = labelled_case(num_classes=6, num_pairs=300)
    threshold = 0.45
    stats = {}
    for d, s, a, b in zip(distances, same, first, second):
        if s:
            continue
        key = (min(a, b), max(a, b))
        count, accepts, total = stats.get(key, (0, 0, 0.0))
        stats[key] = (count + 1, accepts + (d <= threshold), total + d)
    expected = sorted(stats.items(), key=lambda item: (-item[1][1], item[1][2] / item[1][0], item[0]))

    found = ea.confused_class_pairs(distances, same, first, second, threshold, top=7)
    assert len(found) == 7
    for row, (key, (count, accepts, total)) in zip(found, expected):
        assert (row.first_label, row.second_label) == key
        assert (row.num_negative, row.false_accepts) == (count, accepts)
        assert row.mean_distance == pytest.approx(total / count)
    assert len(ea.confused_class_pairs(distances, same, first, second, threshold, top=100)) == len(stats)
    assert ea.confused_class_pairs(distances[same], same[same], first[same], second[same], 0.5) == []


def test_hardest_errors_are_the_most_confident_mistakes():
    distances, same, _, _ = labelled_case(num_pairs=200)
    threshold = 0.6
    errors = ea.hardest_errors(distances, same, threshold, top=5)
    false_accepts = [i for i in range(len(same)) if not same[i] and distances[i] <= threshold]
    false_rejects = [i for i in range(len(same)) if same[i] and distances[i] > threshold]
    assert errors["false_accepts"].tolist() == sorted(false_accepts, key=lambda i: (distances[i], i))[:5]
    assert errors["false_rejects"].tolist() == sorted(false_rejects, key=lambda i: (-distances[i], i))[:5]
    assert ea.hardest_errors(distances, same, -1.0)["false_accepts"].size == 0


# --- class bootstrap ------------------------------------------------------------------------------

def materialised_auc(distances, same, first, second, class_counts):
    """The AUC of the pairs a sample with `class_counts` copies of each class would hold."""
    classes = np.unique(np.r_[first, second])
    count = dict(zip(classes.tolist(), class_counts))
    weights = [count[a] if s else count[a] * count[b] for s, a, b in zip(same, first, second)]
    duplicated_same = np.repeat(same, weights)
    if duplicated_same.all() or not duplicated_same.any():
        return math.nan
    return roc_auc(np.repeat(distances, weights), duplicated_same)


@pytest.mark.parametrize("class_counts", [[1, 1, 1, 1, 1], [2, 0, 1, 0, 2], [0, 3, 1, 1, 0], [5, 0, 0, 0, 0]])
def test_class_weighted_auc_equals_the_auc_of_duplicated_pairs(class_counts):
    distances, same, first, second = labelled_case(num_pairs=80)
    expected = materialised_auc(distances, same, first, second, class_counts)
    found = ea.class_weighted_auc(distances, same, first, second, class_counts)
    if math.isnan(expected):
        assert math.isnan(found)
    else:
        assert found == pytest.approx(expected, abs=1e-12)


def test_class_weighted_auc_with_unit_counts_is_the_plain_auc():
    distances, same, first, second = labelled_case()
    assert ea.class_weighted_auc(distances, same, first, second, np.ones(5)) == pytest.approx(
        roc_auc(distances, same), abs=1e-12)


@pytest.mark.parametrize("num_classes", [2, 5])
def test_class_bootstrap_ci_matches_materialised_resamples(num_classes):
    distances, same, first, second = labelled_case(num_pairs=60, num_classes=num_classes)
    rng = np.random.default_rng(3)  # the draw the docstring documents
    aucs = [materialised_auc(distances, same, first, second,
                             np.bincount(rng.integers(0, num_classes, num_classes), minlength=num_classes))
            for _ in range(40)]
    aucs = [auc for auc in aucs if not math.isnan(auc)]  # one class drawn twice: no negatives
    expected = np.percentile(aucs, [5, 95])
    found = ea.class_bootstrap_auc_ci(distances, same, first, second, samples=40, seed=3, level=0.9)
    np.testing.assert_allclose(found, expected, atol=1e-12)
    assert found[0] <= roc_auc(distances, same) <= found[1]


def test_class_bootstrap_ci_needs_two_classes():
    distances, same = np.array([0.1, 0.2]), np.array([True, True])
    with pytest.raises(ValueError):
        ea.class_bootstrap_auc_ci(distances, same, [0, 0], [0, 0], samples=5)


# --- chance levels --------------------------------------------------------------------------------

def exhaustive_random_ranking(labels):
    """Mean over queries (R > 0) of P@1 and MAP@R over every ordering of the other items."""
    labels = np.asarray(labels)
    precision, average_precision = [], []
    for query in range(len(labels)):
        others = np.delete(labels, query)
        relevant = int(np.sum(others == labels[query]))
        if relevant == 0:
            continue
        p1, ap = [], []
        for order in itertools.permutations(range(len(others))):
            hits = others[list(order)] == labels[query]
            p1.append(hits[0])
            ranks = np.arange(1, relevant + 1)
            ap.append(np.sum(np.cumsum(hits[:relevant]) / ranks * hits[:relevant]) / relevant)
        precision.append(np.mean(p1))
        average_precision.append(np.mean(ap))
    return np.mean(precision), np.mean(average_precision)


@pytest.mark.parametrize("labels", [[0, 0, 0, 1, 1, 2], [0, 0, 0, 0, 1, 1, 1], [3, 3], [0, 1, 1, 2, 2, 2]])
def test_retrieval_chance_is_the_exact_expectation(labels):
    expected_p1, expected_map = exhaustive_random_ranking(labels)
    chance = ea.retrieval_chance(labels)
    assert chance["precision_at_1"] == pytest.approx(expected_p1, abs=1e-12)
    assert chance["map_at_r"] == pytest.approx(expected_map, abs=1e-12)
    assert chance["gallery_size"] == len(labels)


def test_retrieval_chance_agrees_with_random_embeddings_and_skips_lone_queries():
    labels = np.repeat(np.arange(8), 6)
    rng = np.random.default_rng(0)
    observed = np.mean([[retrieval_metrics(rng.normal(size=(48, 4)), labels)[key]
                         for key in ("precision_at_1", "map_at_r")] for _ in range(150)], axis=0)
    chance = ea.retrieval_chance(labels)
    assert observed == pytest.approx([chance["precision_at_1"], chance["map_at_r"]], abs=0.02)
    assert chance["map_at_r"] < chance["precision_at_1"]  # not the same chance level
    lone = ea.retrieval_chance([0, 1, 2])
    assert lone["num_queries"] == 0 and math.isnan(lone["precision_at_1"])


# --- operating points -----------------------------------------------------------------------------

def test_operating_points_are_chosen_on_val_and_judged_on_test():
    val_distances, val_same, _, _ = labelled_case(seed=1, num_pairs=400)
    test_distances, test_same, _, _ = labelled_case(seed=2, num_pairs=300)
    points = ea.operating_points(val_distances, val_same, test_distances, test_same, target_far=0.05)
    candidates = np.r_[-np.inf, np.unique(val_distances)]

    def rates(distances, same, t):
        accepted = distances <= t
        return accepted[~same].mean(), accepted[same].mean(), np.mean(accepted == same)

    best_accuracy = max(rates(val_distances, val_same, t)[2] for t in candidates)
    largest_allowed = max(t for t in candidates if rates(val_distances, val_same, t)[0] <= 0.05)
    for method, check in (("accuracy", lambda t: rates(val_distances, val_same, t)[2] == best_accuracy),
                          ("far", lambda t: rates(val_distances, val_same, t)[0]
                           == rates(val_distances, val_same, largest_allowed)[0])):
        point = points[method]
        t = point["threshold"]
        assert check(t)
        val_far, val_tar, _ = rates(val_distances, val_same, t)
        assert (point["val_far"], point["val_tar"]) == pytest.approx((val_far, val_tar))
        accepted = test_distances <= t
        tn, fp = np.sum(~accepted & ~test_same), np.sum(accepted & ~test_same)
        fn, tp = np.sum(~accepted & test_same), np.sum(accepted & test_same)
        assert point["test"]["matrix"] == [[tn, fp], [fn, tp]]
        assert point["test"]["far"] == pytest.approx(fp / (fp + tn))
        assert point["test"]["tar"] == pytest.approx(tp / (tp + fn))
    assert points["far"]["val_far"] <= 0.05 and points["target_far"] == 0.05


# --- a whole (fake) run ---------------------------------------------------------------------------

def _write_evaluation(run_dir, protocol, labels, embeddings, part_indices, threshold):
    """What evaluation writes for one (protocol, trained model), built from its pieces."""
    arrays = {"threshold": np.float64(threshold)}
    for part, indices in part_indices.items():
        pairs = make_pairs(labels[indices], max_positive_pairs=60, seed=0)
        distances = pair_distances(embeddings[indices], pairs)
        arrays.update({f"{part}_distances": distances, f"{part}_same": pairs.same,
                       f"{part}_first": indices[pairs.first], f"{part}_second": indices[pairs.second]})
    far, tar, thresholds = roc_curve(arrays["test_distances"], arrays["test_same"])
    test = part_indices["test"]
    retrieval = retrieval_metrics(embeddings[test], labels[test], k=3, return_neighbours=True)
    arrays.update({"roc_far": far, "roc_tar": tar, "roc_thresholds": thresholds, "hist_bins": np.zeros(3),
                   "hist_positive": np.zeros(2), "hist_negative": np.zeros(2), "retrieval_queries": test,
                   "retrieval_labels": labels[test], "neighbours": test[retrieval["neighbours"]],
                   "neighbour_distances": retrieval["neighbour_distances"]})
    assert set(arrays) == set(evaluation_array_keys(tuple(part_indices)))
    write_evaluation_arrays(run_dir, protocol, "trained", arrays)


@pytest.fixture
def fake_run(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    Config.from_profile("smoke").save(RunDir(run_dir).config)
    labels = np.repeat(np.arange(6), 10)
    rng = np.random.default_rng(0)
    embeddings = (rng.normal(size=(6, 8)) * 1.5)[labels] + rng.normal(size=(60, 8))
    position = np.tile(np.arange(10), 6)
    _write_evaluation(run_dir, "seen", labels, embeddings,
                      {"val": np.flatnonzero(position < 5), "test": np.flatnonzero(position >= 5)}, 3.0)
    _write_evaluation(run_dir, "official-val", labels, embeddings, {"test": np.arange(60)}, 3.0)
    return run_dir, labels


def test_analyse_run_writes_a_json_that_read_run_loads(fake_run):
    run_dir, labels = fake_run
    result = ea.analyse_run(run_dir, labels)
    assert sorted(result["protocols"]) == ["official-val", "seen"]  # unseen has no arrays: left out
    assert not list(run_dir.glob(".*.tmp*"))
    stored = read_run(run_dir)["error_analysis"]
    assert stored == json.loads(RunDir(run_dir).error_analysis.read_text())
    config = Config.load(RunDir(run_dir).config)
    assert (stored["bootstrap_samples"], stored["seed"], stored["model"]) == (config.bootstrap_samples,
                                                                              config.seed, "trained")
    seen = stored["protocols"]["seen"]
    assert {row["label"] for row in seen["per_class"]} == set(range(6))
    assert all(isinstance(row["label"], int) for row in seen["per_class"])
    aucs = [row["roc_auc"] for row in seen["per_class"]]
    assert aucs == sorted(aucs)
    low, high = seen["roc_auc_class_ci95"]
    assert low <= high and 0 <= low and high <= 1
    assert seen["retrieval_chance"]["precision_at_1"] == pytest.approx(4 / 29)
    assert set(seen["operating_points"]) == {"target_far", "accuracy", "far"}
    assert "operating_points" not in stored["protocols"]["official-val"]
    assert stored["protocols"]["official-val"]["retrieval_chance"]["gallery_size"] == 60
    # The stored errors point at the pairs they describe.
    arrays = np.load(RunDir(run_dir).evaluation_file("seen", "trained"))
    for error in seen["hardest_errors"]["false_accepts"] + seen["hardest_errors"]["false_rejects"]:
        pair = error["pair"]
        assert (error["first"], error["second"]) == (arrays["test_first"][pair], arrays["test_second"][pair])
        assert error["first_label"] == labels[error["first"]]
        assert error["distance"] == pytest.approx(float(arrays["test_distances"][pair]))


def test_analyse_run_of_chosen_protocols_and_nan_as_null(fake_run):
    run_dir, labels = fake_run
    result = ea.analyse_run(run_dir, labels, protocols=["official-val"])
    assert list(result["protocols"]) == ["official-val"]
    assert nan_to_none({"a": [math.nan, 1.0]}) == {"a": [None, 1.0]}
    text = RunDir(run_dir).error_analysis.read_text()
    assert "NaN" not in text


def test_analyse_run_names_the_classes_it_cites(fake_run):
    run_dir, labels = fake_run
    names = [f"class {i}" for i in range(10)]
    stored = ea.analyse_run(run_dir, labels, class_names=names)
    assert stored["class_names"] == {str(i): f"class {i}" for i in range(6)}


def test_a_run_without_error_analysis_still_reads(fake_run):
    run_dir, _ = fake_run
    run = read_run(run_dir)
    assert "error_analysis" not in run and run["config"] == Config.from_profile("smoke")


# --- figures --------------------------------------------------------------------------------------

def _saved(fig, tmp_path, name):
    assert isinstance(fig, Figure)
    path = plots.save_fig(fig, tmp_path / name)
    assert path.stat().st_size > 1_000
    return path


def test_roc_log_far_uses_a_log_axis_from_1e_4(tmp_path):
    far = np.r_[0, np.logspace(-4, 0, 30)]
    fig = plots.roc_log_far({"seen": (far, far ** 0.2, 0.9), "unseen": (far, far ** 0.4)},
                            {"max accuracy": (0.1, 0.8), "FAR 1%": (0.008, 0.4)})
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_xlim() == pytest.approx((1e-4, 1))
    assert len(ax.get_legend().get_texts()) == 4
    _saved(fig, tmp_path, "roc_log.png")


def test_error_pairs_shows_each_distance(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 2, 64, 64, 3), dtype=np.uint8)
    fig = plots.error_pairs(images[:, 0], images[:, 1], [0.1, 0.2, 0.3, 0.4, 0.5], "false accepts")
    labels = [sub._supxlabel.get_text() for sub in fig.subfigs if sub._supxlabel is not None]
    assert labels == ["d = 0.100", "d = 0.200", "d = 0.300", "d = 0.400", "d = 0.500"]
    _saved(fig, tmp_path, "pairs.png")
    _saved(plots.error_pairs(images[:0, 0], images[:0, 1], [], "none"), tmp_path, "empty.png")


def test_class_extremes_shows_worst_and_best_once_each(tmp_path):
    rng = np.random.default_rng(0)
    images = {label: rng.integers(0, 256, size=(3, 64, 64, 3), dtype=np.uint8) for label in range(4)}
    scores = {0: 0.9, 1: 0.6, 2: 0.75, 3: math.nan}
    fig = plots.class_extremes(images, [f"class {i}" for i in range(4)], scores, count=2, per_class=4)
    row_labels = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()]
    assert row_labels == ["worst: class 1\nAUC 0.600", "worst: class 2\nAUC 0.750", "best: class 0\nAUC 0.900"]
    _saved(fig, tmp_path, "extremes.png")
