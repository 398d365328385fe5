"""Every figure function returns a Figure that saves to a small PNG."""

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from tinymatch import plots

CLASS_NAMES = [f"class {i}" for i in range(5)]


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def _saved(fig, tmp_path, name="figure.png"):
    assert isinstance(fig, Figure)
    path = plots.save_fig(fig, tmp_path / name)
    assert path.exists() and 2_000 < path.stat().st_size < 2_000_000
    with Image.open(path) as image:
        assert image.format == "PNG" and min(image.size) > 100
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write left nothing behind
    return path


def _images(rng, count):
    return rng.integers(0, 256, size=(count, 64, 64, 3), dtype=np.uint8)


def test_class_distribution(tmp_path, rng):
    labels = rng.integers(0, 5, size=200)
    _saved(plots.class_distribution(labels, CLASS_NAMES), tmp_path)


def test_samples_one_image_per_class(tmp_path, rng):
    labels = np.repeat(np.arange(5), 4)
    fig = plots.samples(_images(rng, 20), labels, CLASS_NAMES, columns=3)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == CLASS_NAMES
    _saved(fig, tmp_path)


def test_augmentation_runs_the_layer_in_training_mode(tmp_path, rng):
    import keras

    class Recorder(keras.layers.Layer):
        seen_training = None

        def call(self, images, training=None):
            Recorder.seen_training = training
            return images * 0.5

    fig = plots.augmentation(_images(rng, 1)[0], Recorder(), count=5, columns=3)
    assert Recorder.seen_training is True
    _saved(fig, tmp_path)


def test_training_curves_tolerates_missing_columns(tmp_path):
    history = {"loss": [0.9, 0.7, 0.6], "active_fraction": [0.8, 0.5, 0.4], "val_auc": [0.6, 0.7, 0.8],
               "mean_positive_distance": [0.9, 0.8, 0.7]}
    fig = plots.training_curves(history)
    assert len(fig.axes) == 4
    _saved(fig, tmp_path)


def test_roc_and_confusion_and_histograms(tmp_path, rng):
    far = np.linspace(0, 1, 50)
    curves = {"seen": {"model": (far, np.sqrt(far), 0.83), "raw pixels": (far, far, 0.5)},
              "unseen": {"model": (far, far ** 0.7, 0.7)}}
    fig = plots.roc(curves, {"seen": (0.1, 0.4)})
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any("0.830" in text for text in legend) and any("threshold" in text for text in legend)
    assert fig.axes[0].get_lines()[1].get_linestyle() == "--"  # baselines are dashed
    _saved(fig, tmp_path, "roc.png")
    _saved(plots.confusion_matrix({"seen": [[40, 10], [5, 45]], "unseen": [[30, 20], [15, 35]]}),
           tmp_path, "confusion.png")
    same = rng.random(300) < 0.5
    distances = np.where(same, rng.normal(0.6, 0.2, 300), rng.normal(1.1, 0.2, 300))
    _saved(plots.distance_histograms({"seen": (distances, same, 0.85)}), tmp_path, "hist.png")
    from tinymatch import report

    label = report.distance_axis_label({"score_normalisation": "training-mean"})
    assert label == "embedding distance, normalised by the training mean"
    assert report.distance_axis_label({}) == "embedding distance"  # a metrics.json from before the setting
    fig = plots.distance_histograms({"seen": (distances, same, 0.85)}, xlabel=label)
    assert fig.axes[0].get_xlabel() == label


def test_retrieval_examples_marks_wrong_neighbours(tmp_path, rng):
    correct = np.array([[True, False, True], [False, False, True]])
    fig = plots.retrieval_examples(_images(rng, 2), _images(rng, 6).reshape(2, 3, 64, 64, 3), correct,
                                   ["a", "b"], [["a", "c", "a"], ["d", "e", "b"]])
    wrong_titles = [ax.get_title() for ax in fig.axes if ax.get_title().startswith("✗")]
    assert len(wrong_titles) == 3
    _saved(fig, tmp_path)


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_embedding_map(tmp_path, rng, method):
    labels = np.repeat(np.arange(5), 12)
    embeddings = rng.normal(size=(60, 8)) + labels[:, None]
    fig = plots.embedding_map(embeddings, labels, _images(rng, 60), CLASS_NAMES, method=method, thumbnails=10)
    _saved(fig, tmp_path)


