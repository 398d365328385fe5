"""Where a run's data comes from: the one place that decides, including the one synthetic policy.

For a `Config`, in order of precedence:

1. `config.data` = "synthetic": the synthetic dataset (any profile);
2. `config.data` = a path (the CLI's `--data PATH`);
3. `$TINYMATCH_DATA`;
4. the `smoke` profile: the synthetic dataset;
5. `data/tiny-imagenet-200/`, else `data/tiny-imagenet-200.zip` (`config.resolve_data_path`).

The synthetic dataset is sized by the config (`config.max_classes` x
`config.max_images_per_class`, 12 x 24 when those are 0) and seeded by `config.seed`. It is
written once, never inside the repository: under the cache root (`config.cache_dir`, else
`$TINYMATCH_CACHE`, else `~/.cache/tinymatch`), in `synthetic-data/<its parameters>/`, atomically
and under a lock, so concurrent first uses write it once and nobody reads half of it.
`tinymatch train`, `evaluate` and `report` all go through `load_dataset_for` / `data_path_for`,
so they see the same data for the same config.
"""

from __future__ import annotations

import os
from pathlib import Path

from tinymatch import rundir
from tinymatch.config import DATA_ENV_VAR, resolve_data_path
from tinymatch.data.cache import load_dataset, user_cache_root
from tinymatch.data.dataset import Dataset
from tinymatch.data.errors import DataError
from tinymatch.synthetic import LAYOUT_DIR, make_synthetic_dataset

SYNTHETIC = "synthetic"  # the `config.data` value that asks for the synthetic dataset
SYNTHETIC_DATA_DIR = "synthetic-data"  # folder of the synthetic datasets under the cache root
SYNTHETIC_VERSION = 1  # bump when tinymatch.synthetic draws different images for the same options
_SYNTHETIC_DEFAULT_SIZE = (12, 24)  # classes, training images a class (the smoke profile's)
_SYNTHETIC_LOCK_WAIT_SECONDS = 600.0


def uses_synthetic_data(config) -> bool:
    """Whether `config` means the synthetic dataset (see the module docstring for the rules)."""
    if config.data == SYNTHETIC:
        return True
    return not config.data and config.profile == "smoke" and not os.environ.get(DATA_ENV_VAR)


def synthetic_options(config) -> dict:
    """The `make_synthetic_dataset` options of the synthetic dataset for `config`."""
    classes = config.max_classes or _SYNTHETIC_DEFAULT_SIZE[0]
    images = config.max_images_per_class or _SYNTHETIC_DEFAULT_SIZE[1]
    return dict(num_classes=classes, images_per_class=images, val_per_class=4, test_images=8,
                grayscale=min(3, classes * images), corrupt=0, seed=config.seed)


def synthetic_data_path(config) -> Path:
    """The synthetic dataset's `tiny-imagenet-200/` folder for `config`, written on first use."""
    options = synthetic_options(config)
    root = Path(config.cache_dir).expanduser() if config.cache_dir else user_cache_root()
    name = ("v{v}-seed{seed}-c{num_classes}-i{images_per_class}-val{val_per_class}-test{test_images}"
            "-gray{grayscale}").format(v=SYNTHETIC_VERSION, **options)
    folder = root / SYNTHETIC_DATA_DIR / name
    target = folder / LAYOUT_DIR
    if (target / "wnids.txt").is_file():
        return target
    try:
        with rundir.locked(folder.parent, what="synthetic dataset folder",
                           wait=_SYNTHETIC_LOCK_WAIT_SECONDS):
            if not (target / "wnids.txt").is_file():  # not written while we waited
                make_synthetic_dataset(folder, **options)  # atomic: a temp folder renamed into place
    except rundir.RunLockedError as err:
        raise DataError(str(err)) from None
    except OSError as err:
        raise DataError(f"{folder}: cannot write the synthetic dataset ({err.strerror}); set "
                        "cache_dir or TINYMATCH_CACHE to a writable folder") from None
    return target


def is_synthetic(path: str | os.PathLike) -> bool:
    """Whether a dataset path is one `synthetic_data_path` made (the report says so)."""
    return SYNTHETIC_DATA_DIR in Path(path).parts


def data_path_for(config) -> Path:
    """The dataset (zip or folder) `config` means, the synthetic one written if needed."""
    if uses_synthetic_data(config):
        return synthetic_data_path(config)
    return resolve_data_path(config.data)


def load_dataset_for(config, progress: bool = True) -> Dataset:
    """`load_dataset` of `data_path_for(config)` with the config's cache and subset fields."""
    return load_dataset(data_path_for(config), config.cache_dir or None, skip_corrupt=config.skip_corrupt,
                        max_classes=config.max_classes,
                        max_images_per_class=config.max_images_per_class, progress=progress)


__all__ = ["SYNTHETIC", "SYNTHETIC_DATA_DIR", "uses_synthetic_data", "synthetic_options",
           "synthetic_data_path", "is_synthetic", "data_path_for", "load_dataset_for"]
