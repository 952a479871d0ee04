"""python -m zoidberg evaluate and operating-point: a run judged on a labeled folder, and its threshold chosen."""

from __future__ import annotations

import json

from zoidberg.cli.options import add_operating_point_options, add_runs_dir, choice_from_args, fmt, parse_bool
from zoidberg.inference.attention import DEFAULT_SAMPLE


def add_parsers(commands) -> None:
    """Adds evaluate and operating-point."""
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
    evaluate.add_argument("--other-site", action="store_true", help="The folder comes from another site (another hospital): a file-name patient number that also names a training patient is another child there, so it is not reported as shared. Identical and near-duplicate films are still checked.")
    evaluate.add_argument("--attention-sample", type=int, default=DEFAULT_SAMPLE, metavar="N",
                          help=f"Then measure where the model looks on up to N of the films: the share of Grad-CAM evidence inside the lung fields, films with most of it outside flagged; 0 skips it [default: {DEFAULT_SAMPLE}].")
    evaluate.add_argument("--json", action="store_true", help="Print the evaluation as JSON.")
    add_runs_dir(evaluate)
    evaluate.set_defaults(handler=command_evaluate)

    attention = commands.add_parser(
        "attention",
        help="Measure where a run looks: the share of its Grad-CAM evidence inside the lung fields.",
        description="Grad-CAM of the decided class on out-of-fold films (default) or an evaluation's films, the share of its "
        "mass inside a lung-field box (x 15-85 %%, y 12-78 %% of the film), and the films with most of it outside. Stored in the run.",
    )
    attention.add_argument("--run", required=True, help="Run id.")
    attention.add_argument("--evaluation", default=None, help="An evaluation's name [default: the out-of-fold films].")
    attention.add_argument("--sample", type=int, default=DEFAULT_SAMPLE, help=f"Films to measure at most [default: {DEFAULT_SAMPLE}].")
    attention.add_argument("--json", action="store_true", help="Print the check as JSON.")
    add_runs_dir(attention)
    attention.set_defaults(handler=command_attention)

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


def command_evaluate(args) -> int:
    from zoidberg.inference.evaluate import evaluate_run
    from zoidberg.runs.store import RunStore

    from zoidberg.cli.terminal_progress import progress_tasks

    from zoidberg.inference.attention import attention_path, measure_and_store
    from zoidberg.inference.loading import load_ensemble
    from zoidberg.runs.files import read_json
    from zoidberg.runs.store import EVALUATION_FILE

    run = RunStore(args.runs_dir).get(args.run)
    # Loaded once for the scores and Grad-CAM both.
    ensemble = load_ensemble(run.id, runs_dir=run.path.parent) if args.attention_sample > 0 else None
    with progress_tasks(enabled=not args.json) as progress:
        evaluation = evaluate_run(run, args.data, split=args.split, name=args.name, force=args.force, tta=args.tta, other_site=args.other_site or None,
                                  report=None if args.json else print, progress=progress, ensemble=ensemble)
    if ensemble is not None:
        stored = attention_path(run, evaluation["name"])
        current = stored.is_file() and stored.stat().st_mtime >= run.evaluation_path(evaluation["name"], EVALUATION_FILE).stat().st_mtime
        if current:
            check = read_json(stored)
        else:
            with progress_tasks(enabled=not args.json) as progress:
                check = measure_and_store(run, ensemble, evaluation, sample=args.attention_sample,
                                          progress=(lambda done, total: progress("Grad-CAM", done, total)) if progress else None)
        evaluation = {**evaluation, "attention": check}
    if args.json:
        print(json.dumps(evaluation, indent=2))
        return 0
    for line in describe_evaluation(evaluation, run.summary() or {}, run):
        print(line)
    print(f"Stored in {run.evaluation_path(evaluation['name'])}/ (evaluation.json, predictions.csv)")
    return 0


def command_attention(args) -> int:
    from zoidberg.inference.attention import attention_sentence, measure_and_store
    from zoidberg.inference.loading import load_ensemble
    from zoidberg.runs.store import RunStore

    from zoidberg.cli.terminal_progress import progress_tasks

    if args.sample < 1:
        raise ValueError(f"--sample must be at least 1, not {args.sample}.")
    run = RunStore(args.runs_dir).get(args.run)
    evaluation = None
    if args.evaluation:
        from zoidberg.evaluation.stored import current_evaluations

        evaluation = next((item for item in current_evaluations(run) if item["name"] == args.evaluation), None)
        if evaluation is None:
            names = ", ".join(item["name"] for item in current_evaluations(run)) or "none yet"
            raise ValueError(f"Run {run.id} has no evaluation named {args.evaluation!r} (it has: {names}).")
    with progress_tasks(enabled=not args.json) as progress:
        check = measure_and_store(run, load_ensemble(run.id, runs_dir=run.path.parent), evaluation, sample=args.sample,
                                  progress=(lambda done, total: progress("Grad-CAM", done, total)) if progress else None)
    if args.json:
        print(json.dumps(check, indent=2))
        return 0
    print(attention_sentence(check))
    for item in check["outside"][:10]:
        print(f"  {item['share']:.0%} inside: {item['path']} ({item['label']} called {item['predicted']})")
    return 0


def describe_evaluation(evaluation: dict, summary: dict, run=None) -> list[str]:
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
    if run is not None and len(evaluation["class_names"]) == 2:
        from zoidberg.evaluation.gap import gap_verdict

        verdict = gap_verdict(run, evaluation)
        lines.append(f"  Verdict: {verdict['headline']}" + (f" {verdict['counts']}" if verdict["counts"] else ""))
    if evaluation.get("shift"):
        lines.append(f"  Shift check: {evaluation['shift']['sentence']}")
    from zoidberg.evaluation.leakage import evaluation_notes

    lines += [f"  Note: {note}" for note in evaluation_notes(evaluation)]
    if isinstance(evaluation.get("attention"), dict):
        from zoidberg.inference.attention import attention_sentence

        lines.append(f"  Where it looks: {attention_sentence(evaluation['attention'])}")
    return lines


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
