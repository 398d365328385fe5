"""The notebook pipeline and the rendered report.

`run_report(config)` executes the notebooks with papermill, in order and with one parameter set:

```
notebooks/01_data.ipynb        dataset facts, class distribution, samples, augmentation
notebooks/02_train.ipynb       trains (or reuses a finished run with the same configuration)
notebooks/03_evaluate.ipynb    metrics.json, ROC, confusion matrix, distances, retrieval examples
notebooks/04_embeddings.ipynb  Embedding Projector export and the 2-D embedding map
notebooks/report.ipynb         the report, every number read from the run directory
```

The executed copies land in RUN_DIR/notebooks/. The executed report notebook is then rendered to a
self-contained `reports/report.html` (code hidden, figures as data URIs, formulas as MathML so no
MathJax from a CDN is needed) and printed to `reports/report.pdf` by headless Chromium.

The rest of this module are the small helpers the notebooks call, so no notebook defines logic of
its own: run setup, gathering plot inputs from a run directory, and the report's Markdown (figure
numbering, tables).
"""

from __future__ import annotations

import base64
import contextlib
import html
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from tinymatch.config import Config
from tinymatch.io_utils import atomic_path, atomic_write_text, read_json, write_json

NOTEBOOKS = ("01_data", "02_train", "03_evaluate", "04_embeddings", "report")
NOTEBOOK_PURPOSE = {
    "01_data": "dataset facts and class distribution",
    "02_train": "training",
    "03_evaluate": "verification and retrieval metrics",
    "04_embeddings": "projector export and embedding map",
    "report": "the report",
}
PROTOCOLS = ("seen", "unseen")
MODEL_NAMES = {"trained": "trained model", "untrained": "untrained network", "raw_pixels": "raw pixels"}
CHROMIUM_ENV_VAR = "TINYMATCH_CHROMIUM"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
SYNTHETIC_DATA_DIR = "synthetic-data"


class ReportError(RuntimeError):
    """A notebook of the pipeline failed, or the rendered report is not what it must be."""


class ChromiumNotFoundError(FileNotFoundError):
    """Raised when the PDF is asked for but no Chromium/Chrome executable can be found."""


# =================================================================================================
# Pipeline
# =================================================================================================

def run_report(config: Config, run_dir=None, reports_dir="reports", figs_dir="figs", pdf=True,
               progress=True, *, compare_run_dirs: Sequence[str | os.PathLike] = (),
               notebooks_dir=None) -> dict[str, Path]:
    """Run notebooks 01..04 and report.ipynb on `config`, then render report.html (and .pdf).

    Args:
        config: the run's configuration; the `smoke` profile without `data` uses a generated
            synthetic dataset inside the run directory.
        run_dir: run directory (default runs/<profile>). A finished training run there with the
            same configuration is reused, not trained again.
        reports_dir: where report.html and report.pdf go.
        figs_dir: where the figures go (PNG).
        pdf: also print the PDF with headless Chromium.
        progress: print one line per notebook (and a cell progress bar).
        compare_run_dirs: more run directories for the report's loss comparison table.
        notebooks_dir: the source notebooks (default: the repository's notebooks/).

    Returns: {name: path} of the outputs (run_dir, notebooks, figs, html, pdf).
    """
    started = time.perf_counter()
    if pdf:
        find_chromium()  # fail before minutes of notebooks, not after
    for other in compare_run_dirs:
        for name in ("config.json", "metrics.json"):
            if not (Path(other) / name).is_file():
                raise FileNotFoundError(f"--compare {other}: {Path(other) / name} not found (a finished, "
                                        f"evaluated run directory is needed)")
    run_dir = Path(run_dir) if run_dir else Path("runs") / config.profile
    config = prepare_data(config, run_dir)
    notebooks_dir = Path(notebooks_dir) if notebooks_dir else default_notebooks_dir()
    reports_dir, figs_dir = Path(reports_dir), Path(figs_dir)
    executed_dir = run_dir / "notebooks"
    parameters = notebook_parameters(config, run_dir, figs_dir, compare_run_dirs)
    _say(progress, f"tinymatch report: profile {config.profile}, run directory {run_dir}")
    for number, name in enumerate(NOTEBOOKS, start=1):
        note = _training_note(config, run_dir) if name == "02_train" else ""
        _say(progress, f"[{number}/{len(NOTEBOOKS)}] {name}: {NOTEBOOK_PURPOSE[name]}{note} ...")
        seconds = execute_notebook(notebooks_dir / f"{name}.ipynb", executed_dir / f"{name}.ipynb",
                                   parameters, progress=progress)
        _say(progress, f"[{number}/{len(NOTEBOOKS)}] {name}: done in {seconds:.0f} s")
    outputs = {"run_dir": run_dir, "notebooks": executed_dir, "figs": figs_dir}
    _say(progress, "rendering report.html ...")
    outputs["html"] = render_html(executed_dir / "report.ipynb", reports_dir / "report.html")
    if pdf:
        _say(progress, "printing report.pdf with headless Chromium ...")
        outputs["pdf"] = render_pdf(outputs["html"], reports_dir / "report.pdf")
    _say(progress, f"tinymatch report: finished in {time.perf_counter() - started:.0f} s")
    return outputs


def default_notebooks_dir() -> Path:
    """notebooks/ of the repository this package lives in (editable install or source tree)."""
    for candidate in (Path(__file__).resolve().parents[2] / "notebooks", Path.cwd() / "notebooks"):
        if (candidate / "report.ipynb").is_file():
            return candidate
    raise FileNotFoundError("notebooks/report.ipynb not found next to the tinymatch package or in the "
                            "current directory: run from the repository root")


def notebook_parameters(config: Config, run_dir, figs_dir, compare_run_dirs=()) -> dict[str, Any]:
    """The one parameter set every notebook receives (absolute paths: kernels run elsewhere)."""
    run_dir = Path(run_dir).resolve()
    runs = [str(run_dir)] + [str(Path(d).resolve()) for d in compare_run_dirs if Path(d).resolve() != run_dir]
    return {"config": config.to_dict(), "run_dir": str(run_dir), "figs_dir": str(Path(figs_dir).resolve()),
            "compare_run_dirs": runs, "progress": False}


