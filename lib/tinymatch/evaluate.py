"""Evaluate an embedding model: protocols -> metrics.json (the orchestration; each step has a room).

The flow, for each protocol ("seen": new images of training classes; "unseen": classes never seen
in training; "official-val": the dataset's own labelled val/ images, when present):

1. Embed the val and test parts in batches, cached per model file and images (`tinymatch.embed`).
2. Draw balanced positive/negative pairs with a fixed seed (`tinymatch.pairs`) and save them, so
   every model and every figure is scored on the same pairs.
3. Verification (`tinymatch.metrics`): ROC, AUC with a bootstrap 95% interval, EER, TAR at FAR
   1e-1/1e-2/1e-3 on both parts; the threshold is chosen on the val pairs only, then frozen and
   applied to the test pairs (`verification_report` takes the two parts separately so the test
   pairs can never choose it).
4. Retrieval on the test part: precision@1, recall@k, MAP@R, and the top-k neighbours of every query.
5. Baselines through the same code: raw pixels and the untrained (random-weights) network.

With `config.score_normalisation == "training-mean"`, the trained model's pairs and retrieval are
scored with the normalised distance of `tinymatch.metrics` (the mean embedding of a seeded sample
of its training images, `training_mean_embedding`), and siamese.keras carries that mean. The
baselines keep their plain distance: they show what no training gives, not what a scoring adds.

The file names of a run directory come from `tinymatch.rundir`. The names other code used to import
from here (metrics, pairs, embeddings, `load_image_file`, `match_files`) are re-exported. Distances:
smaller = more similar; a pair matches when `distance <= threshold`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tinymatch import data as data_module
from tinymatch import model as model_module
from tinymatch.config import EVALUATION_SPLITS, MODEL_NAMES, SPLIT_EVALUATIONS, Config
from tinymatch.embed import (  # noqa: F401  (re-exported)
    Embedder,
    embed,
    embedding_cache_key,
    embeddings_for,
    model_embedders,
    raw_pixel_embeddings,
    untrained_embedding_model,
)
from tinymatch.io_utils import read_json, write_json
from tinymatch.match import UnreadableImageError, load_image_file, match_files  # noqa: F401  (re-exported)
from tinymatch.metrics import (  # noqa: F401  (re-exported: the evaluation API in one place)
    DEFAULT_FARS,
    bootstrap_auc_ci,
    choose_threshold,
    confusion_at_threshold,
    distance_histograms,
    equal_error_rate,
    nearest_neighbours,
    pair_distances,
    retrieval_metrics,
    roc_auc,
    roc_curve,
    tar_at_far,
    verification_metrics,
)
from tinymatch.pairs import Pairs, make_pairs, pairs_for_config  # noqa: F401  (re-exported)
from tinymatch.rundir import RunDir, read_json_if_present, write_evaluation_arrays


class MissingThresholdError(ValueError):
    """No frozen threshold is stored beside a model (needed by the official-val protocol)."""


class NoOfficialValError(ValueError):
    """The dataset has no labelled official val/ images."""


# --- verification ---------------------------------------------------------------------------------

def _part_figures(distances, pairs: Pairs, config: Config, threshold: float):
    """(JSON figures, arrays for plots) of one part's pairs at a frozen threshold."""
    figures = verification_metrics(distances, pairs.same, bootstrap_samples=config.bootstrap_samples,
                                   seed=config.seed)
    figures["confusion"] = confusion_at_threshold(distances, pairs.same, threshold)
    far, tar, thresholds = roc_curve(distances, pairs.same)
    histograms = distance_histograms(distances, pairs.same)
    arrays = {
        "distances": distances, "same": pairs.same, "first": pairs.first, "second": pairs.second,
        "roc_far": far, "roc_tar": tar, "roc_thresholds": thresholds,
        "hist_bins": histograms["bins"], "hist_positive": histograms["positive"],
        "hist_negative": histograms["negative"],
    }
    return figures, arrays


