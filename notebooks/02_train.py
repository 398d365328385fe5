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
config = {}  # the run's Config.to_dict(); empty: the smoke profile on synthetic data
run_dir = ""  # run directory; empty: runs/<profile>
figs_dir = "figs"  # where the figures (PNG) go
compare_run_dirs = []  # runs for the loss comparison table of the report (the first is this run)
progress = False  # progress bars inside the notebook

# %%
from pathlib import Path

from IPython.display import Markdown

from tinymatch import plots, report

cfg, run_path = report.setup(config, run_dir)  # {} and "": the smoke profile
figs = Path(figs_dir)
print(report.train_or_reuse(cfg, run_path, progress=progress))

# %% [markdown]
# ## Training curves

# %%
history = report.read_history(run_path)
fig = plots.training_curves(history)
plots.save_fig(fig, figs / "training_curves.png")
fig

# %% [markdown]
# ## The embedding model

# %%
facts = report.model_facts(run_path)
Markdown(report.layer_table(facts))
