"""The typed configuration: profiles, validation, JSON round trip, papermill-style coercion."""

import json

import pytest

from tinymatch.config import PROFILES, Config, resolve_data_path


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_is_valid_and_named(profile):
    config = Config.from_profile(profile)
    assert config.profile == profile


def test_round_trip_through_json(tmp_path):
    config = Config.from_profile("smoke", margin=0.3, loss="hard")
    path = config.save(tmp_path / "config.json")
    assert Config.load(path) == config
    assert json.loads(path.read_text())["margin"] == 0.3


def test_papermill_values_are_coerced_to_declared_types():
    # papermill and JSON hand over ints where floats are declared, strings for booleans.
    config = Config.from_dict({"margin": 1, "augment": "false", "epochs": 3.0})
    assert type(config.margin) is float and config.margin == 1.0
    assert config.augment is False and config.epochs == 3


@pytest.mark.parametrize(
    "field, value",
    [("backbone", "alexnet"), ("loss", "contrastive"), ("images_per_class", 1), ("margin", -1.0),
     ("val_fraction", 1.5), ("distance_metric", "cosine"), ("epochs", 0),
     ("stem_stride", 3), ("max_filters", -1), ("warmup_head", "arcface"), ("warmup_margin", 1.5),
     ("triplet_softmax_weight", -0.5)],
)
def test_bad_values_name_the_parameter(field, value):
    with pytest.raises(ValueError, match=field):
        Config.from_dict({field: value})


def test_a_warmup_margin_needs_the_cosface_head():
    with pytest.raises(ValueError, match="warmup_head='cosface'"):
        Config.from_dict({"warmup_margin": 0.2})
    assert Config.from_dict({"warmup_head": "cosface", "warmup_margin": 0.2}).warmup_margin == 0.2


def test_unknown_parameter_is_rejected():
    with pytest.raises(ValueError, match="no_such_knob"):
        Config.from_dict({"no_such_knob": 1})


def test_bad_config_file_names_the_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="broken.json"):
        Config.load(path)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        Config.load(tmp_path / "missing.json")


def test_training_key_ignores_evaluation_only_fields():
    a = Config.from_profile("smoke")
    b = a.replace(bootstrap_samples=999, data="/elsewhere")
    c = a.replace(margin=0.9)
    assert a.training_key() == b.training_key()
    assert a.training_key() != c.training_key()


def test_data_path_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv("TINYMATCH_DATA", raising=False)
    assert resolve_data_path(str(tmp_path)) == tmp_path
    monkeypatch.setenv("TINYMATCH_DATA", str(tmp_path / "x.zip"))
    assert resolve_data_path(None) == tmp_path / "x.zip"
