"""The report's ablation part: each variant's validation and test figures as mean +- sd over seeds,
beside its difference from the recipe, from the ablation directory's `ablation.json` alone."""

from __future__ import annotations

from typing import Any

from tinymatch import ablation
from tinymatch.report.tables import TABLE_NUMBERS, fmt, markdown_table

_AUC_COLUMNS = (("val_auc", "val AUC"), ("seen_auc", "seen test AUC"), ("unseen_auc", "unseen test AUC"))
_P1_COLUMNS = (("seen_p_at_1", "seen P@1"), ("unseen_p_at_1", "unseen P@1"))


def ablation_tables(result: dict[str, Any]) -> tuple[str, str]:
    """(AUC table, P@1 table): one row per variant, each cell 'mean +- sd (difference)'."""
    rows = ablation.ablation_rows(result)
    return (_table(rows, _AUC_COLUMNS), _table(rows, _P1_COLUMNS))


def ablation_markdown(ablation_dir) -> str:
    """The part's prose and its two tables (the budget and seeds from the file)."""
    result = ablation.read_ablation(ablation_dir)
    base = result["base"]
    seeds = result["seeds"]
    aucs, p1 = ablation_tables(result)
    legend = "; ".join(f"*{v['name']}*: {v['description']}" for v in result["variants"])
    return "\n".join([
        f"Each row changes one thing of the recipe and keeps everything else, including the budget: "
        f"{fmt(base['warmup_epochs'] + base['epochs'])} epochs of {fmt(base['steps_per_epoch'])} "
        f"steps ({fmt(result['steps'])} steps of {fmt(base['classes_per_batch'] * base['images_per_class'])} "
        f"images) per run, {len(seeds)} seeds per row ({', '.join(map(str, seeds))}; the seed also "
        "draws the split, so the spread includes which classes are held out). Cells are mean +- "
        "standard deviation over the seeds, and in brackets the difference of the mean from the "
        "recipe's; rows share seeds, so the differences are paired. Validation AUC is the best "
        "epoch's (the selection criterion), test figures are those of that selected model on the "
        "same seen and unseen test pairs and galleries as the main evaluation, scored by the plain "
        "distance of the embeddings (without the main evaluation's score normalisation, where it has "
        "one: the rows compare trainings). The budget is a "
        "short one, minutes per run, so the rows say what helps early in training: a full-length "
        "run can rank them differently, and differences smaller than the standard deviations are "
        f"not differences. {TABLE_NUMBERS.ref('ablation_auc')} gives the pair ROC AUC and "
        f"{TABLE_NUMBERS.ref('ablation_p1')} the retrieval P@1 of every variant. Variants: {legend}.", "",
        TABLE_NUMBERS.markdown("ablation_auc", aucs), "",
        TABLE_NUMBERS.markdown("ablation_p1", p1), "",
        ablation_reading(ablation.ablation_rows(result))])


_TEST_COLUMNS = dict(_AUC_COLUMNS[1:] + _P1_COLUMNS)


def ablation_reading(rows) -> str:
    """What the tables say beyond the noise: per test figure, the variants whose mean differs from
    the recipe's by more than the recipe's standard deviation over seeds; and, where the warm-up alone
    retrieves unseen classes better than the recipe, that the triplet phase may hurt unseen retrieval."""
    if len(rows) < 2:
        return ""
    recipe, others = rows[0], rows[1:]
    found = []
    for key, label in _TEST_COLUMNS.items():
        sd = recipe[key][1]
        if sd != sd:
            continue
        # compared as printed (3 decimals), so a "-0.007" is never called larger than a "0.007"
        beyond = [(row["name"], row[key][2]) for row in others if round(abs(row[key][2]), 3) > round(sd, 3)]
        if beyond:
            found.append(f"{label} (recipe sd {fmt(sd)}): " + ", ".join(
                f"*{name}* {delta:+.3f}" for name, delta in beyond))
    text = ("Differences from the recipe larger than the recipe's own standard deviation over seeds: "
            + "; ".join(found) + "." if found else
            "No variant differs from the recipe by more than the recipe's own standard deviation over seeds "
            "on any test figure.")
    warmup = next((row for row in others if row["name"] == "warmup_only"), None)
    if warmup is not None and warmup["unseen_p_at_1"][2] > 0:
        text += (f" The warm-up alone retrieves unseen classes better than the recipe "
                 f"(P@1 {warmup['unseen_p_at_1'][2]:+.3f}): at this budget the triplet phase does not help, "
                 "and may hurt, retrieval in classes the network never trained on. The full-length runs "
                 "record no test figures of their warm-up model, so they cannot settle it.")
    return text


def _table(rows, columns) -> str:
    body = [[row["name"], fmt(row["runs"])] + [_cell(*row[key]) for key, _ in columns] for row in rows]
    return markdown_table(["variant", "seeds"] + [label for _, label in columns], body,
                          align="lr" + "r" * len(columns))


def _cell(mean: float, sd: float, delta: float) -> str:
    if mean != mean:
        return "n/a"
    spread = "" if sd != sd else f" +- {fmt(sd)}"
    change = "" if delta == 0 or delta != delta else f" ({delta:+.3f})"
    return f"{fmt(mean)}{spread}{change}"


__all__ = ["ablation_tables", "ablation_markdown", "ablation_reading"]
