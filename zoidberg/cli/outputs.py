"""python -m zoidberg export, report and mlflow: what leaves a run, for a program, a clinician or a tracker."""

from __future__ import annotations

import os
import sys

from zoidberg.cli.options import add_runs_dir, parse_bool
from zoidberg.config import EXPORT_FORMATS


def add_parsers(commands) -> None:
    """Adds export, report and mlflow."""
    export = commands.add_parser(
        "export", help="Export a run as one model (keras, savedmodel, tflite, onnx) with a model card.",
        description="Write a run as one model: grayscale uint8 input at the run's size (an ensemble of runs at several "
        "sizes: one input per size); scaling, every fold, an ensemble's combination, an adapted run's site heads and the "
        "calibration inside; a model_card.json beside it (classes, preprocessing, operating point, CV and external "
        "metrics, training data, intended use). Checked against the run's own probabilities.",
    )
    export.add_argument("--run", required=True, help="Run id.")
    export.add_argument("--format", dest="formats", action="append", choices=EXPORT_FORMATS, help="A format; repeat for several [default: all four].")
    export.add_argument("--out", default=None, help="Output folder, one sub-folder per format [default: runs/<id>/exports/, inside the run].")
    export.add_argument("--check", type=parse_bool, nargs="?", const=True, default=True, metavar="BOOL", help="Reload each export with its own runtime and compare it with the run on a few images [default: true].")
    add_runs_dir(export)
    export.set_defaults(handler=command_export)

    report = commands.add_parser(
        "report", help="Write a run's report for a clinician (HTML or PDF), stored inside the run.",
        description="One document: intended use and limits, the data (counts, patients, skipped files, duplicates), the "
        "method, CV mean ± std and every external evaluation with its CI, ROC, calibration and decision curves, the "
        "operating point with PPV and NPV at stated prevalences, confusion matrices and the most wrong X-rays with "
        "Grad-CAM. Written to runs/<id>/reports/ (both formats) and to --out (the format of its suffix).",
    )
    report.add_argument("--run", required=True, help="Run id.")
    report.add_argument("--out", default=None, metavar="FILE", help="Also write the report here: report.html or report.pdf [default: only inside the run].")
    report.add_argument("--examples", type=int, default=6, help="How many misclassified X-rays to show [default: 6].")
    report.add_argument("--gradcam", type=parse_bool, nargs="?", const=True, default=True, metavar="BOOL", help="Draw Grad-CAM over them (loads the run's models) [default: true].")
    add_runs_dir(report)
    report.set_defaults(handler=command_report)

    tracking = commands.add_parser(
        "mlflow", help="Log a finished run to MLflow (again): parameters, epochs, summary, evaluations, export, report.",
        description="Log a run to an MLflow tracking store or server. Logging the same run again updates its MLflow run "
        "(new evaluations, exports and reports are added), so run it after `evaluate` or `export`. Needs requirements-mlflow.txt.",
    )
    tracking.add_argument("--run", required=True, help="Run id.")
    tracking.add_argument("--uri", default=os.environ.get("MLFLOW_TRACKING_URI") or None, metavar="URI",
                          help="Tracking URI: file:///folder, a folder, http://host:5000 [default: $MLFLOW_TRACKING_URI].")
    tracking.add_argument("--experiment", default="zoidberg", help="MLflow experiment [default: zoidberg].")
    tracking.add_argument("--export", type=parse_bool, nargs="?", const=True, default=True, metavar="BOOL",
                          help="Write a keras export into the run first when it has none, and log it [default: true].")
    add_runs_dir(tracking)
    tracking.set_defaults(handler=command_mlflow)


def command_export(args) -> int:
    from pathlib import Path

    from zoidberg.inference.export import MODEL_CARD_FILE, export_run
    from zoidberg.inference.loading import load_ensemble
    from zoidberg.runs.store import EXPORTS_DIR, RunStore, read_json

    run = RunStore(args.runs_dir).get(args.run)
    ensemble = load_ensemble(run.id, runs_dir=args.runs_dir)
    out = Path(args.out) if args.out else run.path / EXPORTS_DIR
    for format_name in args.formats or EXPORT_FORMATS:
        path = export_run(run, ensemble, format_name, out / format_name, check=args.check)
        line = f"{format_name:<11} {path}"
        if args.check:
            difference = read_json(out / format_name / MODEL_CARD_FILE)["parity_max_difference"]
            line += f" (largest difference from the run on sample images: {difference:.1e})"
        print(line)
    print(f"Model cards: {out}/<format>/model_card.json")
    return 0


def command_report(args) -> int:
    from zoidberg.reporting.report_files import report_format, write_report
    from zoidberg.runs.store import RunStore

    if args.examples < 0:
        raise ValueError(f"--examples must be 0 or more, not {args.examples}.")
    if args.out is not None:
        report_format(args.out)
    run = RunStore(args.runs_dir).get(args.run)
    def warn(text: str) -> None:
        print(f"warning: {text}", file=sys.stderr)

    for path in write_report(run, out=args.out, examples=args.examples, gradcam=args.gradcam, on_warning=warn):
        print(path)
    return 0


def command_mlflow(args) -> int:
    from zoidberg.runs.store import RunStore
    from zoidberg.integrations.mlflow_tracking import check_mlflow_installed, log_run_to_mlflow

    if not args.uri:
        raise ValueError("Say where to log: --uri file:///path/mlruns (or http://host:5000), or set MLFLOW_TRACKING_URI.")
    check_mlflow_installed()
    run = RunStore(args.runs_dir).get(args.run)
    if not run.summary():
        raise ValueError(f"Run {run.id} has no results yet ({run.state}): log it once it has finished.")
    logged = log_run_to_mlflow(run, args.uri, experiment=args.experiment, export=args.export)
    print(f"{'Updated' if logged['updated'] else 'Logged'} MLflow run {logged['run_id']} in {logged['uri']} "
          f"(experiment {args.experiment}, {logged['metrics']} new metrics).")
    return 0
