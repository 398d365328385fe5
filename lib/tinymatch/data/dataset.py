"""The decoded dataset (`Dataset`: one row per image, images memory-mapped) and its summary."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tinymatch.data.index import SUBSETS


@dataclass(eq=False, repr=False)
class Dataset:
    """Decoded Tiny ImageNet: one row per image, images memory-mapped from the cache.

    images: uint8 [N, 64, 64, 3] RGB; labels: int32 [N] class index (-1: unlabelled official test);
    subsets: str [N] official subset 'train' | 'val' | 'test'; paths: path inside the layout;
    grayscale: bool [N] (decoded from a 1-channel JPEG); boxes: int32 [N, 4] x0 y0 x1 y1 (-1 unknown);
    corrupt: layout paths skipped with skip_corrupt=True. `from_cache` / `decoded` say whether this
    load decoded anything (0 images when the cache was used).
    """

    source: Path
    wnids: list[str]
    class_names: list[str]
    images: np.ndarray
    labels: np.ndarray
    subsets: np.ndarray
    paths: list[str]
    grayscale: np.ndarray
    boxes: np.ndarray
    corrupt: list[str] = field(default_factory=list)
    resized: np.ndarray | None = None  # bool [N]: the file was not 64x64 and was resized
    cache_path: Path | None = None
    from_cache: bool = False
    decoded: int = 0
    decode_seconds: float = 0.0

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.wnids)

    def __repr__(self) -> str:
        counts = ", ".join(f"{s}={int((self.subsets == s).sum())}" for s in SUBSETS)
        return (f"Dataset(source={str(self.source)!r}, classes={self.num_classes}, images={len(self)} "
                f"({counts}), grayscale={int(self.grayscale.sum())}, corrupt={len(self.corrupt)})")


def _per_class(labels: np.ndarray, num_classes: int) -> dict[str, float] | None:
    labels = labels[labels >= 0]
    if not len(labels):
        return None
    counts = np.bincount(labels, minlength=num_classes)
    return {"min": int(counts.min()), "max": int(counts.max()), "mean": round(float(counts.mean()), 2)}


def summarize(dataset: Dataset) -> dict[str, Any]:
    """Counts of a dataset: classes, images per official subset, per-class counts, grayscale, corrupt."""
    subsets = {}
    for subset in SUBSETS:
        mask = dataset.subsets == subset
        labels = dataset.labels[mask]
        subsets[subset] = {
            "images": int(mask.sum()),
            "grayscale": int(dataset.grayscale[mask].sum()),
            "classes": int(len(np.unique(labels[labels >= 0]))),
            "per_class": _per_class(labels, dataset.num_classes),
        }
    resized = dataset.resized if dataset.resized is not None else np.zeros(len(dataset), bool)
    return {
        "source": str(dataset.source),
        "classes": dataset.num_classes,
        "images": {**{s: subsets[s]["images"] for s in SUBSETS}, "total": len(dataset)},
        "per_class": {s: subsets[s]["per_class"] for s in ("train", "val")},
        "subsets": subsets,
        "grayscale": int(dataset.grayscale.sum()),
        "resized": int(resized.sum()),
        "boxes": int((dataset.boxes[:, 0] >= 0).sum()),
        "corrupt": len(dataset.corrupt),
        "corrupt_files": list(dataset.corrupt),
        "cache": str(dataset.cache_path) if dataset.cache_path else None,
        "from_cache": dataset.from_cache,
        "decode_seconds": dataset.decode_seconds,
    }


def format_summary(summary: dict[str, Any]) -> str:
    """A readable table of `summarize`'s dict."""
    rows = [("subset", "images", "grayscale", "classes", "per class min / max / mean")]
    for subset in SUBSETS:
        info = summary["subsets"][subset]
        per_class = info["per_class"]
        spread = (f"{per_class['min']:,} / {per_class['max']:,} / {per_class['mean']:,.1f}"
                  if per_class else "-")
        classes = f"{info['classes']:,}" if subset != "test" else "(unlabelled)"
        rows.append((subset, f"{info['images']:,}", f"{info['grayscale']:,}", classes, spread))
    rows.append(("total", f"{summary['images']['total']:,}", f"{summary['grayscale']:,}",
                 f"{summary['classes']:,}", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]

    def line(row):
        cells = [row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(row[1:-1], widths[1:-1])]
        return "  ".join(cells + [row[-1]]).rstrip()

    total = max(summary["images"]["total"], 1)
    out = [f"Tiny ImageNet at {summary['source']}",
           f"  classes:   {summary['classes']:,}",
           f"  images:    {summary['images']['total']:,} "
           f"(train {summary['images']['train']:,}, val {summary['images']['val']:,}, "
           f"test {summary['images']['test']:,})",
           f"  grayscale: {summary['grayscale']:,} ({100 * summary['grayscale'] / total:.2f}%, converted to RGB)",
           f"  resized:   {summary['resized']:,} (not 64x64, resized to 64x64)",
           f"  corrupt:   {summary['corrupt']:,}" + (" skipped" if summary["corrupt"] else ""),
           ""]
    out += [line(rows[0]), "  ".join("-" * w for w in widths)] + [line(r) for r in rows[1:]]
    for name in summary["corrupt_files"][:20]:
        out.append(f"  corrupt file skipped: {name}")
    if len(summary["corrupt_files"]) > 20:
        out.append(f"  ... and {len(summary['corrupt_files']) - 20} more")
    if summary.get("cache"):
        how = "loaded from cache" if summary.get("from_cache") else "decoded into cache"
        out.append(f"\n{how}: {summary['cache']}")
    return "\n".join(out)


__all__ = ["Dataset", "summarize", "format_summary"]
