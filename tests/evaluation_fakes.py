"""Stand-ins shared by the evaluation tests: a dataset of flat-colour classes, no decoding."""

from dataclasses import dataclass

import numpy as np


@dataclass
class FakeDataset:
    """The parts of tinymatch.data.Dataset that evaluation uses."""

    images: np.ndarray
    labels: np.ndarray
    source: str = "fake"


def colour_images(labels, seed=0):
    """One flat colour per class plus noise: even raw pixels separate the classes a little."""
    rng = np.random.default_rng(seed)
    palette = rng.integers(0, 256, size=(int(labels.max()) + 1, 3))
    noise = rng.normal(scale=40, size=(len(labels), 64, 64, 3))
    return np.clip(palette[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8)
