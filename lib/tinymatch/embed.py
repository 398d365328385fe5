"""Embeddings: a model over a dataset's images in bounded memory, cached per model file and images.

- `embed` / `embed_batches` run a model over images one block at a time: only one block of images
  is ever decoded into float32.
- `embeddings_for` caches a model file's embeddings of a set of dataset rows as
  `<cache_dir>/<model stem>-<key>.npy`, keyed by the model file's identity (path, size, mtime), the
  dataset's source and size and the rows asked for; written atomically, so a killed run never leaves
  a half cache file, and a damaged one is recomputed.
- The baselines every evaluation scores beside the trained model: raw pixels (flattened, unit
  length) and the untrained network (the configured architecture with random weights).
- `model_embedders` bundles the three as {model name: dataset rows -> embeddings}, the shape the
  evaluation protocols take.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

import keras
import numpy as np
from tqdm.auto import tqdm

from tinymatch import model as model_module
from tinymatch.config import MODEL_NAMES, Config
from tinymatch.io_utils import atomic_save_arrays
from tinymatch.rundir import RunDir

RAW_PIXEL_CHUNK = 1024  # images per block when flattening raw pixels (12,288-d each)

Embedder = Callable[[np.ndarray], np.ndarray]  # dataset row indices -> float32 [N, D]


def embed_batches(model, get_batch: Callable[[int, int], np.ndarray], count: int, *,
                  batch_size: int, progress: bool, description: str = "embedding") -> np.ndarray:
    """Run `model` over `get_batch(start, stop)` blocks; only one block of images is in memory."""
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: must be >= 1")
    output = None
    with tqdm(total=count, desc=description, unit="img", disable=not progress, leave=False) as bar:
        for start in range(0, count, batch_size):
            stop = min(start + batch_size, count)
            batch = np.asarray(get_batch(start, stop), dtype=np.float32)
            vectors = np.asarray(model.predict_on_batch(batch), dtype=np.float32)
            if output is None:
                output = np.empty((count, vectors.shape[-1]), dtype=np.float32)
            output[start:stop] = vectors
            bar.update(stop - start)
    if output is None:
        dim = int(model.outputs[0].shape[-1]) if getattr(model, "outputs", None) else 0
        output = np.empty((0, dim), dtype=np.float32)
    return output


def embed(model, images, *, batch_size: int = 512, progress: bool = True) -> np.ndarray:
    """Embeddings float32 [N, D] of `images` (uint8 or float32 [N, 64, 64, 3], 0..255) in batches."""
    return embed_batches(model, lambda a, b: images[a:b], len(images), batch_size=batch_size,
                         progress=progress)


class LazyRows:
    """`images[indices]` without copying all of it: slicing gathers only the rows asked for."""

    def __init__(self, images, indices):
        self.images, self.indices = images, np.asarray(indices)

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.indices),) + tuple(self.images.shape[1:])

    def __getitem__(self, rows):
        return self.images[self.indices[rows]]


# --- the trained model, cached --------------------------------------------------------------------

def file_identity(path) -> str:
    """Cheap identity of a file: resolved path, size and modification time (ns)."""
    path = Path(path)
    stat = path.stat()
    return f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"


def embedding_cache_key(model_path, dataset, indices) -> str:
    """Hex key of (model file identity, dataset source, indices): changes when any of them does."""
    digest = hashlib.sha256()
    digest.update(file_identity(model_path).encode())
    digest.update(f"|{getattr(dataset, 'source', '')}|{len(dataset.labels)}|".encode())
    digest.update(np.ascontiguousarray(indices, dtype=np.int64).tobytes())
    return digest.hexdigest()[:16]


def load_embedding_model(model_path):
    """The embedding model in `model_path` (a Siamese file yields its shared embedding model).

    Raises model.NotATinymatchModelError (a ValueError) when the file is a Keras model that does
    not map one image to one vector.
    """
    network = model_module.load_model(model_path)
    if len(network.inputs) == 2:
        network = model_module.embedding_from_siamese(network)
    input_shape = tuple(network.inputs[0].shape) if len(network.inputs) == 1 else ()
    if len(input_shape) != 4 or input_shape[-1] != 3 or len(network.outputs) != 1 \
            or len(network.outputs[0].shape) != 2:
        raise model_module.NotATinymatchModelError(
            f"{model_path} is not a tinymatch model: expected one image input [H, W, 3] and one "
            f"embedding output, found inputs {[tuple(t.shape) for t in network.inputs]}")
    return network


def embeddings_for(model_path, dataset, indices, *, cache_dir, batch_size: int = 512,
                   progress: bool = True, model=None) -> np.ndarray:
    """Embeddings of `dataset.images[indices]` by the model in `model_path`, cached as .npy.

    The cache file `<cache_dir>/<model stem>-<key>.npy` is keyed by the model file's identity and a
    hash of the indices, and written atomically. `model` (already loaded) saves reloading the file.
    """
    model_path = Path(model_path)
    if not model_path.is_file():
        raise FileNotFoundError(f"model file not found: {model_path}")
    indices = np.asarray(indices, dtype=np.int64)
    cache_file = Path(cache_dir) / f"{model_path.stem}-{embedding_cache_key(model_path, dataset, indices)}.npy"
    if cache_file.is_file():
        try:
            cached = np.load(cache_file, allow_pickle=False)
            if cached.shape[0] == len(indices):
                return cached
        except (OSError, ValueError):
            pass  # a damaged cache file is recomputed and replaced
    network = model if model is not None else load_embedding_model(model_path)
    vectors = embed_batches(network, lambda a, b: dataset.images[indices[a:b]], len(indices),
                            batch_size=batch_size, progress=progress,
                            description=f"embedding ({model_path.name})")
    atomic_save_arrays(cache_file, vectors)
    return vectors


# --- baselines ------------------------------------------------------------------------------------

def raw_pixel_embeddings(images) -> np.ndarray:
    """Baseline: flattened pixels, L2-normalised, float32 [N, H*W*C] (built block by block)."""
    count = len(images)
    width = int(np.prod(np.shape(images)[1:]))
    output = np.empty((count, width), dtype=np.float32)
    for start in range(0, count, RAW_PIXEL_CHUNK):
        block = np.asarray(images[start:start + RAW_PIXEL_CHUNK], dtype=np.float32).reshape(-1, width)
        norms = np.linalg.norm(block, axis=1, keepdims=True)
        output[start:start + len(block)] = block / np.maximum(norms, 1e-12)
    return output


def untrained_embedding_model(config: Config):
    """Baseline: the configured embedding network with random weights (seeded by config.seed).

    ImageNet weights are switched off: the point is what the architecture alone gives.
    """
    keras.utils.set_random_seed(config.seed)
    return model_module.build_embedding_model(config.replace(weights=""))


def model_embedders(model_path, dataset, config: Config, *, baselines: bool,
                    progress: bool) -> dict[str, Embedder]:
    """{model name: dataset rows -> embeddings}, in MODEL_NAMES order (the trained model first: it
    decides the pairs). The trained model's embeddings are cached in the run's embeddings folder
    beside the model file; the untrained network is built on first use, once."""
    model_path = Path(model_path)
    network = load_embedding_model(model_path)
    cache_dir = RunDir(model_path.parent).embeddings
    embedders: dict[str, Embedder] = {"trained": lambda idx: embeddings_for(
        model_path, dataset, idx, cache_dir=cache_dir, batch_size=config.eval_batch_size,
        progress=progress, model=network)}
    if baselines:
        untrained: list = []

        def untrained_embeddings(idx):
            if not untrained:
                untrained.append(untrained_embedding_model(config))
            return embed_batches(untrained[0], lambda a, b: dataset.images[idx[a:b]], len(idx),
                                 batch_size=config.eval_batch_size, progress=progress,
                                 description="embedding (untrained)")

        embedders["raw_pixels"] = lambda idx: raw_pixel_embeddings(LazyRows(dataset.images, idx))
        embedders["untrained"] = untrained_embeddings
    return {name: embedders[name] for name in MODEL_NAMES if name in embedders}


__all__ = ["embed", "embed_batches", "embeddings_for", "embedding_cache_key", "file_identity",
           "load_embedding_model", "raw_pixel_embeddings", "untrained_embedding_model",
           "model_embedders", "LazyRows", "Embedder", "RAW_PIXEL_CHUNK"]
