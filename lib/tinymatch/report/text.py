"""The report's prose around the numbers: one function per section, Markdown out.

The fixed explanations (formulas, what a metric means) live in `notebooks/report.ipynb`; what
depends on the run (its configuration, metrics, history, data and model facts, read with
`rundir.read_run`) is written here, so every number in the text comes from the run's files.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from tinymatch import projector
from tinymatch.report.inputs import protocols_in, run_history
from tinymatch.report.tables import (LOSS_NAMES, PROTOCOL_NAMES, Figures, best_epoch_label, confusion_table,
                                     config_table, fmt, history_summary, layer_table, loss_comparison_table,
                                     markdown_table, percent, projector_table, retrieval_k, retrieval_table,
                                     split_table, transfer_table, verification_table, warmup_label)
from tinymatch.rundir import RunDir, read_run

IMAGENET_OVERLAP_CAVEAT = (
    "Tiny ImageNet is a subset of ImageNet: a backbone pretrained on ImageNet has seen all 200 of "
    "these classes, and probably these very images, during its pretraining. Its *unseen-class* "
    "figures are therefore not unseen for it and say nothing about new kinds of objects; "
    "only the seen-class columns compare like with like, and even there the pretrained backbone "
    "learned from about 1.28 million labelled ImageNet images against the 60,000 that train the "
    "from-scratch network.")


def key_numbers(run: Mapping[str, Any]) -> dict[str, str]:
    """Headline numbers of a run, formatted for prose ({} for what the run lacks)."""
    numbers: dict[str, str] = {}
    metrics = run.get("metrics", {})
    for protocol in protocols_in(metrics):
        trained = metrics[protocol]["trained"]
        low, high = trained["test"].get("roc_auc_ci95", [float("nan")] * 2)
        numbers[f"{protocol}_auc"] = fmt(trained["test"]["roc_auc"])
        numbers[f"{protocol}_auc_ci"] = f"{fmt(low)} to {fmt(high)}"
        numbers[f"{protocol}_accuracy"] = percent(trained["test"]["confusion"]["accuracy"])
        numbers[f"{protocol}_p1"] = fmt(trained["retrieval"]["precision_at_1"])
        numbers[f"{protocol}_threshold"] = fmt(trained["threshold"])
        for baseline in ("raw_pixels", "untrained"):
            if baseline in metrics[protocol]:
                numbers[f"{protocol}_{baseline}_auc"] = fmt(metrics[protocol][baseline]["test"]["roc_auc"])
    return numbers


def title_block(run: Mapping[str, Any]) -> str:
    config, facts = run["config"], run.get("data_facts", {})
    dataset = ("a synthetic stand-in for Tiny ImageNet" if _is_synthetic(run)
               else f"Tiny ImageNet (`{facts.get('source', config.data)}`)")
    stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(_run_time(run)))
    return (f"# tinymatch: image matching on Tiny ImageNet with a triplet-loss Siamese network\n\n"
            f"Run `{Path(run['run_dir']).name}`, profile **{config.profile}**, trained on {dataset}; "
            f"report generated from the run's files on {stamp}.")


def _protocol_name(protocol: str) -> str:
    return PROTOCOL_NAMES.get(protocol, f"{protocol} protocol")


def _is_synthetic(run: Mapping[str, Any]) -> bool:
    """01_data records whether the run's data was the synthetic stand-in (`data_facts.json`)."""
    return bool(run.get("data_facts", {}).get("synthetic"))


def _run_time(run: Mapping[str, Any]) -> float:
    path = RunDir(run["run_dir"]).metrics
    return path.stat().st_mtime if path.exists() else time.time()


