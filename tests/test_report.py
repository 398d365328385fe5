"""The report pipeline: Markdown helpers, offline HTML, and the smoke profile rendered end to end,
writing only into its run directory."""

import base64
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import nbformat
import numpy as np
import papermill
import pytest

from tinymatch import report
from tinymatch.cli import build_parser
from tinymatch.config import Config
from tinymatch.rundir import RunDir

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS_DIR = REPO / "notebooks"
FIGURE_STEMS = [stem for stem, _ in report.FIGURES]
CHROMIUM = next((shutil.which(name) for name in report.CHROMIUM_NAMES if shutil.which(name)), None)


# --- notebooks ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", report.NOTEBOOKS)
def test_notebook_has_parameters_cell_no_outputs_and_a_py_twin(name):
    import jupytext

    notebook = nbformat.read(NOTEBOOKS_DIR / f"{name}.ipynb", as_version=4)
    tagged = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1
    # typed, so `papermill --help-notebook` shows the types
    for typed in ("config: dict = ", 'run_dir: str = ""', 'figs_dir: str = ""', "compare_run_dirs: list = ",
                  "progress: bool = "):
        assert typed in tagged[0].source, typed
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
    assert figs.ref("triplet_illustration") == "Figure 1"  # section 3 comes before the data figures
    assert figs.ref("class_distribution") == "Figure 2"
    assert figs.ref("roc") == f"Figure {FIGURE_STEMS.index('roc') + 1}"
    markdown = figs.markdown("roc", "ROC & <friends>")
    number = FIGURE_STEMS.index("roc") + 1
    assert f"<b>Figure {number}.</b> ROC &amp; &lt;friends&gt;" in markdown
    encoded = re.search(r'src="data:image/png;base64,([^"]+)"', markdown).group(1)
    assert base64.b64decode(encoded) == path.read_bytes()
    with pytest.raises(FileNotFoundError, match="samples.png"):
        figs.markdown("samples")


def test_projector_screenshots_are_embedded_with_a_palette_and_the_file_is_left_alone(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(120, 160, 3), dtype=np.uint8)  # many colours, like a screenshot
    path = tmp_path / "projector_pca.png"
    Image.fromarray(pixels).save(path)
    original = path.read_bytes()
    markdown = report.Figures(tmp_path).markdown("projector_pca")
    embedded = base64.b64decode(re.search(r'src="data:image/png;base64,([^"]+)"', markdown).group(1))
    assert len(embedded) < len(original) and path.read_bytes() == original
    with Image.open(io.BytesIO(embedded)) as image:
        assert image.mode == "P" and image.size == (160, 120)


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
    # A short model cell pointing at one legend entry per distinct recipe (the A4 page has room for
    # 9 short columns, not for the recipe), the epochs each phase ran, "AUC / P@1" pairs.
    assert ("| semihard | w8, 16-d (1) | semi-hard | 0.50 | 1 + 1 | 2 (triplet) | 0.3 | 0.910 / 0.810 "
            "| 0.910 / 0.810 |") in rows
    assert ("| hard | w8, 16-d (1) | batch-hard | 0.50 | 1 + 1 | 1 (warmup) | 0.3 | 0.880 / 0.780 "
            "| 0.880 / 0.780 |") in rows
    assert all(len(row.split(" | ")) == 9 for row in rows)
    assert ("Models: (1) compact w8 @64 px, 16-d, 6 x 4 batches, LR 0.001, budget 0 + 2 epochs "
            "(runs semihard, hard).") in text
    number = report.TABLE_NUMBERS.ref("loss_comparison")
    assert text.startswith(f"{number} compares the runs") and f"**{number}.** Runs compared" in text
    assert "run `semihard` (semi-hard triplet loss)" in text
    # A run that kept its warm-up epoch is called out, with its collapse when the distances show one.
    assert "Run `hard` kept a warm-up epoch" in text and "collapsed embedding" in text
    assert "Run `semihard` kept" not in text
    assert "second loss" in report.loss_comparison_markdown(runs[:1])
    # A published run kept without its history: its epochs and minutes are unknown, not "0 + 0".
    bare = _fake_run(tmp_path / "bare", "semihard", 0.9)
    (bare / "history.csv").unlink()
    bare_row = next(line for line in report.loss_comparison_table([bare]).splitlines()
                    if line.startswith("| bare"))
    assert "| 0.50 | n/a |" in bare_row and "0 + 0" not in bare_row
    # Several such runs: the explanation once, naming all of them.
    more = _fake_run(tmp_path / "hard2", "hard", 0.87)
    text = report.loss_comparison_markdown(runs + [more])
    assert "Runs `hard` and `hard2` kept a warm-up epoch" in text and text.count("kept a warm-up epoch") == 1
    assert text.count("collapsed embedding") == 1


def test_model_labels_name_the_blocks_a_stage():
    from tinymatch.report import tables

    one = Config.from_profile("smoke", backbone="compact", width=48, embedding_dim=1024, blocks_per_stage=1)
    two = one.replace(blocks_per_stage=2)
    assert tables.short_model_label(one) == "w48, 1024-d"
    assert tables.short_model_label(two) == "w48 x2, 1024-d"
    assert "2 blocks a stage" in tables.model_label(two) and "blocks" not in tables.model_label(one)


def test_the_precision_a_run_trained_in_is_named():
    from tinymatch.report import tables

    config = Config.from_profile("smoke")
    assert tables.model_label(config.replace(mixed_precision=True)).endswith(", mixed precision")
    assert tables.model_label(config.replace(mixed_precision="auto")).endswith(", precision chosen by timing")
    assert "precision" not in tables.model_label(config.replace(mixed_precision=False))
    timing = dict(step_seconds={"float32": 0.255, "mixed_bfloat16": 0.211}, chosen="mixed_bfloat16", seconds=31.0)
    text = report.optimisation_markdown(dict(config=config.replace(mixed_precision="auto"),
                                             training=dict(dtype_policy="mixed_bfloat16", precision_timing=timing)))
    assert ("a step took 0.255 s in float32 and 0.211 s in mixed_bfloat16, so the run trained in mixed_bfloat16 "
            "(half-precision compute") in text
    slower = dict(timing, step_seconds={"float32": 0.18, "mixed_bfloat16": 0.99}, chosen="float32")
    assert "so the run trained in float32." in report.optimisation_markdown(
        dict(config=config.replace(mixed_precision="auto"), training=dict(dtype_policy="float32",
                                                                           precision_timing=slower)))
    assert "recorded no timing" in report.optimisation_markdown(
        dict(config=config.replace(mixed_precision="auto"), training={}))
    assert "precision" not in report.optimisation_markdown(dict(config=config, training={})).lower()


