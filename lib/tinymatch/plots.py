"""The report's figures: one function per figure, each returning a matplotlib `Figure`.

Functions take plain arrays (no file reading) so they are easy to test and to reuse; the notebooks
gather the arrays from a run directory (see `tinymatch.report`) and save each figure with
`save_fig(fig, "figs/<content>.png")`. Figures are built with `matplotlib.figure.Figure` rather than
`pyplot`, so no global state piles up across a long notebook.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from tinymatch.io_utils import atomic_write_bytes

DPI = 110
SEEN_COLOR, UNSEEN_COLOR = "#1f77b4", "#d62728"
PROTOCOL_COLORS = {"seen": SEEN_COLOR, "unseen": UNSEEN_COLOR}
CORRECT_COLOR, WRONG_COLOR = "#2ca02c", "#d62728"


# --- saving -----------------------------------------------------------------------------------------

def save_fig(fig: Figure, path: str | os.PathLike, *, dpi: int = DPI) -> Path:
    """Write `fig` as PNG to `path` atomically (small files: ~110 dpi, optimised PNG)."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"save_fig: {path} must end in .png")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, facecolor="white", pil_kwargs={"optimize": True})
    return atomic_write_bytes(path, buffer.getvalue())


def _figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def _as_uint8(image) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    return image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image


