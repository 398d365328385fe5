"""`tinymatch evaluate` and `tinymatch match` end to end on a synthetic dataset and a tiny model."""

import json

import keras
import pytest
from image_cases import BAD_IMAGES, same_picture_in_other_encodings
from model_file_cases import BAD_MODEL_FILES, keras_model_not_tinymatch
from PIL import Image

from tinymatch import cli
from tinymatch.config import Config

THRESHOLD = 0.7


def make_run(root, data_path, cache_dir, **overrides):
    """A run dir like train writes it: config.json, model.keras, siamese.keras (random weights)."""
    from tinymatch import model as model_module

    run = root / "run"
    run.mkdir()
    config = Config.from_profile("smoke", data=str(data_path), cache_dir=str(cache_dir), augment=False,
                                 unseen_train_classes=4, max_positive_pairs=60, bootstrap_samples=10,
                                 **overrides)
    keras.utils.set_random_seed(0)
    embedding = model_module.build_embedding_model(config)
    embedding.save(run / "model.keras")
    model_module.build_siamese_model(embedding, THRESHOLD).save(run / "siamese.keras")
    config.save(run / "config.json")
    return run


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    from tinymatch.synthetic import make_synthetic_dataset

    root = tmp_path_factory.mktemp("cli")
    data_path = make_synthetic_dataset(root / "data", num_classes=8, images_per_class=12, val_per_class=3,
                                       test_images=0, grayscale=1)
    run = make_run(root, data_path, root / "cache")
    return {"root": root, "data": data_path, "run": run}