def test_repeats_of_the_recipe_with_other_seeds_replace_the_one_run_caveat(tmp_path):
    def seeded(name, seed, auc, ci, loss="semihard"):
        run_dir = _fake_run(tmp_path / name, loss, auc)
        Config.from_profile("smoke", loss=loss, seed=seed).save(run_dir / "config.json")
        metrics = json.loads((run_dir / "metrics.json").read_text())
        for protocol in ("seen", "unseen"):
            metrics[protocol]["trained"]["test"].update(roc_auc_ci95=ci, confusion={"accuracy": 0.6})
            metrics[protocol]["trained"]["threshold"] = 1.0
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
        return run_dir

    main = seeded("main", 1337, 0.71, [0.70, 0.72])
    again = seeded("again", 1338, 0.73, [0.72, 0.74])
    apart = seeded("apart", 1339, 0.80, [0.79, 0.81])
    other_recipe = seeded("other", 1338, 0.71, [0.70, 0.72], loss="hard")
    run = report.read_run(main)
    assert [Path(r["run_dir"]).name for r in report.repeat_runs(run, [main, again, other_recipe])] == ["again"]
    text = report.conclusion_markdown(run, [main, again, other_recipe])
    assert "**One run.**" not in text and "**Seeds.**" in text and "`again`" in text
    assert "seed 1337: 0.710 (0.700 - 0.720); seed 1338: 0.730 (0.720 - 0.740), a spread of 0.020" in text
    assert "within the intervals (they overlap)" in text
    assert "do not overlap" in report.seed_spread_sentence(run, report.repeat_runs(run, [apart]))
    assert "**One run.**" in report.conclusion_markdown(run, [main, other_recipe])
    assert "class-bootstrap" not in text  # no error analysis in these runs
    # Scored another way (a metrics.json without the main run's score normalisation, e.g. one
    # evaluated before the setting existed, whose config.json reads today's value): not a repeat.
    scored = seeded("scored", 1338, 0.73, [0.72, 0.74])
    for run_dir, normalisation in ((main, "training-mean"), (scored, "training-mean")):
        metrics = json.loads((run_dir / "metrics.json").read_text())
        (run_dir / "metrics.json").write_text(json.dumps({**metrics, "score_normalisation": normalisation}))
    normalised = report.read_run(main)
    assert [Path(r["run_dir"]).name for r in report.repeat_runs(normalised, [again, scored])] == ["scored"]


def test_the_seed_spread_also_reads_the_class_bootstrap_intervals_when_every_run_has_them(tmp_path):
    """Seeds hold out different classes: pair intervals that miss each other can sit inside class
    intervals that overlap, and the sentence says both."""
    def seeded(name, seed, auc, pair_ci, class_ci):
        run_dir = _fake_run(tmp_path / name, "semihard", auc)
        Config.from_profile("smoke", seed=seed).save(run_dir / "config.json")
        metrics = json.loads((run_dir / "metrics.json").read_text())
        for protocol in ("seen", "unseen"):
            metrics[protocol]["trained"]["test"].update(roc_auc_ci95=pair_ci)
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
        if class_ci:
            analysis = {"protocols": {p: {"roc_auc_class_ci95": class_ci} for p in ("seen", "unseen")}}
            (run_dir / "error_analysis.json").write_text(json.dumps(analysis))
        return run_dir

    main = report.read_run(seeded("main", 1337, 0.84, [0.836, 0.851], [0.821, 0.864]))
    other = report.read_run(seeded("other", 1338, 0.87, [0.863, 0.875], [0.846, 0.889]))
    sentence = report.seed_spread_sentence(main, [other])
    assert "(they do not overlap); class-bootstrap intervals 0.821 - 0.864, 0.846 - 0.889: within the " \
           "intervals (they overlap)" in sentence
    bare = report.read_run(seeded("bare", 1339, 0.87, [0.863, 0.875], None))
    assert "class-bootstrap" not in report.seed_spread_sentence(main, [bare])


def test_a_time_budgeted_recipe_on_a_machine_of_another_speed_is_not_a_seed_repeat(tmp_path):
    """Under a time budget the machine sets the steps: the same recipe with 5x the steps (an AVX-512
    machine against an AVX2 one) is not a repeat for the seed spread; 1.28x (two seeds on one
    machine kind) is; a budgeted run without a training summary cannot be shown comparable."""
    def budgeted(name, seed, steps):
        run_dir = _fake_run(tmp_path / name, "semihard", 0.7)
        Config.from_profile("smoke", seed=seed, steps_per_epoch=0, time_budget_minutes=45.0).save(
            run_dir / "config.json")
        if steps:
            (run_dir / "training.json").write_text(json.dumps(dict(epochs_run=2, budget_plan=[
                dict(from_epoch=1, steps_per_epoch=steps, step_seconds=0.3, source="calibration")])))
        return run_dir

    main = budgeted("main", 1337, 1600)
    same_machine, fast_machine, unknown = (budgeted("same", 1338, 2050), budgeted("fast", 1338, 8000),
                                           budgeted("unknown", 1338, 0))
    run = report.read_run(main)
    assert [Path(r["run_dir"]).name for r in report.repeat_runs(run, [same_machine, fast_machine, unknown])] == [
        "same"]


def test_transfer_table_sets_scratch_beside_pretrained_with_the_imagenet_caveat(tmp_path):
    scratch = _fake_run(tmp_path / "scratch", "semihard", 0.85)
    assert "No run with a pretrained backbone" in report.transfer_markdown([scratch])
    frozen = _fake_run(tmp_path / "frozen", "semihard", 0.93)
    Config.from_profile("transfer", **{k: v for k, v in Config.from_profile("smoke").to_dict().items()
                                       if k in ("max_classes", "max_images_per_class",
                                                "unseen_train_classes", "val_fraction",
                                                "test_fraction")}).save(frozen / "config.json")
    (frozen / "training.json").write_text(json.dumps(
        {"best_epoch": 2, "finished": True, "trained_on": "cached features",
         "feature_extraction_seconds": 600.0}))
    text = report.transfer_markdown([scratch, frozen])
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines()
            if line.startswith("| scratch") or line.startswith("| frozen")}
    assert rows["scratch"] == ("| scratch | compact w8 @64 px | from scratch | images | - | 0.3 | 0.850 / 0.750 "
                               "| 0.850 / 0.750 |")
    assert rows["frozen"].startswith("| frozen | efficientnet_lite2 @128 px | ImageNet-pretrained, frozen "
                                     "| cached features | 10.0 | 0.3 | 0.930 / ")
    assert report.IMAGENET_OVERLAP_CAVEAT in text and "only augmentation" in text
    assert "reaches a test AUC of 0.930 against 0.850" in text
    # The caveat wherever a pretrained run's own figures appear.
    from tinymatch.report.tables import Figures

    for section in (report.verification_markdown, report.retrieval_markdown):
        frozen_run, scratch_run = report.read_run(frozen), report.read_run(scratch)
        for run in (frozen_run, scratch_run):
            run["metrics"] = {"threshold_method": "accuracy", "seen": {}, "unseen": {}}
        assert report.IMAGENET_OVERLAP_CAVEAT in section(frozen_run, Figures(tmp_path / "figs"))
        assert report.IMAGENET_OVERLAP_CAVEAT not in section(scratch_run, Figures(tmp_path / "figs"))
    fine_tuned = Config.from_profile("transfer", freeze_backbone_epochs=5)
    assert report.tables.backbone_training_label(fine_tuned) == (
        "ImageNet-pretrained, frozen 5 epochs then fine-tuned")