def introduction_summary(run: Mapping[str, Any], figs: Figures) -> str:
    n, config = key_numbers(run), run["config"]
    text = [f"This run trains a `{config.backbone}` embedding network with the "
            f"{LOSS_NAMES[config.loss]} ({config.distance_metric} distance, margin {config.margin:g})."]
    if "seen_auc" in n:
        text.append(f"On test pairs of classes seen in training it reaches a ROC AUC of **{n['seen_auc']}** "
                    f"(95% CI {n['seen_auc_ci']}; raw pixels: {n.get('seen_raw_pixels_auc', 'n/a')})")
    if "unseen_auc" in n:
        text.append(f"and on classes held out from training **{n['unseen_auc']}** (95% CI {n['unseen_auc_ci']}; raw "
                    f"pixels: {n.get('unseen_raw_pixels_auc', 'n/a')}).")
    if "seen_accuracy" in n:
        text.append(f"At the threshold chosen on validation pairs, {n['seen_accuracy']} of the seen-class test pairs "
                    f"are decided correctly ({figs.ref('confusion_matrix')}), and the nearest neighbour of a test "
                    f"image has its class for a fraction {n['seen_p1']} of the queries.")
    if (config.max_classes or config.max_images_per_class) and not _is_synthetic(run):
        text.append(f"*This run is limited to {config.max_classes or 'all'} classes and "
                    f"{config.max_images_per_class or 'all'} images per class (section 6).*")
    if _is_synthetic(run):
        text.append("*This run uses the smoke profile on synthetic images (seconds of training): the numbers "
                    "check the pipeline, they say nothing about Tiny ImageNet.*")
    return " ".join(text) + _pretrained_caveat(run)


def _pretrained_caveat(run: Mapping[str, Any]) -> str:
    """The ImageNet-overlap caveat, for a run whose backbone was pretrained (else "")."""
    return f"\n\n*{IMAGENET_OVERLAP_CAVEAT}*" if run["config"].weights else ""


def architecture_markdown(run: Mapping[str, Any]) -> str:
    config, facts, metrics = run["config"], run.get("model_facts", {}), run.get("metrics", {})
    cap = f", at most {config.max_filters}" if config.max_filters else ""
    stem = ("; a 4x4 stride-2 stem, so the network runs at half the input's side"
            if config.stem_stride == 2 else "")
    backbone = (f"the compact residual CNN of `tinymatch.model` (first stage {config.width} filters, doubling "
                f"per stage{cap}{stem})" if config.backbone == "compact" else
                f"Keras Applications' `{config.backbone}` ({'ImageNet weights' if config.weights else 'random init'}, "
                f"input resized to {config.image_size} px)")
    rows = [["backbone", backbone],
            ["network input", f"{config.image_size} x {config.image_size} px"
             + (" (the 64 px images are downsized inside the model)" if config.image_size < 64 else "")],
            ["embedding size", f"{config.embedding_dim} (unit L2 norm)"],
            ["augmentation layer", ("yes (training only" + (", fused with the downsizing)" if
                                    config.image_size < 64 else ")")) if config.augment else "no"],
            ["inference", "flip-averaged: the unit-norm mean of the embeddings of the image and its mirror"
             if config.test_time_flip else "one view"],
            ["distance", f"`{config.distance_metric}`"]]
    if facts:
        rows += [["parameters", f"{fmt(facts['total_parameters'])} ({fmt(facts['trainable_parameters'])} trainable)"]]
    stored = _stored_siamese_threshold(run)
    if stored is not None:
        rows += [["threshold τ in `siamese.keras`", f"{fmt(stored)} (chosen when training ended, on the "
                                                  f"validation pairs used for model selection, method "
                                                  f"`{config.threshold_method}`)"]]
    if "threshold" in metrics:
        rows += [["threshold τ of the evaluation", f"{fmt(metrics['threshold'])} (chosen on all validation pairs "
                                                   f"of the {_protocol_name(metrics['threshold_protocol'])}, "
                                                   f"method `{metrics['threshold_method']}`)"]]
    text = "The network of this run:\n\n" + markdown_table(["component", "this run"], rows, align="ll")
    if facts:
        text += "\n\nLayers of the embedding model (`model.keras`):\n\n" + layer_table(facts)
    return text + ("\n\nThe Siamese model (`siamese.keras`) wraps this embedding model twice with shared weights "
                   "and stores τ, so `tinymatch match --model siamese.keras A.jpg B.jpg` decides a pair directly.")


