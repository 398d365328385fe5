"""Controlled ablation of a recipe: one change at a time, several seeds, validation and test together.

`run_ablation(base, out_dir, seeds=3)` trains every (variant, seed) as an ordinary run directory,
OUT/<variant>/seed-<seed>, scores the trained model alone on the seen and unseen test parts
(`evaluate.evaluate_test_parts`: the baselines do not change between variants, and the val parts
only choose a threshold, which the compared figures do not use) and writes OUT/ablation.json.
A finished run is reused (same training
key), so an interrupted ablation resumes where it stopped and adding a seed trains only that seed.

Variants are the base config with a few fields changed (`Variant.changes`); `default_variants`
holds the ones the report's story needs: the recipe itself, its classification warm-up alone, its
semi-hard triplet phase alone (trained from scratch for the same number of epochs), the warm-up
followed by batch-hard mining (soft margin, which does not collapse as the hinge did), and the
recipe without augmentation, and (when the recipe keeps it) the triplet phase without the
classification loss beside it, the factor the tuning study ranked first. Every variant keeps the
base's epochs x steps, so each row had the
same budget of training steps (its wall time is recorded beside it).

The seed is the config's `seed`: it also draws the split (which images are held out, which classes
are unseen), so the spread over seeds includes the spread over held-out classes. Variants share
seeds, so a difference between two rows is paired: both saw the same splits.

ablation.json: {"base": <config dict>, "seeds": [...], "steps": planned steps per run,
  "variants": [{"name", "description", "changes", "runs": [{"seed", "run_dir", <METRICS>,
  "epoch_seconds"}], "mean": {<METRICS>}, "sd": {<METRICS>}}]} with METRICS below (NaN -> null).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from tinymatch import data, rundir
from tinymatch.config import Config
from tinymatch.io_utils import nan_to_none, read_json, write_json

# metric name -> (protocol or None for training, where to read it)
METRICS = ("val_auc", "seen_auc", "unseen_auc", "seen_p_at_1", "unseen_p_at_1")


@dataclass(frozen=True)
class Variant:
    """The base config with `changes` applied; `name` is also its folder."""

    name: str
    description: str
    changes: dict[str, Any] = field(default_factory=dict)

    def config(self, base: Config, seed: int) -> Config:
        return base.replace(seed=int(seed), **self.changes)


def default_variants(base: Config) -> tuple[Variant, ...]:
    """The recipe and its one-change ablations (those that apply to `base`)."""
    total = base.warmup_epochs + base.epochs
    variants = [Variant("recipe", "the recipe as configured")]
    if base.warmup_epochs and base.epochs:
        variants += [
            Variant("warmup_only", "classification warm-up alone, no triplet phase",
                    dict(warmup_epochs=total, epochs=0)),
            Variant("triplet_only", f"{base.loss} triplet loss from scratch, no warm-up",
                    dict(warmup_epochs=0, epochs=total)),
        ]
    if base.epochs and base.triplet_softmax_weight:
        variants.append(Variant("triplet_alone_after_warmup",
                                "triplet phase without the classification loss beside it",
                                dict(triplet_softmax_weight=0.0)))
    if base.loss != "hard":
        variants.append(Variant("batch_hard", "batch-hard triplet phase (soft margin) instead",
                                dict(loss="hard", soft=True)))
    if base.augment:
        variants.append(Variant("no_augmentation", "no data augmentation", dict(augment=False)))
    return tuple(variants)


def run_ablation(base: Config, out_dir, *, variants: Sequence[Variant] | None = None, seeds: int = 3,
                 dataset=None, progress: bool = True) -> dict:
    """Train and evaluate every variant with `seeds` seeds (base.seed, base.seed + 1, ...);
    write and return ablation.json's content."""
    from tinymatch.evaluate import evaluate_test_parts
    from tinymatch.train import is_finished, train

    if int(seeds) != seeds or seeds < 1:
        raise ValueError(f"seeds={seeds!r}: must be an integer >= 1")
    if base.time_budget_minutes:
        raise ValueError(f"config.time_budget_minutes={base.time_budget_minutes:g}: an ablation "
                         "compares its variants at the same number of steps; set steps_per_epoch "
                         "(and time_budget_minutes 0) in its base config")
    variants = tuple(variants if variants is not None else default_variants(base))
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise ValueError(f"variant names must be unique: {names}")
    for variant in variants:  # a bad change fails before hours of training, naming the variant
        try:
            variant.config(base, base.seed)
        except ValueError as err:
            raise ValueError(f"ablation variant {variant.name!r}: {err}") from err
    out = rundir.AblationDir(out_dir)
    seed_list = [base.seed + i for i in range(int(seeds))]
    dataset = dataset if dataset is not None else data.load_dataset_for(base, progress=progress)
    result: dict[str, Any] = {"base": base.to_dict(), "seeds": seed_list,
                              "steps": _planned_steps(base), "variants": []}
    jobs = [(v, s) for v in variants for s in seed_list]
    runs: dict[str, list] = {v.name: [] for v in variants}
    with tqdm(total=len(jobs), unit="run", desc="ablation", disable=not progress) as bar:
        for variant, seed in jobs:
            config = variant.config(base, seed)
            run_dir = out.run_dir(variant.name, seed)
            if not is_finished(run_dir, config):
                train(config, run_dir, dataset=dataset, progress=False)
            paths = rundir.RunDir(run_dir)
            if not paths.test_metrics.is_file():
                splits = data.make_splits_for(dataset, config)
                evaluate_test_parts(run_dir, dataset, splits, config)
            runs[variant.name].append(_run_figures(run_dir, seed, out.path))
            bar.update(1)
            if progress:
                bar.write(f"{variant.name} seed {seed}: val AUC {runs[variant.name][-1]['val_auc']:.4f}")
    for variant in variants:
        rows = runs[variant.name]
        result["variants"].append(dict(name=variant.name, description=variant.description,
                                       changes=variant.changes, runs=rows, **summarise(rows)))
    write_json(out.summary, nan_to_none(result))
    return result