def test_a_cosface_warmup_is_named_in_the_table_and_the_text(tmp_path):
    run_dir = _fake_run(tmp_path / "cosface", "semihard", 0.9)
    config = Config.from_profile("smoke", warmup_epochs=1, epochs=1, warmup_head="cosface",
                                 warmup_margin=0.2)
    config.save(run_dir / "config.json")
    assert "1 + 1 epochs (CosFace (margin 0.2) warm-up)" in report.loss_comparison_table([run_dir])
    config.replace(finetune_learning_rate=3e-4).save(run_dir / "config.json")
    assert "LR 0.001 / 0.0003, budget 1 + 1 epochs" in report.loss_comparison_table([run_dir])
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


# --- issue 17: recipe credit, numbered tables, chance levels, contents, bibliography -----------------

def _history_run(tmp_path, name, rows, **config):
    """A run directory with a config over the smoke profile and a history.csv of `rows`:
    (phase, loss, val_auc) per epoch."""
    run_dir = tmp_path / name
    run_dir.mkdir(parents=True)
    Config.from_profile("smoke", **config).save(run_dir / "config.json")
    lines = ["epoch,phase,loss,active_fraction,mean_positive_distance,mean_negative_distance,val_auc,seconds"]
    lines += [f"{epoch},{phase},{loss},1,0.8,1.1,{auc},60" for epoch, (phase, loss, auc) in enumerate(rows, 1)]
    (run_dir / "history.csv").write_text("\n".join(lines) + "\n")
    return report.read_run(run_dir)


def test_parts_a_report_lacks_take_no_number(tmp_path):
    """No study, no ablation, no error analysis, no screenshots: the numbers close up."""
    tables = report.Tables()
    tables.leave_out(report.absent_tables({"config": None}, study=False, ablation=False))
    present = [name for name, _ in report.TABLES if name not in
               {"errors_intervals", "errors_classes", "errors_operating_points", "errors_confused",
                "ablation_auc", "ablation_p1", "study_space", "study_best", "study_recipe"}]
    assert [tables.numbers[name] for name in present] == list(range(1, len(present) + 1))
    assert "ablation_auc" not in tables.numbers
    assert report.absent_tables({"error_analysis": {"protocols": {}}}, study=True, ablation=True) == (
        [] if report.tables.backbone_costs() else ["backbone_costs"])  # the committed benchmark file
    figs = report.Figures(tmp_path)  # nothing drawn: the optional figures are left out
    expected = [stem for stem, _ in report.FIGURES if stem not in report.OPTIONAL_FIGURES]
    assert sorted(figs.numbers, key=figs.numbers.get) == expected
    assert not figs.has("study_history") and figs.has("roc")
    (tmp_path / "study_history.png").write_bytes(b"png")
    assert report.Figures(tmp_path).has("study_history")


def test_tables_are_numbered_and_captioned_like_figures():
    tables = report.Tables()
    names = [name for name, _ in report.TABLES]
    assert tables.ref(names[0]) == "Table 1" and tables.ref("config") == f"Table {len(names)}"
    assert report.TABLE_NUMBERS.ref("loss_comparison") == tables.ref("loss_comparison")
    text = tables.markdown("split", "| a |\n|:--|\n| 1 |")
    assert text.startswith(f"**Table {names.index('split') + 1}.** Images and classes") and text.endswith("| 1 |")
    assert tables.markdown("split", "| a |", caption="Mine.").startswith(
        f"**Table {names.index('split') + 1}.** Mine.\n\n| a |")
    # Every table of a section comes under its number, and the text cites that number.
    config = Config.from_profile("smoke")
    augmentation = report.augmentation_markdown({"config": config}, report.Figures("."))
    assert f"{tables.ref('augmentation')}; Figure" in augmentation.replace("ranges of ", "")
    assert f"**{tables.ref('augmentation')}.** Random augmentation" in augmentation


def test_the_threshold_free_table_has_no_accuracy_column():
    test = {"num_pairs": 10, "roc_auc": 0.8, "roc_auc_ci95": [0.7, 0.9], "eer": 0.2, "tar_at_far": {"0.01": 0.1},
            "confusion": {"accuracy": 0.75}}
    table = report.verification_table({"seen": {"trained": {"test": test}}})
    assert "accuracy" not in table and "75.0%" not in table
    assert table.splitlines()[2] == "| seen classes | trained model | 10 | 0.800 | 0.700 to 0.900 | 0.200 | 0.100 |"


def test_chance_levels_of_retrieval():
    # 150 classes of 50 test images vs 25 classes of 500: not comparable
    assert report.chance_precision_at_1([50] * 150) == pytest.approx(49 / 7499)
    assert report.chance_precision_at_1([500] * 25) == pytest.approx(499 / 12499)
    # A query alone in its class is skipped, as retrieval_metrics skips it: only the 3 count.
    assert report.chance_precision_at_1([3, 1]) == pytest.approx(2 / 3)
    assert report.chance_recall_at_k([500] * 25, 1) == pytest.approx(499 / 12499)
    assert report.chance_recall_at_k([2, 2], 3) == pytest.approx(1.0)  # k covers every other image
    assert report.chance_recall_at_k([500] * 25, 5) == pytest.approx(1 - np.prod([(12000 - i) / (12499 - i)
                                                                                   for i in range(5)]))
    assert report.tables.balanced_class_counts(7, 3) == [3, 2, 2]
    # metrics.json's counts (no evaluation arrays): the balance assumption, said so in the text
    run = {"run_dir": Path("/nonexistent"), "config": Config.from_profile("smoke"), "metrics": {
        "seen": {"num_test_images": 7500, "num_test_classes": 150,
                 "trained": {"retrieval": {"k": 5, "precision_at_1": 0.2, "recall_at_k": 0.4, "map_at_r": 0.06,
                                           "num_queries": 7500}}},
        "unseen": {"num_test_images": 12500, "num_test_classes": 25,
                   "trained": {"retrieval": {"k": 5, "precision_at_1": 0.4, "recall_at_k": 0.6, "map_at_r": 0.09,
                                             "num_queries": 12500}}}}}
    chance = report.retrieval_chance(run)
    assert chance["seen"]["precision_at_1"] == pytest.approx(49 / 7499) and chance["seen"]["source"] == "balanced"
    text = report.retrieval_markdown(run, report.Figures("."))
    assert "P@1 of 0.007" in text and "P@1 of 0.040" in text and "not comparable" in text
    assert "assume every class has the same number" in text
    assert "| seen classes | trained model | 7,500 | 0.200 | 0.400 | 0.060 | 0.007 |" in text


