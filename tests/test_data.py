"""tinymatch.data on small synthetic datasets: parsing, cache, errors, splits, P x K batches, download."""

import hashlib
import io
import shutil
import zipfile

import numpy as np
import pytest
from PIL import Image

from tinymatch import data
from tinymatch.config import Config
from tinymatch.data import DataError, load_dataset, make_splits
from tinymatch.data import cache as data_cache
from tinymatch.synthetic import make_synthetic_dataset, synthetic_wnid

SMALL = dict(num_classes=3, images_per_class=4, val_per_class=1, test_images=2, grayscale=1)


def small_dataset(tmp_path, name="small", **overrides):
    """A fresh 3-class dataset folder a test may modify."""
    return make_synthetic_dataset(tmp_path / name, **{**SMALL, **overrides})


def cache_entries(cache_root):
    """What a cache folder holds, besides its lock file."""
    return sorted(p.name for p in cache_root.iterdir() if p.name != ".lock") if cache_root.exists() else []


# --- parsing --------------------------------------------------------------------------------------

def test_dir_and_zip_give_identical_arrays(synthetic_dir, synthetic_zip, tmp_path):
    from_dir = load_dataset(synthetic_dir, tmp_path / "cache", progress=False)
    from_zip = load_dataset(synthetic_zip, tmp_path / "cache", progress=False)
    assert from_dir.cache_path != from_zip.cache_path
    np.testing.assert_array_equal(from_dir.images, from_zip.images)
    for column in ("labels", "subsets", "grayscale", "boxes"):
        np.testing.assert_array_equal(getattr(from_dir, column), getattr(from_zip, column))
    assert from_dir.paths == from_zip.paths
    assert from_dir.wnids == from_zip.wnids and from_dir.class_names == from_zip.class_names


def test_labels_subsets_and_boxes_follow_the_layout(synthetic_dataset, synthetic_dir):
    dataset = synthetic_dataset
    assert dataset.images.dtype == np.uint8 and dataset.images.shape == (288 + 24 + 4, 64, 64, 3)
    assert dataset.wnids == [synthetic_wnid(c) for c in range(12)]
    assert dataset.class_names[0].startswith("c00 ")  # first comma item of words.txt
    assert [int((dataset.subsets == s).sum()) for s in ("train", "val", "test")] == [288, 24, 4]
    for path, label in zip(dataset.paths, dataset.labels):
        if path.startswith("train/"):
            assert dataset.wnids[label] == path.split("/")[1]
    assert (dataset.labels[dataset.subsets == "test"] == -1).all()
    annotations = (synthetic_dir / "val" / "val_annotations.txt").read_text().split("\n")
    for line in filter(None, annotations):
        name, wnid, *box = line.split("\t")
        row = dataset.paths.index(f"val/images/{name}")
        assert dataset.wnids[dataset.labels[row]] == wnid
        assert dataset.boxes[row].tolist() == [int(v) for v in box]
    first_box = (synthetic_dir / "train" / dataset.wnids[0] / f"{dataset.wnids[0]}_boxes.txt").read_text()
    name, *box = first_box.split("\n")[0].split("\t")
    assert dataset.boxes[dataset.paths.index(f"train/{dataset.wnids[0]}/images/{name}")].tolist() == \
        [int(v) for v in box]
    # Natural order inside a class: _0, _1, _2, ..., _10 (not _0, _1, _10, _11, ...).
    assert dataset.paths[:3] == [f"train/{dataset.wnids[0]}/images/{dataset.wnids[0]}_{i}.JPEG" for i in range(3)]


def test_grayscale_jpegs_become_three_equal_channels(synthetic_dataset):
    gray = np.flatnonzero(synthetic_dataset.grayscale)
    assert len(gray) == 3
    for row in gray:
        image = synthetic_dataset.images[row]
        assert image.shape == (64, 64, 3)
        assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()
    colour = np.flatnonzero(~synthetic_dataset.grayscale)[0]
    assert not (synthetic_dataset.images[colour][..., 0] == synthetic_dataset.images[colour][..., 1]).all()