def verification_report(emb_val, labels_val, emb_test, labels_test, config: Config, *,
                        pairs_val: Pairs | None = None, pairs_test: Pairs | None = None) -> dict:
    """Verification figures; the threshold is chosen on the val part ONLY and applied to test.

    Returns {"threshold", "threshold_method", "target_far", "distance_metric", "val": {...},
    "test": {...}, "curves": {"val": arrays, "test": arrays}}. "curves" holds NumPy arrays (ROC
    points, histograms, pair distances); pop it before writing JSON. Pairs default to
    `make_pairs` with the config's seed, cap and negative mining.
    """
    pairs = {"val": pairs_val if pairs_val is not None else pairs_for_config(labels_val, config, emb_val),
             "test": pairs_test if pairs_test is not None else pairs_for_config(labels_test, config, emb_test)}
    distances = {"val": pair_distances(emb_val, pairs["val"], config.distance_metric),
                 "test": pair_distances(emb_test, pairs["test"], config.distance_metric)}
    return _report_from_distances(distances, pairs, config)


def _report_from_distances(distances: dict, pairs: dict, config: Config,
                           threshold: float | None = None) -> dict:
    """The report of `verification_report` from pair distances of the parts.

    Without `threshold`, it is chosen on distances["val"] and only then applied to the test part.
    """
    if threshold is None:
        threshold = choose_threshold(distances["val"], pairs["val"].same, config.threshold_method,
                                     config.target_far)
    report = {
        "threshold": float(threshold),
        "threshold_method": config.threshold_method,
        "target_far": config.target_far,
        "distance_metric": config.distance_metric,
        "curves": {},
    }
    for part in distances:
        report[part], report["curves"][part] = _part_figures(distances[part], pairs[part], config, threshold)
    return report


# --- one protocol, several models -----------------------------------------------------------------

def _evaluation_arrays(report: dict, retrieval: dict, part_indices: dict[str, np.ndarray]) -> dict:
    """Flatten the plot data of one (protocol, model) into the arrays rundir names
    (`rundir.evaluation_array_keys`)."""
    arrays = {"threshold": np.float64(report["threshold"])}
    for part, curves in report["curves"].items():
        indices = part_indices[part]
        arrays[f"{part}_distances"] = curves["distances"].astype(np.float32)
        arrays[f"{part}_same"] = curves["same"]
        arrays[f"{part}_first"] = indices[curves["first"]]
        arrays[f"{part}_second"] = indices[curves["second"]]
    test = report["curves"]["test"]
    for name in ("roc_far", "roc_tar", "roc_thresholds", "hist_bins", "hist_positive", "hist_negative"):
        arrays[name] = test[name]
    arrays["retrieval_queries"] = part_indices["test"]
    arrays["retrieval_labels"] = retrieval["labels"]
    arrays["neighbours"] = part_indices["test"][retrieval["neighbours"]]
    arrays["neighbour_distances"] = retrieval["neighbour_distances"]
    return arrays


