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

def class_distribution(labels, class_names: Sequence[str], *, title: str = "Images per class") -> Figure:
    """Left: images of every class, sorted; right: histogram of images per class."""
    counts = np.bincount(np.asarray(labels).reshape(-1), minlength=len(class_names))
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

def training_curves(history: Mapping[str, Sequence[float]]) -> Figure:
    """Loss, active-triplet fraction, positive/negative distances and validation AUC per epoch.

    `history` maps column names of history.csv to per-epoch values; missing columns leave their
    panel with a note instead of failing (an early run may not log all of them).
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
        if drawn == 0:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="gray")
        elif drawn > 1 or ax is distances:
            ax.legend(fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
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


def confusion_matrix(matrices: Mapping[str, Sequence[Sequence[int]]]) -> Figure:
    """Pair-level confusion matrices [[tn, fp], [fn, tp]], one panel per protocol."""
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
        ax.set_title(f"{protocol} classes: accuracy {accuracy:.1%}", fontsize=10)
    return fig


def distance_histograms(groups: Mapping[str, tuple], *, bins: int = 50) -> Figure:
    """Distances of same-class and different-class pairs, with the threshold, per protocol.

    `groups` maps a protocol to (distances [M], same [M] bool, threshold).
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
        ax.set(xlabel="embedding distance", ylabel="density", title=f"Pair distances, {protocol} classes")
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


def embedding_map(embeddings, labels, images, class_names: Sequence[str], *, method: str = "tsne",
                  max_points: int = 1500, thumbnails: int = 120, seed: int = 0) -> Figure:
    """2-D map of the embeddings (PCA, then t-SNE) with image thumbnails on a sample of points."""
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    from tinymatch.projector import subsample_for_projector

    labels = np.asarray(labels).reshape(-1)
    chosen = subsample_for_projector(labels, max_points, seed=seed)
    points = project_2d(np.asarray(embeddings, dtype=np.float32)[chosen], method=method, seed=seed)
    labels = labels[chosen]
    fig = _figure(9, 8)
    ax = fig.subplots()
    colors = _class_colors(labels)
    ax.scatter(points[:, 0], points[:, 1], c=colors, s=10, alpha=0.7, linewidths=0)
    rng = np.random.default_rng(seed)
    for position in rng.choice(len(chosen), size=min(thumbnails, len(chosen)), replace=False):
        thumbnail = OffsetImage(_as_uint8(images[chosen[position]]), zoom=0.38, interpolation="nearest")
        ax.add_artist(AnnotationBbox(thumbnail, points[position], frameon=True, pad=0.1,
                                     bboxprops=dict(edgecolor=colors[position], linewidth=1.5)))
    unique = np.unique(labels)
    if len(unique) <= 20:
        for label in unique:
            ax.scatter([], [], color=colors[np.flatnonzero(labels == label)[0]], label=_short(class_names[label]))
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    name = {"tsne": "PCA + t-SNE", "pca": "PCA"}[method]
    ax.set(title=f"Embedding map ({name}) of {len(chosen):,} images, {len(unique)} classes",
           xticks=[], yticks=[])
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