def run_cli(capsys, *argv):
    code = cli.main(["-q", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --- evaluate -------------------------------------------------------------------------------------

def test_evaluate_seen_writes_json_with_threshold(workspace, capsys):
    out = workspace["root"] / "seen.json"
    code, stdout, _ = run_cli(capsys, "evaluate", "--model", workspace["run"] / "model.keras",
                              "--split", "seen", "--out", out)
    assert code == 0 and "metrics written" in stdout
    metrics = json.loads(out.read_text())
    trained = metrics["trained"]
    assert metrics["split"] == "seen" and metrics["threshold"] == trained["threshold"]
    assert "val part" in metrics["threshold_source"]
    for key in ("roc_auc", "roc_auc_ci95", "eer", "tar_at_far", "confusion"):
        assert key in trained["test"]
    assert set(trained["retrieval"]) >= {"precision_at_1", "recall_at_k", "map_at_r"}
    assert list((workspace["run"] / "embeddings").glob("model-*.npy"))


def test_evaluate_unseen_with_baselines_prints_json(workspace, capsys):
    code, stdout, _ = run_cli(capsys, "evaluate", "--model", workspace["run"] / "model.keras",
                              "--split", "unseen", "--baselines")
    assert code == 0
    metrics = json.loads(stdout)
    assert {"trained", "raw_pixels", "untrained"} <= set(metrics)
    assert metrics["num_test_classes"] >= 2


def test_evaluate_official_val_uses_the_stored_threshold(workspace, capsys):
    code, stdout, _ = run_cli(capsys, "evaluate", "--model", workspace["run"] / "model.keras",
                              "--split", "official-val")
    assert code == 0
    metrics = json.loads(stdout)
    assert metrics["threshold"] == pytest.approx(THRESHOLD)
    assert metrics["threshold_source"].endswith("siamese.keras")
    assert metrics["num_test_images"] == 8 * 3 and metrics["num_test_classes"] == 8
    assert "val" not in metrics["trained"]


def test_evaluate_uses_split_csv_beside_the_model(workspace, capsys, monkeypatch):
    from tinymatch import data

    run = workspace["run"]
    config = Config.load(run / "config.json")
    dataset = data.load_dataset_for(config, progress=False)
    splits = data.make_splits(dataset, seed=99, val_fraction=0.25, test_fraction=0.25, unseen_train_classes=4)
    splits.save(run / "split.csv", dataset)
    monkeypatch.setattr(data, "make_splits_for", lambda *a, **k: pytest.fail("split.csv was ignored"))
    try:
        code, stdout, _ = run_cli(capsys, "evaluate", "--model", run / "model.keras", "--split", "seen")
    finally:
        (run / "split.csv").unlink()
    assert code == 0
    # Restricted to what the model never saw (the smoke profile trains on the 'joint' protocol).
    expected = splits.evaluation_indices(config.protocol, "seen", "test")
    assert json.loads(stdout)["num_test_images"] == len(expected)


def test_evaluate_official_val_without_val_images_is_one_line_error(tmp_path, capsys):
    from tinymatch.synthetic import make_synthetic_dataset

    data_path = make_synthetic_dataset(tmp_path / "data", num_classes=6, images_per_class=10,
                                       val_per_class=0, test_images=0)
    run = make_run(tmp_path, data_path, tmp_path / "cache")
    code, _, stderr = run_cli(capsys, "evaluate", "--model", run / "model.keras", "--split", "official-val")
    assert code == 2
    assert "official val" in stderr and len(stderr.strip().splitlines()) == 1


def test_evaluate_unseen_of_a_seen_trained_model_is_one_line_error(workspace, tmp_path, capsys):
    """A model trained on the 'seen' protocol saw every class: 'unseen' cannot be judged."""
    run = make_run(tmp_path, workspace["data"], workspace["root"] / "cache", protocol="seen")
    code, _, stderr = run_cli(capsys, "evaluate", "--model", run / "model.keras", "--split", "unseen")
    assert code == 2 and "joint" in stderr and len(stderr.strip().splitlines()) == 1


def test_evaluate_missing_model_is_one_line_error(tmp_path, capsys):
    code, _, stderr = run_cli(capsys, "evaluate", "--model", tmp_path / "nope" / "model.keras")
    assert code == 2 and "model.keras" in stderr


# --- match ----------------------------------------------------------------------------------------

@pytest.fixture()
def images(tmp_path):
    Image.new("RGB", (64, 64), (250, 10, 10)).save(tmp_path / "red.png")
    Image.new("LA", (128, 96), (120, 200)).save(tmp_path / "gray_alpha.png")
    Image.new("RGB", (64, 64), (10, 10, 250)).save(tmp_path / "blue.jpg")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff truncated")
    return tmp_path


def test_match_prints_distance_threshold_and_verdict(workspace, images, capsys):
    siamese = workspace["run"] / "siamese.keras"
    code, stdout, _ = run_cli(capsys, "match", "--model", siamese, images / "red.png", images / "red.png")
    assert code == 0 and stdout.strip().endswith("MATCH") and "NO MATCH" not in stdout
    assert f"threshold {THRESHOLD:.4f}" in stdout
    code, stdout, _ = run_cli(capsys, "match", "--model", siamese, "--json", images / "red.png",
                              images / "gray_alpha.png")
    result = json.loads(stdout)
    assert code == 0 and result["threshold"] == pytest.approx(THRESHOLD)
    assert result["match"] == (result["distance"] <= THRESHOLD)


def test_match_unreadable_or_missing_image_is_one_line_error(workspace, images, capsys):
    siamese = workspace["run"] / "siamese.keras"
    code, _, stderr = run_cli(capsys, "match", "--model", siamese, images / "red.png", images / "broken.jpg")
    assert code == 2 and "broken.jpg" in stderr and len(stderr.strip().splitlines()) == 1
    code, _, stderr = run_cli(capsys, "match", "--model", siamese, images / "missing.png", images / "red.png")
    assert code == 2 and "missing.png" in stderr
    code, _, stderr = run_cli(capsys, "match", "--model", images / "nothing.keras", images / "red.png",
                              images / "red.png")
    assert code == 2 and "nothing.keras" in stderr


def one_line_error(code, stderr, *names):
    """A failed command: exit status 2, one line on stderr that names the file, no traceback."""
    lines = stderr.strip().splitlines()
    return (code == 2 and len(lines) == 1 and "Traceback" not in stderr
            and all(str(name) in lines[0] for name in names))


# --- hostile images and model files (issue 13) ----------------------------------------------------

@pytest.mark.parametrize("case", BAD_IMAGES)
def test_match_hostile_image_is_one_line_error(case, workspace, images, tmp_path, capsys):
    make, fragment = BAD_IMAGES[case]
    try:
        bad = make(tmp_path)
    except OSError as err:
        pytest.skip(f"cannot create the {case} input here: {err}")
    code, stdout, stderr = run_cli(capsys, "match", "--model", workspace["run"] / "siamese.keras",
                                   images / "red.png", bad)
    assert one_line_error(code, stderr, bad) and fragment in stderr and not stdout


def test_match_a_16_bit_copy_of_an_image_matches_it(workspace, tmp_path, capsys):
    """(tests/test_match.py reads every other high-bit-depth encoding back as the 8-bit picture)"""
    original, copies = same_picture_in_other_encodings(tmp_path)
    code, stdout, _ = run_cli(capsys, "match", "--model", workspace["run"] / "siamese.keras", "--json",
                              original, copies["png_16_bit_gray"])
    result = json.loads(stdout)
    assert code == 0 and result["match"] and result["distance"] < 1e-4


@pytest.mark.parametrize("case", sorted(BAD_MODEL_FILES) + ["keras_model_not_tinymatch"])
def test_match_and_evaluate_with_a_model_that_is_not_tinymatch(case, workspace, images, tmp_path, capsys):
    if case == "keras_model_not_tinymatch":
        model_file = keras_model_not_tinymatch(tmp_path)
    else:
        model_file = BAD_MODEL_FILES[case](tmp_path, workspace["run"] / "siamese.keras")
    code, _, stderr = run_cli(capsys, "match", "--model", model_file, images / "red.png", images / "red.png")
    assert one_line_error(code, stderr, model_file) and "tinymatch" in stderr.split(":", 1)[1]
    code, _, stderr = run_cli(capsys, "evaluate", "--model", model_file, "--data", workspace["data"],
                              "--split", "official-val")
    assert one_line_error(code, stderr, model_file) and "is not a tinymatch model" in stderr


# --- a run evaluated on another copy of its dataset (issue 18) ------------------------------------

@pytest.fixture(scope="module")
def trained_on_train_only(tmp_path_factory):
    """A smoke run trained (briefly) on a train-only synthetic dataset, and three datasets to
    evaluate it on: the same train images with val/ and test/ added, and two other datasets."""
    from tinymatch.synthetic import make_synthetic_dataset
    from tinymatch.train import train

    root = tmp_path_factory.mktemp("official_val")
    options = dict(num_classes=8, images_per_class=12, grayscale=1, seed=3)
    train_only = make_synthetic_dataset(root / "train_only", val_per_class=0, test_images=0, **options)
    config = Config.from_profile("smoke", data=str(train_only), cache_dir=str(root / "cache"),
                                 unseen_train_classes=4, classes_per_batch=4, epochs=1, steps_per_epoch=2,
                                 max_positive_pairs=60, bootstrap_samples=5)
    run = root / "run"
    train(config, run, progress=False)
    datasets = {
        "with_val": make_synthetic_dataset(root / "with_val", val_per_class=3, test_images=2, **options),
        "other_with_val": make_synthetic_dataset(root / "other", val_per_class=3, test_images=0,
                                                 **{**options, "images_per_class": 11}),
        "other_train_only": make_synthetic_dataset(root / "other_train_only", val_per_class=0,
                                                   test_images=0, **{**options, "num_classes": 9}),
    }
    return run, datasets


@pytest.mark.parametrize("split", ["official-val", "seen", "unseen"])
def test_a_run_trained_without_val_evaluates_on_its_dataset_with_val_added(trained_on_train_only, split, capsys):
    from tinymatch import data
    from tinymatch.rundir import RunDir

    run, datasets = trained_on_train_only
    code, stdout, stderr = run_cli(capsys, "evaluate", "--model", run / "model.keras", "--data",
                                   datasets["with_val"], "--split", split)
    assert code == 0, stderr
    metrics = json.loads(stdout)
    assert metrics["split"] == split and 0 <= metrics["trained"]["test"]["roc_auc"] <= 1
    if split == "official-val":  # every labelled val image, at the run's stored threshold
        assert metrics["num_test_images"] == 8 * 3 and metrics["threshold_source"].endswith("siamese.keras")
        return
    # seen/unseen: the run's split.csv, applied to the same train images of the larger dataset
    config = Config.load(RunDir(run).config)
    train_only = data.load_dataset_for(config, progress=False)
    expected = data.Splits.load(RunDir(run).split, train_only).evaluation_indices(config.protocol, split, "test")
    assert metrics["num_test_images"] == len(expected)


def test_a_different_dataset_names_the_protocols_that_can_still_run(trained_on_train_only, capsys):
    run, datasets = trained_on_train_only
    for split in ("seen", "unseen"):
        code, _, stderr = run_cli(capsys, "evaluate", "--model", run / "model.keras", "--data",
                                  datasets["other_with_val"], "--split", split)
        assert one_line_error(code, stderr, "split.csv") and "official-val" in stderr
    code, stdout, stderr = run_cli(capsys, "evaluate", "--model", run / "model.keras", "--data",
                                   datasets["other_with_val"], "--split", "official-val")
    assert code == 0 and json.loads(stdout)["num_test_images"] == 8 * 3, stderr
    code, _, stderr = run_cli(capsys, "evaluate", "--model", run / "model.keras", "--data",
                              datasets["other_train_only"], "--split", "seen")
    assert one_line_error(code, stderr, "split.csv") and "no protocol can run" in stderr
