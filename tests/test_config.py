"""The typed configuration: profiles, layering over a profile, exact types, finite floats, ranges,
unknown names, split counts, and config files that are not what they claim to be."""

import dataclasses
import json
import math
import os

import numpy as np
import pytest

from tinymatch.config import (
    CONFIG_FILE_LIMIT,
    PROFILES,
    Config,
    ConfigError,
    part_sizes,
    resolve_data_path,
    unseen_class_counts,
)

FIELDS = {spec.name: spec.type for spec in dataclasses.fields(Config)}
FLOAT_FIELDS = [name for name, kind in FIELDS.items() if kind == "float"]
NUMBER_FIELDS = [name for name, kind in FIELDS.items() if kind in ("int", "float")]
FREE_TEXT_FIELDS = ("data", "cache_dir", "weights")  # paths: checked where they are opened
CHOICE_FIELDS = [name for name, kind in FIELDS.items() if kind == "str" and name not in FREE_TEXT_FIELDS]


# --- profiles ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_is_valid_and_round_trips(profile, tmp_path):
    config = Config.from_profile(profile)
    assert config.profile == profile
    assert Config.load(config.save(tmp_path / "config.json")) == config


def test_gpu_profile_starts_offline_and_is_mirrored():
    gpu = Config.from_profile("gpu")
    assert gpu.weights == "" and gpu.backbone == "compact"  # nothing to download
    assert (gpu.image_size, gpu.stem_stride, gpu.width, gpu.max_filters, gpu.embedding_dim) == (64, 1, 64, 512, 1024)
    assert (gpu.classes_per_batch, gpu.images_per_class, gpu.warmup_epochs, gpu.epochs) == (64, 4, 20, 20)
    assert (gpu.learning_rate, gpu.finetune_learning_rate) == (3e-3, 1e-3)
    assert gpu.mixed_precision and gpu.test_time_flip and gpu.strategy == "mirrored"


def test_strategy_defaults_to_none():
    for profile in ("smoke", "cpu"):
        config = Config.from_profile(profile)
        assert (config.strategy, config.logical_devices) == ("none", 0)


def test_logical_devices_need_the_mirrored_strategy():
    assert Config.from_profile("smoke", strategy="mirrored", logical_devices=2).logical_devices == 2
    with pytest.raises(ConfigError, match="logical_devices=2 needs config.strategy='mirrored'"):
        Config.from_profile("smoke", logical_devices=2)


# --- layering ---------------------------------------------------------------------------------------

def test_a_partial_dict_is_layered_over_its_profile():
    # papermill -y '{config: {profile: smoke, max_positive_pairs: 100}}'
    config = Config.layered({"profile": "smoke", "max_positive_pairs": 100})
    expected = Config.from_profile("smoke").replace(max_positive_pairs=100)
    assert config == expected
    assert config.max_classes == 12  # the smoke profile's, not the dataclass default 0


def test_a_dict_without_profile_is_layered_over_the_default_profile():
    assert Config.layered({"margin": 0.3}) == Config.from_profile("cpu", margin=0.3)
    assert Config.layered({"margin": 0.3}, default_profile="smoke") == Config.from_profile("smoke", margin=0.3)
    assert Config.from_dict({"margin": 0.3}) == Config.from_profile("cpu", margin=0.3)


def test_a_profile_name_is_that_profile():
    # papermill -p config smoke (this used to fail: "dictionary update sequence element #0 ...")
    assert Config.layered("smoke") == Config.from_profile("smoke")
    assert Config.layered(" gpu ") == Config.from_profile("gpu")


@pytest.mark.parametrize("empty", [None, "", "  "])
def test_nothing_is_the_default_profile(empty):
    assert Config.layered(empty) == Config.from_profile("cpu")
    assert Config.layered(empty, default_profile="smoke") == Config.from_profile("smoke")


def test_a_json_object_string_is_layered_like_a_dict():
    assert Config.layered('{"profile": "smoke", "margin": 1}') == Config.from_profile("smoke", margin=1.0)


def test_a_config_is_passed_through():
    config = Config.from_profile("smoke", seed=3)
    assert Config.layered(config) is config


@pytest.mark.parametrize("value, message", [
    ("tiny", "profile name"), (42, "got int"), (["smoke"], "got list"),
    ({"profile": "tiny"}, "config.profile='tiny'"), ({"profile": None}, "config.profile=None"),
    ('{"profile": "smoke"', "not valid JSON"), ("[1, 2]", "profile name"),
])
def test_bad_layered_values_are_clear_errors(value, message):
    with pytest.raises(ConfigError, match=message):
        Config.layered(value)