def execute_notebook(source, output, parameters: Mapping[str, Any], *, progress=True) -> float:
    """Execute `source` with papermill into `output` (atomically); return the seconds it took."""
    import papermill

    source, output = Path(source), Path(output)
    if not source.is_file():
        raise FileNotFoundError(f"notebook not found: {source} (generate it with `jupytext --to ipynb "
                                f"{source.with_suffix('.py')}`)")
    started = time.perf_counter()
    output.parent.mkdir(parents=True, exist_ok=True)
    # Papermill saves the notebook after every cell: write beside the target, rename when done.
    partial = output.with_name(f".{output.stem}.partial.ipynb")
    kernel_log = output.with_suffix(".kernel.log")
    try:
        with kernel_log.open("w") as log:
            papermill.execute_notebook(str(source), str(partial), parameters=dict(parameters),
                                       kernel_name="python3", progress_bar=progress, cwd=str(Path.cwd()),
                                       kernel_manager_class=_kernel_manager_logging_to(log))
    except papermill.PapermillExecutionError as err:
        failed = output.with_name(f"{output.stem}.failed.ipynb")
        if partial.exists():
            os.replace(partial, failed)
        raise ReportError(f"{source.name} failed in cell {err.exec_count}: {err.ename}: {err.evalue} "
                          f"(executed notebook with the traceback: {failed})") from None
    except RuntimeError as err:  # e.g. nbclient's DeadKernelError: the kernel crashed or was killed
        raise ReportError(f"{source.name}: {type(err).__name__}: {err} (kernel output: {kernel_log})") from None
    os.replace(partial, output)
    return time.perf_counter() - started


def _kernel_manager_logging_to(log):
    """A kernel manager class whose kernels write stdout/stderr (TensorFlow's C++ logs) to `log`.

    Without it every kernel prints its start-up chatter into the terminal of `tinymatch report`.
    """
    from jupyter_client.manager import AsyncKernelManager

    class LoggingKernelManager(AsyncKernelManager):
        async def _async_launch_kernel(self, kernel_cmd, **kw):
            kw["stdout"] = kw["stderr"] = log
            kw["env"] = {"TF_CPP_MIN_LOG_LEVEL": "1", **(kw.get("env") or os.environ)}
            return await super()._async_launch_kernel(kernel_cmd, **kw)

    return LoggingKernelManager


def _training_note(config: Config, run_dir: Path) -> str:
    with _native_stderr_silenced():  # TensorFlow's C++ start-up lines are not progress
        from tinymatch.train import is_finished
    return " (reusing the finished run)" if is_finished(run_dir, config) else ""


@contextlib.contextmanager
def _native_stderr_silenced():
    """Silence file descriptor 2 (C++ logging ignores sys.stderr) for the duration of the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _say(progress: bool, message: str) -> None:
    if progress:
        print(message, flush=True)


# =================================================================================================
# Helpers for the notebooks: run setup and data
# =================================================================================================

def setup(config: Mapping[str, Any] | Config | None = None, run_dir: str | os.PathLike = "") -> tuple[Config, Path]:
    """Papermill parameters -> (Config, run directory); `{}` and `""` mean the smoke profile."""
    if isinstance(config, Config):
        cfg = config
    else:
        cfg = Config.from_dict(dict(config)) if config else Config.from_profile("smoke")
    run_path = Path(run_dir) if run_dir else Path("runs") / cfg.profile
    run_path.mkdir(parents=True, exist_ok=True)
    return prepare_data(cfg, run_path), run_path


def prepare_data(config: Config, run_dir) -> Config:
    """The smoke profile without a dataset (no --data, no $TINYMATCH_DATA) gets a synthetic one.

    It is written once into RUN_DIR/synthetic-data/tiny-imagenet-200 and sized to the profile's
    `max_classes` x `max_images_per_class`. Unlike `data.synthetic_data_path` (one fixed-size set in
    the cache for `--data synthetic`), it follows the notebook's parameters, lives with the run it
    describes, and marks that run's report as synthetic (`SYNTHETIC_DATA_DIR` in `config.data`).
    """
    if config.data or config.profile != "smoke" or os.environ.get("TINYMATCH_DATA"):
        return config
    from tinymatch.synthetic import make_synthetic_dataset  # (tinymatch.data would import TensorFlow)

    target = Path(run_dir).resolve() / SYNTHETIC_DATA_DIR / "tiny-imagenet-200"
    if not (target / "wnids.txt").is_file():
        classes = max(config.max_classes, config.unseen_train_classes + 4, 6)
        images = max(config.max_images_per_class, 2 * config.images_per_class, 10)
        target = Path(make_synthetic_dataset(target.parent, num_classes=classes, images_per_class=images,
                                             grayscale=3, corrupt=0, seed=config.seed))
    return config.replace(data=str(target))


def load_data(config: Config, run_dir, *, progress: bool = False):
    """(dataset, splits) of a run: the run's split.csv when training wrote one, else a fresh split."""
    from tinymatch import data

    dataset = data.load_dataset_for(config, progress=progress)
    return dataset, data.run_splits(run_dir, dataset, config)


def data_facts(dataset, splits, config: Config) -> dict[str, Any]:
    """Counts the report quotes: classes, images, grayscale, corrupt, split sizes per protocol."""
    labelled = np.asarray(dataset.labels) >= 0
    counts = np.bincount(np.asarray(dataset.labels)[labelled], minlength=len(dataset.class_names))
    facts: dict[str, Any] = {
        "source": Path(str(dataset.source)).name,
        "num_classes": int(len(dataset.class_names)),
        "num_images": int(len(dataset.labels)),
        "num_labelled": int(labelled.sum()),
        "num_grayscale": int(np.asarray(dataset.grayscale).sum()),
        "num_corrupt": int(len(dataset.corrupt)),
        "images_per_class": {"min": int(counts.min()), "median": float(np.median(counts)),
                             "max": int(counts.max())},
        "official_subsets": {str(k): int(v) for k, v in zip(*np.unique(dataset.subsets, return_counts=True))},
        "image_shape": list(np.asarray(dataset.images).shape[1:]),
    }
    facts["protocol"] = config.protocol
    facts["train"] = _part_facts(dataset, splits.indices(config.protocol, "train"))
    for protocol in PROTOCOLS:
        parts = {}
        for part in ("val", "test"):
            indices = _evaluation_indices(splits, config.protocol, protocol, part)
            if indices is not None:
                parts[part] = _part_facts(dataset, indices)
        facts[f"split_{protocol}"] = parts
    return facts


def _part_facts(dataset, indices) -> dict[str, int]:
    return {"images": int(len(indices)), "classes": int(len(np.unique(np.asarray(dataset.labels)[indices])))}


def _evaluation_indices(splits, trained_on: str, protocol: str, part: str):
    """Images of `part` of `protocol` that a model trained on `trained_on` never saw (None: none)."""
    try:
        return splits.evaluation_indices(trained_on, protocol, part)
    except ValueError:  # e.g. trained on 'seen', asked for 'unseen': not a fair evaluation
        return None


def save_data_facts(run_dir, dataset, splits, config: Config) -> dict[str, Any]:
    facts = data_facts(dataset, splits, config)
    write_json(Path(run_dir) / "data_facts.json", facts)
    return facts


def labelled_indices(dataset) -> np.ndarray:
    return np.flatnonzero(np.asarray(dataset.labels) >= 0)


def augmentation_layer(config: Config):
    """The configured augmentation layer (also when `config.augment` is off: the figure shows it)."""
    from tinymatch.augment import augmentation_layer_for

    return augmentation_layer_for(config.replace(augment=True))


