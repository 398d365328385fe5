"""`tinymatch` command line: download, data, train, evaluate, match, report.

Each subcommand is a thin `_cmd_<name>(args)` that parses nothing itself and calls one library
function; errors a user can fix (bad path, corrupt file, bad parameter) are printed as one line and
exit with status 2 instead of a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from tinymatch.config import PROFILES, Config, resolve_data_path


def _add_data_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default=None,
                        help="dataset directory or zip (default: $TINYMATCH_DATA, else data/tiny-imagenet-200)")


def _load_config(args: argparse.Namespace) -> Config:
    """--config FILE (else --profile) with --data applied on top."""
    if getattr(args, "config", None):
        config = Config.load(args.config)
    else:
        config = Config.from_profile(getattr(args, "profile", None) or "cpu")
    if getattr(args, "data", None):
        config = config.replace(data=str(args.data))
    return config


# --- subcommands ----------------------------------------------------------------------------------

def _cmd_download(args: argparse.Namespace) -> int:
    from tinymatch import data

    # --data names the zip, or the folder to put tiny-imagenet-200.zip in.
    dest = resolve_data_path(args.data)
    if dest.suffix != ".zip":
        dest = dest.with_suffix(".zip") if dest.name.endswith("tiny-imagenet-200") else dest / "tiny-imagenet-200.zip"
    md5 = None if args.md5.lower() == "none" else args.md5
    path = data.download(dest, url=args.url, md5=md5, progress=not args.quiet, timeout=args.timeout)
    print(f"downloaded and verified: {path}")
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
    from tinymatch import train

    result = train.train(config, args.out, progress=not args.quiet)
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
    from tinymatch import report

    config = _load_config(args)
    try:
        outputs = report.run_report(config, run_dir=args.out, reports_dir=args.reports_dir,
                                    figs_dir=args.figs_dir, pdf=not args.no_pdf, progress=not args.quiet,
                                    compare_run_dirs=args.compare)
    except report.ReportError as err:
        # A failed notebook: one line naming it and the executed copy that holds the traceback.
        print(f"tinymatch report: error: {err}", file=sys.stderr)
        return 1
    for name, path in outputs.items():
        print(f"{name}: {path}")
    return 0


# --- parser ---------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tinymatch", description=__doc__.splitlines()[0])
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("download", help="fetch the official Tiny ImageNet zip (resumable, md5-checked)")
    _add_data_arg(p)
    p.add_argument("--url", default="http://cs231n.stanford.edu/tiny-imagenet-200.zip",
                   help="where to download from (default: the official CS231n zip)")
    p.add_argument("--md5", default="90528d7ca1a48142e341f4ef8d21d0de",
                   help="expected md5 of the zip ('none': do not check)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the server")
    p.set_defaults(func=_cmd_download)

    p = sub.add_parser("data", help="summary of a dataset: classes, images per split, grayscale, corrupt")
    _add_data_arg(p)
    p.add_argument("--cache-dir", default=None, help="decoded-image cache (default: beside the data)")
    p.add_argument("--skip-corrupt", action="store_true", help="log and count corrupt images instead of failing")
    p.add_argument("--max-classes", type=int, default=0, help="first N classes only (0: all)")
    p.add_argument("--max-images-per-class", type=int, default=0, help="first N images a class (0: all)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_data)

    p = sub.add_parser("train", help="train an embedding model into a run directory")
    p.add_argument("--config", default=None, help="config JSON (default: the --profile)")
    p.add_argument("--profile", choices=PROFILES, default="cpu")
    _add_data_arg(p)
    p.add_argument("--out", required=True, help="run directory (re-run the same command to resume)")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("half-precision", help="round a finished run's saved weights to float16 "
                       "precision (smaller files to commit; run before evaluating)")
    p.add_argument("run_dir", help="a finished training run directory")
    p.set_defaults(func=_cmd_half_precision)

    p = sub.add_parser("evaluate", help="verification and retrieval metrics of a trained model")
    p.add_argument("--model", required=True, help="RUN_DIR/model.keras")
    _add_data_arg(p)
    p.add_argument("--split", choices=("seen", "unseen", "official-val"), default="seen")
    p.add_argument("--out", default=None, help="metrics JSON (default: print)")
    p.add_argument("--baselines", action="store_true",
                   help="also score raw pixels and the untrained network on the same pairs")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("match", help="are two images of the same class?")
    p.add_argument("--model", required=True, help="RUN_DIR/siamese.keras")
    p.add_argument("image_a")
    p.add_argument("image_b")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_match)

    p = sub.add_parser("report", help="run the notebook pipeline and render reports/report.{html,pdf}")
    p.add_argument("--config", default=None, help="config JSON (default: the --profile)")
    p.add_argument("--profile", choices=PROFILES, default="cpu")
    _add_data_arg(p)
    p.add_argument("--out", default=None, help="run directory (default: runs/<profile>)")
    p.add_argument("--reports-dir", default="reports")
    p.add_argument("--figs-dir", default="figs")
    p.add_argument("--no-pdf", action="store_true", help="HTML only")
    p.add_argument("--compare", action="append", default=[], metavar="RUN_DIR",
                   help="another finished run for the loss comparison table (repeatable)")
    p.set_defaults(func=_cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # TensorFlow's C++ INFO/WARNING lines (oneDNN, CPU features) drown the command's own output;
    # set TF_CPP_MIN_LOG_LEVEL=0 to see them again.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError) as err:
        # Library errors of these types name the file or parameter at fault.
        print(f"tinymatch {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tinymatch {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["main", "build_parser"]
