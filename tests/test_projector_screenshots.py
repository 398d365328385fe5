"""Screenshots of TensorBoard's Embedding Projector (tinymatch.projector_screenshots).

The fast tests cover the error paths (nothing is started, or only stand-ins are); the end-to-end test
starts a real TensorBoard and headless Chromium on a tiny export and looks at the PNGs.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tinymatch import projector_screenshots as screenshots
from tinymatch.projector_screenshots import ProjectorScreenshotError


def _fake_export(folder):
    """The files `check_export` looks for (no TensorBoard needed to write them)."""
    folder.mkdir(parents=True)
    (folder / "projector_config.pbtxt").write_text(
        'embeddings {\n  tensor_name: "embedding"\n  tensor_path: "tensors.tsv"\n'
        '  metadata_path: "metadata.tsv"\n}\n')
    (folder / "tensors.tsv").write_text("0.6\t0.8\n1\t0\n")
    (folder / "metadata.tsv").write_text("class_id\tclass_name\n0\ta\n1\tb\n")
    return folder


def test_missing_export_is_a_clear_error(tmp_path):
    with pytest.raises(ProjectorScreenshotError, match="no projector export.*does not exist"):
        screenshots.capture(tmp_path / "run" / "tensorboard" / "projector", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ProjectorScreenshotError, match="projector_config.pbtxt is missing"):
        screenshots.capture(tmp_path / "empty", tmp_path / "out")
    export = _fake_export(tmp_path / "export")
    (export / "metadata.tsv").unlink()
    with pytest.raises(ProjectorScreenshotError, match=r"metadata.tsv \(metadata_path\) is missing"):
        screenshots.capture(export, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_chromium_or_tensorboard_is_a_clear_error(tmp_path, monkeypatch):
    export = _fake_export(tmp_path / "export")
    monkeypatch.setattr(screenshots, "check_tensorboard", lambda: None)  # whether installed or not
    monkeypatch.delenv("TINYMATCH_CHROMIUM", raising=False)
    monkeypatch.setattr(shutil, "which", lambda *args, **kwargs: None)
    with pytest.raises(ProjectorScreenshotError, match="need headless Chromium"):
        screenshots.capture(export, tmp_path / "out")
    with pytest.raises(ProjectorScreenshotError, match="'no-such-chromium' is not an executable"):
        screenshots.capture(export, tmp_path / "out", chromium="no-such-chromium")
    monkeypatch.undo()
    with monkeypatch.context() as patch:
        patch.setattr(screenshots.importlib.util, "find_spec", lambda name, *args: None)
        with pytest.raises(ProjectorScreenshotError, match="need TensorBoard"):
            screenshots.capture(export, tmp_path / "out")
    with pytest.raises(ValueError, match="views"):
        screenshots.capture(export, tmp_path / "out", views=("umap",))


# Stands in for TensorBoard: answers every GET with the projector's list of runs.
FAKE_TENSORBOARD = textwrap.dedent("""
    import http.server, sys
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200); self.end_headers(); self.wfile.write(b'["."]')
        def log_message(self, *args):
            pass
    http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
""")


def test_tensorboard_is_stopped_when_chromium_fails(tmp_path, monkeypatch):
    export = _fake_export(tmp_path / "export")
    fake_chromium = tmp_path / "chromium"
    fake_chromium.write_text("#!/bin/sh\necho 'cannot open display' >&2\nexit 3\n")
    fake_chromium.chmod(0o755)
    monkeypatch.setattr(screenshots, "tensorboard_command",
                        lambda logdir, port: [sys.executable, "-c", FAKE_TENSORBOARD, str(port)])
    started = []
    popen = subprocess.Popen

    def recording_popen(*args, **kwargs):
        started.append(popen(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(subprocess, "Popen", recording_popen)
    with pytest.raises(ProjectorScreenshotError, match=r"Chromium .* exited with status 3: cannot open display"):
        screenshots.capture(export, tmp_path / "out", chromium=str(fake_chromium), timeout=60)
    assert len(started) == 2  # the stand-in TensorBoard, then the failing Chromium
    assert all(process.poll() is not None for process in started)
    assert not (tmp_path / "out").exists()


def _chromium_or_skip() -> str:
    try:
        return screenshots._find_chromium(None)
    except ProjectorScreenshotError as error:
        pytest.skip(str(error))


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_capture_shows_the_projector_with_coloured_points(tmp_path):
    pytest.importorskip("tensorboard")
    chromium = _chromium_or_skip()
    from PIL import Image

    from tinymatch.projector import export_projector

    rng = np.random.default_rng(0)
    classes, per_class = 10, 12
    labels = np.repeat(np.arange(classes), per_class)
    vectors = rng.normal(size=(classes, 16))[labels] * 3 + rng.normal(size=(len(labels), 16))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)  # unit length, like the model's
    images = rng.integers(0, 256, size=(len(labels), 8, 8, 3)).astype(np.uint8)
    export = export_projector(vectors, labels, [f"class_{index}" for index in range(classes)], images,
                              tmp_path / "tensorboard" / "projector")

    width, height = 1100, 700
    paths = screenshots.capture(export, tmp_path / "figures", window_size=(width, height), tsne_iterations=60,
                                chromium=chromium, timeout=300)

    assert [path.name for path in paths] == ["projector_pca.png", "projector_tsne.png"]
    pictures = []
    for path in paths:
        with Image.open(path) as image:
            assert image.size == (width, height)
            pixels = np.asarray(image.convert("RGB"))
        # The scatter plot (between the side panels, below the toolbar) shows the sprites,
        # tinted by class: many colours, far from an empty white or a loading page.
        plot = pixels[150:, 330:width - 320]
        colours = np.unique(plot.reshape(-1, 3), axis=0)
        drawn = np.mean(np.any(plot < 235, axis=-1))
        assert len(colours) > 300, f"{path.name}: only {len(colours)} colours in the plot"
        assert drawn > 0.02, f"{path.name}: only {drawn:.1%} of the plot is drawn"
        pictures.append(pixels)
    assert np.mean(pictures[0] != pictures[1]) > 0.01  # PCA and t-SNE are different pictures
    assert not list((tmp_path / "figures").glob(".*"))  # no temporaries left behind