# =================================================================================================
# Helpers for the notebooks: training and the model
# =================================================================================================

def train_or_reuse(config: Config, run_dir, *, progress: bool = False) -> str:
    """Train into `run_dir` unless a finished run with the same configuration is there."""
    from tinymatch import train

    if train.is_finished(run_dir, config):
        return f"reused the finished training run in {run_dir} (same configuration)"
    started = time.perf_counter()
    result = train.train(config, run_dir, progress=progress)
    return f"trained in {time.perf_counter() - started:.0f} s; best validation AUC {result.best_val_auc:.4f}"


def read_history(run_dir) -> dict[str, np.ndarray]:
    """history.csv as {column: array}, one value per epoch (train.read_history's rows, by column)."""
    from tinymatch.train import read_history as history_rows  # the one parser of history.csv

    path = Path(run_dir) / "history.csv"
    if not path.is_file():
        raise FileNotFoundError(f"training history not found: {path} (run 02_train first)")
    rows = history_rows(run_dir)
    columns = rows[0].keys() if rows else []
    return {name: _history_column([row[name] for row in rows]) for name in columns}


def _history_column(values: list) -> np.ndarray:
    """Numbers as a float array (blank -> NaN); a text column (phase) stays text."""
    if any(isinstance(value, str) and value.strip() for value in values):
        return np.array([str(value) for value in values])
    return np.array([value if isinstance(value, float) else np.nan for value in values], dtype=float)


def model_facts(run_dir) -> dict[str, Any]:
    """Parameter counts and layers of RUN_DIR/model.keras, saved as model_facts.json for the report."""
    import keras

    from tinymatch.model import load_model

    model = load_model(Path(run_dir) / "model.keras")
    trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    total = int(model.count_params())
    def describe(layer, prefix=""):
        return {"name": prefix + layer.name, "type": type(layer).__name__,
                "output_shape": str(getattr(layer, "output", None) is not None and tuple(layer.output.shape)),
                "parameters": int(layer.count_params())}

    layers = []
    for layer in model.layers:
        layers.append(describe(layer))
        # A flip-averaged model wraps the embedding network: list that network's layers too.
        if isinstance(layer, keras.Model) and any(isinstance(sub, keras.Model) for sub in layer.layers):
            layers += [describe(sub, f"{layer.name}/") for sub in layer.layers]
    facts = {"name": model.name, "total_parameters": total, "trainable_parameters": trainable,
             "input_shape": list(model.input_shape[1:]), "output_shape": list(model.output_shape[1:]),
             "layers": layers}
    write_json(Path(run_dir) / "model_facts.json", facts)
    return facts


# =================================================================================================
# Helpers for the notebooks: evaluation figures
# =================================================================================================

def protocols_in(metrics: Mapping[str, Any], *, official_val: bool = False) -> list[str]:
    """Protocols evaluated in `metrics` (seen, unseen; official-val too when asked and present)."""
    names = PROTOCOLS + (("official-val",) if official_val else ())
    return [p for p in names if isinstance(metrics.get(p), dict) and "trained" in metrics[p]]


def evaluation_arrays(run_dir, protocol: str, model: str = "trained") -> dict[str, np.ndarray]:
    """RUN_DIR/evaluation/<protocol>_<model>.npz (written by tinymatch.evaluate.evaluate_run)."""
    path = Path(run_dir) / "evaluation" / f"{protocol}_{model}.npz"
    if not path.is_file():
        raise FileNotFoundError(f"evaluation arrays not found: {path} (run 03_evaluate first)")
    with np.load(path) as arrays:
        return {key: arrays[key] for key in arrays.files}


def roc_inputs(run_dir, metrics) -> tuple[dict, dict]:
    """({protocol: {name: (far, tar, auc)}}, {protocol: (far, tar)}) for plots.roc."""
    curves, points = {}, {}
    for protocol in protocols_in(metrics):
        named = {}
        for model in ("trained", "untrained", "raw_pixels"):
            if model not in metrics[protocol]:
                continue
            arrays = evaluation_arrays(run_dir, protocol, model)
            named[MODEL_NAMES[model]] = (arrays["roc_far"], arrays["roc_tar"],
                                         metrics[protocol][model]["test"]["roc_auc"])
        curves[protocol] = named
        points[protocol] = operating_point(metrics[protocol]["trained"]["test"]["confusion"])
    return curves, points


def operating_point(confusion: Mapping[str, Any]) -> tuple[float, float]:
    """(false accept rate, true accept rate) of a confusion matrix [[tn, fp], [fn, tp]]."""
    (tn, fp), (fn, tp) = confusion["matrix"]
    return fp / max(tn + fp, 1), tp / max(fn + tp, 1)


def confusion_inputs(metrics) -> dict[str, list]:
    return {p: metrics[p]["trained"]["test"]["confusion"]["matrix"] for p in protocols_in(metrics)}


def histogram_inputs(run_dir, metrics) -> dict[str, tuple]:
    groups = {}
    for protocol in protocols_in(metrics):
        arrays = evaluation_arrays(run_dir, protocol)
        groups[protocol] = (arrays["test_distances"], arrays["test_same"], metrics[protocol]["trained"]["threshold"])
    return groups


def retrieval_inputs(run_dir, dataset, protocol: str = "seen", *, queries: int = 6, seed: int = 0) -> dict:
    """Keyword arguments of plots.retrieval_examples for `queries` random test queries."""
    arrays = evaluation_arrays(run_dir, protocol)
    query_indices, neighbours = arrays["retrieval_queries"], arrays["neighbours"][:, :5]
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(query_indices), size=min(queries, len(query_indices)), replace=False))
    labels, names = np.asarray(dataset.labels), dataset.class_names
    chosen, found = query_indices[rows], neighbours[rows]
    return {
        "query_images": np.asarray(dataset.images[chosen]),
        "neighbour_images": np.asarray(dataset.images[found.reshape(-1)]).reshape(
            *found.shape, *dataset.images.shape[1:]),
        "correct": labels[found] == labels[chosen][:, None],
        "query_names": [names[labels[i]] for i in chosen],
        "neighbour_names": [[names[labels[i]] for i in row] for row in found],
    }


