"""Verification reports and evaluate_run (protocols -> metrics.json) on tiny synthetic arrays and a
tiny model. Pairs, embeddings and image files have their own test files."""

import json

import keras
import numpy as np
import pytest
from evaluation_fakes import FakeDataset, colour_images

from tinymatch import evaluate as ev
from tinymatch.config import Config
from tinymatch.rundir import evaluation_array_keys, read_evaluation_arrays, read_pairs_arrays

# --- helpers --------------------------------------------------------------------------------------


def smoke_config(**overrides):
    return Config.from_profile("smoke", augment=False, **overrides)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run dir with a random-weights smoke model.keras, siamese.keras, training.json and config.json."""
    from tinymatch import model as model_module

    run = tmp_path_factory.mktemp("run")
    config = smoke_config()
    keras.utils.set_random_seed(0)
    embedding = model_module.build_embedding_model(config)
    embedding.save(run / "model.keras")
    model_module.build_siamese_model(embedding, threshold=0.8).save(run / "siamese.keras")
    (run / "training.json").write_text(json.dumps({"threshold": 0.8}))  # what training chose
    config.save(run / "config.json")
    return run


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
            arrays = read_evaluation_arrays(run_dir, name, model)
            assert arrays["neighbours"].shape == (len(arrays["retrieval_queries"]), 3)
            assert set(np.unique(arrays["test_first"])) <= set(arrays["retrieval_queries"])
            assert arrays["roc_far"][0] == 0 and arrays["roc_tar"][-1] == 1
    # One threshold per model, chosen on the run's protocol, judges every protocol; the shipped
    # Siamese model holds the trained one and decides its sample of test pairs as the tables do.
    for name in evaluated:
        for model in ev.MODEL_NAMES:
            assert stored[name][model]["threshold"] == stored[protocol][model]["threshold"]
            assert stored[name][model]["test"]["confusion"]["threshold"] == stored[name][model]["threshold"]
    assert ev.stored_threshold(run_dir)[0] == pytest.approx(stored["threshold"], abs=1e-6)
    siamese = stored["siamese"]
    assert siamese["threshold"] == stored["threshold"]
    # training's threshold, also when this run dir is evaluated again (the second protocol), by
    # which time siamese.keras holds the first evaluation's
    assert siamese["threshold_from_training"] == pytest.approx(0.8)
    for name in ("seen", "unseen") if protocol == "joint" else ("seen",):
        check = siamese[name]
        assert check["agreement"] == 1.0 and check["max_distance_difference"] < 1e-4
        assert 0 < check["pairs"] <= 2 * ev.SIAMESE_CHECK_PAIRS and 0 <= check["accuracy"] <= 1
    # official val: thresholds frozen from the run's protocol, no val part
    assert "val" not in stored["official-val"]["trained"]
    assert stored["official-val"]["raw_pixels"]["threshold"] == stored[protocol]["raw_pixels"]["threshold"]
    # The flat-colour classes: raw pixels separate them well (a sanity check of the wiring).
    assert stored["seen"]["raw_pixels"]["test"]["roc_auc"] > 0.7
    seen_test = read_pairs_arrays(run_dir, "seen", "test")
    assert set(read_evaluation_arrays(run_dir, "seen", "trained")) == set(evaluation_array_keys())
    assert set(read_evaluation_arrays(run_dir, "official-val", "trained")) == set(evaluation_array_keys(("test",)))
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


def test_test_parts_alone_give_the_full_evaluations_test_figures(run_dir, tmp_path):
    """The ablation's cheap evaluation: same pairs, AUC and retrieval as evaluate_run on the test
    parts, the training threshold, and no val part."""
    import shutil

    labels = np.repeat(np.arange(10), 8).astype(np.int32)
    dataset = FakeDataset(colour_images(labels), labels)
    config = smoke_config(bootstrap_samples=0, max_positive_pairs=40, retrieval_top_k=3)
    run = tmp_path / "run"
    run.mkdir()
    for name in ("model.keras", "siamese.keras", "config.json"):
        shutil.copy(run_dir / name, run / name)
    (run / "training.json").write_text(json.dumps({"threshold": 0.75, "finished": True}))
    lean = ev.evaluate_test_parts(run, dataset, make_split(labels), config)
    assert json.loads((run / "test_metrics.json").read_text()) == json.loads(json.dumps(lean))
    full = ev.evaluate_run(run, dataset, make_split(labels), config, progress=False, baselines=False)
    for protocol in ("seen", "unseen"):
        got, want = lean[protocol]["trained"], full[protocol]["trained"]
        assert "val" not in got and got["threshold"] == 0.75
        assert got["test"]["roc_auc"] == want["test"]["roc_auc"]
        assert got["retrieval"] == want["retrieval"]
        assert got["test"]["confusion"]["threshold"] == 0.75
    assert "official-val" not in lean


def test_training_mean_normalisation_scores_the_trained_model_and_ships_in_the_siamese(run_dir, tmp_path):
    """score_normalisation="training-mean": the trained model's pairs and retrieval use the mean of
    its training images' embeddings, siamese.keras carries it and decides as the tables do, and
    the baselines and the pairs are those of the plain evaluation."""
    import shutil

    from tinymatch import model as model_module
    from tinymatch.metrics import pair_distances, roc_auc
    from tinymatch.pairs import Pairs

    labels = np.repeat(np.arange(10), 8).astype(np.int32)
    dataset = FakeDataset(colour_images(labels), labels)
    split = make_split(labels)
    results = {}
    for normalisation in ("none", "training-mean"):
        run = tmp_path / normalisation
        run.mkdir()
        for name in ("model.keras", "siamese.keras", "config.json", "training.json"):
            shutil.copy(run_dir / name, run / name)
        config = smoke_config(bootstrap_samples=0, max_positive_pairs=40, retrieval_top_k=3,
                              score_normalisation=normalisation)
        results[normalisation] = (run, ev.evaluate_run(run, dataset, split, config, progress=False))
    (plain_run, plain), (run, normalised) = results["none"], results["training-mean"]
    training = np.flatnonzero(split.seen == "train")
    training = training[labels[training] < 4]  # 'joint' trains on the seen-train images of classes 0-3
    assert normalised["score_normalisation"] == "training-mean" and plain["score_normalisation"] == "none"
    assert normalised["training_mean_images"] == len(training) and plain["training_mean_images"] == 0
    embedding = model_module.load_model(run / "model.keras")
    unit = np.asarray(embedding.predict(dataset.images[training].astype(np.float32), verbose=0), np.float64)
    want_mean = (unit / np.linalg.norm(unit, axis=1, keepdims=True)).mean(axis=0)
    shipped = model_module.siamese_training_mean(model_module.load_model(run / "siamese.keras"))
    np.testing.assert_allclose(shipped, want_mean, atol=1e-5)
    for protocol in ("seen", "unseen"):
        check = normalised["siamese"][protocol]
        assert check["agreement"] == 1.0 and check["max_distance_difference"] < 1e-4
        # the same pairs as the plain evaluation; the trained model's AUC from the normalised distance
        stored = read_pairs_arrays(run, protocol, "test")
        np.testing.assert_array_equal(stored["first"], read_pairs_arrays(plain_run, protocol, "test")["first"])
        embeddings = np.asarray(embedding.predict(dataset.images[stored["indices"]].astype(np.float32), verbose=0))
        pairs = Pairs(stored["first"], stored["second"], stored["same"])
        want_auc = roc_auc(pair_distances(embeddings, pairs, "L2", training_mean=shipped), pairs.same)
        assert normalised[protocol]["trained"]["test"]["roc_auc"] == pytest.approx(want_auc, abs=1e-6)
        for baseline in ("raw_pixels", "untrained"):
            assert normalised[protocol][baseline]["test"] == plain[protocol][baseline]["test"]
    plain_siamese = model_module.load_model(plain_run / "siamese.keras")
    assert model_module.siamese_training_mean(plain_siamese) is None


def test_evaluate_run_needs_the_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.keras"):
        ev.evaluate_run(tmp_path, None, None, smoke_config(), progress=False)


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
