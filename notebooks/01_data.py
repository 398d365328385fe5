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
# # 01 · Data: Tiny ImageNet at a glance
#
# Loads the dataset of the run (the decoded cache makes this fast after the first time), prints
# its facts, saves them as `data_facts.json` for the report and draws the data figures:
# the class distribution, one sample per class and what augmentation does to one image.
# Parameters are injected by `tinymatch report` (papermill); the defaults run the smoke profile
# and write only into runs/smoke under the working directory (gitignored).

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

from tinymatch import data, plots, report

cfg, run_path, figs = report.setup(config, run_dir, figs_dir)
dataset, splits = report.load_data(cfg, run_path, progress=progress)
print(data.format_summary(data.summarize(dataset)))

# %% [markdown]
# ## Splits
# Two protocols: **seen** classes (every class in train/val/test, disjoint images) and **unseen**
# classes (val and test classes never seen in training). The counts are saved for the report.

# %%
facts = report.save_data_facts(run_path, dataset, splits, cfg)
Markdown(report.split_table(facts))

# %% [markdown]
# ## Class distribution

# %%
labelled = report.labelled_indices(dataset)
fig = plots.class_distribution(dataset.labels[labelled], dataset.class_names,
                               parts=report.split_part_labels(dataset, splits, cfg))
plots.save_fig(fig, figs / "class_distribution.png")
fig

# %% [markdown]
# ## One image per class

# %%
fig = plots.samples(dataset.images, dataset.labels, dataset.class_names, seed=cfg.seed)
plots.save_fig(fig, figs / "samples.png")
fig

# %% [markdown]
# ## Augmentation
# The augmentation layer of the model (`tinymatch.augment.get_image_augmentation_layer`) called with
# `training=True` on one training image, many times.

# %%
example = dataset.images[splits.indices(cfg.protocol, "train")[0]]
fig = plots.augmentation(example, report.augmentation_layer(cfg), seed=cfg.seed)
plots.save_fig(fig, figs / "augmentation.png")
fig
