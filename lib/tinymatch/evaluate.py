"""Evaluate an embedding model: embeddings -> pairs -> verification and retrieval figures.

The flow, for each protocol ("seen": new images of training classes; "unseen": classes never seen
in training; "official-val": the dataset's own labelled val/ images, when present):

1. Embed the val and test parts in batches (bounded memory), cached as .npy per model and part.
2. Draw balanced positive/negative pairs with a fixed seed, save them (npz) so every model and
   every figure is scored on the same pairs.
3. Verification: ROC, AUC with a bootstrap 95% interval, EER, TAR at FAR 1e-1/1e-2/1e-3 on both
   parts; the threshold is chosen on the val pairs only, then frozen and applied to the test pairs
   (`verification_report` takes the two parts separately so the test pairs can never choose it).
4. Retrieval on the test part: precision@1, recall@k, MAP@R, and the top-k neighbours of every query.
5. Baselines through the same code: raw pixels and the untrained (random-weights) network.

The pure metrics live in `tinymatch.metrics` and are re-exported here. Distances: smaller = more
similar; a pair matches when `distance <= threshold`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

import numpy as np

from tinymatch.config import Config
from tinymatch.io_utils import atomic_save_arrays, read_json, write_json
from tinymatch.metrics import (  # noqa: F401  (re-exported: the evaluation API in one place)
    DEFAULT_FARS,
    bootstrap_auc_ci,
    choose_threshold,
    confusion_at_threshold,
    distance_histograms,
    equal_error_rate,
    nearest_neighbours,
    pair_distances,
    retrieval_metrics,
    roc_auc,
    roc_curve,
    tar_at_far,
    verification_metrics,
)
from tinymatch.pairs import Pairs, make_pairs  # noqa: F401  (re-exported)

PROTOCOLS = ("seen", "unseen")
MODEL_NAMES = ("trained", "raw_pixels", "untrained")
_RAW_PIXEL_CHUNK = 1024


class UnreadableImageError(ValueError):
    """An image file exists but cannot be decoded."""


class MissingThresholdError(ValueError):
    """No frozen threshold is stored beside a model (needed by the official-val protocol)."""


class NoOfficialValError(ValueError):
    """The dataset has no labelled official val/ images."""


# --- embeddings -----------------------------------------------------------------------------------

def _progress_bar(total: int, description: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, unit="img", disable=not enabled, leave=False)


def _embed_batches(model, get_batch: Callable[[int, int], np.ndarray], count: int, *,
                   batch_size: int, progress: bool, description: str = "embedding") -> np.ndarray:
    """Run `model` over `get_batch(start, stop)` blocks; only one block of images is in memory."""
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: must be >= 1")
    output = None
    with _progress_bar(count, description, progress) as bar:
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
    return _embed_batches(model, lambda a, b: images[a:b], len(images), batch_size=batch_size,
                          progress=progress)


def _file_identity(path: Path) -> str:
    """Cheap identity of a model file: resolved path, size and modification time (ns)."""
    stat = path.stat()
    return f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"


def embedding_cache_key(model_path, dataset, indices) -> str:
    """Hex key of (model file identity, dataset source, indices): changes when any of them does."""
    digest = hashlib.sha256()
    digest.update(_file_identity(Path(model_path)).encode())
    digest.update(f"|{getattr(dataset, 'source', '')}|{len(dataset.labels)}|".encode())
    digest.update(np.ascontiguousarray(indices, dtype=np.int64).tobytes())
    return digest.hexdigest()[:16]


def _load_embedding_model(model_path):
    """The embedding model in `model_path` (a Siamese file yields its shared embedding model)."""
    from tinymatch import model as model_module

    network = model_module.load_model(model_path)
    if len(network.inputs) == 2:
        network = model_module.embedding_from_siamese(network)
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
            cached = np.load(cache_file)
            if cached.shape[0] == len(indices):
                return cached
        except (OSError, ValueError):
            pass  # a damaged cache file is recomputed and replaced
    network = model if model is not None else _load_embedding_model(model_path)
    vectors = _embed_batches(network, lambda a, b: dataset.images[indices[a:b]], len(indices),
                             batch_size=batch_size, progress=progress,
                             description=f"embedding ({model_path.name})")
    atomic_save_arrays(cache_file, vectors)
    return vectors


def raw_pixel_embeddings(images) -> np.ndarray:
    """Baseline: flattened pixels, L2-normalised, float32 [N, H*W*C] (built block by block)."""
    count = len(images)
    width = int(np.prod(np.shape(images)[1:]))
    output = np.empty((count, width), dtype=np.float32)
    for start in range(0, count, _RAW_PIXEL_CHUNK):
        block = np.asarray(images[start:start + _RAW_PIXEL_CHUNK], dtype=np.float32).reshape(-1, width)
        norms = np.linalg.norm(block, axis=1, keepdims=True)
        output[start:start + len(block)] = block / np.maximum(norms, 1e-12)
    return output


def untrained_embedding_model(config: Config):
    """Baseline: the configured embedding network with random weights (seeded by config.seed).

    ImageNet weights are switched off: the point is what the architecture alone gives.
    """
    import keras

    from tinymatch import model as model_module

    keras.utils.set_random_seed(config.seed)
    return model_module.build_embedding_model(config.replace(weights=""))


def _pairs_for(embeddings, labels, config: Config) -> Pairs:
    return make_pairs(labels, max_positive_pairs=config.max_positive_pairs, seed=config.seed,
                      embeddings=embeddings if config.hard_negatives else None,
                      hard_negatives=config.hard_negatives, distance_metric=config.distance_metric)


# --- verification ---------------------------------------------------------------------------------

def _part_figures(distances, pairs: Pairs, config: Config, threshold: float):
    """(JSON figures, arrays for plots) of one part's pairs at a frozen threshold."""
    figures = verification_metrics(distances, pairs.same, bootstrap_samples=config.bootstrap_samples,
                                   seed=config.seed)
    figures["confusion"] = confusion_at_threshold(distances, pairs.same, threshold)
    far, tar, thresholds = roc_curve(distances, pairs.same)
    histograms = distance_histograms(distances, pairs.same)
    arrays = {
        "distances": distances, "same": pairs.same, "first": pairs.first, "second": pairs.second,
        "roc_far": far, "roc_tar": tar, "roc_thresholds": thresholds,
        "hist_bins": histograms["bins"], "hist_positive": histograms["positive"],
        "hist_negative": histograms["negative"],
    }
    return figures, arrays


