"""What a run ran on: library versions and hardware names, for `RUN_DIR/environment.json`.

`environment_info()` is cheap and never imports TensorFlow itself: the TensorFlow and Keras
versions and the GPU names are read from the modules only when the caller has already imported
TensorFlow (training has); otherwise the installed package versions are read from their metadata
and the GPUs are left unlisted (`"gpus": null`, meaning "not looked at", unlike `[]`).
"""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from typing import Any

import tinymatch

# The first installed distribution of each name gives the version when the module is not loaded.
_DISTRIBUTIONS = {
    "tensorflow": ("tensorflow", "tensorflow-cpu", "tf-nightly"),
    "keras": ("keras",),
    "numpy": ("numpy",),
}


def _installed_version(module: str) -> str | None:
    loaded = sys.modules.get(module)
    version = getattr(loaded, "__version__", None)
    if version:
        return str(version)
    for distribution in _DISTRIBUTIONS[module]:
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    return None


def cpu_model() -> str:
    """The CPU's marketing name (`model name` in /proc/cpuinfo on Linux), else what `platform`
    knows, else ""."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware", "cpu model"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or ""


def gpu_names() -> list[str] | None:
    """Names of the GPUs TensorFlow sees, or None when TensorFlow is not imported yet (importing
    it here would cost seconds and initialise the devices behind the caller's back)."""
    tf = sys.modules.get("tensorflow")
    if tf is None or not hasattr(tf, "config"):
        return None
    names = []
    try:
        for device in tf.config.list_physical_devices("GPU"):
            details = tf.config.experimental.get_device_details(device)
            names.append(str(details.get("device_name") or device.name))
    except Exception:  # noqa: BLE001 - a hardware query must never fail a run; record nothing
        return None
    return names


def versions() -> dict[str, str | None]:
    """tinymatch, Python, TensorFlow, Keras and NumPy versions (None: not installed), without
    importing any of them."""
    return {
        "tinymatch": tinymatch.__version__,
        "python": platform.python_version(),
        "tensorflow": _installed_version("tensorflow"),
        "keras": _installed_version("keras"),
        "numpy": _installed_version("numpy"),
    }


def environment_info() -> dict[str, Any]:
    """Versions and hardware: tinymatch, Python, TensorFlow, Keras, NumPy, the platform, the CPU's
    name and logical core count, and the GPU names (None: not looked at; see the module doc)."""
    return {
        **versions(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "gpus": gpu_names(),
    }


__all__ = ["environment_info", "versions", "cpu_model", "gpu_names"]
