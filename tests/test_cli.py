"""The command line as a whole: subcommands and their help, global flags anywhere, --version,
user errors (bad config, paths of the wrong kind, a run directory in use) as one line with exit
status 2, and programming errors left loud."""

import argparse
import errno
import json
import subprocess
import sys
import types

import pytest

import tinymatch
from tinymatch import cli
from tinymatch.cli import build_parser, main
from tinymatch.config import Config
from tinymatch.rundir import RunLockedError

SUBCOMMANDS = ("download", "data", "train", "half-precision", "evaluate", "match", "report", "tune", "ablate")


def _subparsers(parser):
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return action.choices


def test_every_subcommand_is_registered():
    assert set(_subparsers(build_parser())) == set(SUBCOMMANDS)


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_every_option_has_help_and_shows_its_default(name):
    sub = _subparsers(build_parser())[name]
    for action in sub._actions:
        assert action.help, f"{name} {action.option_strings or action.dest}: no help text"
    text = sub.format_help()
    for action in sub._actions:
        shown = action.default not in (None, False, [], argparse.SUPPRESS)
        if action.option_strings and shown:
            assert str(action.default) in text, f"{name} {action.option_strings}: default not shown"


def test_help_names_the_defaults_of_the_options_the_issue_lists():
    parsers = _subparsers(build_parser())
    report = " ".join(parsers["report"].format_help().split())
    assert "(default: cpu)" in report and "(default: reports)" in report and "(default: figs)" in report
    evaluate = " ".join(parsers["evaluate"].format_help().split())
    assert "(default: seen)" in evaluate and "official-val" in evaluate
    assert "IMAGE_A" in parsers["match"].format_help()


def test_console_script_runs():
    result = subprocess.run([sys.executable, "-m", "tinymatch.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "report" in result.stdout and "tune" in result.stdout


# --- global flags ---------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, quiet", [
    (["train", "--out", "r"], False),
    (["-q", "train", "--out", "r"], True),
    (["train", "--out", "r", "-q"], True),
    (["train", "--quiet", "--out", "r"], True),
    (["-q", "train", "--out", "r", "-q"], True),
    (["data", "-q"], True),
])
def test_quiet_is_accepted_before_or_after_the_subcommand(argv, quiet):
    assert build_parser().parse_args(argv).quiet is quiet