def verification_report(emb_val, labels_val, emb_test, labels_test, config: Config, *,
                        pairs_val: Pairs | None = None, pairs_test: Pairs | None = None) -> dict:
    """Verification figures; the threshold is chosen on the val part ONLY and applied to test.

    Returns {"threshold", "threshold_method", "target_far", "distance_metric", "val": {...},
    "test": {...}, "curves": {"val": arrays, "test": arrays}}. "curves" holds NumPy arrays (ROC
    points, histograms, pair distances); pop it before writing JSON. Pairs default to
    `make_pairs` with the config's seed, cap and negative mining.
    """
    pairs = {"val": pairs_val if pairs_val is not None else _pairs_for(emb_val, labels_val, config),
             "test": pairs_test if pairs_test is not None else _pairs_for(emb_test, labels_test, config)}
    distances = {"val": pair_distances(emb_val, pairs["val"], config.distance_metric),
                 "test": pair_distances(emb_test, pairs["test"], config.distance_metric)}
    return _report_from_distances(distances, pairs, config)


def _report_from_distances(distances: dict, pairs: dict, config: Config, threshold: float | None = None) -> dict:
    """The report of `verification_report` from pair distances of the parts.

    Without `threshold`, it is chosen on distances["val"] and only then applied to the test part.
    """
    if threshold is None:
        threshold = choose_threshold(distances["val"], pairs["val"].same, config.threshold_method,
                                     config.target_far)
    report = {
        "threshold": float(threshold),
        "threshold_method": config.threshold_method,
        "target_far": config.target_far,
        "distance_metric": config.distance_metric,
        "curves": {},
    }
    for part in distances:
        report[part], report["curves"][part] = _part_figures(distances[part], pairs[part], config, threshold)
    return report


# --- one protocol, several models -----------------------------------------------------------------