def projection_sample(run_dir, dataset, splits, config: Config, *, protocol: str = "seen",
                      max_points: int = 2000, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings, dataset indices) of at most `max_points` test images, balanced over classes."""
    from tinymatch import evaluate
    from tinymatch.projector import subsample_for_projector

    indices = splits.indices(protocol, "test")
    indices = indices[subsample_for_projector(np.asarray(dataset.labels)[indices], max_points, seed=config.seed)]
    embeddings = evaluate.embeddings_for(Path(run_dir) / "model.keras", dataset, indices,
                                         cache_dir=Path(run_dir) / "embeddings",
                                         batch_size=config.eval_batch_size, progress=progress)
    return np.asarray(embeddings), indices


# =================================================================================================
# The report's Markdown: figures, tables, numbers
# =================================================================================================

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

    def show(self, stem: str, caption: str | None = None):
        from IPython.display import Markdown

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


def read_run(run_dir) -> dict[str, Any]:
    """Everything the report reads from a run directory (files that are missing are left out)."""
    run_dir = Path(run_dir)
    run: dict[str, Any] = {"run_dir": run_dir, "config": Config.load(run_dir / "config.json")}
    for name in ("metrics", "data_facts", "model_facts", "training"):
        path = run_dir / f"{name}.json"
        if path.is_file():
            run[name] = read_json(path)
    if (run_dir / "history.csv").is_file():
        run["history"] = read_history(run_dir)
    return run


PROTOCOL_NAMES = {"seen": "seen classes", "unseen": "unseen classes", "official-val": "official val",
                  "joint": "joint protocol (seen and unseen)"}
LOSS_NAMES = {"semihard": "semi-hard triplet loss", "hard": "batch-hard triplet loss"}


def verification_table(metrics: Mapping[str, Any]) -> str:
    """Test-pair metrics of the trained model and the baselines for every protocol."""
    rows = []
    for protocol in protocols_in(metrics, official_val=True):
        for model, label in MODEL_NAMES.items():
            if model not in metrics[protocol]:
                continue
            test = metrics[protocol][model]["test"]
            low, high = test.get("roc_auc_ci95", [float("nan")] * 2)
            tar = test.get("tar_at_far", {})
            rows.append([PROTOCOL_NAMES[protocol], label, test["num_pairs"], fmt(test["roc_auc"]),
                         f"{fmt(low)} to {fmt(high)}", fmt(test["eer"]), fmt(tar.get("0.01")),
                         percent(test["confusion"]["accuracy"])])
    return markdown_table(["test pairs of", "embedding", "pairs", "ROC AUC", "95% CI (bootstrap)", "EER",
                           "TAR at FAR 1%", "accuracy at threshold"], rows, align="llrrrrrr")


def retrieval_table(metrics: Mapping[str, Any]) -> str:
    rows = []
    for protocol in protocols_in(metrics, official_val=True):
        for model, label in MODEL_NAMES.items():
            if model not in metrics[protocol]:
                continue
            retrieval = metrics[protocol][model]["retrieval"]
            rows.append([PROTOCOL_NAMES[protocol], label, retrieval["num_queries"],
                         fmt(retrieval["precision_at_1"]), fmt(retrieval["recall_at_k"]), fmt(retrieval["map_at_r"])])
    return markdown_table(["test images of", "embedding", "queries", "precision@1", f"recall@{_retrieval_k(metrics)}",
                           "MAP@R"], rows, align="llrrrr")


def _retrieval_k(metrics: Mapping[str, Any]) -> int:
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


def _model_label(config: Config) -> str:
    """e.g. "compact w48 (max 256 filters) @64 px, stride-2 stem, mixed precision"."""
    label = config.backbone
    if config.backbone == "compact":
        label += f" w{config.width}" + (f" (max {config.max_filters} filters)" if config.max_filters else "")
    label += f" @{config.image_size} px"
    if config.backbone == "compact" and config.stem_stride == 2:
        label += ", stride-2 stem"
    return label + (", mixed precision" if config.mixed_precision else "")


def _warmup_label(config: Config) -> str:
    """The warm-up classifier in words: "softmax (NormFace)" or "CosFace (margin 0.2)"."""
    if config.warmup_head == "cosface":
        return f"CosFace (margin {config.warmup_margin:g})"
    return "softmax (NormFace)"


def loss_comparison_table(run_dirs: Sequence[str | os.PathLike]) -> str:
    """One row per run directory: its loss settings, training cost and test metrics."""
    rows = []
    for run_dir in run_dirs:
        run = read_run(run_dir)
        config, metrics, history = run["config"], run.get("metrics", {}), run.get("history", {})
        loss = {"semihard": "semi-hard", "hard": "batch-hard"}[config.loss]
        loss += " (soft)" if config.soft and config.loss == "hard" else ""
        loss += (f" + {config.triplet_softmax_weight:g} x softmax"
                 if config.triplet_softmax_weight else "")
        recipe = (f"{_model_label(config)}, {config.embedding_dim}-d, "
                  f"{config.classes_per_batch} x {config.images_per_class} batches, LR {_peak_rates(config)}, "
                  f"{config.warmup_epochs} + {config.epochs} epochs"
                  + (f" ({_warmup_label(config)} warm-up)"
                     if config.warmup_epochs and config.warmup_head != "normface" else "")
                  + (", flip-averaged" if config.test_time_flip else ""))
        row = [Path(run_dir).name, recipe, loss, fmt(config.margin, 2), len(history.get("loss", [])),
               _best_epoch_label(run),
               fmt(float(np.nansum(history["seconds"])), 0) if "seconds" in history else "n/a"]
        for protocol in PROTOCOLS:
            trained = metrics.get(protocol, {}).get("trained")
            row += ([fmt(trained["test"]["roc_auc"]), fmt(trained["retrieval"]["precision_at_1"])]
                    if trained else ["n/a"] * 2)
        rows.append(row)
    return markdown_table(["run", "model, batches, peak LR, schedule (warm-up + triplet)", "loss", "margin",
                           "epochs run", "kept epoch", "training seconds", "seen AUC", "seen P@1", "unseen AUC",
                           "unseen P@1"], rows, align="lllrrlrrrrr")


def _peak_rates(config: Config) -> str:
    """Peak learning rate(s): "0.003 / 0.001" when the triplet phase after a warm-up has its own."""
    if config.warmup_epochs and config.finetune_learning_rate:
        return f"{config.learning_rate:g} / {config.finetune_learning_rate:g}"
    return f"{config.learning_rate:g}"


def _best_epoch_label(run: Mapping[str, Any]) -> str:
    """The epoch whose weights the run kept, and its phase: a warm-up epoch means the triplet
    epochs never beat the classifier's embedding on validation AUC."""
    best = run.get("training", {}).get("best_epoch")
    phases = run.get("history", {}).get("phase", [])
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
    for protocol in PROTOCOLS:
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


# --- the report's prose around the numbers (one function per section) ---------------------------

