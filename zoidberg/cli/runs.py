"""Commands that train and manage runs: cv, tune, ensemble, runs, resume, stop and the internal worker."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from zoidberg.cli.options import (
    CliError,
    parse_bool,
    add_data_options,
    add_model_options,
    add_operating_point_options,
    add_option,
    add_runs_dir,
    add_train_options,
    choice_from_args,
    fmt,
    fmt4,
    short,
)
from zoidberg.config import (
    CALIBRATION_METHODS,
    DUPLICATE_POLICIES,
    DUPLICATE_POLICY_HELP,
    ENSEMBLE_METHOD_HELP,
    ENSEMBLE_METHODS,
    ENGINE_HELP,
    ENGINES,
    EnsembleConfig,
)
from zoidberg.cli.run_configs import add_engine_options, config_from_args, ensemble_preset_config, tune_config_from_args
from zoidberg.models.presets import PRESETS, get_preset



def add_parsers(commands) -> None:
    """Adds cv, tune, ensemble, runs, resume, stop and worker."""
    cv = commands.add_parser("cv", help="Cross-validate a model configuration.", description="Run patient-grouped k-fold cross-validation; prints per-fold metrics and mean ± std.")
    add_data_options(cv)
    add_model_options(cv)
    add_train_options(cv)
    cv.add_argument("--folds", type=int, default=5, help="Number of folds k [default: 5].")
    cv.add_argument("--seed", type=int, default=42, help="Random seed for folds and weights [default: 42].")
    add_operating_point_options(cv)
    cv.add_argument("--calibration", dest="calibration_method", choices=CALIBRATION_METHODS, default="temperature", help="How probabilities are recalibrated on the out-of-fold predictions: temperature scaling or Platt's logistic fit (binary) [default: temperature].")
    cv.add_argument("--duplicates", choices=DUPLICATE_POLICIES, default="group", help=f"{DUPLICATE_POLICY_HELP} [default: group]. See `audit`.")
    cv.add_argument("--tta", type=parse_bool, nargs="?", const=True, default=False, metavar="BOOL", help="Score the out-of-fold predictions (and later predictions) as the mean over test-time variants: identity, a 90 %% zoom, darker and brighter; 4x the forward passes [default: False].")
    cv.add_argument("--download-weights", action="store_true", help="When an ImageNet weights file is missing and this machine is online, fetch it with Keras' downloader into the Keras cache first.")
    add_engine_options(cv, ENGINES, "auto", ENGINE_HELP, unit="folds",
                       auto_help="local: by cores and memory; ray: every fold at once, sharing the cluster's CPUs")
    cv.add_argument("--precision", choices=("auto", "float32", "mixed"), default="auto",
                    help="auto: bfloat16 for the CNN on a CPU with AVX-512 BF16 or AMX (measured twice as fast at the same AUC), float32 otherwise; mixed: mixed_float16 on a GPU, mixed_bfloat16 on a CPU that has it (the output layer stays float32 either way) [default: auto].")
    cv.add_argument("--mlflow-uri", default=os.environ.get("MLFLOW_TRACKING_URI") or None, metavar="URI",
                    help="Log the finished run to MLflow: parameters, every fold's epochs, summary, evaluations and a keras "
                    "export (file:///folder, a folder, http://host:5000) [default: $MLFLOW_TRACKING_URI; needs requirements-mlflow.txt].")
    cv.add_argument("--no-tensorboard", dest="tensorboard", action="store_false", help="Do not write TensorBoard logs (by default every fold logs its epoch scalars to runs/<id>/tensorboard/fold_<k>; view them with `tensorboard --logdir runs`).")
    cv.add_argument("--preset", choices=list(PRESETS), default=None, help="Start from a named recipe; any other flag still changes it. " + " ".join(f"{preset.name}: {preset.description} ({preset.expected_time}; {preset.site_figures})." for preset in PRESETS.values()))
    cv.add_argument("--name", default="", help="A readable run name.")
    cv.add_argument("--from-tuning", default=None, metavar="RUN_ID", help="Use the best hyperparameters of this tuning run (other options still apply to data and k).")
    cv.add_argument("--background", action="store_true", help="Start a worker process and return the run id at once.")
    cv.add_argument("--json", action="store_true", help="Print the summary as JSON.")
    add_runs_dir(cv)
    # With --from-tuning, image size, label mode and epochs default to the tuning run's.
    cv.set_defaults(image_size=None, label_mode=None, epochs=None, handler=command_cv, subparser=cv)

    add_tune_parser(commands)

    ensemble = commands.add_parser(
        "ensemble",
        help="Combine finished cross-validation runs into an ensemble run.",
        description="Combine completed cross-validation runs of one data folder into an ensemble run: its threshold and "
        "calibration are fitted on the members' out-of-fold predictions; predict, evaluate, Compare and Grad-CAM treat it as any run.",
    )
    ensemble.add_argument("members", nargs="+", metavar="RUN_ID", help="The member runs (at least two).")
    ensemble.add_argument("--method", choices=ENSEMBLE_METHODS, default="mean", help=f"{ENSEMBLE_METHOD_HELP} [default: mean].")
    add_operating_point_options(ensemble)
    ensemble.add_argument("--calibration", dest="calibration_method", choices=CALIBRATION_METHODS, default="temperature", help="Fitted on the combined out-of-fold predictions [default: temperature].")
    ensemble.add_argument("--name", default="", help="A readable run name.")
    ensemble.add_argument("--background", action="store_true", help="Start a worker process and return the run id at once.")
    ensemble.add_argument("--json", action="store_true", help="Print the summary as JSON.")
    add_runs_dir(ensemble)
    ensemble.set_defaults(handler=command_ensemble)

    runs = commands.add_parser("runs", help="List runs with status and headline metrics.", description="List runs, newest first, with the CV estimate and the latest external evaluation.")
    runs.add_argument("--json", action="store_true", help="Print JSON.")
    add_runs_dir(runs)
    runs.set_defaults(handler=command_runs)

    for name, text, handler in (
        ("resume", "Resume an interrupted, stopped or failed run.", command_resume),
        ("stop", "Ask a running run to stop.", command_stop),
    ):
        sub = commands.add_parser(name, help=text, description=text)
        sub.add_argument("run_id", help="Run id.")
        if name == "resume":
            sub.add_argument("--background", action="store_true", help="Resume in a worker process and return at once.")
        add_runs_dir(sub)
        sub.set_defaults(handler=handler)

    worker = commands.add_parser("worker", help="(internal) Run a prepared run in this process.", description="Internal: body of a background job.")
    worker.add_argument("run_id", nargs="?", default=None, help="Run id.")
    worker.add_argument("--warm", action="store_true", help="(internal) Import TensorFlow, then wait for the dashboard to hand over a run.")
    add_runs_dir(worker)
    worker.set_defaults(handler=command_worker)


def add_tune_parser(commands) -> None:
    """Adds the `tune` subcommand."""
    from zoidberg.options.registry import ARCHITECTURES, training_option
    from zoidberg.tuning.config import ALGORITHMS, FIXED_TRAINING_OPTIONS, OBJECTIVES, TUNE_ENGINE_HELP, TUNE_ENGINES, TuneConfig

    defaults = argparse.Namespace(**{field.name: field.default for field in dataclasses.fields(TuneConfig) if field.name != "data"})
    tune = commands.add_parser(
        "tune",
        help="Search hyperparameters with keras-tuner on a patient-grouped split.",
        description="Search hyperparameters (random, Bayesian, Hyperband or grid search with keras-tuner) on a "
        "patient-grouped train/validation split of the pooled train+val images; the test split is never used. "
        "Searching over conv blocks and filters makes the CNN search a small architecture search.",
    )
    add_data_options(tune)
    tune.add_argument("--arch", choices=list(ARCHITECTURES), default="cnn", help="Architecture from the registry.")
    tune.add_argument("--algorithm", choices=ALGORITHMS, default=defaults.algorithm, help=f"Search algorithm [default: {defaults.algorithm}].")
    tune.add_argument("--objective", choices=list(OBJECTIVES), default=defaults.objective, help=f"What the search optimizes on the validation part [default: {defaults.objective}].")
    tune.add_argument("--max-trials", type=int, default=defaults.max_trials, help=f"Most configurations to try [default: {defaults.max_trials}].")
    tune.add_argument("--epochs", type=int, default=defaults.epochs_per_trial, help=f"Epochs per trial; Hyperband: the most any trial trains [default: {defaults.epochs_per_trial}].")
    tune.add_argument("--seed", type=int, default=defaults.seed, help=f"Seed of the split, the search and the trials [default: {defaults.seed}].")
    tune.add_argument("--validation-fraction", type=float, default=defaults.validation_fraction, help=f"Share of patients held out for the objective [default: {defaults.validation_fraction}].")
    tune.add_argument(
        "--space", default=None, metavar="JSON",
        help='Search-space changes as JSON (or @file.json): {"name": {"min_value": .., "max_value": .., "step": .., '
        '"log": ..}} or {"name": {"choices": [..]}} to tune, {"name": value} to fix. See --show-space.',
    )
    tune.add_argument("--show-space", action="store_true", help="Print the resolved search space and exit.")
    for name in FIXED_TRAINING_OPTIONS:
        option = training_option(name)
        add_option(tune, option, help_text=f"{option.help} The same for every trial.")
    add_engine_options(tune, TUNE_ENGINES, "inprocess", TUNE_ENGINE_HELP, unit="trials",
                       auto_help="with ray: as many as the cluster has CPUs")
    tune.add_argument("--name", default="", help="A readable run name.")
    tune.add_argument("--background", action="store_true", help="Start a worker process and return the run id at once.")
    tune.add_argument("--json", action="store_true", help="Print the summary as JSON.")
    add_runs_dir(tune)
    tune.set_defaults(handler=command_tune)

def _print_summary_table(summary: dict) -> None:
    mean_std = summary["mean_std"]
    names = [name for name in ("accuracy", "roc_auc", "pr_auc", "sensitivity", "specificity", "precision", "f1", "macro_auc", "macro_f1", "balanced_accuracy") if name in mean_std]
    print()
    print(f"{'fold':>6} " + " ".join(f"{name:>12}" for name in names))
    for index, fold in enumerate(summary["folds"], start=1):
        print(f"{index:>6} " + " ".join(f"{fmt(fold.get(name)):>12}" for name in names))
    print(f"{'mean':>6} " + " ".join(f"{fmt(mean_std[name]['mean']):>12}" for name in names))
    print(f"{'± std':>6} " + " ".join(f"{fmt(mean_std[name]['std']):>12}" for name in names))
    per_class = summary.get("out_of_fold", {}).get("per_class") or {}
    if len(per_class) > 2:
        # Three-class runs: which class the model confuses matters more than a macro mean.
        columns = ("precision", "recall", "specificity", "f1", "auc", "support")
        print(f"\nPer class, out-of-fold predictions of all folds:\n{'class':>10} " + " ".join(f"{name:>12}" for name in columns))
        for class_name, values in per_class.items():
            cells = [f"{values.get('support', 0):>12}" if name == "support" else f"{fmt(values.get(name)):>12}" for name in columns]
            print(f"{class_name:>10} " + " ".join(cells))
    if summary.get("threshold") is not None and len(summary.get("class_names", [])) == 2:
        print(f"\nDecision threshold ({summary['threshold_method']} on out-of-fold probabilities): {summary['threshold']:.3f}")
    if summary.get("test"):
        test = summary["test"]
        print(f"Held-out test split, fold ensemble: accuracy {fmt(test.get('accuracy'))}, AUC {fmt(test.get('roc_auc'))}")

def run_or_start(kind: str, config, args) -> tuple[str, dict | None]:
    """Prepares a run (refusing what would fail), then trains it here or starts a worker.

    Everything that would make the run fail (k above the patients of a class, three-class
    names missing, absent weights) is refused before a run folder or a worker exists.

    Args:
        kind: "cv" or "tune".
        config: The validated RunConfig or TuneConfig.
        args: The parsed options (background, json, runs_dir).

    Returns:
        (run id, summary); the summary is None with --background.
    """
    from zoidberg.launch.jobs import start_run
    from zoidberg.launch.kinds import get_kind
    from zoidberg.runs.store import RunStore

    run_kind = get_kind(kind)
    payload = run_kind.prepare(config, runs_dir=args.runs_dir)
    if args.background:
        return start_run(kind, payload, name=config.run_name, runs_dir=args.runs_dir), None
    run = RunStore(args.runs_dir).create_run(kind, payload, config.run_name)
    # With --json, standard output holds the JSON alone: progress goes to standard error.
    stream = sys.stderr if args.json else sys.stdout
    print(f"Run {run.id}", file=stream)
    from zoidberg.cli.terminal_progress import follow_run

    try:
        with follow_run(run, enabled=not args.json):
            summary = run_kind.run(run, lambda line: print(line, file=stream, flush=True))
    except Exception as error:  # The worker body recorded it (status.json has the traceback): one line here.
        if run.state != "failed" or isinstance(error, OSError):
            raise  # main() says what a full disk or an unreadable folder needs.
        from zoidberg.runs.worker import plain_error_message

        print(f"error: run {run.id} failed: {plain_error_message(error)} (the traceback is in {run.path / 'status.json'})", file=sys.stderr)
        return run.id, {}
    return run.id, summary

def command_cv(args) -> int:
    from zoidberg.models.weights import WeightsNotFoundError

    ensemble = bool(args.preset) and get_preset(args.preset).is_ensemble
    config = ensemble_preset_config(args) if ensemble else config_from_args(args)
    if getattr(config, "mlflow_uri", None):
        from zoidberg.integrations.mlflow_tracking import check_mlflow_installed

        check_mlflow_installed()
    if ensemble:
        print(f"The {args.preset} preset trains {len(config.recipes)} runs one after another, then combines them into an ensemble run.", file=sys.stderr if args.json else sys.stdout)
    if args.download_weights:
        fetch_missing_weights(config)
    try:
        run_id, summary = run_or_start("ensemble" if ensemble else "cv", config, args)
    except WeightsNotFoundError as error:
        alternative = get_preset(args.preset).alternative if args.preset else None
        if alternative is None:
            raise
        raise CliError(f"{error} Or train without weights: --preset {alternative} ({get_preset(alternative).description})") from None
    if summary is None:
        print(run_id)
        return 0
    if "folds" not in summary:
        return 1
    if args.json:
        print(json.dumps({"run_id": run_id, **summary}, indent=2))
    else:
        _print_summary_table(summary)
        print(f"\nRun id: {run_id}")
    return 0

def fetch_missing_weights(config) -> None:
    """Downloads the ImageNet files a cv config (or each run an ensemble trains) needs and lacks."""
    from zoidberg.models.weights import WeightsNotFoundError, download_imagenet_weights, resolve_imagenet_weights

    for recipe in getattr(config, "recipes", None) or (config,):
        model = recipe.model
        if model.weights != "imagenet":
            continue
        try:
            resolve_imagenet_weights(model.architecture, model.alpha, "imagenet", recipe.data.image_size)
        except WeightsNotFoundError:
            print(f"Downloading the ImageNet weights of {model.architecture} (alpha {model.alpha:g}) ...", file=sys.stderr)
            print(f"Saved {download_imagenet_weights(model.architecture, model.alpha)}", file=sys.stderr)


def command_ensemble(args) -> int:
    config = EnsembleConfig(
        members=tuple(args.members), method=args.method, operating_point=choice_from_args(args),
        calibration_method=args.calibration_method, run_name=args.name,
    )
    run_id, summary = run_or_start("ensemble", config, args)
    if summary is None:
        print(run_id)
        return 0
    if "folds" not in summary:
        return 1
    if args.json:
        print(json.dumps({"run_id": run_id, **summary}, indent=2))
        return 0
    for member in summary.get("members", []):
        print(f"member {member['run_id']} ({member['name']}): out-of-fold AUC {fmt(member['roc_auc'])}")
    _print_summary_table(summary)
    print(f"\nRun id: {run_id}")
    return 0


def _print_tuning_summary(summary: dict) -> None:
    trials = summary.get("trials", [])
    objective = summary.get("objective", "objective")
    names = list(dict.fromkeys(name for row in trials for name in row.get("hyperparameters", {})))
    print()
    print(f"{'trial':>5} {'status':>10} {objective:>13}  " + " ".join(f"{name:>14}" for name in names))
    for row in trials:
        values = row.get("hyperparameters", {})
        marker = " *" if row.get("trial") == summary.get("best_trial") else ""
        print(
            f"{row['trial']:>5} {row['status']:>10} {fmt4(row.get('objective')):>13}  "
            + " ".join(f"{short(values.get(name)):>14}" for name in names)
            + marker
        )
    if summary.get("best_hyperparameters") is None:
        print("\nNo trial finished.")
        return
    print(f"\nBest trial {summary['best_trial']} (marked *): {objective} {fmt4(summary['best_objective'])}")
    print("Best hyperparameters:")
    for name, value in summary["best_hyperparameters"].items():
        print(f"  {name:<16} {short(value)}")

def command_tune(args) -> int:
    config = tune_config_from_args(args)
    if args.show_space:
        for dimension in config.dimensions():
            print(f"{dimension.name:<18} {'tuned' if dimension.tuned else 'fixed':<6} {dimension.describe()}")
        return 0
    run_id, summary = run_or_start("tune", config, args)
    if summary is None:
        print(run_id)
        return 0
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        _print_tuning_summary(summary)
        print(f"\nRun id: {run_id}")
        if summary.get("best_hyperparameters") is not None:
            print(f"Cross-validate it: python -m zoidberg cv --from-tuning {run_id} --data {config.data.data_dir}")
    return 0 if summary.get("best_hyperparameters") is not None else 1

def ensemble_members(store, run) -> list[str]:
    """An ensemble's members as "preset-or-architecture id (folds N)", in order."""
    from zoidberg.runs.store import RunNotFoundError

    members = []
    for member_id in run.member_ids():
        try:
            member = store.get(member_id)
        except (RunNotFoundError, ValueError):
            members.append(f"{member_id} (missing)")
            continue
        what = member.config.get("preset") or (member.config.get("model") or {}).get("architecture") or member.kind
        members.append(f"{what} {member_id} (folds {len(member.fold_metrics())})")
    return members