def test_the_credit_names_the_warmup_or_reads_as_pure_triplet_training(tmp_path):
    warm = _history_run(tmp_path, "warm", [("warmup", 4.6, 0.70), ("warmup", 3.9, 0.78), ("warmup", 3.1, 0.80),
                                           ("triplet", 0.48, 0.79), ("triplet", 0.47, 0.805)],
                        warmup_epochs=3, epochs=2, finetune_learning_rate=3e-4)
    assert "softmax (NormFace) classification warm-up, then the semi-hard triplet loss" in report.title_block(warm)
    assert report.training_recipe(warm["config"], report.run_history(warm)) == (
        "3 epochs of softmax (NormFace) classification warm-up, then 2 epochs of the semi-hard triplet loss "
        "with online semi-hard mining")
    loss = report.loss_markdown(warm)
    assert "**Classification warm-up.** Most epochs" in loss and "NormFace [3]" in loss and "[5, 7]" in loss
    assert "$$\\mathcal{L}_{\\text{warm-up}}" in loss and "lower peak, 0.0003" in loss
    sentences = " ".join(report.phase_auc_sentences(report.run_history(warm)))
    assert "0.800 when the warm-up ended (epoch 3) and 0.805 after the last triplet epoch (epoch 5)" in sentences
    assert "raised it by 0.005" in sentences
    intro = report.introduction_summary(warm, report.Figures("."))
    assert "Most of the training is therefore classification: 3 of its 5 epochs" in intro
    # still rising at the end: budget-bound
    assert "budget-bound" in report.budget_sentence(report.run_history(warm))
    assert "[8]" in report.budget_sentence(report.run_history(warm))

    lowered = _history_run(tmp_path, "lowered", [("warmup", 4.6, 0.80), ("triplet", 0.48, 0.75),
                                                 ("triplet", 0.47, 0.74)], warmup_epochs=1, epochs=2)
    sentences = " ".join(report.phase_auc_sentences(report.run_history(lowered)))
    assert "the triplet phase **lowered** it, by 0.060" in sentences
    assert "the model kept is the warm-up classifier's embedding" in sentences
    assert "budget-bound" not in report.budget_sentence(report.run_history(lowered))

    # The transfer run's shape: the triplet phase peaks mid-way, above the warm-up, and ends where
    # the warm-up ended (a difference under 0.0005 is not "lowered by 0.000").
    peaked = _history_run(tmp_path, "peaked", [("warmup", 2.0, 0.9174), ("warmup", 1.9, 0.9141),
                                               ("triplet", 0.45, 0.9189), ("triplet", 0.44, 0.9139)],
                          warmup_epochs=2, epochs=2)
    sentences = " ".join(report.phase_auc_sentences(report.run_history(peaked)))
    assert "left it unchanged to three decimals" in sentences and "0.000" not in sentences
    assert "Its best epoch was epoch 3 (0.919), above every warm-up epoch: that is the model kept." in sentences

    pure = _history_run(tmp_path, "pure", [("triplet", 0.49, 0.6), ("triplet", 0.45, 0.7)])
    assert report.report_title(pure["config"]).endswith("trained by the semi-hard triplet loss")
    assert "warm-up" not in report.title_block(pure)
    assert report.training_recipe(pure["config"], report.run_history(pure)) == (
        "the semi-hard triplet loss with online semi-hard mining alone, for 2 epochs (no classification warm-up)")
    assert "**no classification warm-up**: every epoch minimises the triplet loss" in report.loss_markdown(pure)
    assert "Every epoch minimised the triplet loss" in " ".join(report.phase_auc_sentences(report.run_history(pure)))
    assert "classification" not in report.introduction_summary(pure, report.Figures(".")).replace(
        "no classification warm-up", "")


def test_training_text_marks_the_phases_and_a_flat_series(tmp_path):
    run = _history_run(tmp_path, "run", [("warmup", 4.6, 0.70), ("triplet", 0.48, 0.79)], warmup_epochs=1,
                       epochs=1)
    figs = report.Figures(".")
    text = report.training_markdown(run, figs)
    assert "was 1.000 in every epoch" in text and f"**{report.TABLE_NUMBERS.ref('phases')}.**" in text
    assert "| classification warm-up | 1-1 | 1.0 | 0.700 | 0.700 (epoch 1) |" in text
    caption = report.training_curves_caption(run)
    assert "kept (best) epoch, 2; the dashed line the end of the warm-up" in caption
    assert "the same, 1.000, in every epoch" in caption


def test_table_of_contents_is_built_from_the_headings():
    page = ('<h1>Title</h1><p>run</p><div><h2>1. Introduction</h2><p>x</p><h3>Data &amp; split</h3>'
            '<h3>Data &amp; split</h3></div><h2 id="kept">2. Results</h2>')
    out = report.add_table_of_contents(page)
    toc = out[out.index("<nav"):out.index("</nav>")]
    assert out.index("<nav") < out.index("<h2") and out.index("<h1>") < out.index("<nav")
    assert re.findall(r'href="#([^"]+)"', toc) == ["section-1-introduction", "section-data-split",
                                                   "section-data-split-2", "kept"]
    assert '<h3 id="section-data-split-2">' in out and '<h2 id="kept">' in out
    assert "<li><a href=\"#section-1-introduction\">1. Introduction</a><ol>" in toc  # h3 nested in its h2
    assert "Data &amp; split" in toc
    assert report.add_table_of_contents("<p>no headings</p>") == "<p>no headings</p>"
    assert report.external_resources(out) == []


def test_bibliography_is_numbered_and_every_reference_is_cited():
    bibliography = report.bibliography_markdown()
    assert bibliography.splitlines()[0].startswith("1. F. Schroff") and len(bibliography.splitlines()) == len(
        report.REFERENCES)
    assert report.cite("musgrave", "zhai") == "[5, 7]"
    prose = (NOTEBOOKS_DIR / "report.py").read_text()
    library = (REPO / "lib" / "tinymatch" / "report" / "text.py").read_text()
    cited = {int(n) for group in re.findall(r"\[(\d+(?:, \d+)*)\]", prose) for n in group.split(", ")}
    cited |= {report.text.REFERENCE_NUMBERS[key] for key in re.findall(r"cite\(((?:'[a-z]+'(?:, )?)+)\)", library)
              for key in re.findall(r"'([a-z]+)'", key)}
    assert cited == set(range(1, len(report.REFERENCES) + 1))