def key_numbers(run: Mapping[str, Any]) -> dict[str, str]:
    """Headline numbers of a run, formatted for prose ({} for what the run lacks)."""
    numbers: dict[str, str] = {}
    metrics = run.get("metrics", {})
    for protocol in protocols_in(metrics):
        trained = metrics[protocol]["trained"]
        low, high = trained["test"].get("roc_auc_ci95", [float("nan")] * 2)
        numbers[f"{protocol}_auc"] = fmt(trained["test"]["roc_auc"])
        numbers[f"{protocol}_auc_ci"] = f"{fmt(low)} to {fmt(high)}"
        numbers[f"{protocol}_accuracy"] = percent(trained["test"]["confusion"]["accuracy"])
        numbers[f"{protocol}_p1"] = fmt(trained["retrieval"]["precision_at_1"])
        numbers[f"{protocol}_threshold"] = fmt(trained["threshold"])
        for baseline in ("raw_pixels", "untrained"):
            if baseline in metrics[protocol]:
                numbers[f"{protocol}_{baseline}_auc"] = fmt(metrics[protocol][baseline]["test"]["roc_auc"])
    return numbers


def title_block(run: Mapping[str, Any]) -> str:
    config, facts = run["config"], run.get("data_facts", {})
    dataset = ("a synthetic stand-in for Tiny ImageNet" if _is_synthetic(run)
               else f"Tiny ImageNet (`{facts.get('source', config.data)}`)")
    stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(_run_time(run)))
    return (f"# tinymatch: image matching on Tiny ImageNet with a triplet-loss Siamese network\n\n"
            f"Run `{Path(run['run_dir']).name}`, profile **{config.profile}**, trained on {dataset}; "
            f"report generated from the run's files on {stamp}.")


def _protocol_name(protocol: str) -> str:
    return PROTOCOL_NAMES.get(protocol, f"{protocol} protocol")


def _is_synthetic(run: Mapping[str, Any]) -> bool:
    return SYNTHETIC_DATA_DIR in str(run["config"].data)


def _run_time(run: Mapping[str, Any]) -> float:
    path = Path(run["run_dir"]) / "metrics.json"
    return path.stat().st_mtime if path.exists() else time.time()


def introduction_summary(run: Mapping[str, Any], figs: Figures) -> str:
    n, config = key_numbers(run), run["config"]
    text = [f"This run trains a `{config.backbone}` embedding network with the "
            f"{LOSS_NAMES[config.loss]} ({config.distance_metric} distance, margin {config.margin:g})."]
    if "seen_auc" in n:
        text.append(f"On test pairs of classes seen in training it reaches a ROC AUC of **{n['seen_auc']}** "
                    f"(95% CI {n['seen_auc_ci']}; raw pixels: {n.get('seen_raw_pixels_auc', 'n/a')})")
    if "unseen_auc" in n:
        text.append(f"and on classes held out from training **{n['unseen_auc']}** (95% CI {n['unseen_auc_ci']}; raw "
                    f"pixels: {n.get('unseen_raw_pixels_auc', 'n/a')}).")
    if "seen_accuracy" in n:
        text.append(f"At the threshold chosen on validation pairs, {n['seen_accuracy']} of the seen-class test pairs "
                    f"are decided correctly ({figs.ref('confusion_matrix')}), and the nearest neighbour of a test "
                    f"image has its class for a fraction {n['seen_p1']} of the queries.")
    if (config.max_classes or config.max_images_per_class) and not _is_synthetic(run):
        text.append(f"*This run is limited to {config.max_classes or 'all'} classes and "
                    f"{config.max_images_per_class or 'all'} images per class (section 6).*")
    if _is_synthetic(run):
        text.append("*This run uses the smoke profile on synthetic images (seconds of training): the numbers "
                    "check the pipeline, they say nothing about Tiny ImageNet.*")
    return " ".join(text)


def architecture_markdown(run: Mapping[str, Any]) -> str:
    config, facts, metrics = run["config"], run.get("model_facts", {}), run.get("metrics", {})
    cap = f", at most {config.max_filters}" if config.max_filters else ""
    stem = ("; a 4x4 stride-2 stem, so the network runs at half the input's side"
            if config.stem_stride == 2 else "")
    backbone = (f"the compact residual CNN of `tinymatch.model` (first stage {config.width} filters, doubling "
                f"per stage{cap}{stem})" if config.backbone == "compact" else
                f"Keras Applications' `{config.backbone}` ({'ImageNet weights' if config.weights else 'random init'}, "
                f"input resized to {config.image_size} px)")
    rows = [["backbone", backbone],
            ["network input", f"{config.image_size} x {config.image_size} px"
             + (" (the 64 px images are downsized inside the model)" if config.image_size < 64 else "")],
            ["embedding size", f"{config.embedding_dim} (unit L2 norm)"],
            ["augmentation layer", ("yes (training only" + (", fused with the downsizing)" if
                                    config.image_size < 64 else ")")) if config.augment else "no"],
            ["inference", "flip-averaged: the unit-norm mean of the embeddings of the image and its mirror"
             if config.test_time_flip else "one view"],
            ["distance", f"`{config.distance_metric}`"]]
    if facts:
        rows += [["parameters", f"{fmt(facts['total_parameters'])} ({fmt(facts['trainable_parameters'])} trainable)"]]
    stored = _stored_siamese_threshold(run)
    if stored is not None:
        rows += [["threshold τ in `siamese.keras`", f"{fmt(stored)} (chosen when training ended, on the "
                                                  f"validation pairs used for model selection, method "
                                                  f"`{config.threshold_method}`)"]]
    if "threshold" in metrics:
        rows += [["threshold τ of the evaluation", f"{fmt(metrics['threshold'])} (chosen on all validation pairs "
                                                   f"of the {_protocol_name(metrics['threshold_protocol'])}, "
                                                   f"method `{metrics['threshold_method']}`)"]]
    text = "The network of this run:\n\n" + markdown_table(["component", "this run"], rows, align="ll")
    if facts:
        text += "\n\nLayers of the embedding model (`model.keras`):\n\n" + layer_table(facts)
    return text + ("\n\nThe Siamese model (`siamese.keras`) wraps this embedding model twice with shared weights "
                   "and stores τ, so `tinymatch match --model siamese.keras A.jpg B.jpg` decides a pair directly.")


def loss_markdown(run: Mapping[str, Any]) -> str:
    config = run["config"]
    metric = {"L2": "the Euclidean distance", "squared-L2": "the squared Euclidean distance",
              "angular": "the angular distance 1 - cos"}[config.distance_metric]
    soft = " with the soft margin" if config.loss == "hard" and config.soft else ""
    return (f"This run minimises the **{LOSS_NAMES[config.loss]}**{soft} with margin α = {config.margin:g} and "
            f"{metric} between embeddings (`tinymatch.losses`).")


def mining_markdown(run: Mapping[str, Any]) -> str:
    config = run["config"]
    p, k = config.classes_per_batch, config.images_per_class
    return (f"In this run P = {p} classes and K = {k} images make batches of B = {p * k} images, with "
            f"{fmt(p * k * (k - 1))} anchor-positive pairs and {fmt((p - 1) * k)} negatives per anchor in "
            f"every batch. Batches are drawn class-balanced from the training part "
            f"(`tinymatch.data.pk_dataset`).")


