"""Commands that use a trained run: predict images, evaluate it on a labeled folder, choose its operating point."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from zoidberg.cli.options import add_operating_point_options, add_runs_dir, choice_from_args, fmt, parse_bool
from zoidberg.config import EXPORT_FORMATS


def add_parsers(commands) -> None:
    """Adds predict, evaluate, export, report, mlflow and operating-point."""
    predict = commands.add_parser(
        "predict", help="Predict image files or whole folders with a run's fold ensemble.",
        description="Predict pneumonia on images (PNG, JPEG, DICOM, recognised by content) and folders of them "
        "(recursive) with the fold ensemble of a finished run or ensemble, at its operating point, in batches. "
        "Files inside NORMAL/PNEUMONIA folders get their label and a correct column; other files are listed as skipped.",
    )
    predict.add_argument("--run", required=True, help="Run id.")
    predict.add_argument("images", nargs="+", metavar="PATH", help="Image files and folders.")
    predict.add_argument("--csv", default=None, metavar="FILE", help="Write one row per file to this CSV file.")
    predict.add_argument("--threshold", type=float, default=None, help="Decision threshold [default: the run's operating point].")
    predict.add_argument("--tta", type=parse_bool, nargs="?", const=True, default=None, metavar="BOOL", help="Average test-time variants (identity, zoom, darker, brighter): 4x the forward passes [default: the run's setting].")
    predict.add_argument("--json", action="store_true", help="Print JSON.")
    add_runs_dir(predict)
    predict.set_defaults(handler=command_predict)

    evaluate = commands.add_parser(
        "evaluate",
        help="Evaluate a run on a labeled folder (external validation), stored inside the run.",
        description="Score a finished or stopped run on a labeled folder (Kaggle or flat layout) at the run's operating "
        "point: AUC with a patient-bootstrap 95 %% CI, sensitivity, specificity, PPV, NPV, calibration and decision curve, "
        "checked first for patients and files shared with the training data. Stored in runs/<id>/evaluations/<name>/.",
    )
    evaluate.add_argument("--run", required=True, help="Run id.")
    evaluate.add_argument("--data", required=True, help="A labeled folder: <root>/{train,val,test}/{NORMAL,PNEUMONIA} or <root>/{NORMAL,PNEUMONIA}.")
    evaluate.add_argument("--split", choices=("auto", "test", "all"), default="auto", help="test: only its test/ split; all: every image; auto: test when there is one [default: auto].")
    evaluate.add_argument("--name", default=None, help="The evaluation's name [default: the folder's name].")
    evaluate.add_argument("--force", action="store_true", help="Score again even when this folder was evaluated with these models.")
    evaluate.add_argument("--tta", type=parse_bool, nargs="?", const=True, default=None, metavar="BOOL", help="Average test-time variants (identity, zoom, darker, brighter): 4x the forward passes; the evaluation records it [default: the run's setting].")
    evaluate.add_argument("--json", action="store_true", help="Print the evaluation as JSON.")
    add_runs_dir(evaluate)
    evaluate.set_defaults(handler=command_evaluate)

    export = commands.add_parser(
        "export", help="Export a run's fold ensemble as one model (keras, savedmodel, tflite, onnx) with a model card.",
        description="Write a run's fold ensemble as one model: grayscale uint8 input at the run's size; scaling, every fold, "
        "the mean over folds and the calibration inside; a model_card.json beside it (classes, preprocessing, operating "
        "point, CV and external metrics, training data, intended use). Checked against the run's own probabilities.",
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

    point = commands.add_parser(
        "operating-point",
        help="Show or choose a run's operating point (threshold method, prevalence, raw or calibrated).",
        description="Without options: the run's operating point and the usual methods side by side. With options: "
        "choose the threshold again on the out-of-fold predictions; Predict, predict and evaluate then use it.",
    )
    point.add_argument("run_id", help="Run id.")
    add_operating_point_options(point)
    point.add_argument("--json", action="store_true", help="Print JSON.")
    add_runs_dir(point)
    point.set_defaults(handler=command_operating_point)


def command_predict(args) -> int:
    import time

    from zoidberg.cli.progress import progress_bar
    from zoidberg.data.files import collect_images
    from zoidberg.inference.batch import predict_files
    from zoidberg.inference.loading import load_ensemble

    ensemble = load_ensemble(args.run, runs_dir=args.runs_dir)
    threshold = ensemble.threshold if args.threshold is None else args.threshold
    tta = ensemble.tta if args.tta is None else args.tta
    files, skipped = collect_images(args.images)
    label_mode = "binary" if ensemble.is_binary else "three-class"
    start = time.perf_counter()
    with progress_bar("Predicting", enabled=not args.json and len(files) > 1) as progress:
        rows = predict_files(ensemble, files, threshold=threshold, tta=tta, label_mode=label_mode, progress=progress)
    seconds = time.perf_counter() - start
    rows += [{"file": item.path, "error": item.reason} for item in skipped]
    for row in rows:
        row["tta"] = tta
    if args.csv:
        write_predictions_csv(args.csv, rows, list(ensemble.class_names))
    failed = [row for row in rows if "error" in row]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0 if not failed else 1
    if len(rows) <= 50 or not args.csv:
        for row in rows:
            if "error" in row:
                print(f"{row['file']}: ERROR {row['error']}")
            elif row.get("in_distribution") is False:
                print(f"{row['file']}: REFUSED, no diagnosis. {row['ood_reason']}")
            else:
                print(f"{row['file']}: {describe_prediction(row, threshold)}")
    if ensemble.gate is None:
        print(f"Unchecked: {ensemble.gate_note}")
    print(predictions_summary(rows, seconds, tta))
    if args.csv:
        print(f"Wrote {len(rows)} rows to {args.csv}")
    return 0 if not failed else 1


def predictions_summary(rows: list[dict], seconds: float, tta: bool) -> str:
    """One line: how many files were predicted, in how long, the accuracy where labels are known, the failures."""
    predicted = [row for row in rows if "error" not in row]
    text = f"{len(predicted)} image(s) predicted in {seconds:.1f} s ({1000 * seconds / max(1, len(predicted)):.0f} ms per image"
    text += ", with test-time augmentation: 4 variants per image)" if tta else ")"
    labelled = [row for row in predicted if "correct" in row]
    if labelled:
        text += f"; {sum(row['correct'] for row in labelled)}/{len(labelled)} correct where the folder names the class"
    refused = sum(row.get("in_distribution") is False for row in predicted)
    if refused:
        text += f"; {refused} refused as unlike the training films (in_distribution false)"
    failed = len(rows) - len(predicted)
    return text + (f"; {failed} skipped or unreadable (see their rows)" if failed else "")


def write_predictions_csv(path: str, rows: list[dict], class_names: list[str]) -> None:
    """Writes predict's rows as CSV: the decision, both probabilities, the spread, the operating point, label and correct."""
    import csv

    from zoidberg.runs.store import open_csv, write_atomically

    fields = ["file", "true_label", "prediction", "correct", "probability", "probability_raw", "probability_calibrated", "spread",
              "scale", "threshold", *(f"p_{name}" for name in class_names), "in_distribution", "ood_score", "ood_reason", "tta", "error"]

    def write(staged):
        # A file name that is not valid UTF-8 is written byte for byte (see open_csv): it reads back as the path.
        with open_csv(staged, "w") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            for row in rows:
                flat = {key: row.get(key) for key in fields}
                flat["prediction"] = row.get("label")
                for name, value in (row.get("class_probabilities") or {}).items():
                    flat[f"p_{name}"] = round(value, 6)
                if row.get("in_distribution") is False:
                    # No probability stands where a diagnosis would (predict --json keeps them for developers).
                    flat["prediction"] = "REFUSED"
                    for key in ("correct", "probability", "probability_raw", "probability_calibrated", "spread", *(f"p_{name}" for name in class_names)):
                        flat[key] = None
                writer.writerow(flat)

    # Staged, then renamed: a failure leaves the previous file (or none), never half of one.
    write_atomically(Path(path), write)


