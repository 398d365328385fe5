"""The report pipeline: Markdown helpers, offline HTML, and the smoke profile rendered end to end."""

import base64
import json
import re
import shutil
from pathlib import Path

import nbformat
import pytest

from tinymatch import report
from tinymatch.config import Config

NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"
FIGURE_STEMS = [stem for stem, _ in report.FIGURES]
CHROMIUM = next((shutil.which(name) for name in report.CHROMIUM_NAMES if shutil.which(name)), None)


# --- notebooks ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", report.NOTEBOOKS)
def test_notebook_has_parameters_cell_no_outputs_and_a_py_twin(name):
    import jupytext

    notebook = nbformat.read(NOTEBOOKS_DIR / f"{name}.ipynb", as_version=4)
    tagged = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1 and "config = {}" in tagged[0].source and "run_dir" in tagged[0].source
    assert all(not cell.get("outputs") and not cell.get("execution_count")
               for cell in notebook.cells if cell.cell_type == "code"), "commit notebooks without outputs"
    twin = jupytext.read(NOTEBOOKS_DIR / f"{name}.py")
    assert [c.source for c in twin.cells] == [c.source for c in notebook.cells], \
        f"{name}.ipynb and {name}.py differ: run `jupytext --sync notebooks/{name}.py`"
    # Logic lives in the library: no function or class longer than a few lines in a notebook.
    code = "\n".join(c.source for c in notebook.cells if c.cell_type == "code")
    assert not re.search(r"^\s*(def|class) ", code, re.M)


# --- Markdown helpers -----------------------------------------------------------------------------

def _png(path, size=(8, 6)):
    from matplotlib.figure import Figure

    from tinymatch import plots

    fig = Figure(figsize=size)
    fig.subplots().plot([0, 1], [1, 0])
    return plots.save_fig(fig, path)


def test_figures_are_numbered_in_order_and_embedded_as_data_uris(tmp_path):
    path = _png(tmp_path / "roc.png")
    figs = report.Figures(tmp_path)
    assert figs.ref("class_distribution") == "Figure 1"
    assert figs.ref("roc") == f"Figure {FIGURE_STEMS.index('roc') + 1}"
    markdown = figs.markdown("roc", "ROC & <friends>")
    number = FIGURE_STEMS.index("roc") + 1
    assert f"<b>Figure {number}.</b> ROC &amp; &lt;friends&gt;" in markdown
    encoded = re.search(r'src="data:image/png;base64,([^"]+)"', markdown).group(1)
    assert base64.b64decode(encoded) == path.read_bytes()
    with pytest.raises(FileNotFoundError, match="samples.png"):
        figs.markdown("samples")


def test_markdown_table_and_number_formatting():
    table = report.markdown_table(["name", "value"], [["a|b", 1234], ["c", 0.12345], ["d", float("nan")]])
    lines = table.splitlines()
    assert lines[0] == "| name | value |" and lines[1] == "|:--|--:|"
    assert lines[2] == "| a\\|b | 1,234 |" and lines[3] == "| c | 0.123 |" and lines[4] == "| d | n/a |"
    assert report.percent(0.975) == "97.5%"


def test_markdown_math_becomes_mathml_without_mathjax():
    html = report.markdown_to_html("Loss $d(a, p)$ and\n\n$$\\mathcal{L} = [x]_+$$\n\n**bold**")
    assert html.count("<math") == 2 and 'display="block"' in html and "<strong>bold</strong>" in html
    assert "$" not in html


def test_external_resources_are_found_but_hyperlinks_are_allowed():
    page = ('<script src="https://cdn.example/x.js"></script><link rel="stylesheet" href="//cdn.example/a.css">'
            '<img src="data:image/png;base64,AAAA"><a href="https://projector.tensorflow.org">link</a>'
            '<style>@import "https://fonts.example/f.css"; .a { background: url(http://x.example/b.png) }</style>')
    assert report.external_resources(page) == ["//cdn.example/a.css", "http://x.example/b.png",
                                                "https://cdn.example/x.js", "https://fonts.example/f.css"]


