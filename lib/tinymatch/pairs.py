"""Evaluation pairs: which items are compared with which, drawn once with a fixed seed.

Every model and every figure of a protocol is scored on the same pairs, and validation during
training uses the same sampler, so a training run's val AUC and the evaluation's are one quantity.

- Positives are same-class pairs (i < j): all of them, or `max_positive_pairs` drawn uniformly
  without replacement. They are numbered without being materialised, so 10,000 images (50 million
  pairs) cost memory proportional to the images, not the pairs.
- Negatives are as many different-class pairs: uniform random ones, or *hard* ones (the nearest
  other-class neighbours of random anchors, round robin over anchors so many anchors contribute).
  When a label set has no more negatives than positives, all of its negatives are taken.
- No pair appears twice, in either order. Positions index into the label array given.

Small pure NumPy functions, each tested against brute-force enumeration (tests/test_pairs.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinymatch.io_utils import atomic_save_arrays
from tinymatch.metrics import similarity_setup, top_k_rows

_RANDOM_NEGATIVE_ROUNDS = 100  # rejection-sampling rounds before giving up on distinct negatives
_ANCHOR_CHUNK = 1024  # anchors per block when ranking hard negatives: 1,024 x N similarities


@dataclass
class Pairs:
    """Pairs of positions (into one embedding array) and whether each pair shares a class."""

    first: np.ndarray  # int64 [M]
    second: np.ndarray  # int64 [M]
    same: np.ndarray  # bool [M]

    def __post_init__(self) -> None:
        self.first = np.asarray(self.first, dtype=np.int64)
        self.second = np.asarray(self.second, dtype=np.int64)
        self.same = np.asarray(self.same, dtype=bool)
        if not len(self.first) == len(self.second) == len(self.same):
            raise ValueError("Pairs: first, second and same must have the same length")

    def __len__(self) -> int:
        return len(self.same)

    def save(self, path, **extra_arrays) -> Path:
        """Write an .npz (first, second, same, plus any `extra_arrays`) atomically."""
        return atomic_save_arrays(path, first=self.first, second=self.second, same=self.same,
                                  **extra_arrays)

    @classmethod
    def load(cls, path) -> "Pairs":
        path = Path(path)
        try:
            with np.load(path) as stored:
                return cls(stored["first"], stored["second"], stored["same"])
        except FileNotFoundError:
            raise FileNotFoundError(f"pairs file not found: {path}") from None
        except (KeyError, ValueError, OSError) as err:
            raise ValueError(f"{path} is not a pairs file: {err}") from None


# --- building blocks ------------------------------------------------------------------------------

def pair_keys(first, second, n: int) -> np.ndarray:
    """Order-free integer key of each pair (i, j) among n items: min * n + max."""
    first, second = np.asarray(first, np.int64), np.asarray(second, np.int64)
    return np.minimum(first, second) * n + np.maximum(first, second)


def unique_in_order(keys) -> np.ndarray:
    """Positions of the first occurrence of each key, in order of appearance."""
    _, first_seen = np.unique(np.asarray(keys), return_index=True)
    return np.sort(first_seen)


def count_negative_pairs(labels) -> int:
    """Number of different-class pairs (i < j): (n^2 - sum of class sizes^2) / 2."""
    labels = np.asarray(labels).ravel()
    _, class_size = np.unique(labels, return_counts=True)
    return (len(labels) ** 2 - int(np.sum(class_size.astype(np.int64) ** 2))) // 2


def positive_pairs(labels, cap: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """All same-class pairs (i < j in class order), or `cap` of them drawn uniformly without
    replacement (`cap <= 0`: no cap).

    Items are grouped by class; the item at sorted position p starts a row of (its class size - 1 -
    its rank in the class) pairs, so pair number t is found by a binary search over row starts.
    """
    labels = np.asarray(labels).ravel()
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    _, class_start, class_size = np.unique(sorted_labels, return_index=True, return_counts=True)
    class_of_position = np.repeat(np.arange(len(class_size)), class_size)
    rank_in_class = np.arange(len(order)) - class_start[class_of_position]
    row_length = class_size[class_of_position] - 1 - rank_in_class
    row_start = np.r_[0, np.cumsum(row_length)[:-1]].astype(np.int64)
    total = int(row_length.sum())
    if cap <= 0 or total <= cap:
        pair_ids = np.arange(total)
    else:
        pair_ids = np.sort(rng.choice(total, size=cap, replace=False))
    position = np.searchsorted(row_start, pair_ids, side="right") - 1
    # Rows of length 0 share their start with the next row; searchsorted(right) picks the last one.
    offset = pair_ids - row_start[position]
    return order[position].astype(np.int64), order[position + 1 + offset].astype(np.int64)


def all_negative_pairs(labels) -> tuple[np.ndarray, np.ndarray]:
    """Every different-class pair (i < j), in row-major order."""
    labels = np.asarray(labels).ravel()
    first, second = np.triu_indices(len(labels), k=1)
    different = labels[first] != labels[second]
    return first[different].astype(np.int64), second[different].astype(np.int64)


def random_negative_pairs(labels, count: int, rng: np.random.Generator,
                          exclude_keys=None) -> tuple[np.ndarray, np.ndarray]:
    """Up to `count` distinct different-class pairs drawn uniformly (rejection sampling), none of
    whose `pair_keys` is in `exclude_keys`. Fewer only when that many do not exist."""
    labels = np.asarray(labels).ravel()
    n = len(labels)
    taken = np.empty(0, np.int64) if exclude_keys is None else np.asarray(exclude_keys, np.int64)
    keys = np.empty(0, np.int64)
    for _ in range(_RANDOM_NEGATIVE_ROUNDS):
        missing = count - len(keys)
        if missing <= 0:
            break
        a = rng.integers(0, n, size=2 * missing + 16)
        b = rng.integers(0, n, size=2 * missing + 16)
        fresh = pair_keys(a, b, n)[labels[a] != labels[b]]
        fresh = fresh[~np.isin(fresh, taken)]
        combined = np.r_[keys, fresh]
        keys = combined[unique_in_order(combined)]
    keys = keys[:count]
    return keys // n, keys % n


def hard_negative_pairs(labels, count: int, embeddings, distance_metric: str,
                        rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Nearest other-class neighbours of randomly ordered anchors, topped up with random negatives.

    Every anchor contributes its nearest other-class item first, then its second nearest, ..., so
    the pairs are the hardest ones spread over many anchors, not the few hardest of all.
    """
    labels = np.asarray(labels).ravel()
    n = len(labels)
    queries, gallery, bias = similarity_setup(embeddings, distance_metric)
    _, class_size = np.unique(labels, return_counts=True)
    per_anchor = int(min(math.ceil(count / n) + 1, n - class_size.max()))
    anchors = rng.permutation(n)
    neighbours = np.empty((n, per_anchor), np.int64)
    for start in range(0, n, _ANCHOR_CHUNK):
        rows = anchors[start:start + _ANCHOR_CHUNK]
        similarity = queries[rows] @ gallery.T
        similarity -= bias[None, :]
        similarity[labels[rows][:, None] == labels[None, :]] = -np.inf
        neighbours[start:start + len(rows)] = top_k_rows(similarity, per_anchor)[0]
    # Round robin: all anchors' nearest, then all second nearest, ...
    first = np.tile(anchors, per_anchor)
    second = neighbours.T.ravel()
    keys = pair_keys(first, second, n)
    keys = keys[unique_in_order(keys)][:count]
    if len(keys) < count:
        extra_first, extra_second = random_negative_pairs(labels, count - len(keys), rng, keys)
        keys = np.r_[keys, pair_keys(extra_first, extra_second, n)]
    return keys // n, keys % n


