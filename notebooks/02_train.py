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
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · Training
#
# Trains the embedding network with the triplet loss of the configuration, or reuses a finished
# run with the same configuration (`tinymatch.train.is_finished`), then draws the training curves
# from `history.csv` and records the model's size for the report.

# %% tags=["parameters"]
config: dict = {"profile": "smoke"}  # a partial Config over its "profile" (default cpu), or a profile name
run_dir: str = ""  # run directory; "": runs/<profile> under the working directory (gitignored)
figs_dir: str = ""  # where the figures (PNG) go; "": RUN_DIR/figs
compare_run_dirs: list = []  # runs for the loss comparison table of the report (the first is this run)
study_dir: str = ""  # a `tinymatch tune` study directory for the report's tuning part ("": none)
ablation_dir: str = ""  # a `tinymatch ablate` directory for the report's ablation part ("": none)
progress: bool = False  # progress bars inside the notebook

# %%
from IPython.display import Markdown

from tinymatch import plots, report

cfg, run_path, figs = report.setup(config, run_dir, figs_dir)
print(report.train_or_reuse(cfg, run_path, progress=progress))

# %% [markdown]
# ## Training curves

# %%
history = report.training_history(run_path)
fig = plots.training_curves(history)
plots.save_fig(fig, figs / "training_curves.png")
fig

# %% [markdown]
# ## The embedding model

# %%
facts = report.model_facts(run_path)
Markdown(report.layer_table(facts))