def evaluate_protocol(protocol: str, part_indices: dict[str, np.ndarray], dataset,
                      embedders: dict[str, Embedder], config: Config, run_dir=None,
                      frozen_thresholds: dict[str, float] | None = None,
                      training_means: dict[str, np.ndarray] | None = None) -> dict:
    """Figures of every model in `embedders` on one protocol, all on the first model's pairs.

    part_indices: {"val": ..., "test": ...} dataset indices, or {"test": ...} alone with
    `frozen_thresholds` (one per model). With `run_dir`, the pairs go to its pairs/ and the plot
    arrays to its evaluation/ folder. training_means: {model name: its training mean embedding}
    for the models scored with the normalised distance (the pairs never depend on it).
    """
    training_means = training_means or {}
    run = RunDir(run_dir) if run_dir is not None else None
    labels = {part: np.asarray(dataset.labels)[idx] for part, idx in part_indices.items()}
    result = {f"num_{part}_images": int(len(idx)) for part, idx in part_indices.items()}
    result["num_test_classes"] = int(len(np.unique(labels["test"])))
    pairs: dict[str, Pairs] = {}
    for model_name, embedder in embedders.items():
        distances = {}
        for part, idx in part_indices.items():  # one part's embeddings in memory at a time
            embeddings = embedder(idx)
            if part not in pairs:  # the first model (trained) decides the pairs (and hard negatives)
                pairs[part] = pairs_for_config(labels[part], config, embeddings)
                if run is not None:
                    pairs[part].save(run.pairs_file(protocol, part), indices=idx)
            mean = training_means.get(model_name)
            distances[part] = pair_distances(embeddings, pairs[part], config.distance_metric,
                                             training_mean=mean)
            if part == "test":
                retrieval = retrieval_metrics(embeddings, labels["test"], k=config.retrieval_top_k,
                                              distance_metric=config.distance_metric,
                                              return_neighbours=True, training_mean=mean)
                retrieval["labels"] = labels["test"]
            del embeddings
        threshold = None if frozen_thresholds is None else frozen_thresholds[model_name]
        report = _report_from_distances(distances, pairs, config, threshold)
        if run is not None:
            write_evaluation_arrays(run.path, protocol, model_name,
                                    _evaluation_arrays(report, retrieval, part_indices))
        report.pop("curves")
        report["retrieval"] = {k: v for k, v in retrieval.items()
                               if k not in ("neighbours", "neighbour_distances", "labels")}
        result[model_name] = report
    return result


def _choose_thresholds(protocol: str, val_indices: np.ndarray, dataset, embedders: dict[str, Embedder],
                       config: Config, run_dir, training_means: dict[str, np.ndarray]) -> dict:
    """Each model's threshold on the val part of a training protocol that has no test part of its
    own ('joint'), with that part's figures. The trained model's pairs are used for all models."""
    reason = _skip_reason(dataset, {"val": val_indices})
    if reason:
        return {"skipped": reason}
    labels = np.asarray(dataset.labels)[val_indices]
    result: dict = {"num_val_images": int(len(val_indices)), "num_val_classes": int(len(np.unique(labels)))}
    pairs = None
    for model_name, embedder in embedders.items():
        embeddings = embedder(val_indices)
        if pairs is None:
            pairs = pairs_for_config(labels, config, embeddings)
            pairs.save(RunDir(run_dir).pairs_file(protocol, "val"), indices=val_indices)
        distances = pair_distances(embeddings, pairs, config.distance_metric,
                                   training_mean=training_means.get(model_name))
        del embeddings
        report = _report_from_distances({"val": distances}, {"val": pairs}, config)
        report.pop("curves")
        result[model_name] = report
    return result


# --- score normalisation --------------------------------------------------------------------------

# Training images whose mean embedding normalises the pair scores: a seeded sample (about a fifth
# of the joint protocol's training part). On 15,000 the mean of the cpu profile's embedding moved
# its val AUC by under 0.001 against the mean of the 150 class centroids (benchmarks/README.md).
TRAINING_MEAN_IMAGES = 15_000


def training_mean_sample(splits, config: Config) -> np.ndarray:
    """Sorted dataset indices of the seeded sample of the training part (config.protocol) whose
    embeddings' mean normalises the scores. Never a val or test image."""
    training = np.asarray(splits.indices(config.protocol, "train"), dtype=np.int64)
    if len(training) == 0:
        raise ValueError(f"config.score_normalisation={config.score_normalisation!r} needs training "
                         f"images, and the {config.protocol!r} split has none")
    chosen = np.random.default_rng(config.seed).permutation(training)[:TRAINING_MEAN_IMAGES]
    return np.sort(chosen)


