"""The end every run shares (cross-validation, ensembles, adaptations): calibration, operating point, summary and MLflow."""

from __future__ import annotations

import dataclasses

import numpy as np

from zoidberg.config import RunConfig
from zoidberg.evaluation import metrics
from zoidberg.runs import progress as events
from zoidberg.runs.store import CALIBRATION_FILE, SUMMARY_FILE, Run
from zoidberg.runs.worker import Reporter


def fit_run_calibration(run: Run, config: RunConfig, labels: np.ndarray, oof: np.ndarray, say: Reporter):
    """Fits the calibration on the out-of-fold predictions only, and stores it with its effect.

    Returns:
        The Calibration, or None when the out-of-fold predictions hold one class.
    """
    from zoidberg.evaluation.calibration import calibration_summary, fit_calibration

    try:
        calibration = fit_calibration(labels, oof, config.calibration_method)
    except ValueError as error:
        say(f"No calibration: {error}")
        return None
    calibrated = calibration.apply(oof)
    stored = {
        "calibration": calibration.to_dict(),
        "fitted_on": "out-of-fold predictions of the pooled train+val images (never the test split)",
        "n": int(len(labels)),
        "out_of_fold": {"raw": calibration_summary(labels, oof), "calibrated": calibration_summary(labels, calibrated)},
    }
    run.write_json(CALIBRATION_FILE, stored)
    say(
        f"Calibration ({calibration.method}, fitted on out-of-fold predictions): ECE {stored['out_of_fold']['raw']['ece']:.3f} "
        f"-> {stored['out_of_fold']['calibrated']['ece']:.3f}, Brier {stored['out_of_fold']['raw']['brier']:.3f} "
        f"-> {stored['out_of_fold']['calibrated']['brier']:.3f}"
    )
    return calibration


def summarize_out_of_fold(run, config, labels, oof, fold_of, class_names, train_seconds, say, **extra) -> dict:
    """Fits the calibration and the operating point on out-of-fold predictions and writes summary.json.

    Cross-validation runs and ensembles of runs end the same way: whatever chose their
    out-of-fold probabilities, the threshold and the calibration see only those.

    Args:
        run: The run (folds.csv and every fold's oof.npz are written).
        config: Its RunConfig or EnsembleConfig (operating_point, calibration_method).
        labels: Class indices of the out-of-fold rows.
        oof: (N, C) out-of-fold probabilities.
        fold_of: The fold (0-based) of each row.
        class_names: Class names in order.
        train_seconds: Each fold's training time.
        say: Console reporter.
        **extra: More summary fields.

    Returns:
        The summary (also summary.json), with "test": None.
    """
    from zoidberg.evaluation.operating import DECISION_CURVE_THRESHOLDS, net_benefit
    from zoidberg.evaluation.out_of_fold import figures_at_threshold, set_operating_point

    n_splits = int(fold_of.max()) + 1
    calibration = fit_run_calibration(run, config, labels, oof, say)
    choice = config.operating_point
    if calibration is None and choice.probabilities == "calibrated":
        choice = dataclasses.replace(choice, probabilities="raw")
    scale = choice.probabilities
    in_use = calibration.apply(oof) if scale == "calibrated" else oof
    binary = len(class_names) == 2
    extras = {}
    threshold = 0.5
    if binary:
        # Chosen on what was just stored (folds.csv, oof.npz, calibration.json), exactly as a
        # later change of operating point from the dashboard or the CLI chooses it.
        point = set_operating_point(run, choice)
        threshold = point["threshold"]
        curve_scores = (calibration.apply(oof) if calibration is not None else oof)[:, 1]
        extras = {
            "operating_points": point["table"],
            "decision_curve": net_benefit(labels, curve_scores, DECISION_CURVE_THRESHOLDS),
        }
        say(
            f"Operating point ({choice.describe()}, {scale} probabilities): threshold {threshold:.3f}, "
            f"sensitivity {point['mean_std']['sensitivity']['mean']:.3f} ± {point['mean_std']['sensitivity']['std'] or 0:.3f}, "
            f"specificity {point['mean_std']['specificity']['mean']:.3f} ± {point['mean_std']['specificity']['std'] or 0:.3f} over folds"
        )
    summary = {
        "run_id": run.id,
        "class_names": list(class_names),
        "threshold": threshold,
        "threshold_method": choice.method if binary else "argmax",
        "operating_point": choice.describe() if binary else "argmax",
        "probabilities": scale,
        **figures_at_threshold(labels, in_use, fold_of, class_names, threshold, train_seconds),
        **metrics.to_jsonable(extras),
        "n_train_per_fold": [int(np.sum(fold_of != fold)) for fold in range(n_splits)],
        "n_validation_per_fold": [int(np.sum(fold_of == fold)) for fold in range(n_splits)],
        **extra,
        "test": None,
    }
    run.write_json(SUMMARY_FILE, summary)
    return summary


def finish_summary(run: Run, summary: dict, say: Reporter, what: str = "Cross-validation") -> dict:
    """Writes the final summary.json, logs the run to MLflow when asked, marks it completed and prints the headline."""
    run.write_json(SUMMARY_FILE, summary)
    if run.config.get("mlflow_uri"):
        summary["mlflow"] = log_to_mlflow(run, run.config["mlflow_uri"], say)
        run.write_json(SUMMARY_FILE, summary)
    run.set_status("completed", error=None)
    run.append_event(events.RUN_FINISHED, state="completed")
    mean_std = summary["mean_std"]
    say(
        f"{what} done: "
        + ", ".join(
            f"{name} {mean_std[name]['mean']:.3f} ± {mean_std[name]['std']:.3f}"
            for name in ("accuracy", "roc_auc", "sensitivity", "specificity")
            if name in mean_std and mean_std[name]["mean"] is not None
        )
    )
    return summary


def log_to_mlflow(run: Run, uri: str, say: Reporter) -> dict:
    """Logs the finished run to MLflow; a tracker that fails is reported, never a failed run."""
    from zoidberg.integrations.mlflow_tracking import log_run_to_mlflow
    from zoidberg.runs.worker import plain_error_message

    try:
        logged = log_run_to_mlflow(run, uri)
    except Exception as error:  # A tracker down or misconfigured must not lose the trained run.
        message = plain_error_message(error)
        say(f"MLflow logging failed ({message}); the run is complete: `python -m zoidberg mlflow --run {run.id}` logs it again.")
        return {"uri": uri, "error": message}
    say(f"Logged to MLflow {logged['uri']}: run {logged['run_id']} ({logged['metrics']} metrics).")
    return logged

