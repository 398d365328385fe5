"""The ablation runner on the synthetic dataset: variants x seeds as run directories, resumable,
summarised as mean +- sd with the difference from the recipe."""

import json
import math
import shutil

import numpy as np
import pytest

from tinymatch import ablation
from tinymatch.config import Config, ConfigError


def base_config(synthetic_dir, **overrides):
    values = dict(data=str(synthetic_dir), warmup_epochs=1, epochs=1, steps_per_epoch=1,
                  early_stopping_patience=0, max_positive_pairs=50, bootstrap_samples=0)
    values.update(overrides)
    return Config.from_profile("smoke", **values)


@pytest.fixture
def ablated(smoke_ablation):
    return smoke_ablation  # conftest: the recipe and the warm-up alone, 2 seeds each


def test_every_variant_and_seed_is_a_trained_and_evaluated_run(ablated):
    out, base, variants, result = ablated
    assert [v["name"] for v in result["variants"]] == ["recipe", "warmup_only"]
    assert result["seeds"] == [base.seed, base.seed + 1] and result["steps"] == 2
    for variant in result["variants"]:
        for run in variant["runs"]:
            run_dir = out / run["run_dir"]
            config = Config.load(run_dir / "config.json")
            assert config.seed == run["seed"]
            assert (run_dir / "test_metrics.json").is_file() and (run_dir / "model.keras").is_file()
            metrics = json.loads((run_dir / "test_metrics.json").read_text())
            assert run["seen_auc"] == metrics["seen"]["trained"]["test"]["roc_auc"]
            assert run["unseen_p_at_1"] == metrics["unseen"]["trained"]["retrieval"]["precision_at_1"]
            assert "raw_pixels" not in metrics["seen"]  # the trained model alone
            assert "val" not in metrics["seen"]["trained"]  # the test parts only
    warmup_only = Config.load(out / "warmup_only" / f"seed-{base.seed}" / "config.json")
    assert (warmup_only.warmup_epochs, warmup_only.epochs) == (2, 0)  # same budget, warm-up alone
    history = (out / "warmup_only" / f"seed-{base.seed}" / "history.csv").read_text()
    assert "triplet" not in history


def test_the_summary_is_mean_and_sd_over_seeds_and_the_file_matches(ablated):
    out, _, _, result = ablated
    stored = ablation.read_ablation(out)
    assert stored["variants"][0]["runs"] == json.loads(json.dumps(result["variants"][0]["runs"]))
    for variant in result["variants"]:
        values = [run["val_auc"] for run in variant["runs"]]
        assert variant["mean"]["val_auc"] == pytest.approx(np.mean(values))
        assert variant["sd"]["val_auc"] == pytest.approx(np.std(values, ddof=1))
    rows = ablation.ablation_rows(result)
    assert rows[0]["val_auc"][2] == 0.0  # the recipe against itself
    mean, sd, delta = rows[1]["seen_auc"]
    assert delta == pytest.approx(mean - rows[0]["seen_auc"][0])


def test_a_rerun_reuses_finished_runs(ablated, synthetic_dataset, tmp_path):
    source, base, variants, _ = ablated
    out = tmp_path / "copy"
    shutil.copytree(source, out)  # the session's ablation stays as it is
    model = out / "recipe" / f"seed-{base.seed}" / "model.keras"
    before = model.stat().st_mtime_ns
    again = ablation.run_ablation(base, out, variants=variants[:1], seeds=1, dataset=synthetic_dataset,
                                  progress=False)
    assert model.stat().st_mtime_ns == before
    assert len(again["variants"][0]["runs"]) == 1