def command_runs(args) -> int:
    from zoidberg.evaluation.stored import latest_external
    from zoidberg.launch.jobs import describe_engine
    from zoidberg.runs.store import DATA_FILE, MODEL_KINDS, SPLIT_FILE, RunStore

    rows = []
    store = RunStore(args.runs_dir)
    for run in store.list_runs():
        status = run.status()
        summary = run.summary() or {}
        mean_std = summary.get("mean_std", {})
        config = run.config
        external = latest_external(run) if run.kind in MODEL_KINDS else None
        external_metrics = (external or {}).get("metrics") or {}
        rows.append(
            {
                "id": run.id,
                "kind": run.kind,
                "name": run.name,
                "state": status.get("state"),
                "queue_position": status.get("position") if status.get("state") == "queued" and status.get("waiting") else None,
                "engine": describe_engine(config) if run.kind in ("cv", "tune") else None,
                "host": ", ".join(status.get("task_hosts") or []) or status.get("host"),
                "architecture": run.kind if run.kind in ("ensemble", "adapt") else config.get("model", {}).get("architecture") or config.get("architecture"),
                "preset": config.get("preset"),
                # An ensemble's folds are its members': its own count would say nothing.
                "folds_done": len(run.fold_metrics()) if run.kind in MODEL_KINDS and run.kind != "ensemble" else None,
                "members": ensemble_members(store, run) if run.kind == "ensemble" else None,
                "accuracy": (mean_std.get("accuracy") or {}).get("mean"),
                "roc_auc": (mean_std.get("roc_auc") or {}).get("mean"),
                "external": (external or {}).get("name"),
                "external_accuracy": external_metrics.get("accuracy"),
                "external_roc_auc": external_metrics.get("roc_auc"),
                "best_objective": summary.get("best_objective") if run.kind == "tune" else None,
                "objective": config.get("objective") if run.kind == "tune" else None,
                "synthetic": bool((run.read_json(DATA_FILE) or run.read_json(SPLIT_FILE) or {}).get("synthetic")),
                "error": status.get("error"),
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("No runs yet. Start one with: python -m zoidberg cv --data DIR")
        return 0
    print(f"{'id':<32} {'kind':<8} {'preset/arch':<14} {'state':<12} {'folds':>5} {'CV acc':>7} {'CV AUC':>7} {'ext acc':>7} {'ext AUC':>7}  name")
    for row in rows:
        headline = f"{fmt(row['accuracy']):>7} {fmt(row['roc_auc']):>7} {fmt(row['external_accuracy']):>7} {fmt(row['external_roc_auc']):>7}"
        if row["kind"] == "tune":
            # A search has no fold metrics: its headline is the best trial's objective.
            headline = f"{'best ' + str(row['objective']) + ' ' + fmt(row['best_objective']):>31}"
        notes = f" (members: {', '.join(row['members'])})" if row["members"] else ""
        notes += f" (external: {row['external']})" if row["external"] else ""
        notes += " (synthetic data)" if row["synthetic"] else ""
        notes += f" error: {row['error']}" if row["state"] in ("failed", "interrupted") and row["error"] else ""
        notes += f" [engine {row['engine']} on {row['host']}]" if row["engine"] and row["host"] else ""
        state = f"queued #{row['queue_position']}" if row["queue_position"] else str(row["state"])
        print(
            f"{row['id']:<32} {row['kind']:<8} {str(row['preset'] or row['architecture']):<14} {state:<12} "
            f"{'' if row['folds_done'] is None else row['folds_done']:>5} {headline}  {row['name']}{notes}"
        )
    return 0


def command_resume(args) -> int:
    from zoidberg.launch.jobs import reopen_run, resume_run, run_worker

    if args.background:
        print(resume_run(args.run_id, runs_dir=args.runs_dir).id)
        return 0
    run = reopen_run(args.run_id, runs_dir=args.runs_dir)
    return run_worker(run.id, runs_dir=args.runs_dir, report=lambda line: print(line, flush=True))

def command_stop(args) -> int:
    from zoidberg.launch.jobs import stop_run

    from zoidberg.runs.store import FINAL_STATES, RunStore

    state = RunStore(args.runs_dir).get(args.run_id).state
    if state in FINAL_STATES:
        print(f"Run {args.run_id} has already {'finished' if state == 'completed' else 'ended'} ({state}): there is nothing to stop.")
        return 0
    stop_run(args.run_id, runs_dir=args.runs_dir)
    print(f"Stop requested for {args.run_id}; it ends after the current batch.")
    return 0

def command_worker(args) -> int:
    from zoidberg.launch.jobs import run_worker

    if args.warm:
        from zoidberg.runs.store import RunStore
        from zoidberg.launch.warm import serve_warm

        return serve_warm(RunStore(args.runs_dir), run_worker, report=lambda line: print(line, flush=True))
    if not args.run_id:
        raise CliError("worker needs a run id (or --warm).")

    return run_worker(args.run_id, runs_dir=args.runs_dir, report=lambda line: print(line, flush=True))