def test_decoded_pixels_match_pil(synthetic_dataset, synthetic_dir):
    for row in (0, 100, len(synthetic_dataset) - 1):
        with Image.open(synthetic_dir / synthetic_dataset.paths[row]) as image:
            expected = np.asarray(image.convert("RGB"), dtype=np.int16)
        difference = np.abs(synthetic_dataset.images[row].astype(np.int16) - expected)
        assert difference.mean() < 1.5  # decoders differ only by IDCT rounding


def test_folder_containing_the_layout_is_accepted(synthetic_dir, synthetic_dataset, tmp_path):
    dataset = load_dataset(synthetic_dir.parent, tmp_path / "cache", progress=False)
    assert dataset.paths == synthetic_dataset.paths


def test_images_that_are_not_64x64_are_resized(tmp_path):
    dataset = load_dataset(small_dataset(tmp_path, odd_sized=2), progress=False)
    assert int(dataset.resized.sum()) == 2 and dataset.images.shape[1:] == (64, 64, 3)
    assert data.summarize(dataset)["resized"] == 2


def test_subset_takes_first_classes_and_images_and_has_its_own_cache(synthetic_dir, synthetic_dataset,
                                                                     tmp_path):
    subset = load_dataset(synthetic_dir, tmp_path / "cache", max_classes=3, max_images_per_class=5,
                          progress=False)
    assert subset.wnids == synthetic_dataset.wnids[:3]
    train = [p for p in subset.paths if p.startswith("train/")]
    assert train == [f"train/{w}/images/{w}_{i}.JPEG" for w in subset.wnids for i in range(5)]
    assert int((subset.subsets == "val").sum()) == 3 * 2
    assert set(subset.labels[subset.subsets == "val"]) == {0, 1, 2}
    full = load_dataset(synthetic_dir, tmp_path / "cache", progress=False)
    assert not full.from_cache and full.cache_path != subset.cache_path
    np.testing.assert_array_equal(subset.images[:5], full.images[:5])


# --- cache ----------------------------------------------------------------------------------------

def test_second_load_uses_the_cache_without_decoding(tmp_path):
    source = small_dataset(tmp_path)
    first = load_dataset(source, tmp_path / "cache", progress=False)
    second = load_dataset(source, tmp_path / "cache", progress=False)
    assert not first.from_cache and first.decoded == len(first) == 3 * 4 + 3 + 2
    assert second.from_cache and second.decoded == 0
    assert isinstance(second.images, np.memmap)  # opened with mmap_mode='r', not read
    np.testing.assert_array_equal(first.images, second.images)
    assert cache_entries(tmp_path / "cache") == [first.cache_path.name]


def test_default_cache_lives_beside_the_data_or_in_tinymatch_cache(tmp_path, monkeypatch):
    source = small_dataset(tmp_path)
    monkeypatch.setenv("TINYMATCH_CACHE", str(tmp_path / "elsewhere"))
    assert load_dataset(source, progress=False).cache_path.parent == tmp_path / "elsewhere"
    monkeypatch.delenv("TINYMATCH_CACHE")
    dataset = load_dataset(source, progress=False)
    assert dataset.cache_path.parent == source.parent / "cache"


def test_changed_folder_invalidates_the_cache(tmp_path):
    source = small_dataset(tmp_path)
    first = load_dataset(source, tmp_path / "cache", progress=False)
    target = source / first.paths[1]
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(target, format="JPEG")
    second = load_dataset(source, tmp_path / "cache", progress=False)
    assert not second.from_cache and second.decoded > 0
    assert abs(int(second.images[1].mean()) - 200) <= 2
    assert cache_entries(tmp_path / "cache") == [second.cache_path.name]  # the stale one is gone


def test_changed_zip_invalidates_the_cache(tmp_path):
    source = make_synthetic_dataset(tmp_path / "z", as_zip=True, **SMALL)
    first = load_dataset(source, tmp_path / "cache", progress=False)
    make_synthetic_dataset(tmp_path / "z", as_zip=True, **{**SMALL, "seed": 7})
    second = load_dataset(source, tmp_path / "cache", progress=False)
    assert not second.from_cache and second.cache_path != first.cache_path
    assert not np.array_equal(first.images, second.images)


