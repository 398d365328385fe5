"""The report's building blocks: numbered figures, number formatting and the Markdown tables.

Every table takes what the run directory holds (`metrics.json`, `config.json`, the facts files the
notebooks saved, `rundir.read_run`) and formats it; no number is computed here that the run did not
record, except sums and first/last values of the training history.
"""

from __future__ import annotations

import base64
import html
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from IPython.display import Markdown

from tinymatch import error_analysis
from tinymatch.config import MODEL_NAMES, SPLIT_EVALUATIONS, Config
from tinymatch.report.inputs import MODEL_LABELS, protocols_in, run_history
from tinymatch.rundir import read_json_if_present, read_run

FIGURES = (  # (file stem, caption) in the order the report shows them
    ("triplet_illustration", "A triplet around its anchor (schematic): the inner circle has radius d(a, p), "
                             "the outer one d(a, p) + α. A hard negative lies inside the inner circle, a "
                             "semi-hard one in the ring between the circles (closer than the margin asks, "
                             "but farther than the positive), an easy one outside (zero loss)."),
    ("class_distribution", "Images per class in the dataset used for this run: each class sorted by "
                           "image count (left) and the histogram of the counts (right)."),
    ("samples", "One random image of each of the first classes, titled with the class name."),
    ("augmentation", "One training image (framed) and random augmentations of it: zoom, horizontal "
                     "flip, rotation, translation, brightness and contrast, as the training "
                     "pipeline draws them."),
    ("training_curves", "Training per epoch: the loss, the fraction of anchor-positive pairs with a "
                        "non-zero semi-hard loss (active triplets), the mean anchor-positive and "
                        "anchor-negative distances in a batch, and the validation ROC AUC; the dotted "
                        "line marks the kept (best) epoch."),
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
    ("retrieval_examples_unseen", "Retrieval in classes never trained on: unseen-class test queries (left) "
                                  "and their five nearest neighbours among the other unseen-class test "
                                  "images; a red frame and a cross mark a neighbour of another class."),
    # error analysis (notebook 03; absent from runs evaluated before it existed)
    ("roc_log_far", "ROC of the trained model with a logarithmic false-accept axis: the low-FAR end, "
                    "where a deployed matcher often has to work, which the linear ROC hides. Markers: "
                    "the operating points of the table of operating points, on the test pairs."),
    ("operating_points", "Test-pair confusion matrices at two thresholds chosen on validation pairs: "
                         "maximum validation accuracy, and the validation false accept rate target. "
                         "Which one to deploy depends on what a false accept costs against a false "
                         "reject."),
    ("class_extremes", "The seen-protocol test classes with the lowest (red frames) and highest "
                       "(green frames) pair AUC, a few test images each."),
    ("false_accepts", "The hardest false accepts: different-class test pairs (seen protocol) that the "
                      "model placed closest, with their distance."),
    ("false_rejects", "The hardest false rejects: same-class test pairs (seen protocol) that the model "
                      "placed farthest apart, with their distance."),
    # tuning study (report notebook, when a study directory is given)
    ("study_history", "Tuning study: the objective (best validation pair AUC of a trial, `joint` "
                      "protocol) of every complete trial in the order they ran, and the best so far."),
    ("study_importances", "Tuning study: importance of each searched parameter for the objective "
                          "(Optuna's default fANOVA evaluator over the complete trials; coarse with "
                          "this few trials)."),
    ("study_slice", "Tuning study: the objective against the most important parameters, one dot per "
                    "complete trial (darker: later trial)."),
    # the projector as the reader sees it (notebook 04; needs Chromium and TensorBoard)
    ("projector_pca", "TensorBoard's Embedding Projector on this run's export, screenshot by headless "
                      "Chromium: PCA of the embeddings, points coloured by class and drawn as their "
                      "image thumbnails (sprites)."),
    ("projector_tsne", "The same export after t-SNE iterations in the projector (2-D; the iteration "
                       "count, perplexity and learning rate are in the left panel)."),
    ("embedding_map", "2-D map of test-image embeddings (PCA, then t-SNE): a few classes coloured and "
                      "named in the legend, the others grey, with thumbnails of some images of the "
                      "coloured classes."),
)


