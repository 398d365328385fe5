"""Embedding and Siamese models: shapes, unit norm, backbones, save/reload, weights errors."""

from pathlib import Path

import numpy as np
import pytest
from model_file_cases import BAD_MODEL_FILES, keras_model_not_tinymatch

from tinymatch import model as model_module
from tinymatch.config import Config
from tinymatch.model import (build_embedding_model, build_siamese_model, embedding_from_siamese,
                             load_model, siamese_threshold)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(0, 255, (4, 64, 64, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def smoke_embedding():
    return build_embedding_model(Config.from_profile("smoke"))


def test_embedding_shape_and_unit_norm(smoke_embedding, images):
    embeddings = np.asarray(smoke_embedding(images))
    assert embeddings.shape == (4, Config.from_profile("smoke").embedding_dim)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    assert smoke_embedding.input_shape == (None, 64, 64, 3)


def test_stride_two_stem_runs_the_network_at_half_the_input_side():
    """A 64x64 input with stem_stride=2 gives the feature maps (and the cost) of a 32x32 input."""
    from tinymatch.model import build_compact_backbone

    strided = build_compact_backbone((64, 64, 3), width=8, stem_stride=2)
    half_size = build_compact_backbone((32, 32, 3), width=8)
    assert strided.output_shape == half_size.output_shape == (None, 2, 2, 64)
    stem = strided.get_layer("stem_conv")
    assert stem.kernel_size == (4, 4) and stem.strides == (2, 2)
    # Same layers and weights after the stem: only the stem kernel grows (3x3 -> 4x4).
    assert strided.count_params() - half_size.count_params() == (16 - 9) * 3 * 8


def test_max_filters_caps_the_last_stages():
    from tinymatch.model import build_compact_backbone

    capped = build_compact_backbone((32, 32, 3), width=8, max_filters=24)
    assert [capped.get_layer(f"stage{i}_conv2").filters for i in (1, 2, 3, 4)] == [8, 16, 24, 24]
    assert capped.output_shape == (None, 2, 2, 24)


def test_blocks_per_stage_adds_identity_blocks_at_each_stage_resolution():
    from tinymatch.model import build_compact_backbone

    single = build_compact_backbone((32, 32, 3), width=8)
    double = build_compact_backbone((32, 32, 3), width=8, blocks_per_stage=2)
    assert double.output_shape == single.output_shape == (None, 2, 2, 64)
    for stage, filters in zip((1, 2, 3, 4), (8, 16, 32, 64)):
        extra = double.get_layer(f"stage{stage}_block2_conv1")
        assert extra.strides == (1, 1) and extra.filters == filters
        # same channels in and out: an identity shortcut, no 1x1 projection
        assert f"stage{stage}_block2_proj" not in [layer.name for layer in double.layers]
    # each extra block: two 3x3 convs without bias and two BatchNorms (4 weights a channel)
    extra_weights = sum(2 * 9 * f * f + 2 * 4 * f for f in (8, 16, 32, 64))
    assert double.count_params() - single.count_params() == extra_weights


def test_no_lambda_layers(smoke_embedding):
    import keras

    def walk(model):
        for layer in model.layers:
            assert not isinstance(layer, keras.layers.Lambda), layer.name
            if isinstance(layer, keras.Model):
                walk(layer)

    walk(smoke_embedding)


def test_inference_is_deterministic_despite_augmentation(smoke_embedding, images):
    np.testing.assert_allclose(np.asarray(smoke_embedding(images)), np.asarray(smoke_embedding(images)))


@pytest.mark.parametrize("backbone,image_size", [("mobilenetv2", 64), ("inceptionv3", 75)])
def test_keras_applications_build_without_weights(backbone, image_size, images):
    config = Config.from_profile("smoke", backbone=backbone, image_size=image_size, weights="")
    embedding = build_embedding_model(config)
    assert np.asarray(embedding(images[:1])).shape == (1, config.embedding_dim)


def test_inception_below_minimum_size_names_image_size():
    with pytest.raises(ValueError, match="image_size"):
        build_embedding_model(Config.from_profile("smoke", backbone="inceptionv3", image_size=64))


def test_imagenet_without_network_fails_fast_with_advice(monkeypatch):
    monkeypatch.setattr(model_module, "_network_reachable", lambda timeout=3.0: False)
    monkeypatch.setattr(model_module, "_imagenet_weights_cached", lambda backbone: False)
    with pytest.raises(model_module.WeightsUnavailableError, match="local weights file"):
        build_embedding_model(Config.from_profile("smoke", backbone="mobilenetv2", weights="imagenet"))


def test_missing_weights_file_is_named(tmp_path):
    missing = tmp_path / "nope.h5"
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        build_embedding_model(Config.from_profile("smoke", backbone="mobilenetv2", weights=str(missing)))


def test_preprocessing_matches_keras_applications(images):
    import keras

    caffe = model_module.ApplicationPreprocessing("caffe")(images)
    np.testing.assert_allclose(np.asarray(caffe),
                               keras.applications.resnet50.preprocess_input(images.copy()), atol=1e-4)
    tf_mode = model_module.ApplicationPreprocessing("tf")(images)
    np.testing.assert_allclose(np.asarray(tf_mode),
                               keras.applications.mobilenet_v2.preprocess_input(images.copy()), atol=1e-5)


def test_siamese_save_reload_identical(smoke_embedding, images, tmp_path):
    siamese = build_siamese_model(smoke_embedding, threshold=0.8)
    before = siamese([images, images[::-1]])
    path = tmp_path / "siamese.keras"
    siamese.save(path)
    reloaded = load_model(path)
    after = reloaded([images, images[::-1]])
    np.testing.assert_array_equal(np.asarray(before["distance"]), np.asarray(after["distance"]))
    np.testing.assert_array_equal(np.asarray(before["match"]), np.asarray(after["match"]))
    assert siamese_threshold(reloaded) == pytest.approx(0.8)
    embedding = embedding_from_siamese(reloaded)
    np.testing.assert_array_equal(np.asarray(embedding(images)), np.asarray(smoke_embedding(images)))


def test_siamese_distance_and_decision(smoke_embedding, images):
    siamese = build_siamese_model(smoke_embedding, threshold=1e-4)
    out = siamese([images, images])
    np.testing.assert_allclose(np.asarray(out["distance"]), 0.0, atol=1e-3)
    np.testing.assert_array_equal(np.asarray(out["match"]), 1.0)


@pytest.mark.parametrize("metric", ["L2", "squared-L2", "angular"])
def test_siamese_with_training_mean_matches_numpy_and_reloads(smoke_embedding, images, tmp_path, metric):
    """The shipped model scores as the evaluation does (tinymatch.metrics), and keeps its mean."""
    from tinymatch.metrics import pair_distances
    from tinymatch.model import siamese_training_mean
    from tinymatch.pairs import Pairs

    embeddings = np.asarray(smoke_embedding(images))
    mean = (0.5 * embeddings.mean(axis=0)).astype(np.float32)
    siamese = build_siamese_model(smoke_embedding, threshold=0.8, distance_metric=metric, training_mean=mean)
    first, second = images, images[::-1]
    pairs = Pairs(np.arange(4), np.arange(4)[::-1], np.zeros(4, bool))
    want = pair_distances(embeddings, pairs, metric, training_mean=mean)
    np.testing.assert_allclose(np.asarray(siamese([first, second])["distance"]), want, atol=1e-5)
    siamese.save(tmp_path / "siamese.keras")
    reloaded = load_model(tmp_path / "siamese.keras")
    np.testing.assert_array_equal(siamese_training_mean(reloaded), mean)
    np.testing.assert_allclose(np.asarray(reloaded([first, second])["distance"]), want, atol=1e-5)
    assert siamese_training_mean(build_siamese_model(smoke_embedding, threshold=0.8)) is None


def test_load_model_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.keras"):
        load_model(tmp_path / "absent.keras")


def test_flip_averaged_model_is_mirror_invariant_and_reloads(smoke_embedding, images, tmp_path):
    from tinymatch.model import build_flip_averaged_model

    averaged = build_flip_averaged_model(smoke_embedding)
    direct = np.asarray(averaged(images))
    mirrored = np.asarray(averaged(images[:, :, ::-1]))
    np.testing.assert_allclose(direct, mirrored, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(direct, axis=1), 1.0, atol=1e-5)
    # It is the normalised sum of the two views of the wrapped embedding (shared weights).
    plain = np.asarray(smoke_embedding(images)) + np.asarray(smoke_embedding(images[:, :, ::-1]))
    np.testing.assert_allclose(direct, plain / np.linalg.norm(plain, axis=1, keepdims=True), atol=1e-5)
    averaged.save(tmp_path / "averaged.keras")
    np.testing.assert_allclose(np.asarray(load_model(tmp_path / "averaged.keras")(images)), direct,
                               atol=1e-6)


@pytest.mark.parametrize("overrides", [dict(image_size=32, augment=False), dict(image_size=32),
                                       dict(image_size=80), dict(stem_stride=2)])
def test_reloaded_model_called_directly_is_in_inference_mode(overrides, images, tmp_path):
    """`model(images)` on a reloaded .keras file: no augmentation, BatchNorm moving statistics.

    (keras.layers.Resizing saved `training=True` into the graph, which turned both on.)"""
    from tinymatch.model_files import save_model

    embedding = build_embedding_model(Config.from_profile("smoke", **overrides))
    save_model(embedding, tmp_path / "model.keras")
    reloaded = load_model(tmp_path / "model.keras")
    expected = embedding.predict(images, verbose=0)
    np.testing.assert_allclose(np.asarray(reloaded(images)), expected, atol=1e-5)
    np.testing.assert_allclose(np.asarray(reloaded(images[:2])), expected[:2], atol=1e-5)


def test_cosine_classifier_scores_are_cosines_and_ignore_lengths(tmp_path):
    """Class scores depend on angles only: scaling an input or a class centre changes nothing."""
    import keras

    from tinymatch.model import CosineClassifier, load_model

    rng = np.random.default_rng(11)
    inputs = rng.normal(size=(5, 8)).astype(np.float32)
    layer = CosineClassifier(3, name="classifier")
    scores = np.asarray(layer(inputs))
    centres = layer.centres.numpy()
    expected = (inputs / np.linalg.norm(inputs, axis=1, keepdims=True)) @ (
        centres / np.linalg.norm(centres, axis=0, keepdims=True))
    np.testing.assert_allclose(scores, expected, atol=1e-6)
    np.testing.assert_allclose(np.asarray(layer(7.0 * inputs)), scores, atol=1e-6)
    layer.centres.assign(centres * np.array([0.1, 1.0, 30.0], np.float32))
    np.testing.assert_allclose(np.asarray(layer(inputs)), scores, atol=1e-6)
    # Registered: a model holding it reloads from a .keras file with the same outputs.
    model_input = keras.Input((8,))
    model = keras.Model(model_input, CosineClassifier(3, name="classifier")(model_input))
    model.save(tmp_path / "head.keras")
    np.testing.assert_allclose(np.asarray(load_model(tmp_path / "head.keras")(inputs)),
                               np.asarray(model(inputs)), atol=1e-6)


# --- model files that are not tinymatch models (issue 13) -----------------------------------------

@pytest.fixture(scope="module")
def real_model_file(tmp_path_factory, smoke_embedding):
    path = tmp_path_factory.mktemp("real") / "model.keras"
    smoke_embedding.save(path)
    return path


@pytest.mark.parametrize("case", sorted(BAD_MODEL_FILES))
def test_a_file_that_is_not_a_tinymatch_model_is_one_clear_error(case, tmp_path, real_model_file, monkeypatch):
    import os

    path = BAD_MODEL_FILES[case](tmp_path, real_model_file)
    monkeypatch.setattr(os, "system", lambda *a: pytest.fail("code from a model file ran"))
    with pytest.raises(model_module.NotATinymatchModelError) as caught:
        load_model(path)
    message = str(caught.value)
    assert f"{path} is not a tinymatch model" in message and "\n" not in message


def test_foreign_classes_are_refused_before_keras_reads_the_file(tmp_path, real_model_file):
    path = BAD_MODEL_FILES["foreign_module"](tmp_path, real_model_file)
    with pytest.raises(model_module.NotATinymatchModelError, match="'system' of module 'os'"):
        model_module.check_model_archive(path)
    model_module.check_model_archive(real_model_file)  # the real one passes


def test_the_committed_reference_models_still_load():
    reference = Path(__file__).resolve().parents[1] / "reports" / "reference"
    if not (reference / "siamese.keras").is_file():  # committed only when under 5 MiB (Makefile)
        pytest.skip("reports/reference holds no model files")
    siamese = load_model(reference / "siamese.keras")
    assert len(siamese.inputs) == 2 and 0 < siamese_threshold(siamese)
    assert len(load_model(reference / "model.keras").inputs) == 1


def test_a_valid_keras_model_that_is_not_tinymatch_still_loads_as_keras(tmp_path):
    """load_model reads any safe Keras model; what it must be is checked where it is used
    (embed.load_embedding_model, match.match_files)."""
    assert load_model(keras_model_not_tinymatch(tmp_path)).input_shape == (None, 10)