def test_version_names_tinymatch_python_tensorflow_and_keras_without_importing_tensorflow():
    code = ("import sys\nfrom tinymatch.cli import main\ntry:\n    main(['--version'])\n"
            "except SystemExit as exit:\n    assert exit.code in (0, None), exit.code\n"
            "print('imported:', 'tensorflow' in sys.modules, 'keras' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.strip().splitlines()
    assert first.startswith(f"tinymatch {tinymatch.__version__} (Python ")
    assert "TensorFlow " in first and "Keras " in first
    assert second == "imported: False False"


# --- user errors: one line, exit status 2 -------------------------------------------------------------

def _one_line_error(capsys, *needles):
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


def test_missing_config_file_is_one_line_error(tmp_path, capsys):
    status = main(["train", "--config", str(tmp_path / "nope.json"), "--out", str(tmp_path / "run")])
    assert status == 2
    _one_line_error(capsys, "nope.json")


def test_bad_config_value_names_the_parameter(tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text('{"backbone": "alexnet"}')
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
    _one_line_error(capsys, "backbone")


@pytest.mark.parametrize("command", ["train", "report", "tune"])
def test_config_pointing_at_a_directory_is_one_line_error(tmp_path, capsys, command):
    argv = [command, "--config", str(tmp_path), "--out", str(tmp_path / "run")]
    if command == "tune":
        argv += ["--study", "s"]
    assert main(argv) == 2
    _one_line_error(capsys, str(tmp_path), "is a directory")


@pytest.mark.parametrize("command", ["train", "report", "tune"])
def test_out_pointing_at_an_existing_file_is_one_line_error(tmp_path, capsys, command):
    existing = tmp_path / "a_file"
    existing.write_text("keep me")
    argv = [command, "--profile", "smoke", "--out", str(existing)]
    if command == "tune":
        argv += ["--study", "s"]
    assert main(argv) == 2
    _one_line_error(capsys, str(existing), "not a directory")
    assert existing.read_text() == "keep me"


@pytest.mark.parametrize("content, needle", [
    ('{"profile": "smoke", "epochs": true}', "config.epochs=True"),
    ('{"profile": "smoke", "augment": "maybe"}', "config.augment='maybe'"),
    ('{"profile": "smoke", "margin": NaN}', "config.margin=nan"),
    ('{"profile": "smoke", "eval_batch_size": 0}', "config.eval_batch_size=0"),
    ('{"profile": "smoke", "max_classes": 6}', "config.max_classes=6"),
    ('{"profile": "smoke", "epoch": 3}', "epoch"),
])
def test_config_errors_end_before_any_work(tmp_path, capsys, content, needle):
    path = tmp_path / "config.json"
    path.write_text(content)
    run = tmp_path / "run"
    assert main(["train", "--config", str(path), "--out", str(run)]) == 2
    _one_line_error(capsys, "config.json", needle)
    assert not run.exists()  # nothing was started


def _replace_command(monkeypatch, name, function):
    monkeypatch.setattr(cli, f"_cmd_{name.replace('-', '_')}", function)


def test_a_run_directory_in_use_is_one_line_error(monkeypatch, tmp_path, capsys):
    def locked(args):
        raise RunLockedError(f"{args.out}: the run directory is in use by process 123 (host)")

    _replace_command(monkeypatch, "train", locked)
    assert main(["train", "--out", str(tmp_path / "run")]) == 2
    _one_line_error(capsys, "in use by process 123")


@pytest.mark.parametrize("error", [
    IsADirectoryError(errno.EISDIR, "Is a directory", "/some/where"),
    PermissionError(errno.EACCES, "Permission denied", "/some/where"),
    FileExistsError(errno.EEXIST, "File exists", "/some/where"),
    NotADirectoryError(errno.ENOTDIR, "Not a directory", "/some/where"),
])
def test_os_errors_on_a_path_are_one_line_naming_it(monkeypatch, capsys, error):
    def fail(args):
        raise error

    _replace_command(monkeypatch, "data", fail)
    assert main(["data"]) == 2
    _one_line_error(capsys, "/some/where", error.strerror)


def test_a_full_disk_is_one_line(monkeypatch, capsys):
    def fail(args):
        raise OSError(errno.ENOSPC, "No space left on device")

    _replace_command(monkeypatch, "data", fail)
    assert main(["data"]) == 2
    _one_line_error(capsys, "No space left on device")


@pytest.mark.parametrize("error", [OSError(errno.EBADF, "Bad file descriptor"), TypeError("a bug"),
                                   KeyError("a bug")])
def test_programming_errors_are_not_swallowed(monkeypatch, error):
    def fail(args):
        raise error

    _replace_command(monkeypatch, "data", fail)
    with pytest.raises(type(error)):
        main(["data"])


@pytest.mark.parametrize("argv", [
    ["match", "--model", "m.keras", "only_one.png"], ["frobnicate"],
    ["tune", "--study", "../escape"], ["tune", "--study", "s", "--trials", "0"],
    ["tune", "--study", "s", "--trial-minutes", "0"], ["tune", "--study", "s", "--trial-minutes", "nan"],
    ["data", "--max-classes", "-1"], ["download", "--timeout", "0"], ["tune"],
])
def test_bad_usage_exits_with_argparse_status(argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2


# --- what the commands hand to the library ------------------------------------------------------------

def test_a_partial_config_file_is_layered_over_the_profile(monkeypatch, tmp_path, capsys):
    seen = {}
    fake = types.SimpleNamespace(train=lambda config, out, progress: (
        seen.update(config=config, out=out, progress=progress) or types.SimpleNamespace(run_dir=out)))
    monkeypatch.setitem(sys.modules, "tinymatch.train", fake)
    monkeypatch.setattr(tinymatch, "train", fake, raising=False)
    path = tmp_path / "partial.json"
    path.write_text(json.dumps({"margin": 0.3}))
    argv = ["train", "--profile", "smoke", "--config", str(path), "--data", "somewhere", "--out",
            str(tmp_path / "run"), "-q"]
    assert main(argv) == 0
    assert seen["config"] == Config.from_profile("smoke", margin=0.3, data="somewhere")
    assert seen["progress"] is False


def test_tune_calls_run_study_with_its_options(monkeypatch, tmp_path, capsys):
    calls = []

    def run_study(study_name, config, *, study_dir, trials, trial_minutes, progress):
        calls.append(dict(study_name=study_name, config=config, study_dir=study_dir, trials=trials,
                          trial_minutes=trial_minutes, progress=progress))
        return {"best_value": 0.75, "study_name": study_name}

    fake = types.ModuleType("tinymatch.tune")
    fake.run_study = run_study
    monkeypatch.setitem(sys.modules, "tinymatch.tune", fake)
    monkeypatch.setattr(tinymatch, "tune", fake, raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["tune", "--study", "lr-search", "--profile", "smoke", "--trials", "3",
                 "--trial-minutes", "0.5"]) == 0
    (call,) = calls
    assert call["study_name"] == "lr-search" and call["config"] == Config.from_profile("smoke")
    assert str(call["study_dir"]) == "runs/studies/lr-search"
    assert (call["trials"], call["trial_minutes"], call["progress"]) == (3, 0.5, True)
    out = capsys.readouterr().out
    assert "runs/studies/lr-search" in out and '"best_value": 0.75' in out

    assert main(["tune", "--study", "s", "--profile", "smoke", "--out", str(tmp_path / "elsewhere"), "-q"]) == 0
    assert str(calls[-1]["study_dir"]) == str(tmp_path / "elsewhere") and calls[-1]["trials"] == 20
    assert calls[-1]["trial_minutes"] == 5.0 and calls[-1]["progress"] is False