def test_reproducibility_names_versions_stage_times_and_one_command(tmp_path):
    run = _history_run(tmp_path, "cpu-x", [("triplet", 0.49, 0.6), ("triplet", 0.45, 0.7)])
    run_dir = run["run_dir"]
    (run_dir / "environment.json").write_text(json.dumps(
        {"cpu": "Test CPU", "cpu_count": 2, "gpus": [], "keras": "3.0", "numpy": "2.0", "platform": "Linux",
         "python": "3.11.7", "tensorflow": "2.21.0", "tinymatch": "0.1.0"}))
    (run_dir / "training.json").write_text(json.dumps({"wall_seconds": 150.0, "best_epoch": 2}))
    (run_dir / "notebooks").mkdir()
    (run_dir / "notebooks" / "03_evaluate.ipynb").write_text(json.dumps(
        {"metadata": {"papermill": {"duration": 42.5}}, "cells": []}))
    run = report.read_run(run_dir)
    assert report.stage_seconds(run) == [("training epochs (sum)", "history.csv", 120.0),
                                         ("training, wall clock", "training.json", 150.0),
                                         ("notebook `03_evaluate` (evaluation)", "notebooks/03_evaluate.ipynb", 42.5)]
    text = report.reproducibility_markdown(run, [run_dir, tmp_path / "other"])
    assert "2 logical cores of Test CPU, no GPU" in text and "TensorFlow 2.21.0" in text and "**Seed:** 1337" in text
    assert "| training, wall clock | `training.json` | 2.5 min (150 s) |" in text
    assert "`make report PROFILE=smoke RUN_DIR=runs/cpu-x COMPARE=\"runs/other\"`" in text
    assert report.rerender_command(run, [run_dir], tmp_path / "s1", tmp_path / "abl") == \
        "make report PROFILE=smoke RUN_DIR=runs/cpu-x STUDY=runs/studies/s1 ABLATION=runs/abl"
    changed = {**run, "config": run["config"].replace(margin=0.3)}
    assert report.rerender_command(changed) == "tinymatch report --config runs/cpu-x/config.json --out runs/cpu-x"
    conclusion = report.conclusion_markdown(run)
    assert "**Budget.**" in conclusion and "**One run.**" in conclusion


# --- setup, publish, the CLI ------------------------------------------------------------------------

def test_setup_takes_a_profile_name_or_a_partial_config_over_its_profile(tmp_path):
    cfg, run_path, figs = report.setup("smoke", tmp_path / "run")  # papermill -p config smoke
    assert cfg == Config.from_profile("smoke") and run_path == tmp_path / "run"
    assert figs == RunDir(run_path).figs and run_path.is_dir()
    # papermill -y '{config: {profile: smoke, max_classes: 10, ...}}': the other fields stay the smoke profile's
    cfg, _, _ = report.setup({"profile": "smoke", "max_classes": 10, "unseen_train_classes": 6}, tmp_path / "run")
    assert cfg.max_classes == 10 and cfg.width == Config.from_profile("smoke").width
    cfg, _, figs = report.setup({"profile": "smoke"}, tmp_path / "run", tmp_path / "elsewhere")
    assert figs == tmp_path / "elsewhere"
    with pytest.raises(ValueError, match="no_such_field"):
        report.setup({"profile": "smoke", "no_such_field": 1}, tmp_path / "run")


def test_the_default_run_directory_is_ignored_by_git_wherever_a_notebook_runs():
    if _git_status() is None:
        pytest.skip("not a git checkout")
    run_dir = report.default_run_dir(Config.from_profile("smoke"))
    assert run_dir.parts[0] == "runs"
    for where in (Path("."), Path("notebooks")):  # JupyterLab and papermill run from either
        probe = (where / run_dir / "figs" / "roc.png").as_posix()
        checked = subprocess.run(["git", "check-ignore", "-q", probe], cwd=REPO)
        assert checked.returncode == 0, f"{probe} is not ignored by git"


def _rendered_run(run_dir, figures=("roc", "samples"), pdf=True):
    paths = RunDir(run_dir)
    paths.figs.mkdir(parents=True)
    for stem in figures:
        _png(paths.figs / f"{stem}.png")
    paths.report_html.write_text("<html>report</html>")
    if pdf:
        paths.report_pdf.write_bytes(b"%PDF-1.4")
    return paths


def test_publish_copies_the_report_and_figures_and_nothing_else(tmp_path):
    paths = _rendered_run(tmp_path / "run")
    (tmp_path / "figs").mkdir()
    (tmp_path / "figs" / "kept.png").write_bytes(b"old figure")
    published = report.publish(paths.path, tmp_path / "reports", tmp_path / "figs")
    assert published["html"].read_text() == "<html>report</html>"
    assert published["pdf"].read_bytes() == b"%PDF-1.4"
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == ["kept.png", "roc.png", "samples.png"]
    assert (tmp_path / "figs" / "roc.png").read_bytes() == (paths.figs / "roc.png").read_bytes()
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == ["report.html", "report.pdf"]


def test_publish_keeps_the_study_and_ablation_files_the_report_read(tmp_path):
    """Run directories are not committed: the study's study.db and the ablation's ablation.json go
    beside the published report, so a later re-render can pass them again (--study reports/study)."""
    paths = _rendered_run(tmp_path / "run")
    study, ablation = tmp_path / "runs" / "studies" / "s", tmp_path / "runs" / "ablation"
    study.mkdir(parents=True), ablation.mkdir(parents=True)
    (study / "study.db").write_bytes(b"SQLite format 3")
    (study / "trials").mkdir()  # trial run directories stay behind
    (ablation / "ablation.json").write_text("{}")
    reports = tmp_path / "reports"
    published = report.publish(paths.path, reports, tmp_path / "figs", study_dir=study, ablation_dir=ablation)
    assert published["study"] == reports / "study" / "study.db"
    assert published["study"].read_bytes() == b"SQLite format 3"
    assert published["ablation"].read_text() == "{}"
    assert sorted(p.name for p in (reports / "study").iterdir()) == ["study.db"]
    # re-rendering from the published copies publishes them onto themselves: kept, not emptied
    again = report.publish(paths.path, reports, tmp_path / "figs", study_dir=reports / "study",
                           ablation_dir=reports / "ablation")
    assert again["study"].read_bytes() == b"SQLite format 3" and again["ablation"].read_text() == "{}"
    with pytest.raises(FileNotFoundError, match="ablation.json"):
        report.publish(paths.path, reports, tmp_path / "figs", ablation_dir=tmp_path / "nowhere")


def test_publish_refuses_a_run_without_a_rendered_report(tmp_path):
    with pytest.raises(FileNotFoundError, match="report.html"):
        report.publish(tmp_path / "empty", tmp_path / "reports", tmp_path / "figs")
    assert not (tmp_path / "reports").exists() and not (tmp_path / "figs").exists()


def test_cli_report_publishes_only_when_asked():
    args = build_parser().parse_args(["report", "--profile", "smoke", "--compare", "runs/a", "--compare", "runs/b"])
    assert args.compare == ["runs/a", "runs/b"] and args.profile == "smoke" and not args.publish
    args = build_parser().parse_args(["report", "--publish", "--reports-dir", "out", "--figs-dir", "pngs"])
    assert args.publish and args.reports_dir == "out" and args.figs_dir == "pngs"


