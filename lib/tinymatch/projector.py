"""Export embeddings for TensorBoard's Embedding Projector and projector.tensorflow.org.

Keras 3's `TensorBoard` callback has no `embeddings_freq` any more, so we write the projector's
files ourselves. The layout of an export directory:

```
projector/
  projector_config.pbtxt   # text-format ProjectorConfig, paths relative to this directory
  tensors.tsv              # one embedding per line, tab separated (also for projector.tensorflow.org)
  metadata.tsv             # header "class_id<TAB>class_name", one line per embedding
  sprite.png               # 32 px thumbnails in row-major order, one per embedding
  events.out.tfevents.*    # an empty event file: it makes the folder a TensorBoard run
```

A run writes it to `RUN_DIR/tensorboard/projector/` (`rundir.RunDir.projector`), inside the
training's TensorBoard log directory: TensorBoard's projector plugin only looks in folders it knows
as runs (folders with an event file) and in the log directory itself, so the empty event file lets
one `tensorboard --logdir RUN_DIR/tensorboard` show the training scalars and, in the PROJECTOR tab,
this export. Or upload `tensors.tsv` and `metadata.tsv` with "Load" on
https://projector.tensorflow.org.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from tinymatch.io_utils import atomic_path

CONFIG_FILENAME = "projector_config.pbtxt"  # the name TensorBoard's projector plugin looks for
TENSORS_FILENAME = "tensors.tsv"
METADATA_FILENAME = "metadata.tsv"
SPRITE_FILENAME = "sprite.png"
THUMBNAIL_SIZE = 32
# The projector refuses sprites larger than 8192 x 8192 pixels: 256 x 256 thumbnails of 32 px.
MAX_POINTS = (8192 // THUMBNAIL_SIZE) ** 2


def export_projector(embeddings, labels, class_names, images, out_dir, *, tensor_name="embedding",
                     thumbnail_size=THUMBNAIL_SIZE) -> Path:
    """Write an Embedding Projector export of `embeddings` into `out_dir`; return `out_dir`.

    Args:
        embeddings: float [N, D] vectors (one per image).
        labels: int [N] class index of each embedding (index into `class_names`).
        class_names: human-readable name of each class index.
        images: uint8 or float (0..255) [N, H, W, 3] images shown as sprite thumbnails, or None
            for an export without a sprite.
        out_dir: export directory; it is replaced as a whole (atomically).
        tensor_name: the name the projector shows for this tensor.
        thumbnail_size: side of one sprite thumbnail in pixels.
    """
    embeddings = np.asarray(embeddings, dtype=np.float32)
    labels = np.asarray(labels).reshape(-1)
    _check_inputs(embeddings, labels, class_names, images, thumbnail_size)
    out_dir = Path(out_dir)
    # Build the whole export beside its destination, then swap it in: readers never see half of it.
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        (tmp / TENSORS_FILENAME).write_text(tensors_tsv(embeddings))
        (tmp / METADATA_FILENAME).write_text(metadata_tsv(labels, class_names))
        sprite_shape = None
        if images is not None:
            (tmp / SPRITE_FILENAME).write_bytes(sprite_png(images, thumbnail_size))
            sprite_shape = (thumbnail_size, thumbnail_size)
        (tmp / CONFIG_FILENAME).write_text(
            projector_config_text(tensor_name, embeddings.shape, sprite_shape))
        write_run_marker(tmp)
    return out_dir


def write_run_marker(folder) -> None:
    """An event file holding only its version record (the writer's first event): TensorBoard
    then lists `folder` as a run, and its projector plugin reads the `projector_config.pbtxt` in it."""
    EventFileWriter(str(folder)).close()


def tensors_tsv(embeddings: np.ndarray) -> str:
    """One vector per line, values tab separated (what both projectors read)."""
    buffer = io.StringIO()
    np.savetxt(buffer, embeddings, delimiter="\t", fmt="%.6g")
    return buffer.getvalue()


def metadata_tsv(labels: np.ndarray, class_names) -> str:
    """Header row plus `class_id<TAB>class_name` per point (two columns need the header)."""
    rows = ["class_id\tclass_name"]
    rows += [f"{int(label)}\t{_tsv_safe(class_names[int(label)])}" for label in labels]
    return "\n".join(rows) + "\n"


def sprite_png(images, thumbnail_size: int = THUMBNAIL_SIZE) -> bytes:
    """All images as `thumbnail_size` thumbnails on one square grid, row-major, as PNG bytes."""
    from PIL import Image

    images = np.asarray(images)
    columns = math.ceil(math.sqrt(len(images)))
    sprite = Image.new("RGB", (columns * thumbnail_size, columns * thumbnail_size), (255, 255, 255))
    for index, image in enumerate(images):
        pixels = np.clip(image, 0, 255).astype(np.uint8)
        if pixels.ndim == 3 and pixels.shape[-1] == 1:
            pixels = pixels[..., 0]
        thumbnail = Image.fromarray(pixels).convert("RGB").resize(
            (thumbnail_size, thumbnail_size), Image.BILINEAR)
        row, column = divmod(index, columns)
        sprite.paste(thumbnail, (column * thumbnail_size, row * thumbnail_size))
    buffer = io.BytesIO()
    sprite.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def projector_config_text(tensor_name: str, tensor_shape, sprite_shape=None) -> str:
    """A `ProjectorConfig` in protobuf text format (written by hand: no TensorFlow needed)."""
    lines = [
        "embeddings {",
        f"  tensor_name: {_quote(tensor_name)}",
        f"  tensor_path: {_quote(TENSORS_FILENAME)}",
        f"  metadata_path: {_quote(METADATA_FILENAME)}",
    ]
    lines += [f"  tensor_shape: {int(side)}" for side in tensor_shape]
    if sprite_shape is not None:
        lines += [
            "  sprite {",
            f"    image_path: {_quote(SPRITE_FILENAME)}",
            f"    single_image_dim: {int(sprite_shape[0])}",
            f"    single_image_dim: {int(sprite_shape[1])}",
            "  }",
        ]
    lines.append("}")
    return "\n".join(lines) + "\n"


def subsample_for_projector(labels, max_points: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most `max_points` points, drawn evenly across classes."""
    labels = np.asarray(labels).reshape(-1)
    if max_points <= 0 or len(labels) <= max_points:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    # Shuffle, then take points round-robin over classes so small classes are not crowded out.
    order = rng.permutation(len(labels))
    rank_in_class = np.empty(len(labels), dtype=np.int64)
    for label in np.unique(labels):
        members = order[labels[order] == label]
        rank_in_class[members] = np.arange(len(members))
    chosen = order[np.argsort(rank_in_class[order], kind="stable")[:max_points]]
    return np.sort(chosen)


def _check_inputs(embeddings, labels, class_names, images, thumbnail_size) -> None:
    if embeddings.ndim != 2 or len(embeddings) == 0:
        raise ValueError(f"embeddings: expected a non-empty [N, D] array, got shape {embeddings.shape}")
    if len(labels) != len(embeddings):
        raise ValueError(f"labels: {len(labels)} labels for {len(embeddings)} embeddings")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise ValueError(f"labels: values must index class_names (0..{len(class_names) - 1})")
    if not np.all(np.isfinite(embeddings)):
        raise ValueError("embeddings: contain NaN or infinite values")
    if images is not None:
        if len(images) != len(embeddings):
            raise ValueError(f"images: {len(images)} images for {len(embeddings)} embeddings")
        limit = (8192 // thumbnail_size) ** 2
        if len(images) > limit:
            raise ValueError(f"images: the projector's sprite holds at most {limit} thumbnails of "
                             f"{thumbnail_size} px, got {len(images)} (subsample first)")


def _quote(text: str) -> str:
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _tsv_safe(text: str) -> str:
    return " ".join(str(text).split())  # no tabs or newlines inside a field


__all__ = ["export_projector", "subsample_for_projector", "tensors_tsv", "metadata_tsv", "sprite_png",
           "projector_config_text", "CONFIG_FILENAME", "TENSORS_FILENAME", "METADATA_FILENAME",
           "SPRITE_FILENAME", "MAX_POINTS", "write_run_marker"]
