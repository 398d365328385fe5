"""Evaluation speed and memory: the metric part at full scale, then embedding throughput.

    .venv/bin/python benchmarks/bench_eval.py [--gallery 10000] [--pairs 1000000] [--out bench.json]

Metric part (NumPy only, run first so the peak RSS is not the TensorFlow import's):
  - retrieval over a 10,000-image gallery: 10,000 x 10,000 similarities in blocks, top-k, MAP@R;
  - 1,000,000 pair distances, the ROC, AUC + bootstrap interval, EER, TAR@FAR, threshold, confusion;
  - make_pairs (random and hard negatives) on the gallery.
Embedding part: images/second of the compact model of the `cpu` profile (tinymatch.model).
Targets (benchmarks/README.md, "Evaluation"): metric part <= 5 s and <= 2 GB peak on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _clustered_embeddings(num_items: int, num_classes: int, dim: int, seed: int):
    """Unit vectors around one random centre per class (so the metrics are neither 0 nor 1)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(num_classes), -(-num_items // num_classes))[:num_items]
    centres = rng.normal(size=(num_classes, dim))
    vectors = centres[labels] + rng.normal(scale=2.5, size=(num_items, dim))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32), labels.astype(np.int32)


def _million_pairs(labels: np.ndarray, count: int, seed: int):
    """Half positives (a random item and a random other item of its class), half random negatives."""
    from tinymatch.evaluate import Pairs

    rng = np.random.default_rng(seed)
    half = count // 2
    order = np.argsort(labels, kind="stable")
    starts = np.searchsorted(labels[order], np.arange(labels.max() + 1))
    sizes = np.bincount(labels)
    anchors = rng.integers(0, len(labels), half)
    offsets = rng.integers(0, sizes[labels[anchors]])
    positives = order[starts[labels[anchors]] + offsets]
    a, b = rng.integers(0, len(labels), half), rng.integers(0, len(labels), half)
    first, second = np.r_[anchors, a], np.r_[positives, b]
    return Pairs(first, second, labels[first] == labels[second])


