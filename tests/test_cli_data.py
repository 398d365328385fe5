"""`tinymatch data` and `tinymatch download` end to end (synthetic data, a local HTTP server)."""

import hashlib
import json
import re

from tinymatch.cli import main
from tinymatch.synthetic import make_synthetic_dataset, synthetic_wnid


def test_data_prints_the_summary_table(synthetic_zip, tmp_path, capsys):
    assert main(["-q", "data", "--data", str(synthetic_zip), "--cache-dir", str(tmp_path / "cache")]) == 0
    out = capsys.readouterr().out
    assert "classes:   12" in out and "grayscale: 3" in out
    assert re.search(r"^train\s+288\s+3\s+12\s+24 / 24 / 24.0$", out, re.M) and "decoded into cache" in out
    assert main(["-q", "data", "--data", str(synthetic_zip), "--cache-dir", str(tmp_path / "cache")]) == 0
    assert "loaded from cache" in capsys.readouterr().out


def test_data_json_and_environment_variable(synthetic_dir, monkeypatch, capsys):
    monkeypatch.setenv("TINYMATCH_DATA", str(synthetic_dir))
    assert main(["-q", "data", "--json", "--max-classes", "2", "--max-images-per-class", "3"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["classes"] == 2 and summary["images"]["train"] == 6
    assert summary["source"] == str(synthetic_dir)


def test_data_missing_is_a_one_line_error(tmp_path, capsys):
    assert main(["-q", "data", "--data", str(tmp_path / "absent.zip")]) == 2
    err = capsys.readouterr().err
    assert "absent.zip" in err and "--data" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_data_corrupt_file_fails_then_skips(tmp_path, capsys):
    source = make_synthetic_dataset(tmp_path, num_classes=3, images_per_class=4, corrupt=1)
    bad = f"train/{synthetic_wnid(0)}/images/{synthetic_wnid(0)}_3.JPEG"
    assert main(["-q", "data", "--data", str(source)]) == 2
    assert bad in capsys.readouterr().err
    assert main(["-q", "data", "--data", str(source), "--skip-corrupt"]) == 0
    out = capsys.readouterr().out
    assert "corrupt:   1 skipped" in out and f"corrupt file skipped: {bad}" in out


def test_download_into_a_folder(range_server, tmp_path, capsys):
    range_server.payload = b"zip bytes " * 5000
    md5 = hashlib.md5(range_server.payload).hexdigest()
    argv = ["-q", "download", "--data", str(tmp_path / "data"), "--url", range_server.url, "--md5", md5]
    assert main(argv) == 0
    target = tmp_path / "data" / "tiny-imagenet-200.zip"
    assert target.read_bytes() == range_server.payload
    assert str(target) in capsys.readouterr().out


def test_download_checksum_mismatch_is_one_line(range_server, tmp_path, capsys):
    range_server.payload = b"abc" * 1000
    argv = ["-q", "download", "--data", str(tmp_path / "t.zip"), "--url", range_server.url, "--md5", "0" * 32]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "t.zip.part: md5 checksum mismatch" in err and "Traceback" not in err


def test_download_without_network_names_the_alternatives(closed_port_url, tmp_path, capsys):
    argv = ["-q", "download", "--data", str(tmp_path / "t.zip"), "--url", closed_port_url, "--timeout", "2"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--data PATH" in err and "TINYMATCH_DATA" in err
