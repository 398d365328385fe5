"""What the report's notebooks call, so that no notebook defines logic of its own.

`setup` turns the papermill parameters into a `Config`, a run directory and a figures folder; the
rest load the run's data, train or reuse, and save the facts the report quotes
(`data_facts.json`, `model_facts.json`) and the projector export, all inside the run directory.

`tinymatch.train`, `tinymatch.model`, `tinymatch.embed` and `tinymatch.augment` are imported inside
the functions that need them: they import TensorFlow (7.8 s on an idle 2-core machine, 24 s on a
busy one), which the report notebook and `tinymatch report`'s own process never need.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from tinymatch import data, projector
from tinymatch.config import SPLIT_EVALUATIONS, Config
from tinymatch.io_utils import write_json
from tinymatch.rundir import RunDir

RUNS_DIR = Path("runs")  # gitignored at any depth: a notebook run from notebooks/ writes notebooks/runs/
DEFAULT_PROFILE = "smoke"  # what a notebook runs when papermill or JupyterLab gives it no config


def default_run_dir(config: Config) -> Path:
    """runs/<profile>, relative to the working directory."""
    return RUNS_DIR / config.profile


def setup(config: Mapping[str, Any] | str | Config | None = None, run_dir: str | os.PathLike = "",
          figs_dir: str | os.PathLike = "") -> tuple[Config, Path, Path]:
    """Papermill parameters -> (Config, run directory, figures folder).

    `config` is a profile name (`-p config smoke`), a partial config layered over its `profile`
    (`-y '{config: {profile: smoke, max_classes: 6}}'`) or a whole `Config.to_dict()`; empty means
    the smoke profile. `run_dir` "" means runs/<profile>; `figs_dir` "" means RUN_DIR/figs.
    """
    cfg = Config.layered(config or DEFAULT_PROFILE)
    run_path = Path(run_dir) if run_dir else default_run_dir(cfg)
    run_path.mkdir(parents=True, exist_ok=True)
    return cfg, run_path, Path(figs_dir) if figs_dir else RunDir(run_path).figs


def prepare_data(config: Config, *, progress: bool = False):
    """The run's dataset, loaded (and decoded or generated, once) by `tinymatch.data`'s one policy:
    the smoke profile without `data` gets the synthetic dataset where `tinymatch.data` keeps it,
    never in the repository or the run directory. `tinymatch report` calls it before the notebooks,
    so a wrong path fails in seconds and the first decode shows its progress bar."""
    return data.load_dataset_for(config, progress=progress)


def load_data(config: Config, run_dir, *, progress: bool = False):
    """(dataset, splits) of a run: the run's split.csv when training wrote one, else a fresh split."""
    dataset = prepare_data(config, progress=progress)
    return dataset, data.run_splits(run_dir, dataset, config)


def data_facts(dataset, splits, config: Config) -> dict[str, Any]:
    """Counts the report quotes: classes, images, grayscale, corrupt, split sizes per evaluation."""
    labelled = np.asarray(dataset.labels) >= 0
    counts = np.bincount(np.asarray(dataset.labels)[labelled], minlength=len(dataset.class_names))
    facts: dict[str, Any] = {
        "source": Path(str(dataset.source)).name,
        "synthetic": data.is_synthetic(dataset.source),  # the report says so on its first page
        "num_classes": int(len(dataset.class_names)),
        "num_images": int(len(dataset.labels)),
        "num_labelled": int(labelled.sum()),
        "num_grayscale": int(np.asarray(dataset.grayscale).sum()),
        "num_corrupt": int(len(dataset.corrupt)),
        "images_per_class": {"min": int(counts.min()), "median": float(np.median(counts)),
                             "max": int(counts.max())},
        "official_subsets": {str(k): int(v) for k, v in zip(*np.unique(dataset.subsets, return_counts=True))},
        "image_shape": list(np.asarray(dataset.images).shape[1:]),
        "protocol": config.protocol,
        "train": _part_facts(dataset, splits.indices(config.protocol, "train")),
    }
    for split in SPLIT_EVALUATIONS:
        parts = {}
        for part in ("val", "test"):
            indices = _evaluation_indices(splits, config.protocol, split, part)
            if indices is not None:
                parts[part] = _part_facts(dataset, indices)
        facts[f"split_{split}"] = parts
    return facts


def split_part_labels(dataset, splits, config: Config) -> dict[str, np.ndarray]:
    """{part of the split: labels of its images}: the training images, then the validation and test
    images of every evaluation the model can be judged on (`plots.class_distribution`'s `parts`)."""
    labels = np.asarray(dataset.labels)
    parts = {"training": labels[splits.indices(config.protocol, "train")]}
    for split in SPLIT_EVALUATIONS:
        for part in ("val", "test"):
            indices = _evaluation_indices(splits, config.protocol, split, part)
            if indices is not None:
                parts[f"{split} {part}"] = labels[indices]
    return parts


def _part_facts(dataset, indices) -> dict[str, int]:
    return {"images": int(len(indices)), "classes": int(len(np.unique(np.asarray(dataset.labels)[indices])))}


