"""Validation pair AUC of a trained run under test-time views: input size and shifted crops.

Two inference-time levers the issue asks to check, neither needing a new training run:
- **The size the network sees at test time.** A network trained at `image_size` (48 px: the
  64-pixel images resampled by the augmentation layer) also runs at any other size, since the
  backbone is convolutional and globally pooled. Touvron et al. 2019 ("Fixing the train-test
  resolution discrepancy") found testing above the training size helps when training zooms in.
- **More views than the mirror.** The evaluation averages an image's embedding with its mirror's;
  this adds shifted copies (reflect-padded, a few pixels each way) and sizes averaged together.

Each view's embedding comes from the run's own weights, copied into an embedding model built at
the view's size (no augmentation layer: a `Resize` to the size when it is not 64). Scored on the
run's own validation selection and pairs, the ones its training picked its epoch on, so it never
touches a test part and its answer can steer a choice.

Usage:
    python benchmarks/test_time_views.py runs/lad1337 runs/lad1338
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from run_validation import main_over_runs, run_validation, trained_embedding, unit

SIZES = (32, 48, 64, 96)  # sizes the backbone builds at (its stride-2 shortcuts need even sides)
SHIFT = 3  # pixels at 64 px, each way: a quarter of the lighter augmentation's translation range


def _shifted(images: np.ndarray, dy: int, dx: int) -> np.ndarray:
    padded = np.pad(images, ((0, 0), (SHIFT, SHIFT), (SHIFT, SHIFT), (0, 0)), mode="reflect")
    side = images.shape[1]
    return padded[:, SHIFT + dy:SHIFT + dy + side, SHIFT + dx:SHIFT + dx + side, :]


def _model_at(size: int, config, trained):
    from tinymatch.model import build_embedding_model

    model = build_embedding_model(dataclasses.replace(config, image_size=size), include_augmentation=False)
    for layer in model.layers:
        if layer.weights:
            layer.set_weights(trained.get_layer(layer.name).get_weights())
    return model


def score_run(run_dir: Path) -> dict:
    from tinymatch.callbacks import val_auc

    validation = run_validation(run_dir)
    config, images, pairs = validation.config, validation.images, validation.pairs
    trained = trained_embedding(run_dir, flip_averaged=False)

    def embed(model, views):
        return {name: np.asarray(model.predict(view, batch_size=500, verbose=0))
                for name, view in views.items()}

    mirrored = images[:, :, ::-1, :]
    shifts = {f"shift{dy:+d},{dx:+d}": _shifted(images, dy, dx)
              for dy, dx in ((-SHIFT, 0), (SHIFT, 0), (0, -SHIFT), (0, SHIFT))}
    shifts.update({f"mirror {name}": view[:, :, ::-1, :] for name, view in list(shifts.items())})
    embeddings = {}
    for size in SIZES:
        model = _model_at(size, config, trained)
        views = {"plain": images, "mirror": mirrored}
        if size in (config.image_size, 64):
            views.update(shifts)
        embeddings[size] = embed(model, views)

    def auc(parts):
        return round(val_auc(unit(sum(unit(part) for part in parts)), pairs, config.distance_metric), 4)

    scores = {"trained model, flip-averaged (as evaluated)": auc(embed(trained, {"p": images, "m": mirrored}).values())}
    for size in SIZES:
        scores[f"{size} px, plain"] = auc([embeddings[size]["plain"]])
        scores[f"{size} px, flip"] = auc([embeddings[size]["plain"], embeddings[size]["mirror"]])
    for size in (config.image_size, 64):
        scores[f"{size} px, flip + 4 shifts x flip (10 views)"] = auc(embeddings[size].values())
    native = config.image_size
    for other in (64, 96):
        scores[f"{native} + {other} px, flip"] = auc(
            [embeddings[size][view] for size in (native, other) for view in ("plain", "mirror")])
    scores[f"{native} + 64 px, 10 views each"] = auc(
        [e for size in (native, 64) for e in embeddings[size].values()])
    return scores


def main(argv=None) -> int:
    return main_over_runs(score_run, __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
