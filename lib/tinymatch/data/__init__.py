"""Tiny ImageNet, in the order the data flows.

| module     | job |
|------------|-----|
| `layout`   | the official layout from a directory or the zip: regular files only, bounded reads |
| `index`    | parse it: which images, labels, official subsets, boxes |
| `decode`   | decode the images (TensorFlow in parallel, PIL for what it refuses) |
| `cache`    | `load_dataset`: decode once into a uint8 memory map keyed by the source's identity |
| `dataset`  | the `Dataset` and its summary |
| `source`   | where a config's data comes from (`--data`, `$TINYMATCH_DATA`, `data/`, the one synthetic policy) |
| `download` | the official zip: resumable, checked |
| `splits`   | seeded split protocols, saved as `split.csv` |
| `batches`  | class-balanced P x K `tf.data` batches |

The names below are the public interface (`from tinymatch import data; data.load_dataset(...)`).
None of these modules imports TensorFlow at import time (it takes 8-13 s on 2 cores).
"""

from tinymatch.config import IMAGE_SIZE
from tinymatch.data.batches import PKSampler, pk_dataset
from tinymatch.data.cache import CACHE_ENV_VAR, default_cache_dir, load_dataset
from tinymatch.data.dataset import Dataset, format_summary, summarize
from tinymatch.data.download import OFFICIAL_MD5, OFFICIAL_SIZE, OFFICIAL_URL, download
from tinymatch.data.errors import DataError, DownloadError
from tinymatch.data.index import SUBSETS
from tinymatch.data.layout import MAX_IMAGE_BYTES, MAX_METADATA_BYTES
from tinymatch.data.source import (SYNTHETIC, SYNTHETIC_DATA_DIR, data_path_for, is_synthetic,
                                   load_dataset_for, synthetic_data_path, uses_synthetic_data)
from tinymatch.data.splits import Splits, make_splits, make_splits_for
from tinymatch.rundir import run_splits
from tinymatch.synthetic import make_synthetic_dataset

__all__ = [
    "DataError", "DownloadError", "Dataset", "Splits", "PKSampler", "load_dataset", "load_dataset_for",
    "data_path_for", "uses_synthetic_data", "is_synthetic", "summarize", "format_summary", "download",
    "make_splits", "make_splits_for", "run_splits", "pk_dataset", "make_synthetic_dataset",
    "default_cache_dir", "synthetic_data_path", "OFFICIAL_URL", "OFFICIAL_MD5", "OFFICIAL_SIZE",
    "IMAGE_SIZE", "SUBSETS", "SYNTHETIC", "SYNTHETIC_DATA_DIR", "CACHE_ENV_VAR", "MAX_IMAGE_BYTES",
    "MAX_METADATA_BYTES",
]