def training_mean_embedding(embedder: Embedder, splits, config: Config) -> np.ndarray:
    """float32 [D]: the mean of the unit embeddings of `training_mean_sample` (not re-normalised:
    its length is part of the normalisation, `tinymatch.metrics`)."""
    embeddings = np.asarray(embedder(training_mean_sample(splits, config)), np.float64)
    embeddings /= np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    return embeddings.mean(axis=0).astype(np.float32)


def _training_means(embedders: dict[str, Embedder], splits, config: Config) -> dict[str, np.ndarray]:
    """{"trained": its training mean} when config.score_normalisation asks for one, else {}."""
    if config.score_normalisation == "none":
        return {}
    return {"trained": training_mean_embedding(embedders["trained"], splits, config)}


# --- which images each protocol judges ------------------------------------------------------------

def official_val_indices(subsets, labels, *, required: bool = True, source="the dataset") -> np.ndarray:
    """Rows whose official subset is 'val' and that have a label: the official-val protocol's
    images (a dataset's `subsets`, or a split's `official`; no split needed). Empty when there
    are none (or `subsets` is None), or NoOfficialValError naming `source` when `required`."""
    if subsets is None:
        indices = np.empty(0, np.int64)
    else:
        indices = np.flatnonzero((np.asarray(subsets) == "val") & (np.asarray(labels) >= 0)).astype(np.int64)
    if len(indices) == 0 and required:
        raise NoOfficialValError(
            f"dataset {source} has no labelled official val/ images "
            "(val/images + val/val_annotations.txt); use --split seen or unseen")
    return indices


def _part_indices(splits, protocol: str, trained_on: str) -> dict[str, np.ndarray]:
    """Dataset indices of the val and test parts of `protocol` for a model trained on `trained_on`.

    `Splits.evaluation_indices` restricts the parts to what the model never saw (a 'joint' model:
    seen = held-out images of its training classes, unseen = held-out classes); it raises DataError
    (a ValueError) when the protocol cannot be judged (a model trained on 'seen' has seen images of
    every class, so 'unseen' means nothing for it).
    """
    return {part: np.asarray(splits.evaluation_indices(trained_on, protocol, part), dtype=np.int64)
            for part in ("val", "test")}


def _skip_reason(dataset, part_indices) -> str | None:
    for part, idx in part_indices.items():
        classes = np.unique(np.asarray(dataset.labels)[idx])
        if len(classes) < 2:
            return f"the {part} part has {len(idx)} images of {len(classes)} class(es); need >= 2 classes"
    return None


# --- a whole run ----------------------------------------------------------------------------------