def dataset_markdown(run: Mapping[str, Any], figs: Figures) -> str:
    facts = run.get("data_facts")
    if not facts:
        raise FileNotFoundError(f"{Path(run['run_dir']) / 'data_facts.json'} not found (run 01_data first)")
    per_class = facts["images_per_class"]
    source = "a synthetic dataset in the Tiny ImageNet layout" if _is_synthetic(run) else "Tiny ImageNet"
    text = (f"The run uses {source}: {fmt(facts['num_classes'])} classes and {fmt(facts['num_labelled'])} labelled "
            f"{facts['image_shape'][0]} x {facts['image_shape'][1]} images, between {fmt(per_class['min'])} and "
            f"{fmt(per_class['max'])} per class (median {fmt(per_class['median'], 0)}), see "
            f"{figs.ref('class_distribution')}. {fmt(facts['num_grayscale'])} of the images are grayscale JPEGs; "
            f"they are converted to RGB by repeating the channel.")
    if facts["num_corrupt"]:
        text += f" {fmt(facts['num_corrupt'])} corrupt files were skipped."
    config = run["config"]
    if config.max_classes or config.max_images_per_class:
        text += (f" The configuration limits the data to {config.max_classes or 'all'} classes and "
                 f"{config.max_images_per_class or 'all'} images per class.")
    return text + f" {figs.ref('samples')} shows one image of each of the first classes."


def split_markdown(run: Mapping[str, Any]) -> str:
    config = run["config"]
    text = (f"The split is seeded (seed {config.seed}) and saved as `split.csv` in the run directory. For seen "
            f"classes a fraction {config.val_fraction:g} of the images of every class goes to validation and "
            f"{config.test_fraction:g} to test. For unseen classes {config.unseen_train_classes} classes are "
            f"training classes and the remaining classes are split, by class, into validation and test classes. ")
    if config.protocol == "joint":
        text += (f"The model is trained on the **joint** protocol: only the training images of the "
                 f"{config.unseen_train_classes} training classes, so one model is judged on new images of the "
                 f"classes it trained on (seen) and on classes it never saw (unseen); its checkpoint and "
                 f"threshold are selected on the validation images of both.")
    else:
        text += (f"The model is trained, and its checkpoint and threshold selected, on the **{config.protocol}** "
                 f"protocol.")
    return text + "\n\n" + split_table(run["data_facts"])


def augmentation_markdown(run: Mapping[str, Any], figs: Figures) -> str:
    config = run["config"]
    status = ("is applied to every training batch" if config.augment
              else "is switched off for this run (shown for reference)")
    rows = [["zoom", f"scale in [{1 - config.zoom:g}, {1 + config.zoom:g}]"],
            ["flip", config.flip or "none"],
            ["rotation", f"up to ±{config.rotation * 360:g}°"],
            ["translation", f"up to ±{config.translation:.0%} of the side"],
            ["brightness", f"±{config.brightness:g} of the range"],
            ["contrast", f"factor in [{1 - config.contrast:g}, {1 + config.contrast:g}]"]]
    return (f"Random augmentation {status}, inside the model so it runs on the accelerator; "
            f"{figs.ref('augmentation')} shows one image under many draws.\n\n"
            + markdown_table(["transform", "range"], rows, align="ll"))


def optimisation_markdown(run: Mapping[str, Any]) -> str:
    config = run["config"]
    steps = f"{config.steps_per_epoch} steps" if config.steps_per_epoch else "one pass over the training images"
    text = (f"Optimiser `{config.optimizer}`, learning rate {config.learning_rate:g} with a `{config.lr_schedule}` "
            f"schedule, weight decay {config.weight_decay:g}, at most {config.epochs} epochs of {steps}.")
    if config.early_stopping_patience:
        text += (f" Training stops early after {config.early_stopping_patience} triplet-loss epochs without a gain "
                 f"over that phase's best validation AUC.")
    text += " The checkpoint with the best validation ROC AUC is kept."
    if config.freeze_backbone_epochs:
        text += f" The pre-trained backbone is frozen for the first {config.freeze_backbone_epochs} epochs."
    if config.warmup_epochs:
        text += f" A {_warmup_label(config)} classification warm-up runs for {config.warmup_epochs} epochs first"
        text += (f"; the triplet phase then restarts the schedule at a peak of {config.finetune_learning_rate:g}."
                 if config.finetune_learning_rate else ".")
    if config.triplet_softmax_weight:
        text += (f" The classification loss stays on in the triplet phase at weight "
                 f"{config.triplet_softmax_weight:g} beside the triplet loss (same classifier).")
    if config.mixed_precision:
        text += (" Mixed precision is on: float16 compute on a GPU, bfloat16 on a CPU (variables, loss and "
                 "embeddings stay float32).")
    return text


def training_markdown(run: Mapping[str, Any], figs: Figures) -> str:
    summary = history_summary(run.get("history", {}))
    if not summary["epochs"]:
        raise FileNotFoundError(f"{Path(run['run_dir']) / 'history.csv'} is empty or missing (run 02_train first)")
    text = [f"Training ran for {summary['epochs']} epochs"]
    if "seconds" in summary:
        text[0] += f" in {fmt(summary['seconds'], 0)} s"
    text[0] += f" ({figs.ref('training_curves')})."
    text += _phase_sentences(run.get("history", {}))
    if "active_fraction" in summary:
        text.append(f"The fraction of active anchor-positive pairs went from "
                    f"{fmt(summary['active_fraction']['first'])} "
                    f"to {fmt(summary['active_fraction']['last'])}.")
    if "mean_positive_distance" in summary and "mean_negative_distance" in summary:
        text.append(f"In the last epoch the mean anchor-positive distance was "
                    f"{fmt(summary['mean_positive_distance']['last'])} and the mean anchor-negative distance "
                    f"{fmt(summary['mean_negative_distance']['last'])}.")
        gap = summary["mean_negative_distance"]["last"] - summary["mean_positive_distance"]["last"]
        margin = run["config"].margin
        if summary.get("active_fraction", {}).get("last", 0) > 0.95 and gap < margin:
            text.append(f"Nearly every anchor-positive pair still has a non-zero loss: the gap between the mean "
                        f"negative and positive distances ({fmt(gap)}) is below the margin ({fmt(margin, 2)}), so "
                        f"the loss stays close to the margin. Mining is alive (no collapse: the two distances "
                        f"differ); what limits the result is how well the network separates the classes.")
    if "best_val_auc" in summary:
        text.append(f"The best validation ROC AUC, {fmt(summary['best_val_auc'])}, was reached in epoch "
                    f"{summary['best_epoch']}; that model is evaluated below.")
    return " ".join(text)


