"""The tuning study's search space: what is searched, over which range, and how it becomes a Config.

The space is data (a tuple of `Dimension`s), so the report prints it as a table
(`search_space_rows`) and the study stores it beside its trials (a study resumed with another
space is refused). Every dimension sets existing `Config` fields; recipe ideas that have no field
yet are listed in `NOT_YET_SEARCHABLE` instead of being faked.

Three dimensions are relative to the base configuration rather than absolute:

- `warmup_share` splits the base run's epochs (`warmup_epochs + epochs`) between the
  classification warm-up and the triplet phase, so a trial's epoch count stays the base's;
- `finetune_lr_ratio` sets the triplet phase's peak rate as a fraction of `learning_rate`
  (a ratio, because the two rates are far from independent);
- `images_per_class` (K) keeps the base batch size P x K and sets P = batch / K, so every trial
  sees the same number of images per step (comparable under one time budget).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tinymatch.config import LR_SCHEDULES, WARMUP_HEADS, Config

FLOAT, CATEGORICAL = "float", "categorical"


@dataclass(frozen=True)
class Dimension:
    """One searched parameter. `when = (other, value)` makes it conditional on another's value."""

    name: str
    kind: str  # FLOAT or CATEGORICAL
    low: float | None = None
    high: float | None = None
    choices: tuple = ()
    log: bool = False
    step: float | None = None
    when: tuple[str, Any] | None = None
    sets: str = ""  # the Config field(s) it decides, for the table

    def suggest(self, trial) -> Any:
        """The trial's value (an `optuna.Trial` or anything with the same suggest_* methods)."""
        if self.kind == CATEGORICAL:
            return trial.suggest_categorical(self.name, list(self.choices))
        return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)

    def row(self) -> dict[str, str]:
        """This dimension as one row of the report's table."""
        if self.kind == CATEGORICAL:
            values = ", ".join(str(c) for c in self.choices)
        else:
            values = f"{_number(self.low)} - {_number(self.high)}"
            if self.step:
                values += f" (step {_number(self.step)})"
        when = f"{self.when[0]} = {self.when[1]}" if self.when else ""
        scale = "log" if self.log else ("linear" if self.kind == FLOAT else "")
        return dict(parameter=self.name, kind=self.kind, values=values, scale=scale,
                    when=when, sets=self.sets or self.name)


# What the recipe literature (issue 14) says matters at this budget, within today's Config fields.
_DIMENSIONS = (
    Dimension("learning_rate", FLOAT, 3e-4, 1e-2, log=True, sets="learning_rate"),
    Dimension("finetune_lr_ratio", FLOAT, 0.1, 1.0, log=True,
              sets="finetune_learning_rate = learning_rate x ratio"),
    Dimension("lr_schedule", CATEGORICAL, choices=LR_SCHEDULES),
    Dimension("warmup_share", FLOAT, 0.0, 0.9, step=0.1,
              sets="warmup_epochs, epochs (their sum stays the base's)"),
    Dimension("margin", FLOAT, 0.05, 0.5),
    Dimension("warmup_head", CATEGORICAL, choices=WARMUP_HEADS),
    Dimension("warmup_margin", FLOAT, 0.0, 0.4, when=("warmup_head", "cosface")),
    Dimension("warmup_scale", FLOAT, 8.0, 64.0, log=True),
    Dimension("label_smoothing", FLOAT, 0.0, 0.2, step=0.05),
    Dimension("triplet_softmax_weight", FLOAT, 0.0, 1.0, step=0.1),
    Dimension("optimizer", CATEGORICAL, choices=("adam", "adamw")),
    Dimension("weight_decay", FLOAT, 1e-5, 1e-1, log=True, when=("optimizer", "adamw")),
    Dimension("ema_decay", CATEGORICAL, choices=(0.0, 0.99, 0.999)),
    Dimension("embedding_dim", CATEGORICAL, choices=(128, 256, 512, 1024)),
    Dimension("width", CATEGORICAL, choices=(32, 48, 64)),
    Dimension("images_per_class", CATEGORICAL, choices=(2, 4, 8),
              sets="images_per_class (K), classes_per_batch (P = base batch / K)"),
    Dimension("image_size", CATEGORICAL, choices=(32, 48, 64)),
    # Progressive resizing: the warm-up's images (0 = image_size's, no resizing).
    Dimension("warmup_image_size", CATEGORICAL, choices=(0, 32, 48),
              sets="warmup_image_size (0, or image_size itself, or a run without warm-up: none)"),
    Dimension("stem_stride", CATEGORICAL, choices=(1, 2)),
    # Added after the committed study (3 Dec 2026): the geometric augmentation's strength was the
    # largest single gain measured by hand (benchmarks/README.md, "Lighter augmentation"), and depth
    # is the capacity knob that costs no resolution. Ranges: none up to the factors.
    Dimension("zoom", FLOAT, 0.0, 0.3, step=0.05),
    Dimension("rotation", FLOAT, 0.0, 0.2, step=0.025, sets="rotation (a fraction of a full turn)"),
    Dimension("translation", FLOAT, 0.0, 0.2, step=0.05),
    Dimension("blocks_per_stage", CATEGORICAL, choices=(1, 2)),
)
_COMPACT_ONLY = ("width", "stem_stride", "blocks_per_stage")  # knobs of the compact backbone alone

