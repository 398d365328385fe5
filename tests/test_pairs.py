"""Pair sampling (tinymatch.pairs) against brute-force enumeration of all pairs."""

from itertools import combinations

import numpy as np
import pytest

from tinymatch.config import Config
from tinymatch.metrics import pair_distances
from tinymatch.pairs import (
    Pairs,
    all_negative_pairs,
    count_negative_pairs,
    hard_negative_pairs,
    make_pairs,
    pair_keys,
    pairs_for_config,
    positive_pairs,
    random_negative_pairs,
    unique_in_order,
)


def brute_force(labels, same: bool) -> set[tuple[int, int]]:
    return {(i, j) for i, j in combinations(range(len(labels)), 2) if (labels[i] == labels[j]) == same}


def as_set(first, second) -> set[tuple[int, int]]:
    return {(min(a, b), max(a, b)) for a, b in zip(first.tolist(), second.tolist())}


LABEL_SETS = {
    "mixed": np.array([2, 0, 1, 0, 2, 2, 0, 5]),
    "singletons_and_a_pair": np.array([0, 1, 2, 3, 3]),
    "random": np.random.default_rng(0).integers(0, 6, 40),
    "one_big_class": np.array([0] * 9 + [1]),
}


# --- building blocks ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", LABEL_SETS)
def test_positive_pairs_uncapped_are_every_same_class_pair(name):
    labels = LABEL_SETS[name]
    first, second = positive_pairs(labels, 0, np.random.default_rng(0))
    assert as_set(first, second) == brute_force(labels, same=True)
    assert len(first) == len(brute_force(labels, same=True))  # each once
    assert np.all(first != second)


@pytest.mark.parametrize("cap", [1, 7, 50])
def test_positive_pairs_capped_are_distinct_same_class_pairs(cap):
    labels = LABEL_SETS["random"]
    first, second = positive_pairs(labels, cap, np.random.default_rng(3))
    everything = brute_force(labels, same=True)
    chosen = as_set(first, second)
    assert len(first) == len(chosen) == min(cap, len(everything))
    assert chosen <= everything


def test_capped_positive_pairs_cover_all_pairs_uniformly():
    """Every one of the 10 positives of a 5-item class is drawn about equally often."""
    labels = np.zeros(5, int)
    counts = dict.fromkeys(brute_force(labels, same=True), 0)
    rng = np.random.default_rng(0)
    for _ in range(2000):
        for pair in as_set(*positive_pairs(labels, 3, rng)):
            counts[pair] += 1
    expected = 2000 * 3 / 10
    assert all(abs(c - expected) < 0.15 * expected for c in counts.values())


@pytest.mark.parametrize("name", LABEL_SETS)
def test_all_negative_pairs_and_their_count(name):
    labels = LABEL_SETS[name]
    first, second = all_negative_pairs(labels)
    assert as_set(first, second) == brute_force(labels, same=False)
    assert len(first) == count_negative_pairs(labels) == len(brute_force(labels, same=False))


@pytest.mark.parametrize("count", [1, 20, 10_000])
def test_random_negative_pairs_distinct_and_exclusions_respected(count):
    labels = LABEL_SETS["random"]
    everything = brute_force(labels, same=False)
    excluded = sorted(everything)[:30]
    keys = pair_keys([a for a, _ in excluded], [b for _, b in excluded], len(labels))
    first, second = random_negative_pairs(labels, count, np.random.default_rng(1), keys)
    chosen = as_set(first, second)
    assert len(chosen) == len(first) == min(count, len(everything) - len(excluded))
    assert chosen <= everything and not chosen & set(excluded)


def test_hard_negative_pairs_are_nearest_other_class_items_round_robin():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 4, 30)
    embeddings = rng.normal(size=(30, 3)).astype(np.float32)
    first, second = hard_negative_pairs(labels, 30, embeddings, "L2", np.random.default_rng(0))
    distances = np.linalg.norm(embeddings[:, None] - embeddings[None], axis=-1)
    distances[labels[:, None] == labels[None, :]] = np.inf
    nearest = set(as_set(np.arange(30), distances.argmin(axis=1)))
    chosen = as_set(first, second)
    assert len(chosen) == 30 and chosen <= brute_force(labels, same=False)
    # the first round gives every anchor's nearest other-class item (pairs shared by two anchors
    # appear once, so the first round is at most 30 pairs, all of them nearest pairs)
    assert nearest <= chosen