def _phase_sentences(history: Mapping[str, Any]) -> list[str]:
    """How each phase's loss moved: a warm-up logs cross-entropy, the triplet phase the triplet
    loss, so one "from ... to ..." over both would compare different quantities."""
    losses = np.asarray(history.get("loss", []), dtype=float)
    phases = np.asarray(history.get("phase", ["triplet"] * len(losses))).astype(str)
    sentences = []
    for phase, what in (("warmup", "the softmax warm-up's cross-entropy"), ("triplet", "the triplet loss")):
        values = losses[phases == phase]
        values = values[np.isfinite(values)]
        if len(values):
            epochs = int((phases == phase).sum())
            sentences.append(f"Over {epochs} epoch{'s' if epochs > 1 else ''} {what} went from "
                             f"{fmt(values[0])} to {fmt(values[-1])}.")
    return sentences


def verification_markdown(run: Mapping[str, Any], figs: Figures) -> str:
    metrics = _metrics_of(run)
    return (f"{figs.ref('roc')} shows the ROC curves of the test pairs and the table lists the threshold-free "
            f"figures of the trained model and of the baselines on the same pairs.\n\n" + verification_table(metrics))


def _stored_siamese_threshold(run: Mapping[str, Any]) -> float | None:
    """The τ that siamese.keras holds (training.json records it when training ends)."""
    value = run.get("training", {}).get("threshold")
    return float(value) if isinstance(value, (int, float)) else None


def confusion_markdown(run: Mapping[str, Any], figs: Figures) -> str:
    metrics = _metrics_of(run)
    return (f"For every protocol the threshold τ is chosen on its validation pairs (method "
            f"`{metrics['threshold_method']}`) and applied unchanged to its test pairs"
            + (f"; the Siamese model stores τ = {fmt(_stored_siamese_threshold(run))}, chosen when training ended "
               f"on the validation pairs used for model selection" if _stored_siamese_threshold(run) is not None
               else "") + f". {figs.ref('confusion_matrix')} "
            f"shows the resulting confusion matrices and {figs.ref('distance_histograms')} the distances of "
            f"same-class and different-class pairs on either side of τ. In the table TP, FN, FP and TN count "
            f"same-class pairs accepted and rejected and different-class pairs accepted and rejected.\n\n"
            + confusion_table(metrics))


def retrieval_markdown(run: Mapping[str, Any], figs: Figures) -> str:
    metrics = _metrics_of(run)
    return (f"Each test image queries the other test images of its protocol. {figs.ref('retrieval_examples')} "
            f"shows random queries of seen classes with their {_retrieval_k(metrics)} nearest neighbours.\n\n"
            + retrieval_table(metrics))


def loss_comparison_markdown(run_dirs: Sequence[str | os.PathLike]) -> str:
    """The loss comparison table of `run_dirs` and a sentence on what it shows."""
    run_dirs = [Path(d) for d in run_dirs]
    runs = [read_run(d) for d in run_dirs]
    losses = sorted({run["config"].loss for run in runs})
    table = loss_comparison_table(run_dirs)
    if len(losses) < 2:
        only = LOSS_NAMES[losses[0]]
        other = "hard" if losses[0] == "semihard" else "semihard"
        return (f"{table}\n\nOnly runs with the {only} were given, so this table has no second loss to compare "
                f"with. To fill it, train a run with `\"loss\": \"{other}\"` in its configuration and pass both "
                f"run directories: `tinymatch report --config CONFIG --out RUN_DIR --compare OTHER_RUN_DIR`.")
    best = max(runs, key=lambda run: _seen_auc(run))
    notes = [f"All rows are evaluated with the same protocols and pair sampling. The highest ROC AUC on seen "
             f"classes is that of run `{Path(best['run_dir']).name}` ({LOSS_NAMES[best['config'].loss]})."]
    for run in runs:
        if "(warmup)" in _best_epoch_label(run):
            history = run.get("history", {})
            positive = np.asarray(history.get("mean_positive_distance", [np.nan]), dtype=float)[-1]
            negative = np.asarray(history.get("mean_negative_distance", [np.nan]), dtype=float)[-1]
            notes.append(f"Run `{Path(run['run_dir']).name}` kept a warm-up epoch: none of its "
                         f"{LOSS_NAMES[run['config'].loss]} epochs beat the classifier's embedding on validation "
                         f"AUC, so its row measures the warm-up model. In its last epoch the mean anchor-positive "
                         f"and anchor-negative distances were {fmt(positive)} and {fmt(negative)}"
                         + (" (a collapsed embedding: every image mapped to nearly the same point)."
                            if negative < 0.1 else "."))
    return f"{table}\n\n" + " ".join(notes)


def _seen_auc(run: Mapping[str, Any]) -> float:
    trained = run.get("metrics", {}).get("seen", {}).get("trained")
    return trained["test"]["roc_auc"] if trained else float("-inf")


def projector_markdown(run: Mapping[str, Any], figs: Figures) -> str:
    export = Path(run["run_dir"]) / "projector"
    config_file = export / "projector_config.pbtxt"
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file} not found (run 04_embeddings first)")
    points = sum(1 for _ in (export / "tensors.tsv").open())
    return (f"The export in `{Path(run['run_dir']).name}/projector/` holds {fmt(points)} test images of seen "
            f"classes, drawn evenly across classes. Open it with `tensorboard --logdir "
            f"{Path(run['run_dir']).name}/projector` (PROJECTOR tab), or load `tensors.tsv` and `metadata.tsv` on "
            f"projector.tensorflow.org. {figs.ref('embedding_map')} is a static 2-D view of the same points.\n\n"
            + projector_table(export))


def config_markdown(run: Mapping[str, Any]) -> str:
    return ("Every field of `config.json`; rerun with `tinymatch report --config config.json`.\n\n"
            + config_table(run["config"]))


def _metrics_of(run: Mapping[str, Any]) -> dict[str, Any]:
    if "metrics" not in run:
        raise FileNotFoundError(f"{Path(run['run_dir']) / 'metrics.json'} not found (run 03_evaluate first)")
    return run["metrics"]


# =================================================================================================
# Rendering: HTML (self-contained) and PDF (headless Chromium)
# =================================================================================================

REPORT_CSS = """
body { max-width: 60rem; margin: 0 auto; }
.jp-Notebook { padding: 0 1.5rem; }
.jp-InputPrompt, .jp-OutputPrompt { display: none !important; }
.jp-RenderedHTMLCommon table { margin: 0.6em 0 1em 0; font-size: 0.85rem; }
figure.tinymatch-figure { margin: 1em 0 1.4em 0; text-align: center; break-inside: avoid; page-break-inside: avoid; }
figure.tinymatch-figure img { max-width: 100%; height: auto; }
figure.tinymatch-figure figcaption { font-size: 0.85rem; text-align: left; color: #333; margin-top: 0.3em; }
math[display="block"] { margin: 0.8em 0; }
.jp-RenderedHTMLCommon h1, .jp-RenderedHTMLCommon h2, .jp-RenderedHTMLCommon h3 {
  break-after: avoid; page-break-after: avoid; }
math { font-size: 1.08em; }
@page { size: A4; margin: 14mm 12mm; }
@media print { body { max-width: none; } .anchor-link { display: none; } }
"""

