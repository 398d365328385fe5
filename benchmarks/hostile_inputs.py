"""Run the hostile-input corpus against the `tinymatch` command line and count the outcomes.

Every input is generated on the fly in a temporary folder (nothing large is committed). Each case runs
the CLI in its own process, as a user would, and is judged:

- clean: an expected error ended with a non-zero status and a one-line `tinymatch ...: error` message
  (no Python traceback, the named file or field in it where the case says so), or an expected success
  ended with status 0 and correct output;
- failed: anything else: a traceback, a crash (signal), a hang (past the per-case timeout), a peak
  memory above the budget, a wrong answer, or success where an error was due.

    python benchmarks/hostile_inputs.py [--only images,datasets,config,download,models] [--json OUT]

`--lib DIR` runs another checkout's library (e.g. an older commit's `lib/`), to count before and after
on the same corpus. The corpus imports nothing from tinymatch itself.
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
MEMORY_BUDGET_MB = 3000  # peak RSS of one CLI process; TensorFlow alone takes ~1 GB
WRAPPER = r"""
import json, resource, subprocess, sys
cmd, timeout = json.loads(sys.argv[1]), float(sys.argv[2])
try:
    done = subprocess.run(cmd, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    rc, out, err = done.returncode, done.stdout, done.stderr
except subprocess.TimeoutExpired as exc:
    rc, out, err = "timeout", exc.stdout or b"", exc.stderr or b""
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps({"rc": rc, "out": out.decode(errors="replace")[-4000:],
                  "err": err.decode(errors="replace")[-4000:], "peak_mb": peak}))