# --- the sampler ----------------------------------------------------------------------------------

def make_pairs(labels, *, max_positive_pairs: int, seed: int, embeddings=None,
               hard_negatives: bool = False, distance_metric: str = "L2") -> Pairs:
    """Balanced pairs: all positives (same class) up to `max_positive_pairs`, as many negatives.

    Negatives are uniform random different-class pairs, or with `hard_negatives` (needs
    `embeddings`) the nearest other-class neighbours of random anchors. Deterministic given `seed`.
    Positives come first, then negatives; positions index into `labels`.
    """
    labels = np.asarray(labels).ravel()
    num_classes = len(np.unique(labels))
    if num_classes < 2:
        raise ValueError(f"make_pairs needs at least 2 classes (got {num_classes} among {len(labels)} items)")
    if hard_negatives and embeddings is None:
        raise ValueError("hard_negatives=True needs the embeddings to find nearest neighbours")
    rng = np.random.default_rng(seed)
    pos_first, pos_second = positive_pairs(labels, max_positive_pairs, rng)
    if len(pos_first) == 0:
        raise ValueError(f"make_pairs: no class has two items among {len(labels)} items")
    count = len(pos_first)
    if count_negative_pairs(labels) <= count:
        neg_first, neg_second = all_negative_pairs(labels)
    elif hard_negatives:
        neg_first, neg_second = hard_negative_pairs(labels, count, np.asarray(embeddings),
                                                    distance_metric, rng)
    else:
        neg_first, neg_second = random_negative_pairs(labels, count, rng)
    same = np.r_[np.ones(count, bool), np.zeros(len(neg_first), bool)]
    return Pairs(np.r_[pos_first, neg_first], np.r_[pos_second, neg_second], same)


def pairs_for_config(labels, config, embeddings=None) -> Pairs:
    """`make_pairs` with a `Config`'s seed, cap, negative mining and distance metric.

    `embeddings` is needed (and used) only when `config.hard_negatives` is on.
    """
    return make_pairs(labels, max_positive_pairs=config.max_positive_pairs, seed=config.seed,
                      embeddings=embeddings if config.hard_negatives else None,
                      hard_negatives=config.hard_negatives, distance_metric=config.distance_metric)


__all__ = ["Pairs", "make_pairs", "pairs_for_config", "positive_pairs", "all_negative_pairs",
           "random_negative_pairs", "hard_negative_pairs", "count_negative_pairs", "pair_keys",
           "unique_in_order"]