def test_cli_report_writes_the_run_dir_and_publishes_with_publish(tmp_path, monkeypatch, capsys):
    from tinymatch import cli

    def fake_run_report(config, run_dir=None, pdf=True, progress=True, **_):
        paths = _rendered_run(run_dir, pdf=pdf)
        return {"run_dir": paths.path, "html": paths.report_html}

    monkeypatch.setattr(report, "run_report", fake_run_report)
    reports, figs = tmp_path / "reports", tmp_path / "figs"
    common = ["report", "--profile", "smoke", "--no-pdf", "--reports-dir", str(reports), "--figs-dir", str(figs)]
    assert cli.main(common + ["--out", str(tmp_path / "run")]) == 0
    assert not reports.exists() and not figs.exists()  # nothing published unless asked
    assert cli.main(common + ["--out", str(tmp_path / "run2"), "--publish"]) == 0
    assert (reports / "report.html").is_file() and sorted(p.name for p in figs.iterdir()) == ["roc.png", "samples.png"]
    assert f"published html: {reports / 'report.html'}" in capsys.readouterr().out


def _epoch(number, phase="warmup", auc=0.6):
    return dict(epoch=number, phase=phase, loss=7.25, accuracy=0.1, active_fraction=0.5,
                mean_positive_distance=0.4, mean_negative_distance=0.5, val_auc=auc, lr=0.004, seconds=171.4)


def test_epoch_echo_prints_each_new_epoch_once_and_not_the_earlier_ones(tmp_path):
    """While 02_train runs, the console gets one line per epoch that history.csv gains (the
    kernel's own output goes to the notebook); epochs of a resumed run's earlier session are not
    repeated, and the epoch written just before the notebook ends is not lost."""
    import time

    from tinymatch.report.pipeline import EpochEcho
    from tinymatch.rundir import write_history

    write_history(tmp_path, [_epoch(1)])
    lines = []
    with EpochEcho(tmp_path, interval=0.01, write=lines.append):
        write_history(tmp_path, [_epoch(1), _epoch(2, auc=0.65)])
        deadline = time.monotonic() + 10
        while not lines and time.monotonic() < deadline:
            time.sleep(0.01)
        write_history(tmp_path, [_epoch(1), _epoch(2, auc=0.65), _epoch(3, "triplet", 0.7)])
    assert lines == ["    epoch 2 (warmup): loss 7.2500, val AUC 0.6500, lr 0.004, 171 s",
                     "    epoch 3 (triplet): loss 7.2500, val AUC 0.7000, lr 0.004, 171 s"]


def test_epoch_echo_is_silent_when_disabled_or_without_a_history(tmp_path):
    from tinymatch.report.pipeline import EpochEcho, epoch_line
    from tinymatch.rundir import write_history

    lines = []
    with EpochEcho(tmp_path / "no-run-yet", interval=0.01, write=lines.append) as echo:
        assert echo.poll() == 0
    with EpochEcho(tmp_path, enabled=False, write=lines.append):
        write_history(tmp_path, [_epoch(1)])
    assert lines == []
    assert epoch_line({"epoch": 1.0, "phase": "triplet", "val_auc": ""}) == (
        "    epoch 1 (triplet): loss -, val AUC -, lr -, - s")


# --- the smoke profile, end to end ----------------------------------------------------------------

# Paths other people may be editing while the suite runs; the report never writes there.
_SOURCES = ("lib/", "tests/", "benchmarks/", ".ci/", "README.md", "LICENSE", "pyproject.toml", "Makefile",
            ".gitignore", "environment.yml")


def _git_status():
    """`git status --porcelain` entries outside the sources (None outside a git checkout)."""
    result = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=REPO,
                            capture_output=True, text=True)
    if result.returncode != 0:
        return None
    return {line for line in result.stdout.splitlines() if not line[3:].startswith(_SOURCES)}


@pytest.fixture(scope="module")
def smoke_study(tmp_path_factory, synthetic_dir, synthetic_dataset):
    """A finished 3-trial study of 2-epoch smoke runs (learning rate and margin searched)."""
    from tinymatch import tune
    from tinymatch.search_space import FLOAT, Dimension

    study_dir = tmp_path_factory.mktemp("study")
    config = Config.from_profile("smoke", data=str(synthetic_dir), epochs=2, steps_per_epoch=1,
                                 early_stopping_patience=0, max_positive_pairs=50)
    space = (Dimension("learning_rate", FLOAT, 1e-3, 1e-2, log=True), Dimension("margin", FLOAT, 0.05, 0.5))
    tune.run_study("smoke", config, study_dir=study_dir, trials=3, trial_minutes=0, progress=False,
                   space=space, dataset=synthetic_dataset)
    return study_dir


@pytest.fixture(scope="module")
def smoke_report(tmp_path_factory, smoke_study, smoke_ablation):
    root = tmp_path_factory.mktemp("smoke-report")
    config = Config.from_profile("smoke")
    before = _git_status()
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("TINYMATCH_DATA", raising=False)  # the smoke profile must make its synthetic data
        outputs = report.run_report(config, run_dir=root / "run", pdf=CHROMIUM is not None, progress=False,
                                    study_dir=smoke_study, ablation_dir=smoke_ablation[0])
    return config, outputs, before, _git_status()


@pytest.mark.slow
def test_smoke_report_writes_only_into_its_run_directory(smoke_report):
    _, outputs, before, after = smoke_report
    paths = RunDir(outputs["run_dir"])
    assert outputs["html"] == paths.report_html and paths.report_html.is_file()
    if CHROMIUM is not None:
        assert outputs["pdf"] == paths.report_pdf and paths.report_pdf.is_file()
    assert outputs["figs"] == paths.figs and outputs["notebooks"] == paths.notebooks
    assert sorted(p.stem for p in paths.figs.glob("*.png")) == sorted(FIGURE_STEMS)
    assert sorted(p.stem for p in paths.notebooks.glob("*.ipynb")) == sorted(report.NOTEBOOKS)
    assert (paths.projector / "projector_config.pbtxt").is_file()
    assert before is None or after == before, f"the report changed the repository: {sorted(after ^ before)}"


@pytest.mark.slow
def test_smoke_report_runs_every_notebook_without_errors(smoke_report):
    _, outputs, _, _ = smoke_report
    for name in report.NOTEBOOKS:
        notebook = nbformat.read(outputs["notebooks"] / f"{name}.ipynb", as_version=4)
        for cell in notebook.cells:
            for output in cell.get("outputs", []):
                assert output["output_type"] != "error", f"{name}: {output.get('ename')}"
                text = output.get("text", "") if output["output_type"] == "stream" else ""
                assert "Traceback" not in text, f"{name}: {text[-500:]}"
    for stem in FIGURE_STEMS:
        assert (outputs["figs"] / f"{stem}.png").stat().st_size < 1_500_000
    paths = RunDir(outputs["run_dir"])
    for path in (paths.config, paths.metrics, paths.history, paths.data_facts, paths.model_facts):
        assert path.is_file(), path