def test_default_variants_follow_the_base(synthetic_dir):
    names = [v.name for v in ablation.default_variants(base_config(synthetic_dir))]
    assert names == ["recipe", "warmup_only", "triplet_only", "batch_hard", "no_augmentation"]
    joint = [v.name for v in ablation.default_variants(base_config(synthetic_dir, triplet_softmax_weight=0.5))]
    assert "triplet_alone_after_warmup" in joint
    no_warmup = [v.name for v in ablation.default_variants(base_config(synthetic_dir, warmup_epochs=0))]
    assert "warmup_only" not in no_warmup and "triplet_only" not in no_warmup


def test_a_time_budgeted_base_is_refused(synthetic_dir, tmp_path):
    base = base_config(synthetic_dir, steps_per_epoch=0, time_budget_minutes=1.0)
    with pytest.raises(ValueError, match="time_budget_minutes=1: an ablation compares"):
        ablation.run_ablation(base, tmp_path / "out", seeds=1, progress=False)
    assert not (tmp_path / "out").exists()


def test_summary_of_one_seed_has_no_sd():
    summary = ablation.summarise([dict(val_auc=0.7, seen_auc=None)])
    assert summary["mean"]["val_auc"] == 0.7 and math.isnan(summary["sd"]["val_auc"])
    assert math.isnan(summary["mean"]["seen_auc"])


def test_a_bad_variant_is_refused_before_training(tmp_path, synthetic_dir):
    bad = ablation.Variant("broken", "no epochs at all", dict(warmup_epochs=0, epochs=0))
    with pytest.raises(ValueError, match="variant 'broken'.*config.epochs=0"):
        ablation.run_ablation(base_config(synthetic_dir), tmp_path, variants=[bad], progress=False)
    assert not any(tmp_path.iterdir())
    with pytest.raises(ValueError, match="seeds"):
        ablation.run_ablation(base_config(synthetic_dir), tmp_path, seeds=0, progress=False)


def test_epochs_zero_needs_a_warmup():
    assert Config.from_profile("smoke", warmup_epochs=2, epochs=0).epochs == 0
    with pytest.raises(ConfigError, match="config.epochs=0 needs config.warmup_epochs"):
        Config.from_profile("smoke", warmup_epochs=0, epochs=0)


def test_report_tables_cite_the_file(ablated):
    from tinymatch.report.ablation import ablation_markdown

    out, _, _, result = ablated
    text = ablation_markdown(out)
    assert "Ablation: pair ROC AUC" in text and "Ablation: retrieval precision@1" in text
    for variant in result["variants"]:
        assert f"| {variant['name']} | 2 |" in text
        assert f"{variant['mean']['val_auc']:.3f} +- {variant['sd']['val_auc']:.3f}" in text
    delta = result["variants"][1]["mean"]["seen_auc"] - result["variants"][0]["mean"]["seen_auc"]
    assert f"({delta:+.3f})" in text or abs(delta) < 5e-4


def test_the_reading_names_only_differences_beyond_the_recipes_spread():
    from tinymatch.report.ablation import ablation_reading

    def row(name, deltas, sd=0.007):
        cells = {key: (0.5 + deltas.get(key, 0.0), sd, deltas.get(key, 0.0))
                 for key in ("val_auc", "seen_auc", "unseen_auc", "seen_p_at_1", "unseen_p_at_1")}
        return dict(name=name, runs=3, **cells)

    rows = [row("recipe", {}), row("warmup_only", {"unseen_p_at_1": 0.009, "unseen_auc": -0.007}),
            row("no_augmentation", {"seen_auc": -0.02})]
    text = ablation_reading(rows)
    assert "unseen P@1 (recipe sd 0.007): *warmup_only* +0.009" in text
    assert "seen test AUC (recipe sd 0.007): *no_augmentation* -0.020" in text
    assert "unseen test AUC" not in text  # -0.007 is not beyond a 0.007 spread
    assert "may hurt, retrieval in classes the network never trained on" in text
    calm = ablation_reading([row("recipe", {}), row("warmup_only", {"unseen_p_at_1": -0.001})])
    assert calm.startswith("No variant differs") and "may hurt" not in calm
    assert ablation_reading(rows[:1]) == ""
