"""Time and peak memory of the semi-hard triplet loss + gradient, ours vs tfa's O(B^3) tile.

    python benchmarks/bench_loss.py                      # B = 64 .. 1024, D = 128, table on stdout
    python benchmarks/bench_loss.py --out bench_loss.json

Two implementations of the same loss (they agree to float32 rounding, see tests/test_losses.py):

* `ours`: `tinymatch.losses.triplet_semihard_loss`, O(B^2) memory (sorted negatives + searchsorted).
* `tfa-tiled`: REFERENCE ONLY, a line-by-line copy of `tfa.losses.triplet_semihard_loss`, which
  tiles the distance matrix to `[B*B, B]` to find each pair's semi-hard negative: O(B^3) memory.

Each (implementation, batch size) runs in a fresh subprocess so that measurements do not leak
into each other. Time: median wall time of `loss + d loss / d embeddings` in a `tf.function`
(graph mode), after one warm-up call that traces it, and the best call (less sensitive to other
processes sharing the CPU). Peak memory:

* on a GPU, `tf.config.experimental.get_memory_info(...)["peak"]` after a reset (device bytes);
* on CPU, the growth of the process' peak resident set (`ru_maxrss`) during the measured calls,
  over a baseline taken after TensorFlow, the inputs and a warm-up at B=8 are loaded. This counts
  what the allocator really touched, including the gradient; it is coarse (pages, allocator caching)
  but differences of this size (MiB vs GiB) are unambiguous.

Next to the measurement, the analytic size of the largest intermediate: a `[B, B]` float32
matrix for ours, the `[B*B, B]` float32 tile for tfa. `--max-reference-batch` (default 512) skips
measuring the tiled reference above that size: at B=1024 its tile alone is 4 GiB, and the whole
computation needs several times that.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

IMPLEMENTATIONS = ("ours", "tfa-tiled")


def tfa_tiled_semihard_loss(labels, embeddings, margin=1.0):
    """REFERENCE: tfa's O(B^3) formulation (tests/tfa_reference.py, shared with the tests), L2."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from tfa_reference import tfa_semihard_reference

    return tfa_semihard_reference(labels, embeddings, margin, "L2")


# --------------------------------------------------------------------------------------------------
# one measurement (runs in a subprocess)
# --------------------------------------------------------------------------------------------------
def _maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def _batch(batch_size: int, dim: int, images_per_class: int = 4):
    import numpy as np

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(batch_size // images_per_class), images_per_class).astype(np.int32)
    embeddings = rng.normal(size=(batch_size, dim)).astype(np.float32)
    return labels, embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)


def measure(implementation: str, batch_size: int, dim: int, min_repeats: int,
            min_seconds: float) -> dict:
    import tensorflow as tf

    from tinymatch.losses import triplet_semihard_loss

    loss_fn = triplet_semihard_loss if implementation == "ours" else tfa_tiled_semihard_loss

    @tf.function
    def loss_and_gradient(labels, embeddings):
        with tf.GradientTape() as tape:
            tape.watch(embeddings)
            loss = loss_fn(labels, embeddings, 0.5)
        return loss, tape.gradient(loss, embeddings)

    gpus = tf.config.list_physical_devices("GPU")
    small = [tf.constant(x) for x in _batch(8, dim)]
    loss_and_gradient(*small)  # load kernels and allocator pools before the baseline
    inputs = [tf.constant(x) for x in _batch(batch_size, dim)]
    if gpus:
        tf.config.experimental.reset_memory_stats("GPU:0")
    baseline = _maxrss_bytes()

    start = time.perf_counter()
    loss, grad = loss_and_gradient(*inputs)
    _ = grad.numpy()
    first_call = time.perf_counter() - start
    times = []
    while len(times) < min_repeats or sum(times) < min_seconds:
        start = time.perf_counter()
        loss, grad = loss_and_gradient(*inputs)
        _ = grad.numpy()
        times.append(time.perf_counter() - start)
        if len(times) >= 50:
            break

    result = {
        "implementation": implementation,
        "batch_size": batch_size,
        "dim": dim,
        "device": "GPU" if gpus else "CPU",
        "loss": float(loss),
        "median_ms": 1000 * statistics.median(times),
        "best_ms": 1000 * min(times),
        "first_call_ms": 1000 * first_call,
        "repeats": len(times),
    }
    if gpus:
        result["peak_bytes"] = int(tf.config.experimental.get_memory_info("GPU:0")["peak"])
        result["memory_method"] = "tf.config.experimental.get_memory_info peak"
    else:
        result["peak_bytes"] = max(_maxrss_bytes() - baseline, 0)
        result["memory_method"] = "ru_maxrss growth over baseline"
    return result