def loss_markdown(run: Mapping[str, Any]) -> str:
    config = run["config"]
    metric = {"L2": "the Euclidean distance", "squared-L2": "the squared Euclidean distance",
              "angular": "the angular distance 1 - cos"}[config.distance_metric]
    soft = " with the soft margin" if config.loss == "hard" and config.soft else ""
    return (f"This run minimises the **{LOSS_NAMES[config.loss]}**{soft} with margin α = {config.margin:g} and "
            f"{metric} between embeddings (`tinymatch.losses`).")


def mining_markdown(run: Mapping[str, Any]) -> str:
    config = run["config"]
    p, k = config.classes_per_batch, config.images_per_class
    return (f"In this run P = {p} classes and K = {k} images make batches of B = {p * k} images, with "
            f"{fmt(p * k * (k - 1))} anchor-positive pairs and {fmt((p - 1) * k)} negatives per anchor in "
            f"every batch. Batches are drawn class-balanced from the training part "
            f"(`tinymatch.data.pk_dataset`).")


def dataset_markdown(run: Mapping[str, Any], figs: Figures) -> str:
    facts = run.get("data_facts")
    if not facts:
        raise FileNotFoundError(f"{RunDir(run['run_dir']).data_facts} not found (run 01_data first)")
    per_class = facts["images_per_class"]
    source = "a synthetic dataset in the Tiny ImageNet layout" if _is_synthetic(run) else "Tiny ImageNet"
    text = (f"The run uses {source}: {fmt(facts['num_classes'])} classes and {fmt(facts['num_labelled'])} labelled "
            f"{facts['image_shape'][0]} x {facts['image_shape'][1]} images, between {fmt(per_class['min'])} and "
            f"{fmt(per_class['max'])} per class (median {fmt(per_class['median'], 0)}), see "
            f"{figs.ref('class_distribution')}. {fmt(facts['num_grayscale'])} of the images are grayscale JPEGs; "
            f"they are converted to RGB by repeating the channel.")
    if facts["num_corrupt"]:
        text += f" {fmt(facts['num_corrupt'])} corrupt files were skipped."
    config = run["config"]
    if config.max_classes or config.max_images_per_class:
        text += (f" The configuration limits the data to {config.max_classes or 'all'} classes and "
                 f"{config.max_images_per_class or 'all'} images per class.")
    return text + f" {figs.ref('samples')} shows one image of each of the first classes."


def split_markdown(run: Mapping[str, Any]) -> str:
    config = run["config"]
    text = (f"The split is seeded (seed {config.seed}) and saved as `split.csv` in the run directory. For seen "
            f"classes a fraction {config.val_fraction:g} of the images of every class goes to validation and "
            f"{config.test_fraction:g} to test. For unseen classes {config.unseen_train_classes} classes are "
            f"training classes and the remaining classes are split, by class, into validation and test classes. ")
    if config.protocol == "joint":
        text += (f"The model is trained on the **joint** protocol: only the training images of the "
                 f"{config.unseen_train_classes} training classes, so one model is judged on new images of the "
                 f"classes it trained on (seen) and on classes it never saw (unseen); its checkpoint and "
                 f"threshold are selected on the validation images of both.")
    else:
        text += (f"The model is trained, and its checkpoint and threshold selected, on the **{config.protocol}** "
                 f"protocol.")
    return text + "\n\n" + split_table(run["data_facts"])


def augmentation_markdown(run: Mapping[str, Any], figs: Figures) -> str:
    config = run["config"]
    status = ("is applied to every training batch" if config.augment
              else "is switched off for this run (shown for reference)")
    rows = [["zoom", f"scale in [{1 - config.zoom:g}, {1 + config.zoom:g}]"],
            ["flip", config.flip or "none"],
            ["rotation", f"up to ±{config.rotation * 360:g}°"],
            ["translation", f"up to ±{config.translation:.0%} of the side"],
            ["brightness", f"±{config.brightness:g} of the range"],
            ["contrast", f"factor in [{1 - config.contrast:g}, {1 + config.contrast:g}]"]]
    return (f"Random augmentation {status}, inside the model so it runs on the accelerator; "
            f"{figs.ref('augmentation')} shows one image under many draws.\n\n"
            + markdown_table(["transform", "range"], rows, align="ll"))


