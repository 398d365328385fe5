"""Warm-up step time of `cpu`-profile network shapes, timed against each other in one process.

Each variant is the `cpu` profile with some fields changed (JSON on the command line); its
warm-up training model (embedding, the training's own warm-up classifier and loss, Adam) takes
`train_on_batch` steps on one fixed P x K batch of random 64x64 images (no input pipeline), so the figure is the network's
cost alone. The variants are timed in interleaved rounds and the best round counts, so a
machine that slows down mid-run penalises every variant alike. Use it to price a shape change
before spending a full-length run on it: at a fixed time budget a step 1.4x dearer gets 1/1.4 of
the steps (benchmarks/README.md).

Usage:
    python benchmarks/bench_shapes.py '{"profile": {}, "w64": {"width": 64}, "3 blocks": {"blocks_per_stage": 3}}'
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variants", help='JSON object: name -> Config fields to change, e.g. {"w64": {"width": 64}}')
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--steps", type=int, default=10, help="timed steps a round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--classes", type=int, default=150, help="classifier outputs (the joint protocol's 150)")
    args = parser.parse_args(argv)
    try:
        variants = json.loads(args.variants)
    except json.JSONDecodeError as error:
        parser.error(f"variants: not JSON ({error})")
    if not isinstance(variants, dict) or not variants:
        parser.error("variants: a non-empty JSON object of name -> {field: value}")

    import keras

    from tinymatch.config import Config
    from tinymatch.model import build_embedding_model
    from tinymatch.train import warmup_head

    base = Config.from_profile(args.profile)
    batch = base.classes_per_batch * base.images_per_class
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch, 64, 64, 3)).astype("float32")
    labels = rng.integers(0, args.classes, batch)
    models = {}
    for name, changes in variants.items():
        config = base.replace(**changes)
        embedding = build_embedding_model(config)
        scores, loss = warmup_head(embedding.output, args.classes, config)  # the training's own head
        model = keras.Model(embedding.input, scores)
        model.compile(keras.optimizers.Adam(1e-3), loss)
        for _ in range(3):  # tracing and oneDNN's first-call setup are not the steady state
            model.train_on_batch(images, labels)
        models[name] = (model, embedding.count_params())
    best = dict.fromkeys(models, float("inf"))
    for _ in range(args.rounds):
        for name, (model, _) in models.items():
            began = time.perf_counter()
            for _ in range(args.steps):
                model.train_on_batch(images, labels)
            best[name] = min(best[name], (time.perf_counter() - began) / args.steps)
    reference = next(iter(best.values()))
    print(f"{args.profile} profile, {batch}-image steps, best of {args.rounds} interleaved rounds of {args.steps}:")
    for name, (_, weights) in models.items():
        print(f"  {name}: {best[name] * 1000:.0f} ms a step ({best[name] / reference:.2f}x the first), "
              f"{weights / 1e6:.2f}M embedding weights")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
