"""Files a user might pass as `--model` that are not tinymatch models, generated from a real one.

`BAD_MODEL_FILES`: {name: make(folder, real .keras path) -> path}. Every one must end in one line
that names the file ("... is not a tinymatch model" or "not a Siamese model"), and none may run
code from the file.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import keras


def _rewrite_config(source: Path, target: Path, change) -> Path:
    """A copy of the .keras archive `source` with `change(config dict)` applied to config.json."""
    with zipfile.ZipFile(source) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(entries["config.json"])
    change(config)
    entries["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return target


def _first_layer(config: dict) -> dict:
    return config["config"]["layers"][-1]


def _foreign_module(folder: Path, real: Path) -> Path:
    """config.json names os.system as a layer class: Keras must never import or call it."""
    def change(config):
        _first_layer(config).update(module="os", class_name="system", registered_name="system")
    return _rewrite_config(real, folder / "foreign_module.keras", change)


def _unknown_tinymatch_class(folder: Path, real: Path) -> Path:
    def change(config):
        _first_layer(config).update(module="tinymatch.model", class_name="NoSuchLayer",
                                    registered_name="tinymatch>NoSuchLayer")
    return _rewrite_config(real, folder / "unknown_class.keras", change)


def _plain_zip(folder: Path, real: Path) -> Path:
    with zipfile.ZipFile(folder / "plain.keras", "w") as archive:
        archive.writestr("readme.txt", "a zip, but not a Keras archive")
    return folder / "plain.keras"


def _truncated(folder: Path, real: Path) -> Path:
    data = real.read_bytes()
    (folder / "truncated.keras").write_bytes(data[: len(data) // 2])
    return folder / "truncated.keras"


def _broken_json(folder: Path, real: Path) -> Path:
    with zipfile.ZipFile(real) as archive:
        weights = archive.read("model.weights.h5")
    with zipfile.ZipFile(folder / "broken_json.keras", "w") as archive:
        archive.writestr("config.json", "{not json")
        archive.writestr("model.weights.h5", weights)
    return folder / "broken_json.keras"


def _text(folder: Path, real: Path) -> Path:
    (folder / "notes.keras").write_text("not a model\n")
    return folder / "notes.keras"


def _empty(folder: Path, real: Path) -> Path:
    (folder / "empty.keras").write_bytes(b"")
    return folder / "empty.keras"


def _directory(folder: Path, real: Path) -> Path:
    (folder / "folder.keras").mkdir()
    return folder / "folder.keras"


def _lambda_layer(folder: Path, real: Path) -> Path:
    """A Keras model with a Lambda layer: its code would run on load outside safe mode."""
    inputs = keras.Input((64, 64, 3))
    keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs)).save(folder / "lambda.keras")
    return folder / "lambda.keras"


BAD_MODEL_FILES = {
    "foreign_module": _foreign_module,
    "unknown_tinymatch_class": _unknown_tinymatch_class,
    "zip_not_keras": _plain_zip,
    "truncated_keras": _truncated,
    "broken_config_json": _broken_json,
    "text_named_keras": _text,
    "empty_file": _empty,
    "directory": _directory,
    "lambda_layer": _lambda_layer,
}


def keras_model_not_tinymatch(folder: Path) -> Path:
    """A valid Keras model file that is no tinymatch model: a Dense layer on 10 numbers."""
    inputs = keras.Input((10,))
    keras.Model(inputs, keras.layers.Dense(3)(inputs)).save(folder / "dense.keras")
    return folder / "dense.keras"
