"""The gap between a run's cross-validation estimate and its evaluations on new data, metric by metric."""

from __future__ import annotations

from zoidberg.evaluation.metrics import finite_or_none
from zoidberg.runs.store import CALIBRATION_FILE, OPERATING_POINT_FILE, Run

GAP_METRICS = (
    ("roc_auc", "AUC"),
    ("accuracy", "Accuracy"),
    ("sensitivity", "Sensitivity"),
    ("specificity", "Specificity"),
    ("ppv", "PPV"),
    ("npv", "NPV"),
    ("ece", "ECE (lower is better)"),
    ("brier", "Brier score (lower is better)"),
)
CV_COLUMN = "cross-validation"


def cross_validation_figures(run: Run) -> dict[str, dict]:
    """{metric: {"value", "std"}} of the run's cross-validation, at its operating point."""
    summary = run.summary() or {}
    scale = summary.get("probabilities", "raw")
    figures = {name: {"value": finite_or_none(entry.get("mean")), "std": finite_or_none(entry.get("std"))} for name, entry in (summary.get("mean_std") or {}).items()}
    point = run.read_json(OPERATING_POINT_FILE) or {}
    for name in ("ppv", "npv"):
        entry = (point.get("mean_std") or {}).get(name) or {}
        figures[name] = {"value": finite_or_none(entry.get("mean")), "std": finite_or_none(entry.get("std"))}
    calibration = ((run.read_json(CALIBRATION_FILE) or {}).get("out_of_fold") or {}).get(scale) or {}
    for name in ("ece", "brier"):
        figures[name] = {"value": finite_or_none(calibration.get(name)), "std": None}
    return figures


def evaluation_figures(evaluation: dict) -> dict[str, dict]:
    """{metric: {"value", "low", "high"}} of one evaluation (AUC with its bootstrap interval)."""
    metrics = evaluation.get("metrics") or {}
    figures = {name: {"value": finite_or_none(metrics.get(name))} for name, _ in GAP_METRICS if name in metrics}
    interval = evaluation.get("auc_ci") or {}
    if "roc_auc" in figures:
        figures["roc_auc"].update(low=finite_or_none(interval.get("low")), high=finite_or_none(interval.get("high")))
    values = evaluation.get("predictive_values") or {}
    for name in ("ppv", "npv"):
        figures[name] = {"value": finite_or_none(values.get(name))}
    calibration = (evaluation.get("calibration") or {}).get(evaluation.get("scale", "raw")) or (evaluation.get("calibration") or {}).get("raw") or {}
    for name in ("ece", "brier"):
        figures[name] = {"value": finite_or_none(calibration.get(name))}
    return figures


def gap_table(run: Run, evaluations: list[dict]) -> list[dict]:
    """One row per metric: the cross-validation figure, then each evaluation's, and the change.

    Args:
        run: The run.
        evaluations: Its evaluations at the current operating point (external.current_evaluations).

    Returns:
        Rows {"metric", "key", CV_COLUMN: {"value", "std"}, <evaluation name>: {"value", "low",
        "high", "change"}}; a metric missing everywhere is left out.
    """
    cv = cross_validation_figures(run)
    rows = []
    for key, label in GAP_METRICS:
        row = {"metric": label, "key": key, CV_COLUMN: cv.get(key, {"value": None, "std": None})}
        for evaluation in evaluations:
            entry = dict(evaluation_figures(evaluation).get(key, {"value": None}))
            base = row[CV_COLUMN]["value"]
            entry["change"] = entry["value"] - base if entry.get("value") is not None and base is not None else None
            row[evaluation["name"]] = entry
        if any(isinstance(value, dict) and value.get("value") is not None for value in row.values()):
            rows.append(row)
    return rows