def evaluate_run(run_dir, dataset, splits, config: Config, *, progress: bool = True,
                 baselines: bool = True) -> dict:
    """Evaluate run_dir/model.keras and the two baselines on every protocol; write metrics.json.

    Writes (all atomically; names from `tinymatch.rundir`):
      metrics.json                         the figures, below
      embeddings/<model stem>-<key>.npy    cached embeddings of the trained model
      pairs/<protocol>_<part>.npz          first, second (positions in the part), same, indices
                                           (the part's dataset indices)
      evaluation/<protocol>_<model>.npz    threshold, roc_far/roc_tar/roc_thresholds, hist_bins/
                                           hist_positive/hist_negative, {val,test}_distances/_same/
                                           _first/_second (dataset indices), retrieval_queries,
                                           retrieval_labels, neighbours (dataset indices, [N, k]),
                                           neighbour_distances
    for protocol in seen, unseen, official-val (when the dataset has labelled val images) and model
    in trained, raw_pixels, untrained; all models are scored on the same pairs.

    Parts are restricted to what the model never saw (`Splits.evaluation_indices`): a model trained
    on 'joint' is judged on held-out images of its classes (seen) and on held-out classes (unseen);
    a model trained on 'seen' saw every class, so 'unseen' is {"skipped": reason}. One threshold
    per model is chosen, on config.protocol's val pairs only (for 'joint': the val images of the
    training classes and the unseen val classes, which get their own entry with val figures only
    and pairs/joint_val.npz), and every protocol's val and test parts are judged at it: a deployed
    matcher has one threshold and cannot recalibrate on classes it has not met. The trained
    model's threshold is written into siamese.keras (`ship_threshold`), so the shipped model, the
    tables and the figures use the same number, and the shipped model scores a sample of the test
    pairs itself (metrics["siamese"]).

    metrics.json: {"threshold" (trained, chosen on config.protocol's val pairs), settings
    ("score_normalisation", and "training_mean_images": the size of the sample whose mean embedding
    normalises the trained model's scores, 0 without normalisation)...,
    "<protocol>": {"num_val_images", "num_test_images", "num_test_classes", "<model>": {"threshold",
    "val": {...}, "test": {"roc_auc", "roc_auc_ci95", "eer", "tar_at_far", "confusion", ...},
    "retrieval": {"precision_at_1", "recall_at_k", "k", "map_at_r", ...}}}, "siamese": {...}}.
    official-val has no "val" part. Returns the metrics dict. baselines=False: the trained model
    alone (ablations: the baselines do not change between their runs).
    """
    run = RunDir(run_dir)
    if not run.model.is_file():
        raise FileNotFoundError(f"no trained model in the run directory: {run.model}")
    embedders = model_embedders(run.model, dataset, config, baselines=baselines, progress=progress)
    training_means = _training_means(embedders, splits, config)
    metrics: dict = {
        "model": run.model.name,
        "threshold_protocol": config.protocol,
        "threshold_method": config.threshold_method,
        "distance_metric": config.distance_metric,
        "score_normalisation": config.score_normalisation,
        "training_mean_images": (len(training_mean_sample(splits, config)) if training_means else 0),
        "max_positive_pairs": config.max_positive_pairs,
        "hard_negatives": config.hard_negatives,
        "seed": config.seed,
    }
    frozen = None  # each model's threshold, chosen once on config.protocol's val pairs
    if config.protocol not in SPLIT_EVALUATIONS:  # 'joint': its own val part (seen + unseen) decides
        val_indices = np.asarray(splits.indices(config.protocol, "val"), dtype=np.int64)
        metrics[config.protocol] = _choose_thresholds(config.protocol, val_indices, dataset, embedders,
                                                      config, run.path, training_means)
        frozen = _thresholds_of(metrics[config.protocol], config, embedders)
    # The protocol that chooses the threshold first, then every other at that frozen threshold.
    for protocol in sorted(SPLIT_EVALUATIONS, key=lambda name: name != config.protocol):
        try:
            part_indices = _part_indices(splits, protocol, config.protocol)
        except ValueError as err:  # e.g. a 'seen'-trained model cannot be judged on unseen classes
            metrics[protocol] = {"skipped": str(err)}
            continue
        reason = _skip_reason(dataset, part_indices)
        if reason:
            metrics[protocol] = {"skipped": reason}
            continue
        metrics[protocol] = evaluate_protocol(protocol, part_indices, dataset, embedders, config,
                                              run.path, frozen, training_means)
        if protocol == config.protocol:
            frozen = _thresholds_of(metrics[protocol], config, embedders)
    if frozen is None:  # config.protocol was skipped: raises, naming why
        frozen = _thresholds_of(metrics[config.protocol], config, embedders)
    metrics["threshold"] = frozen["trained"]
    official = official_val_indices(splits.official, splits.labels, required=False)
    if len(official) and _skip_reason(dataset, {"test": official}) is None:
        metrics["official-val"] = evaluate_protocol("official-val", {"test": official}, dataset,
                                                    embedders, config, run.path, frozen, training_means)
    metrics["siamese"] = ship_threshold(run, metrics["threshold"], config, dataset,
                                        [p for p in SPLIT_EVALUATIONS if "skipped" not in metrics[p]],
                                        training_means.get("trained"))
    write_json(run.metrics, metrics)
    return metrics