def _evaluation_arrays(report: dict, retrieval: dict, part_indices: dict[str, np.ndarray]) -> dict:
    """Flatten the plot data of one (protocol, model) into npz arrays named for the report."""
    arrays = {"threshold": np.float64(report["threshold"])}
    for part, curves in report["curves"].items():
        indices = part_indices[part]
        arrays[f"{part}_distances"] = curves["distances"].astype(np.float32)
        arrays[f"{part}_same"] = curves["same"]
        arrays[f"{part}_first"] = indices[curves["first"]]
        arrays[f"{part}_second"] = indices[curves["second"]]
    test = report["curves"]["test"]
    for name in ("roc_far", "roc_tar", "roc_thresholds", "hist_bins", "hist_positive", "hist_negative"):
        arrays[name] = test[name]
    arrays["retrieval_queries"] = part_indices["test"]
    arrays["retrieval_labels"] = retrieval["labels"]
    arrays["neighbours"] = part_indices["test"][retrieval["neighbours"]]
    arrays["neighbour_distances"] = retrieval["neighbour_distances"]
    return arrays


def _evaluate_protocol(protocol: str, part_indices: dict[str, np.ndarray], dataset,
                       embedders: dict[str, Callable], config: Config, out_dir: Path | None,
                       frozen_thresholds: dict[str, float] | None = None) -> dict:
    """Figures of every model in `embedders` on one protocol, all on the trained model's pairs.

    part_indices: {"val": ..., "test": ...} dataset indices, or {"test": ...} alone with
    `frozen_thresholds` (one per model). With `out_dir`, pairs go to out_dir/pairs/ and the plot
    arrays to out_dir/evaluation/.
    """
    labels = {part: np.asarray(dataset.labels)[idx] for part, idx in part_indices.items()}
    result = {f"num_{part}_images": int(len(idx)) for part, idx in part_indices.items()}
    result["num_test_classes"] = int(len(np.unique(labels["test"])))
    pairs: dict[str, Pairs] = {}
    for model_name, embedder in embedders.items():
        distances = {}
        for part, idx in part_indices.items():  # one part's embeddings in memory at a time
            embeddings = embedder(idx)
            if part not in pairs:  # the first model (trained) decides the pairs (and hard negatives)
                pairs[part] = _pairs_for(embeddings, labels[part], config)
                if out_dir is not None:
                    pairs[part].save(out_dir / "pairs" / f"{protocol}_{part}.npz", indices=idx)
            distances[part] = pair_distances(embeddings, pairs[part], config.distance_metric)
            if part == "test":
                retrieval = retrieval_metrics(embeddings, labels["test"], k=config.retrieval_top_k,
                                              distance_metric=config.distance_metric,
                                              return_neighbours=True)
                retrieval["labels"] = labels["test"]
            del embeddings
        threshold = None if frozen_thresholds is None else frozen_thresholds[model_name]
        report = _report_from_distances(distances, pairs, config, threshold)
        if out_dir is not None:
            atomic_save_arrays(out_dir / "evaluation" / f"{protocol}_{model_name}.npz",
                               **_evaluation_arrays(report, retrieval, part_indices))
        report.pop("curves")
        report["retrieval"] = {k: v for k, v in retrieval.items()
                               if k not in ("neighbours", "neighbour_distances", "labels")}
        result[model_name] = report
    return result


def _choose_thresholds(protocol: str, val_indices: np.ndarray, dataset, embedders: dict[str, Callable],
                       config: Config, out_dir: Path | None) -> dict:
    """Each model's threshold on the val part of a training protocol that has no test part of its
    own ('joint'), with that part's figures. The trained model's pairs are used for all models."""
    reason = _skip_reason(dataset, {"val": val_indices})
    if reason:
        return {"skipped": reason}
    labels = np.asarray(dataset.labels)[val_indices]
    result: dict = {"num_val_images": int(len(val_indices)), "num_val_classes": int(len(np.unique(labels)))}
    pairs = None
    for model_name, embedder in embedders.items():
        embeddings = embedder(val_indices)
        if pairs is None:
            pairs = _pairs_for(embeddings, labels, config)
            if out_dir is not None:
                pairs.save(out_dir / "pairs" / f"{protocol}_val.npz", indices=val_indices)
        distances = pair_distances(embeddings, pairs, config.distance_metric)
        del embeddings
        report = _report_from_distances({"val": distances}, {"val": pairs}, config)
        report.pop("curves")
        result[model_name] = report
    return result


