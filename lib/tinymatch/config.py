"""The one typed configuration of a tinymatch run.

A `Config` is what notebooks receive as papermill parameters (as a plain dict, see `Config.to_dict`),
what the CLI reads with `--config FILE`, and what every run saves beside its outputs as
`config.json`. Profiles (`smoke`, `cpu`, `gpu`) are named starting points; any field can be
overridden on top of a profile.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

# --- the shared vocabulary: every other module imports these names from here ----------------------
PROFILES = ("smoke", "cpu", "gpu")
BACKBONES = ("compact", "resnet50", "vgg16", "inceptionv3", "mobilenetv2", "efficientnetb0")
LOSSES = ("semihard", "hard")
WARMUP_HEADS = ("normface", "cosface")
DISTANCE_METRICS = ("L2", "squared-L2", "angular")
THRESHOLD_METHODS = ("accuracy", "youden", "far")
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


@dataclass
class Config:
    """Every knob of a run. Field comments say what the field does and its unit."""

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
    width: int = 32  # compact backbone: filters of the first stage (doubles per stage)
    # compact backbone: stride of the first convolution. 2 = a 4x4 stride-2 stem: the network runs
    # at half the input's side (the cost of a half-size input) but its stem sees every pixel.
    stem_stride: int = 1
    max_filters: int = 0  # compact backbone: cap on any stage's filters (0 = no cap)
    embedding_dim: int = 128
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
    # Weight of the warm-up's classification loss kept on beside the triplet loss in the triplet
    # phase (the head carries over from the warm-up). 0 = the triplet loss alone.
    triplet_softmax_weight: float = 0.0
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    finetune_learning_rate: float = 0.0  # triplet-phase peak LR after a warm-up; 0 = learning_rate
    lr_schedule: str = "cosine"  # cosine | constant
    weight_decay: float = 0.0
    epochs: int = 10
    steps_per_epoch: int = 0  # 0 = one pass over the training images
    early_stopping_patience: int = 3
    jit_compile: bool = False
    mixed_precision: bool = False  # half-precision compute: float16 on a GPU, bfloat16 on a CPU

    # --- evaluation --------------------------------------------------------------------------------
    max_positive_pairs: int = 5000  # per split part; as many negatives are drawn
    hard_negatives: bool = False
    threshold_method: str = "accuracy"
    target_far: float = 1e-2  # used when threshold_method == "far"
    bootstrap_samples: int = 200
    retrieval_top_k: int = 5
    eval_batch_size: int = 512

    def __post_init__(self) -> None:
        self.validate()

    # ----------------------------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ValueError naming the offending parameter."""

        def choice(name: str, allowed: tuple[str, ...]) -> None:
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"config.{name}={value!r}: must be one of {', '.join(allowed)}")

        def positive(name: str, minimum: float = 1) -> None:
            value = getattr(self, name)
            if value < minimum:
                raise ValueError(f"config.{name}={value!r}: must be >= {minimum}")

        choice("profile", PROFILES)
        choice("backbone", BACKBONES)
        choice("loss", LOSSES)
        choice("distance_metric", DISTANCE_METRICS)
        choice("threshold_method", THRESHOLD_METHODS)
        choice("protocol", TRAINING_PROTOCOLS)
        choice("lr_schedule", ("cosine", "constant"))
        choice("optimizer", ("adam", "adamw", "sgd"))
        choice("warmup_head", WARMUP_HEADS)
        positive("classes_per_batch", 2)
        positive("images_per_class", 2)
        positive("image_size", 32)
        positive("embedding_dim", 2)
        positive("epochs", 1)
        positive("width", 4)
        if self.stem_stride not in (1, 2):
            raise ValueError(f"config.stem_stride={self.stem_stride!r}: must be 1 or 2")
        for name in ("max_classes", "max_images_per_class", "steps_per_epoch", "warmup_epochs",
                     "freeze_backbone_epochs", "early_stopping_patience", "max_filters"):
            positive(name, 0)
        if not 0 < self.learning_rate < 1:
            raise ValueError(f"config.learning_rate={self.learning_rate!r}: must be in (0, 1)")
        if not 0 <= self.finetune_learning_rate < 1:
            raise ValueError(f"config.finetune_learning_rate={self.finetune_learning_rate!r}: "
                             "must be in [0, 1) (0 = learning_rate)")
        if self.margin < 0:
            raise ValueError(f"config.margin={self.margin!r}: must be >= 0")
        if not 0 <= self.warmup_margin < 1:
            raise ValueError(f"config.warmup_margin={self.warmup_margin!r}: must be in [0, 1) "
                             "(a cosine margin)")
        if self.warmup_margin and self.warmup_head != "cosface":
            raise ValueError(f"config.warmup_margin={self.warmup_margin!r} needs "
                             "config.warmup_head='cosface' (the normface head has no margin)")
        if self.triplet_softmax_weight < 0:
            raise ValueError(f"config.triplet_softmax_weight={self.triplet_softmax_weight!r}: "
                             "must be >= 0 (0 = the triplet loss alone)")
        for name in ("val_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0 < value < 1:
                raise ValueError(f"config.{name}={value!r}: must be in (0, 1)")
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError("config.val_fraction + config.test_fraction must be < 1")
        if not 0 < self.target_far < 1:
            raise ValueError(f"config.target_far={self.target_far!r}: must be in (0, 1)")

    # ----------------------------------------------------------------------------------------------
    @classmethod
    def from_profile(cls, profile: str = "cpu", **overrides: Any) -> "Config":
        """The named profile with `overrides` applied on top."""
        if profile not in PROFILES:
            raise ValueError(f"profile={profile!r}: must be one of {', '.join(PROFILES)}")
        values = dict(_PROFILE_VALUES[profile])
        values.update(overrides)
        values["profile"] = profile
        return cls.from_dict(values)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Config":
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"unknown config parameter(s): {', '.join(unknown)}")
        coerced = {name: _coerce(known[name], value) for name, value in values.items()}
        return cls(**coerced)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Config":
        path = Path(path)
        try:
            values = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"config file not found: {path}") from None
        except json.JSONDecodeError as err:
            raise ValueError(f"config file {path} is not valid JSON: {err}") from None
        if not isinstance(values, dict):
            raise ValueError(f"config file {path} must hold a JSON object")
        try:
            return cls.from_dict(values)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: str | os.PathLike) -> Path:
        """Write config.json atomically (a crash never leaves half a file)."""
        from tinymatch.io_utils import atomic_write_text

        return atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    def replace(self, **changes: Any) -> "Config":
        return dataclasses.replace(self, **changes)

    def training_key(self) -> dict[str, Any]:
        """The fields that decide a trained model; a finished run with the same key is reused."""
        evaluation_only = {"max_positive_pairs", "hard_negatives", "threshold_method", "target_far",
                           "bootstrap_samples", "retrieval_top_k", "eval_batch_size", "data",
                           "cache_dir"}
        return {k: v for k, v in self.to_dict().items() if k not in evaluation_only}