"""


@dataclass
class Case:
    group: str
    name: str
    args: list[str]
    expect: str  # "error" or "ok"
    names: str = ""  # text the error must contain (the file or field at fault)
    check: Callable[[str, str], str] | None = None  # (stdout, stderr) -> "" or what is wrong
    timeout: float = 120.0
    env: dict = field(default_factory=dict)


# --- generated inputs -------------------------------------------------------------------------------

def _jpeg(color, size=64, mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (size, size), color).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def layout_files(classes: int = 4, images: int = 8) -> dict[str, bytes]:
    """A tiny official layout: wnids.txt, words.txt, train/<wnid>/images/*.JPEG, boxes."""
    rng = np.random.default_rng(0)
    wnids = [f"n{10000000 + c:08d}" for c in range(classes)]
    files = {"wnids.txt": "".join(w + "\n" for w in wnids).encode(),
             "words.txt": "".join(f"{w}\tclass {c}\n" for c, w in enumerate(wnids)).encode()}
    for c, wnid in enumerate(wnids):
        boxes = []
        for i in range(images):
            pixels = np.clip(rng.normal(60 * c, 30, (64, 64, 3)), 0, 255).astype(np.uint8)
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, "JPEG")
            files[f"train/{wnid}/images/{wnid}_{i}.JPEG"] = buffer.getvalue()
            boxes.append(f"{wnid}_{i}.JPEG\t0\t0\t63\t63")
        files[f"train/{wnid}/{wnid}_boxes.txt"] = ("\n".join(boxes) + "\n").encode()
    return files


def write_dir(root: Path, files: dict[str, bytes]) -> Path:
    top = root / "tiny-imagenet-200"
    for name, data in files.items():
        path = top / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return top


def write_zip(path: Path, files: dict[str, bytes], extra: list[tuple[str, bytes]] = ()) -> Path:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names are the point of one case
        with zipfile.ZipFile(path, "w") as archive:
            for name, data in files.items():
                archive.writestr(f"tiny-imagenet-200/{name}", data)
            for name, data in extra:
                archive.writestr(name, data)
    return path


def png_bomb(path: Path, width: int = 100_000, height: int = 100_000) -> Path:
    """A valid PNG header declaring a huge image over a tiny compressed body."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = zlib.compress(b"\x00" * 1024)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


def sixteen_bit(path: Path, base: np.ndarray, fmt: str) -> Path:
    Image.fromarray(base.astype(np.uint16) * 257).save(path, fmt)
    return path


def keras_like_zip(path: Path, config: dict | None) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        if config is not None:
            archive.writestr("config.json", json.dumps(config))
            archive.writestr("metadata.json", json.dumps({"keras_version": "3.0.0"}))
        archive.writestr("model.weights.h5", b"not weights")
    return path


# --- the download server ------------------------------------------------------------------------------

class _Server:
    def __init__(self, payload: bytes):
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                if self.path.startswith("/good"):
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(outer.payload)))
                    self.end_headers()
                    self.wfile.write(outer.payload)
                elif self.path.startswith("/truncated"):
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(outer.payload)))
                    self.end_headers()
                    self.wfile.write(outer.payload[: len(outer.payload) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                else:
                    self.send_error(404)

            def log_message(self, *args):
                pass

        self.payload = payload
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- the corpus ----------------------------------------------------------------------------------------

def build_corpus(work: Path, server: _Server, payload_md5: str) -> list[Case]:
    cases: list[Case] = []
    model = str(REPO / "reports" / "reference" / "siamese.keras")
    good = work / "good.jpg"
    good.write_bytes(_jpeg((120, 60, 30)))

    # Images given to `tinymatch match`.
    def image_case(name, path, expect="error", check=None, names=""):
        cases.append(Case("images", name, ["match", "--model", model, str(good), str(path), "--json"],
                          expect, names=names or (Path(path).name if expect == "error" else ""), check=check))

    def matches_itself(out, err):
        try:
            result = json.loads(out)
        except json.JSONDecodeError:
            return f"no JSON on stdout: {out[-200:]!r}"
        return "" if result.get("distance", 9) < 0.05 else f"distance {result.get('distance')} to its 8-bit twin"

    images = work / "images"
    images.mkdir()
    image_case("decompression-bomb PNG", png_bomb(images / "bomb.png"))
    Image.new("1", (12_000, 12_000)).save(images / "144mp.png")
    image_case("144-megapixel PNG (over the pixel budget)", images / "144mp.png")
    os.mkfifo(images / "fifo.jpg")
    image_case("FIFO", images / "fifo.jpg")
    (images / "zero.jpg").symlink_to("/dev/zero")
    image_case("symlink to /dev/zero", images / "zero.jpg")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(images / "socket.jpg"))
    image_case("UNIX socket", images / "socket.jpg")
    (images / "folder.jpg").mkdir()
    image_case("directory", images / "folder.jpg")
    (images / "empty.jpg").write_bytes(b"")
    image_case("empty file", images / "empty.jpg")
    (images / "truncated.jpg").write_bytes(_jpeg((1, 2, 3))[:300])
    image_case("truncated JPEG", images / "truncated.jpg")
    (images / "text.png").write_text("this is not an image\n")
    image_case("text file named .png", images / "text.png")
    image_case("missing file", images / "missing.jpg")
    gray = np.tile(np.arange(64, dtype=np.uint8)[None, :] * 4, (64, 1))
    Image.fromarray(gray).save(images / "gray8.png")
    cases.append(Case("images", "16-bit grayscale PNG matches its 8-bit twin",
                      ["match", "--model", model, str(images / "gray8.png"),
                       str(sixteen_bit(images / "gray16.png", gray, "PNG")), "--json"], "ok", check=matches_itself))
    cases.append(Case("images", "16-bit TIFF matches its 8-bit twin",
                      ["match", "--model", model, str(images / "gray8.png"),
                       str(sixteen_bit(images / "gray16.tif", gray, "TIFF")), "--json"], "ok", check=matches_itself))
    Image.fromarray(gray.astype(np.float32) / 255).save(images / "float.tif")
    image_case("32-bit float TIFF", images / "float.tif", expect="ok")
    (images / "cmyk.jpg").write_bytes(_jpeg((10, 20, 30, 40), mode="CMYK"))
    image_case("CMYK JPEG", images / "cmyk.jpg", expect="ok")
    Image.new("P", (64, 64), 3).save(images / "palette.png")
    image_case("palette PNG", images / "palette.png", expect="ok")
    Image.new("RGBA", (64, 64), (1, 2, 3, 0)).save(images / "rgba.png")
    image_case("RGBA PNG", images / "rgba.png", expect="ok")
    frames = [Image.new("P", (64, 64), k) for k in range(3)]
    frames[0].save(images / "animated.gif", save_all=True, append_images=frames[1:])
    image_case("animated GIF", images / "animated.gif", expect="ok")
    Image.new("RGB", (1, 1), (9, 9, 9)).save(images / "one.png")
    image_case("1x1 image", images / "one.png", expect="ok")
    Image.new("RGB", (4000, 2), (9, 9, 9)).save(images / "sliver.png")
    image_case("4000x2 sliver", images / "sliver.png", expect="ok")

    # Model files given to `tinymatch match`.
    def model_case(name, path):
        cases.append(Case("models", name, ["match", "--model", str(path), str(good), str(good)], "error",
                          names=Path(path).name))

    models = work / "models"
    models.mkdir()
    model_case("missing model file", models / "missing.keras")
    (models / "text.keras").write_text("hello")
    model_case("text file as model", models / "text.keras")
    model_case("zip that is not a Keras archive", keras_like_zip(models / "plain.keras", None))
    model_case("config naming an arbitrary class", keras_like_zip(models / "evil.keras", {
        "module": "os", "class_name": "system", "config": {"command": "touch /tmp/pwned"}, "registered_name": None}))
    model_case("model given as a directory", models)

    # Datasets given to `tinymatch data`.
    base = layout_files()

    def data_case(name, path, expect="error", names="", extra=()):
        cache = work / "cache" / name.replace(" ", "-").replace("/", "-")
        cases.append(Case("datasets", name, ["-q", "data", "--data", str(path), "--cache-dir", str(cache), *extra],
                          expect, names=names))

    data_root = work / "datasets"
    data_case("valid directory", write_dir(data_root / "valid", base), expect="ok")
    data_case("valid zip", write_zip(data_root / "valid.zip", base), expect="ok")
    wnid0 = "n10000000"
    dup = f"tiny-imagenet-200/train/{wnid0}/images/{wnid0}_0.JPEG"
    data_case("zip with a duplicate entry", write_zip(data_root / "dup.zip", base, [(dup, _jpeg(9))]),
              names=f"{wnid0}_0.JPEG")
    data_case("zip-slip entry", write_zip(data_root / "slip.zip", base, [("../../evil.txt", b"x")]))
    data_case("absolute-path entry", write_zip(data_root / "abs.zip", base, [("/tmp/evil.txt", b"x")]))
    loop = write_dir(data_root / "loop", base)
    (loop / "train" / wnid0 / "images" / "loop").symlink_to(loop / "train" / wnid0 / "images" / "loop")
    data_case("symlink loop in a directory dataset", loop, names="loop")
    cycle = write_dir(data_root / "cycle", base)
    (cycle / "train" / wnid0 / "images" / "up").symlink_to(cycle / "train")
    data_case("symlink to an ancestor folder", cycle)
    bad_name = write_dir(data_root / "badname", base)
    bad_bytes = os.fsencode(str(bad_name / "train" / wnid0 / "images")) + b"/bad\xff\xfe.JPEG"
    with open(bad_bytes, "wb") as handle:
        handle.write(_jpeg(5))
    data_case("file name that is not UTF-8", bad_name, names="bad")
    zero_img = write_dir(data_root / "zeroimg", base)
    target = zero_img / "train" / wnid0 / "images" / f"{wnid0}_3.JPEG"
    target.unlink()
    target.symlink_to("/dev/zero")
    data_case("image symlinked to /dev/zero", zero_img, names=f"{wnid0}_3.JPEG")
    zero_words = write_dir(data_root / "zerowords", base)
    (zero_words / "words.txt").unlink()
    (zero_words / "words.txt").symlink_to("/dev/zero")
    data_case("words.txt symlinked to /dev/zero", zero_words, names="words.txt")
    fifo = write_dir(data_root / "fifo", base)
    os.mkfifo(fifo / "train" / wnid0 / "images" / "pipe.JPEG")
    data_case("FIFO inside a directory dataset", fifo, names="pipe.JPEG")
    huge_words = write_dir(data_root / "hugewords", base)
    with open(huge_words / "words.txt", "ab") as handle:
        handle.truncate(200 * 1024 * 1024)  # sparse: 200 MB declared, no disk used
    data_case("200 MB words.txt", huge_words, names="words.txt")
    no_wnids = write_dir(data_root / "nownids", {k: v for k, v in base.items() if k != "wnids.txt"})
    data_case("no wnids.txt", no_wnids, names="wnids.txt")
    data_case("empty wnids.txt", write_dir(data_root / "emptywnids", {**base, "wnids.txt": b""}), names="wnids.txt")
    data_case("wnids.txt naming a missing class",
              write_dir(data_root / "extrawnid", {**base, "wnids.txt": base["wnids.txt"] + b"n99999999\n"}),
              names="n99999999")
    corrupt = write_dir(data_root / "corrupt", {**base, f"train/{wnid0}/images/{wnid0}_1.JPEG": b"garbage"})
    data_case("corrupt image", corrupt, names=f"{wnid0}_1.JPEG")
    data_case("corrupt image with --skip-corrupt", corrupt, expect="ok", extra=["--skip-corrupt"])
    (data_root / "notzip.zip").write_bytes(b"PK\x03\x04 junk")
    data_case("junk named .zip", data_root / "notzip.zip", names="notzip.zip")
    data_case("missing path", data_root / "missing", names="missing")
    big_image = write_dir(data_root / "bigimage", base)
    with open(big_image / "train" / wnid0 / "images" / f"{wnid0}_2.JPEG", "ab") as handle:
        handle.truncate(64 * 1024 * 1024)  # sparse 64 MB "JPEG"
    data_case("64 MB image file", big_image, names=f"{wnid0}_2.JPEG")

    # Configurations given to `tinymatch train`.
    small = {"profile": "smoke", "epochs": 1, "steps_per_epoch": 1}
    configs = work / "configs"
    configs.mkdir()
    valid_data = str(data_root / "valid" / "tiny-imagenet-200")

    def config_case(name, values=None, raw=None, names="", path=None, out=None):
        if path is None:
            path = configs / f"{len(cases)}.json"
            path.write_text(raw if raw is not None else json.dumps({**small, **values}))
        out = out or str(work / "runs" / f"{len(cases)}")
        cases.append(Case("config", name, ["-q", "train", "--config", str(path), "--data", valid_data,
                                           "--out", out], "error", names=names, timeout=180))

    config_case("--config is a directory", path=configs, names=configs.name)
    config_case("--config missing", path=configs / "missing.json", names="missing.json")
    config_case("not JSON", raw="{epochs: 1", names=".json")
    config_case("a JSON list", raw="[1, 2]", names=".json")
    config_case("unknown field", {"epochz": 3}, names="epochz")
    config_case("margin NaN", raw=json.dumps({**small, "margin": float("nan")}), names="margin")
    config_case("margin infinite", raw=json.dumps({**small, "margin": float("inf")}), names="margin")
    config_case("learning_rate NaN", raw=json.dumps({**small, "learning_rate": float("nan")}), names="learning_rate")
    config_case("augment 'maybe'", {"augment": "maybe"}, names="augment")
    config_case("augment [0]", {"augment": [0]}, names="augment")
    config_case("epochs true", {"epochs": True}, names="epochs")
    config_case("epochs 2.5", {"epochs": 2.5}, names="epochs")
    config_case("width '32'", {"width": "32"}, names="width")
    config_case("eval_batch_size 0", {"eval_batch_size": 0}, names="eval_batch_size")
    config_case("bootstrap_samples -5", {"bootstrap_samples": -5}, names="bootstrap_samples")
    config_case("retrieval_top_k 0", {"retrieval_top_k": 0}, names="retrieval_top_k")
    config_case("weight_decay negative", {"weight_decay": -0.1}, names="weight_decay")
    config_case("dropout 1.5", {"dropout": 1.5}, names="dropout")
    config_case("max_positive_pairs 0", {"max_positive_pairs": 0}, names="max_positive_pairs")
    config_case("profile unknown", {"profile": "laptop"}, names="profile")
    existing = work / "a-file"
    existing.write_text("x")
    config_case("--out is an existing file", {}, out=str(existing), names="a-file")

    # Downloads.
    def download_case(name, url, md5, expect="error", check=None, dest=None, names=""):
        dest = dest or work / "downloads" / f"{len(cases)}" / "tiny-imagenet-200.zip"
        dest.parent.mkdir(parents=True, exist_ok=True)
        cases.append(Case("download", name, ["-q", "download", "--data", str(dest), "--url", url, "--md5", md5],
                          expect, check=check, names=names))

    def says_not_verified(out, err):
        text = (out + err).lower()
        return "" if "not verified" in text else "a download without a checksum must say 'not verified'"

    download_case("good, md5 lower case", f"{server.url}/good.zip", payload_md5, expect="ok")
    download_case("good, md5 upper case", f"{server.url}/good.zip", payload_md5.upper(), expect="ok")
    download_case("good, --md5 none", f"{server.url}/good.zip", "none", expect="ok", check=says_not_verified)
    download_case("truncated, --md5 none", f"{server.url}/truncated.zip", "none")
    part_dest = work / "downloads" / "part" / "tiny-imagenet-200.zip"
    part_dest.parent.mkdir(parents=True)

    def part_kept(out, err):
        return "" if part_dest.with_name(part_dest.name + ".part").exists() else "the .part file was deleted"

    cases.append(Case("download", "truncated, with md5 (keeps .part)",
                      ["-q", "download", "--data", str(part_dest), "--url", f"{server.url}/truncated.zip",
                       "--md5", payload_md5], "error", check=part_kept))
    download_case("wrong md5", f"{server.url}/good.zip", "0" * 32)
    download_case("file:// URL", "file:///etc/hostname", "none", names="file://")
    download_case("404", f"{server.url}/missing.zip", "none")
    download_case("closed port", f"http://127.0.0.1:{_closed_port()}/x.zip", "none")
    junk = work / "downloads" / "junk" / "tiny-imagenet-200.zip"
    junk.parent.mkdir(parents=True)
    junk.write_bytes(b"8 bytes!")

    def junk_not_returned(out, err):
        # Clean either way: re-downloaded over the junk, or refused with an error (junk left untouched).
        refused = "error" in err.lower()
        return "" if refused or zipfile.is_zipfile(junk) else "an existing junk file was returned as the dataset"

    cases.append(Case("download", "existing junk file, --md5 none",
                      ["-q", "download", "--data", str(junk), "--url", f"{server.url}/good.zip", "--md5", "none"],
                      "either", check=junk_not_returned))
    return cases


# --- judging ---------------------------------------------------------------------------------------------

def run_case(case: Case, env: dict) -> dict:
    cmd = [sys.executable, "-m", "tinymatch.cli", *case.args]
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", WRAPPER, json.dumps(cmd), str(case.timeout)],
                          capture_output=True, text=True, env={**env, **case.env})
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["seconds"] = round(time.monotonic() - started, 1)
    result["problem"] = judge(case, result)
    return result


def judge(case: Case, result: dict) -> str:
    rc, out, err = result["rc"], result["out"], result["err"]
    if rc == "timeout":
        return f"hang (no answer in {case.timeout:.0f} s)"
    if rc < 0:
        return f"killed by signal {-rc}"
    if result["peak_mb"] > MEMORY_BUDGET_MB:
        return f"peak memory {result['peak_mb']:.0f} MB"
    if "Traceback (most recent call last)" in err:
        return "traceback: " + err.strip().splitlines()[-1][:160]
    expect = case.expect
    if expect == "either":
        expect = "ok" if rc == 0 else "error"
    if expect == "ok":
        if rc != 0:
            return f"exit {rc}: " + (err.strip().splitlines() or [""])[-1][:160]
    else:
        if rc == 0:
            return "accepted (exit 0) where an error was due"
        lines = [line for line in err.strip().splitlines() if line.startswith("tinymatch")]
        if not lines:
            return "no one-line 'tinymatch ...: error' message: " + (err.strip().splitlines() or [""])[-1][:160]
        if case.names and case.names.lower() not in err.lower():
            return f"the error does not name {case.names!r}: {lines[-1][:160]}"
    if case.check:
        return case.check(out, err)
    return ""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lib", default=str(REPO / "lib"), help="the library folder to test")
    parser.add_argument("--only", default="", help="comma-separated groups")
    parser.add_argument("--json", default=None, help="write per-case results here")
    args = parser.parse_args(argv)

    env = {**os.environ, "PYTHONPATH": args.lib, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore"}
    with tempfile.TemporaryDirectory(prefix="tinymatch-hostile-") as tmp:
        work = Path(tmp)
        env["TINYMATCH_CACHE"] = str(work / "cache-default")
        env["HOME"] = str(work / "home")
        payload = write_zip(work / "payload.zip", layout_files()).read_bytes()
        server = _Server(payload)
        try:
            cases = build_corpus(work, server, hashlib.md5(payload).hexdigest())
            groups = set(filter(None, args.only.split(",")))
            cases = [c for c in cases if not groups or c.group in groups]
            rows = []
            for number, case in enumerate(cases, 1):
                result = run_case(case, env)
                status = "clean " if not result["problem"] else "FAILED"
                print(f"[{number:3d}/{len(cases)}] {status} {case.group:9s} {case.name}"
                      f"{'' if not result['problem'] else '  <- ' + result['problem']}  ({result['seconds']} s)",
                      flush=True)
                rows.append({"group": case.group, "name": case.name, **result})
        finally:
            server.close()
    failed = [r for r in rows if r["problem"]]
    print(f"\ntried {len(rows)} / clean {len(rows) - len(failed)} / failed {len(failed)}")
    for group in sorted({r["group"] for r in rows}):
        part = [r for r in rows if r["group"] == group]
        print(f"  {group:9s} tried {len(part):3d}  clean {sum(not r['problem'] for r in part):3d}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