def bench_metrics(gallery: int, num_pairs: int, classes: int, dim: int, bootstrap: int) -> list[dict]:
    from tinymatch import evaluate as ev

    embeddings, labels = _clustered_embeddings(gallery, classes, dim, seed=0)
    rows = []

    def timed(name, function):
        # Wall seconds, and CPU seconds of this process (all threads): on a shared, loaded box the
        # CPU seconds are the steadier figure of the work itself.
        start, start_cpu = time.perf_counter(), time.process_time()
        value = function()
        rows.append({"step": name, "seconds": time.perf_counter() - start,
                     "cpu_seconds": time.process_time() - start_cpu})
        return value

    retrieval = timed(f"retrieval {gallery:,} x {gallery:,} (P@1, R@5, MAP@R, top-5)",
                      lambda: ev.retrieval_metrics(embeddings, labels, k=5, return_neighbours=True))
    pairs = _million_pairs(labels, num_pairs, seed=1)
    distances = timed(f"pair distances ({num_pairs:,})", lambda: ev.pair_distances(embeddings, pairs))
    timed("ROC curve points (for the figure)", lambda: ev.roc_curve(distances, pairs.same))
    timed("AUC + EER + TAR@FAR x3 (verification_metrics, one sort)",
          lambda: ev.verification_metrics(distances, pairs.same, bootstrap_samples=0))
    threshold = timed("choose threshold (accuracy)", lambda: ev.choose_threshold(distances, pairs.same))
    timed("confusion at threshold", lambda: ev.confusion_at_threshold(distances, pairs.same, threshold))
    rows.append({"step": "total: retrieval + 1M distances + ROC (target <= 5 s)",
                 "seconds": sum(r["seconds"] for r in rows), "cpu_seconds": sum(r["cpu_seconds"] for r in rows)})
    # The AUC interval: outside the target's scope at a million pairs, listed on its own; an
    # evaluation run draws max_positive_pairs=5,000 (10,000 pairs per part) by default.
    timed(f"extra: bootstrap AUC 95% CI, {bootstrap} replicates, {num_pairs:,} pairs",
          lambda: ev.bootstrap_auc_ci(distances, pairs.same, samples=bootstrap, seed=0))
    step = max(1, num_pairs // 10_000)  # every step-th pair: half positive, half negative
    timed(f"extra: bootstrap AUC 95% CI, {bootstrap} replicates, 10,000 pairs (run default)",
          lambda: ev.bootstrap_auc_ci(distances[::step], pairs.same[::step], samples=bootstrap, seed=0))
    # Pair drawing happens once per run (5,000 positives by default); listed, not in the total.
    timed("extra: make_pairs on the gallery (5,000 pos, random neg)",
          lambda: ev.make_pairs(labels, max_positive_pairs=5000, seed=0))
    timed("extra: make_pairs on the gallery (5,000 pos, hard neg)",
          lambda: ev.make_pairs(labels, max_positive_pairs=5000, seed=0, embeddings=embeddings,
                                hard_negatives=True))
    rows[0]["figures"] = {k: retrieval[k] for k in ("precision_at_1", "recall_at_k", "map_at_r")}
    return rows


def bench_embedding(num_images: int, batch_size: int) -> dict:
    from tinymatch import evaluate as ev
    from tinymatch.config import Config
    from tinymatch.model import build_embedding_model

    config = Config.from_profile("cpu", augment=False)
    model = build_embedding_model(config)
    which = f"compact model of the cpu profile (width {config.width}, dim {config.embedding_dim})"
    images = np.random.default_rng(0).integers(0, 256, (num_images, 64, 64, 3), dtype=np.uint8)
    ev.embed(model, images[:batch_size], batch_size=batch_size, progress=False)  # trace once
    start = time.perf_counter()
    ev.embed(model, images, batch_size=batch_size, progress=False)
    seconds = time.perf_counter() - start
    return {"model": which, "images": num_images, "batch_size": batch_size, "seconds": seconds,
            "images_per_second": num_images / seconds}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gallery", type=int, default=10_000)
    parser.add_argument("--pairs", type=int, default=1_000_000)
    parser.add_argument("--classes", type=int, default=200)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--embed-images", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--skip-embedding", action="store_true")
    parser.add_argument("--trace-numpy", action="store_true",
                        help="repeat the metric part under tracemalloc to report the NumPy peak")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)

    rss_before = _peak_rss_mb()
    rows = bench_metrics(args.gallery, args.pairs, args.classes, args.dim, args.bootstrap)
    total = next(r for r in rows if r["step"].startswith("total"))
    results = {
        "gallery": args.gallery, "pairs": args.pairs, "classes": args.classes, "dim": args.dim,
        "bootstrap": args.bootstrap, "cpu_count": os.cpu_count(), "load_average": os.getloadavg(),
        "metric_steps": rows,
        "metric_seconds": total["seconds"],
        "metric_peak_rss_mb": _peak_rss_mb(),
        "rss_before_mb": rss_before,
    }
    traced_peak_mb = None
    if args.trace_numpy:  # a second, untimed pass: tracemalloc slows NumPy-heavy code a lot
        tracemalloc.start()
        bench_metrics(args.gallery, args.pairs, args.classes, args.dim, args.bootstrap)
        traced_peak_mb = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        results["metric_peak_numpy_mb"] = traced_peak_mb
    print(f"{'step':64s} {'wall s':>8s} {'cpu s':>8s}")
    for row in rows:
        print(f"{row['step']:64s} {row['seconds']:8.2f} {row['cpu_seconds']:8.2f}")
    print(f"peak RSS after the metric part: {results['metric_peak_rss_mb']:.0f} MB "
          f"(interpreter start {rss_before:.0f} MB; load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores)")
    if traced_peak_mb is not None:
        print(f"peak of NumPy allocations (tracemalloc pass): {traced_peak_mb:.0f} MB")
    print("retrieval figures on the synthetic gallery:", json.dumps(rows[0]["figures"]))
    if not args.skip_embedding:
        embedding = bench_embedding(args.embed_images, args.batch_size)
        results["embedding"] = embedding
        print(f"embedding: {embedding['images_per_second']:.0f} images/s "
              f"({embedding['images']} images, batch {embedding['batch_size']}; {embedding['model']})")
    if args.out:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
        from tinymatch.io_utils import write_json

        write_json(args.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