def _show_image(ax, image, title: str | None = None, border: str | None = None) -> None:
    # Nearest-neighbour upscaling shows the 64 px images as they are and keeps the PNGs small.
    ax.imshow(_as_uint8(image), cmap="gray" if np.ndim(image) == 2 else None, vmin=0, vmax=255,
              interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(border is not None)
        if border is not None:
            spine.set_edgecolor(border)
            spine.set_linewidth(3)
    if title:
        ax.set_title(title, fontsize=8)


def _grid_shape(count: int, columns: int) -> tuple[int, int]:
    columns = max(1, min(columns, count))
    return -(-count // columns), columns


# --- data ---------------------------------------------------------------------------------------------

def class_distribution(labels, class_names: Sequence[str], *, title: str = "Images per class",
                       parts: Mapping[str, Sequence[int]] | None = None) -> Figure:
    """Left: images of every class, sorted; right: histogram of images per class.

    When every class has the same count that figure is one flat bar and one histogram bin: given
    `parts` ({part of the split: labels of its images}), it shows instead how the images of every
    class divide among the parts (`split_parts`).
    """
    counts = np.bincount(np.asarray(labels).reshape(-1), minlength=len(class_names))
    if parts is not None and len(counts) and counts.min() == counts.max():
        return split_parts(parts, class_names, total=counts)
    fig = _figure(10, 3.6)
    bars, histogram = fig.subplots(1, 2, width_ratios=[1.6, 1])
    order = np.argsort(counts)[::-1]
    bars.bar(np.arange(len(counts)), counts[order], width=1.0, color=SEEN_COLOR)
    bars.set(xlabel="class (sorted by image count)", ylabel="images", title=title)
    if len(counts) <= 24:
        bars.set_xticks(np.arange(len(counts)), [class_names[i] for i in order], rotation=60,
                        ha="right", fontsize=7)
    low, high = counts.min(), counts.max()
    bins = np.arange(low - 0.5, high + 1.5, max(1, (high - low + 1) // 30))
    histogram.hist(counts, bins=bins, color=SEEN_COLOR, edgecolor="white")
    histogram.set(xlabel="images per class", ylabel="classes",
                  title=f"{len(counts)} classes: min {low}, median {int(np.median(counts))}, max {high}")
    histogram.title.set_fontsize(9)
    return fig


def samples(images, labels, class_names: Sequence[str], *, max_classes: int = 24, columns: int = 8,
            seed: int = 0) -> Figure:
    """One random image for each of the first `max_classes` classes, titled with its class name."""
    labels = np.asarray(labels).reshape(-1)
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)[:max_classes]
    picks = [rng.choice(np.flatnonzero(labels == label)) for label in classes]
    rows, columns = _grid_shape(len(picks), columns)
    fig = _figure(1.3 * columns, 1.45 * rows)
    axes = np.atleast_1d(fig.subplots(rows, columns)).reshape(-1)
    for ax, index, label in zip(axes, picks, classes):
        _show_image(ax, images[index], _short(class_names[label]))
    for ax in axes[len(picks):]:
        ax.axis("off")
    return fig


def augmentation(image, augmentation_layer, *, count: int = 15, columns: int = 8, seed: int = 0) -> Figure:
    """The original image and `count` random augmentations (the layer run with training=True)."""
    import keras

    batch = np.repeat(np.asarray(image, dtype=np.float32)[None], count, axis=0)
    keras.utils.set_random_seed(seed)
    augmented = keras.ops.convert_to_numpy(augmentation_layer(batch, training=True))
    rows, columns = _grid_shape(count + 1, columns)
    fig = _figure(1.3 * columns, 1.35 * rows)
    axes = np.atleast_1d(fig.subplots(rows, columns)).reshape(-1)
    _show_image(axes[0], image, "original", border="black")
    for number, (ax, view) in enumerate(zip(axes[1:], augmented), start=1):
        _show_image(ax, view, f"augmented {number}")
    for ax in axes[count + 1:]:
        ax.axis("off")
    return fig


# --- training -----------------------------------------------------------------------------------------

def training_curves(history: Mapping[str, Sequence[float]], *, best_epoch: int | None = None) -> Figure:
    """Loss, active-triplet fraction, positive/negative distances and validation AUC per epoch.

    `history` maps column names of history.csv to per-epoch values; missing columns leave their
    panel with a note instead of failing (an early run may not log all of them). A dotted line marks
    the kept epoch (`best_epoch`, default: the best validation AUC, the rule training keeps by), a
    dashed one the end of a classification warm-up, and a series that is the same in every epoch is
    annotated as such (a flat line says little on its own).
    """
    epochs = np.arange(1, len(next(iter(history.values()), [])) + 1)
    fig = _figure(10, 6.4)
    (loss, active), (distances, auc) = fig.subplots(2, 2, sharex=True)
    # A classification warm-up logs cross-entropy in the loss column: show it on its own axis and
    # shade the warm-up epochs, so the triplet loss keeps a readable scale.
    phase = np.asarray(history.get("phase", [""] * len(epochs))).astype(str)
    warmup = phase == "warmup"
    if warmup.any():
        history = dict(history)
        values = np.asarray(history["loss"], dtype=float)
        history["loss"] = np.where(warmup, np.nan, values)
        twin = loss.twinx()
        twin.plot(epochs[warmup], values[warmup], "--", color="gray", marker="s", markersize=3,
                  label="warm-up cross-entropy")
        twin.set_ylabel("cross-entropy", fontsize=8, color="gray")
        twin.tick_params(labelsize=8, colors="gray")
        for ax in (loss, active, distances, auc):
            ax.axvspan(0.5, epochs[warmup].max() + 0.5, color="gray", alpha=0.08, lw=0)
        loss.text(0.02, 0.04, "shaded: softmax warm-up", transform=loss.transAxes, fontsize=8,
                  va="bottom", color="gray")
    panels = [
        (loss, "Triplet loss", [("loss", "train loss", SEEN_COLOR, "-"), ("val_loss", "val loss", UNSEEN_COLOR, "-")]),
        (active, "Active triplets (non-zero semi-hard loss)",
         [("active_fraction", "fraction of anchor-positive pairs", SEEN_COLOR, "-")]),
        (distances, "Mean embedding distances",
         [("mean_positive_distance", "anchor-positive", CORRECT_COLOR, "-"),
          ("mean_negative_distance", "anchor-negative", WRONG_COLOR, "-")]),
        (auc, "Validation ROC AUC", [("val_auc", "val AUC", SEEN_COLOR, "-")]),
    ]
    for ax, title, series in panels:
        drawn = 0
        for column, label, color, style in series:
            values = history.get(column)
            if values is None or len(values) == 0:
                continue
            ax.plot(epochs, np.asarray(values, dtype=float), style, color=color, marker="o",
                    markersize=3, label=label)
            drawn += 1
            finite = np.asarray(values, dtype=float)
            finite = finite[np.isfinite(finite)]
            if len(finite) > 1 and np.ptp(finite) < 1e-6:
                ax.text(0.5, 0.5 - 0.12 * drawn, f"{label}: {finite[0]:.3f} in every epoch", ha="center",
                        va="center", transform=ax.transAxes, fontsize=9,
                        bbox=dict(facecolor="white", edgecolor="gray", alpha=0.9))
        if drawn == 0:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="gray")
        elif drawn > 1 or ax is distances:
            ax.legend(fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    _mark_phases_and_kept_epoch((loss, active, distances, auc), epochs, warmup, history.get("val_auc"),
                                best_epoch)
    distances.set_xlabel("epoch")
    auc.set_xlabel("epoch")
    if len(epochs):
        auc.set_xticks(epochs if len(epochs) <= 12 else np.linspace(1, len(epochs), 8).round())
    return fig


# --- verification -------------------------------------------------------------------------------------

def roc(curves: Mapping[str, Mapping[str, tuple]], operating_points: Mapping[str, tuple] | None = None) -> Figure:
    """ROC curves, one panel per protocol (e.g. seen, unseen).

    Args:
        curves: {protocol: {name: (far, tar, auc)}}; the first name of each protocol is the model
            (solid line), the others are baselines (dashed).
        operating_points: {protocol: (far, tar)} at the chosen threshold, drawn as a dot.
    """
    operating_points = operating_points or {}
    fig = _figure(5 * len(curves), 4.6)
    axes = np.atleast_1d(fig.subplots(1, len(curves))).reshape(-1)
    for ax, (protocol, named) in zip(axes, curves.items()):
        for rank, (name, (far, tar, auc)) in enumerate(named.items()):
            style = "-" if rank == 0 else "--"
            color = PROTOCOL_COLORS.get(protocol, SEEN_COLOR) if rank == 0 else f"C{rank + 1}"
            ax.plot(far, tar, style, color=color, linewidth=2 if rank == 0 else 1.2,
                    label=f"{name} (AUC {auc:.3f})")
        if protocol in operating_points:
            far, tar = operating_points[protocol]
            ax.plot([far], [tar], "o", color="black", markersize=7,
                    label=f"threshold: FAR {far:.3f}, TAR {tar:.3f}")
        ax.plot([0, 1], [0, 1], ":", color="gray", linewidth=1)
        ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false accept rate (different-class pairs)",
               ylabel="true accept rate (same-class pairs)", title=f"ROC, {protocol} classes")
        ax.set_aspect("equal")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    return fig


def confusion_matrix(matrices: Mapping[str, Sequence[Sequence[int]]], *,
                     title: str = "{name} classes") -> Figure:
    """Pair-level confusion matrices [[tn, fp], [fn, tp]], one panel per protocol (or per any
    name: `title` formats the panel title from it)."""
    fig = _figure(4.2 * len(matrices), 3.9)
    axes = np.atleast_1d(fig.subplots(1, len(matrices))).reshape(-1)
    names = ["different", "same"]
    for ax, (protocol, matrix) in zip(axes, matrices.items()):
        matrix = np.asarray(matrix, dtype=np.int64)
        row_share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
        ax.imshow(row_share, cmap="Blues", vmin=0, vmax=1)
        for (row, column), count in np.ndenumerate(matrix):
            share = row_share[row, column]
            ax.text(column, row, f"{count:,}\n{share:.1%}", ha="center", va="center", fontsize=11,
                    color="white" if share > 0.6 else "black")
        ax.set_xticks([0, 1], [f"predicted\n{name}" for name in names])
        ax.set_yticks([0, 1], [f"true\n{name}" for name in names])
        accuracy = np.trace(matrix) / max(matrix.sum(), 1)
        ax.set_title(f"{title.format(name=protocol)}: accuracy {accuracy:.1%}", fontsize=10)
    return fig


def distance_histograms(groups: Mapping[str, tuple], *, bins: int = 50,
                        xlabel: str = "embedding distance") -> Figure:
    """Distances of same-class and different-class pairs, with the threshold, per protocol.

    `groups` maps a protocol to (distances [M], same [M] bool, threshold); `xlabel` names the
    distance (`report.distance_axis_label`: a score-normalised one says so).
    """
    fig = _figure(5 * len(groups), 3.6)
    axes = np.atleast_1d(fig.subplots(1, len(groups))).reshape(-1)
    for ax, (protocol, (distances, same, threshold)) in zip(axes, groups.items()):
        distances, same = np.asarray(distances, dtype=float), np.asarray(same, dtype=bool)
        edges = np.histogram_bin_edges(distances, bins=bins)
        ax.hist(distances[same], bins=edges, alpha=0.6, color=CORRECT_COLOR, density=True,
                label=f"same class ({same.sum():,})")
        ax.hist(distances[~same], bins=edges, alpha=0.6, color=WRONG_COLOR, density=True,
                label=f"different class ({(~same).sum():,})")
        ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3f}")
        ax.set(xlabel=xlabel, ylabel="density", title=f"Pair distances, {protocol} classes")
        ax.legend(fontsize=8)
    return fig


# --- retrieval and embeddings -------------------------------------------------------------------

def retrieval_examples(query_images, neighbour_images, correct, query_names: Sequence[str],
                       neighbour_names: Sequence[Sequence[str]]) -> Figure:
    """Each row: a query, then its nearest neighbours; wrong-class neighbours get a red frame and x.

    Shapes: query_images [Q, H, W, C]; neighbour_images [Q, k, H, W, C]; correct bool [Q, k].
    """
    correct = np.asarray(correct, dtype=bool)
    queries, k = correct.shape
    fig = _figure(1.2 * (k + 1), 1.35 * queries)
    axes = np.asarray(fig.subplots(queries, k + 1)).reshape(queries, k + 1)
    for row in range(queries):
        _show_image(axes[row, 0], query_images[row], _short(query_names[row]), border="black")
        axes[row, 0].set_ylabel("query", fontsize=8)
        for rank in range(k):
            ok = bool(correct[row, rank])
            mark = "" if ok else "✗ "
            _show_image(axes[row, rank + 1], neighbour_images[row][rank],
                        f"{mark}{rank + 1}: {_short(neighbour_names[row][rank])}",
                        border=CORRECT_COLOR if ok else WRONG_COLOR)
            if not ok:
                axes[row, rank + 1].title.set_color(WRONG_COLOR)
    return fig


EMBEDDING_MAP_HIGHLIGHT = 10  # classes the embedding map colours and names; the others are grey
OTHER_CLASSES_COLOR = "#c8c8c8"


def embedding_map(embeddings, labels, images, class_names: Sequence[str], *, method: str = "tsne",
                  max_points: int | None = None, thumbnails: int = 20, highlight: int = EMBEDDING_MAP_HIGHLIGHT,
                  seed: int = 0) -> Figure:
    """2-D map of the embeddings (PCA, then t-SNE): `highlight` classes (a seeded random choice)
    coloured and named in a legend, every other class grey, thumbnails on points of the coloured
    classes. Draws every point given unless `max_points` (a class-balanced sample) is set, so a
    caption can quote the caller's counts."""
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    from tinymatch.projector import subsample_for_projector

    labels = np.asarray(labels).reshape(-1)
    chosen = (subsample_for_projector(labels, max_points, seed=seed) if max_points
              else np.arange(len(labels)))
    points = project_2d(np.asarray(embeddings, dtype=np.float32)[chosen], method=method, seed=seed)
    labels = labels[chosen]
    unique = np.unique(labels)
    rng = np.random.default_rng(seed)
    coloured = np.sort(rng.choice(unique, size=min(highlight, len(unique)), replace=False))
    from matplotlib import colormaps

    # tab10 without its grey (the other classes are grey), then black; tab20 beyond ten classes
    palette = ([colormaps["tab10"](i) for i in (0, 1, 2, 3, 4, 5, 6, 8, 9)] + ["black"]
               if len(coloured) <= 10 else [colormaps["tab20"](i % 20) for i in range(len(coloured))])
    colour_of = {label: palette[rank] for rank, label in enumerate(coloured)}
    is_coloured = np.isin(labels, coloured)
    fig = _figure(9, 8)
    ax = fig.subplots()
    ax.scatter(points[~is_coloured, 0], points[~is_coloured, 1], c=OTHER_CLASSES_COLOR, s=8, alpha=0.6,
               linewidths=0, label=f"{len(unique) - len(coloured)} other classes" if len(unique) > len(coloured)
               else None)
    for label in coloured:
        mine = labels == label
        ax.scatter(points[mine, 0], points[mine, 1], color=colour_of[label], s=16, alpha=0.9, linewidths=0,
                   label=_short(class_names[label]), zorder=4)  # above the thumbnails
    per_class = max(1, thumbnails // max(len(coloured), 1))  # a few thumbnails of every coloured class
    candidates = [position for label in coloured
                  for position in rng.permutation(np.flatnonzero(labels == label))[:per_class]][:thumbnails]
    for position in candidates:
        thumbnail = OffsetImage(_as_uint8(images[chosen[position]]), zoom=0.38, interpolation="nearest")
        ax.add_artist(AnnotationBbox(thumbnail, points[position], frameon=True, pad=0.1, zorder=3,
                                     bboxprops=dict(edgecolor=colour_of[labels[position]], linewidth=1.5)))
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False, markerscale=1.5)
    name = {"tsne": "PCA + t-SNE", "pca": "PCA"}[method]
    ax.set(title=f"Embedding map ({name}) of {len(chosen):,} images of {len(unique)} classes; "
                 f"{len(coloured)} coloured", xticks=[], yticks=[])
    return fig


def project_2d(vectors: np.ndarray, *, method: str = "tsne", seed: int = 0) -> np.ndarray:
    """[N, D] -> [N, 2]: PCA (to <= 50 dims for t-SNE, to 2 dims for `method="pca"`), then t-SNE."""
    from sklearn.decomposition import PCA

    if method not in ("tsne", "pca"):
        raise ValueError(f"method={method!r}: must be 'tsne' or 'pca'")
    count, dims = vectors.shape
    if count < 3:
        return np.pad(vectors[:, :2], ((0, 0), (0, max(0, 2 - dims))))
    if method == "pca" or count < 10:
        return PCA(n_components=min(2, dims), random_state=seed).fit_transform(vectors)
    from sklearn.manifold import TSNE

    reduced = PCA(n_components=min(50, dims, count), random_state=seed).fit_transform(vectors)
    perplexity = float(min(30, (count - 1) / 3))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(reduced)


def _class_colors(labels: np.ndarray) -> list:
    from matplotlib import colormaps

    palette = colormaps["tab20"] if len(np.unique(labels)) <= 20 else colormaps["hsv"]
    unique = {label: rank for rank, label in enumerate(np.unique(labels))}
    scale = max(len(unique), 1)
    return [palette(unique[label] / scale if palette.N > 20 else unique[label] % 20) for label in labels]


def _short(name: str, width: int = 16) -> str:
    name = str(name)
    return name if len(name) <= width else name[: width - 1] + "…"


__all__ = ["save_fig", "class_distribution", "samples", "augmentation", "training_curves", "roc",
           "confusion_matrix", "distance_histograms", "retrieval_examples", "embedding_map",
           "project_2d", "DPI"]


# --- error analysis (`tinymatch.error_analysis`) ---------------------------------------------------

LOG_FAR_FLOOR = 1e-4


def roc_log_far(curves_by_label: Mapping[str, tuple],
                operating_points: Mapping[str, tuple] | None = None) -> Figure:
    """ROC with a log-scaled FAR axis (1e-4 to 1, TAR linear): the low-FAR end a linear plot hides.

    curves_by_label: {label: (far, tar)} or {label: (far, tar, auc)}; operating_points:
    {name: (far, tar)}, drawn as markers. FARs below 1e-4 (including 0) are drawn at 1e-4; the
    smallest FAR a curve resolves is 1 / (its number of negative pairs).
    """
    fig = _figure(6, 4.6)
    ax = fig.subplots()
    for rank, (label, curve) in enumerate(curves_by_label.items()):
        far, tar = np.asarray(curve[0], dtype=float), np.asarray(curve[1], dtype=float)
        name = f"{label} (AUC {curve[2]:.3f})" if len(curve) > 2 else str(label)
        color = PROTOCOL_COLORS.get(str(label), f"C{rank}")
        ax.plot(np.maximum(far, LOG_FAR_FLOOR), tar, "-", color=color, linewidth=1.8, label=name)
    for rank, (name, (far, tar)) in enumerate((operating_points or {}).items()):
        ax.plot([max(far, LOG_FAR_FLOOR)], [tar], "osD^v"[rank % 5], color="black", markersize=7,
                markerfacecolor="none" if rank % 2 else "black",
                label=f"{name}: FAR {far:.4f}, TAR {tar:.3f}")
    ax.set_xscale("log")
    ax.set(xlim=(LOG_FAR_FLOOR, 1), ylim=(0, 1.01), xlabel="false accept rate (log scale)",
           ylabel="true accept rate", title="ROC at low false accept rates")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper left", fontsize=8)
    return fig


def error_pairs(first_images, second_images, distances, title: str, *, columns: int = 4) -> Figure:
    """A grid of image pairs (e.g. the hardest false accepts), the pair's distance under each."""
    distances = np.asarray(distances, dtype=float).reshape(-1)
    if len(distances) == 0:
        fig = _figure(4, 1.5)
        fig.suptitle(title, fontsize=10)
        fig.text(0.5, 0.4, "no such pairs", ha="center", va="center", color="gray")
        return fig
    rows, columns = _grid_shape(len(distances), columns)
    fig = _figure(2.5 * columns, 1.55 * rows + 0.4)
    fig.suptitle(title, fontsize=10)
    cells = np.asarray(fig.subfigures(rows, columns), dtype=object).reshape(-1)
    for cell, first, second, distance in zip(cells, first_images, second_images, distances):
        left, right = cell.subplots(1, 2)
        _show_image(left, first)
        _show_image(right, second)
        cell.supxlabel(f"d = {distance:.3f}", fontsize=8)
    return fig


def class_extremes(images_by_class: Mapping[int, Sequence], class_names: Sequence[str],
                   scores: Mapping[int, float], *, count: int = 3, per_class: int = 4) -> Figure:
    """The `count` worst and best classes by score (pair AUC), one row of images each.

    images_by_class: {class id: images}; scores: {class id: AUC}. Classes without images or with a
    NaN score are left out; a class is never shown as both worst and best.
    """
    ranked = sorted((float(score), label) for label, score in scores.items()
                    if len(images_by_class.get(label, ())) and np.isfinite(score))
    worst = ranked[:count]
    best = ranked[max(len(worst), len(ranked) - count):][::-1]
    rows = ([("worst", WRONG_COLOR, entry) for entry in worst]
            + [("best", CORRECT_COLOR, entry) for entry in best])
    if not rows:
        fig = _figure(4, 1.5)
        fig.text(0.5, 0.5, "no class with a score", ha="center", va="center", color="gray")
        return fig
    per_class = max(1, min(per_class, max(len(images_by_class[label]) for _, _, (_, label) in rows)))
    fig = _figure(1.3 * per_class + 1.6, 1.35 * len(rows))
    axes = np.asarray(fig.subplots(len(rows), per_class)).reshape(len(rows), per_class)
    for row, (kind, color, (score, label)) in enumerate(rows):
        images = images_by_class[label]
        for column, ax in enumerate(axes[row]):
            if column < len(images):
                _show_image(ax, images[column], border=color)
            else:
                ax.axis("off")
        axes[row, 0].set_ylabel(f"{kind}: {_short(class_names[label])}\nAUC {score:.3f}", fontsize=8,
                                color=color, rotation=0, ha="right", va="center")
    return fig


__all__ += ["roc_log_far", "error_pairs", "class_extremes", "LOG_FAR_FLOOR"]


# --- report: training phases, the split's parts, the triplet illustration -----------------------

def _mark_phases_and_kept_epoch(axes, epochs, warmup, val_auc, best_epoch: int | None) -> None:
    """Dashed line at the end of a warm-up (when triplet epochs follow) and a dotted line at the
    kept epoch on every panel; a star on the validation AUC at the kept epoch (last panel)."""
    warmup = np.asarray(warmup, dtype=bool)
    if warmup.any() and (~warmup).any():
        boundary = epochs[warmup].max() + 0.5
        for ax in axes:
            ax.axvline(boundary, color="dimgray", linestyle="--", linewidth=1)
        for text, side in (("warm-up ", "right"), (" triplet", "left")):
            axes[1].text(boundary, 0.97, text, transform=axes[1].get_xaxis_transform(), ha=side, va="top",
                         fontsize=8, color="dimgray")
    aucs = np.asarray(val_auc if val_auc is not None else [], dtype=float)
    if best_epoch is None and len(aucs) and np.isfinite(aucs).any():
        best_epoch = int(np.nanargmax(aucs)) + 1
    if not best_epoch:
        return
    for ax in axes:
        ax.axvline(best_epoch, color="black", linestyle=":", linewidth=1.2)
    if 0 < best_epoch <= len(aucs) and np.isfinite(aucs[best_epoch - 1]):
        axes[-1].plot([best_epoch], [aucs[best_epoch - 1]], "*", color="black", markersize=11,
                      label=f"kept: epoch {best_epoch} ({aucs[best_epoch - 1]:.3f})")
        axes[-1].legend(fontsize=8, loc="lower right")


def split_parts(parts: Mapping[str, Sequence[int]], class_names: Sequence[str], *, total=None) -> Figure:
    """Images of every class in every part of the split, stacked, one bar per class.

    `parts` maps a part's name to the labels of its images; `total` (images per class in the
    dataset) adds what no part uses as "not used". Classes are grouped by the part holding most of
    their images, so training classes and held-out classes read as blocks.
    """
    from matplotlib import colormaps

    count = len(class_names)
    names = list(parts)
    matrix = np.array([np.bincount(np.asarray(values, dtype=np.int64).reshape(-1), minlength=count)[:count]
                       for values in parts.values()], dtype=np.int64).reshape(len(names), count)
    if total is not None:
        unused = np.clip(np.asarray(total, dtype=np.int64) - matrix.sum(axis=0), 0, None)
        if unused.any():
            matrix, names = np.vstack([matrix, unused]), names + ["not used"]
    main = matrix.argmax(axis=0) if len(names) else np.zeros(count, dtype=np.int64)
    order = np.lexsort((np.arange(count), main))
    fig = _figure(10, 3.8)
    ax = fig.subplots()
    palette = colormaps["tab10"]
    bottom = np.zeros(count)
    for row, name in enumerate(names):
        values = matrix[row, order]
        color = "#bbbbbb" if name == "not used" else palette(row % 10)
        ax.bar(np.arange(count), values, bottom=bottom, width=1.0, color=color, linewidth=0,
               label=f"{name}: {int(values.sum()):,} images, {int((values > 0).sum())} "
                     f"class{'es' if (values > 0).sum() != 1 else ''}")
        bottom += values
    per_class = np.asarray(total) if total is not None else matrix.sum(axis=0)
    each = (f"{int(per_class[0]):,} images each" if len(per_class) and per_class.min() == per_class.max()
            else "images per class")
    ax.set(xlim=(-0.5, count - 0.5), xlabel="class (grouped by the part holding most of its images)",
           ylabel="images", title=f"{count} classes, {each}: where they go in the split")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    return fig


def triplet_illustration(margin: float = 0.5, positive_distance: float = 1.0) -> Figure:
    """Schematic triplet: the anchor, a positive at `positive_distance`, circles of radius d(a, p)
    and d(a, p) + margin around the anchor, and a hard (inside d(a, p)), a semi-hard (between the
    circles) and an easy (beyond the margin) negative, each with its loss [d(a,p) - d(a,n) + margin]_+."""
    from matplotlib.patches import Circle

    d_ap, alpha = float(positive_distance), float(margin)
    outer = d_ap + alpha
    fig = _figure(7.2, 5.2)
    ax = fig.subplots()
    ax.add_patch(Circle((0, 0), outer, facecolor="#fde7c7", edgecolor="#d08a1c", linewidth=1.2, zorder=0))
    ax.add_patch(Circle((0, 0), d_ap, facecolor="#f8d0d0", edgecolor="#c03030", linewidth=1.2, zorder=1))
    angle = np.deg2rad
    points = {  # name: (radius, angle in degrees, colour, label offset in points, alignment)
        "positive p": (d_ap, 90, CORRECT_COLOR, (10, 6), "left"),
        "hard negative": (0.55 * d_ap, 215, WRONG_COLOR, (-8, -30), "center"),
        "semi-hard negative": (d_ap + 0.5 * alpha, 320, "#d08a1c", (10, -8), "left"),
        "easy negative": (outer + 0.35 * alpha + 0.15, 20, "#555555", (10, 6), "left"),
    }
    ax.plot([0], [0], "o", color=SEEN_COLOR, markersize=11, zorder=5)
    ax.annotate("anchor a", (0, 0), xytext=(10, 4), textcoords="offset points", fontsize=10, color=SEEN_COLOR)
    for name, (radius, degrees, color, offset, align) in points.items():
        x, y = radius * np.cos(angle(degrees)), radius * np.sin(angle(degrees))
        ax.plot([0, x], [0, y], "-", color=color, linewidth=1, alpha=0.7, zorder=3)
        ax.plot([x], [y], "s" if "negative" in name else "o", color=color, markersize=10, zorder=5)
        loss = max(d_ap - radius + alpha, 0.0) if "negative" in name else None
        label = name + (f"\nd(a, n) = {radius:.2f}, loss {loss:.2f}" if loss is not None else f"\nd(a, p) = {d_ap:.2f}")
        ax.annotate(label, (x, y), xytext=offset, textcoords="offset points", fontsize=9, color=color,
                    ha=align)
    ax.annotate("", xy=(outer * np.cos(angle(140)), outer * np.sin(angle(140))),
                xytext=(d_ap * np.cos(angle(140)), d_ap * np.sin(angle(140))),
                arrowprops=dict(arrowstyle="<->", color="#d08a1c"))
    middle = (d_ap + alpha / 2) * np.array([np.cos(angle(140)), np.sin(angle(140))])
    ax.annotate(f"margin α = {alpha:g}", middle, xytext=(-22, 10), textcoords="offset points", fontsize=9,
                color="#d08a1c", ha="right")
    limit = outer + 0.35 * alpha + 0.9
    ax.set(xlim=(-limit, limit), ylim=(-outer - 0.3, outer + 0.3), aspect="equal", xticks=[], yticks=[],
           title=r"Triplet loss $[d(a,p) - d(a,n) + \alpha]_+$: hard, semi-hard and easy negatives")
    ax.title.set_fontsize(10)
    for spine in ax.spines.values():
        spine.set_visible(False)
    return fig


__all__ += ["split_parts", "triplet_illustration", "EMBEDDING_MAP_HIGHLIGHT"]