def evaluate_test_parts(run_dir, dataset, splits, config: Config, *, progress: bool = False) -> dict:
    """The trained model alone on the seen and unseen test parts, at the threshold training chose
    on its val selection (training.json): what an ablation compares, at about a third of
    `evaluate_run`'s cost (no val parts, no baselines, no plot arrays, no Siamese check).

    Same pairs and retrieval as `evaluate_run` (same sampler and seed), so the AUC and P@1 are
    the figures evaluate_run would give with config.score_normalisation "none"; the plain distance
    is kept whatever the config says, because the training threshold (used by the
    threshold-dependent figures: accuracy, confusion) was chosen on plain distances. Writes and
    returns test_metrics.json:
    {"threshold", "<protocol>": {"num_test_images", "num_test_classes", "trained": {"test": {...},
    "retrieval": {...}}} or {"skipped": reason}}.
    """
    run = RunDir(run_dir)
    if not run.model.is_file():
        raise FileNotFoundError(f"no trained model in the run directory: {run.model}")
    threshold = float(read_json(run.training)["threshold"])
    embedders = model_embedders(run.model, dataset, config, baselines=False, progress=progress)
    metrics: dict = {"model": run.model.name, "threshold": threshold,
                     "threshold_source": run.training.name, "seed": config.seed,
                     "score_normalisation": "none"}
    for protocol in SPLIT_EVALUATIONS:
        try:
            test = {"test": _part_indices(splits, protocol, config.protocol)["test"]}
        except ValueError as err:
            metrics[protocol] = {"skipped": str(err)}
            continue
        reason = _skip_reason(dataset, test)
        metrics[protocol] = ({"skipped": reason} if reason else evaluate_protocol(
            protocol, test, dataset, embedders, config, None, {"trained": threshold}))
    write_json(run.test_metrics, metrics)
    return metrics


def _thresholds_of(chosen: dict, config: Config, embedders) -> dict[str, float]:
    if "skipped" in chosen:
        raise ValueError(f"config.protocol={config.protocol!r}: cannot choose a threshold: {chosen['skipped']}")
    return {name: chosen[name]["threshold"] for name in embedders}


# The shipped Siamese model scores this many positive and as many negative test pairs of each
# protocol itself: a check that the file a user loads decides as the tables say (it embeds every
# image of a pair again, so not all pairs).
SIAMESE_CHECK_PAIRS = 500


def ship_threshold(run: RunDir, threshold: float, config: Config, dataset, protocols,
                   training_mean: np.ndarray | None = None) -> dict:
    """Write `threshold` and `training_mean` (None: the plain distance) into run/siamese.keras
    (rebuilt around its own embedding model, saved atomically) and let that file decide a seeded
    sample of each protocol's test pairs.

    Returns {"threshold", "threshold_from_training" (what training stored, chosen on its smaller
    val selection), "<protocol>": {"pairs", "accuracy", "tar", "far", "agreement" (share of pairs
    decided as the evaluation's distances decide them), "max_distance_difference"}}.
    """
    from tinymatch.model_files import save_model

    result: dict = {"threshold": float(threshold), "threshold_from_training": None}
    if not run.siamese.is_file():
        return result
    siamese = model_module.load_model(run.siamese)
    held = float(model_module.siamese_threshold(siamese))
    # training.json keeps what training chose: siamese.keras holds an earlier evaluation's threshold
    # once a run has been evaluated, and a re-evaluation must not report that as training's.
    training = read_json_if_present(run.training) or {}
    result["threshold_from_training"] = float(training.get("threshold", held))
    held_mean = model_module.siamese_training_mean(siamese)
    same_mean = (held_mean is None if training_mean is None
                 else held_mean is not None and np.array_equal(held_mean, np.asarray(training_mean, np.float32)))
    if held != float(threshold) or not same_mean:
        embedding = model_module.embedding_from_siamese(siamese)
        siamese = model_module.build_siamese_model(embedding, float(threshold), config.distance_metric,
                                                   training_mean=training_mean)
        save_model(siamese, run.siamese, clone=False)
    for protocol in protocols:
        result[protocol] = _siamese_decisions(siamese, run, protocol, dataset, config, float(threshold))
    return result


