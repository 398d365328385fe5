"""Hostile and faulty datasets, caches and downloads (issue 13, points 4-8 and 14-18).

Each case ends in a one-line `DataError` (or `ValueError`) naming the file, or in correct output;
nothing hangs, reads without bound or loses what is already written. Inputs are generated here:
small synthetic datasets, zips written entry by entry, FIFOs, symlinks to /dev/zero, file names
that are not UTF-8, and a local HTTP server that cuts its transfers short.
"""

import hashlib
import http.server
import io
import os
import threading
import time
import warnings
import zipfile

import numpy as np
import pytest

from tinymatch import data, rundir
from tinymatch.cli import main
from tinymatch.config import Config
from tinymatch.data import DataError, DownloadError, load_dataset
from tinymatch.data import cache as data_cache
from tinymatch.synthetic import build_layout_files, make_synthetic_dataset, synthetic_wnid

SMALL = dict(num_classes=3, images_per_class=4, val_per_class=1, test_images=2, grayscale=1)
W0 = synthetic_wnid(0)
IMAGE = f"train/{W0}/images/{W0}_1.JPEG"

pytestmark = pytest.mark.timeout(120)  # a hang is a failure, not a stuck suite


def small_dir(tmp_path):
    return make_synthetic_dataset(tmp_path / "src", **SMALL)


