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
# # 04 · Embeddings: Embedding Projector export and a 2-D map
#
# Embeds a class-balanced sample of test images and exports it for TensorBoard's Embedding
# Projector and for projector.tensorflow.org (load `tensors.tsv` and `metadata.tsv`), then draws
# a 2-D map. The export goes to RUN_DIR/tensorboard/projector, inside the training's TensorBoard
# log directory: `tensorboard --logdir RUN_DIR/tensorboard` shows the curves and, in the
# PROJECTOR tab, these embeddings.

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
dataset, splits = report.load_data(cfg, run_path, progress=progress)
embeddings, indices = report.projection_sample(run_path, dataset, splits, cfg, progress=progress)
print(f"{len(indices):,} test images, {embeddings.shape[1]}-d embeddings")

# %% [markdown]
# ## Embedding Projector export

# %%
export = report.export_projection(run_path, dataset, indices, embeddings, cfg)
Markdown(report.projector_table(export))

# %% [markdown]
# ## The projector as a reader sees it
#
# TensorBoard started on the export, its PROJECTOR tab opened in headless Chromium, coloured by
# class with the image sprites, once in PCA and once after t-SNE iterations; the screenshots go
# to the figures (`tinymatch.projector_screenshots`).

# %%
print(report.screenshot_projector(export, figs))

# %% [markdown]
# ## 2-D map (PCA, then t-SNE)

# %%
fig = plots.embedding_map(embeddings, dataset.labels[indices], dataset.images[indices],
                          dataset.class_names, seed=cfg.seed)
plots.save_fig(fig, figs / "embedding_map.png")
fig
