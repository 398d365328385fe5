"""The notebook pipeline: papermill runs the notebooks in order with one parameter set.

```
notebooks/01_data.ipynb        dataset facts, class distribution, samples, augmentation
notebooks/02_train.ipynb       trains (or reuses a finished run with the same configuration)
notebooks/03_evaluate.ipynb    metrics.json, ROC, confusion matrix, distances, retrieval examples
notebooks/04_embeddings.ipynb  Embedding Projector export and the 2-D embedding map
notebooks/report.ipynb         the report, every number read from the run directory
```

Everything lands in the run directory (`tinymatch.rundir.RunDir`): the executed notebooks in
`notebooks/`, the figures in `figs/`, `report.html` and `report.pdf`. Nothing is written to the
repository: `publish` copies a finished run's report and figures to `reports/` and `figs/`, and
only when asked (`tinymatch report --publish`, `make reference`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import papermill
from jupyter_client.manager import AsyncKernelManager

from tinymatch.config import Config
from tinymatch.io_utils import atomic_path
from tinymatch.report.notebook import default_run_dir, prepare_data
from tinymatch.report.render import ReportError, find_chromium, render_html, render_pdf
from tinymatch.rundir import AblationDir, RunDir, StudyDir, read_history

NOTEBOOKS = ("01_data", "02_train", "03_evaluate", "04_embeddings", "report")
NOTEBOOK_PURPOSE = {
    "01_data": "dataset facts and class distribution",
    "02_train": "training",
    "03_evaluate": "verification and retrieval metrics",
    "04_embeddings": "projector export and embedding map",
    "report": "the report",
}


def run_report(config: Config, run_dir=None, pdf: bool = True, progress: bool = True, *,
               compare_run_dirs: Sequence[str | os.PathLike] = (), study_dir=None,
               ablation_dir=None, notebooks_dir=None) -> dict[str, Path]:
    """Run notebooks 01..04 and report.ipynb on `config`, then render report.html (and .pdf).

    Args:
        config: the run's configuration (the smoke profile without `data`: synthetic data, made
            where `tinymatch.data` keeps it).
        run_dir: run directory (default runs/<profile>), and the only place anything is written.
            A finished training run there with the same configuration is reused, not trained again.
        pdf: also print the PDF with headless Chromium.
        progress: print one line per notebook (and a cell progress bar).
        compare_run_dirs: more run directories for the report's loss comparison table.
        study_dir: a `tinymatch tune` study directory for the report's tuning-study part.
        ablation_dir: a `tinymatch ablate` directory for the report's ablation part.
        notebooks_dir: the source notebooks (default: the repository's notebooks/).

    Returns: {name: path} of the outputs (run_dir, notebooks, figs, html, pdf).
    """
    started = time.perf_counter()
    if pdf:
        find_chromium()  # fail before minutes of notebooks, not after
    for other in compare_run_dirs:
        for path in (RunDir(other).config, RunDir(other).metrics):
            if not path.is_file():
                raise FileNotFoundError(f"--compare {other}: {path} not found (a finished, evaluated run "
                                        f"directory is needed)")
    if study_dir is not None and not StudyDir(study_dir).storage.is_file():
        raise FileNotFoundError(f"--study {study_dir}: no study.db there (run `tinymatch tune` first)")
    if ablation_dir is not None and not AblationDir(ablation_dir).summary.is_file():
        raise FileNotFoundError(f"--ablation {ablation_dir}: no ablation.json there (run `tinymatch "
                                "ablate` first)")
    paths = RunDir(run_dir if run_dir else default_run_dir(config))
    notebooks_dir = Path(notebooks_dir) if notebooks_dir else default_notebooks_dir()
    _say(progress, f"tinymatch report: profile {config.profile}, run directory {paths.path}")
    prepare_data(config, progress=progress)  # a wrong path fails now; the first decode shows progress
    parameters = notebook_parameters(config, paths.path, compare_run_dirs, study_dir, ablation_dir)
    for number, name in enumerate(NOTEBOOKS, start=1):
        note = _training_note(config, paths.path) if name == "02_train" else ""
        _say(progress, f"[{number}/{len(NOTEBOOKS)}] {name}: {NOTEBOOK_PURPOSE[name]}{note} ...")
        with EpochEcho(paths.path, enabled=progress and name == "02_train"):
            seconds = execute_notebook(notebooks_dir / f"{name}.ipynb", paths.notebooks / f"{name}.ipynb",
                                       parameters, progress=progress)
        _say(progress, f"[{number}/{len(NOTEBOOKS)}] {name}: done in {seconds:.0f} s")
    outputs = {"run_dir": paths.path, "notebooks": paths.notebooks, "figs": paths.figs}
    _say(progress, "rendering report.html ...")
    outputs["html"] = render_html(paths.notebooks / "report.ipynb", paths.report_html)
    if pdf:
        _say(progress, "printing report.pdf with headless Chromium ...")
        outputs["pdf"] = render_pdf(outputs["html"], paths.report_pdf)
    _say(progress, f"tinymatch report: finished in {time.perf_counter() - started:.0f} s")
    return outputs


def publish(run_dir, reports_dir="reports", figs_dir="figs", *, study_dir=None,
            ablation_dir=None) -> dict[str, Path]:
    """Copy a rendered run's report.html (report.pdf when there is one) into `reports_dir` and its
    figures (PNG) into `figs_dir`: the one step that writes the committed report.

    With the study and ablation the report was rendered with, their one file the report reads
    (study.db, ablation.json) is kept too, as reports_dir/study/ and reports_dir/ablation/: run
    directories are not committed, and without these a later re-render would lose both parts
    (it happened once: the study behind the published report was gone with its runs/).
    Each file is replaced atomically; files of `figs_dir` the run has no figure for are kept.
    Returns {what: path} of the copies ("html", "pdf", "study", "ablation", and "figs" for the folder).
    """
    paths = RunDir(run_dir)
    if not paths.report_html.is_file():
        raise FileNotFoundError(f"{paths.report_html} not found: render the run's report first "
                                f"(tinymatch report --out {paths.path})")
    figures = sorted(paths.figs.glob("*.png"))
    if not figures:
        raise FileNotFoundError(f"{paths.figs}: no figures to publish (render the run's report first)")
    kept = {name: source for name, source in (("study", study_dir and StudyDir(study_dir).storage),
                                               ("ablation", ablation_dir and AblationDir(ablation_dir).summary))
            if source}
    for name, source in kept.items():  # checked before anything is copied: all or nothing
        if not source.is_file():
            raise FileNotFoundError(f"--{name} {source.parent}: {source} not found")
    reports_dir, figs_dir = Path(reports_dir), Path(figs_dir)
    published = {"html": _copy(paths.report_html, reports_dir / paths.report_html.name)}
    if paths.report_pdf.is_file():
        published["pdf"] = _copy(paths.report_pdf, reports_dir / paths.report_pdf.name)
    for figure in figures:
        _copy(figure, figs_dir / figure.name)
    published["figs"] = figs_dir
    for name, source in kept.items():
        target = reports_dir / name / source.name
        # (re-rendering from the published copies passes them back in: nothing to copy)
        published[name] = target if target.resolve() == source.resolve() else _copy(source, target)
    return published


def _copy(source: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
    return target


def default_notebooks_dir() -> Path:
    """notebooks/ of the repository this package lives in (editable install or source tree)."""
    for candidate in (Path(__file__).resolve().parents[3] / "notebooks", Path.cwd() / "notebooks"):
        if (candidate / "report.ipynb").is_file():
            return candidate
    raise FileNotFoundError("notebooks/report.ipynb not found next to the tinymatch package or in the "
                            "current directory: run from the repository root")


def notebook_parameters(config: Config, run_dir, compare_run_dirs=(), study_dir=None,
                        ablation_dir=None) -> dict[str, Any]:
    """The one parameter set every notebook receives (absolute paths: kernels run elsewhere)."""
    run_dir = Path(run_dir).resolve()
    runs = [str(run_dir)] + [str(Path(d).resolve()) for d in compare_run_dirs if Path(d).resolve() != run_dir]
    return {"config": config.to_dict(), "run_dir": str(run_dir), "figs_dir": str(RunDir(run_dir).figs),
            "compare_run_dirs": runs, "study_dir": _absolute(study_dir),
            "ablation_dir": _absolute(ablation_dir), "progress": False}


def _absolute(path) -> str:
    return str(Path(path).resolve()) if path else ""


def execute_notebook(source, output, parameters: Mapping[str, Any], *, progress=True) -> float:
    """Execute `source` with papermill into `output` (atomically); return the seconds it took."""
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
    class LoggingKernelManager(AsyncKernelManager):
        async def _async_launch_kernel(self, kernel_cmd, **kw):
            kw["stdout"] = kw["stderr"] = log
            kw["env"] = {"TF_CPP_MIN_LOG_LEVEL": "1", **(kw.get("env") or os.environ)}
            return await super()._async_launch_kernel(kernel_cmd, **kw)

    return LoggingKernelManager


def epoch_line(row: Mapping[str, Any]) -> str:
    """One console line for a finished epoch (a history.csv row)."""
    def number(key, spec):
        value = row.get(key)
        return format(value, spec) if isinstance(value, float) else "-"
    return (f"    epoch {number('epoch', '.0f')} ({row.get('phase', '?')}): loss {number('loss', '.4f')}, "
            f"val AUC {number('val_auc', '.4f')}, lr {number('lr', '.2g')}, {number('seconds', '.0f')} s")


class EpochEcho:
    """Print each epoch that history.csv gains while a notebook trains.

    Why: the kernel's own output goes into the executed notebook and its log, so without this a
    45-minute training cell shows only papermill's cell bar. The epochs are read from the file the
    run already writes atomically after every epoch; the notebook and the training code are unchanged.
    """

    def __init__(self, run_dir, *, enabled: bool = True, interval: float = 5.0, write=None):
        self.run_dir, self.enabled, self.interval = Path(run_dir), enabled, interval
        self.write = write or _tqdm_write
        self._stop = threading.Event()
        self._thread = None
        self._seen = 0

    def __enter__(self):
        if self.enabled:
            self._seen = len(self._rows())  # a resumed or reused run's earlier epochs are not news
            self._thread = threading.Thread(target=self._watch, name="tinymatch-epoch-echo", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.poll()  # the last epoch can land between two polls
        return False

    def _watch(self):
        while not self._stop.wait(self.interval):
            self.poll()

    def _rows(self) -> list[dict]:
        try:
            return read_history(self.run_dir)
        except (OSError, ValueError):  # (a damaged file is the training's to report, not ours)
            return []

    def poll(self) -> int:
        """Print the rows not printed yet; returns how many were printed."""
        rows = self._rows()
        new = rows[self._seen:]
        for row in new:
            self.write(epoch_line(row))
        self._seen = max(self._seen, len(rows))
        return len(new)


def _tqdm_write(line: str) -> None:
    from tqdm import tqdm  # papermill's cell bar is a tqdm bar: write above it, not through it

    tqdm.write(line)


def _training_note(config: Config, run_dir: Path) -> str:
    # Imported here: tinymatch.train imports TensorFlow (7.8 s), needed only for this check.
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


__all__ = ["NOTEBOOKS", "NOTEBOOK_PURPOSE", "run_report", "publish", "default_notebooks_dir",
           "notebook_parameters", "execute_notebook", "EpochEcho", "epoch_line"]
