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

from tinymatch import plots, report

cfg, run_path, figs_path = report.setup(config, run_dir, figs_dir)
run = report.read_run(run_path)
if study_dir:  # drawn before the figures are numbered: a part without its figures takes no number
    report.save_study_figures(study_dir, figs_path)
figs = report.Figures(figs_path)
report.TABLE_NUMBERS.leave_out(report.absent_tables(run, study=bool(study_dir), ablation=bool(ablation_dir)))
n = report.key_numbers(run)
Markdown(report.title_block(run))

# %% [markdown]
# ## 1. Introduction
#
# Two photographs are given; do they show the same kind of object? This report describes a model
# that answers that question for the 64 x 64 pixel images of Tiny ImageNet, a 200-class subset of
# ImageNet. Instead of a classifier, which only knows the classes it was trained on, the model is
# an *embedding network*: it maps every image to a point on the unit sphere so that images of the
# same class lie close together and images of different classes far apart. Two images match when
# the distance between their embeddings is below a threshold. Because the decision only compares
# distances, the same network can also match images of classes it never saw during training, and
# it can retrieve the most similar images of a collection.
#
# The network is evaluated as a verification problem (ROC curve and AUC, confusion matrix at a
# threshold chosen on validation data) and as a retrieval problem, on classes seen in training and
# on held-out classes. How this run trains it (its loss functions and how many epochs each gets)
# comes from its configuration and training history:

# %%
Markdown(report.introduction_summary(run, figs))

# %% [markdown]
# ## 2. Network architecture: a Siamese network
#
# A Siamese network runs two inputs through one and the same embedding network (shared weights)
# and compares the two outputs. The idea goes back to signature verification [14]; Koch, Zemel and
# Salakhutdinov [6] used it for one-shot image recognition, deciding whether two images show the
# same character from a class never seen in training, which is this report's unseen-class setting.
# Here the embedding network $f$ takes a 64 x 64 RGB image with
# pixel values in 0..255 and returns a unit-length vector: preprocessing (rescaling, and resizing
# for backbones pre-trained at a larger size), a convolutional backbone, global average pooling, a
# dense projection to the embedding size and L2 normalisation. During training a random
# augmentation layer comes first; it is inactive at inference. The Siamese model then compares two
# images $x_1$ and $x_2$ by the distance of their embeddings and declares a match below the
# threshold $\tau$:
#
# $$d(x_1, x_2) = \lVert f(x_1) - f(x_2) \rVert_2, \qquad \text{match}(x_1, x_2) = \big[\, d(x_1, x_2) \le \tau \,\big]$$
#
# **Why convolutions.** A matcher must recognise an object wherever it appears in the image. A
# convolution applies the same small filter at every position, so its output shifts with its input
# (*translation equivariance*): a feature learned in one place is detected everywhere, and global
# pooling then makes the embedding largely independent of where the object is. The filter's weights
# are *shared* across positions, so a layer has as many parameters as its filters, whatever the
# image size: a 3 x 3 convolution from 64 to 64 channels has 36,928, while a dense layer from a
# 64 x 64 x 3 image to as many units would have about 151 million. Each filter sees a small
# neighbourhood (*locality*), which suits images, where nearby pixels are strongly related; stacked
# layers and downsampling widen what a unit sees, so later layers combine edges into textures,
# parts and objects.

# %%
Markdown(report.architecture_markdown(run))

# %% [markdown]
# ### Backbones and transfer learning
#
# The outline asks for a usual convolutional backbone and for transfer learning: starting from
# weights trained on ImageNet instead of random ones.

# %%
Markdown(report.backbone_markdown(run))

# %% [markdown]
# ## 3. Loss functions
#
# Two losses can train the embedding here: the triplet loss, and a classification loss used as a
# warm-up before it. Which of them this run uses, and for how many epochs, is stated at the end of
# this section.
#
# A triplet is an *anchor* image $a$, a *positive* $p$ of the same class and a *negative* $n$ of
# another class. The triplet loss [1] asks the positive to be closer to the anchor than the
# negative by at least a margin $\alpha$:
#
# $$\mathcal{L}(a, p, n) = \big[\, d(a, p) - d(a, n) + \alpha \,\big]_+, \qquad [x]_+ = \max(x, 0)$$

