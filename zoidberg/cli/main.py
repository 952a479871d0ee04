"""The command line's entry: the parser of every command group and main(), which prints user errors as one line."""

from __future__ import annotations

import argparse
import sys

from zoidberg.cli import adapt, data, evaluate, label, monitor, outputs, predict, run_configs, runs, serve
from zoidberg.cli.options import EXIT_USAGE, CliError

# The commands whose work a full disk cuts short and `resume` picks up; the others are simply run again.
TRAINING_COMMANDS = ("cv", "tune", "ensemble", "adapt", "resume", "worker")
# The commands that load TensorFlow anyway: its import is made quiet before they start.
TENSORFLOW_COMMANDS = TRAINING_COMMANDS + ("label-next", "monitor", "predict", "evaluate", "export", "report", "attention", "mlflow", "serve")


def build_parser() -> argparse.ArgumentParser:
    """Returns the argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="python -m zoidberg",
        description="Zoidberg 2.0: pneumonia detection on chest X-rays with patient-grouped k-fold cross-validation.",
    )
    parser.add_argument("--runs-dir", default=None, help="Run store folder [default: $ZOIDBERG_RUNS_DIR or ./runs].")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    data.add_parsers(commands)
    runs.add_parsers(commands)
    adapt.add_parsers(commands)
    label.add_parsers(commands)
    monitor.add_parsers(commands)
    predict.add_parsers(commands)
    evaluate.add_parsers(commands)
    outputs.add_parsers(commands)
    serve.add_parsers(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the CLI; returns the exit code. User errors print one line, never a traceback."""
    # A file name that is not valid UTF-8 (its bytes kept as surrogates) is printed escaped,
    # never as a UnicodeEncodeError halfway through a listing.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "runs_dir", None) is None:
        args.runs_dir = None
    if getattr(args, "command", None) in TENSORFLOW_COMMANDS:
        # TensorFlow's import writes absl and oneDNN start-up lines to standard error that its log
        # level does not silence: held back whenever it first happens, so that they never sit
        # between progress lines (and a driver whose folds train in children never imports it early).
        from zoidberg.training.executors import quiet_tensorflow_when_imported

        quiet_tensorflow_when_imported()
    try:
        if getattr(args, "preset", None):
            args = run_configs.with_preset(parser, args, argv)
            args.runs_dir = getattr(args, "runs_dir", None)
        return args.handler(args)
    except (CliError, ValueError, FileNotFoundError, LookupError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as error:
        # A full disk or an unreadable runs folder is the machine's state, not a bug: one
        # sentence saying what to do (a run's traceback is in its status.json).
        from zoidberg.runs.worker import plain_error_message

        trains = getattr(args, "command", None) in TRAINING_COMMANDS
        print(f"error: {plain_error_message(error, 'resume the run' if trains else 'run the command again')}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130