# Recipe ideas of issue 14 the study cannot search yet: each needs a Config field (or value) and
# its implementation in train/model first.
NOT_YET_SEARCHABLE = (
    ("resolution schedule within a phase", "progressive resizing changes the size once, at the "
                                           "phase change (warmup_image_size); a size per epoch "
                                           "needs a Config field and one schedule across sizes"),
    ("batchnorm_lr_multiplier", "higher learning rate for BatchNorm parameters: needs a Config field"),
    ("sgd learning-rate range", "SGD with Nesterov momentum (optimizer='sgd', with weight_decay) "
                                "wants ~10x Adam's rates: a separate study or a conditional LR "
                                "range; at full length it tied Adam (benchmarks/README.md)"),
)


def search_space(base: Config | None = None, train_classes: int | None = None) -> tuple[Dimension, ...]:
    """The study's dimensions for `base` (default: the cpu profile).

    Drops what cannot vary for this base: the compact backbone's knobs for another backbone, the
    warm-up share of a one-epoch run, and P x K choices whose P is not in 2..train_classes (the
    number of classes the training part holds) or does not divide the base batch.
    """
    base = base or Config.from_profile("cpu")
    total_epochs = base.warmup_epochs + base.epochs
    dimensions = []
    for dim in _DIMENSIONS:
        if dim.name in _COMPACT_ONLY and base.backbone != "compact":
            continue
        if dim.name == "warmup_share" and total_epochs < 2:
            continue
        if dim.name == "images_per_class":
            choices = tuple(k for k in dim.choices if _valid_k(base, k, train_classes))
            if len(choices) < 2:
                continue
            dim = Dimension(dim.name, dim.kind, choices=choices, sets=dim.sets)
        dimensions.append(dim)
    return tuple(dimensions)


def suggest(trial, space: tuple[Dimension, ...]) -> dict[str, Any]:
    """Ask `trial` for every dimension of `space` whose condition holds; returns the params."""
    params: dict[str, Any] = {}
    for dim in space:
        if dim.when and params.get(dim.when[0]) != dim.when[1]:
            continue
        params[dim.name] = dim.suggest(trial)
    return params


def trial_config(base: Config, params: dict[str, Any]) -> Config:
    """`base` with a trial's params applied (validated like any Config)."""
    values = base.to_dict()
    params = dict(params)
    batch = base.classes_per_batch * base.images_per_class
    if "images_per_class" in params:
        k = int(params.pop("images_per_class"))
        values.update(images_per_class=k, classes_per_batch=batch // k)
    if "warmup_share" in params:
        total = base.warmup_epochs + base.epochs
        warmup = min(total - 1, int(float(params.pop("warmup_share")) * total + 0.5))
        values.update(warmup_epochs=warmup, epochs=total - warmup)
    ratio = params.pop("finetune_lr_ratio", None)
    values.update(params)
    if ratio is not None:
        values["finetune_learning_rate"] = float(values["learning_rate"]) * float(ratio)
    if values["warmup_head"] != "cosface":
        values["warmup_margin"] = 0.0  # the normface head has no margin
    if not values["warmup_epochs"] or values["warmup_image_size"] == values["image_size"]:
        values["warmup_image_size"] = 0  # no warm-up to resize, or the same size: no resizing
    return Config.from_dict(values)


def space_values(config: Config, space: tuple[Dimension, ...] | None = None) -> dict[str, Any]:
    """`config` in the search space's terms (the inverse of `trial_config`): each dimension's value,
    the relative ones computed from the fields they set (warmup_share = warm-up epochs / all
    epochs, finetune_lr_ratio = triplet-phase peak rate / learning_rate). A conditional dimension
    whose condition the config does not meet is left out, as a trial would not have drawn it.
    Why: a recipe that was not itself a trial (a profile rounded from the best trials) can be set
    beside the trials in one table."""
    space = space if space is not None else search_space()
    values = config.to_dict()
    total = config.warmup_epochs + config.epochs
    derived = {"warmup_share": config.warmup_epochs / total if total else 0.0,
               "finetune_lr_ratio": (config.finetune_learning_rate or config.learning_rate)
               / config.learning_rate}
    out = {}
    for dim in space:
        if dim.when and values.get(dim.when[0]) != dim.when[1]:
            continue
        out[dim.name] = derived[dim.name] if dim.name in derived else values[dim.name]
    return out


def search_space_rows(space: tuple[Dimension, ...] | None = None) -> list[dict[str, str]]:
    """The space as table rows (parameter, kind, values, scale, when, sets); default: cpu profile."""
    return [dim.row() for dim in (space if space is not None else search_space())]


def _valid_k(base: Config, k: int, train_classes: int | None) -> bool:
    batch = base.classes_per_batch * base.images_per_class
    p = batch // k
    return batch % k == 0 and p >= 2 and (train_classes is None or p <= train_classes)


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


__all__ = ["Dimension", "NOT_YET_SEARCHABLE", "search_space", "search_space_rows", "space_values", "suggest",
           "trial_config"]
