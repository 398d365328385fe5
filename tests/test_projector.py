"""The projector export is read back by TensorBoard's own projector plugin."""

import numpy as np
import pytest
from PIL import Image

from tinymatch import projector


def _export(tmp_path, n=10, dim=4, with_images=True):
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(n, dim)).astype(np.float32)
    labels = np.arange(n) % 3
    images = rng.integers(0, 256, size=(n, 64, 64, 3), dtype=np.uint8) if with_images else None
    class_names = ["goldfish", "tabby, cat", "school\tbus"]
    out = projector.export_projector(embeddings, labels, class_names, images, tmp_path / "projector",
                                     tensor_name="test_embedding")
    return out, embeddings, labels


def _plugin(logdir):
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.projector.projector_plugin import ProjectorPlugin

    return ProjectorPlugin(base_plugin.TBContext(logdir=str(logdir), data_provider=None))


def _get(plugin, route, **params):
    from werkzeug.test import Client

    response = Client(plugin.get_plugin_apps()[route]).get("/", query_string=params)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response


def test_projector_plugin_finds_tensor_metadata_and_sprite(tmp_path):
    out, embeddings, labels = _export(tmp_path)
    plugin = _plugin(out)
    plugin._update_configs()
    assert "." in plugin._configs, "the plugin did not find projector_config.pbtxt"
    [info] = plugin._configs["."].embeddings
    assert info.tensor_name == "test_embedding"
    assert list(info.tensor_shape) == [10, 4]
    assert list(info.sprite.single_image_dim) == [32, 32]

    served = np.frombuffer(_get(plugin, "/tensor", run=".", name="test_embedding").data, np.float32)
    np.testing.assert_allclose(served.reshape(10, 4), embeddings, rtol=1e-5)

    metadata = _get(plugin, "/metadata", run=".", name="test_embedding").get_data(as_text=True)
    rows = metadata.strip("\n").split("\n")
    assert rows[0] == "class_id\tclass_name"
    assert len(rows) == 11
    assert rows[2] == "1\ttabby, cat"
    assert rows[3] == "2\tschool bus"  # a tab inside a name would break the columns

    sprite_bytes = _get(plugin, "/sprite_image", run=".", name="test_embedding").data
    sprite_path = out / projector.SPRITE_FILENAME
    assert sprite_bytes == sprite_path.read_bytes()
    with Image.open(sprite_path) as sprite:
        assert sprite.size == (4 * 32, 4 * 32)  # ceil(sqrt(10)) thumbnails a side


def test_config_parses_as_projector_proto(tmp_path):
    from google.protobuf import text_format
    from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig

    out, embeddings, _ = _export(tmp_path, with_images=False)
    config = text_format.Parse((out / projector.CONFIG_FILENAME).read_text(), ProjectorConfig())
    [info] = config.embeddings
    assert info.tensor_path == "tensors.tsv" and info.metadata_path == "metadata.tsv"
    assert not info.sprite.image_path
    vectors = np.loadtxt(out / info.tensor_path, delimiter="\t", dtype=np.float32)
    np.testing.assert_allclose(vectors, embeddings, rtol=1e-5)


def test_export_replaces_previous_export(tmp_path):
    out, _, _ = _export(tmp_path, n=10)
    (out / "stale.txt").write_text("old")
    out, _, _ = _export(tmp_path, n=5)
    assert not (out / "stale.txt").exists()
    assert len((out / "tensors.tsv").read_text().splitlines()) == 5


@pytest.mark.parametrize("bad", ["labels", "shape", "images", "nan"])
def test_bad_inputs_name_the_parameter(tmp_path, bad):
    embeddings = np.zeros((4, 2), np.float32)
    labels = np.array([0, 1, 0, 1])
    images = np.zeros((4, 8, 8, 3), np.uint8)
    if bad == "labels":
        labels = np.array([0, 1, 0, 5])
    elif bad == "shape":
        embeddings = np.zeros(4, np.float32)
    elif bad == "images":
        images = images[:3]
    else:
        embeddings[0, 0] = np.nan
    with pytest.raises(ValueError, match="labels|embeddings|images"):
        projector.export_projector(embeddings, labels, ["a", "b"], images, tmp_path / "p")
    assert not (tmp_path / "p").exists()


def test_subsample_is_class_balanced():
    labels = np.array([0] * 90 + [1] * 5 + [2] * 5)
    chosen = projector.subsample_for_projector(labels, 15, seed=1)
    assert len(chosen) == 15 and np.all(np.diff(chosen) > 0)
    assert np.bincount(labels[chosen]).tolist() == [5, 5, 5]
    assert len(projector.subsample_for_projector(labels, 0)) == 100


def test_one_tensorboard_on_the_run_shows_the_projector_export(tmp_path):
    """The export inside RUN_DIR/tensorboard is a TensorBoard run of its own, so the projector
    plugin of `tensorboard --logdir RUN_DIR/tensorboard` finds it beside the training scalars."""
    from tensorboard import context
    from tensorboard.backend.event_processing.data_provider import MultiplexerDataProvider
    from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.projector.projector_plugin import ProjectorPlugin

    from tinymatch.rundir import RunDir

    paths = RunDir(tmp_path / "run")
    rng = np.random.default_rng(0)
    projector.export_projector(rng.normal(size=(6, 3)), np.arange(6) % 2, ["a", "b"], None, paths.projector)
    logdir = str(paths.tensorboard)
    multiplexer = EventMultiplexer()
    multiplexer.AddRunsFromDirectory(logdir)
    multiplexer.Reload()
    provider = MultiplexerDataProvider(multiplexer, logdir)
    assert [run.run_name for run in provider.list_runs(context.RequestContext(), experiment_id="")] == ["projector"]
    plugin = ProjectorPlugin(base_plugin.TBContext(logdir=logdir, data_provider=provider))
    plugin._update_configs()
    [info] = plugin._configs["projector"].embeddings
    assert info.tensor_name == "embedding" and list(info.tensor_shape) == [6, 3]