def _embedders(model_path: Path, dataset, config: Config, *, baselines: bool, progress: bool):
    """{model name: indices -> embeddings}; the trained model first (it decides the pairs)."""
    network = _load_embedding_model(model_path)
    cache_dir = model_path.parent / "embeddings"
    embedders = {"trained": lambda idx: embeddings_for(
        model_path, dataset, idx, cache_dir=cache_dir, batch_size=config.eval_batch_size,
        progress=progress, model=network)}
    if baselines:
        untrained = []  # built on first use, once

        def untrained_embeddings(idx):
            if not untrained:
                untrained.append(untrained_embedding_model(config))
            return _embed_batches(untrained[0], lambda a, b: dataset.images[idx[a:b]], len(idx),
                                  batch_size=config.eval_batch_size, progress=progress,
                                  description="embedding (untrained)")

        embedders["raw_pixels"] = lambda idx: raw_pixel_embeddings(_LazyRows(dataset.images, idx))
        embedders["untrained"] = untrained_embeddings
    return embedders


class _LazyRows:
    """`images[indices]` without copying all of it: slicing gathers only the rows asked for."""

    def __init__(self, images, indices):
        self.images, self.indices = images, np.asarray(indices)

    def __len__(self):
        return len(self.indices)

    @property
    def shape(self):
        return (len(self.indices),) + tuple(self.images.shape[1:])

    def __getitem__(self, rows):
        return self.images[self.indices[rows]]


def _official_val_indices(splits, dataset, *, required: bool = True) -> np.ndarray:
    """Labelled official val images; empty (or NoOfficialValError when `required`) if none."""
    try:
        indices = np.asarray(splits.indices("official-val", "test"), dtype=np.int64)
    except ValueError:  # tinymatch.data raises DataError (a ValueError) when there are none
        indices = np.empty(0, np.int64)
    if len(indices) == 0 and required:
        raise NoOfficialValError(
            f"dataset {getattr(dataset, 'source', '?')} has no labelled official val/ images "
            "(val/images + val/val_annotations.txt); use --split seen or unseen")
    return indices


def _part_indices(splits, protocol: str, trained_on: str) -> dict[str, np.ndarray]:
    """Dataset indices of the val and test parts of `protocol` for a model trained on `trained_on`.

    `Splits.evaluation_indices` restricts the parts to what the model never saw (a 'joint' model:
    seen = held-out images of its training classes, unseen = held-out classes); it raises DataError
    (a ValueError) when the protocol cannot be judged (a model trained on 'seen' has seen images of
    every class, so 'unseen' means nothing for it).
    """
    return {part: np.asarray(splits.evaluation_indices(trained_on, protocol, part), dtype=np.int64)
            for part in ("val", "test")}


def _skip_reason(dataset, part_indices) -> str | None:
    for part, idx in part_indices.items():
        classes = np.unique(np.asarray(dataset.labels)[idx])
        if len(classes) < 2:
            return f"the {part} part has {len(idx)} images of {len(classes)} class(es); need >= 2 classes"
    return None