def write_zip(path, entries, compression=zipfile.ZIP_STORED):
    """A zip of (name, bytes) entries, exactly as given (duplicates and odd names included)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names: that is the point
        with zipfile.ZipFile(path, "w", compression=compression) as archive:
            for name, content in entries:
                archive.writestr(name, content)
    return path


def layout_entries(**overrides):
    files = build_layout_files(**{**SMALL, **overrides})
    return [(f"tiny-imagenet-200/{name}", content) for name, content in sorted(files.items())]


def load(source, tmp_path, **kwargs):
    return load_dataset(source, tmp_path / "cache", progress=False, **kwargs)


# --- 4. zip entries -------------------------------------------------------------------------------

def test_zip_with_a_duplicate_entry_is_refused_naming_it(tmp_path):
    entries = layout_entries()
    duplicate = next(e for e in entries if e[0].endswith(IMAGE))
    source = write_zip(tmp_path / "dup.zip", entries + [duplicate])
    with pytest.raises(DataError, match=f"'tiny-imagenet-200/{IMAGE}' appears more than once"):
        load(source, tmp_path)


@pytest.mark.parametrize("name", ["/etc/passwd", "tiny-imagenet-200/../../evil.txt"],
                         ids=["absolute", "dot-dot"])
def test_zip_entry_with_an_absolute_or_parent_path_is_refused(tmp_path, name):
    source = write_zip(tmp_path / "slip.zip", layout_entries() + [(name, b"x")])
    with pytest.raises(DataError, match="absolute or '..' path"):
        load(source, tmp_path)


def test_zip_member_declaring_a_huge_size_is_not_read(tmp_path):
    entries = [(n, c) for n, c in layout_entries() if not n.endswith("words.txt")]
    bomb = b"\0" * (data.MAX_METADATA_BYTES + 1)  # deflates to a few kB
    source = write_zip(tmp_path / "bomb.zip", entries + [("tiny-imagenet-200/words.txt", bomb)],
                       compression=zipfile.ZIP_DEFLATED)
    assert source.stat().st_size < 100_000
    with pytest.raises(DataError, match=r"words.txt: 8,388,609 bytes, more than the 8,388,608"):
        load(source, tmp_path)


def test_zip_image_over_the_size_limit_is_corrupt_and_can_be_skipped(tmp_path):
    entries = [(n, b"\xff\xd8" + b"\0" * (data.MAX_IMAGE_BYTES + 1) if n.endswith(IMAGE) else c)
               for n, c in layout_entries()]
    source = write_zip(tmp_path / "big.zip", entries, compression=zipfile.ZIP_DEFLATED)
    with pytest.raises(DataError, match=f"{IMAGE}: corrupt or unreadable image .*more than the 1,048,576"):
        load(source, tmp_path)
    dataset = load(source, tmp_path, skip_corrupt=True)
    assert dataset.corrupt == [IMAGE]


# --- 5. symlink loops, and symlinks that are fine ---------------------------------------------------

def test_symlink_loop_of_a_file_is_a_clear_error(tmp_path):
    source = small_dir(tmp_path)
    loop = source / "train" / W0 / "images" / "loop.JPEG"
    os.symlink(loop.name, loop)  # points at itself
    with pytest.raises(DataError, match=f"{loop}: symbolic link loop"):
        load(source, tmp_path)


def test_symlink_loop_of_a_folder_is_a_clear_error(tmp_path):
    source = small_dir(tmp_path)
    back = source / "train" / W0 / "images" / "again"
    os.symlink("../..", back)  # leads back to train/
    with pytest.raises(DataError, match=f"{back}: symbolic link loop \\(it leads back to .*train\\)"):
        load(source, tmp_path)


def test_dataset_made_of_symlinks_loads_like_the_original(tmp_path):
    source = small_dir(tmp_path)
    farm = tmp_path / "farm" / "tiny-imagenet-200"
    farm.mkdir(parents=True)
    for entry in source.iterdir():
        os.symlink(entry, farm / entry.name)  # files and folders, followed
    original = load(source, tmp_path)
    linked = load(farm, tmp_path)
    assert linked.paths == original.paths
    np.testing.assert_array_equal(linked.images, original.images)


def test_broken_symlink_names_the_file(tmp_path):
    source = small_dir(tmp_path)
    broken = source / "train" / W0 / "images" / "gone.JPEG"
    os.symlink(tmp_path / "nowhere.JPEG", broken)
    with pytest.raises(DataError, match=f"{broken}: broken symbolic link"):
        load(source, tmp_path)


# --- 6. file names that are not UTF-8 ---------------------------------------------------------------

def test_file_name_that_is_not_utf8_is_named(tmp_path, capsys):
    source = small_dir(tmp_path)
    bad = os.path.join(os.fsencode(source / "train" / W0 / "images"), b"caf\xe9.JPEG")
    try:
        with open(bad, "wb") as handle:
            handle.write((source / IMAGE).read_bytes())
    except OSError:
        pytest.skip("this file system refuses names that are not UTF-8")
    with pytest.raises(DataError, match=r"caf\\xe9.JPEG'?: file name is not valid UTF-8"):
        load(source, tmp_path)
    assert main(["-q", "data", "--data", str(source), "--cache-dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert "caf\\xe9.JPEG" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


# --- 7. special files: /dev/zero and friends, and size limits --------------------------------------

@pytest.mark.parametrize("target", [IMAGE, "words.txt", "wnids.txt", f"train/{W0}/{W0}_boxes.txt"])
def test_file_symlinked_to_dev_zero_is_refused(tmp_path, target):
    source = small_dir(tmp_path)
    (source / target).unlink()
    os.symlink("/dev/zero", source / target)
    started = time.monotonic()
    with pytest.raises(DataError, match=f"{target}: a character device, not a regular file"):
        load(source, tmp_path)
    assert time.monotonic() - started < 30


def test_dataset_path_that_is_a_device_is_refused(tmp_path):
    os.symlink("/dev/zero", tmp_path / "tiny-imagenet-200.zip")
    with pytest.raises(DataError, match="tiny-imagenet-200.zip: a character device, not a dataset"):
        load(tmp_path / "tiny-imagenet-200.zip", tmp_path)


def test_oversized_metadata_file_is_refused_without_reading_it(tmp_path):
    source = small_dir(tmp_path)
    with open(source / "words.txt", "r+b") as handle:
        handle.truncate(64 << 30)  # a sparse 64 GB file: reading it would take minutes
    with pytest.raises(DataError, match="words.txt: 68,719,476,736 bytes, more than"):
        load(source, tmp_path)


def test_oversized_image_file_is_corrupt_and_can_be_skipped(tmp_path):
    source = small_dir(tmp_path)
    with open(source / IMAGE, "r+b") as handle:
        handle.truncate(data.MAX_IMAGE_BYTES + 1)
    with pytest.raises(DataError, match=f"{IMAGE}: corrupt or unreadable image"):
        load(source, tmp_path)
    assert load(source, tmp_path, skip_corrupt=True).corrupt == [IMAGE]


def huge_declared_jpeg(source_jpeg: bytes, side: int = 60000) -> bytes:
    """The JPEG with its frame header (SOF0) claiming side x side pixels."""
    marker = source_jpeg.index(b"\xff\xc0")
    content = bytearray(source_jpeg)
    content[marker + 5:marker + 9] = side.to_bytes(2, "big") * 2
    return bytes(content)


def huge_declared_png(side: int = 50000) -> bytes:
    """A PNG header claiming side x side pixels, with a tiny body."""
    import struct
    import zlib

    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


@pytest.mark.parametrize("kind", ["jpeg", "png"])
def test_image_declaring_a_huge_size_is_refused_before_decoding(tmp_path, kind):
    source = small_dir(tmp_path)
    bomb = huge_declared_jpeg((source / IMAGE).read_bytes()) if kind == "jpeg" else huge_declared_png()
    (source / IMAGE).write_bytes(bomb)
    with pytest.raises(DataError, match=f"{IMAGE}: corrupt or unreadable image .*pixels"):
        load(source, tmp_path)


# --- 8. FIFOs and other non-files inside a dataset -------------------------------------------------

@pytest.mark.timeout(60)
@pytest.mark.parametrize("target", [IMAGE, "wnids.txt", "val/val_annotations.txt"])
def test_fifo_inside_a_dataset_is_refused_without_hanging(tmp_path, target):
    source = small_dir(tmp_path)
    (source / target).unlink()
    os.mkfifo(source / target)
    with pytest.raises(DataError, match=f"{target}: a FIFO, not a regular file"):
        load(source, tmp_path)


@pytest.mark.timeout(60)
def test_fifo_given_as_the_dataset_is_refused(tmp_path):
    os.mkfifo(tmp_path / "fifo.zip")
    with pytest.raises(DataError, match="fifo.zip: a FIFO, not a dataset"):
        load(tmp_path / "fifo.zip", tmp_path)


@pytest.mark.timeout(60)
def test_read_regular_file_refuses_a_fifo_and_a_socket(tmp_path):
    import socket

    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(DataError, match="a FIFO"):
        data.layout.read_regular_file(tmp_path / "fifo", 100)
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(tmp_path / "sock"))
        with pytest.raises(DataError, match="a socket"):
            data.layout.read_regular_file(tmp_path / "sock", 100)


# --- more shapes of a broken layout ----------------------------------------------------------------

def test_image_that_is_a_folder_is_named(tmp_path):
    source = small_dir(tmp_path)
    (source / f"train/{W0}/images/{W0}_99.JPEG").mkdir()
    with pytest.raises(DataError, match=f"{W0}_99.JPEG: is a folder, expected an image file"):
        load(source, tmp_path)


def test_metadata_file_that_is_a_folder_is_named(tmp_path):
    source = small_dir(tmp_path)
    (source / "words.txt").unlink()
    (source / "words.txt").mkdir()
    with pytest.raises(DataError, match="words.txt: is a folder, expected a text file"):
        load(source, tmp_path)


@pytest.mark.parametrize("content", [b"", b"\n \n\t\n"], ids=["empty", "blank-lines"])
def test_empty_wnids_is_refused(tmp_path, content):
    source = small_dir(tmp_path)
    (source / "wnids.txt").write_bytes(content)
    with pytest.raises(DataError, match="wnids.txt: no class ids in it"):
        load(source, tmp_path)


def test_wnid_that_is_a_path_is_refused(tmp_path):
    source = small_dir(tmp_path)
    (source / "wnids.txt").write_text(f"{W0}\n../../etc\n")
    with pytest.raises(DataError, match="'../../etc' is not a class id"):
        load(source, tmp_path)


# --- 17, 18. the cache under concurrency and after a kill ------------------------------------------

def test_leftover_of_a_killed_decode_is_removed_at_the_next_build(tmp_path):
    source = small_dir(tmp_path)
    cache = tmp_path / "cache"
    leftover = cache / ".tiny-imagenet-200-0123456789abcdef.k1ll3d.tmp"
    (leftover).mkdir(parents=True)
    (leftover / "images.npy").write_bytes(b"\0" * 1000)  # fresh: the old rule kept it for 6 hours
    unrelated = cache / ".notes.tmp"
    unrelated.write_text("not ours")
    dataset = load(source, tmp_path)
    assert not leftover.exists() and unrelated.exists()
    assert not dataset.from_cache


KILLED_DECODE = """
import os, signal, sys
from tinymatch.data import cache
cache._write_cache_metadata = lambda *args: os.kill(os.getpid(), signal.SIGKILL)  # after images.npy
cache.load_dataset(sys.argv[1], sys.argv[2], progress=False)
"""


def test_a_decode_killed_for_real_leaves_a_temporary_that_the_next_build_removes(tmp_path):
    import subprocess
    import sys

    source = small_dir(tmp_path)
    cache = tmp_path / "cache"
    killed = subprocess.run([sys.executable, "-c", KILLED_DECODE, str(source), str(cache)],
                            capture_output=True, timeout=100)
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    leftovers = [p for p in cache.iterdir() if p.name.endswith(".tmp")]
    assert len(leftovers) == 1 and (leftovers[0] / "images.npy").is_file()
    dataset = load(source, tmp_path)
    assert not dataset.from_cache and not leftovers[0].exists()
    assert sorted(p.name for p in cache.iterdir()) == [".lock", dataset.cache_path.name]


def test_a_second_cold_decode_waits_for_the_first_and_reuses_its_cache(tmp_path, monkeypatch):
    source = small_dir(tmp_path)
    calls = []
    real_decode = data_cache.decode_into

    def slow_decode(*args, **kwargs):
        calls.append(threading.current_thread().name)
        time.sleep(1.0)  # long enough for the second load to find the lock taken
        return real_decode(*args, **kwargs)

    monkeypatch.setattr(data_cache, "decode_into", slow_decode)
    results = {}

    def run(name):
        results[name] = load(source, tmp_path)

    first = threading.Thread(target=run, args=("first",), name="first")
    first.start()
    while not calls:
        time.sleep(0.02)
    second = threading.Thread(target=run, args=("second",), name="second")
    second.start()
    first.join(60)
    second.join(60)
    assert calls == ["first"]  # decoded once
    assert not results["first"].from_cache and results["second"].from_cache
    np.testing.assert_array_equal(results["first"].images, results["second"].images)


def test_a_cache_locked_for_too_long_names_the_holder(tmp_path, monkeypatch):
    source = small_dir(tmp_path)
    monkeypatch.setattr(data_cache, "CACHE_LOCK_WAIT_SECONDS", 0.3)
    with rundir.locked(tmp_path / "cache", what="decoded-image cache"):
        with pytest.raises(DataError, match=f"decoded-image cache is in use by process {os.getpid()}"):
            load(source, tmp_path)
    assert not load(source, tmp_path).from_cache  # the lock is released: it builds


# --- the one synthetic-data policy -----------------------------------------------------------------

def test_synthetic_data_lives_in_the_cache_keyed_by_its_parameters(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYMATCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    smoke = Config.from_profile("smoke")
    assert data.uses_synthetic_data(smoke)
    path = data.data_path_for(smoke)
    assert path.is_relative_to(tmp_path / "cache" / data.SYNTHETIC_DATA_DIR) and data.is_synthetic(path)
    assert (path / "wnids.txt").is_file() and not (tmp_path / "data").exists()
    assert data.synthetic_data_path(smoke) == path  # reused, not written again
    smaller_config = smoke.replace(max_classes=7, max_images_per_class=10, unseen_train_classes=3)
    smaller = data.synthetic_data_path(smaller_config)
    assert smaller != path and len((smaller / "wnids.txt").read_text().split()) == 7
    assert data.synthetic_data_path(smoke.replace(seed=2)) != path
    cpu_synthetic = Config.from_profile("cpu", data="synthetic")
    assert data.uses_synthetic_data(cpu_synthetic) and data.is_synthetic(data.data_path_for(cpu_synthetic))


def test_tinymatch_data_overrides_the_smoke_synthetic_data(tmp_path, monkeypatch, synthetic_dir):
    monkeypatch.setenv("TINYMATCH_DATA", str(synthetic_dir))
    smoke = Config.from_profile("smoke")
    assert not data.uses_synthetic_data(smoke) and data.data_path_for(smoke) == synthetic_dir
    assert data.data_path_for(smoke.replace(data=str(tmp_path))) == tmp_path


# --- 14-16. downloads -------------------------------------------------------------------------------

def zip_payload():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("tiny-imagenet-200/wnids.txt", "n01\n")
        archive.writestr("tiny-imagenet-200/filler.bin", bytes(range(256)) * 800)
    return buffer.getvalue()


class CuttingServer:
    """Serves `payload` honouring Range, but sends only the first `cut` bytes of the next response
    while declaring the full Content-Length (a connection dropped mid-transfer)."""

    def __init__(self):
        owner = self
        self.payload, self.cut = b"", None

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                start = 0
                header = self.headers.get("Range")
                if header:
                    start = int(header.split("=")[1].split("-")[0])
                    if start >= len(owner.payload):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(owner.payload)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    size = len(owner.payload)
                    self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
                else:
                    self.send_response(200)
                body = owner.payload[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if owner.cut is not None:
                    body, owner.cut = body[:owner.cut], None
                    self.close_connection = True
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/tiny-imagenet-200.zip"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def cutting_server():
    server = CuttingServer()
    yield server
    server.close()


@pytest.mark.parametrize("with_md5", [True, False], ids=["md5", "no-md5"])
def test_truncated_transfer_is_caught_and_resumed(cutting_server, tmp_path, with_md5):
    payload = zip_payload()
    cutting_server.payload, cutting_server.cut = payload, len(payload) // 3
    md5 = hashlib.md5(payload).hexdigest() if with_md5 else None
    dest = tmp_path / "tiny.zip"
    with pytest.raises(DownloadError, match=f"truncated: {len(payload) // 3:,} of {len(payload):,} bytes.*resume"):
        data.download(dest, url=cutting_server.url, md5=md5, progress=False)
    part = tmp_path / "tiny.zip.part"
    assert part.read_bytes() == payload[:len(payload) // 3] and not dest.exists()  # kept to resume
    assert data.download(dest, url=cutting_server.url, md5=md5, progress=False) == dest
    assert dest.read_bytes() == payload and not part.exists()


def test_md5_in_upper_case_is_accepted_and_a_good_file_kept(cutting_server, tmp_path):
    payload = zip_payload()
    cutting_server.payload = payload
    upper = "  " + hashlib.md5(payload).hexdigest().upper() + "\n"
    dest = data.download(tmp_path / "tiny.zip", url=cutting_server.url, md5=upper, progress=False)
    assert dest.read_bytes() == payload
    assert data.download(dest, url=cutting_server.url, md5=upper, progress=False) == dest
    with pytest.raises(DataError, match="exists but its md5 is"):
        data.download(dest, url=cutting_server.url, md5="0" * 32, progress=False)
    assert dest.read_bytes() == payload  # never deleted


def test_md5_mismatch_keeps_the_bytes_aside(cutting_server, tmp_path):
    cutting_server.payload = zip_payload()
    with pytest.raises(DataError, match="tiny.zip.part: md5 checksum mismatch.*kept as .*tiny.zip.rejected"):
        data.download(tmp_path / "tiny.zip", url=cutting_server.url, md5="f" * 32, progress=False)
    assert (tmp_path / "tiny.zip.rejected").read_bytes() == cutting_server.payload
    assert not (tmp_path / "tiny.zip.part").exists()  # the next run starts afresh


def test_malformed_md5_is_refused(tmp_path):
    with pytest.raises(ValueError, match="md5='abc': expected 32 hexadecimal digits"):
        data.download(tmp_path / "t.zip", url="http://127.0.0.1:9/t.zip", md5="abc", progress=False)


@pytest.mark.parametrize("url", ["file:///etc/hostname", "ftp://example.org/t.zip", "/etc/hostname"])
def test_only_http_urls(tmp_path, url):
    with pytest.raises(ValueError, match="only http:// and https:// URLs"):
        data.download(tmp_path / "t.zip", url=url, md5=None, progress=False)
    assert not list(tmp_path.iterdir())


def test_existing_junk_is_not_a_dataset_without_a_checksum(tmp_path, capsys):
    junk = tmp_path / "tiny-imagenet-200.zip"
    junk.write_bytes(b"8 bytes!")
    with pytest.raises(DataError, match="exists but is not a zip file"):
        data.download(junk, url="http://127.0.0.1:9/t.zip", md5=None, progress=False)
    assert junk.read_bytes() == b"8 bytes!"
    argv = ["-q", "download", "--data", str(junk), "--url", "http://127.0.0.1:9/t.zip", "--md5", "none"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "not a zip file" in err and "verified" not in err and "Traceback" not in err


def test_download_without_checksum_says_not_verified(cutting_server, tmp_path, capsys):
    cutting_server.payload = zip_payload()
    argv = ["-q", "download", "--data", str(tmp_path / "t.zip"), "--url", cutting_server.url, "--md5", "none"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "downloaded, NOT verified (no checksum given)" in out and "and verified" not in out


def test_download_of_something_that_is_not_a_zip_without_checksum_is_rejected(cutting_server, tmp_path):
    cutting_server.payload = b"<html>captive portal</html>"
    with pytest.raises(DataError, match="downloaded, but it is not a zip file"):
        data.download(tmp_path / "t.zip", url=cutting_server.url, md5=None, progress=False)
    assert not (tmp_path / "t.zip").exists()
    assert (tmp_path / "t.zip.rejected").read_bytes() == cutting_server.payload


@pytest.mark.timeout(30)
@pytest.mark.parametrize("which", ["dest", "part"])
def test_download_destination_that_is_not_a_file_is_refused(tmp_path, which):
    dest = tmp_path / "t.zip"
    os.mkfifo(dest if which == "dest" else tmp_path / "t.zip.part")
    with pytest.raises(DataError, match="exists and is not a file"):
        data.download(dest, url="http://127.0.0.1:9/t.zip", md5=None, progress=False)
