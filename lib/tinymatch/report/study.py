"""The report's tuning-study part: what was searched, under which budget, and what it found.

Everything here reads the study directory `tinymatch tune` wrote (Optuna's SQLite storage, one run
directory per trial): the search space and the per-trial budget as the study stored them when it
started, the trials' states and validation AUCs, and Optuna's matplotlib figures. Nothing is
computed that the study did not record, except counts, sums and the ranking of the trials.

Optuna is an optional extra (`tune`): it is imported when a study is read, not with the report.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
from matplotlib.ticker import NullFormatter

from tinymatch import plots
from tinymatch.report.tables import TABLE_NUMBERS, fmt, markdown_table

# Optuna figure name -> the report's figure stem (captions: `tables.FIGURES`).
STUDY_FIGURE_STEMS = (("optimization_history", "study_history"), ("param_importances", "study_importances"),
                      ("slice", "study_slice"))


def _tune():
    from tinymatch import tune

    return tune


def save_study_figures(study_dir, figs_dir, *, sliced_params: int = 4) -> list[str]:
    """Draw the study's figures into figs_dir as <stem>.png; returns the stems drawn (a figure
    that needs more complete trials than the study has is left out). The slice figure shows the
    `sliced_params` most important parameters (more do not fit a page's width)."""
    figures = _tune().study_figures(study_dir, max_parallel_params=sliced_params)
    figs_dir = Path(figs_dir)
    drawn = []
    for name, stem in STUDY_FIGURE_STEMS:
        if name in figures:
            figure = figures[name]
            figure.set_size_inches(7.5, 4.2 if name != "slice" else 3.8)
            for ax in figure.axes:  # log axes' minor labels overlap at this width
                ax.xaxis.set_minor_formatter(NullFormatter())
                ax.tick_params(labelsize=8)
            with warnings.catch_warnings():  # the slice plot's colour bar: tight_layout skips it
                warnings.simplefilter("ignore", UserWarning)
                figure.tight_layout()
            plots.save_fig(figure, figs_dir / f"{stem}.png")
            drawn.append(stem)
    for figure in figures.values():  # Optuna draws with pyplot: a notebook would show them all
        plt.close(figure)
    return drawn


def study_facts(study_dir) -> dict[str, Any]:
    """The numbers the study's text cites: counts, budget, base config, best trial, wall time."""
    study = _tune().load_study(study_dir)
    summary = _tune().study_summary(study_dir)
    rows = _tune().trial_rows(study_dir)
    base = study.user_attrs.get("base_config", {})
    seconds = [r["seconds"] for r in rows if r.get("seconds") is not None]
    return dict(summary, trials=len(rows), trial_rows=rows, base_config=base,
                search_space=study.user_attrs.get("search_space", []),
                study_seconds=float(sum(seconds)),
                base_steps=int(base.get("steps_per_epoch") or 0),
                base_epochs=int(base.get("warmup_epochs", 0)) + int(base.get("epochs", 0)))


def search_space_table(facts: dict) -> str:
    """The searched dimensions as the study stored them (parameter, values, scale, condition)."""
    rows = [(r["parameter"], r["values"], r["scale"] or "-", r["when"] or "-")
            for r in facts["search_space"]]
    return markdown_table(("parameter", "values searched", "scale", "only when"), rows, align="llll")


def best_trials_table(study_dir, top: int = 5, *, trial_rows=None) -> str:
    """The `top` complete trials by objective, with the parameters that matter most to the text
    (`trial_rows`: `tune.trial_rows(study_dir)` when the caller has read them already)."""
    trial_rows = _tune().trial_rows(study_dir) if trial_rows is None else trial_rows
    shown = []
    for r in _best_complete(trial_rows, top):
        p = r["params"]
        shown.append((r["number"], fmt(r["value"]), _param(p, "learning_rate", "{:.2g}"),
                      _param(p, "warmup_share", "{:.1f}"), _param(p, "image_size"),
                      _param(p, "width"), _param(p, "embedding_dim"), _param(p, "margin", "{:.2f}"),
                      fmt(r["seconds"], 0)))
    return markdown_table(("trial", "val AUC", "LR", "warm-up share", "px", "width", "dim",
                           "margin", "s"), shown)


def _best_complete(trial_rows, top: int) -> list[dict]:
    """The `top` complete trials, best objective first."""
    complete = [r for r in trial_rows if r["state"] == "COMPLETE" and r["value"] is not None]
    return sorted(complete, key=lambda r: -r["value"])[:top]


def _value(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2g}"
    return str(value)


def _span(values: list, categorical: bool) -> str:
    """The best trials' values: low - high for a float range, the distinct values otherwise."""
    if not values:
        return "-"
    if not categorical:
        low, high = min(values), max(values)
        return _value(low) if low == high else f"{_value(low)} - {_value(high)}"
    return ", ".join(_value(v) for v in sorted(set(values)))  # one dimension's choices: one kind


# A recipe written down from a trial rounds its values (a CosFace scale of 44.8591 from the trial's
# 44.859073...); a value within this relative distance of the best trials' span counts as inside.
RECIPE_RELATIVE_TOLERANCE = 1e-3


def _inside(value, values: list, categorical: bool) -> bool:
    if categorical:
        return value in values
    low, high = min(values), max(values)
    slack = RECIPE_RELATIVE_TOLERANCE * max(abs(low), abs(high)) + 1e-12
    return low - slack <= value <= high + slack


def recipe_table(study_dir, run_config, top: int = 5, *, facts=None) -> tuple[str, int]:
    """The run's recipe in the study's terms (`search_space.space_values`) beside the best trial and
    the `top` best complete trials' values; returns the table and how many searched parameters of
    the run lie outside the best trials' values. Why: a recipe rounded from the best trials, or
    chosen before a study was re-run, is then checked against the study the report shows."""
    from tinymatch.search_space import space_values

    facts = study_facts(study_dir) if facts is None else facts
    complete = _best_complete(facts["trial_rows"], top)
    run_values = space_values(run_config)
    best = complete[0]["params"] if complete else {}
    rows, outside = [], 0
    for dimension in facts["search_space"]:
        parameter, categorical = dimension["parameter"], dimension["kind"] == "categorical"
        values = [r["params"][parameter] for r in complete if parameter in r["params"]]
        value = run_values.get(parameter)
        inside = "-" if value is None or not values else (
            "yes" if _inside(value, values, categorical) else "**no**")
        outside += inside == "**no**"
        rows.append((parameter, _value(value), _value(best.get(parameter)), _span(values, categorical),
                     inside))
    table = markdown_table(("parameter", "this run", "best trial", f"{len(complete)} best trials",
                            "within them"), rows, align="lllll")
    return table, outside


# Recipe fields a study may leave unsearched; the report names those where the run and the study's
# base config differ (a study cannot vouch for what it held fixed).
UNSEARCHED_RECIPE_FIELDS = ("backbone", "width", "max_filters", "blocks_per_stage", "stem_stride",
                            "image_size", "embedding_dim", "head_hidden", "dropout", "augment",
                            "zoom", "flip", "rotation", "translation", "brightness", "contrast",
                            "loss", "optimizer", "test_time_flip")


def unsearched_differences(facts: dict, run_config) -> list[tuple[str, Any, Any]]:
    """(field, this run's value, the study's base value) for each recipe field outside the study's
    space where the run differs from the study's base config (a field the base predates counts
    at its Config default)."""
    from tinymatch.config import Config

    searched = {row["parameter"] for row in facts["search_space"]}
    base = Config().to_dict() | facts.get("base_config", {})
    run = run_config.to_dict()
    return [(field, run[field], base[field]) for field in UNSEARCHED_RECIPE_FIELDS
            if field not in searched and field in base and run[field] != base[field]]


def study_markdown(study_dir, figs=None, run_config=None) -> str:
    """The study's prose: setup, budget, outcome, the search space and the best trials; with
    `run_config`, also the run's recipe beside the best trials (`recipe_table`)."""
    f = study_facts(study_dir)
    budget = f["trial_minutes"]
    steps = f["base_epochs"] * f["base_steps"]
    text = [
        f"The hyperparameters were searched with an Optuna study ({f['trials']} trials: "
        f"{f['trials_complete']} complete, {f['trials_pruned']} pruned by the median rule, "
        f"{f['trials_failed']} failed). Every trial is an ordinary training run of its own "
        f"({f['base_epochs']} epochs of {f['base_steps']} steps planned, {fmt(steps)} steps in "
        f"all) stopped after {fmt(budget, 1)} minutes of wall time if it is not done by then "
        f"({f['trials_budget_cut']} {'trial was' if f['trials_budget_cut'] == 1 else 'trials were'} "
        "cut), so a cheaper configuration gets more steps "
        "in the same time. The objective is the best validation pair ROC AUC of the `joint` "
        "protocol; no test part was looked at. The sampler is TPE (seeded; its first trials are "
        "random), and the median pruner stops a trial whose validation AUC after an epoch is "
        f"below the median of the earlier trials at that epoch. The study took "
        f"{fmt(f['study_seconds'] / 60, 0)} minutes of trials on the 2-core CPU.",
    ]
    if f["best_trial"] is not None:
        text.append(
            f"The best trial (number {f['best_trial']}) reached validation AUC "
            f"{fmt(f['best_value'])} at this short budget. Short-budget rankings favour what learns "
            "fast at the start (a high learning rate, a long classification warm-up, a small "
            "network); they are a guide for the full-length recipe, which is confirmed by "
            "full-length runs, not a measurement of it.")
    if figs is not None and figs.has("study_history"):
        shown = [figs.ref(stem) for _, stem in STUDY_FIGURE_STEMS if figs.has(stem)]
        text.append(f"{', '.join(shown)} show the study as Optuna draws it.")
    text.append(f"{TABLE_NUMBERS.ref('study_space')} is the search space and {TABLE_NUMBERS.ref('study_best')} "
                "the best complete trials.")
    text += ["", TABLE_NUMBERS.markdown("study_space", search_space_table(f)), "",
             TABLE_NUMBERS.markdown("study_best", best_trials_table(study_dir, trial_rows=f["trial_rows"]))]
    if run_config is not None:
        table, outside = recipe_table(study_dir, run_config, facts=f)
        verdict = ("No trial completed, so there is nothing to set it beside." if f["best_trial"] is None
                   else "Every searched parameter of this run lies within the best trials' values."
                   if not outside else
                   f"{outside} of its {len(f['search_space'])} searched parameters "
                   f"{'lies' if outside == 1 else 'lie'} outside the best trials' values: the "
                   "recipe is not this study's winner, and the study's short trials cannot say "
                   "which is better at full length.")
        differences = unsearched_differences(f, run_config)
        if differences:
            listed = ", ".join(f"`{field}` {_value(value)} (the base's {_value(base)})"
                               for field, value, base in differences)
            verdict += (f" Outside the searched space, this run differs from the study's base "
                        f"configuration in {listed}: the study held these fixed, so it says "
                        "nothing about them.")
        text += ["", f"{TABLE_NUMBERS.ref('study_recipe')} sets this run's recipe, in the study's "
                 f"terms, beside the best trial and the best complete trials. {verdict}", "",
                 TABLE_NUMBERS.markdown("study_recipe", table)]
    return "\n".join(text)


def _param(params: dict, name: str, pattern: str = "{}") -> str:
    return pattern.format(params[name]) if name in params else "-"


__all__ = ["STUDY_FIGURE_STEMS", "save_study_figures", "study_facts", "search_space_table",
           "best_trials_table", "recipe_table", "study_markdown"]