def _siamese_decisions(siamese, run: RunDir, protocol: str, dataset, config: Config, threshold: float) -> dict:
    from tinymatch.rundir import read_evaluation_arrays

    arrays = read_evaluation_arrays(run.path, protocol, "trained")
    same = np.asarray(arrays["test_same"], bool)
    rng = np.random.default_rng(config.seed)
    chosen = np.sort(np.concatenate([
        rng.permutation(np.flatnonzero(same))[:SIAMESE_CHECK_PAIRS],
        rng.permutation(np.flatnonzero(~same))[:SIAMESE_CHECK_PAIRS]]))
    images = np.asarray(dataset.images)
    first = images[arrays["test_first"][chosen]].astype(np.float32)
    second = images[arrays["test_second"][chosen]].astype(np.float32)
    out = siamese.predict([first, second], batch_size=config.eval_batch_size, verbose=0)
    match = np.asarray(out["match"]).reshape(-1) > 0.5
    distance = np.asarray(out["distance"], np.float64).reshape(-1)
    evaluated = np.asarray(arrays["test_distances"], np.float64)[chosen]
    truth = same[chosen]
    return dict(pairs=int(len(chosen)), accuracy=float(np.mean(match == truth)),
                tar=float(np.mean(match[truth])), far=float(np.mean(match[~truth])),
                agreement=float(np.mean(match == (evaluated <= threshold))),
                max_distance_difference=float(np.max(np.abs(distance - evaluated))))


# --- one model file (`tinymatch evaluate`) --------------------------------------------------------

def stored_threshold(run_dir, *, siamese=None) -> tuple[float, str]:
    """(frozen threshold, where it came from) of a run: siamese.keras (`siamese`: that file,
    already loaded), else metrics.json."""
    run = RunDir(run_dir)
    if run.siamese.is_file():
        siamese = siamese if siamese is not None else model_module.load_model(run.siamese)
        return float(model_module.siamese_threshold(siamese)), str(run.siamese)
    if run.metrics.is_file():
        stored = read_json(run.metrics)
        if isinstance(stored, dict) and "threshold" in stored:
            return float(stored["threshold"]), str(run.metrics)
    raise MissingThresholdError(
        f"no frozen threshold beside the model: neither {run.siamese} nor a 'threshold' in "
        f"{run.metrics} exists (train the run first, or evaluate --split seen/unseen)")


def _run_config(run: RunDir, data) -> Config:
    config = Config.load(run.config) if run.config.is_file() else Config.from_profile("cpu")
    if data:  # else config.data, resolved by load_dataset_for ($TINYMATCH_DATA, default path, ...)
        config = config.replace(data=str(data))
    return config


def _split_of_run(run: RunDir, dataset, config: Config, split: str):
    """The run's split applied to `dataset` (split.csv when present, else made from the config).

    A split.csv made on other train images cannot judge seen/unseen here: the error says so and
    names what can still run on this dataset (official-val needs no split).
    """
    try:
        return data_module.run_splits(run.path, dataset, config)
    except data_module.DataError as err:
        still = ("only --split official-val can still run on it (it needs no split)"
                 if len(official_val_indices(dataset.subsets, dataset.labels, required=False)) else
                 "and it has no labelled val/ images for --split official-val, so no protocol can run")
        raise data_module.DataError(f"cannot evaluate --split {split} of this run on {dataset.source}: "
                                    f"{err}; {still}") from None


def _stored_or_new_training_means(run: RunDir, shipped, embedders, dataset, config: Config, split: str) -> dict:
    """The training mean a run's pairs are scored with: the one in `shipped` (its loaded
    siamese.keras, or None; what its stored threshold was chosen with), else one computed from the
    run's split; {} when not normalised."""
    if config.score_normalisation == "none":
        return {}
    held = None if shipped is None else model_module.siamese_training_mean(shipped)
    if held is not None:
        return {"trained": held}
    return _training_means(embedders, _split_of_run(run, dataset, config, split), config)


