# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     formats: ipynb,py:percent
#     notebook_metadata_filter: kernelspec,jupytext
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · Evaluation
#
# Embeds the validation and test parts of both protocols, builds positive and negative pairs,
# chooses the decision threshold on validation pairs only and measures verification (ROC AUC,
# confusion matrix at the threshold) and retrieval on the test parts, for the trained model and two
# baselines (`tinymatch.evaluate.evaluate_run` writes `metrics.json`, `evaluation/`, `pairs/`).

# %% tags=["parameters"]
config: dict = {"profile": "smoke"}  # a partial Config over its "profile" (default cpu), or a profile name
run_dir: str = ""  # run directory; "": runs/<profile> under the working directory (gitignored)
figs_dir: str = ""  # where the figures (PNG) go; "": RUN_DIR/figs
compare_run_dirs: list = []  # runs for the loss comparison table of the report (the first is this run)
study_dir: str = ""  # a `tinymatch tune` study directory for the report's tuning part ("": none)
ablation_dir: str = ""  # a `tinymatch ablate` directory for the report's ablation part ("": none)
progress: bool = False  # progress bars inside the notebook

# %%
from IPython.display import Markdown, display

from tinymatch import evaluate, plots, report
from tinymatch.report import errors

cfg, run_path, figs = report.setup(config, run_dir, figs_dir)
dataset, splits = report.load_data(cfg, run_path, progress=progress)
metrics = evaluate.evaluate_run(run_path, dataset, splits, cfg, progress=progress)
Markdown(report.verification_table(metrics))

# %%
Markdown(report.retrieval_table(metrics))

# %% [markdown]
# ## ROC curves

# %%
fig = plots.roc(*report.roc_inputs(run_path, metrics))
plots.save_fig(fig, figs / "roc.png")
fig

# %% [markdown]
# ## Confusion matrix at the chosen threshold

# %%
fig = plots.confusion_matrix(report.confusion_inputs(metrics))
plots.save_fig(fig, figs / "confusion_matrix.png")
fig

# %% [markdown]
# ## Distances of same-class and different-class pairs

# %%
fig = plots.distance_histograms(report.histogram_inputs(run_path, metrics),
                                xlabel=report.distance_axis_label(metrics))
plots.save_fig(fig, figs / "distance_histograms.png")
fig

# %% [markdown]
# ## Retrieval examples

# %%
fig = plots.retrieval_examples(**report.retrieval_inputs(run_path, dataset, "seen", seed=cfg.seed))
plots.save_fig(fig, figs / "retrieval_examples.png")
fig

# %%
# Queries of classes the network never trained on, against a gallery of such classes.
if "unseen" in report.protocols_in(metrics):
    fig = plots.retrieval_examples(**report.retrieval_inputs(run_path, dataset, "unseen", seed=cfg.seed))
    plots.save_fig(fig, figs / f"{report.UNSEEN_RETRIEVAL_FIGURE}.png")
    display(fig)

# %% [markdown]
# ## Error analysis
#
# Per-class scores, the most-confused class pairs, the hardest errors, a class-level bootstrap of
# the AUC and two operating points, from the pair distances saved above
# (`tinymatch.error_analysis`; writes `error_analysis.json` and the figures).

# %%
analysis = errors.analyse_and_draw(run_path, dataset, figs)
Markdown(errors.error_analysis_markdown(report.read_run(run_path)))
