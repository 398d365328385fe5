"""`tinymatch` command line: download, data, train, evaluate, match, report, tune.

Each subcommand is a thin `_cmd_<name>(args)` that parses nothing itself and calls one library
function; errors a user can fix (bad path, corrupt file, bad parameter, a run directory in use)
are printed as one line and exit with status 2 instead of a traceback. TensorFlow is imported
only inside the subcommands that need it (it costs seconds): `--help` and `--version` stay fast.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import re
import sys
from pathlib import Path

from tinymatch import __version__
from tinymatch.config import EVALUATION_SPLITS, PROFILES, Config, resolve_data_path
from tinymatch.rundir import RunLockedError

# Library errors a user can fix; their messages name the file or parameter at fault.
USER_ERRORS = (FileNotFoundError, ValueError, RunLockedError)
# OS errors that say something about the machine, not about a path (disk full, read-only disk).
_MACHINE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default in its help, except where the text says it already or there is
    nothing to show (a flag that is off, an option without a default)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("default" in text or not action.option_strings
                or action.default in (None, False, [], argparse.SUPPRESS)):
            return text
        return text + " (default: %(default)s)"


class _VersionAction(argparse.Action):
    """--version: tinymatch's version and the Python, TensorFlow and Keras versions (read from the
    installed packages' metadata, so TensorFlow is not imported)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from tinymatch.environment import versions

        found = versions()
        parts = [f"{name} {found[key] or 'not installed'}"
                 for key, name in (("python", "Python"), ("tensorflow", "TensorFlow"), ("keras", "Keras"))]
        print(f"tinymatch {__version__} ({', '.join(parts)})")
        parser.exit()


def _count(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is below {minimum}")
        return value
    return parse


def _positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text}: must be a positive finite number")
    return value


def _study_name(text: str) -> str:
    # The name becomes a folder (runs/studies/NAME) and the Optuna study's name.
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", text):
        raise argparse.ArgumentTypeError(f"{text!r}: use letters, digits, '.', '_' and '-' "
                                         "(starting with a letter or digit, at most 100)")
    return text


def _add_data_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default=None, metavar="PATH",
                        help="dataset directory or zip (default: $TINYMATCH_DATA, else "
                             "data/tiny-imagenet-200, else data/tiny-imagenet-200.zip)")


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, metavar="FILE",
                        help="config JSON; a partial one is laid over its 'profile' (else "
                             "--profile), so it need name only the fields it changes")
    parser.add_argument("--profile", choices=PROFILES, default="cpu",
                        help="named starting point: smoke (synthetic data, seconds), cpu (the "
                             "2-core profile, about 45 minutes), gpu (full scale, offline)")


def _load_config(args: argparse.Namespace) -> Config:
    """--config FILE laid over its profile (else --profile), with --data applied on top."""
    profile = getattr(args, "profile", None) or "cpu"
    if getattr(args, "config", None):
        config = Config.load(args.config, default_profile=profile)
    else:
        config = Config.from_profile(profile)
    if getattr(args, "data", None):
        config = config.replace(data=str(args.data))
    return config


