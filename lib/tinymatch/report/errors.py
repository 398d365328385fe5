"""The report's error-analysis part: where the model fails, from `error_analysis.json`.

`analyse_and_draw` (notebook 03) runs `tinymatch.error_analysis.analyse_run` on the saved pair
distances and draws the part's figures; `error_analysis_markdown` (the report) writes the tables
and prose from the JSON alone, so every number it prints is one the file holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from tinymatch import error_analysis, plots
from tinymatch.report.inputs import evaluation_arrays
from tinymatch.report.tables import ERROR_FIGURES, PROTOCOL_NAMES, TABLE_NUMBERS, fmt, markdown_table, percent

ANALYSED_PROTOCOL = "seen"  # the protocol the image figures show (its classes were trained on)


def analyse_and_draw(run_dir, dataset, figs_dir, *, protocol: str = ANALYSED_PROTOCOL) -> dict:
    """error_analysis.json for every evaluated protocol, and the figures of
    `tables.ERROR_FIGURES` (their captions are in `tables.FIGURES`)."""
    analysis = error_analysis.analyse_run(run_dir, dataset.labels, class_names=dataset.class_names)
    figs_dir = Path(figs_dir)
    protocols = analysis["protocols"]
    curves, points = {}, {}
    for name, part in protocols.items():
        if name == "official-val" or "operating_points" not in part:
            continue
        arrays = evaluation_arrays(run_dir, name)
        curves[name] = (arrays["roc_far"], arrays["roc_tar"], part["roc_auc"])
        for kind, label in (("accuracy", "max. accuracy"), ("far", f"FAR {part['operating_points']['target_far']:g}")):
            test = part["operating_points"][kind]["test"]
            points[f"{name}, {label}"] = (test["far"], test["tar"])
    plots.save_fig(plots.roc_log_far(curves, points), figs_dir / "roc_log_far.png")
    matrices = {f"{name}, {label}": part["operating_points"][kind]["test"]["matrix"]
                for name, part in protocols.items() if "operating_points" in part
                for kind, label in (("accuracy", "max. accuracy"), ("far", "FAR target"))}
    plots.save_fig(plots.confusion_matrix(matrices, title="{name}"), figs_dir / "operating_points.png")
    part = protocols.get(protocol)
    images = np.asarray(dataset.images)
    if part is not None:
        arrays = evaluation_arrays(run_dir, protocol)
        queries = np.asarray(arrays["retrieval_queries"])
        labels = np.asarray(dataset.labels)[queries]
        by_class = {row["label"]: images[queries[labels == row["label"]][:4]] for row in part["per_class"]}
        scores = {row["label"]: np.nan if row["roc_auc"] is None else row["roc_auc"]
                  for row in part["per_class"]}
        plots.save_fig(plots.class_extremes(by_class, dataset.class_names, scores),
                       figs_dir / "class_extremes.png")
        for kind, title in (("false_accepts", "hardest false accepts (different classes, closest)"),
                            ("false_rejects", "hardest false rejects (same class, farthest)")):
            errors = part["hardest_errors"][kind]
            first = images[[e["first"] for e in errors]] if errors else []
            second = images[[e["second"] for e in errors]] if errors else []
            plots.save_fig(plots.error_pairs(first, second, [e["distance"] for e in errors], title),
                           figs_dir / f"{kind}.png")
    return analysis


def error_analysis_markdown(run: Mapping[str, Any], figs=None, *, worst: int = 5) -> str:
    """The part's prose and its four tables from run["error_analysis"] (and metrics.json for the
    pair-bootstrap interval it is set beside)."""
    analysis = run.get("error_analysis")
    if not analysis:
        return ("*No error analysis in this run directory (notebook 03 writes `error_analysis.json`; "
                "this run was evaluated before it existed).*")
    names = analysis.get("class_names", {})
    metrics = run.get("metrics", {})
    protocols = analysis["protocols"]
    out = [_robustness(protocols, metrics, analysis), "", _chance(protocols, metrics), ""]
    if figs is not None and all(figs.has(stem) for stem in ERROR_FIGURES):
        out += [f"{figs.ref('roc_log_far')} shows the ROC at low false accept rates, "
                f"{figs.ref('operating_points')} the test pairs at two operating points "
                f"({TABLE_NUMBERS.ref('errors_operating_points')}), {figs.ref('class_extremes')} the "
                f"hardest and easiest classes ({TABLE_NUMBERS.ref('errors_classes')}), and "
                f"{figs.ref('false_accepts')} and {figs.ref('false_rejects')} the most confident "
                f"wrong decisions, and {TABLE_NUMBERS.ref('errors_confused')} the class pairs most often "
                "mistaken for each other. They are where to look for what the embedding has learnt besides "
                "the object: a shared background, colour or scene in a false accept, a close-up "
                "against a wide view of one class in a false reject.", ""]
    part = protocols.get(ANALYSED_PROTOCOL) or next(iter(protocols.values()))
    rows = part["per_class"]
    scored = [r for r in rows if r["roc_auc"] is not None]
    shown = scored[:worst] + scored[max(worst, len(scored) - worst):]
    out += [TABLE_NUMBERS.markdown("errors_classes", markdown_table(
                ("class", "pair AUC", "P@1", "pairs", "queries"),
                [(_name(names, r["label"]), fmt(r["roc_auc"]), fmt(r["precision_at_1"]),
                  fmt(r["num_pairs"]), fmt(r["num_queries"])) for r in shown], align="lrrrr"),
                TABLE_NUMBERS.captions["errors_classes"]
                + f" {min(worst, len(scored))} hardest and easiest of {fmt(len(rows))} classes."), ""]
    out += [_operating_points(protocols), ""]
    confused = [c for c in part["confused_pairs"] if c["false_accepts"] > 0][:8]
    body = [(_name(names, c["first_label"]), _name(names, c["second_label"]), fmt(c["false_accepts"]),
             fmt(c["num_negative"]), fmt(c["mean_distance"])) for c in confused]
    out += [TABLE_NUMBERS.markdown("errors_confused", markdown_table(
        ("class", "confused with", "false accepts", "negative pairs", "mean distance"),
        body or [("no false accept", "", "", "", "")], align="llrrr")), ""]
    return "\n".join(out)


def _robustness(protocols, metrics, analysis) -> str:
    rows = []
    for name, part in protocols.items():
        figures = metrics.get(name, {}).get("trained", {}).get("test", {})
        pair_ci = figures.get("roc_auc_ci95")
        class_ci = part.get("roc_auc_class_ci95")
        rows.append((PROTOCOL_NAMES.get(name, name), fmt(part["num_test_classes"]), fmt(part["roc_auc"]),
                     _interval(pair_ci), _interval(class_ci)))
    return "\n".join([
        "Two sources of chance make a test AUC uncertain: which pairs were drawn, and which classes "
        "happen to be in the test part. The pair bootstrap resamples pairs; the class bootstrap "
        "resamples whole classes (a class drawn m times counts its positive pairs m times and its "
        "negative pairs with another class by the product of the two counts). With few held-out "
        f"classes ({_classes(protocols, 'unseen')} here) the second is the wider one: it is the "
        f"interval to read for unseen classes. {TABLE_NUMBERS.ref('errors_intervals')} sets the two side "
        "by side.", "",
        TABLE_NUMBERS.markdown("errors_intervals", markdown_table(
            ("protocol", "test classes", "pair AUC", "pair bootstrap", "class bootstrap"), rows),
            TABLE_NUMBERS.captions["errors_intervals"]
            + f" {analysis.get('bootstrap_samples', 0)} resamples each.")])


def _chance(protocols, metrics) -> str:
    parts = []
    for name, part in protocols.items():
        chance = part["retrieval_chance"]
        retrieval = metrics.get(name, {}).get("trained", {}).get("retrieval", {})
        parts.append(f"{PROTOCOL_NAMES.get(name, name)}: P@1 {fmt(retrieval.get('precision_at_1'))} "
                     f"against chance {fmt(chance['precision_at_1'])}, MAP@R "
                     f"{fmt(retrieval.get('map_at_r'))} against chance {fmt(chance['map_at_r'])} "
                     f"(gallery of {fmt(chance['gallery_size'])} images)")
    return ("Retrieval figures depend on the gallery: a query among few classes of many images "
            "finds a same-class neighbour by chance far more often than one among many classes of "
            "few images, so retrieval figures of different protocols are not comparable with each "
            "other, only with their own chance level (a random ranking): " + "; ".join(parts) + ".")


def _operating_points(protocols) -> str:
    rows = []
    for name, part in protocols.items():
        points = part.get("operating_points")
        if not points:
            continue
        for kind, label in (("accuracy", "max. val accuracy"), ("far", f"val FAR {points['target_far']:g}")):
            p = points[kind]
            t = p["test"]
            rows.append((PROTOCOL_NAMES.get(name, name), label, fmt(p["threshold"]), percent(p["val_far"]),
                         percent(t["far"]), percent(t["tar"]), percent(t["accuracy"])))
    return TABLE_NUMBERS.markdown("errors_operating_points", markdown_table(
        ("protocol", "chosen for", "threshold", "val FAR", "test FAR", "test TAR", "test accuracy"),
        rows or [("no protocol with validation pairs", "", "", "", "", "", "")], align="llrrrrr"),
        TABLE_NUMBERS.captions["errors_operating_points"] + " The tables and figures before this part "
        "use the one deployed threshold, chosen on the training protocol's validation pairs; these "
        "show what the choice of operating point trades.")


def _classes(protocols, name: str) -> str:
    part = protocols.get(name)
    return fmt(part["num_test_classes"]) if part else "n/a"


def _interval(ci) -> str:
    return "n/a" if not ci or ci[0] is None else f"{fmt(ci[0])} - {fmt(ci[1])}"


def _name(names: Mapping[str, str], label: int) -> str:
    name = names.get(str(label), str(label))
    return name.split(",")[0]


__all__ = ["ANALYSED_PROTOCOL", "analyse_and_draw", "error_analysis_markdown"]