def test_missing_chromium_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv(report.CHROMIUM_ENV_VAR, raising=False)
    with pytest.raises(report.ChromiumNotFoundError, match="chromium.*--no-pdf"):
        report.find_chromium()


def _fake_run(run_dir, loss, auc):
    run_dir.mkdir(parents=True)
    Config.from_profile("smoke", loss=loss).save(run_dir / "config.json")
    trained = {"test": {"roc_auc": auc}, "retrieval": {"precision_at_1": auc - 0.1}}
    (run_dir / "metrics.json").write_text(json.dumps({"seen": {"trained": trained}, "unseen": {"trained": trained}}))
    (run_dir / "history.csv").write_text(
        "epoch,phase,loss,mean_positive_distance,mean_negative_distance,seconds\n"
        f"1,warmup,4.5,0.5,0.6,10\n2,triplet,0.4,{0.5 if loss == 'semihard' else 0.01},"
        f"{0.9 if loss == 'semihard' else 0.01},11\n")
    kept = 2 if loss == "semihard" else 1
    (run_dir / "training.json").write_text(json.dumps({"best_epoch": kept, "finished": True}))
    return run_dir


def test_loss_comparison_table_has_one_row_per_run(tmp_path):
    runs = [_fake_run(tmp_path / "semihard", "semihard", 0.91), _fake_run(tmp_path / "hard", "hard", 0.88)]
    text = report.loss_comparison_markdown(runs)
    rows = [line for line in text.splitlines() if line.startswith("| semihard") or line.startswith("| hard")]
    assert len(rows) == 2
    # the smoke profile's model, batches and schedule
    recipe = "compact w8 @64 px, 16-d, 6 x 4 batches, LR 0.001, 0 + 2 epochs"
    assert f"| semihard | {recipe} | semi-hard | 0.50 | 2 | 2 (triplet) | 21 | 0.910 | 0.810 | 0.910 | 0.810 |" in rows
    assert f"| hard | {recipe} | batch-hard | 0.50 | 2 | 1 (warmup) | 21 | 0.880 | 0.780 | 0.880 | 0.780 |" in rows
    assert "run `semihard` (semi-hard triplet loss)" in text
    # A run that kept its warm-up epoch is called out, with its collapse when the distances show one.
    assert "Run `hard` kept a warm-up epoch" in text and "collapsed embedding" in text
    assert "Run `semihard` kept" not in text
    assert "second loss" in report.loss_comparison_markdown(runs[:1])


def test_a_cosface_warmup_is_named_in_the_table_and_the_text(tmp_path):
    run_dir = _fake_run(tmp_path / "cosface", "semihard", 0.9)
    config = Config.from_profile("smoke", warmup_epochs=1, epochs=1, warmup_head="cosface",
                                 warmup_margin=0.2)
    config.save(run_dir / "config.json")
    assert "1 + 1 epochs (CosFace (margin 0.2) warm-up)" in report.loss_comparison_table([run_dir])
    config.replace(finetune_learning_rate=3e-4).save(run_dir / "config.json")
    assert "LR 0.001 / 0.0003, 1 + 1 epochs" in report.loss_comparison_table([run_dir])
    assert "A CosFace (margin 0.2) classification warm-up runs for 1 epochs" in (
        report.optimisation_markdown({"config": config}))
    assert "restarts the schedule at a peak of 0.001" in report.optimisation_markdown(
        {"config": config.replace(finetune_learning_rate=1e-3)})
    assert "softmax (NormFace) classification warm-up" in report.optimisation_markdown(
        {"config": config.replace(warmup_head="normface", warmup_margin=0.0)})


def test_a_triplet_phase_with_the_softmax_kept_on_is_named(tmp_path):
    run_dir = _fake_run(tmp_path / "joint", "semihard", 0.9)
    config = Config.from_profile("smoke", warmup_epochs=1, epochs=1, triplet_softmax_weight=0.5)
    config.save(run_dir / "config.json")
    assert "| semi-hard + 0.5 x softmax |" in report.loss_comparison_table([run_dir])
    assert "classification loss stays on in the triplet phase at weight 0.5" in (
        report.optimisation_markdown({"config": config}))
    assert "stays on" not in report.optimisation_markdown(
        {"config": config.replace(triplet_softmax_weight=0.0)})