def test_save_fig_rejects_other_formats(tmp_path):
    with pytest.raises(ValueError, match="png"):
        plots.save_fig(Figure(), tmp_path / "figure.pdf")


def test_training_curves_puts_the_warmup_cross_entropy_on_its_own_axis(tmp_path):
    from tinymatch.report import training_history

    (tmp_path / "history.csv").write_text(
        "epoch,phase,loss,accuracy,active_fraction,mean_positive_distance,mean_negative_distance,val_auc,lr,seconds\n"
        "1,warmup,4.7,0.05,1,0.8,0.9,0.65,0.001,10\n"
        "2,triplet,0.48,nan,0.9,1.1,1.3,0.70,0.0005,10\n")
    history = training_history(tmp_path)
    assert list(history["phase"]) == ["warmup", "triplet"]  # text column stays text
    assert np.isnan(history["accuracy"][1])
    fig = plots.training_curves(history)
    loss_axis, twin = fig.axes[0], fig.axes[-1]
    assert np.isnan(loss_axis.lines[0].get_ydata()[0])  # cross-entropy not on the triplet axis
    assert twin.lines[0].get_ydata()[0] == pytest.approx(4.7)


def test_triplet_illustration_draws_the_two_circles_and_three_negatives(tmp_path):
    fig = plots.triplet_illustration(margin=0.5)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    radii = sorted(patch.get_radius() for patch in ax.patches)
    assert radii == pytest.approx([1.0, 1.5])  # d(a, p) and d(a, p) + margin
    texts = " ".join(text.get_text() for text in ax.texts)
    for name in ("hard negative", "semi-hard negative", "easy negative", "anchor a", "positive p", "margin α = 0.5"):
        assert name in texts
    assert "loss 0.00" in texts  # the easy negative is beyond the margin
    _saved(fig, tmp_path)


def test_class_distribution_shows_the_split_when_every_class_has_the_same_count(tmp_path):
    labels = np.repeat(np.arange(5), 10)
    parts = {"training": np.repeat(np.arange(3), 8), "seen val": np.repeat(np.arange(3), 2),
             "unseen val": np.repeat([3], 10)}
    fig = plots.class_distribution(labels, CLASS_NAMES, parts=parts)
    assert len(fig.axes) == 1 and "10 images each" in fig.axes[0].get_title()
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["training: 24 images, 3 classes", "seen val: 6 images, 3 classes",
                      "unseen val: 10 images, 1 class", "not used: 10 images, 1 class"]
    _saved(fig, tmp_path)
    # unequal counts: the counts and their histogram, as before
    assert len(plots.class_distribution(np.r_[labels, 0], CLASS_NAMES, parts=parts).axes) == 2


def test_embedding_map_colours_a_few_classes_and_greys_the_rest(tmp_path, rng):
    labels = np.repeat(np.arange(30), 4)
    embeddings = rng.normal(size=(120, 8)) + labels[:, None]
    names = [f"class {i}" for i in range(30)]
    fig = plots.embedding_map(embeddings, labels, _images(rng, 120), names, method="pca", highlight=10)
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend[0] == "20 other classes" and len(legend) == 11
    assert "120 images of 30 classes; 10 coloured" in fig.axes[0].get_title()  # every point drawn
    _saved(fig, tmp_path)


def test_training_curves_mark_the_kept_epoch_the_phase_boundary_and_a_flat_series(tmp_path):
    history = {"phase": np.array(["warmup", "warmup", "triplet", "triplet"]),
               "loss": [4.0, 3.0, 0.5, 0.45], "active_fraction": [1.0, 1.0, 1.0, 1.0],
               "val_auc": [0.6, 0.7, 0.75, 0.74]}
    fig = plots.training_curves(history)
    auc_axis = fig.axes[3]
    vertical = sorted({line.get_xdata()[0] for line in auc_axis.lines if line.get_linestyle() in (":", "--")})
    assert vertical == [2.5, 3]  # the end of the warm-up, the kept epoch (best val AUC)
    assert any("kept: epoch 3" in t.get_text() for t in auc_axis.get_legend().get_texts())
    assert any("1.000 in every epoch" in t.get_text() for t in fig.axes[1].texts)
    assert fig.axes[-1].get_ylabel() == "cross-entropy"  # the warm-up's twin axis stays the last
    _saved(fig, tmp_path)