# %%
plots.save_fig(plots.triplet_illustration(cfg.margin), figs_path / "triplet_illustration.png")
Markdown(f"{figs.ref('triplet_illustration')} shows the three kinds of negative this defines around an "
         "anchor: a *hard* negative is closer to the anchor than the positive, a *semi-hard* one is "
         "farther than the positive but within the margin (a positive loss below α), an *easy* one is "
         "beyond the margin (zero loss).")

# %%
figs.show("triplet_illustration")

# %% [markdown]
# **Squared or plain distance.** The outline, like FaceNet [1], writes the loss with the squared
# distance $\lVert f(a) - f(p) \rVert_2^2$. This project uses the plain L2 distance
# $\lVert f(a) - f(p) \rVert_2$ unless `distance_metric` says `squared-L2`. For matching the choice
# changes nothing: squaring is monotone on non-negative numbers, so both distances rank every pair
# alike and give the same ROC curve, AUC and retrieval, and a threshold $\tau$ on L2 is $\tau^2$ on
# squared L2 (the end of this section says which distance this run's threshold is on). In the loss
# they differ:
# the margin acts on another scale, and the gradient of the squared distance vanishes as two
# embeddings meet while that of the plain distance does not; Hermans et al. [2] also train on the
# plain distance.
#
# Most triplets already satisfy the margin and contribute nothing, so which triplets are used
# matters more than the formula. **Semi-hard** mining (FaceNet [1]; the semantics of TensorFlow
# Addons' `TripletSemiHardLoss`) uses every anchor-positive pair $(a, p)$ of a batch, the set
# $\mathcal{P}$, and pairs it with the closest negative that is still *farther* than the positive;
# when the batch has no such negative, the farthest negative is used:
#
# $$n^\star(a, p) = \underset{n \in \mathcal{N}(a):\ d(a, n) > d(a, p)}{\mathrm{arg\,min}}\ d(a, n)$$
#
# $$\mathcal{L}_{\text{semi-hard}} = \frac{1}{|\mathcal{P}|} \underset{(a, p) \in \mathcal{P}}{\sum} \big[\, d(a, p) - d(a, n^\star(a, p)) + \alpha \,\big]_+$$
#
# where $\mathcal{N}(a)$ are the images of the batch of another class than $a$. **Batch-hard**
# mining (Hermans et al. [2]; `TripletHardLoss`) takes, for every anchor of the batch $\mathcal{B}$, its farthest
# positive and its closest negative (the *soft* variant replaces $[x]_+$ by $\log(1 + e^{x})$):
#
# $$\mathcal{L}_{\text{batch-hard}} = \frac{1}{|\mathcal{B}|} \underset{a \in \mathcal{B}}{\sum} \Big[\, \underset{p \in \mathcal{P}(a)}{\max}\, d(a, p) - \underset{n \in \mathcal{N}(a)}{\min}\, d(a, n) + \alpha \,\Big]_+$$

# %%
Markdown(report.loss_markdown(run))

