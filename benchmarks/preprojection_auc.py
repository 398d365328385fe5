"""Validation pair AUC of a trained run's embedding against its pooled, pre-projection features.

The issue asked whether the embedding taken before the final projection (the backbone's
globally pooled features, L2-normalised) separates pairs better than the unit-norm embedding
the losses trained. This scores both on the run's own validation selection and pairs (the ones
the training picked its epoch on: `tinymatch.train`), with and without flip averaging. Val only:
it never touches a test part, so its answer can steer a choice.

Usage:
    python benchmarks/preprojection_auc.py runs/lad1337 runs/lad1338
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def score_run(run_dir: Path) -> dict:
    import keras

    from tinymatch import data, rundir
    from tinymatch.callbacks import val_auc
    from tinymatch.config import Config
    from tinymatch.embed import load_embedding_model
    from tinymatch.train import val_selection_indices, val_selection_pairs

    config = Config.load(run_dir / "config.json")
    dataset = data.load_dataset_for(config, progress=False)
    splits = rundir.run_splits(run_dir, dataset, config)  # the run's split.csv: read, never written
    val_indices = splits.indices(config.protocol, "val")
    # The same selection and pairs as the training's per-epoch val AUC.
    chosen = val_selection_indices(val_indices, config.seed)
    images = np.asarray(dataset.images[chosen], dtype=np.float32)
    pairs = val_selection_pairs(np.asarray(dataset.labels[chosen]), config)
    model = load_embedding_model(run_dir / "model.keras")
    # model.keras holds the flip-averaging wrapper around the embedding model.
    if "embedding" in [layer.name for layer in model.layers]:
        model = model.get_layer("embedding")
    # One forward pass a view gives both the embedding and the pooled features.
    both = keras.Model(model.inputs, [model.outputs[0], model.get_layer("pooling").output])
    plain, mirrored = ([np.asarray(out) for out in both.predict(view, batch_size=500, verbose=0)]
                      for view in (images, images[:, :, ::-1, :]))
    scores = {}
    for flip in (False, True):
        views = [plain] + ([mirrored] if flip else [])
        embedding = sum(view[0] for view in views)
        pooled = sum(_unit(view[1]) for view in views)
        suffix = ", flip-averaged" if flip else ""
        scores[f"embedding{suffix}"] = round(val_auc(_unit(embedding), pairs, config.distance_metric), 4)
        scores[f"pooled ({pooled.shape[1]}-d){suffix}"] = round(val_auc(_unit(pooled), pairs,
                                                                         config.distance_metric), 4)
    return scores


def main(argv=None) -> int:
    run_dirs = [Path(arg) for arg in (sys.argv[1:] if argv is None else argv)]
    if not run_dirs:
        print(__doc__)
        return 2
    for run_dir in run_dirs:
        if not (run_dir / "model.keras").is_file():
            print(f"{run_dir}: no model.keras (a finished training run's directory is needed)", file=sys.stderr)
            return 2
        print(run_dir, json.dumps(score_run(run_dir)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