ERROR_FIGURES = ("roc_log_far", "operating_points", "class_extremes", "false_accepts", "false_rejects")
STUDY_FIGURES = ("study_history", "study_importances", "study_slice")
PROJECTOR_SCREENSHOTS = ("projector_pca", "projector_tsne")
# A run without the unseen-class protocol (or evaluated before this figure existed) has no such figure.
UNSEEN_RETRIEVAL_FIGURE = "retrieval_examples_unseen"
OPTIONAL_FIGURES = frozenset(ERROR_FIGURES + STUDY_FIGURES + PROJECTOR_SCREENSHOTS + (UNSEEN_RETRIEVAL_FIGURE,))
# Figures the HTML embeds as 256-colour PNGs. A screenshot of the projector's UI loses nothing
# visible in a palette and shrinks to about a third; the report is one HTML file that must stay under
# the repository's 5 MiB file limit. The files in figs/ stay full colour.
PALETTE_FIGURES = frozenset(PROJECTOR_SCREENSHOTS)
ERROR_TABLES = ("errors_intervals", "errors_classes", "errors_operating_points", "errors_confused")
ABLATION_TABLES = ("ablation_auc", "ablation_p1")
STUDY_TABLES = ("study_space", "study_best", "study_recipe")


@dataclass
class Figures:
    """Numbers the report's figures in a fixed order, so prose can cite a figure before it appears."""

    figs_dir: Path
    order: Sequence[tuple[str, str]] = FIGURES

    def __post_init__(self) -> None:
        self.figs_dir = Path(self.figs_dir)
        # An optional figure that was not drawn (no study given, a run evaluated before the error
        # analysis existed, no browser for the projector screenshots) takes no number.
        present = [stem for stem, _ in self.order
                   if stem not in OPTIONAL_FIGURES or (self.figs_dir / f"{stem}.png").is_file()]
        self.numbers = {stem: number for number, stem in enumerate(present, start=1)}
        self.captions = dict(self.order)

    def has(self, stem: str) -> bool:
        return stem in self.numbers

    def ref(self, stem: str) -> str:
        """'Figure N' for the figure saved as <stem>.png."""
        return f"Figure {self.numbers[stem]}"

    def markdown(self, stem: str, caption: str | None = None) -> str:
        """The figure embedded as a data URI with its numbered caption."""
        return figure_markdown(self.numbers[stem], self.figs_dir / f"{stem}.png", caption or self.captions[stem],
                               palette=stem in PALETTE_FIGURES)

    def show(self, stem: str, caption: str | None = None) -> Markdown:
        return Markdown(self.markdown(stem, caption))