def optimisation_markdown(run: Mapping[str, Any]) -> str:
    config = run["config"]
    steps = f"{config.steps_per_epoch} steps" if config.steps_per_epoch else "one pass over the training images"
    text = (f"Optimiser `{config.optimizer}`, learning rate {config.learning_rate:g} with a `{config.lr_schedule}` "
            f"schedule, weight decay {config.weight_decay:g}, at most {config.epochs} epochs of {steps}.")
    if config.early_stopping_patience:
        text += (f" Training stops early after {config.early_stopping_patience} triplet-loss epochs without a gain "
                 f"over that phase's best validation AUC.")
    text += " The checkpoint with the best validation ROC AUC is kept."
    if config.freeze_backbone_epochs:
        text += f" The pre-trained backbone is frozen for the first {config.freeze_backbone_epochs} epochs."
    if config.warmup_epochs:
        text += f" A {warmup_label(config)} classification warm-up runs for {config.warmup_epochs} epochs first"
        text += (f"; the triplet phase then restarts the schedule at a peak of {config.finetune_learning_rate:g}."
                 if config.finetune_learning_rate else ".")
    if config.triplet_softmax_weight:
        text += (f" The classification loss stays on in the triplet phase at weight "
                 f"{config.triplet_softmax_weight:g} beside the triplet loss (same classifier).")
    if config.mixed_precision:
        text += (" Mixed precision is on: float16 compute on a GPU, bfloat16 on a CPU (variables, loss and "
                 "embeddings stay float32).")
    return text


def training_markdown(run: Mapping[str, Any], figs: Figures) -> str:
    history = run_history(run)
    summary = history_summary(history)
    if not summary["epochs"]:
        raise FileNotFoundError(f"{RunDir(run['run_dir']).history} is empty or missing (run 02_train first)")
    text = [f"Training ran for {summary['epochs']} epochs"]
    if "seconds" in summary:
        text[0] += f" in {fmt(summary['seconds'], 0)} s"
    text[0] += f" ({figs.ref('training_curves')})."
    text += _phase_sentences(history)
    if "active_fraction" in summary:
        text.append(f"The fraction of active anchor-positive pairs went from "
                    f"{fmt(summary['active_fraction']['first'])} "
                    f"to {fmt(summary['active_fraction']['last'])}.")
    if "mean_positive_distance" in summary and "mean_negative_distance" in summary:
        text.append(f"In the last epoch the mean anchor-positive distance was "
                    f"{fmt(summary['mean_positive_distance']['last'])} and the mean anchor-negative distance "
                    f"{fmt(summary['mean_negative_distance']['last'])}.")
        gap = summary["mean_negative_distance"]["last"] - summary["mean_positive_distance"]["last"]
        margin = run["config"].margin
        if summary.get("active_fraction", {}).get("last", 0) > 0.95 and gap < margin:
            text.append(f"Nearly every anchor-positive pair still has a non-zero loss: the gap between the mean "
                        f"negative and positive distances ({fmt(gap)}) is below the margin ({fmt(margin, 2)}), so "
                        f"the loss stays close to the margin. Mining is alive (no collapse: the two distances "
                        f"differ); what limits the result is how well the network separates the classes.")
    if "best_val_auc" in summary:
        text.append(f"The best validation ROC AUC, {fmt(summary['best_val_auc'])}, was reached in epoch "
                    f"{summary['best_epoch']}; that model is evaluated below.")
    return " ".join(text)


def _phase_sentences(history: Mapping[str, Any]) -> list[str]:
    """How each phase's loss moved: a warm-up logs cross-entropy, the triplet phase the triplet
    loss, so one "from ... to ..." over both would compare different quantities."""
    losses = np.asarray(history.get("loss", []), dtype=float)
    phases = np.asarray(history.get("phase", ["triplet"] * len(losses))).astype(str)
    sentences = []
    for phase, what in (("warmup", "the softmax warm-up's cross-entropy"), ("triplet", "the triplet loss")):
        values = losses[phases == phase]
        values = values[np.isfinite(values)]
        if len(values):
            epochs = int((phases == phase).sum())
            sentences.append(f"Over {epochs} epoch{'s' if epochs > 1 else ''} {what} went from "
                             f"{fmt(values[0])} to {fmt(values[-1])}.")
    return sentences