def evaluate_run(run_dir, dataset, splits, config: Config, *, progress: bool = True) -> dict:
    """Evaluate run_dir/model.keras and the two baselines on every protocol; write metrics.json.

    Writes (all atomically):
      metrics.json                         the figures, below
      embeddings/<model stem>-<key>.npy    cached embeddings of the trained model
      pairs/<protocol>_<part>.npz          first, second (positions in the part), same, indices
                                           (the part's dataset indices)
      evaluation/<protocol>_<model>.npz    threshold, roc_far/roc_tar/roc_thresholds, hist_bins/
                                           hist_positive/hist_negative, {val,test}_distances/_same/
                                           _first/_second (dataset indices), retrieval_queries,
                                           retrieval_labels, neighbours (dataset indices, [N, k]),
                                           neighbour_distances
    for protocol in seen, unseen, official-val (when the dataset has labelled val images) and model
    in trained, raw_pixels, untrained; all models are scored on the same pairs.

    Parts are restricted to what the model never saw (`Splits.evaluation_indices`): a model trained
    on 'joint' is judged on held-out images of its classes (seen) and on held-out classes (unseen);
    a model trained on 'seen' saw every class, so 'unseen' is {"skipped": reason}. Each protocol's
    test part is judged at the threshold chosen on its own val part. The run's frozen threshold
    (metrics["threshold"], used for official-val) is chosen on config.protocol's val part; for
    'joint' that part gets its own entry (val figures only) and pairs/joint_val.npz.

    metrics.json: {"threshold" (trained, chosen on config.protocol's val pairs), settings...,
    "<protocol>": {"num_val_images", "num_test_images", "num_test_classes", "<model>": {"threshold",
    "val": {...}, "test": {"roc_auc", "roc_auc_ci95", "eer", "tar_at_far", "confusion", ...},
    "retrieval": {"precision_at_1", "recall_at_k", "k", "map_at_r", ...}}}}. official-val has no
    "val" part: each model keeps its threshold from config.protocol. Returns the metrics dict.
    """
    run_dir = Path(run_dir)
    model_path = run_dir / "model.keras"
    if not model_path.is_file():
        raise FileNotFoundError(f"no trained model in the run directory: {model_path}")
    embedders = _embedders(model_path, dataset, config, baselines=True, progress=progress)
    metrics: dict = {
        "model": "model.keras",
        "threshold_protocol": config.protocol,
        "threshold_method": config.threshold_method,
        "distance_metric": config.distance_metric,
        "max_positive_pairs": config.max_positive_pairs,
        "hard_negatives": config.hard_negatives,
        "seed": config.seed,
    }
    for protocol in PROTOCOLS:
        try:
            part_indices = _part_indices(splits, protocol, config.protocol)
        except ValueError as err:  # e.g. a 'seen'-trained model cannot be judged on unseen classes
            metrics[protocol] = {"skipped": str(err)}
            continue
        reason = _skip_reason(dataset, part_indices)
        if reason:
            metrics[protocol] = {"skipped": reason}
            continue
        metrics[protocol] = _evaluate_protocol(protocol, part_indices, dataset, embedders, config, run_dir)
    if config.protocol not in PROTOCOLS:  # 'joint': its own val part (seen + unseen) decides
        val_indices = np.asarray(splits.indices(config.protocol, "val"), dtype=np.int64)
        metrics[config.protocol] = _choose_thresholds(config.protocol, val_indices, dataset, embedders,
                                                      config, run_dir)
    chosen = metrics[config.protocol]
    if "skipped" in chosen:
        raise ValueError(f"config.protocol={config.protocol!r}: cannot choose a threshold: {chosen['skipped']}")
    metrics["threshold"] = chosen["trained"]["threshold"]
    official = _official_val_indices(splits, dataset, required=False)
    if len(official) and _skip_reason(dataset, {"test": official}) is None:
        frozen = {name: chosen[name]["threshold"] for name in embedders}
        metrics["official-val"] = _evaluate_protocol("official-val", {"test": official}, dataset,
                                                     embedders, config, run_dir, frozen)
    write_json(run_dir / "metrics.json", metrics)
    return metrics


# --- CLI: evaluate one model file -----------------------------------------------------------------

def _stored_threshold(run_dir: Path) -> tuple[float, str]:
    """The frozen threshold of a run: siamese.keras beside the model, else metrics.json."""
    siamese_path = run_dir / "siamese.keras"
    if siamese_path.is_file():
        from tinymatch import model as model_module

        return float(model_module.siamese_threshold(model_module.load_model(siamese_path))), str(siamese_path)
    metrics_path = run_dir / "metrics.json"
    if metrics_path.is_file():
        stored = read_json(metrics_path)
        if isinstance(stored, dict) and "threshold" in stored:
            return float(stored["threshold"]), str(metrics_path)
    raise MissingThresholdError(
        f"no frozen threshold beside the model: neither {siamese_path} nor a 'threshold' in "
        f"{metrics_path} exists (train the run first, or evaluate --split seen/unseen)")


def _run_config(run_dir: Path, data) -> Config:
    config_path = run_dir / "config.json"
    config = Config.load(config_path) if config_path.is_file() else Config.from_profile("cpu")
    if data:  # else config.data, resolved by load_dataset_for ($TINYMATCH_DATA, default path, ...)
        config = config.replace(data=str(data))
    return config