def figure_markdown(number: int, path, caption: str, *, palette: bool = False) -> str:
    """A numbered figure with the PNG at `path` embedded as base64 (self-contained HTML); with
    `palette`, as a 256-colour PNG of the same size (the file itself is left as it is)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"figure not found: {path} (the notebook that draws it has not run)")
    encoded = base64.b64encode(palette_png(path) if palette else path.read_bytes()).decode("ascii")
    alt = html.escape(f"Figure {number}: {path.stem.replace('_', ' ')}")
    return (f'<figure id="figure-{number}" class="tinymatch-figure">'
            f'<img src="data:image/png;base64,{encoded}" alt="{alt}"/>'
            f"<figcaption><b>Figure {number}.</b> {html.escape(caption)}</figcaption></figure>")


def palette_png(path) -> bytes:
    """The PNG at `path` re-encoded with an adaptive 256-colour palette (median cut), or its own
    bytes where that is not smaller."""
    from PIL import Image

    data = Path(path).read_bytes()
    with Image.open(io.BytesIO(data)) as image:
        quantized = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    buffer = io.BytesIO()
    quantized.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue() if buffer.tell() < len(data) else data


TABLES = (  # (name, caption) in the order the report shows them: numbered like the figures
    ("architecture", "The network of this run."),
    ("layers", "Layers of the embedding model (`model.keras`)."),
    ("backbone_costs", "What each backbone costs to train on a CPU of this project (`benchmarks/bench_train.py`, "
                       "P x K batches of the `cpu` profile, augmentation on, float32): parameters, forward "
                       "FLOPs of one image, training throughput, and what the `cpu` profile's time budget "
                       "buys."),
    ("split", "Images and classes of every part of the split."),
    ("augmentation", "Random augmentation: the range of every transform."),
    ("phases", "What each training phase contributed: epochs, time and validation ROC AUC (history.csv)."),
    ("verification", "Threshold-free verification figures on the test pairs: the trained model and the "
                     "baselines on the same pairs (accuracy at the chosen threshold is in the confusion "
                     "table)."),
    ("confusion", "The test pairs at the threshold τ chosen on validation pairs."),
    ("retrieval", "Retrieval on the test images, with what a random ranking scores (chance P@1)."),
    ("errors_intervals", "Test pair AUC with two 95% intervals: resampling the pairs, and resampling "
                         "the classes."),
    ("errors_classes", "Per-class pair AUC and retrieval P@1 on the seen-protocol test part: the "
                       "hardest and the easiest classes (a class's pairs: its positive pairs and "
                       "every negative pair it is in)."),
    ("errors_operating_points", "Two operating points per protocol, each threshold chosen on that "
                                "protocol's validation pairs and applied unchanged to its test pairs."),
    ("errors_confused", "The class pairs the threshold mixes up most (seen protocol, test pairs): "
                        "false accepts among that class pair's negative pairs."),
    ("loss_comparison", "Runs compared: loss, length and test figures (AUC / P@1); the model numbers "
                        "refer to the recipes listed under the table."),
    ("ablation_auc", "Ablation: pair ROC AUC, mean +- sd over seeds (difference from the recipe)."),
    ("ablation_p1", "Ablation: retrieval precision@1 on the test part, mean +- sd over seeds "
                    "(difference from the recipe)."),
    ("study_space", "Tuning study: the search space, as the study stored it."),
    ("study_best", "Tuning study: the best complete trials (validation AUC at the short budget; s: "
                   "wall seconds of the trial)."),
    ("study_recipe", "Tuning study: this run's recipe in the study's terms beside the best trial and "
                     "the best complete trials (warmup_share: warm-up epochs / all epochs; "
                     "finetune_lr_ratio: triplet-phase peak rate / learning rate)."),
    ("transfer", "From scratch and with a pretrained backbone (the unseen-class column starred)."),
    ("projector", "Files of the Embedding Projector export."),
    ("compute", "Wall time of every stage, as the run's files record it."),
    ("config", "Every field of `config.json`."),
)


@dataclass
class Tables:
    """Numbers the report's tables in a fixed order (like `Figures`), so prose can cite a table
    before it appears and every table gets 'Table N.' and a caption."""

    order: Sequence[tuple[str, str]] = TABLES

    def __post_init__(self) -> None:
        self.leave_out(())
        self.captions = dict(self.order)

    def leave_out(self, names) -> None:
        """Number the tables without `names` (parts this report does not have: no study, no
        ablation), so the numbers have no gaps."""
        absent = set(names)
        present = [name for name, _ in self.order if name not in absent]
        self.numbers = {name: number for number, name in enumerate(present, start=1)}

    def ref(self, name: str) -> str:
        """'Table N' for the table called `name`."""
        return f"Table {self.numbers[name]}"

    def markdown(self, name: str, table: str, caption: str | None = None) -> str:
        """`table` (Markdown) under its numbered caption."""
        return table_markdown(self.numbers[name], table, caption or self.captions[name])


def table_markdown(number: int, table: str, caption: str) -> str:
    """A numbered caption above a Markdown table (captions go above tables, below figures)."""
    return f"**Table {number}.** {caption}\n\n{table}"


TABLE_NUMBERS = Tables()  # the report's one numbering (the order is fixed, so one instance serves all)


def absent_tables(run: Mapping[str, Any], *, study: bool, ablation: bool) -> list[str]:
    """The optional tables this report will not have (for `TABLE_NUMBERS.leave_out`)."""
    absent = [] if run.get("error_analysis") else list(ERROR_TABLES)
    if backbone_costs() is None:
        absent.append("backbone_costs")
    if not study:
        absent += STUDY_TABLES
    if not ablation:
        absent += ABLATION_TABLES
    return absent


# Measured by `benchmarks/bench_train.py --json` and committed beside the benchmarks: the report's
# backbone table reads it (absent from an installed copy without the repository: no table).
BACKBONE_COSTS_FILE = Path(__file__).resolve().parents[3] / "benchmarks" / "results" / "backbones_cpu.json"
TRAINING_IMAGES = 60_000  # the joint protocol's training part: 150 classes x 400 images
BUDGET_MINUTES = Config.from_profile("cpu").time_budget_minutes


def backbone_costs(path=None) -> dict[str, Any] | None:
    """The benchmark file's contents (None when it is not there)."""
    path = Path(path) if path else BACKBONE_COSTS_FILE
    return read_json_if_present(path)


