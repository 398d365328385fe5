"""Embeddings, pairs, reports and evaluate_run on tiny synthetic arrays and a tiny model."""

import json
from dataclasses import dataclass
from itertools import combinations

import keras
import numpy as np
import pytest
from PIL import Image

from tinymatch import evaluate as ev
from tinymatch.config import Config

# --- helpers --------------------------------------------------------------------------------------


@dataclass
class FakeDataset:
    """The parts of tinymatch.data.Dataset that evaluate uses."""

    images: np.ndarray
    labels: np.ndarray
    source: str = "fake"


def colour_images(labels, seed=0):
    """One flat colour per class plus noise: even raw pixels separate the classes a little."""
    rng = np.random.default_rng(seed)
    palette = rng.integers(0, 256, size=(int(labels.max()) + 1, 3))
    noise = rng.normal(scale=40, size=(len(labels), 64, 64, 3))
    return np.clip(palette[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8)


class CountingModel:
    """A stand-in 'model': mean colour per image, counting how many images it saw."""

    def __init__(self):
        self.seen = 0

    def predict_on_batch(self, batch):
        self.seen += len(batch)
        vectors = batch.reshape(len(batch), -1, 3).mean(axis=1) + 1.0
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def smoke_config(**overrides):
    return Config.from_profile("smoke", augment=False, **overrides)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run dir with a random-weights smoke model.keras, siamese.keras and config.json."""
    from tinymatch import model as model_module

    run = tmp_path_factory.mktemp("run")
    config = smoke_config()
    keras.utils.set_random_seed(0)
    embedding = model_module.build_embedding_model(config)
    embedding.save(run / "model.keras")
    model_module.build_siamese_model(embedding, threshold=0.8).save(run / "siamese.keras")
    config.save(run / "config.json")
    return run


# --- pairs ----------------------------------------------------------------------------------------

def test_positive_pairs_are_all_same_class_pairs_when_under_cap():
    labels = np.array([2, 0, 1, 0, 2, 2, 0, 5])
    pairs = ev.make_pairs(labels, max_positive_pairs=100, seed=0)
    positives = {tuple(sorted(p)) for p in zip(pairs.first[pairs.same], pairs.second[pairs.same])}
    expected = {(i, j) for i, j in combinations(range(len(labels)), 2) if labels[i] == labels[j]}
    assert positives == expected
    assert pairs.same.sum() == (~pairs.same).sum() == 6


@pytest.mark.parametrize("hard", [False, True])
def test_pairs_balanced_distinct_and_seeded(hard):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 8, 120)
    embeddings = rng.normal(size=(120, 6)).astype(np.float32)
    make = lambda seed: ev.make_pairs(labels, max_positive_pairs=150, seed=seed, embeddings=embeddings,
                                      hard_negatives=hard)
    pairs = make(3)
    assert pairs.same.sum() == 150 and (~pairs.same).sum() == 150
    assert np.all(labels[pairs.first][pairs.same] == labels[pairs.second][pairs.same])
    assert np.all(labels[pairs.first][~pairs.same] != labels[pairs.second][~pairs.same])
    keys = {(min(a, b), max(a, b)) for a, b in zip(pairs.first, pairs.second)}
    assert len(keys) == len(pairs)  # no pair twice
    again = make(3)
    np.testing.assert_array_equal(pairs.first, again.first)
    np.testing.assert_array_equal(pairs.second, again.second)
    assert not np.array_equal(pairs.first, make(4).first)


def test_hard_negatives_are_nearest_other_class_neighbours():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 5, 200)
    embeddings = rng.normal(size=(200, 4)).astype(np.float32)
    hard = ev.make_pairs(labels, max_positive_pairs=100, seed=0, embeddings=embeddings, hard_negatives=True)
    easy = ev.make_pairs(labels, max_positive_pairs=100, seed=0)
    distances = np.linalg.norm(embeddings[:, None] - embeddings[None], axis=-1)
    distances[labels[:, None] == labels[None, :]] = np.inf
    nearest = distances.argmin(axis=1)
    for a, b in zip(hard.first[~hard.same], hard.second[~hard.same]):
        assert nearest[a] == b or nearest[b] == a
    hard_d = ev.pair_distances(embeddings, hard)[~hard.same].mean()
    easy_d = ev.pair_distances(embeddings, easy)[~easy.same].mean()
    assert hard_d < easy_d


def test_tiny_label_sets_take_every_negative():
    pairs = ev.make_pairs(np.array([0, 0, 0, 1]), max_positive_pairs=10, seed=0)
    assert pairs.same.sum() == 3 and (~pairs.same).sum() == 3
    with pytest.raises(ValueError, match="2 classes"):
        ev.make_pairs(np.zeros(5), max_positive_pairs=10, seed=0)


def test_pairs_save_load_round_trip(tmp_path):
    pairs = ev.make_pairs(np.array([0, 0, 1, 1, 2]), max_positive_pairs=5, seed=0)
    path = pairs.save(tmp_path / "p" / "pairs.npz", indices=np.arange(5) + 10)
    loaded = ev.Pairs.load(path)
    np.testing.assert_array_equal(loaded.first, pairs.first)
    np.testing.assert_array_equal(loaded.same, pairs.same)
    assert list(tmp_path.joinpath("p").iterdir()) == [path]  # no temporary left behind
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        ev.Pairs.load(tmp_path / "missing.npz")


# --- embeddings -----------------------------------------------------------------------------------

def test_embed_in_batches_equals_one_call():
    inputs = keras.Input((64, 64, 3))
    outputs = keras.layers.UnitNormalization()(keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(inputs)))
    model = keras.Model(inputs, outputs)
    images = colour_images(np.arange(10) % 3)
    whole = np.asarray(model(images.astype(np.float32)))
    batched = ev.embed(model, images, batch_size=3, progress=False)
    assert batched.dtype == np.float32 and batched.shape == (10, 4)
    np.testing.assert_allclose(batched, whole, atol=1e-5)


def test_embeddings_for_caches_per_model_and_indices(tmp_path):
    labels = np.arange(20) % 4
    dataset = FakeDataset(colour_images(labels), labels)
    model_file = tmp_path / "model.keras"
    model_file.write_bytes(b"stand-in")
    counting = CountingModel()
    indices = np.array([3, 1, 7, 9])
    first = ev.embeddings_for(model_file, dataset, indices, cache_dir=tmp_path / "emb", batch_size=3,
                              progress=False, model=counting)
    again = ev.embeddings_for(model_file, dataset, indices, cache_dir=tmp_path / "emb", progress=False,
                              model=counting)
    assert counting.seen == 4  # the second call read the cache
    np.testing.assert_array_equal(first, again)
    np.testing.assert_allclose(first, CountingModel().predict_on_batch(dataset.images[indices].astype(np.float32)))
    ev.embeddings_for(model_file, dataset, indices[:2], cache_dir=tmp_path / "emb", progress=False,
                      model=counting)
    assert counting.seen == 6  # other indices, other cache file
    assert len(list((tmp_path / "emb").glob("model-*.npy"))) == 2


def test_raw_pixel_embeddings_are_unit_flattened_pixels():
    images = colour_images(np.arange(5))
    vectors = ev.raw_pixel_embeddings(images)
    assert vectors.shape == (5, 64 * 64 * 3)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, rtol=1e-5)
    flat = images.reshape(5, -1).astype(np.float64)
    np.testing.assert_allclose(vectors, flat / np.linalg.norm(flat, axis=1, keepdims=True), atol=1e-6)


# --- verification report --------------------------------------------------------------------------

def test_threshold_comes_from_val_pairs_only():
    rng = np.random.default_rng(0)
    labels_val, labels_test = np.repeat(np.arange(4), 6), np.repeat(np.arange(4), 6)
    centres = rng.normal(size=(4, 8)) * 3
    emb_val = (centres[labels_val] + rng.normal(size=(24, 8))).astype(np.float32)
    config = smoke_config(bootstrap_samples=10)
    report_a = ev.verification_report(emb_val, labels_val, emb_val, labels_test, config)
    shuffled = rng.normal(size=(24, 8)).astype(np.float32)  # a completely different test part
    report_b = ev.verification_report(emb_val, labels_val, shuffled, labels_test, config)
    assert report_a["threshold"] == report_b["threshold"]
    pairs = ev.make_pairs(labels_val, max_positive_pairs=config.max_positive_pairs, seed=config.seed)
    distances = ev.pair_distances(emb_val, pairs)
    assert report_a["threshold"] == ev.choose_threshold(distances, pairs.same, "accuracy")
    test = report_b["test"]
    assert test["confusion"]["threshold"] == report_b["threshold"]
    assert set(test["tar_at_far"]) == {"0.1", "0.01", "0.001"}
    assert test["roc_auc_ci95"][0] <= test["roc_auc"] <= test["roc_auc_ci95"][1]
    assert set(report_a["curves"]) == {"val", "test"}


# --- evaluate_run ---------------------------------------------------------------------------------

def make_split(labels):
    """A tinymatch.data.Splits over 10 classes: 0-7 official train, 8-9 official val.

    seen: per class of 0-7, images 0-3 train, 4-5 val, 6-7 test. unseen: classes 0-3 train,
    4-5 val, 6-7 test. So 'joint' trains on seen-train images of classes 0-3; its seen parts are
    classes 0-3's held-out images and its unseen parts classes 4-5 (val) and 6-7 (test).
    """
    from tinymatch.data import Splits

    position = np.array([np.sum(labels[:i] == labels[i]) for i in range(len(labels))])
    official = np.where(labels < 8, "train", "val")
    seen = np.select([labels >= 8, position < 4, position < 6], ["", "train", "val"], "test")
    unseen = np.select([labels >= 8, labels < 4, labels < 6], ["", "train", "val"], "test")
    return Splits(seen=seen.astype("<U5"), unseen=unseen.astype("<U5"), official=official, labels=labels)


@pytest.mark.parametrize("protocol", ["joint", "seen"])
def test_evaluate_run_writes_metrics_pairs_and_plot_arrays(run_dir, protocol):
    labels = np.repeat(np.arange(10), 8).astype(np.int32)
    dataset = FakeDataset(colour_images(labels), labels)
    config = smoke_config(bootstrap_samples=10, max_positive_pairs=40, retrieval_top_k=3, protocol=protocol)
    for old in ("pairs", "evaluation"):
        for path in (run_dir / old).glob("*.npz"):
            path.unlink()
    metrics = ev.evaluate_run(run_dir, dataset, make_split(labels), config, progress=False)
    stored = json.loads((run_dir / "metrics.json").read_text())
    assert stored["threshold"] == metrics["threshold"] == metrics[protocol]["trained"]["threshold"]
    assert stored["threshold_protocol"] == protocol
    evaluated = ("seen", "unseen", "official-val") if protocol == "joint" else ("seen", "official-val")
    for name in evaluated:
        for model in ev.MODEL_NAMES:
            figures = stored[name][model]
            assert 0 <= figures["test"]["roc_auc"] <= 1
            assert set(figures["retrieval"]) >= {"precision_at_1", "recall_at_k", "map_at_r"}
            arrays = np.load(run_dir / "evaluation" / f"{name}_{model}.npz")
            assert arrays["neighbours"].shape == (len(arrays["retrieval_queries"]), 3)
            assert set(np.unique(arrays["test_first"])) <= set(arrays["retrieval_queries"])
            assert arrays["roc_far"][0] == 0 and arrays["roc_tar"][-1] == 1
    # official val: thresholds frozen from the run's protocol, no val part
    assert "val" not in stored["official-val"]["trained"]
    assert stored["official-val"]["raw_pixels"]["threshold"] == stored[protocol]["raw_pixels"]["threshold"]
    # The flat-colour classes: raw pixels separate them well (a sanity check of the wiring).
    assert stored["seen"]["raw_pixels"]["test"]["roc_auc"] > 0.7
    seen_test = np.load(run_dir / "pairs" / "seen_test.npz")
    pair_files = sorted(p.name for p in (run_dir / "pairs").iterdir())
    if protocol == "joint":
        # seen = held-out images of the 4 training classes only; unseen = classes 6-7
        assert set(labels[seen_test["indices"]]) == {0, 1, 2, 3}
        assert set(labels[np.load(run_dir / "pairs" / "unseen_test.npz")["indices"]]) == {6, 7}
        assert set(labels[np.load(run_dir / "pairs" / "joint_val.npz")["indices"]]) == {0, 1, 2, 3, 4, 5}
        assert "test" not in stored["joint"]["trained"] and "val" in stored["joint"]["trained"]
        assert pair_files == ["joint_val.npz", "official-val_test.npz", "seen_test.npz", "seen_val.npz",
                              "unseen_test.npz", "unseen_val.npz"]
    else:
        # a seen-trained model saw every class: the unseen protocol cannot be judged
        assert "skipped" in stored["unseen"] and set(labels[seen_test["indices"]]) == set(range(8))
        assert pair_files == ["official-val_test.npz", "seen_test.npz", "seen_val.npz"]
    assert list((run_dir / "embeddings").glob("model-*.npy"))


def test_evaluate_run_needs_the_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.keras"):
        ev.evaluate_run(tmp_path, None, None, smoke_config(), progress=False)


# --- image files and match ------------------------------------------------------------------------

def test_load_image_file_any_mode_and_size(tmp_path):
    Image.new("L", (100, 80), 200).save(tmp_path / "gray.png")
    Image.new("RGBA", (64, 64), (0, 0, 255, 0)).save(tmp_path / "clear.png")
    Image.new("RGB", (300, 200), (10, 20, 30)).save(tmp_path / "big.jpg")
    gray = ev.load_image_file(tmp_path / "gray.png")
    assert gray.shape == (64, 64, 3) and gray.dtype == np.float32 and np.allclose(gray, 200)
    assert np.allclose(ev.load_image_file(tmp_path / "clear.png"), 255)  # transparent -> white
    big = ev.load_image_file(tmp_path / "big.jpg", size=32)
    assert big.shape == (32, 32, 3) and abs(big[..., 2].mean() - 30) < 3


def test_load_image_file_errors_name_the_file(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ev.UnreadableImageError, match="broken.jpg"):
        ev.load_image_file(tmp_path / "broken.jpg")
    with pytest.raises(FileNotFoundError, match="nothere.png"):
        ev.load_image_file(tmp_path / "nothere.png")


def test_match_files_uses_the_stored_threshold(run_dir, tmp_path):
    Image.new("RGB", (64, 64), (200, 30, 30)).save(tmp_path / "a.png")
    Image.new("L", (90, 90), 40).save(tmp_path / "b.jpg")
    same = ev.match_files(run_dir / "siamese.keras", tmp_path / "a.png", tmp_path / "a.png")
    assert same["distance"] == pytest.approx(0, abs=1e-3) and same["match"] is True
    assert same["threshold"] == pytest.approx(0.8)
    other = ev.match_files(run_dir / "siamese.keras", tmp_path / "a.png", tmp_path / "b.jpg")
    assert other["match"] == (other["distance"] <= 0.8)
    with pytest.raises(ValueError, match="not a Siamese model"):
        ev.match_files(run_dir / "model.keras", tmp_path / "a.png", tmp_path / "a.png")


def test_all_models_share_the_first_models_hard_pairs(tmp_path):
    """With hard negatives, the trained model's neighbours decide the pairs every baseline is scored on."""
    labels = np.repeat(np.arange(6), 10).astype(np.int32)
    dataset = FakeDataset(colour_images(labels), labels)
    rng = np.random.default_rng(0)
    trained = rng.normal(size=(60, 5)).astype(np.float32)
    other = rng.normal(size=(60, 5)).astype(np.float32)
    embedders = {"trained": lambda idx: trained[idx], "raw_pixels": lambda idx: other[idx]}
    config = smoke_config(hard_negatives=True, max_positive_pairs=30, bootstrap_samples=5)
    parts = {"val": np.arange(0, 60, 2), "test": np.arange(1, 60, 2)}
    result = ev.evaluate_protocol("seen", parts, dataset, embedders, config, tmp_path)
    saved = np.load(tmp_path / "pairs" / "seen_test.npz")
    expected = ev.make_pairs(labels[parts["test"]], max_positive_pairs=30, seed=config.seed,
                             embeddings=trained[parts["test"]], hard_negatives=True)
    np.testing.assert_array_equal(saved["first"], expected.first)
    for model in embedders:
        arrays = np.load(tmp_path / "evaluation" / f"seen_{model}.npz")
        np.testing.assert_array_equal(arrays["test_first"], parts["test"][expected.first])
        assert result[model]["test"]["num_pairs"] == len(expected)