# %% [markdown]
# ## 4. Metrics
#
# **Verification.** Test images are paired: same-class pairs (positives) and as many
# different-class pairs (negatives). For a threshold $\tau$ the true accept rate and the false
# accept rate are
#
# $$\mathrm{TAR}(\tau) = \frac{|\{(i, j) \in \text{positives} : d_{ij} \le \tau\}|}{|\text{positives}|}, \qquad \mathrm{FAR}(\tau) = \frac{|\{(i, j) \in \text{negatives} : d_{ij} \le \tau\}|}{|\text{negatives}|}$$
#
# The ROC curve traces $(\mathrm{FAR}(\tau), \mathrm{TAR}(\tau))$ over all thresholds. Its area,
# the **ROC AUC**, is the probability that a random negative pair is farther apart than a random
# positive pair: 0.5 is chance, 1 a perfect separation. It does not depend on a threshold, and
# its 95% confidence interval is estimated by bootstrapping the pairs. The equal error rate (EER)
# is where the false accept rate equals the false reject rate.
#
# **Confusion matrix.** A deployed matcher needs one threshold. It is chosen on the *validation*
# pairs only and then applied unchanged to the test pairs; the $2 \times 2$ confusion matrix of
# the test pairs (true relation against decision) gives accuracy, precision, recall and F1 at that
# operating point.
#
# **Retrieval.** Every test image is used as a query against the other test images: precision@1
# (is the nearest neighbour of the same class?), recall@k (is any of the $k$ nearest?) and MAP@R
# (mean average precision over the first $R$ neighbours, $R$ the number of other images of the
# query's class).
#
# **Protocols.** *Seen classes*: the images of every class are split into train, validation and
# test, so test images are new but their classes are known. *Unseen classes*: whole classes are
# held out from training, and validation and test use different held-out classes; this measures
# whether the embedding generalises to new kinds of objects. Two baselines use the same pairs: the
# same network with random weights, and the raw pixels (L2-normalised).
#
# **Chance levels.** A random ranking puts an image of the query's class first with probability
# $(n_c - 1)/(N - 1)$, for a query of class $c$ among $N$ images of which $n_c$ are of its class;
# the P@1 of a random ranking is the mean of that over the queries. It depends on the collection:
# retrieval figures of collections with different class sizes are not comparable, so the report
# gives the chance level beside each. The ROC AUC of a random score is 0.5 whatever the pairs.

# %% [markdown]
# ## 5. Implementation: online semi-hard mining
#
# **Offline or online mining.** Triplets can be mined *offline*: every so many steps, embed the
# training images with the current network, search hard or semi-hard triplets among all of them,
# and train on that fixed list until the next search. Each search costs a pass over the data, and
# the list grows stale as the network changes between searches. *Online* mining [1, 2] forms the
# triplets inside each batch from the embeddings the forward pass has just computed: no extra pass
# and always current, but the candidates are only the batch's images, so the batch must hold
# several images of each of several classes.
#
# Triplets are mined *online*, inside each training batch, rather than precomputed. A batch is
# built from $P$ classes with $K$ images each ($B = PK$ images), so every image has $K - 1$
# positives and $(P - 1)K$ negatives in the batch. The loss computes the $B \times B$ matrix of
# pairwise distances once and masks it by label equality. Each anchor's negative distances are
# sorted once; for every one of the $PK(K - 1)$ anchor-positive pairs a binary search
# (`tf.searchsorted`) then finds $n^\star$, the first negative beyond $d(a, p)$: $O(B^2)$ memory
# instead of the $O(B^3)$ tile of TensorFlow Addons, and no Python loop. Since the embeddings are
# recomputed every step, the mined negatives follow the model as it improves.
#
# The batch's distance matrix also gives *mining health* metrics, logged every epoch: the
# fraction of anchor-positive pairs that still have a non-zero loss (active triplets) and the mean
# positive and negative distances. A fraction that collapses to zero means the batches became too
# easy; one stuck near one with equal distances signals a collapsed embedding.

# %%
Markdown(report.mining_markdown(run))

# %% [markdown]
# ## 6. Training procedure
#
# ### Dataset and class distribution

# %%
Markdown(report.dataset_markdown(run, figs))

# %%
figs.show("class_distribution", report.class_distribution_caption(run))

# %%
figs.show("samples")

# %% [markdown]
# ### Data split

# %%
Markdown(report.split_markdown(run))

# %% [markdown]
# ### Augmentation

# %%
Markdown(report.augmentation_markdown(run, figs))

# %%
figs.show("augmentation")

# %% [markdown]
# ### Optimisation

# %%
Markdown(report.optimisation_markdown(run))

# %% [markdown]
# ## 7. Results
#
# ### Training

# %%
Markdown(report.training_markdown(run, figs))

# %%
figs.show("training_curves", report.training_curves_caption(run))

# %% [markdown]
# ### Verification: ROC and AUC

# %%
Markdown(report.verification_markdown(run, figs))

# %%
figs.show("roc")

# %% [markdown]
# ### Confusion matrix

# %%
Markdown(report.confusion_markdown(run, figs))