def backbone_costs_table(costs: Mapping[str, Any]) -> str:
    """One row per measured backbone (cases with an error or without FLOPs are left out)."""
    rows = []
    for result in costs["results"]:
        if "error" in result or "forward_mflop_per_image" not in result:
            continue
        size = result.get("image_size") or (75 if result["backbone"] == "inceptionv3" else 64)
        passes = result["images_per_s"] * BUDGET_MINUTES * 60 / TRAINING_IMAGES
        rows.append([f"`{result['backbone']}` @{size} px", fmt(result["params"] / 1e6, 1),
                     fmt(result["forward_mflop_per_image"], 0), fmt(result["images_per_s"], 0),
                     fmt(passes, 1)])
    return markdown_table(["backbone", "parameters (M)", "forward MFLOP / image", "training images/s",
                           f"passes over {fmt(TRAINING_IMAGES)} images in {BUDGET_MINUTES:g} min"], rows,
                          align="lrrrr")


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
                     f"{fmt(low)} to {fmt(high)}", fmt(test["eer"]), fmt(tar.get("0.01"))])
    # Threshold-free figures only: the accuracy at the chosen threshold is in the confusion table.
    return markdown_table(["test pairs of", "embedding", "pairs", "ROC AUC", "95% CI (bootstrap)", "EER",
                           "TAR at FAR 1%"], rows, align="llrrrrr")