def analytic_largest_bytes(implementation: str, batch_size: int) -> int:
    float32 = 4
    if implementation == "ours":
        return float32 * batch_size**2
    return float32 * batch_size**3


# --------------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------------
def run_in_subprocess(implementation, batch_size, args) -> dict:
    command = [sys.executable, __file__, "--worker", implementation, str(batch_size),
               "--dim", str(args.dim), "--min-repeats", str(args.min_repeats),
               "--min-seconds", str(args.min_seconds)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        return {"implementation": implementation, "batch_size": batch_size,
                "error": done.stderr.strip().splitlines()[-1] if done.stderr else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def mib(value) -> str:
    return "-" if value is None else f"{value / 2**20:,.1f}"


def format_table(rows: list[dict]) -> str:
    by_key = {(r["implementation"], r["batch_size"]): r for r in rows}
    batch_sizes = sorted({r["batch_size"] for r in rows})
    lines = [
        "| B | ours ms (median / best) | ours peak MiB | ours largest MiB "
        "| tfa-tiled ms (median / best) | tfa-tiled peak MiB | tfa-tiled largest MiB |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for b in batch_sizes:
        cells = [str(b)]
        for impl in IMPLEMENTATIONS:
            r = by_key.get((impl, b), {})
            if "median_ms" in r:
                cells += [f"{r['median_ms']:,.1f} / {r['best_ms']:,.1f}", mib(r["peak_bytes"])]
            else:
                cells += [r.get("skipped", r.get("error", "-")), "-"]
            cells.append(mib(analytic_largest_bytes(impl, b)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 128, 256, 512, 1024])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--max-reference-batch", type=int, default=512,
                        help="largest B at which to run the O(B^3) reference (memory)")
    parser.add_argument("--min-repeats", type=int, default=3)
    parser.add_argument("--min-seconds", type=float, default=1.0)
    parser.add_argument("--out", type=Path, help="write the rows as JSON here")
    parser.add_argument("--worker", nargs=2, metavar=("IMPL", "B"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        implementation, batch_size = args.worker[0], int(args.worker[1])
        print(json.dumps(measure(implementation, batch_size, args.dim, args.min_repeats,
                                 args.min_seconds)))
        return 0

    rows = []
    for batch_size in args.batch_sizes:
        for implementation in IMPLEMENTATIONS:
            if implementation == "tfa-tiled" and batch_size > args.max_reference_batch:
                rows.append({"implementation": implementation, "batch_size": batch_size,
                             "skipped": "skipped (memory)"})
                continue
            row = run_in_subprocess(implementation, batch_size, args)
            row["analytic_largest_bytes"] = analytic_largest_bytes(implementation, batch_size)
            rows.append(row)
            print(f"{implementation:>9} B={batch_size:<5} "
                  + (f"{row['median_ms']:9.1f} ms  peak {mib(row['peak_bytes'])} MiB"
                     if "median_ms" in row else row.get("error", "")), file=sys.stderr)
    print(format_table(rows))
    if args.out:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
        from tinymatch.io_utils import write_json

        write_json(args.out, {"dim": args.dim, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