def verification_markdown(run: Mapping[str, Any], figs: Figures) -> str:
    metrics = _metrics_of(run)
    return (f"{figs.ref('roc')} shows the ROC curves of the test pairs and the table lists the threshold-free "
            f"figures of the trained model and of the baselines on the same pairs.\n\n" + verification_table(metrics)
            + _pretrained_caveat(run))


def _stored_siamese_threshold(run: Mapping[str, Any]) -> float | None:
    """The τ that siamese.keras holds (training.json records it when training ends)."""
    value = run.get("training", {}).get("threshold")
    return float(value) if isinstance(value, (int, float)) else None


def confusion_markdown(run: Mapping[str, Any], figs: Figures) -> str:
    metrics = _metrics_of(run)
    return (f"For every protocol the threshold τ is chosen on its validation pairs (method "
            f"`{metrics['threshold_method']}`) and applied unchanged to its test pairs"
            + (f"; the Siamese model stores τ = {fmt(_stored_siamese_threshold(run))}, chosen when training ended "
               f"on the validation pairs used for model selection" if _stored_siamese_threshold(run) is not None
               else "") + f". {figs.ref('confusion_matrix')} "
            f"shows the resulting confusion matrices and {figs.ref('distance_histograms')} the distances of "
            f"same-class and different-class pairs on either side of τ. In the table TP, FN, FP and TN count "
            f"same-class pairs accepted and rejected and different-class pairs accepted and rejected.\n\n"
            + confusion_table(metrics))


def retrieval_markdown(run: Mapping[str, Any], figs: Figures) -> str:
    metrics = _metrics_of(run)
    return (f"Each test image queries the other test images of its protocol. {figs.ref('retrieval_examples')} "
            f"shows random queries of seen classes with their {retrieval_k(metrics)} nearest neighbours.\n\n"
            + retrieval_table(metrics) + _pretrained_caveat(run))


def loss_comparison_markdown(run_dirs: Sequence[str | os.PathLike]) -> str:
    """The loss comparison table of `run_dirs` and a sentence on what it shows."""
    run_dirs = [Path(d) for d in run_dirs]
    runs = [read_run(d) for d in run_dirs]
    losses = sorted({run["config"].loss for run in runs})
    table = loss_comparison_table(run_dirs)
    if len(losses) < 2:
        only = LOSS_NAMES[losses[0]]
        other = "hard" if losses[0] == "semihard" else "semihard"
        return (f"{table}\n\nOnly runs with the {only} were given, so this table has no second loss to compare "
                f"with. To fill it, train a run with `\"loss\": \"{other}\"` in its configuration and pass both "
                f"run directories: `tinymatch report --config CONFIG --out RUN_DIR --compare OTHER_RUN_DIR`.")
    best = max(runs, key=lambda run: _seen_auc(run))
    notes = [f"All rows are evaluated with the same protocols and pair sampling. The highest ROC AUC on seen "
             f"classes is that of run `{Path(best['run_dir']).name}` ({LOSS_NAMES[best['config'].loss]})."]
    for run in runs:
        if "(warmup)" in best_epoch_label(run):
            history = run_history(run)
            positive = np.asarray(history.get("mean_positive_distance", [np.nan]), dtype=float)[-1]
            negative = np.asarray(history.get("mean_negative_distance", [np.nan]), dtype=float)[-1]
            notes.append(f"Run `{Path(run['run_dir']).name}` kept a warm-up epoch: none of its "
                         f"{LOSS_NAMES[run['config'].loss]} epochs beat the classifier's embedding on validation "
                         f"AUC, so its row measures the warm-up model. In its last epoch the mean anchor-positive "
                         f"and anchor-negative distances were {fmt(positive)} and {fmt(negative)}"
                         + (" (a collapsed embedding: every image mapped to nearly the same point)."
                            if negative < 0.1 else "."))
    return f"{table}\n\n" + " ".join(notes)