def _check_out_dir(path: str | os.PathLike, option: str = "--out") -> Path:
    """A run or study directory given by the user: new, or an existing folder (to resume)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(errno.EEXIST, f"exists and is not a directory ({option} names a "
                              "directory)", str(path))
    return path


# --- subcommands ----------------------------------------------------------------------------------

def _cmd_download(args: argparse.Namespace) -> int:
    from tinymatch import data

    # --data names the zip, or the folder to put tiny-imagenet-200.zip in.
    dest = resolve_data_path(args.data)
    if dest.suffix != ".zip":
        dest = dest.with_suffix(".zip") if dest.name.endswith("tiny-imagenet-200") else dest / "tiny-imagenet-200.zip"
    md5 = None if args.md5.lower() == "none" else args.md5
    path = data.download(dest, url=args.url, md5=md5, progress=not args.quiet, timeout=args.timeout)
    print(f"downloaded and verified: {path}" if md5 else f"downloaded, NOT verified (no checksum given): {path}")
    print(f"use it with: tinymatch data --data {path}   (or export TINYMATCH_DATA={path})")
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    from tinymatch import data

    source = resolve_data_path(args.data)
    dataset = data.load_dataset(source, cache_dir=args.cache_dir, skip_corrupt=args.skip_corrupt,
                                max_classes=args.max_classes,
                                max_images_per_class=args.max_images_per_class,
                                progress=not args.quiet)
    summary = data.summarize(dataset)
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True))
    else:
        print(data.format_summary(summary))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    config = _load_config(args)  # validate the config before the slow TensorFlow import
    out = _check_out_dir(args.out)
    from tinymatch import train

    result = train.train(config, out, progress=not args.quiet)
    print(f"run directory: {result.run_dir}")
    return 0


def _cmd_half_precision(args: argparse.Namespace) -> int:
    from tinymatch import train

    for name, (before, after) in train.store_weights_at_half_precision(args.run_dir).items():
        print(f"{name}: {before / 1e6:.2f} MB -> {after / 1e6:.2f} MB (weights at float16 precision)")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from tinymatch import evaluate

    # No --data: the run's config.json names the dataset (else the usual default path).
    metrics = evaluate.evaluate_model_file(args.model, args.data, split=args.split, out=args.out,
                                           progress=not args.quiet, baselines=args.baselines)
    if not args.out:
        print(json.dumps(metrics, indent=2, sort_keys=True))
    else:
        print(f"metrics written to {args.out}")
    return 0


def _cmd_match(args: argparse.Namespace) -> int:
    from tinymatch import match  # reads the images before it imports TensorFlow

    result = match.match_files(args.model, args.image_a, args.image_b)
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        verdict = "MATCH" if result["match"] else "NO MATCH"
        print(f"distance {result['distance']:.4f}  threshold {result['threshold']:.4f}  {verdict}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    config = _load_config(args)  # a bad config or --out fails before the pipeline is imported
    if args.out:
        _check_out_dir(args.out)
    from tinymatch import report

    try:
        outputs = report.run_report(config, run_dir=args.out, pdf=not args.no_pdf, progress=not args.quiet,
                                    compare_run_dirs=args.compare, study_dir=args.study,
                                    ablation_dir=args.ablation)
        if args.publish:  # the only way a run reaches the committed reports/ and figs/
            outputs.update({f"published {name}": path for name, path in
                            report.publish(outputs["run_dir"], args.reports_dir, args.figs_dir,
                                           study_dir=args.study, ablation_dir=args.ablation).items()})
    except report.ReportError as err:
        # A failed notebook: one line naming it and the executed copy that holds the traceback.
        print(f"tinymatch report: error: {err}", file=sys.stderr)
        return 1
    for name, path in outputs.items():
        print(f"{name}: {path}")
    return 0


def _cmd_tune(args: argparse.Namespace) -> int:
    config = _load_config(args)  # a bad config fails before Optuna and TensorFlow are imported
    study_dir = _check_out_dir(args.out or Path("runs") / "studies" / args.study)
    try:
        from tinymatch import tune
    except ModuleNotFoundError as err:
        if err.name != "optuna":
            raise
        print("tinymatch tune: error: needs Optuna: pip install 'tinymatch[tune]'", file=sys.stderr)
        return 2

    summary = tune.run_study(args.study, config, study_dir=study_dir, trials=args.trials,
                             trial_minutes=args.trial_minutes, progress=not args.quiet)
    if summary:  # counts, best value and params, the best trial's run directory and config
        print(json.dumps(summary, indent=2, sort_keys=True, default=str))
    print(f"study directory: {study_dir}")
    return 0


def _cmd_ablate(args: argparse.Namespace) -> int:
    config = _load_config(args)
    out = _check_out_dir(args.out)
    from tinymatch import ablation

    variants = ablation.default_variants(config)
    if args.variants:
        known = {v.name: v for v in variants}
        unknown = [name for name in args.variants if name not in known]
        if unknown:
            print(f"tinymatch ablate: error: --variants {', '.join(unknown)}: unknown for this config "
                  f"(choose from {', '.join(known)})", file=sys.stderr)
            return 2
        variants = tuple(known[name] for name in args.variants)
    result = ablation.run_ablation(config, out, variants=variants, seeds=args.seeds,
                                   progress=not args.quiet)
    for row in ablation.ablation_rows(result):
        cells = "  ".join(f"{m} {row[m][0]:.4f}+-{row[m][1]:.4f}" for m in ablation.METRICS)
        print(f"{row['name']:<16} {cells}")
    print(f"ablation directory: {out}")
    return 0


# --- parser ---------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tinymatch", description=__doc__.splitlines()[0],
                                     formatter_class=_HelpFormatter)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--version", action=_VersionAction,
                        help="print tinymatch's version and the Python, TensorFlow and Keras versions")
    # The global flags again on every subcommand (`tinymatch train ... -q`); SUPPRESS keeps a
    # subcommand that does not name them from resetting what was given before the subcommand.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, parents=[common],
                              formatter_class=_HelpFormatter)

    p = command("download", "fetch the official Tiny ImageNet zip (resumable, md5-checked)")
    _add_data_arg(p)
    p.add_argument("--url", default="http://cs231n.stanford.edu/tiny-imagenet-200.zip",
                   help="where to download from (http or https)")
    p.add_argument("--md5", default="90528d7ca1a48142e341f4ef8d21d0de",
                   help="expected md5 of the zip ('none': do not check; the file is then not verified)")
    p.add_argument("--timeout", type=_positive_number, default=10.0, metavar="SECONDS",
                   help="seconds to wait for the server")
    p.set_defaults(func=_cmd_download)

    p = command("data", "summary of a dataset: classes, images per split, grayscale, corrupt")
    _add_data_arg(p)
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="decoded-image cache (default: beside the data)")
    p.add_argument("--skip-corrupt", action="store_true", help="log and count corrupt images instead of failing")
    p.add_argument("--max-classes", type=_count(0), default=0, metavar="N",
                   help="first N classes only (0: all)")
    p.add_argument("--max-images-per-class", type=_count(0), default=0, metavar="N",
                   help="first N images a class (0: all)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_data)

    p = command("train", "train an embedding model into a run directory")
    _add_config_args(p)
    _add_data_arg(p)
    p.add_argument("--out", required=True, metavar="RUN_DIR",
                   help="run directory (re-run the same command to resume)")
    p.set_defaults(func=_cmd_train)

    p = command("half-precision", "round a finished run's saved weights to float16 precision "
                "(smaller files to commit; run before evaluating)")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a finished training run directory")
    p.set_defaults(func=_cmd_half_precision)

    p = command("evaluate", "verification and retrieval metrics of a trained model")
    p.add_argument("--model", required=True, metavar="FILE", help="RUN_DIR/model.keras")
    _add_data_arg(p)
    p.add_argument("--split", choices=EVALUATION_SPLITS, default="seen",
                   help="seen: new images of the training classes; unseen: classes never trained "
                        "on; official-val: the dataset's own labelled val/ images")
    p.add_argument("--out", default=None, metavar="FILE", help="metrics JSON (default: print)")
    p.add_argument("--baselines", action="store_true",
                   help="also score raw pixels and the untrained network on the same pairs")
    p.set_defaults(func=_cmd_evaluate)

    p = command("match", "are two images of the same class?")
    p.add_argument("--model", required=True, metavar="FILE", help="RUN_DIR/siamese.keras")
    p.add_argument("image_a", metavar="IMAGE_A", help="first image file (JPEG, PNG, ...)")
    p.add_argument("image_b", metavar="IMAGE_B", help="second image file")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_match)

    p = command("report", "run the notebook pipeline and render the report into the run directory")
    _add_config_args(p)
    _add_data_arg(p)
    p.add_argument("--out", default=None, metavar="RUN_DIR", help="run directory (default: runs/<profile>)")
    p.add_argument("--publish", action="store_true",
                   help="also copy report.html/.pdf to --reports-dir and the figures to --figs-dir "
                        "(otherwise everything stays in the run directory)")
    p.add_argument("--reports-dir", default="reports", metavar="DIR",
                   help="with --publish: where report.html and report.pdf are copied")
    p.add_argument("--figs-dir", default="figs", metavar="DIR",
                   help="with --publish: where the report's figures are copied")
    p.add_argument("--no-pdf", action="store_true", help="HTML only")
    p.add_argument("--compare", action="append", default=[], metavar="RUN_DIR",
                   help="another finished run for the loss comparison table (repeatable)")
    p.add_argument("--study", default=None, metavar="STUDY_DIR",
                   help="a `tinymatch tune` study directory for the report's tuning-study part")
    p.add_argument("--ablation", default=None, metavar="ABLATION_DIR",
                   help="a `tinymatch ablate` directory for the report's ablation part")
    p.set_defaults(func=_cmd_report)

    p = command("tune", "search hyperparameters with Optuna: a study of short training runs")
    p.add_argument("--study", required=True, type=_study_name, metavar="NAME",
                   help="study name (resume a study by naming it again)")
    _add_config_args(p)
    _add_data_arg(p)
    p.add_argument("--trials", type=_count(1), default=20, metavar="N", help="trials to run")
    p.add_argument("--trial-minutes", type=_positive_number, default=5.0, metavar="M",
                   help="time budget of one trial in minutes")
    p.add_argument("--out", default=None, metavar="STUDY_DIR",
                   help="study directory (default: runs/studies/NAME)")
    p.set_defaults(func=_cmd_tune)

    p = command("ablate", "controlled ablation: the recipe and one-change variants, several seeds")
    _add_config_args(p)
    _add_data_arg(p)
    p.add_argument("--seeds", type=_count(1), default=3, metavar="N",
                   help="seeds per variant (config seed, +1, ...; each also draws the split)")
    p.add_argument("--variants", nargs="+", default=None, metavar="NAME",
                   help="only these variants (recipe, warmup_only, triplet_only, "
                        "triplet_alone_after_warmup, batch_hard, no_augmentation); default: all "
                        "that apply")
    p.add_argument("--out", default="runs/ablation", metavar="DIR",
                   help="ablation directory (re-run the same command to resume)")
    p.set_defaults(func=_cmd_ablate)
    return parser


def _os_error_line(err: OSError) -> str | None:
    """One line for an OS error about a user's path or the machine's disk; None for the rest."""
    if err.filename is not None:
        target = f"{err.filename} -> {err.filename2}" if err.filename2 is not None else err.filename
        return f"{target}: {err.strerror or err}"
    if err.errno in _MACHINE_ERRNOS:
        return str(err.strerror or err)
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # TensorFlow's C++ INFO/WARNING lines (oneDNN, CPU features) drown the command's own output;
    # set TF_CPP_MIN_LOG_LEVEL=0 to see them again.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        return args.func(args)
    except USER_ERRORS as err:
        # Library errors of these types name the file or parameter at fault.
        print(f"tinymatch {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        # A directory where a file was expected, a file where a folder was, no permission: the
        # path says what to fix. An OS error that names no path is a bug: its traceback stays.
        line = _os_error_line(err)
        if line is None:
            raise
        print(f"tinymatch {args.command}: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tinymatch {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["main", "build_parser", "USER_ERRORS"]