def retrieval_table(metrics: Mapping[str, Any], chance: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """Retrieval figures per protocol and model; with `chance` ({protocol: `retrieval_chance`}),
    a column of what a random ranking scores on the same queries."""
    rows = []
    for protocol, label, figures in _model_figures(metrics):
        retrieval = figures["retrieval"]
        row = [PROTOCOL_NAMES[protocol], label, retrieval["num_queries"],
               fmt(retrieval["precision_at_1"]), fmt(retrieval["recall_at_k"]), fmt(retrieval["map_at_r"])]
        if chance is not None:
            row.append(fmt(chance[protocol]["precision_at_1"]) if protocol in chance else "n/a")
        rows.append(row)
    headers = ["test images of", "embedding", "queries", "precision@1", f"recall@{retrieval_k(metrics)}", "MAP@R"]
    if chance is not None:
        headers.append("P@1 by chance")
    return markdown_table(headers, rows, align="l" * 2 + "r" * (len(headers) - 2))


def chance_precision_at_1(class_counts: Sequence[int]) -> float:
    """Expected precision@1 of a random ranking when every image queries all the others: the mean
    over queries of (n_c - 1) / (N - 1), n_c the images of the query's class, N all images
    (`error_analysis.retrieval_chance` of those counts; queries alone in their class skipped)."""
    counts = np.asarray(class_counts, dtype=np.int64)
    if counts.sum() < 2:
        return float("nan")
    labels = np.repeat(np.arange(len(counts)), counts)
    return float(error_analysis.retrieval_chance(labels)["precision_at_1"])


def chance_recall_at_k(class_counts: Sequence[int], k: int) -> float:
    """Expected recall@k (any of the k nearest of the query's class) of a random ranking: the
    mean over queries of 1 - C(N - n_c, k) / C(N - 1, k)."""
    counts = np.asarray(class_counts, dtype=float)
    total = counts.sum()
    if total < 2:
        return float("nan")
    others = total - 1
    k = int(min(k, others))
    misses = np.ones_like(counts)
    for i in range(k):  # probability that none of the k draws (without replacement) is a positive
        misses *= np.clip((others - (counts - 1) - i) / (others - i), 0.0, 1.0)
    return float((counts * (1 - misses)).sum() / total)


def balanced_class_counts(num_images: int, num_classes: int) -> list[int]:
    """`num_images` spread as evenly as possible over `num_classes` (the balance assumption)."""
    base, extra = divmod(int(num_images), int(num_classes))
    return [base + 1] * extra + [base] * (int(num_classes) - extra)


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
        label += f", {config.blocks_per_stage} blocks a stage" if config.blocks_per_stage > 1 else ""
    label += (f" @{config.warmup_image_size}->{config.image_size} px" if config.warmup_image_size
              else f" @{config.image_size} px")
    if config.backbone == "compact" and config.stem_stride == 2:
        label += ", stride-2 stem"
    # (a recipe's label: "auto" is one recipe whichever precision the machine then chose)
    precision = {True: ", mixed precision", "auto": ", precision chosen by timing"}
    return label + precision.get(config.mixed_precision, "")


def warmup_label(config: Config) -> str:
    """The warm-up classifier in words: "softmax (NormFace)" or "CosFace (margin 0.2)"."""
    if config.warmup_head == "cosface":
        return f"CosFace (margin {config.warmup_margin:g})"
    return "softmax (NormFace)"


def short_model_label(config: Config) -> str:
    """A table cell's name for a model: "w48, 1024-d" (compact width; "w48 x2, 1024-d" with two
    residual blocks a stage) or "resnet50, 128-d"."""
    name = f"w{config.width}" if config.backbone == "compact" else config.backbone
    if config.backbone == "compact" and config.blocks_per_stage > 1:
        name += f" x{config.blocks_per_stage}"  # the full model_label, in the legend, spells it out
    return f"{name}, {config.embedding_dim}-d"


def recipe_label(config: Config) -> str:
    """The whole training recipe in words (the legend under the loss comparison table)."""
    return (f"{model_label(config)}, {config.embedding_dim}-d, "
            f"{config.classes_per_batch} x {config.images_per_class} batches, LR {peak_rates(config)}, "
            f"budget {config.warmup_epochs} + {config.epochs} epochs"
            + (f" ({warmup_label(config)} warm-up)"
               if config.warmup_epochs and config.warmup_head != "normface" else "")
            + (", flip-averaged" if config.test_time_flip else ""))


def phase_epochs(history: Mapping[str, np.ndarray]) -> tuple[int, int]:
    """(warm-up epochs, triplet epochs) the history ran (no phase column: all triplet)."""
    epochs = len(history.get("loss", []))
    phases = np.asarray(history.get("phase", ["triplet"] * epochs)).astype(str)
    warmup = int((phases == "warmup").sum())
    return warmup, epochs - warmup


def loss_comparison_table(run_dirs: Sequence[str | os.PathLike]) -> str:
    """One row per run directory: its loss settings, length, training cost and test metrics.

    The model cell is short ("w48, 1024-d (1)"); the numbered recipes (backbone, batches, learning
    rates, schedule) are listed under the table, one entry per distinct recipe, so the table fits
    an A4 portrait page.
    """
    rows, recipes = [], {}
    for run_dir in run_dirs:
        run = read_run(run_dir)
        config, metrics, history = run["config"], run.get("metrics", {}), run_history(run)
        loss = {"semihard": "semi-hard", "hard": "batch-hard"}[config.loss]
        loss += " (soft)" if config.soft and config.loss == "hard" else ""
        loss += (f" + {config.triplet_softmax_weight:g} x softmax"
                 if config.triplet_softmax_weight else "")
        number, names = recipes.setdefault(recipe_label(config), (len(recipes) + 1, []))
        names.append(Path(run_dir).name)
        warmup, triplet = phase_epochs(history)
        seconds = _training_seconds(history)
        rows.append([Path(run_dir).name, f"{short_model_label(config)} ({number})", loss, fmt(config.margin, 2),
                     # no history.csv kept (a published run's config and metrics alone): unknown
                     f"{warmup} + {triplet}" if warmup + triplet else "n/a", best_epoch_label(run),
                     fmt(seconds / 60, 1) if np.isfinite(seconds) else "n/a", *_paired_test_cells(metrics)])
    table = markdown_table(["run", "model", "loss", "margin", "epochs (warm-up + triplet)", "kept epoch",
                            "training min", "seen AUC / P@1", "unseen AUC / P@1"], rows, align="lllrrlrrr")
    legend = " ".join(f"({number}) {recipe}" + (f" (runs {', '.join(names)})." if len(names) > 1 else ".")
                      for recipe, (number, names) in recipes.items())
    return f"{table}\n\nModels: {legend}"


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
                     *_paired_test_cells(metrics)])
    return markdown_table(["run", "backbone", "backbone training", "trained on", "feature extraction min",
                           "training min", "seen AUC / P@1", "unseen AUC / P@1*"], rows, align="llllrrrr")


