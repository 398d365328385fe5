"""Shared pytest fixtures: a small synthetic Tiny ImageNet (dir and zip), built once per session.

The synthetic data matches the `smoke` profile (12 classes x 24 training images), with 2 official
val images per class, 4 unlabelled test images and 3 grayscale JPEGs; no corrupt files (tests that
need those build their own with `make_synthetic_dataset(..., corrupt=N)`).
"""

import os

# Before TensorFlow is imported anywhere: no C++ info/warning chatter, no progress bars.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TQDM_DISABLE", "1")

import pytest  # noqa: E402

from tinymatch.synthetic import make_synthetic_dataset  # noqa: E402

SYNTHETIC_OPTIONS = dict(num_classes=12, images_per_class=24, val_per_class=2, test_images=4,
                         grayscale=3, corrupt=0, seed=0)


@pytest.fixture(scope="session")
def _session_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("tinymatch_cache")


@pytest.fixture(autouse=True)
def _hermetic_data_env(monkeypatch, _session_cache):
    """Tests never pick up a developer's real dataset through the environment, and whatever would
    default to the working directory (the smoke profile's synthetic data under data/, caches) goes
    to a session temp dir instead ($TINYMATCH_CACHE)."""
    monkeypatch.delenv("TINYMATCH_DATA", raising=False)
    monkeypatch.setenv("TINYMATCH_CACHE", str(_session_cache))


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory):
    """Path of the `tiny-imagenet-200/` folder of the synthetic dataset."""
    return make_synthetic_dataset(tmp_path_factory.mktemp("synthetic_dir"), **SYNTHETIC_OPTIONS)


@pytest.fixture(scope="session")
def synthetic_zip(tmp_path_factory):
    """Path of `tiny-imagenet-200.zip` holding the same synthetic dataset (entries under
    `tiny-imagenet-200/`, like the official zip)."""
    return make_synthetic_dataset(tmp_path_factory.mktemp("synthetic_zip"), as_zip=True,
                                  **SYNTHETIC_OPTIONS)


@pytest.fixture(scope="session")
def synthetic_dataset(synthetic_dir):
    """`tinymatch.data.Dataset` of `synthetic_dir`, decoded once per session (read-only!)."""
    from tinymatch.data import load_dataset

    return load_dataset(synthetic_dir, progress=False)


@pytest.fixture(scope="session")
def smoke_ablation(tmp_path_factory, synthetic_dir, synthetic_dataset):
    """(out_dir, base config, variants, result) of a finished ablation on the synthetic data: a
    1 + 1 epoch smoke recipe (warm-up, then semi-hard), the recipe and the warm-up alone, 2 seeds
    each. Shared by the ablation tests and the smoke report (read-only!)."""
    from tinymatch import ablation
    from tinymatch.config import Config

    out = tmp_path_factory.mktemp("ablation")
    base = Config.from_profile("smoke", data=str(synthetic_dir), warmup_epochs=1, epochs=1,
                               steps_per_epoch=1, early_stopping_patience=0, max_positive_pairs=50,
                               bootstrap_samples=0)
    variants = ablation.default_variants(base)[:2]
    result = ablation.run_ablation(base, out, variants=variants, seeds=2, dataset=synthetic_dataset,
                                   progress=False)
    return out, base, variants, result


@pytest.fixture
def smoke_config(synthetic_dir):
    """The `smoke` profile on `synthetic_dir` (decoded-image cache shared by the session)."""
    from tinymatch.config import Config

    return Config.from_profile("smoke", data=str(synthetic_dir))


class _RangeServer:
    """A local HTTP server of one payload that honours (or, when told, ignores) Range requests."""

    def __init__(self):
        import http.server
        import threading

        owner = self
        self.payload = b""
        self.honour_range = True
        self.ranges: list = []  # the Range header of every request (None when absent)

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                header = self.headers.get("Range")
                owner.ranges.append(header)
                data, start = owner.payload, 0
                if header and owner.honour_range:
                    start = int(header.split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                self.wfile.write(data[start:])

            def log_message(self, *args):  # keep test output quiet
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/tiny-imagenet-200.zip"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def range_server():
    """A local HTTP server for download tests: set `.payload`, use `.url`, inspect `.ranges`."""
    server = _RangeServer()
    yield server
    server.close()


@pytest.fixture
def closed_port_url():
    """A URL on 127.0.0.1 where nothing listens: connecting fails at once (no network)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/tiny-imagenet-200.zip"