def test_pair_keys_are_order_free_and_unique_in_order_keeps_first():
    assert pair_keys([1, 4], [4, 1], 10).tolist() == [14, 14]
    assert unique_in_order(np.array([5, 3, 5, 1, 3])).tolist() == [0, 1, 3]


# --- make_pairs -----------------------------------------------------------------------------------

def test_make_pairs_takes_all_positives_when_under_cap():
    labels = LABEL_SETS["mixed"]
    pairs = make_pairs(labels, max_positive_pairs=100, seed=0)
    assert as_set(pairs.first[pairs.same], pairs.second[pairs.same]) == brute_force(labels, same=True)
    assert pairs.same.sum() == (~pairs.same).sum() == 6


@pytest.mark.parametrize("hard", [False, True])
def test_pairs_balanced_distinct_and_seeded(hard):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 8, 120)
    embeddings = rng.normal(size=(120, 6)).astype(np.float32)

    def make(seed):
        return make_pairs(labels, max_positive_pairs=150, seed=seed, embeddings=embeddings,
                          hard_negatives=hard)

    pairs = make(3)
    assert pairs.same.sum() == 150 and (~pairs.same).sum() == 150
    assert np.all(labels[pairs.first][pairs.same] == labels[pairs.second][pairs.same])
    assert np.all(labels[pairs.first][~pairs.same] != labels[pairs.second][~pairs.same])
    assert len(as_set(pairs.first, pairs.second)) == len(pairs)  # no pair twice, in either order
    again = make(3)
    np.testing.assert_array_equal(pairs.first, again.first)
    np.testing.assert_array_equal(pairs.second, again.second)
    assert not np.array_equal(pairs.first, make(4).first)


def test_hard_negatives_are_harder_than_random_ones():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 5, 200)
    embeddings = rng.normal(size=(200, 4)).astype(np.float32)
    hard = make_pairs(labels, max_positive_pairs=100, seed=0, embeddings=embeddings, hard_negatives=True)
    easy = make_pairs(labels, max_positive_pairs=100, seed=0)
    distances = np.linalg.norm(embeddings[:, None] - embeddings[None], axis=-1)
    distances[labels[:, None] == labels[None, :]] = np.inf
    nearest = distances.argmin(axis=1)
    for a, b in zip(hard.first[~hard.same], hard.second[~hard.same]):
        assert nearest[a] == b or nearest[b] == a
    assert pair_distances(embeddings, hard)[~hard.same].mean() < pair_distances(embeddings, easy)[~easy.same].mean()


def test_tiny_label_sets_take_every_negative_and_degenerate_ones_are_named():
    pairs = make_pairs(np.array([0, 0, 0, 1]), max_positive_pairs=10, seed=0)
    assert pairs.same.sum() == 3 and (~pairs.same).sum() == 3
    with pytest.raises(ValueError, match="2 classes"):
        make_pairs(np.zeros(5), max_positive_pairs=10, seed=0)
    with pytest.raises(ValueError, match="no class has two items"):
        make_pairs(np.arange(5), max_positive_pairs=10, seed=0)
    with pytest.raises(ValueError, match="embeddings"):
        make_pairs(np.array([0, 0, 1, 1]), max_positive_pairs=10, seed=0, hard_negatives=True)


def test_pairs_for_config_uses_the_config_settings():
    labels = LABEL_SETS["random"]
    config = Config.from_profile("smoke", max_positive_pairs=9, seed=4)
    expected = make_pairs(labels, max_positive_pairs=9, seed=4)
    got = pairs_for_config(labels, config)
    np.testing.assert_array_equal(got.first, expected.first)
    np.testing.assert_array_equal(got.second, expected.second)


def test_pairs_save_load_round_trip(tmp_path):
    pairs = make_pairs(np.array([0, 0, 1, 1, 2]), max_positive_pairs=5, seed=0)
    path = pairs.save(tmp_path / "p" / "pairs.npz", indices=np.arange(5) + 10)
    loaded = Pairs.load(path)
    np.testing.assert_array_equal(loaded.first, pairs.first)
    np.testing.assert_array_equal(loaded.same, pairs.same)
    assert list(tmp_path.joinpath("p").iterdir()) == [path]  # no temporary left behind
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        Pairs.load(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not an npz")
    with pytest.raises(ValueError, match="junk.npz"):
        Pairs.load(tmp_path / "junk.npz")
    with pytest.raises(ValueError, match="same length"):
        Pairs([0, 1], [1], [True])