def _evaluation_indices(splits, trained_on: str, split: str, part: str):
    """Images of `part` of `split` that a model trained on `trained_on` never saw (None: none)."""
    try:
        return splits.evaluation_indices(trained_on, split, part)
    except ValueError:  # e.g. trained on 'seen', asked for 'unseen': not a fair evaluation
        return None


def save_data_facts(run_dir, dataset, splits, config: Config) -> dict[str, Any]:
    facts = data_facts(dataset, splits, config)
    write_json(RunDir(run_dir).data_facts, facts)
    return facts


def labelled_indices(dataset) -> np.ndarray:
    return np.flatnonzero(np.asarray(dataset.labels) >= 0)


def augmentation_layer(config: Config):
    """The configured augmentation layer (also when `config.augment` is off: the figure shows it)."""
    from tinymatch.augment import augmentation_layer_for

    return augmentation_layer_for(config.replace(augment=True))


def train_or_reuse(config: Config, run_dir, *, progress: bool = False) -> str:
    """Train into `run_dir` unless a finished run with the same configuration is there."""
    from tinymatch import train

    if train.is_finished(run_dir, config):
        return f"reused the finished training run in {run_dir} (same configuration)"
    started = time.perf_counter()
    result = train.train(config, run_dir, progress=progress)
    return f"trained in {time.perf_counter() - started:.0f} s; best validation AUC {result.best_val_auc:.4f}"


def model_facts(run_dir) -> dict[str, Any]:
    """Parameter counts and layers of RUN_DIR/model.keras, saved as model_facts.json for the report."""
    import keras

    from tinymatch.model import load_model

    model = load_model(RunDir(run_dir).model)
    layers = []
    for layer in model.layers:
        layers.append(_describe_layer(layer))
        # A flip-averaged model wraps the embedding network: list that network's layers too.
        if isinstance(layer, keras.Model) and any(isinstance(sub, keras.Model) for sub in layer.layers):
            layers += [_describe_layer(sub, f"{layer.name}/") for sub in layer.layers]
    facts = {"name": model.name, "total_parameters": int(model.count_params()),
             "trainable_parameters": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
             "input_shape": list(model.input_shape[1:]), "output_shape": list(model.output_shape[1:]),
             "layers": layers}
    write_json(RunDir(run_dir).model_facts, facts)
    return facts


def _describe_layer(layer, prefix: str = "") -> dict[str, Any]:
    return {"name": prefix + layer.name, "type": type(layer).__name__,
            "output_shape": str(getattr(layer, "output", None) is not None and tuple(layer.output.shape)),
            "parameters": int(layer.count_params())}


def projection_sample(run_dir, dataset, splits, config: Config, *, split: str = "seen",
                      max_points: int = 2000, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings, dataset indices) of at most `max_points` test images of `split` that the model
    never saw (for a joint-protocol model and split "seen": the training classes' test images only,
    not the held-out classes'), balanced over classes."""
    from tinymatch.embed import embeddings_for

    paths = RunDir(run_dir)
    indices = _evaluation_indices(splits, config.protocol, split, "test")
    indices = splits.indices(split, "test") if indices is None else indices
    indices = indices[projector.subsample_for_projector(np.asarray(dataset.labels)[indices], max_points,
                                                        seed=config.seed)]
    embeddings = embeddings_for(paths.model, dataset, indices, cache_dir=paths.embeddings,
                                batch_size=config.eval_batch_size, progress=progress)
    return np.asarray(embeddings), indices


def export_projection(run_dir, dataset, indices, embeddings, config: Config) -> Path:
    """The Embedding Projector export of a sample, into RUN_DIR/tensorboard/projector: one
    `tensorboard --logdir RUN_DIR/tensorboard` shows it beside the training scalars."""
    return projector.export_projector(embeddings, np.asarray(dataset.labels)[indices], dataset.class_names,
                                      dataset.images[indices], RunDir(run_dir).projector,
                                      tensor_name=f"{config.loss}_embedding")


def screenshot_projector(export_dir, figs_dir) -> str:
    """projector_pca.png and projector_tsne.png: TensorBoard's projector on the export, as headless
    Chromium shows it (`tinymatch.projector_screenshots`). Returns a line for the notebook. Without
    a browser or TensorBoard the screenshots are skipped (and any stale ones removed, so the report
    never shows an older run's projector): the rest of the report does not depend on them."""
    from tinymatch import projector_screenshots
    from tinymatch.report.tables import PROJECTOR_SCREENSHOTS

    started = time.perf_counter()
    try:
        paths = projector_screenshots.capture(export_dir, figs_dir)
    except projector_screenshots.ProjectorScreenshotError as err:
        for stem in PROJECTOR_SCREENSHOTS:
            Path(figs_dir, f"{stem}.png").unlink(missing_ok=True)
        return f"projector screenshots skipped: {err}"
    return (f"captured {', '.join(p.name for p in paths)} in {time.perf_counter() - started:.0f} s "
            "(headless Chromium on TensorBoard's projector)")


__all__ = ["RUNS_DIR", "DEFAULT_PROFILE", "default_run_dir", "setup", "prepare_data", "load_data",
           "data_facts", "split_part_labels", "save_data_facts", "labelled_indices", "augmentation_layer",
           "train_or_reuse", "model_facts", "projection_sample", "export_projection",
           "screenshot_projector"]