def summarise(rows: Sequence[dict]) -> dict[str, dict[str, float]]:
    """{"mean": {metric: ...}, "sd": {metric: ...}} over runs (sd with ddof=1; NaN for one run)."""
    mean, sd = {}, {}
    for metric in METRICS:
        values = np.array([_number(r.get(metric)) for r in rows], dtype=float)
        values = values[np.isfinite(values)]
        mean[metric] = float(values.mean()) if len(values) else math.nan
        sd[metric] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
    return {"mean": mean, "sd": sd}


def ablation_rows(result: dict, metrics: Sequence[str] = METRICS) -> list[dict[str, Any]]:
    """One row per variant: mean, sd and the difference of the mean from the first variant's (the
    recipe's), per metric; for the report's table."""
    variants = result["variants"]
    if not variants:
        return []
    reference = variants[0]["mean"]
    rows = []
    for variant in variants:
        row = dict(name=variant["name"], description=variant["description"], runs=len(variant["runs"]))
        for metric in metrics:
            mean, sd = _number(variant["mean"].get(metric)), _number(variant["sd"].get(metric))
            row[metric] = (mean, sd, mean - _number(reference.get(metric)))
        rows.append(row)
    return rows


def read_ablation(out_dir) -> dict:
    """OUT/ablation.json (FileNotFoundError naming it when the ablation has not run)."""
    path = rundir.AblationDir(out_dir).summary
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no ablation here (run `tinymatch ablate` first)")
    return read_json(path)


def _run_figures(run_dir: Path, seed: int, out: Path) -> dict[str, Any]:
    paths = rundir.RunDir(run_dir)
    training, metrics = read_json(paths.training), read_json(paths.test_metrics)

    def test(protocol, *keys):
        value: Any = metrics.get(protocol, {}).get("trained", {})
        for key in keys:
            value = value.get(key, {}) if isinstance(value, dict) else {}
        return _number(value)

    return dict(seed=int(seed), run_dir=str(Path(run_dir).relative_to(out)),
                val_auc=_number(training.get("best_val_auc")),
                seen_auc=test("seen", "test", "roc_auc"), unseen_auc=test("unseen", "test", "roc_auc"),
                seen_p_at_1=test("seen", "retrieval", "precision_at_1"),
                unseen_p_at_1=test("unseen", "retrieval", "precision_at_1"),
                epochs_run=int(training.get("epochs_run", len(rundir.read_history(run_dir)))),
                epoch_seconds=_number(training.get("epoch_seconds")))


def _planned_steps(config: Config) -> int:
    return (config.warmup_epochs + config.epochs) * config.steps_per_epoch


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


__all__ = ["Variant", "default_variants", "run_ablation", "summarise", "ablation_rows",
           "read_ablation", "METRICS"]