def test_a_complete_saved_config_reads_back_whatever_its_profile(tmp_path):
    # Every field is named, so the profile's values do not matter: what was saved comes back.
    config = Config.from_profile("cpu", epochs=2, embedding_dim=64, steps_per_epoch=0, margin=0.25)
    assert Config.load(config.save(tmp_path / "config.json")) == config


def test_a_partial_config_file_is_layered_over_its_profile(tmp_path):
    path = tmp_path / "partial.json"
    path.write_text(json.dumps({"profile": "smoke", "margin": 0.3}))
    assert Config.load(path) == Config.from_profile("smoke", margin=0.3)
    path.write_text(json.dumps({"margin": 0.3}))
    assert Config.load(path) == Config.from_profile("cpu", margin=0.3)
    assert Config.load(path, default_profile="smoke") == Config.from_profile("smoke", margin=0.3)


def test_saved_environment_metadata_is_not_a_field(tmp_path):
    path = tmp_path / "config.json"
    values = Config.from_profile("smoke").to_dict()
    path.write_text(json.dumps({**values, "environment": {"python": "3.11"}}))
    assert Config.load(path) == Config.from_profile("smoke")


# --- unknown names ------------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda: Config.from_dict({"no_such_knob": 1, "other_knob": 2}),
    lambda: Config.layered({"profile": "smoke", "no_such_knob": 1, "other_knob": 2}),
    lambda: Config.from_profile("smoke", no_such_knob=1, other_knob=2),
    lambda: Config.from_profile("smoke").replace(no_such_knob=1, other_knob=2),
])
def test_unknown_names_are_rejected_and_named(make):
    with pytest.raises(ConfigError, match="no_such_knob, other_knob"):
        make()


def test_unknown_names_in_a_file_name_the_file(tmp_path):
    path = tmp_path / "typo.json"
    path.write_text('{"profile": "smoke", "epoch": 3}')
    with pytest.raises(ConfigError, match=r"typo\.json.*epoch"):
        Config.load(path)


# --- exact types ----------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value", [
    ("epochs", True), ("epochs", 3.0), ("epochs", "3"), ("seed", 1.5), ("seed", None),
    ("augment", "maybe"), ("augment", "false"), ("augment", [0]), ("augment", 1), ("augment", None),
    ("margin", "0.5"), ("margin", True), ("margin", None), ("margin", [0.5]),
    ("backbone", ["compact"]), ("backbone", None), ("data", 7), ("profile", 1),
    ("mixed_precision", "yes"), ("mixed_precision", 1), ("mixed_precision", None),
    ("stem_stride", 1.0), ("flip", False),
])
def test_wrong_types_are_errors_not_coercions(field, value):
    values = {"profile": "smoke", field: value} if field != "profile" else {field: value}
    with pytest.raises(ConfigError, match=f"config.{field}="):
        Config.layered(values)


def test_an_int_is_accepted_for_a_float_and_stored_as_a_float():
    config = Config.from_dict({"profile": "smoke", "margin": 1})
    assert type(config.margin) is float and config.margin == 1.0
    assert type(config.replace(dropout=0).dropout) is float
    assert type(Config(margin=2).margin) is float


def test_direct_construction_and_replace_are_checked_too():
    with pytest.raises(ConfigError, match="config.epochs=True"):
        Config(epochs=True)
    with pytest.raises(ConfigError, match="config.augment='no'"):
        Config.from_profile("smoke").replace(augment="no")


# --- finite floats and ranges -------------------------------------------------------------------------

@pytest.mark.parametrize("field", FLOAT_FIELDS)
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_every_float_field_must_be_finite(field, value):
    with pytest.raises(ConfigError, match=f"config.{field}=.*finite"):
        Config.from_profile("smoke", **{field: value})


def test_nan_in_a_json_file_is_refused(tmp_path):
    path = tmp_path / "nan.json"
    path.write_text('{"profile": "smoke", "margin": NaN}')
    with pytest.raises(ConfigError, match=r"nan\.json: config\.margin=nan: must be a finite number"):
        Config.load(path)


@pytest.mark.parametrize("field", NUMBER_FIELDS)
def test_every_number_field_has_a_range(field):
    # Every number field is a count, size, rate or fraction: negative values are always out of range.
    value = -1 if FIELDS[field] == "int" else -1.0
    with pytest.raises(ConfigError, match=f"config.{field}=-1"):
        Config.from_profile("smoke", **{field: value})