# %%
figs.show("confusion_matrix")

# %%
figs.show("distance_histograms")

# %% [markdown]
# ### Retrieval

# %%
Markdown(report.retrieval_markdown(run, figs))

# %%
figs.show("retrieval_examples")

# %%
if figs.has(report.UNSEEN_RETRIEVAL_FIGURE):
    display(figs.show(report.UNSEEN_RETRIEVAL_FIGURE))

# %% [markdown]
# ### Error analysis
#
# Where the model fails, and how sure the figures above are: an AUC interval that resamples
# classes beside the one that resamples pairs, retrieval against its chance level, the hardest
# and easiest classes, two operating points (the threshold depends on the application: a false
# accept may cost more than a false reject, or less), the class pairs most often confused and the
# most confident wrong decisions (`tinymatch.error_analysis`, from the saved pair distances).

# %%
Markdown(report.error_analysis_markdown(run, figs))

# %%
for stem in report.ERROR_FIGURES:
    if figs.has(stem):
        display(figs.show(stem))

# %% [markdown]
# ### Loss comparison: semi-hard and batch-hard mining

# %%
Markdown(report.loss_comparison_markdown(compare_run_dirs or [run_path]))

# %% [markdown]
# ### Ablation: what each part of the recipe contributes
#
# One change at a time against the recipe, several seeds each (`tinymatch ablate`).

# %%
Markdown(report.ablation_markdown(ablation_dir) if ablation_dir else
         "*No ablation was given to this report (`make report ABLATION=runs/ablation` after "
         "`tinymatch ablate`); the credit of each phase rests on the training history above.*")

# %% [markdown]
# ### Tuning study: how the recipe's hyperparameters were searched

# %%
Markdown(report.study_markdown(study_dir, figs, run_config=run["config"]) if study_dir else
         "*No tuning study was given to this report (`make report STUDY=runs/studies/NAME` after "
         "`tinymatch tune`).*")

# %%
for stem in report.STUDY_FIGURES:
    if figs.has(stem):
        display(figs.show(stem))

# %% [markdown]
# ### Transfer learning: from scratch and a pretrained backbone
#
# The outline suggests a usual convolutional architecture (VGG-16 [11], ResNet50 [12],
# Inception [13]) to speed training up by transfer learning. The project accepts Keras Applications
# backbones with `weights="imagenet"` where Keras can download them, and ships an offline route:
# EfficientNet-Lite0, -Lite1 and -Lite2 [10] (EfficientNet-B0's stages without
# squeeze-and-excitation, ReLU6; Lite1 and Lite2 deeper and wider) with ImageNet weights from Python
# packages, converted to Keras without PyTorch and without executing pickled code.

# %%
Markdown(report.transfer_markdown(compare_run_dirs or [run_path]))

# %% [markdown]
# ## 8. The Embedding Projector
#
# TensorBoard's Embedding Projector shows embeddings interactively in 2-D or 3-D (PCA, t-SNE,
# UMAP), with the image of every point and its class name, and lets one search a class and
# inspect an image's nearest neighbours. Keras 3's TensorBoard callback no longer writes projector
# data, so `tinymatch.projector` writes the export directly: the vectors and metadata as TSV
# files, a sprite sheet of 32-pixel thumbnails and a `projector_config.pbtxt` tying them together.

# %%
Markdown(report.projector_markdown(run, figs))

# %%
for stem in report.PROJECTOR_SCREENSHOTS:
    if figs.has(stem):
        display(figs.show(stem))

# %%
figs.show("embedding_map", report.embedding_map_caption(run))

# %% [markdown]
# ## 9. Conclusion and limitations

# %%
Markdown(report.conclusion_markdown(run, compare_run_dirs))

# %% [markdown]
# ## 10. Compute and reproducibility

# %%
Markdown(report.reproducibility_markdown(run, compare_run_dirs or [run_path], study_dir, ablation_dir))

# %% [markdown]
# ## Bibliography

# %%
Markdown(report.bibliography_markdown())

# %% [markdown]
# ## Appendix: configuration of this run

# %%
Markdown(report.config_markdown(run))
