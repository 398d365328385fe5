"""Data benchmark: cold decode, warm cache load, P x K pipeline throughput.

    python benchmarks/bench_data.py /work/shared/data/tiny-imagenet-200-train.zip --out bench_data.json

Cold decode runs into a fresh temporary cache directory (removed at the end unless --keep-cache),
so it always decodes every image. Targets (2 CPU cores): cold decode >= 3,000 images/s, warm load
<= 5 s, P x K pipeline with augmentation >= 2,000 images/s.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import tempfile
import time
import zipfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from tinymatch import data  # noqa: E402
from tinymatch.io_utils import write_json  # noqa: E402

TARGETS = {"cold_decode_images_per_s": 3000, "warm_load_s": 5.0, "pipeline_augmented_images_per_s": 2000}


def pil_reference(zip_path: Path, count: int) -> float:
    """Images/s of PIL decoding the first `count` JPEGs of the zip on one core (for comparison)."""
    from PIL import Image

    with zipfile.ZipFile(zip_path) as archive:
        names = [n for n in archive.namelist() if n.endswith(".JPEG")][:count]
        started = time.perf_counter()
        for name in names:
            with Image.open(io.BytesIO(archive.read(name))) as image:
                np.asarray(image.convert("RGB"))
        return len(names) / (time.perf_counter() - started)


def pipeline_throughput(dataset: data.Dataset, *, augment, classes_per_batch: int, images_per_class: int,
                        batches: int, warmup: int = 5) -> float:
    """Images/s of pulling `batches` P x K batches (after `warmup` batches)."""
    stream = data.pk_dataset(dataset.images, dataset.labels, classes_per_batch=classes_per_batch,
                             images_per_class=images_per_class, seed=0, augment=augment)
    iterator = iter(stream)
    for _ in range(warmup):
        next(iterator)
    started = time.perf_counter()
    for _ in range(batches):
        images, _ = next(iterator)
    _ = images.numpy()
    return batches * classes_per_batch * images_per_class / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("zip", type=Path, help="tiny-imagenet-200 zip (or folder)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="parent of the fresh temporary cache (default: the system temp dir)")
    parser.add_argument("--keep-cache", action="store_true", help="do not delete the decoded cache")
    parser.add_argument("--workers", type=int, default=None, help="decoding threads (default: all cores)")
    parser.add_argument("--classes-per-batch", type=int, default=32)
    parser.add_argument("--images-per-class", type=int, default=4)
    parser.add_argument("--batches", type=int, default=100, help="P x K batches to time")
    parser.add_argument("--pil-images", type=int, default=5000, help="images for the PIL reference (0: skip)")
    args = parser.parse_args(argv)

    results: dict = {"source": str(args.zip), "cpu_count": os.cpu_count(),
                     "load_average_before": list(os.getloadavg()), "targets": TARGETS}
    import tensorflow as tf  # noqa: F401 - imported up front: interpreter start-up is not decoding

    cache = Path(tempfile.mkdtemp(prefix="bench_data_cache_", dir=args.cache_dir))
    try:
        started = time.perf_counter()
        cold = data.load_dataset(args.zip, cache, workers=args.workers, progress=True)
        cold_seconds = time.perf_counter() - started
        assert not cold.from_cache
        results.update(images=len(cold), cold_total_s=round(cold_seconds, 2),
                       cold_decode_s=round(cold.decode_seconds, 2),
                       cold_decode_images_per_s=round(len(cold) / cold_seconds),
                       cold_decode_only_images_per_s=round(len(cold) / cold.decode_seconds))
        del cold

        started = time.perf_counter()
        warm = data.load_dataset(args.zip, cache, progress=False)
        results["warm_load_s"] = round(time.perf_counter() - started, 3)
        assert warm.from_cache

        pk = dict(classes_per_batch=args.classes_per_batch, images_per_class=args.images_per_class,
                  batches=args.batches)
        results["pipeline_plain_images_per_s"] = round(pipeline_throughput(warm, augment=None, **pk))
        from tinymatch.augment import get_image_augmentation_layer

        results["augmentation"] = "tinymatch.augment.get_image_augmentation_layer()"
        layer = get_image_augmentation_layer(seed=0)
        results["pipeline_augmented_images_per_s"] = round(pipeline_throughput(warm, augment=layer, **pk))
        if args.pil_images:
            results["pil_one_core_images_per_s"] = round(pil_reference(args.zip, args.pil_images))
    finally:
        if not args.keep_cache:
            shutil.rmtree(cache, ignore_errors=True)
    results["load_average_after"] = list(os.getloadavg())

    rows = [
        ("cold decode (parse + decode + write cache)", f"{results['cold_decode_images_per_s']:,} img/s",
         f">= {TARGETS['cold_decode_images_per_s']:,}"),
        ("  decode loop only", f"{results['cold_decode_only_images_per_s']:,} img/s", ""),
        ("warm cache load", f"{results['warm_load_s']:.2f} s", f"<= {TARGETS['warm_load_s']}"),
        (f"P x K pipeline, no augmentation ({args.classes_per_batch}x{args.images_per_class})",
         f"{results['pipeline_plain_images_per_s']:,} img/s", ""),
        ("P x K pipeline with augmentation",
         f"{results['pipeline_augmented_images_per_s']:,} img/s",
         f">= {TARGETS['pipeline_augmented_images_per_s']:,}"),
    ]
    if args.pil_images:
        rows.append(("PIL decode, one core (reference)", f"{results['pil_one_core_images_per_s']:,} img/s", ""))
    width = max(len(r[0]) for r in rows)
    print(f"\n{results['images']:,} images from {args.zip} on {os.cpu_count()} cores "
          f"(load average before {results['load_average_before'][0]:.1f}, "
          f"after {results['load_average_after'][0]:.1f})")
    for name, value, target in rows:
        print(f"  {name.ljust(width)}  {value:>14}  {target}")
    if args.out:
        write_json(args.out, results)
        print(f"results written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