@pytest.mark.parametrize("field", CHOICE_FIELDS)
def test_every_text_field_that_is_not_a_path_is_a_choice(field):
    with pytest.raises(ConfigError, match=f"config.{field}='no-such-value': must be one of"):
        Config.layered({"profile": "smoke", field: "no-such-value"})


@pytest.mark.parametrize("field, value", [
    # issue 13, point 12
    ("eval_batch_size", 0), ("bootstrap_samples", -5), ("retrieval_top_k", 0), ("weight_decay", -0.1),
    # the rest of the ranges
    ("margin", -1.0), ("dropout", 1.0), ("zoom", 1.0), ("rotation", 0.6), ("translation", 1.0),
    ("brightness", 1.0), ("contrast", 1.5), ("max_positive_pairs", 0), ("seed", 2**32),
    ("image_size", 16), ("image_size", 4096), ("width", 2), ("embedding_dim", 1), ("epochs", 0),
    ("images_per_class", 1), ("classes_per_batch", 1), ("learning_rate", 0.0), ("learning_rate", 1.0),
    ("finetune_learning_rate", 1.0), ("warmup_margin", 1.5), ("triplet_softmax_weight", -0.5),
    ("val_fraction", 0.0), ("val_fraction", 1.5), ("target_far", 0.0), ("target_far", 1.0),
    ("weight_decay", 1.0), ("logical_devices", 65), ("stem_stride", 3), ("max_filters", -1),
    ("backbone", "alexnet"), ("loss", "contrastive"), ("distance_metric", "cosine"),
    ("warmup_head", "arcface"), ("strategy", "horovod"), ("flip", "diagonal"), ("protocol", "official-val"),
])
def test_out_of_range_values_name_the_field(field, value):
    with pytest.raises(ConfigError, match=f"config.{field}="):
        Config.from_profile("smoke", **{field: value})


@pytest.mark.parametrize("field, value", [
    ("bootstrap_samples", 0), ("dropout", 0.0), ("dropout", 0.5), ("rotation", 0.5), ("zoom", 0.0),
    ("weight_decay", 0.0), ("margin", 0.0), ("margin", 5), ("finetune_learning_rate", 0.0),
    ("early_stopping_patience", 0), ("steps_per_epoch", 0), ("seed", 0), ("seed", 2**32 - 1),
    ("flip", ""), ("retrieval_top_k", 1), ("eval_batch_size", 1), ("max_positive_pairs", 1),
])
def test_edge_values_inside_the_range_are_accepted(field, value):
    assert getattr(Config.from_profile("smoke", **{field: value}), field) == value


def test_fractions_must_leave_a_training_part():
    with pytest.raises(ConfigError, match="val_fraction \\+ config.test_fraction"):
        Config.from_profile("smoke", val_fraction=0.5, test_fraction=0.5)


def test_a_warmup_margin_needs_the_cosface_head():
    with pytest.raises(ConfigError, match="warmup_head='cosface'"):
        Config.from_profile("smoke", warmup_margin=0.2)
    assert Config.from_profile("smoke", warmup_head="cosface", warmup_margin=0.2).warmup_margin == 0.2


def test_weight_decay_needs_an_optimizer_that_applies_it():
    with pytest.raises(ConfigError, match="weight_decay=0.01 needs config.optimizer 'adamw' or 'sgd'"):
        Config.from_profile("smoke", weight_decay=0.01)
    for optimizer in ("adamw", "sgd"):
        assert Config.from_profile("smoke", optimizer=optimizer, weight_decay=0.01).weight_decay == 0.01


# --- split counts -----------------------------------------------------------------------------------

def test_too_few_images_per_class_for_validation_positives_is_an_error():
    # 5 images at 10%/10%: one val and one test image a class, so no positive pair in either part.
    with pytest.raises(ConfigError, match="max_images_per_class=5 .* 1 validation and 1 test"):
        Config.from_profile("smoke", max_images_per_class=5, val_fraction=0.1, test_fraction=0.1)
    assert Config.from_profile("smoke", max_images_per_class=20, val_fraction=0.1,
                               test_fraction=0.1).max_images_per_class == 20