@pytest.mark.slow
def test_smoke_report_html_is_self_contained(smoke_report):
    _, outputs, _, _ = smoke_report
    page = outputs["html"].read_text()
    tags = re.findall(r"<(?:script|link|img)\b[^>]*>", page)
    assert not [tag for tag in tags if re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", tag)]
    assert report.external_resources(page) == []
    assert "mathjax" not in page.lower() and "require.min.js" not in page
    drawn = report.Figures(outputs["figs"]).numbers  # every optional part was given
    assert set(drawn) == set(FIGURE_STEMS) - (set() if CHROMIUM else {"projector_pca", "projector_tsne"})
    assert page.count('src="data:image/png;base64,') >= len(drawn)
    for number in range(1, len(drawn) + 1):
        assert f"<b>Figure {number}.</b>" in page
    assert "<math" in page  # the triplet formulas, as MathML
    assert "Traceback" not in page and 'data-mime-type="application/vnd.jupyter.stderr"' not in page
    visible = _visible_text(page)
    for placeholder in ("????", "TODO", "TBD", "XXX", "nan%", " nan ", "Error:"):
        assert placeholder not in visible
    assert not re.search(r"\b[A-Z]\w*Error\b", visible)  # an exception's name (not "Error analysis")
    assert "def " not in visible and "import " not in visible, "code cells must be hidden"
    # one TensorBoard for scalars and projector: the export is inside the run's log directory
    assert "tensorboard --logdir run/tensorboard" in visible and "run/projector" not in visible


@pytest.mark.slow
def test_smoke_report_has_every_part_and_cites_the_run_files(smoke_report, smoke_ablation):
    """Issue 17's parts are there, and the numbers they print are the ones in the JSON files."""
    _, outputs, _, _ = smoke_report
    visible = " ".join(_visible_text(outputs["html"].read_text()).split())
    run = report.read_run(outputs["run_dir"])
    for part in ("Error analysis", "Ablation: what each part of the recipe contributes", "Tuning study",
                 "Conclusion and limitations", "Compute and reproducibility", "Bibliography",
                 "Ablation: pair ROC AUC", "Tuning study: the search space",
                 "Test pair AUC with two 95% intervals", "Two operating points per protocol",
                 "Schroff", "Koch"):
        assert part in visible, part
    if CHROMIUM:
        assert "Embedding Projector on this run's export, screenshot by headless Chromium" in visible
    executed = nbformat.read(outputs["notebooks"] / "report.ipynb", as_version=4)
    first = next(c for c in executed.cells if "save_study_figures" in c.source)
    assert not [o for o in first.outputs if "image/png" in o.get("data", {})]  # drawn, not shown there
    metrics, errors = run["metrics"], run["error_analysis"]
    # one threshold: the tables, the text and the shipped model's
    tau = report.fmt(metrics["threshold"])
    assert f"τ = {tau}" in visible and metrics["siamese"]["threshold"] == metrics["threshold"]
    stated = set(re.findall(r"τ = ([0-9.]+)", visible))
    assert stated <= {tau, report.fmt(metrics["siamese"]["threshold_from_training"])}
    for protocol in ("seen", "unseen"):
        auc = metrics[protocol]["trained"]["test"]["roc_auc"]
        assert report.fmt(auc) in visible
        low, high = errors["protocols"][protocol]["roc_auc_class_ci95"]
        assert f"{report.fmt(low)} - {report.fmt(high)}" in visible
        chance = errors["protocols"][protocol]["retrieval_chance"]["precision_at_1"]
        assert f"against chance {report.fmt(chance)}" in visible
    for variant in smoke_ablation[3]["variants"]:
        assert f"{report.fmt(variant['mean']['val_auc'])} +- {report.fmt(variant['sd']['val_auc'])}" in visible


def _visible_text(page):
    page = re.sub(r"<(style|script)\b.*?</\1>", "", page, flags=re.S | re.I)
    return re.sub(r"<[^>]+>", " ", page)


@pytest.mark.slow
def test_smoke_report_pdf(smoke_report):
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium): the PDF is not rendered")
    from pypdf import PdfReader

    _, outputs, _, _ = smoke_report
    reader = PdfReader(outputs["pdf"])
    text = "\n".join(page.extract_text() for page in reader.pages)
    assert len(reader.pages) >= 2
    assert reader.pages[0].extract_text().strip(), "the first page is blank"
    assert "ROC" in text and "Confusion" in text and "Embedding Projector" in text


@pytest.mark.slow
def test_a_finished_training_run_is_reused(smoke_report):
    config, outputs, _, _ = smoke_report
    assert "reused" in report.train_or_reuse(config, outputs["run_dir"])


@pytest.mark.slow
def test_smoke_profile_without_data_uses_synthetic_data_outside_the_run_dir(smoke_report):
    _, outputs, _, _ = smoke_report
    paths = RunDir(outputs["run_dir"])
    assert Config.load(paths.config).data == ""
    assert json.loads(paths.data_facts.read_text())["synthetic"] is True
    assert not list(paths.path.rglob("wnids.txt")), "synthetic data was written into the run directory"
    assert "synthetic stand-in" in outputs["html"].read_text()


@pytest.mark.slow
def test_a_notebook_run_from_notebooks_writes_only_into_its_run_dir(tmp_path):
    """papermill run from notebooks/ (as JupyterLab would), a partial config layered over smoke."""
    before = _git_status()
    run_dir = tmp_path / "run"
    papermill.execute_notebook(str(NOTEBOOKS_DIR / "01_data.ipynb"), str(tmp_path / "01_data.ipynb"),
                               parameters={"config": {"profile": "smoke", "max_classes": 10,
                                                      "unseen_train_classes": 6},
                                           "run_dir": str(run_dir)},
                               cwd=str(NOTEBOOKS_DIR), kernel_name="python3", progress_bar=False)
    facts = json.loads(RunDir(run_dir).data_facts.read_text())
    assert facts["num_classes"] == 10 and facts["synthetic"] is True
    assert sorted(p.stem for p in RunDir(run_dir).figs.glob("*.png")) == ["augmentation", "class_distribution",
                                                                          "samples"]
    after = _git_status()
    assert before is None or after == before, f"the notebook changed the repository: {sorted(after ^ before)}"


def test_a_study_or_ablation_directory_without_its_file_fails_before_any_notebook(tmp_path):
    config = Config.from_profile("smoke")
    with pytest.raises(FileNotFoundError, match="--study .*study.db"):
        report.run_report(config, run_dir=tmp_path / "run", pdf=False, progress=False, study_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="--ablation .*ablation.json"):
        report.run_report(config, run_dir=tmp_path / "run", pdf=False, progress=False, ablation_dir=tmp_path)
    assert not (tmp_path / "run").exists()


