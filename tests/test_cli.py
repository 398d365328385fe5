"""The command line as a whole: subcommands listed, user errors as one line with exit status 2."""

import subprocess
import sys

import pytest

from tinymatch.cli import build_parser, main

SUBCOMMANDS = ("download", "data", "train", "evaluate", "match", "report")


def test_every_subcommand_is_registered():
    help_text = build_parser().format_help()
    for name in SUBCOMMANDS:
        assert name in help_text


def test_console_script_runs():
    result = subprocess.run([sys.executable, "-m", "tinymatch.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "report" in result.stdout


def test_missing_config_file_is_one_line_error(tmp_path, capsys):
    status = main(["train", "--config", str(tmp_path / "nope.json"), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert status == 2
    assert "nope.json" in err and "Traceback" not in err


def test_bad_config_value_names_the_parameter(tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text('{"backbone": "alexnet"}')
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
    assert "backbone" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["match", "--model", "m.keras", "only_one.png"], ["frobnicate"]])
def test_bad_usage_exits_with_argparse_status(argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