def test_the_issue_papermill_example_is_a_clear_error_not_a_degenerate_split():
    # papermill -y '{config: {profile: smoke, max_classes: 6}}': 6 classes with the smoke profile's
    # 8 training classes leave 1 validation and 1 test class (no negative pair).
    with pytest.raises(ConfigError, match="max_classes=6 .* 1 validation and 1 test class"):
        Config.layered({"profile": "smoke", "max_classes": 6})
    fixed = Config.layered({"profile": "smoke", "max_classes": 6, "unseen_train_classes": 2,
                            "classes_per_batch": 2})
    assert (fixed.max_classes, fixed.unseen_train_classes) == (6, 2)


@pytest.mark.parametrize("classes", [1, 2, 3, 4])
def test_too_few_classes_is_an_error(classes):
    with pytest.raises(ConfigError, match=f"max_classes={classes}: must be 0 \\(all\\) or >= 5"):
        Config.from_profile("smoke", max_classes=classes, unseen_train_classes=1)


def test_part_sizes():
    assert part_sizes(500, 0.1, 0.1) == (50, 50)
    assert part_sizes(24, 0.2, 0.2) == (5, 5)
    assert part_sizes(5, 0.1, 0.1) == (1, 1)  # at least one each from 3 images on
    assert part_sizes(2, 0.4, 0.4) == (0, 1)  # one always stays for training
    assert unseen_class_counts(200, 150, 0.1, 0.1) == (150, 25, 25)
    assert unseen_class_counts(12, 8, 0.2, 0.2) == (8, 2, 2)
    assert unseen_class_counts(6, 8, 0.2, 0.2) == (4, 1, 1)  # 3/4 of the classes when 8 do not fit


def test_split_arithmetic_matches_the_split_the_data_package_makes(synthetic_dataset):
    from tinymatch import data

    config = Config.from_profile("smoke", seed=5)
    splits = data.make_splits_for(synthetic_dataset, config)
    labels = synthetic_dataset.labels
    for label in np.unique(labels[labels >= 0]):
        members = (labels == label) & (synthetic_dataset.subsets == "train")
        val, test = part_sizes(int(members.sum()), config.val_fraction, config.test_fraction)
        assert (int(np.sum(splits.seen[members] == "val")), int(np.sum(splits.seen[members] == "test"))) == (val, test)
    counts = tuple(len(np.unique(labels[splits.unseen == part])) for part in ("train", "val", "test"))
    classes = len(np.unique(labels[(labels >= 0) & (synthetic_dataset.subsets == "train")]))
    assert counts == unseen_class_counts(classes, config.unseen_train_classes, config.val_fraction,
                                         config.test_fraction)


# --- config files -----------------------------------------------------------------------------------

def test_bad_config_file_names_the_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="broken.json"):
        Config.load(path)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        Config.load(tmp_path / "missing.json")


@pytest.mark.parametrize("text, message", [
    ("[1, 2]", "must hold a JSON object"), ('"smoke"', "must hold a JSON object"),
    ('{"margin": 0.3, "margin": 0.4}', "names 'margin' twice"),
    ("[" * 100000 + "]" * 100000, "nested too deeply|JSON"),
])
def test_config_files_that_are_not_a_config_object(tmp_path, text, message):
    path = tmp_path / "odd.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        Config.load(path)


def test_a_directory_given_as_config_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        Config.load(tmp_path)


def test_a_fifo_given_as_config_is_refused_without_hanging(tmp_path):
    fifo = tmp_path / "config.fifo"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):
        Config.load(fifo)


def test_a_device_given_as_config_is_refused_without_reading_it():
    with pytest.raises(ConfigError, match="not a regular file"):
        Config.load("/dev/zero")


def test_a_huge_config_file_is_refused_without_reading_it_all(tmp_path):
    path = tmp_path / "huge.json"
    with path.open("wb") as handle:
        handle.truncate(CONFIG_FILE_LIMIT * 64)  # sparse: no disk used
    with pytest.raises(ConfigError, match="larger than"):
        Config.load(path)


def test_a_config_file_that_is_not_text_names_the_file(tmp_path):
    path = tmp_path / "binary.json"
    path.write_bytes(b'{"seed": "\xff\xfe"}')
    with pytest.raises(ConfigError, match="binary.json is not UTF-8"):
        Config.load(path)


# --- the rest ---------------------------------------------------------------------------------------

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


def test_mixed_precision_is_off_on_or_timed():
    assert Config.from_profile("smoke", mixed_precision="auto").mixed_precision == "auto"
    assert Config.from_profile("smoke", mixed_precision=True).mixed_precision is True
    with pytest.raises(ConfigError, match="config.mixed_precision='auto'.*multi-worker"):
        Config.from_profile("smoke", mixed_precision="auto", strategy="multi-worker")