def test_interrupted_cache_write_leaves_nothing_and_keeps_a_good_cache(tmp_path, monkeypatch):
    source = make_synthetic_dataset(tmp_path / "z", as_zip=True, **SMALL)
    cache = tmp_path / "cache"

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt  # as if Ctrl-C hit after images.npy was written

    with monkeypatch.context() as patch:
        patch.setattr(data_cache, "_write_cache_metadata", interrupt)
        with pytest.raises(KeyboardInterrupt):
            load_dataset(source, cache, progress=False)
    assert cache_entries(cache) == []  # no partial entry, no temp dir

    good = load_dataset(source, cache, progress=False)
    make_synthetic_dataset(tmp_path / "z", as_zip=True, **{**SMALL, "seed": 3})  # the source changes
    with monkeypatch.context() as patch:
        patch.setattr(data_cache, "_write_cache_metadata", interrupt)
        with pytest.raises(KeyboardInterrupt):
            load_dataset(source, cache, progress=False)
    assert cache_entries(cache) == [good.cache_path.name]
    assert (good.cache_path / "manifest.json").is_file()
    np.testing.assert_array_equal(np.load(good.cache_path / "images.npy"), good.images)


def test_damaged_cache_is_rebuilt(tmp_path):
    source = small_dataset(tmp_path)
    first = load_dataset(source, tmp_path / "cache", progress=False)
    (first.cache_path / "meta.npz").write_bytes(b"garbage")
    second = load_dataset(source, tmp_path / "cache", progress=False)
    assert not second.from_cache and len(second) == len(first)


# --- bad input ------------------------------------------------------------------------------------

def zip_layout(folder, target):
    """Zip a layout folder the way the official zip is laid out (entries under tiny-imagenet-200/)."""
    with zipfile.ZipFile(target, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, f"tiny-imagenet-200/{path.relative_to(folder).as_posix()}")
    return target


@pytest.mark.parametrize("as_zip", [False, True], ids=["dir", "zip"])
@pytest.mark.parametrize("damage", ["truncated-jpeg", "not-a-jpeg", "empty"])
def test_corrupt_image_error_names_the_file(tmp_path, as_zip, damage):
    source = small_dataset(tmp_path)
    bad = f"train/{synthetic_wnid(2)}/images/{synthetic_wnid(2)}_1.JPEG"
    content = (source / bad).read_bytes()
    broken = {"truncated-jpeg": content[: len(content) // 3], "not-a-jpeg": b"<html>oops</html>",
              "empty": b""}[damage]
    (source / bad).write_bytes(broken)
    if as_zip:
        source = zip_layout(source, tmp_path / "tiny-imagenet-200.zip")
    with pytest.raises(DataError, match=bad) as error:
        load_dataset(source, tmp_path / "cache", progress=False)
    assert "skip_corrupt" in str(error.value)
    assert cache_entries(tmp_path / "cache") == []  # nothing half-written left behind
    dataset = load_dataset(source, tmp_path / "cache", skip_corrupt=True, progress=False)
    assert dataset.corrupt == [bad] and bad not in dataset.paths


def test_skip_corrupt_logs_and_counts(tmp_path, caplog):
    source = make_synthetic_dataset(tmp_path, **{**SMALL, "corrupt": 2})
    with caplog.at_level("WARNING", logger="tinymatch.data"):
        dataset = load_dataset(source, skip_corrupt=True, progress=False)
    expected = [f"train/{synthetic_wnid(c)}/images/{synthetic_wnid(c)}_3.JPEG" for c in (0, 1)]
    assert dataset.corrupt == expected
    assert len(dataset) == 3 * 4 - 2 + 3 + 2 and expected[0] not in dataset.paths
    assert sum("skipping corrupt image" in r.message for r in caplog.records) == 2
    summary = data.summarize(dataset)
    assert summary["corrupt"] == 2 and summary["corrupt_files"] == expected
    assert expected[1] in data.format_summary(summary)
    # The cache remembers them: without skip_corrupt the same data still fails, naming a file.
    with pytest.raises(DataError, match=expected[0]):
        load_dataset(source, progress=False)


def test_missing_wnids_names_the_file(tmp_path):
    source = small_dataset(tmp_path)
    (source / "wnids.txt").unlink()
    with pytest.raises(DataError, match="wnids.txt"):
        load_dataset(source, progress=False)


def test_class_without_images_names_the_folder(tmp_path):
    source = small_dataset(tmp_path)
    wnid = synthetic_wnid(1)
    shutil.rmtree(source / "train" / wnid / "images")
    (source / "train" / wnid / "images").mkdir()
    with pytest.raises(DataError, match=f"train/{wnid}/images"):
        load_dataset(source, progress=False)


def test_unknown_class_in_annotations_names_the_file_and_line(tmp_path):
    source = small_dataset(tmp_path)
    annotations = source / "val" / "val_annotations.txt"
    lines = annotations.read_text().splitlines()
    lines[1] = lines[1].replace(synthetic_wnid(1), "n99999999")
    annotations.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"val_annotations.txt line 2: unknown class 'n99999999'"):
        load_dataset(source, progress=False)