def evaluate_model_file(model_path, data=None, *, split: str = "seen", out=None, progress: bool = True,
                        baselines: bool = False) -> dict:
    """Figures of one model file on one protocol (the `tinymatch evaluate` command).

    The run's config.json (beside the model) gives the data options, seed and evaluation settings;
    `data` overrides its dataset path. The split comes from split.csv beside the model when present,
    else is recreated from the config. seen/unseen: the threshold is chosen on the val part and
    applied to the test part. official-val: all labelled official val images, at the threshold
    stored with the run (siamese.keras, else metrics.json). With `out`, the JSON is written there.
    """
    from tinymatch import data as data_module

    if split not in ("seen", "unseen", "official-val"):
        raise ValueError(f"split={split!r}: must be seen, unseen or official-val")
    model_path = Path(model_path)
    if not model_path.is_file():
        raise FileNotFoundError(f"model file not found: {model_path}")
    run_dir = model_path.parent
    config = _run_config(run_dir, data)
    dataset = data_module.load_dataset_for(config, progress=progress)
    splits = data_module.run_splits(run_dir, dataset, config)
    embedders = _embedders(model_path, dataset, config, baselines=baselines, progress=progress)
    if split == "official-val":
        threshold, source = _stored_threshold(run_dir)
        if baselines:  # baselines have no stored threshold: evaluate the trained model only
            embedders = {"trained": embedders["trained"]}
        figures = _evaluate_protocol(split, {"test": _official_val_indices(splits, dataset)}, dataset,
                                     embedders, config, None, {"trained": threshold})
    else:
        part_indices = _part_indices(splits, split, config.protocol)
        reason = _skip_reason(dataset, part_indices)
        if reason:
            raise ValueError(f"cannot evaluate split {split!r}: {reason}")
        figures = _evaluate_protocol(split, part_indices, dataset, embedders, config, None)
        source = f"chosen on the val part of {split!r} ({config.threshold_method})"
    metrics = {"model": str(model_path), "data": str(dataset.source), "split": split,
               "threshold": figures["trained"]["threshold"], "threshold_source": source, **figures}
    if out:
        write_json(out, metrics)
    return metrics


# --- CLI: match two image files -------------------------------------------------------------------

def load_image_file(path, size: int = 64) -> np.ndarray:
    """float32 [size, size, 3] in 0..255 from any JPEG/PNG (any size; grayscale/RGBA/palette -> RGB).

    Raises FileNotFoundError for a missing file and UnreadableImageError (a ValueError) naming the
    file when it cannot be decoded.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
                # Transparent pixels become white rather than whatever colour they hide.
                rgba = image.convert("RGBA")
                image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
            rgb = image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise UnreadableImageError(f"cannot read image {path}: {err}") from None
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.float32)


def match_files(siamese_path, image_a, image_b) -> dict:
    """Distance, stored threshold and verdict of two image files under a saved Siamese model."""
    from tinymatch import model as model_module

    siamese = model_module.load_model(siamese_path)
    if len(siamese.inputs) != 2:
        raise ValueError(f"{siamese_path} is not a Siamese model (expected two image inputs); "
                         "pass RUN_DIR/siamese.keras")
    threshold = float(model_module.siamese_threshold(siamese))
    size = int(siamese.inputs[0].shape[1] or 64)
    first = load_image_file(image_a, size)[None]
    second = load_image_file(image_b, size)[None]
    outputs = siamese.predict_on_batch([first, second])
    distance = float(np.asarray(outputs["distance"]).ravel()[0])
    return {
        "image_a": str(image_a),
        "image_b": str(image_b),
        "distance": distance,
        "threshold": threshold,
        "match": bool(np.asarray(outputs["match"]).ravel()[0] > 0.5),
        "distance_metric": model_module.siamese_distance_metric(siamese),
    }


__all__ = [
    "embed", "embeddings_for", "embedding_cache_key", "raw_pixel_embeddings", "untrained_embedding_model",
    "Pairs", "make_pairs", "pair_distances", "roc_curve", "roc_auc", "bootstrap_auc_ci",
    "equal_error_rate", "tar_at_far", "distance_histograms", "choose_threshold",
    "confusion_at_threshold", "verification_metrics", "verification_report",
    "retrieval_metrics", "nearest_neighbours", "evaluate_run", "evaluate_model_file",
    "load_image_file", "match_files", "UnreadableImageError", "MissingThresholdError",
    "NoOfficialValError", "PROTOCOLS", "MODEL_NAMES",
]
