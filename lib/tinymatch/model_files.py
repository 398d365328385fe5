"""Writing a run's model files: atomic, deflated, optionally rounded to float16 precision.

Every temporary is named `.<final name>.<random>.tmp...` (`io_utils.atomic_path`), including the
one Keras writes, so `rundir.remove_leftovers` finds whatever a killed writer left behind.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import keras
import numpy as np

from tinymatch.io_utils import atomic_path, read_json, write_json
from tinymatch.model import load_model
from tinymatch.rundir import RunDir


def save_model(model, path, clone: bool = True) -> Path:
    """Atomically save an uncompiled copy (the file never holds a half-written or compiled model)."""
    if clone:  # one tensor, not a one-element list: callers pass a tensor
        inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
        outputs = model.outputs[0] if len(model.outputs) == 1 else model.outputs
        model = keras.Model(inputs, outputs, name=model.name)
    with atomic_path(path) as tmp:
        # Keras insists on the .keras suffix; appended (not substituted) so that the name keeps the
        # `.<name>.<random>.tmp` prefix a leftover sweep recognises.
        stored = tmp.parent / f"{tmp.name}.keras"
        try:
            model.save(stored)
            _deflate_archive(stored, tmp)
        finally:
            stored.unlink(missing_ok=True)
    return Path(path)


def _deflate_archive(source, target) -> None:
    """Copy a .keras archive with its members deflated.

    Keras writes the archive uncompressed; deflating shrinks float32 weights by about 10% (the
    cpu profile's models from 5.2 to 4.7 MB, under the 5 MB a committed reference model may take).
    `keras.saving.load_model` reads either form.
    """
    with zipfile.ZipFile(source) as original, \
            zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as deflated:
        for member in original.infolist():
            deflated.writestr(member, original.read(member), compress_type=zipfile.ZIP_DEFLATED)


def store_weights_at_half_precision(run_dir) -> dict:
    """Round the weights of RUN_DIR/model.keras and siamese.keras to float16 precision, in place.

    Why: the files stay float32 .keras archives that load and run as before, but every weight
    then carries only float16's 11 significant bits, so the deflated archive shrinks by ~35% (the
    `cpu` profile's models from 7.3 to 4.6 MB, under the 5 MB a committed reference model may
    take). Embeddings move by ~1e-4. Run this before evaluating, so that every reported figure
    is computed with the weights that are kept. Idempotent; returns {file: (bytes before, after)}.
    """
    paths = RunDir(run_dir)
    if paths.metrics.is_file():
        raise ValueError(f"{paths.metrics} exists: it was computed with the unrounded weights. "
                         f"Round before evaluating (delete metrics.json, round, evaluate again).")
    sizes = {}
    for path in (paths.model, paths.siamese):
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: train the run first")
        before = path.stat().st_size
        model = load_model(path)
        for weight in model.weights:
            if np.dtype(weight.dtype) == np.float32:
                weight.assign(np.asarray(weight.numpy(), np.float16).astype(np.float32))
        save_model(model, path, clone=path == paths.model)
        sizes[path.name] = (before, path.stat().st_size)
    if paths.training.is_file():
        summary = read_json(paths.training)
        summary["stored_weight_precision"] = "float16 (rounded after training)"
        write_json(paths.training, summary)
    return sizes


__all__ = ["save_model", "store_weights_at_half_precision"]