def describe_prediction(row: dict, threshold: float) -> str:
    """One line per image: the class, its probability and spread, the scale and the threshold."""
    scale = f"{row.get('scale', 'raw')} " if row.get("probability_calibrated") is not None else ""
    if row.get("threshold") is not None:
        other = ""
        if row.get("probability_calibrated") is not None:
            other_scale = "raw" if row.get("scale") == "calibrated" else "calibrated"
            other = f", {other_scale} {row['probability_' + other_scale]:.3f}"
        return (
            f"{row['label']} ({scale}p_pneumonia={row['probability']:.3f} ± {row['spread']:.3f} across {row.get('unit', 'fold')}s{other}, "
            f"threshold {threshold:.3f})"
        )
    others = ", ".join(f"p_{name}={value:.3f}" for name, value in row["class_probabilities"].items())
    return f"{row['label']} ({row['probability']:.3f} ± {row['spread']:.3f} across {row.get('unit', 'fold')}s; {others})"


def command_evaluate(args) -> int:
    from zoidberg.inference.evaluate import evaluate_run
    from zoidberg.runs.store import RunStore

    from zoidberg.cli.progress import progress_tasks

    run = RunStore(args.runs_dir).get(args.run)
    with progress_tasks(enabled=not args.json) as progress:
        evaluation = evaluate_run(run, args.data, split=args.split, name=args.name, force=args.force, tta=args.tta,
                                  report=None if args.json else print, progress=progress)
    if args.json:
        print(json.dumps(evaluation, indent=2))
        return 0
    for line in describe_evaluation(evaluation, run.summary() or {}):
        print(line)
    print(f"Stored in {run.evaluation_path(evaluation['name'])}/ (evaluation.json, predictions.csv)")
    return 0