# The lab template without anything fetched from the network: no require.js, no MathJax, no
# Mermaid, no widget manager (the report has none of them: formulas are MathML, see below).
_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block extra_css -%}<style type="text/css">""" + REPORT_CSS + """</style>{%- endblock extra_css -%}
"""


def render_html(notebook, html_path, *, title: str = "tinymatch report") -> Path:
    """Executed notebook -> self-contained HTML with code hidden and LaTeX as MathML."""
    import nbformat

    notebook, html_path = Path(notebook), Path(html_path)
    if not notebook.is_file():
        raise FileNotFoundError(f"executed report notebook not found: {notebook}")
    nb = nbformat.read(notebook, as_version=4)
    check_notebook_outputs(nb, notebook)
    nb.metadata["title"] = title
    for cell in nb.cells:  # warnings printed by libraries are not part of the report
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs
                            if not (o.get("output_type") == "stream" and o.get("name") == "stderr")]
    body, _ = _exporter().from_notebook_node(nb, resources={"metadata": {"name": title}})
    external = external_resources(body)
    if external:
        raise ReportError(f"{html_path}: the report would load external resources: {', '.join(external[:5])}")
    return atomic_write_text(html_path, body)


def _exporter():
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    class OfflineHTMLExporter(HTMLExporter):
        """HTMLExporter whose Markdown renders $...$ and $$...$$ to MathML (no MathJax needed)."""

        def default_filters(self):
            for name, function in super().default_filters():
                yield (name, self.markdown2html_mathml if name == "markdown2html" else function)

        def markdown2html_mathml(self, context, source):
            return markdown_to_html(source)

        markdown2html_mathml = _pass_context(markdown2html_mathml)

    return OfflineHTMLExporter(template_name="lab", template_file="tinymatch_report.html.j2",
                               extra_loaders=[DictLoader({"tinymatch_report.html.j2": _TEMPLATE})],
                               exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True,
                               exclude_anchor_links=True, embed_images=True)


def _pass_context(function):
    from jinja2 import pass_context

    return pass_context(function)


def markdown_to_html(source: str) -> str:
    """Markdown (with $inline$ and $$display$$ LaTeX) -> HTML with MathML formulas."""
    from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath

    class MathMLRenderer(IPythonRenderer):
        def block_math(self, body: str) -> str:
            return latex_to_mathml(body, display=True)

        def inline_math(self, body: str) -> str:
            return latex_to_mathml(body, display=False)

        def latex_environment(self, name: str, body: str) -> str:
            return latex_to_mathml(f"\\begin{{{name}}}{body}\\end{{{name}}}", display=True)

    renderer = MathMLRenderer(escape=False, exclude_anchor_links=True)
    return MarkdownWithMath(renderer=renderer).render(source)


def latex_to_mathml(latex: str, *, display: bool = False) -> str:
    """LaTeX -> MathML, which browsers (and Chromium's PDF printer) render without any script."""
    try:
        from latex2mathml.converter import convert
    except ImportError:
        raise ImportError("the report needs latex2mathml: pip install 'tinymatch[report]'") from None
    return convert(latex.strip(), display="block" if display else "inline")


_EXTERNAL = re.compile(r"<(script|link|img|iframe|source|video|audio|embed|object)\b[^>]*?"
                       r"\b(src|href|data)\s*=\s*[\"']?\s*((?:https?:)?//[^\"'\s>]+)", re.I)
_CSS_URL = re.compile(r"url\(\s*[\"']?\s*((?:https?:)?//[^\"')\s]+)", re.I)
_CSS_IMPORT = re.compile(r"@import\s+[\"']((?:https?:)?//[^\"']+)", re.I)


def external_resources(page: str) -> list[str]:
    """URLs a browser would fetch to show `page` (scripts, styles, images, CSS url()/@import).

    Plain hyperlinks (`<a href>`) are not resources and are allowed.
    """
    found = [match.group(3) for match in _EXTERNAL.finditer(page)]
    found += _CSS_URL.findall(page) + _CSS_IMPORT.findall(page)
    return sorted(set(found))


def check_notebook_outputs(nb, path) -> None:
    """Refuse to render a report with error outputs in it."""
    for number, cell in enumerate(nb.cells, start=1):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                raise ReportError(f"{path}: cell {number} has an error output: "
                                  f"{output.get('ename')}: {output.get('evalue')}")


def find_chromium() -> str:
    """Path of a Chromium/Chrome executable: $TINYMATCH_CHROMIUM, else the usual names on PATH."""
    explicit = os.environ.get(CHROMIUM_ENV_VAR)
    if explicit:
        if shutil.which(explicit):
            return shutil.which(explicit)
        raise ChromiumNotFoundError(f"${CHROMIUM_ENV_VAR}={explicit!r} is not an executable")
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise ChromiumNotFoundError(
        "the PDF needs headless Chromium, but none of " + ", ".join(CHROMIUM_NAMES) + " is on PATH: "
        "install it (Debian/Ubuntu: apt-get install chromium) or set $TINYMATCH_CHROMIUM, "
        "or render HTML only with `tinymatch report --no-pdf`")


def render_pdf(html_path, pdf_path, *, timeout: float = 180) -> Path:
    """Print `html_path` to `pdf_path` with headless Chromium (offline; atomic write)."""
    html_path, pdf_path = Path(html_path).resolve(), Path(pdf_path)
    if not html_path.is_file():
        raise FileNotFoundError(f"report HTML not found: {html_path}")
    chromium = find_chromium()
    with tempfile.TemporaryDirectory(prefix="tinymatch-chromium-") as profile, atomic_path(pdf_path) as tmp:
        command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                   "--disable-background-networking", "--disable-component-update", "--disable-sync",
                   "--disable-extensions", "--disable-dev-shm-usage", "--hide-scrollbars",
                   f"--user-data-dir={profile}", f"--print-to-pdf={tmp.resolve()}", "--no-pdf-header-footer",
                   html_path.as_uri()]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                    stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise ReportError(f"Chromium did not print {pdf_path} within {timeout:.0f} s") from None
        if not tmp.is_file() or tmp.stat().st_size == 0:
            tail = "\n".join((result.stderr or "").strip().splitlines()[-5:])
            raise ReportError(f"Chromium ({chromium}) failed to print {pdf_path} "
                              f"(exit status {result.returncode}): {tail}")
    return pdf_path


__all__ = ["run_report", "render_html", "render_pdf", "find_chromium", "external_resources", "setup",
           "Figures", "figure_markdown", "markdown_table", "loss_comparison_table", "verification_table",
           "retrieval_table", "confusion_table", "ReportError", "ChromiumNotFoundError", "NOTEBOOKS"]