# --- the smoke profile, end to end ----------------------------------------------------------------

@pytest.fixture(scope="module")
def smoke_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("smoke-report")
    config = Config.from_profile("smoke")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("TINYMATCH_DATA", raising=False)  # the smoke profile must make its synthetic data
        outputs = report.run_report(config, run_dir=root / "run", reports_dir=root / "reports",
                                    figs_dir=root / "figs", pdf=CHROMIUM is not None, progress=False)
    return config, outputs


@pytest.mark.slow
def test_smoke_report_runs_every_notebook_without_errors(smoke_report):
    _, outputs = smoke_report
    for name in report.NOTEBOOKS:
        notebook = nbformat.read(outputs["notebooks"] / f"{name}.ipynb", as_version=4)
        for cell in notebook.cells:
            for output in cell.get("outputs", []):
                assert output["output_type"] != "error", f"{name}: {output.get('ename')}"
                text = output.get("text", "") if output["output_type"] == "stream" else ""
                assert "Traceback" not in text, f"{name}: {text[-500:]}"
    for stem in FIGURE_STEMS:
        assert (outputs["figs"] / f"{stem}.png").stat().st_size < 1_500_000
    for name in ("config.json", "metrics.json", "history.csv", "data_facts.json", "model_facts.json",
                 "projector/projector_config.pbtxt"):
        assert (outputs["run_dir"] / name).is_file(), name


@pytest.mark.slow
def test_smoke_report_html_is_self_contained(smoke_report):
    _, outputs = smoke_report
    page = outputs["html"].read_text()
    tags = re.findall(r"<(?:script|link|img)\b[^>]*>", page)
    assert not [tag for tag in tags if re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", tag)]
    assert report.external_resources(page) == []
    assert "mathjax" not in page.lower() and "require.min.js" not in page
    assert page.count('src="data:image/png;base64,') >= len(FIGURE_STEMS)
    for number in range(1, len(FIGURE_STEMS) + 1):
        assert f"<b>Figure {number}.</b>" in page
    assert "<math" in page  # the triplet formulas, as MathML
    assert "Traceback" not in page and 'data-mime-type="application/vnd.jupyter.stderr"' not in page
    visible = _visible_text(page)
    for placeholder in ("????", "TODO", "TBD", "XXX", "nan%", " nan ", "Error"):
        assert placeholder not in visible
    assert "def " not in visible and "import " not in visible, "code cells must be hidden"


def _visible_text(page):
    page = re.sub(r"<(style|script)\b.*?</\1>", "", page, flags=re.S | re.I)
    return re.sub(r"<[^>]+>", " ", page)


@pytest.mark.slow
def test_smoke_report_pdf(smoke_report):
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium): the PDF is not rendered")
    from pypdf import PdfReader

    _, outputs = smoke_report
    reader = PdfReader(outputs["pdf"])
    text = "\n".join(page.extract_text() for page in reader.pages)
    assert len(reader.pages) >= 2
    assert reader.pages[0].extract_text().strip(), "the first page is blank"
    assert "ROC" in text and "Confusion" in text and "Embedding Projector" in text


@pytest.mark.slow
def test_a_finished_training_run_is_reused(smoke_report):
    config, outputs = smoke_report
    config = report.prepare_data(config, outputs["run_dir"])
    assert "reused" in report.train_or_reuse(config, outputs["run_dir"])


@pytest.mark.slow
def test_smoke_profile_without_data_uses_synthetic_data_in_the_run_dir(smoke_report):
    _, outputs = smoke_report
    saved = Config.load(outputs["run_dir"] / "config.json")
    assert Path(saved.data) == (outputs["run_dir"] / report.SYNTHETIC_DATA_DIR / "tiny-imagenet-200").resolve()


def test_cli_report_accepts_runs_to_compare():
    from tinymatch.cli import build_parser

    args = build_parser().parse_args(["report", "--profile", "smoke", "--compare", "runs/a", "--compare", "runs/b"])
    assert args.compare == ["runs/a", "runs/b"] and args.profile == "smoke"