def _training_seconds(history: Mapping[str, np.ndarray]) -> float:
    """Seconds of the run's epochs (history.csv), NaN when the history has no timings."""
    return float(np.nansum(history["seconds"])) if "seconds" in history else float("nan")


def _paired_test_cells(metrics: Mapping[str, Any]) -> list[str]:
    """"AUC / P@1" of the trained model on each split evaluation ("n/a" where not run)."""
    cells = _trained_test_cells(metrics)
    return [f"{auc} / {p1}" if auc != "n/a" else "n/a" for auc, p1 in zip(cells[::2], cells[1::2])]


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


def config_table(config: Config, names: Sequence[str] | None = None, *, columns: int = 2) -> str:
    """Every field of `config` and its value, in `columns` side-by-side (parameter, value) pairs read
    down each pair first: one pair of 60-odd rows would run over a printed page."""
    names = names or list(config.to_dict())
    cells = [[name, _config_value(getattr(config, name))] for name in names]
    height = -(-len(cells) // columns)
    rows = []
    for row in range(height):
        rows.append([value for column in range(columns)
                     for value in (cells[column * height + row] if column * height + row < len(cells) else ["", ""])])
    return markdown_table(["parameter", "value"] * columns, rows, align="ll" * columns)


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


def phase_summary(history: Mapping[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """Per training phase (in the order they ran: warmup, then triplet): epochs, seconds, the first
    and last epoch, the validation AUC at its last epoch and its best validation AUC and epoch.
    A history without a phase column is one triplet phase; {} when there is no history."""
    epochs = len(history.get("loss", []))
    if not epochs:
        return {}
    phases = np.asarray(history.get("phase", ["triplet"] * epochs)).astype(str)
    auc = np.asarray(history.get("val_auc", [np.nan] * epochs), dtype=float)
    seconds = np.asarray(history.get("seconds", [np.nan] * epochs), dtype=float)
    summary: dict[str, dict[str, Any]] = {}
    for phase in ("warmup", "triplet"):
        rows = np.flatnonzero(phases == phase)
        if not len(rows):
            continue
        entry: dict[str, Any] = {"epochs": int(len(rows)), "first_epoch": int(rows[0]) + 1,
                                 "last_epoch": int(rows[-1]) + 1,
                                 "seconds": float(np.nansum(seconds[rows])) if np.isfinite(seconds[rows]).any()
                                 else float("nan"),
                                 "end_auc": float(auc[rows[-1]])}
        if np.isfinite(auc[rows]).any():
            best = rows[int(np.nanargmax(auc[rows]))]
            entry["best_auc"], entry["best_epoch"] = float(auc[best]), int(best) + 1
        summary[phase] = entry
    return summary


def phase_table(history: Mapping[str, np.ndarray]) -> str:
    """One row per training phase: epochs, minutes, val AUC at its end and its best (epoch)."""
    names = {"warmup": "classification warm-up", "triplet": "triplet loss"}
    rows = []
    for phase, entry in phase_summary(history).items():
        best = (f"{fmt(entry['best_auc'])} (epoch {entry['best_epoch']})" if "best_auc" in entry else "n/a")
        rows.append([names[phase], f"{entry['first_epoch']}-{entry['last_epoch']}",
                     fmt(entry["seconds"] / 60, 1), fmt(entry["end_auc"]), best])
    return markdown_table(["phase", "epochs", "minutes", "val AUC at its last epoch", "best val AUC in it"],
                          rows, align="lrrrr")


__all__ = ["BACKBONE_COSTS_FILE", "backbone_costs", "backbone_costs_table", "FIGURES", "Figures",
           "figure_markdown", "palette_png", "PALETTE_FIGURES", "UNSEEN_RETRIEVAL_FIGURE",
           "TABLES", "Tables",
           "TABLE_NUMBERS", "table_markdown", "markdown_table", "fmt", "percent", "PROTOCOL_NAMES",
           "LOSS_NAMES", "verification_table", "retrieval_table", "retrieval_k", "confusion_table", "model_label",
           "warmup_label", "loss_comparison_table", "peak_rates", "best_epoch_label", "config_table", "split_table",
           "layer_table", "projector_table", "history_summary", "chance_precision_at_1", "chance_recall_at_k",
           "balanced_class_counts", "short_model_label", "recipe_label", "phase_epochs", "phase_summary",
           "phase_table"]