@pytest.mark.parametrize("damage", ["truncated", "not-a-zip"])
def test_bad_zip_names_the_file(tmp_path, damage):
    source = make_synthetic_dataset(tmp_path / "z", as_zip=True, **SMALL)
    content = source.read_bytes()
    source.write_bytes(content[: len(content) // 2] if damage == "truncated" else b"PK but no zip" * 50)
    with pytest.raises(DataError, match="tiny-imagenet-200.zip: not a valid zip file"):
        load_dataset(source, tmp_path / "cache", progress=False)


def test_damaged_zip_member_names_the_member(tmp_path):
    source = make_synthetic_dataset(tmp_path / "z", as_zip=True, **SMALL)
    member = f"tiny-imagenet-200/train/{synthetic_wnid(1)}/images/{synthetic_wnid(1)}_2.JPEG"
    with zipfile.ZipFile(source) as archive:
        info = archive.getinfo(member)
    content = bytearray(source.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    content[start + 200:start + 210] = b"\x00" * 10  # stored member: its CRC no longer matches
    source.write_bytes(bytes(content))
    with pytest.raises(DataError, match=f"{source}:{member}: corrupt or unreadable"):
        load_dataset(source, tmp_path / "cache", progress=False)


def test_missing_dataset_says_how_to_point_at_one(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        load_dataset(tmp_path / "nowhere.zip", progress=False)
    assert "nowhere.zip" in str(error.value) and "TINYMATCH_DATA" in str(error.value)


def test_zip_without_layout_names_wnids(tmp_path):
    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(DataError, match="wnids.txt"):
        load_dataset(path, tmp_path / "cache", progress=False)


# --- summary --------------------------------------------------------------------------------------

def test_summary_counts_and_table(synthetic_dataset):
    summary = data.summarize(synthetic_dataset)
    assert summary["classes"] == 12
    assert summary["images"] == {"train": 288, "val": 24, "test": 4, "total": 316}
    assert summary["per_class"]["train"] == {"min": 24, "max": 24, "mean": 24.0}
    assert summary["grayscale"] == 3 and summary["corrupt"] == 0
    table = data.format_summary(summary)
    assert "classes:   12" in table and "train" in table and "288" in table and "grayscale: 3" in table


# --- splits ---------------------------------------------------------------------------------------

def test_seen_split_is_image_disjoint_inside_every_class(synthetic_dataset):
    splits = make_splits(synthetic_dataset, seed=0, val_fraction=0.2, test_fraction=0.2,
                         unseen_train_classes=8)
    parts = {part: splits.indices("seen", part) for part in ("train", "val", "test")}
    everything = np.concatenate(list(parts.values()))
    assert len(everything) == len(set(everything.tolist())) == 288  # a partition of official train
    assert (synthetic_dataset.subsets[everything] == "train").all()
    for part, rows in parts.items():
        counts = np.bincount(synthetic_dataset.labels[rows], minlength=12)
        assert (counts == {"train": 14, "val": 5, "test": 5}[part]).all()


def test_unseen_split_is_class_disjoint(synthetic_dataset):
    splits = make_splits(synthetic_dataset, seed=0, val_fraction=0.2, test_fraction=0.2,
                         unseen_train_classes=8)
    classes = {part: set(synthetic_dataset.labels[splits.indices("unseen", part)].tolist())
               for part in ("train", "val", "test")}
    assert len(classes["train"]) == 8 and len(classes["val"]) == 2 and len(classes["test"]) == 2
    assert not (classes["train"] & classes["val"]) and not (classes["train"] & classes["test"])
    assert not (classes["val"] & classes["test"])
    official_val = splits.indices("official-val")
    assert (synthetic_dataset.subsets[official_val] == "val").all() and len(official_val) == 24
    assert (splits.seen[official_val] == "").all() and (splits.unseen[official_val] == "").all()


def test_splits_are_deterministic_for_a_seed(synthetic_dataset):
    options = dict(val_fraction=0.2, test_fraction=0.2, unseen_train_classes=8)
    first, again = (make_splits(synthetic_dataset, seed=5, **options) for _ in range(2))
    other = make_splits(synthetic_dataset, seed=6, **options)
    np.testing.assert_array_equal(first.seen, again.seen)
    np.testing.assert_array_equal(first.unseen, again.unseen)
    assert not np.array_equal(first.seen, other.seen)
    assert not np.array_equal(first.unseen, other.unseen)


def test_split_csv_round_trip_and_mismatch(synthetic_dataset, tmp_path):
    splits = make_splits(synthetic_dataset, seed=1, unseen_train_classes=8)
    path = splits.save(tmp_path / "split.csv")
    header = path.read_text().splitlines()[0]
    assert header == "index,path,wnid,label,seen,unseen"
    loaded = data.Splits.load(path, synthetic_dataset)
    np.testing.assert_array_equal(loaded.seen, splits.seen)
    np.testing.assert_array_equal(loaded.unseen, splits.unseen)
    other = load_dataset(small_dataset(tmp_path), progress=False)
    with pytest.raises(DataError, match="split.csv"):
        data.Splits.load(path, other)


def test_split_parameters_are_checked(synthetic_dataset):
    with pytest.raises(ValueError, match="unseen_train_classes"):
        make_splits(synthetic_dataset, seed=0, unseen_train_classes=11)
    with pytest.raises(ValueError, match="val_fraction"):
        make_splits(synthetic_dataset, seed=0, val_fraction=0, unseen_train_classes=8)


def test_splits_for_config_and_official_val_absent(tmp_path):
    dataset = load_dataset(small_dataset(tmp_path, num_classes=6, val_per_class=0), progress=False)
    splits = data.make_splits_for(dataset, Config.from_profile("cpu"))  # 150 classes do not fit 6
    assert len(set(dataset.labels[splits.indices("unseen", "train")].tolist())) == 4
    with pytest.raises(DataError, match="official val"):
        splits.indices("official-val")


def test_load_dataset_for_smoke_config(smoke_config, synthetic_dataset):
    dataset = data.load_dataset_for(smoke_config, progress=False)
    assert dataset.paths == synthetic_dataset.paths


def test_smoke_profile_without_data_uses_synthetic(tmp_path):
    config = Config.from_profile("smoke", cache_dir=str(tmp_path / "cache"))
    dataset = data.load_dataset_for(config, progress=False)
    assert dataset.num_classes == 12 and dataset.wnids[0] == synthetic_wnid(0)


# --- P x K batches --------------------------------------------------------------------------------

def test_pk_batches_have_p_classes_times_k_images(synthetic_dataset):
    stream = data.pk_dataset(synthetic_dataset.images, synthetic_dataset.labels, classes_per_batch=5,
                             images_per_class=3, seed=0)
    for images, labels in stream.take(6):
        assert images.shape == (15, 64, 64, 3) and images.dtype.name == "float32"
        assert labels.dtype.name == "int32"
        values, counts = np.unique(labels.numpy(), return_counts=True)
        assert len(values) == 5 and (counts == 3).all() and (values >= 0).all()
        assert 0 <= float(images.numpy().min()) and float(images.numpy().max()) <= 255


def test_pk_batches_gather_the_right_images():
    images = np.arange(40, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    labels = np.repeat(np.arange(4), 10).astype(np.int32)
    stream = data.pk_dataset(images, labels, classes_per_batch=2, images_per_class=4, seed=3)
    for batch, batch_labels in stream.take(3):
        rows = batch.numpy()[:, 0, 0, 0].astype(int)
        np.testing.assert_array_equal(labels[rows], batch_labels.numpy())


def test_pk_is_seeded_and_an_epoch_ends_without_repeat(synthetic_dataset):
    def label_stream(seed, **kwargs):
        stream = data.pk_dataset(synthetic_dataset.images, synthetic_dataset.labels, classes_per_batch=4,
                                 images_per_class=2, seed=seed, **kwargs)
        return [labels.numpy().tolist() for _, labels in stream.take(4)]

    assert label_stream(1) == label_stream(1) != label_stream(2)
    one_epoch = data.pk_dataset(synthetic_dataset.images, synthetic_dataset.labels, classes_per_batch=4,
                                images_per_class=2, seed=0, repeat=False)
    assert sum(1 for _ in one_epoch) == (288 + 24) // 8


def test_pk_small_classes_are_sampled_with_replacement():
    labels = np.array([0, 1, 1, 1, 2, 2, 2, -1])
    sampler = data.PKSampler(labels, classes_per_batch=3, images_per_class=3, seed=0)
    for _ in range(5):
        rows = sampler.next_batch()
        assert (labels[rows[labels[rows] == 0]] == 0).sum() == 3 and (rows == 0).sum() == 3
        assert -1 not in labels[rows].tolist()


def test_pk_indices_restrict_the_rows(synthetic_dataset):
    splits = make_splits(synthetic_dataset, seed=0, unseen_train_classes=8)
    allowed = splits.indices("unseen", "train")
    sampler = data.PKSampler(synthetic_dataset.labels, classes_per_batch=6, images_per_class=4, seed=0,
                             indices=allowed)
    drawn = np.concatenate([sampler.next_batch() for _ in range(20)])
    assert set(drawn.tolist()) <= set(allowed.tolist())
    with pytest.raises(ValueError, match="classes_per_batch=9"):
        data.PKSampler(synthetic_dataset.labels, classes_per_batch=9, images_per_class=2, seed=0,
                       indices=allowed)


def test_pk_augment_hook(synthetic_dataset):
    import keras

    class Blackout(keras.layers.Layer):
        def call(self, inputs, training=None):
            return inputs * 0.0 if training else inputs

    options = dict(classes_per_batch=2, images_per_class=2, seed=0)
    plain = data.pk_dataset(synthetic_dataset.images, synthetic_dataset.labels, augment=lambda x: x + 1000.0,
                            **options)
    assert float(next(iter(plain))[0].numpy().min()) >= 1000.0
    layered = data.pk_dataset(synthetic_dataset.images, synthetic_dataset.labels, augment=Blackout(), **options)
    assert float(np.abs(next(iter(layered))[0].numpy()).max()) == 0.0  # called with training=True


# --- synthetic data -------------------------------------------------------------------------------

def test_synthetic_classes_are_learnable_and_files_reproducible(synthetic_dataset, tmp_path):
    images = synthetic_dataset.images.astype(np.float32).reshape(len(synthetic_dataset), -1)
    train = synthetic_dataset.subsets == "train"
    val = synthetic_dataset.subsets == "val"
    means = np.stack([images[train & (synthetic_dataset.labels == c)].mean(0) for c in range(12)])
    nearest = np.argmin(((images[val][:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    assert (nearest == synthetic_dataset.labels[val]).mean() >= 0.9  # even raw pixels separate them
    first = make_synthetic_dataset(tmp_path / "a", as_zip=True, **SMALL).read_bytes()
    second = make_synthetic_dataset(tmp_path / "b", as_zip=True, **SMALL).read_bytes()
    assert hashlib.md5(first).digest() == hashlib.md5(second).digest()
    with zipfile.ZipFile(io.BytesIO(first)) as archive:
        assert "tiny-imagenet-200/wnids.txt" in archive.namelist()
        assert "tiny-imagenet-200/test/images/test_0.JPEG" in archive.namelist()


# --- download -------------------------------------------------------------------------------------

PAYLOAD = bytes(range(256)) * 3000  # 768 kB


def test_download_verifies_and_renames(range_server, tmp_path):
    range_server.payload = PAYLOAD
    dest = data.download(tmp_path / "d" / "tiny.zip", url=range_server.url,
                         md5=hashlib.md5(PAYLOAD).hexdigest(), progress=False)
    assert dest.read_bytes() == PAYLOAD and not (tmp_path / "d" / "tiny.zip.part").exists()
    requests = len(range_server.ranges)
    assert data.download(dest, url=range_server.url, md5=hashlib.md5(PAYLOAD).hexdigest()) == dest
    assert len(range_server.ranges) == requests  # already there: nothing fetched


@pytest.mark.parametrize("honour_range", [True, False])
def test_download_resumes_a_partial_file(range_server, tmp_path, honour_range):
    range_server.payload, range_server.honour_range = PAYLOAD, honour_range
    dest = tmp_path / "tiny.zip"
    (tmp_path / "tiny.zip.part").write_bytes(PAYLOAD[:100_000])
    data.download(dest, url=range_server.url, md5=hashlib.md5(PAYLOAD).hexdigest(), progress=False)
    assert range_server.ranges == ["bytes=100000-"]
    assert dest.read_bytes() == PAYLOAD  # appended, or started again when Range was ignored


def test_download_of_a_complete_part_file(range_server, tmp_path):
    range_server.payload = PAYLOAD
    (tmp_path / "tiny.zip.part").write_bytes(PAYLOAD)
    dest = data.download(tmp_path / "tiny.zip", url=range_server.url, md5=hashlib.md5(PAYLOAD).hexdigest(),
                         progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_download_checksum_mismatch_names_the_file(range_server, tmp_path):
    range_server.payload = PAYLOAD
    with pytest.raises(DataError, match=r"tiny.zip.part: md5 checksum mismatch"):
        data.download(tmp_path / "tiny.zip", url=range_server.url, md5="0" * 32, progress=False)
    assert not (tmp_path / "tiny.zip").exists() and not (tmp_path / "tiny.zip.part").exists()


def test_download_without_network_says_how_to_use_a_local_copy(closed_port_url, tmp_path):
    with pytest.raises(data.DownloadError) as error:
        data.download(tmp_path / "tiny.zip", url=closed_port_url, progress=False, timeout=2)
    assert "--data" in str(error.value) and "TINYMATCH_DATA" in str(error.value)
    assert not (tmp_path / "tiny.zip").exists()


def test_joint_protocol_never_judges_a_model_on_what_it_trained_on(synthetic_dataset):
    splits = make_splits(synthetic_dataset, seed=3, val_fraction=0.2, test_fraction=0.2,
                         unseen_train_classes=8)
    labels = synthetic_dataset.labels
    train = splits.indices("joint", "train")
    trained_classes = set(labels[train])
    assert trained_classes == set(labels[splits.indices("unseen", "train")])
    assert set(train) <= set(splits.indices("seen", "train"))
    for part in ("val", "test"):
        seen = splits.evaluation_indices("joint", "seen", part)
        unseen = splits.evaluation_indices("joint", "unseen", part)
        assert len(seen) and len(unseen)
        assert not set(seen) & set(train) and not set(unseen) & set(train)
        assert set(labels[seen]) <= trained_classes  # new images of trained classes
        assert not set(labels[unseen]) & trained_classes  # classes never trained on
        assert set(splits.indices("joint", part)) == set(seen) | set(unseen)


def test_evaluating_a_protocol_the_model_trained_on_is_refused(synthetic_dataset):
    splits = make_splits(synthetic_dataset, seed=3, val_fraction=0.2, test_fraction=0.2,
                         unseen_train_classes=8)
    with pytest.raises(DataError, match="joint"):
        splits.evaluation_indices("seen", "unseen", "test")
    assert np.array_equal(splits.evaluation_indices("seen", "seen", "test"), splits.indices("seen", "test"))
