"""Embedding in bounded memory, the embedding cache and the baselines (tinymatch.embed)."""

import keras
import numpy as np
import pytest
from evaluation_fakes import FakeDataset, colour_images

from tinymatch import embed
from tinymatch import model as model_module
from tinymatch.config import MODEL_NAMES, Config


class CountingModel:
    """A stand-in 'model': mean colour per image, counting how many images it saw."""

    def __init__(self):
        self.seen = 0

    def predict_on_batch(self, batch):
        self.seen += len(batch)
        vectors = batch.reshape(len(batch), -1, 3).mean(axis=1) + 1.0
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_embed_in_batches_equals_one_call():
    inputs = keras.Input((64, 64, 3))
    outputs = keras.layers.UnitNormalization()(keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(inputs)))
    model = keras.Model(inputs, outputs)
    images = colour_images(np.arange(10) % 3)
    whole = np.asarray(model(images.astype(np.float32)))
    batched = embed.embed(model, images, batch_size=3, progress=False)
    assert batched.dtype == np.float32 and batched.shape == (10, 4)
    np.testing.assert_allclose(batched, whole, atol=1e-5)
    assert embed.embed(model, images[:0], progress=False).shape == (0, 4)
    with pytest.raises(ValueError, match="batch_size"):
        embed.embed(model, images, batch_size=0, progress=False)


def test_embeddings_for_caches_per_model_and_indices(tmp_path):
    labels = np.arange(20) % 4
    dataset = FakeDataset(colour_images(labels), labels)
    model_file = tmp_path / "model.keras"
    model_file.write_bytes(b"stand-in")
    counting = CountingModel()
    indices = np.array([3, 1, 7, 9])

    def embeddings(rows, **options):
        return embed.embeddings_for(model_file, dataset, rows, cache_dir=tmp_path / "emb", progress=False,
                                    model=counting, **options)

    first = embeddings(indices, batch_size=3)
    again = embeddings(indices)
    assert counting.seen == 4  # the second call read the cache
    np.testing.assert_array_equal(first, again)
    np.testing.assert_allclose(first, CountingModel().predict_on_batch(dataset.images[indices].astype(np.float32)))
    embeddings(indices[:2])
    assert counting.seen == 6  # other indices, other cache file
    cached = sorted((tmp_path / "emb").glob("model-*.npy"))
    assert len(cached) == 2
    for path in cached:  # a damaged cache file is recomputed and replaced, not trusted
        path.write_bytes(b"garbage")
    np.testing.assert_array_equal(embeddings(indices), first)
    assert counting.seen == 10
    with pytest.raises(FileNotFoundError, match="nothere.keras"):
        embed.embeddings_for(tmp_path / "nothere.keras", dataset, indices, cache_dir=tmp_path, model=counting)


def test_cache_key_changes_with_the_model_file_and_the_rows(tmp_path):
    dataset = FakeDataset(colour_images(np.arange(4)), np.arange(4))
    model_file = tmp_path / "model.keras"
    model_file.write_bytes(b"one")
    key = embed.embedding_cache_key(model_file, dataset, [0, 1])
    assert key == embed.embedding_cache_key(model_file, dataset, np.array([0, 1]))
    assert key != embed.embedding_cache_key(model_file, dataset, [1, 0])
    model_file.write_bytes(b"other contents")
    assert key != embed.embedding_cache_key(model_file, dataset, [0, 1])


def test_raw_pixel_embeddings_are_unit_flattened_pixels(monkeypatch):
    monkeypatch.setattr(embed, "RAW_PIXEL_CHUNK", 2)  # several blocks
    images = colour_images(np.arange(5))
    vectors = embed.raw_pixel_embeddings(embed.LazyRows(images, np.arange(5)))
    assert vectors.shape == (5, 64 * 64 * 3)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, rtol=1e-5)
    flat = images.reshape(5, -1).astype(np.float64)
    np.testing.assert_allclose(vectors, flat / np.linalg.norm(flat, axis=1, keepdims=True), atol=1e-6)


def test_lazy_rows_gather_only_what_is_sliced():
    images = np.arange(10)[:, None] * np.ones((10, 3))
    rows = embed.LazyRows(images, [7, 2, 5])
    assert len(rows) == 3 and rows.shape == (3, 3)
    np.testing.assert_array_equal(rows[1:3][:, 0], [2, 5])


def test_model_embedders_trained_first_and_siamese_files_yield_their_embedding(tmp_path):
    config = Config.from_profile("smoke", augment=False)
    keras.utils.set_random_seed(0)
    embedding = model_module.build_embedding_model(config)
    embedding.save(tmp_path / "model.keras")
    model_module.build_siamese_model(embedding, threshold=0.5).save(tmp_path / "siamese.keras")
    labels = np.arange(6) % 3
    dataset = FakeDataset(colour_images(labels), labels)
    embedders = embed.model_embedders(tmp_path / "model.keras", dataset, config, baselines=True,
                                      progress=False)
    assert tuple(embedders) == MODEL_NAMES
    trained = embedders["trained"](np.arange(6))
    assert trained.shape == (6, config.embedding_dim)
    assert list((tmp_path / "embeddings").glob("model-*.npy"))  # cached in the run's folder
    assert embedders["untrained"](np.arange(3)).shape == (3, config.embedding_dim)
    assert embedders["raw_pixels"](np.arange(2)).shape == (2, 64 * 64 * 3)
    from_siamese = embed.load_embedding_model(tmp_path / "siamese.keras")
    np.testing.assert_allclose(embed.embed(from_siamese, dataset.images, progress=False), trained, atol=1e-5)


def test_a_keras_model_that_embeds_no_image_is_not_a_tinymatch_model(tmp_path):
    inputs = keras.Input((10,))
    keras.Model(inputs, keras.layers.Dense(3)(inputs)).save(tmp_path / "dense.keras")
    with pytest.raises(model_module.NotATinymatchModelError, match="dense.keras is not a tinymatch model"):
        embed.load_embedding_model(tmp_path / "dense.keras")
