"""The report's building blocks: numbered figures, number formatting and the Markdown tables.

Every table takes what the run directory holds (`metrics.json`, `config.json`, the facts files the
notebooks saved, `rundir.read_run`) and formats it; no number is computed here that the run did not
record, except sums and first/last values of the training history.
"""

from __future__ import annotations

import base64
import html
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from IPython.display import Markdown

from tinymatch.config import MODEL_NAMES, SPLIT_EVALUATIONS, Config
from tinymatch.report.inputs import MODEL_LABELS, protocols_in, run_history
from tinymatch.rundir import read_run

FIGURES = (  # (file stem, caption) in the order the report shows them
    ("class_distribution", "Images per class in the dataset used for this run: each class sorted by "
                           "image count (left) and the histogram of the counts (right)."),
    ("samples", "One random image of each of the first classes, titled with the class name."),
    ("augmentation", "One training image (framed) and random augmentations of it: zoom, horizontal "
                     "flip, rotation, translation, brightness and contrast, as the training "
                     "pipeline draws them."),
    ("training_curves", "Training per epoch: triplet loss, the fraction of anchor-positive pairs with "
                        "a non-zero semi-hard loss (active triplets), the mean anchor-positive and "
                        "anchor-negative distances in a batch, and the validation ROC AUC."),
    ("roc", "ROC curves on the test pairs of seen and of unseen classes. Solid: the trained model; "
            "dashed: baselines (the same network untrained, and raw pixels). The dot is the "
            "operating point of the threshold chosen on the validation pairs."),
    ("confusion_matrix", "Pair-level confusion matrices on the test pairs at the threshold chosen on "
                         "validation pairs (rows: true relation, columns: prediction; "
                         "percentages by row)."),
    ("distance_histograms", "Embedding distances of same-class and different-class test pairs, with "
                            "the decision threshold (dashed)."),
    ("retrieval_examples", "Retrieval: test queries (left) and their five nearest neighbours among the "
                           "other test images; a red frame and a cross mark a neighbour of another "
                           "class."),
    ("embedding_map", "2-D map of test-image embeddings (PCA, then t-SNE), coloured by class, with "
                      "thumbnails of some of the images."),
)


@dataclass
class Figures:
    """Numbers the report's figures in a fixed order, so prose can cite a figure before it appears."""

    figs_dir: Path
    order: Sequence[tuple[str, str]] = FIGURES

    def __post_init__(self) -> None:
        self.figs_dir = Path(self.figs_dir)
        self.numbers = {stem: number for number, (stem, _) in enumerate(self.order, start=1)}
        self.captions = dict(self.order)

    def ref(self, stem: str) -> str:
        """'Figure N' for the figure saved as <stem>.png."""
        return f"Figure {self.numbers[stem]}"

    def markdown(self, stem: str, caption: str | None = None) -> str:
        """The figure embedded as a data URI with its numbered caption."""
        return figure_markdown(self.numbers[stem], self.figs_dir / f"{stem}.png", caption or self.captions[stem])

    def show(self, stem: str, caption: str | None = None) -> Markdown:
        return Markdown(self.markdown(stem, caption))


