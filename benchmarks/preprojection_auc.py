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
from pathlib import Path

import numpy as np
from run_validation import main_over_runs, run_validation, trained_embedding, unit


def score_run(run_dir: Path) -> dict:
    import keras

    from tinymatch.callbacks import val_auc

    validation = run_validation(run_dir)
    config, images, pairs = validation.config, validation.images, validation.pairs
    model = trained_embedding(run_dir, flip_averaged=False)
    # One forward pass a view gives both the embedding and the pooled features.
    both = keras.Model(model.inputs, [model.outputs[0], model.get_layer("pooling").output])
    plain, mirrored = ([np.asarray(out) for out in both.predict(view, batch_size=500, verbose=0)]
                      for view in (images, images[:, :, ::-1, :]))
    scores = {}
    for flip in (False, True):
        views = [plain] + ([mirrored] if flip else [])
        embedding = sum(view[0] for view in views)
        pooled = sum(unit(view[1]) for view in views)
        suffix = ", flip-averaged" if flip else ""
        scores[f"embedding{suffix}"] = round(val_auc(unit(embedding), pairs, config.distance_metric), 4)
        scores[f"pooled ({pooled.shape[1]}-d){suffix}"] = round(val_auc(unit(pooled), pairs,
                                                                         config.distance_metric), 4)
    return scores


def main(argv=None) -> int:
    return main_over_runs(score_run, __doc__, argv,
                          show=lambda run_dir, scores, seconds: print(run_dir, json.dumps(scores)))


if __name__ == "__main__":
    raise SystemExit(main())
