"""tinymatch.environment: what a run records about the machine, cheaply and without TensorFlow."""

import json
import subprocess
import sys

import tinymatch
from tinymatch.environment import cpu_model, environment_info, versions

KEYS = {"tinymatch", "python", "tensorflow", "keras", "numpy", "platform", "cpu", "cpu_count", "gpus"}


def test_environment_info_names_versions_and_hardware():
    info = environment_info()
    assert set(info) == KEYS
    assert info["tinymatch"] == tinymatch.__version__
    assert info["python"] == ".".join(map(str, sys.version_info[:3]))
    assert info["tensorflow"] and info["keras"] and info["numpy"]  # installed with the package
    assert isinstance(info["cpu"], str) and info["cpu_count"] >= 1
    json.dumps(info)  # written as environment.json


def test_versions_match_the_imported_modules():
    import keras
    import numpy
    import tensorflow as tf

    found = versions()
    assert (found["tensorflow"], found["keras"], found["numpy"]) == (tf.__version__, keras.__version__,
                                                                     numpy.__version__)


def test_gpus_are_listed_once_tensorflow_is_imported():
    import tensorflow  # noqa: F401

    gpus = environment_info()["gpus"]
    assert isinstance(gpus, list) and all(isinstance(name, str) for name in gpus)


def test_environment_info_does_not_import_tensorflow():
    code = ("import sys, json\nfrom tinymatch.environment import environment_info\n"
            "info = environment_info()\nprint(json.dumps([info['gpus'], 'tensorflow' in sys.modules]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [None, False]  # None: GPUs not looked at, not "no GPU"


def test_cpu_model_is_text():
    assert isinstance(cpu_model(), str)