def transfer_markdown(run_dirs: Sequence[str | os.PathLike]) -> str:
    """From scratch vs a pretrained backbone over `run_dirs`, with the ImageNet-overlap caveat."""
    run_dirs = [Path(d) for d in run_dirs]
    runs = [read_run(d) for d in run_dirs]
    table = transfer_table(run_dirs)
    pretrained = [run for run in runs if run["config"].weights]
    if not pretrained:
        return (f"{table}\n\nNo run with a pretrained backbone joined this report. The `transfer` profile "
                "trains the embedding head on a frozen ImageNet-pretrained EfficientNet-Lite0 (weights from "
                "the `transfer` extra's package, converted offline): `make report PROFILE=transfer`, then pass "
                "its run directory to this report with `--compare`. " + IMAGENET_OVERLAP_CAVEAT)
    notes = ["Starred columns (unseen classes):", IMAGENET_OVERLAP_CAVEAT]
    if any(run.get("training", {}).get("trained_on") == "cached features" for run in pretrained):
        notes.append("A backbone frozen for the whole run computes the same features every epoch, so they are "
                     "extracted once per image and its mirror image and cached (the *feature extraction* "
                     "column); only the head trains, in minutes. On cached features the horizontal flip (a "
                     "random choice of the two cached views) is the only augmentation: crops, rotations and "
                     "colour changes would need the backbone's forward pass again.")
    scratch = [run for run in runs if not run["config"].weights]
    if scratch:
        best_scratch = max(scratch, key=_seen_auc)
        best_pretrained = max(pretrained, key=_seen_auc)
        notes.append(f"On seen classes the pretrained run `{Path(best_pretrained['run_dir']).name}` reaches a test "
                     f"AUC of {fmt(_seen_auc(best_pretrained))} against {fmt(_seen_auc(best_scratch))} for the "
                     f"from-scratch run `{Path(best_scratch['run_dir']).name}`.")
    return f"{table}\n\n" + " ".join(notes)


def _seen_auc(run: Mapping[str, Any]) -> float:
    trained = run.get("metrics", {}).get("seen", {}).get("trained")
    return trained["test"]["roc_auc"] if trained else float("-inf")


def projector_markdown(run: Mapping[str, Any], figs: Figures) -> str:
    paths = RunDir(run["run_dir"])
    export = paths.projector
    config_file = export / projector.CONFIG_FILENAME
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file} not found (run 04_embeddings first)")
    points = sum(1 for _ in (export / projector.TENSORS_FILENAME).open())
    name, folder = paths.path.name, export.relative_to(paths.path).as_posix()
    logdir = paths.tensorboard.relative_to(paths.path).as_posix()
    return (f"The export in `{name}/{folder}/` holds {fmt(points)} test images of seen classes, drawn evenly "
            f"across classes. It lies inside the run's TensorBoard log directory, so `tensorboard --logdir "
            f"{name}/{logdir}` shows the training curves and, in the PROJECTOR tab, these embeddings; or load "
            f"`{projector.TENSORS_FILENAME}` and `{projector.METADATA_FILENAME}` on projector.tensorflow.org. "
            f"{figs.ref('embedding_map')} is a static 2-D view of the same points.\n\n" + projector_table(export))


def config_markdown(run: Mapping[str, Any]) -> str:
    return ("Every field of `config.json`; rerun with `tinymatch report --config config.json`.\n\n"
            + config_table(run["config"]))


def _metrics_of(run: Mapping[str, Any]) -> dict[str, Any]:
    if "metrics" not in run:
        raise FileNotFoundError(f"{RunDir(run['run_dir']).metrics} not found (run 03_evaluate first)")
    return run["metrics"]


# =================================================================================================
# Rendering: HTML (self-contained) and PDF (headless Chromium)


__all__ = ["key_numbers", "title_block", "introduction_summary", "architecture_markdown", "loss_markdown",
           "mining_markdown", "dataset_markdown", "split_markdown", "augmentation_markdown",
           "optimisation_markdown", "training_markdown", "verification_markdown", "confusion_markdown",
           "retrieval_markdown", "loss_comparison_markdown", "transfer_markdown",
           "IMAGENET_OVERLAP_CAVEAT", "projector_markdown", "config_markdown"]
