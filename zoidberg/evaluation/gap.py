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


# Metrics where a rise is harm; for all the others a fall is.
LOWER_IS_BETTER = ("ece", "brier")
# A change smaller than this is within what a few hundred films can tell apart; from LARGE_GAP on,
# the run view opens "Why the two differ" at once.
NOTABLE_CHANGE = 0.02
LARGE_GAP = 0.05


def harm_of(key: str, change: float | None) -> str:
    """"worse", "better" or "same": a change judged by what it does to patients, not by its sign."""
    if change is None or abs(change) < NOTABLE_CHANGE:
        return "same"
    harmful = change > 0 if key in LOWER_IS_BETTER else change < 0
    return "worse" if harmful else "better"


def _count_sentence(evaluation: dict) -> str | None:
    """"On these 312 films, 40 of 117 healthy children would be called pneumonia, and 11 of 195 with pneumonia missed."."""
    matrix = (evaluation.get("metrics") or {}).get("confusion_matrix")
    if len(evaluation.get("class_names") or []) != 2 or not matrix:
        return None
    (true_negative, false_positive), (false_negative, true_positive) = matrix
    healthy, sick = true_negative + false_positive, false_negative + true_positive
    return (
        f"On these {healthy + sick} films, {false_positive} of {healthy} healthy children would be called pneumonia, "
        f"and {false_negative} of {sick} children with pneumonia would be missed."
    )


def gap_verdict(run: Run, evaluation: dict) -> dict:
    """What one evaluation says against cross-validation, in a clinician's terms.

    Returns:
        {"level": "worse" | "mixed" | "holds", "large": bool (a harmful change of LARGE_GAP or more),
        "headline": one sentence, "counts": the films-and-children sentence or None,
        "changes": [{"key", "metric", "cv", "value", "change", "harm"}]}.
    """
    changes = []
    for row in gap_table(run, [evaluation]):
        entry = row.get(evaluation["name"]) or {}
        change = entry.get("change")
        changes.append({"key": row["key"], "metric": row["metric"], "cv": row[CV_COLUMN].get("value"), "value": entry.get("value"),
                        "change": change, "harm": harm_of(row["key"], change)})
    worse = [item for item in changes if item["harm"] == "worse"]
    better = [item for item in changes if item["harm"] == "better"]
    large = any(abs(item["change"]) >= LARGE_GAP for item in worse)
    name = evaluation["name"]
    if worse:
        listed = ", ".join(f"{item['metric'].split(' (')[0]} {item['cv']:.3f} → {item['value']:.3f}" for item in sorted(worse, key=lambda item: -abs(item["change"])))
        headline = f"Worse on {name} than cross-validation promised: {listed}."
        level = "mixed" if better else "worse"
    else:
        headline = f"On {name} the run holds its cross-validation estimate (no metric worse by {NOTABLE_CHANGE} or more)."
        level = "holds"
    return {"level": level, "large": large, "headline": headline, "counts": _count_sentence(evaluation), "changes": changes}