def figure_markdown(number: int, path, caption: str) -> str:
    """A numbered figure with the PNG at `path` embedded as base64 (self-contained HTML)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"figure not found: {path} (the notebook that draws it has not run)")
    encoded = base64.b64encode(path.read_bytes()).decode("ascii")
    alt = html.escape(f"Figure {number}: {path.stem.replace('_', ' ')}")
    return (f'<figure id="figure-{number}" class="tinymatch-figure">'
            f'<img src="data:image/png;base64,{encoded}" alt="{alt}"/>'
            f"<figcaption><b>Figure {number}.</b> {html.escape(caption)}</figcaption></figure>")


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], align: str | None = None) -> str:
    """A pipe table; `align` is one character per column: l, r or c (default: first l, rest r)."""
    align = align or "l" + "r" * (len(headers) - 1)
    marks = {"l": ":--", "r": "--:", "c": ":-:"}
    lines = ["| " + " | ".join(map(str, headers)) + " |",
             "|" + "|".join(marks[a] for a in align) + "|"]
    lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(value: Any, digits: int = 3) -> str:
    """Numbers for prose and tables: floats rounded, ints with thousands separators."""
    if value is None:
        return "n/a"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        if not np.isfinite(value):
            return "n/a"
        return f"{float(value):,.{digits}f}"
    return str(value)


def percent(value: float, digits: int = 1) -> str:
    return f"{100 * float(value):.{digits}f}%"


def _cell(value: Any) -> str:
    return fmt(value).replace("|", "\\|")



PROTOCOL_NAMES = {"seen": "seen classes", "unseen": "unseen classes", "official-val": "official val",
                  "joint": "joint protocol (seen and unseen)"}
LOSS_NAMES = {"semihard": "semi-hard triplet loss", "hard": "batch-hard triplet loss"}


def _model_figures(metrics: Mapping[str, Any]):
    """(protocol, model label, that model's figures) for every evaluated protocol and model."""
    for protocol in protocols_in(metrics, official_val=True):
        for model in MODEL_NAMES:
            if model in metrics[protocol]:
                yield protocol, MODEL_LABELS[model], metrics[protocol][model]


def verification_table(metrics: Mapping[str, Any]) -> str:
    """Test-pair metrics of the trained model and the baselines for every protocol."""
    rows = []
    for protocol, label, figures in _model_figures(metrics):
        test = figures["test"]
        low, high = test.get("roc_auc_ci95", [float("nan")] * 2)
        tar = test.get("tar_at_far", {})
        rows.append([PROTOCOL_NAMES[protocol], label, test["num_pairs"], fmt(test["roc_auc"]),
                     f"{fmt(low)} to {fmt(high)}", fmt(test["eer"]), fmt(tar.get("0.01")),
                     percent(test["confusion"]["accuracy"])])
    return markdown_table(["test pairs of", "embedding", "pairs", "ROC AUC", "95% CI (bootstrap)", "EER",
                           "TAR at FAR 1%", "accuracy at threshold"], rows, align="llrrrrrr")


def retrieval_table(metrics: Mapping[str, Any]) -> str:
    rows = []
    for protocol, label, figures in _model_figures(metrics):
        retrieval = figures["retrieval"]
        rows.append([PROTOCOL_NAMES[protocol], label, retrieval["num_queries"],
                     fmt(retrieval["precision_at_1"]), fmt(retrieval["recall_at_k"]), fmt(retrieval["map_at_r"])])
    return markdown_table(["test images of", "embedding", "queries", "precision@1", f"recall@{retrieval_k(metrics)}",
                           "MAP@R"], rows, align="llrrrr")


def retrieval_k(metrics: Mapping[str, Any]) -> int:
    return next((metrics[p]["trained"]["retrieval"].get("k", 5) for p in protocols_in(metrics)), 5)


def confusion_table(metrics: Mapping[str, Any]) -> str:
    rows = []
    for protocol in protocols_in(metrics, official_val=True):
        trained = metrics[protocol]["trained"]
        confusion = trained["test"]["confusion"]
        (tn, fp), (fn, tp) = confusion["matrix"]
        rows.append([PROTOCOL_NAMES[protocol], fmt(trained["threshold"]), tp, fn, fp, tn, fmt(confusion["precision"]),
                     fmt(confusion["recall"]), fmt(confusion["f1"]), percent(confusion["accuracy"])])
    return markdown_table(["test pairs of", "threshold τ", "TP", "FN", "FP", "TN", "precision", "recall", "F1",
                           "accuracy"], rows, align="lrrrrrrrrr")


def model_label(config: Config) -> str:
    """e.g. "compact w48 (max 256 filters) @64 px, stride-2 stem, mixed precision"."""
    label = config.backbone
    if config.backbone == "compact":
        label += f" w{config.width}" + (f" (max {config.max_filters} filters)" if config.max_filters else "")
    label += f" @{config.image_size} px"
    if config.backbone == "compact" and config.stem_stride == 2:
        label += ", stride-2 stem"
    return label + (", mixed precision" if config.mixed_precision else "")


def warmup_label(config: Config) -> str:
    """The warm-up classifier in words: "softmax (NormFace)" or "CosFace (margin 0.2)"."""
    if config.warmup_head == "cosface":
        return f"CosFace (margin {config.warmup_margin:g})"
    return "softmax (NormFace)"


def loss_comparison_table(run_dirs: Sequence[str | os.PathLike]) -> str:
    """One row per run directory: its loss settings, training cost and test metrics."""
    rows = []
    for run_dir in run_dirs:
        run = read_run(run_dir)
        config, metrics, history = run["config"], run.get("metrics", {}), run_history(run)
        loss = {"semihard": "semi-hard", "hard": "batch-hard"}[config.loss]
        loss += " (soft)" if config.soft and config.loss == "hard" else ""
        loss += (f" + {config.triplet_softmax_weight:g} x softmax"
                 if config.triplet_softmax_weight else "")
        recipe = (f"{model_label(config)}, {config.embedding_dim}-d, "
                  f"{config.classes_per_batch} x {config.images_per_class} batches, LR {peak_rates(config)}, "
                  f"{config.warmup_epochs} + {config.epochs} epochs"
                  + (f" ({warmup_label(config)} warm-up)"
                     if config.warmup_epochs and config.warmup_head != "normface" else "")
                  + (", flip-averaged" if config.test_time_flip else ""))
        seconds = _training_seconds(history)
        rows.append([Path(run_dir).name, recipe, loss, fmt(config.margin, 2), len(history.get("loss", [])),
                     best_epoch_label(run), fmt(seconds, 0) if np.isfinite(seconds) else "n/a",
                     *_trained_test_cells(metrics)])
    return markdown_table(["run", "model, batches, peak LR, schedule (warm-up + triplet)", "loss", "margin",
                           "epochs run", "kept epoch", "training seconds", "seen AUC", "seen P@1", "unseen AUC",
                           "unseen P@1"], rows, align="lllrrlrrrrr")


def backbone_training_label(config: Config) -> str:
    """How the backbone was trained: "from scratch", "ImageNet-pretrained, frozen" (throughout), or
    "ImageNet-pretrained, frozen 5 epochs then fine-tuned"."""
    if not config.weights:
        return "from scratch"
    total = config.warmup_epochs + config.epochs
    if config.freeze_backbone_epochs >= total:
        return "ImageNet-pretrained, frozen"
    if config.freeze_backbone_epochs:
        return f"ImageNet-pretrained, frozen {config.freeze_backbone_epochs} epochs then fine-tuned"
    return "ImageNet-pretrained, fine-tuned"


def transfer_table(run_dirs: Sequence[str | os.PathLike]) -> str:
    """From scratch vs pretrained: one row per run, its backbone, cost and test figures (the
    unseen columns are starred: a pretrained backbone has seen those classes in ImageNet)."""
    rows = []
    for run_dir in run_dirs:
        run = read_run(run_dir)
        config, metrics, training = run["config"], run.get("metrics", {}), run.get("training", {})
        seconds = _training_seconds(run_history(run))
        extraction = training.get("feature_extraction_seconds")
        rows.append([Path(run_dir).name, model_label(config), backbone_training_label(config),
                     training.get("trained_on", "images"),
                     fmt(extraction / 60, 1) if extraction is not None else "-",
                     fmt(seconds / 60, 1) if np.isfinite(seconds) else "n/a",
                     *_trained_test_cells(metrics)])
    return markdown_table(["run", "backbone", "backbone training", "trained on", "feature extraction min",
                           "training min", "seen AUC", "seen P@1", "unseen AUC*", "unseen P@1*"], rows,
                          align="llllrrrrrr")


def _training_seconds(history: Mapping[str, np.ndarray]) -> float:
    """Seconds of the run's epochs (history.csv), NaN when the history has no timings."""
    return float(np.nansum(history["seconds"])) if "seconds" in history else float("nan")


def _trained_test_cells(metrics: Mapping[str, Any]) -> list[str]:
    """The trained model's test AUC and P@1 on each split evaluation ("n/a" where not run)."""
    cells = []
    for protocol in SPLIT_EVALUATIONS:
        trained = metrics.get(protocol, {}).get("trained")
        cells += ([fmt(trained["test"]["roc_auc"]), fmt(trained["retrieval"]["precision_at_1"])]
                  if trained else ["n/a"] * 2)
    return cells


def peak_rates(config: Config) -> str:
    """Peak learning rate(s): "0.003 / 0.001" when the triplet phase after a warm-up has its own."""
    if config.warmup_epochs and config.finetune_learning_rate:
        return f"{config.learning_rate:g} / {config.finetune_learning_rate:g}"
    return f"{config.learning_rate:g}"


def best_epoch_label(run: Mapping[str, Any]) -> str:
    """The epoch whose weights the run kept, and its phase: a warm-up epoch means the triplet
    epochs never beat the classifier's embedding on validation AUC."""
    best = run.get("training", {}).get("best_epoch")
    phases = run_history(run).get("phase", [])
    if not best:
        return "n/a"
    phase = phases[int(best) - 1] if 0 < int(best) <= len(phases) else ""
    return f"{int(best)} ({phase})" if phase else str(int(best))


def config_table(config: Config, names: Sequence[str] | None = None) -> str:
    names = names or list(config.to_dict())
    return markdown_table(["parameter", "value"], [[name, _config_value(getattr(config, name))] for name in names],
                          align="ll")


def _config_value(value: Any) -> str:
    if isinstance(value, str):
        return f"`{value}`" if value else '`""`'
    if isinstance(value, float):
        return f"{value:g}"
    return fmt(value)


def split_table(facts: Mapping[str, Any]) -> str:
    """Training images, and the validation/test images of both protocols the model never saw."""
    rows = []
    if "train" in facts:
        train = facts["train"]
        rows.append([f"training (protocol `{facts.get('protocol', '')}`)",
                     f"{fmt(train['images'])} images, {fmt(train['classes'])} classes", "", ""])
    for protocol in SPLIT_EVALUATIONS:
        parts = facts.get(f"split_{protocol}") or {}
        cells = [f"{fmt(parts[p]['images'])} images, {fmt(parts[p]['classes'])} classes" if p in parts
                 else "not evaluable (trained on these classes)" for p in ("val", "test")]
        rows.append([f"evaluation: {PROTOCOL_NAMES[protocol]}", ""] + cells)
    return markdown_table(["part", "train", "validation", "test"], rows, align="llll")


def layer_table(facts: Mapping[str, Any]) -> str:
    rows = [[f"`{layer['name']}`", layer["type"], layer["output_shape"], layer["parameters"]]
            for layer in facts["layers"]]
    return markdown_table(["layer", "type", "output shape", "parameters"], rows, align="llrr")


def projector_table(export_dir) -> str:
    export_dir = Path(export_dir)
    rows = [[f"`{path.name}`", _file_size(path)] for path in sorted(export_dir.iterdir()) if path.is_file()]
    return markdown_table(["file in " + f"`{export_dir.name}/`", "size"], rows, align="lr")


def _file_size(path: Path) -> str:
    size = path.stat().st_size
    return f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.1f} kB"


def history_summary(history: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """First/last values and the best validation AUC of a training history."""
    summary: dict[str, Any] = {"epochs": len(history.get("loss", []))}
    for column in ("loss", "active_fraction", "mean_positive_distance", "mean_negative_distance", "val_auc"):
        values = history.get(column)
        if values is not None and len(values):
            summary[column] = {"first": float(values[0]), "last": float(values[-1])}
    if "val_auc" in history and len(history["val_auc"]) and np.isfinite(history["val_auc"]).any():
        best = int(np.nanargmax(history["val_auc"]))
        summary["best_val_auc"], summary["best_epoch"] = float(history["val_auc"][best]), best + 1
    if "seconds" in history:
        summary["seconds"] = float(np.nansum(history["seconds"]))
    return summary


__all__ = ["FIGURES", "Figures", "figure_markdown", "markdown_table", "fmt", "percent", "PROTOCOL_NAMES",
           "LOSS_NAMES", "verification_table", "retrieval_table", "retrieval_k", "confusion_table", "model_label",
           "warmup_label", "loss_comparison_table", "peak_rates", "best_epoch_label", "config_table", "split_table",
           "layer_table", "projector_table", "history_summary"]