def describe_evaluation(evaluation: dict, summary: dict) -> list[str]:
    """The console report of an evaluation: headline with CI, predictive values, calibration, the gap to CV."""
    metrics = evaluation["metrics"]
    lines = [
        f"Evaluation {evaluation['name']}: {evaluation['n_images']} images of {evaluation['n_patients']} patients ("
        + ", ".join(f"{count} {name}" for name, count in evaluation["class_counts"].items())
        + f"), {evaluation.get('models') or 'folds ' + ', '.join(map(str, evaluation['folds_used'])) + ' of ' + str(evaluation['n_splits'])}"
        + (" with test-time augmentation" if evaluation.get("tta") else "") + ", "
        + (f"threshold {evaluation['threshold']:.3f} on {evaluation['scale']} probabilities." if len(evaluation["class_names"]) == 2 else "most probable class.")
    ]
    interval = evaluation.get("auc_ci")
    auc_text = "AUC undefined (one class)"
    if interval:
        auc_text = f"AUC {fmt(interval['estimate'])} (95% CI {fmt(interval['low'])} to {fmt(interval['high'])}, bootstrap over {interval['patients']} patients)"
    parts = [auc_text, f"accuracy {fmt(metrics.get('accuracy'))}"]
    parts += [f"{name} {fmt(metrics.get(name))}" for name in ("sensitivity", "specificity", "f1") if name in metrics]
    lines.append("  " + ", ".join(parts))
    values = evaluation.get("predictive_values")
    if values:
        lines.append(f"  PPV {fmt(values['ppv'])}, NPV {fmt(values['npv'])} at prevalence {values['prevalence']:.1%} ({values['source']})")
    gate = evaluation.get("out_of_distribution")
    if gate and gate.get("checked"):
        flagged = gate["flagged"]
        text = f"  Out-of-distribution gate: {gate['n_flagged']} of {evaluation['n_images']} images refused"
        lines.append(text + (": " + ", ".join(item["path"] for item in flagged[:10]) + (" ..." if len(flagged) > 10 else "") if flagged else ""))
    elif gate:
        lines.append(f"  Unchecked by the out-of-distribution gate: {gate['note']}")
    calibration = evaluation.get("calibration") or {}
    raw, calibrated = calibration.get("raw") or {}, calibration.get("calibrated")
    text = f"  Calibration: ECE {fmt(raw.get('ece'))}, Brier {fmt(raw.get('brier'))} raw"
    if calibrated:
        text += f"; ECE {fmt(calibrated['ece'])}, Brier {fmt(calibrated['brier'])} calibrated"
    lines.append(text)
    gap = []
    for name, label in (("roc_auc", "AUC"), ("accuracy", "accuracy"), ("sensitivity", "sensitivity"), ("specificity", "specificity")):
        cv = ((summary.get("mean_std") or {}).get(name) or {}).get("mean")
        external = metrics.get(name)
        if cv is not None and external is not None and external == external:
            gap.append(f"{label} {cv:.3f} -> {external:.3f} ({external - cv:+.3f})")
    if gap:
        lines.append("  Cross-validation -> this folder: " + "; ".join(gap))
    if evaluation.get("shift"):
        lines.append(f"  Shift check: {evaluation['shift']['sentence']}")
    lines += [f"  Note: {note}" for note in evaluation.get("notes") or []]
    return lines


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
    from zoidberg.reporting.store import report_format, write_report
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


