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
# Projector (`tensorboard --logdir RUN_DIR/projector`, PROJECTOR tab) and for
# projector.tensorflow.org (load `tensors.tsv` and `metadata.tsv`), then draws a 2-D map.

# %% tags=["parameters"]
config = {}  # the run's Config.to_dict(); empty: the smoke profile on synthetic data
run_dir = ""  # run directory; empty: runs/<profile>
figs_dir = "figs"  # where the figures (PNG) go
compare_run_dirs = []  # runs for the loss comparison table of the report (the first is this run)
progress = False  # progress bars inside the notebook

# %%
from pathlib import Path

from IPython.display import Markdown

from tinymatch import plots, projector, report

cfg, run_path = report.setup(config, run_dir)  # {} and "": the smoke profile
figs = Path(figs_dir)
dataset, splits = report.load_data(cfg, run_path, progress=progress)
embeddings, indices = report.projection_sample(run_path, dataset, splits, cfg, progress=progress)
print(f"{len(indices):,} test images, {embeddings.shape[1]}-d embeddings")

# %% [markdown]
# ## Embedding Projector export

# %%
export = projector.export_projector(embeddings, dataset.labels[indices], dataset.class_names,
                                    dataset.images[indices], run_path / "projector",
                                    tensor_name=f"{cfg.loss}_embedding")
Markdown(report.projector_table(export))

# %% [markdown]
# ## 2-D map (PCA, then t-SNE)

# %%
fig = plots.embedding_map(embeddings, dataset.labels[indices], dataset.images[indices],
                          dataset.class_names, seed=cfg.seed)
plots.save_fig(fig, figs / "embedding_map.png")
fig