def _coerce(spec: dataclasses.Field, value: Any) -> Any:
    """JSON and papermill hand over ints for floats and the like; keep the declared types."""
    kind = spec.type if isinstance(spec.type, str) else getattr(spec.type, "__name__", "")
    try:
        if kind == "float":
            return float(value)
        if kind == "int":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if kind == "bool":
            if isinstance(value, str):
                return value.strip().lower() in ("1", "true", "yes", "on")
            return bool(value)
        if kind == "str":
            return "" if value is None else str(value)
    except (TypeError, ValueError):
        raise ValueError(f"config.{spec.name}={value!r}: expected {kind}") from None
    return value


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
# 2 cores within 45 minutes (see benchmarks/README.md for how it was chosen). `gpu`: full scale.
_PROFILE_VALUES: dict[str, dict[str, Any]] = {
    "smoke": dict(
        max_classes=12, max_images_per_class=24, unseen_train_classes=8, classes_per_batch=6,
        images_per_class=4, width=8, embedding_dim=16, epochs=2, steps_per_epoch=4,
        early_stopping_patience=0, max_positive_pairs=300, bootstrap_samples=20, eval_batch_size=64,
        val_fraction=0.2, test_fraction=0.2,
    ),
    # cpu: chosen by full-length runs on the 2-core machine (benchmarks/README.md, "CPU profile"):
    # the compact CNN at width 48 (stages capped at 256 filters) with a stride-2 stem on the full
    # 64x64 image (the network runs at 32x32), a 1024-d embedding, bfloat16 compute, 12 epochs of
    # softmax warm-up at a peak learning rate of 3e-3 then 5 of semi-hard triplet loss at 1e-3,
    # 650 steps of 128 images each (37-43 minutes), flip-averaged embeddings at inference.
    "cpu": dict(
        backbone="compact", width=48, max_filters=256, image_size=64, stem_stride=2,
        embedding_dim=1024, mixed_precision=True, classes_per_batch=32, images_per_class=4,
        warmup_epochs=12, epochs=5, steps_per_epoch=650, early_stopping_patience=3,
        test_time_flip=True, learning_rate=3e-3, finetune_learning_rate=1e-3,
    ),
    "gpu": dict(
        backbone="efficientnetb0", weights="imagenet", image_size=224, classes_per_batch=64,
        images_per_class=4, embedding_dim=256, epochs=30, freeze_backbone_epochs=3,
        mixed_precision=True, learning_rate=3e-4, early_stopping_patience=5, test_time_flip=True,
    ),
}

__all__ = ["Config", "PROFILES", "resolve_data_path"]