def evaluate_model_file(model_path, data=None, *, split: str = "seen", out=None, progress: bool = True,
                        baselines: bool = False) -> dict:
    """Figures of one model file on one protocol (the `tinymatch evaluate` command).

    The run's config.json (beside the model) gives the data options, seed and evaluation settings;
    `data` overrides its dataset path. seen/unseen: the split comes from split.csv beside the model
    (applied to any dataset with the same train images, e.g. one with val/ added) or is made from
    the config; the threshold is chosen on the val part and applied to the test part.
    official-val: all labelled official val images (no split needed), at the threshold stored with
    the run (siamese.keras, else metrics.json). With `out`, the JSON is written there.
    """
    if split not in EVALUATION_SPLITS:
        raise ValueError(f"split={split!r}: must be one of {', '.join(EVALUATION_SPLITS)}")
    model_path = Path(model_path)
    if not model_path.exists():
        raise FileNotFoundError(f"model file not found: {model_path}")
    model_module.check_model_archive(model_path)  # a file that is no model fails before the data loads
    run = RunDir(model_path.parent)
    config = _run_config(run, data)
    dataset = data_module.load_dataset_for(config, progress=progress)
    if split == "official-val":
        part_indices = {"test": official_val_indices(dataset.subsets, dataset.labels,
                                                     source=dataset.source)}
    else:
        part_indices = _part_indices(_split_of_run(run, dataset, config, split), split, config.protocol)
        reason = _skip_reason(dataset, part_indices)
        if reason:
            raise ValueError(f"cannot evaluate split {split!r}: {reason}")
    embedders = model_embedders(model_path, dataset, config, baselines=baselines, progress=progress)
    # siamese.keras, loaded once, where its threshold or its training mean is needed
    shipped = (model_module.load_model(run.siamese) if run.siamese.is_file()
               and (split == "official-val" or config.score_normalisation != "none") else None)
    training_means = _stored_or_new_training_means(run, shipped, embedders, dataset, config, split)
    if split == "official-val":
        threshold, source = stored_threshold(run.path, siamese=shipped)
        # Baselines have no stored threshold: official-val evaluates the trained model only.
        figures = evaluate_protocol(split, part_indices, dataset, {"trained": embedders["trained"]},
                                    config, None, {"trained": threshold}, training_means)
    else:
        figures = evaluate_protocol(split, part_indices, dataset, embedders, config, None,
                                    training_means=training_means)
        source = f"chosen on the val part of {split!r} ({config.threshold_method})"
    metrics = {"model": str(model_path), "data": str(dataset.source), "split": split,
               "threshold": figures["trained"]["threshold"], "threshold_source": source,
               "score_normalisation": config.score_normalisation, **figures}
    if out:
        write_json(out, metrics)
    return metrics


__all__ = [
    "evaluate_test_parts",
    "embed", "embeddings_for", "embedding_cache_key", "raw_pixel_embeddings", "untrained_embedding_model",
    "model_embedders", "Pairs", "make_pairs", "pair_distances", "roc_curve", "roc_auc",
    "bootstrap_auc_ci", "equal_error_rate", "tar_at_far", "distance_histograms", "choose_threshold",
    "confusion_at_threshold", "verification_metrics", "verification_report", "retrieval_metrics",
    "nearest_neighbours", "evaluate_protocol", "evaluate_run", "evaluate_model_file",
    "official_val_indices", "stored_threshold", "training_mean_embedding", "training_mean_sample",
    "TRAINING_MEAN_IMAGES", "load_image_file", "match_files",
    "UnreadableImageError", "MissingThresholdError", "NoOfficialValError", "MODEL_NAMES",
]