def command_operating_point(args) -> int:
    from zoidberg.evaluation.out_of_fold import current_operating_point, set_operating_point
    from zoidberg.runs.store import RunStore

    run = RunStore(args.runs_dir).get(args.run_id)
    changes = args.threshold_method or args.target_sensitivity is not None or args.target_specificity is not None
    changes = changes or args.prevalence is not None or args.probabilities != "raw" or args.cost_ratio != 1.0
    if changes:
        point = set_operating_point(run, choice_from_args(args))
    else:
        point = current_operating_point(run)
        if point is None:
            raise ValueError(f"Run {run.id} has no operating point (a three-class run, or one made before operating points); choose one with --threshold-method.")
        if "table" not in point:
            from zoidberg.config import OperatingPointChoice

            point = set_operating_point(run, OperatingPointChoice.from_dict(point["choice"]))
    if args.json:
        print(json.dumps(point, indent=2))
        return 0
    from zoidberg.config import OperatingPointChoice

    choice = OperatingPointChoice.from_dict(point["choice"])
    spread = point["mean_std"]
    print(
        f"Run {run.id}: {choice.describe()} on {choice.probabilities} probabilities -> threshold {point['threshold']:.3f}. "
        f"Over folds: sensitivity {fmt(spread['sensitivity']['mean'])} ± {fmt(spread['sensitivity']['std'])}, "
        f"specificity {fmt(spread['specificity']['mean'])} ± {fmt(spread['specificity']['std'])}; "
        f"PPV {fmt(point['pooled']['ppv'])}, NPV {fmt(point['pooled']['npv'])} at prevalence {point['prevalence']:.1%} ({point['prevalence_source']})."
    )
    print(f"\n{'method':<44} {'threshold':>9} {'sens':>6} {'± sd':>6} {'spec':>6} {'± sd':>6} {'PPV':>6} {'NPV':>6}")
    for row in point["table"]:
        print(
            f"{row['description']:<44} {row['threshold']:>9.3f} {fmt(row['sensitivity']):>6} {fmt(row['sensitivity_std']):>6} "
            f"{fmt(row['specificity']):>6} {fmt(row['specificity_std']):>6} {fmt(row['ppv']):>6} {fmt(row['npv']):>6}"
        )
    return 0