def test_a_time_budgeted_run_says_how_its_steps_were_chosen():
    from tinymatch.report.text import optimisation_markdown, time_budget_sentence

    config = Config.from_profile("smoke", steps_per_epoch=0, time_budget_minutes=45.0)
    training = dict(steps_per_epoch=123, epochs_run=2, budget_exhausted=False,
                    calibration=dict(step_seconds=1.234, trace_seconds=9.0, epoch_overhead_seconds=6.54,
                                     calibration_seconds=30.0))
    text = optimisation_markdown(dict(config=config, training=training))
    assert "at most 2 epochs of as many steps as the time budget allows (below)" in text
    assert "a budget of 45 minutes of wall time for its 2 epochs" in text
    assert "took 1.23 s, an epoch's validation and checkpoint 6.5 s) and set 123 steps per epoch" in text
    assert "ran out" not in text and "planned again" not in text
    plan = [dict(from_epoch=1, steps_per_epoch=150, step_seconds=1.234, source="calibration"),
            dict(from_epoch=2, steps_per_epoch=123, step_seconds=1.5, source="measured epochs")]
    replanned = time_budget_sentence(config, dict(training, budget_plan=plan))
    assert "set 150 steps per epoch" in replanned
    assert "From epoch 2 (a new phase) it planned again from the seconds its finished epochs had taken " \
           "(1.50 s a step): 123 steps per epoch." in replanned
    assert "absorbed the whole shortfall" not in replanned  # 123 of 150 steps: not squeezed
    squeezed = time_budget_sentence(config, dict(training, budget_plan=[
        dict(plan[0], steps_per_epoch=549, step_seconds=0.2569), dict(plan[1], steps_per_epoch=258, step_seconds=0.292)]))
    assert ("**That is 47% of the 549 steps an epoch planned before:** the earlier epochs ran 14% slower a step "
            "than planned, and the budget is re-planned only when a phase starts") in squeezed
    from tinymatch.report.text import _squeezed_phase_sentence
    unknown_speed = _squeezed_phase_sentence(dict(steps_per_epoch=549), dict(steps_per_epoch=258))
    assert "the earlier epochs ran slower than planned, and the budget is re-planned" in unknown_speed
    # runs since 7 Dec 2026 also re-plan within a phase whose pace is off
    within = time_budget_sentence(config, dict(training, replan_tolerance=0.05, budget_plan=[
        dict(plan[0], steps_per_epoch=549, step_seconds=0.2569),
        dict(plan[1], steps_per_epoch=500, step_seconds=0.277, within_phase=True)]))
    assert ("After epoch 1 the pace was off the plan by more than 5%: from epoch 2 it planned again from "
            "the seconds its recent epochs had taken (0.28 s a step), 500 steps per epoch, and rebuilt the "
            "phase's learning-rate schedule for its new length.") in within
    assert "a new phase" not in within
    squeezed_now = _squeezed_phase_sentence(dict(steps_per_epoch=549), dict(steps_per_epoch=258),
                                            replans_within_phase=True)
    assert "slower than planned, and this phase absorbed what the earlier ones overran" in squeezed_now
    assert "only when a phase starts" not in squeezed_now
    spent = time_budget_sentence(config, dict(training, budget_exhausted=True, epochs_run=1))
    assert "The budget ran out before the last epoch: the run stopped after 1 epoch." in spent
    assert time_budget_sentence(Config.from_profile("smoke"), training) == ""
    # runs since the budget covers the whole call say so, and how much of it they used
    whole = time_budget_sentence(config, dict(training, tail_reserve_seconds=60.0,
                                              budget_used_seconds=2622.0))
    assert ("a budget of 45 minutes of wall time for the whole training (loading the data, 2 epochs, "
            "and 60 s kept for the final threshold" in whole)
    assert "In all it used 43.7 of the 45 minutes." in whole


def test_the_steps_a_budgeted_run_took_come_from_its_plan():
    from tinymatch.report.text import budget_steps

    plan = [{"from_epoch": 1, "steps_per_epoch": 108}, {"from_epoch": 13, "steps_per_epoch": 157}]
    assert budget_steps({"budget_plan": plan, "epochs_run": 17}) == 12 * 108 + 5 * 157
    assert budget_steps({"budget_plan": plan, "epochs_run": 10}) == 10 * 108  # stopped in the first phase
    assert budget_steps({"epochs_run": 17}) is None


def test_backbone_costs_come_from_the_benchmark_file(tmp_path):
    from tinymatch.report.text import backbone_costs_markdown

    costs = {"measured": "2026-12-01", "environment": {"cpu": "Test CPU", "cpu_count": 2},
             "results": [dict(backbone="compact", params=2_043_008, forward_mflop_per_image=69.4, images_per_s=100.0),
                         dict(backbone="resnet50", params=23_800_000, forward_mflop_per_image=633.0, images_per_s=6.0),
                         dict(backbone="vgg16", error="timeout after 600s")]}
    path = tmp_path / "backbones.json"
    path.write_text(json.dumps(costs))
    text = backbone_costs_markdown(path)
    assert "2 logical cores of Test CPU, on 2026-12-01" in text
    assert "from 6 training images a second (`resnet50`) to 100 (`compact`)" in text
    # passes over the 60,000 training images in the cpu profile's budget: 100 img/s x 44 min / 60,000
    from tinymatch.report.tables import BUDGET_MINUTES
    assert BUDGET_MINUTES == Config.from_profile("cpu").time_budget_minutes
    assert f"| `compact` @64 px | 2.0 | 69 | 100 | {100 * BUDGET_MINUTES * 60 / 60_000:.1f} |" in text
    assert "| `resnet50` @64 px | 23.8 | 633 | 6 | 0.3 |" in text and "vgg16" not in text
    assert report.TABLE_NUMBERS.ref("backbone_costs") in text
    assert backbone_costs_markdown(tmp_path / "absent.json") == ""
    training = {"budget_plan": [{"from_epoch": 1, "steps_per_epoch": 10}], "epochs_run": 2,
                "global_batch": 128, "epoch_seconds": 256.0}
    assert "this run trained at 10 images a second" in backbone_costs_markdown(path, run={"training": training})


def test_a_normalised_score_is_described_where_the_distance_and_threshold_are(tmp_path):
    run = _history_run(tmp_path, "normalised", [("triplet", 0.49, 0.6), ("triplet", 0.45, 0.7)])
    plain = report.architecture_markdown(run)
    assert "normalised" not in plain and "same plain L2" in report.loss_markdown(run)
    run["metrics"] = {"score_normalisation": "training-mean", "training_mean_images": 15000}
    text = report.architecture_markdown(run)
    assert "| distance | `L2`, normalised by the mean embedding of 15,000 training images (below) |" in text
    assert "$a \\cdot b - (a \\cdot m + b \\cdot m)/2$" in text and "the two baselines by their plain distance" in text
    assert "normalised by the training images' mean embedding" in report.loss_markdown(run)
    assert "same plain L2" not in report.loss_markdown(run)
