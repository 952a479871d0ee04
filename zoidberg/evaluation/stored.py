"""A run's stored evaluations (evaluations/<name>/): their figures from stored probabilities, at any operating point."""

from __future__ import annotations

import csv
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sklearn.metrics import precision_recall_curve, roc_auc_score

from zoidberg.evaluation import curves, metrics
from zoidberg.evaluation.calibration import calibration_summary
from zoidberg.evaluation.operating import DECISION_CURVE_THRESHOLDS, net_benefit, predictive_values
from zoidberg.evaluation.statistics import bootstrap_interval
from zoidberg.runs.store import (
    EVALUATION_FILE,
    EVALUATIONS_DIR,
    OPERATING_POINT_FILE,
    PREDICTIONS_FILE,
    Run,
    open_csv,
    validate_evaluation_name,
    write_json_atomic,
)

HISTOGRAM_BINS = 20


def evaluation_name(data_dir: str | os.PathLike, split: str) -> str:
    """The default name of an evaluation: the folder's name, plus "-test" for its test split."""
    base = re.sub(r"[^A-Za-z0-9_\-]+", "-", Path(data_dir).expanduser().resolve().name).strip("-_") or "external"
    return validate_evaluation_name((base + ("-test" if split == "test" else ""))[:80])


def _curves(labels: np.ndarray, probabilities: np.ndarray, class_names) -> tuple[dict, dict]:
    """ROC and precision-recall curves (binary: of pneumonia; multiclass: one vs rest ROC)."""
    if len(class_names) != 2:
        return curves.roc_curves_one_vs_rest(labels, probabilities, list(class_names)), {}
    roc = {"pneumonia": curves.roc_curve_points(labels, probabilities[:, 1])}
    if len(np.unique(labels)) < 2:
        return roc, {}
    precision, recall, _ = precision_recall_curve(labels, probabilities[:, 1])
    keep = np.unique(np.linspace(0, len(precision) - 1, min(len(precision), 200)).astype(int))
    return roc, {"pneumonia": {"precision": precision[keep].tolist(), "recall": recall[keep].tolist()}}


def _auc_interval(labels: np.ndarray, probabilities: np.ndarray, groups: np.ndarray, class_names) -> dict | None:
    """The patient-bootstrap 95 % interval of the (macro) AUC, or None with one class."""
    if len(np.unique(labels)) < 2:
        return None
    if len(class_names) == 2:
        return bootstrap_interval(labels, probabilities[:, 1], groups)

    def macro_auc(sample_labels, sample_rows):
        return float(roc_auc_score(sample_labels, probabilities[sample_rows.astype(int)], multi_class="ovr", average="macro"))

    # The statistic sees row numbers as its "scores", so that it can gather the class columns.
    return bootstrap_interval(labels, np.arange(len(labels), dtype=float), groups, macro_auc)


def score_histogram(labels: np.ndarray, positive: np.ndarray, class_names) -> dict:
    """Counts of the score in HISTOGRAM_BINS equal bins, per true class (shift is seen, not guessed)."""
    edges = np.linspace(0.0, 1.0, HISTOGRAM_BINS + 1)
    counts = {
        str(name): np.histogram(positive[labels == index], bins=edges)[0].tolist() for index, name in enumerate(class_names)
    }
    return {"edges": edges.tolist(), "counts": counts}


def summarize_scores(
    labels: np.ndarray,
    raw: np.ndarray,
    calibrated: np.ndarray | None,
    groups: np.ndarray,
    class_names,
    *,
    threshold: float,
    scale: str,
    prevalence: float | None,
) -> dict:
    """Every figure of an evaluation that the probabilities alone decide (no network pass).

    Args:
        labels: Class indices of the images.
        raw: (N, C) raw ensemble probabilities.
        calibrated: (N, C) calibrated ones, or None.
        groups: Patient ids, for the bootstrap.
        class_names: Class names in order.
        threshold: The run's threshold on `scale`.
        scale: "raw" or "calibrated".
        prevalence: The stated prevalence for PPV and NPV (None: this folder's own share).
    """
    in_use = calibrated if scale == "calibrated" and calibrated is not None else raw
    binary = len(class_names) == 2
    one_class = len(np.unique(labels)) < 2
    result = {
        "metrics": metrics.to_jsonable(metrics.evaluate_predictions(labels, in_use, class_names, threshold)),
        "auc_ci": _auc_interval(labels, in_use, groups, class_names),
        "one_class": bool(one_class),
        "calibration": {
            "raw": calibration_summary(labels, raw),
            "calibrated": calibration_summary(labels, calibrated) if calibrated is not None else None,
        },
    }
    result["roc"], result["pr"] = _curves(labels, in_use, class_names)
    if binary:
        curve_scores = calibrated[:, 1] if calibrated is not None else raw[:, 1]
        result["decision_curve"] = net_benefit(labels, curve_scores, DECISION_CURVE_THRESHOLDS)
        result["score_histogram"] = score_histogram(labels, in_use[:, 1], class_names)
        sensitivity, specificity = result["metrics"].get("sensitivity"), result["metrics"].get("specificity")
        stated = prevalence if prevalence is not None else float(np.mean(labels == 1))
        ppv, npv = (None, None)
        if sensitivity is not None and specificity is not None and np.isfinite(sensitivity) and np.isfinite(specificity):
            ppv, npv = predictive_values(sensitivity, specificity, stated)
        result["predictive_values"] = {
            "prevalence": stated,
            "source": "stated" if prevalence is not None else "this folder",
            "ppv": ppv,
            "npv": npv,
        }
    return result


def write_evaluation_predictions(path: Path, dataset, rows, labels, raw, calibrated, decided, per_fold, class_names, gate_scores=None) -> None:
    """predictions.csv: one row per image with raw and calibrated probabilities, the decision and the gate's verdict."""
    columns = ["path", "patient", "label", "prediction", "correct", "spread"]
    columns += [f"p_raw_{name}" for name in class_names]
    if calibrated is not None:
        columns += [f"p_calibrated_{name}" for name in class_names]
    if gate_scores is not None:
        columns += ["in_distribution", "ood_score"]
    column = 1 if len(class_names) == 2 else None
    # A file name that is not valid UTF-8 is kept byte for byte (open_csv), as in every CSV of the run.
    with open_csv(path, "w") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for position, row in enumerate(rows):
            predicted = int(decided[position])
            spread_column = column if column is not None else predicted
            values = [
                dataset.paths[row],
                dataset.patients[row],
                class_names[labels[position]],
                class_names[predicted],
                int(predicted == labels[position]),
                f"{per_fold[:, position, spread_column].std():.6f}",
            ]
            values += [f"{value:.6f}" for value in raw[position]]
            if calibrated is not None:
                values += [f"{value:.6f}" for value in calibrated[position]]
            if gate_scores is not None:
                values += [int(gate_scores[position][0]), f"{gate_scores[position][1]:.4f}"]
            writer.writerow(values)


def read_predictions(run: Run, name: str) -> dict:
    """Reads an evaluation's predictions.csv back: labels, raw and calibrated probabilities, paths and patients."""
    import pandas as pd

    frame = pd.read_csv(run.evaluation_path(name, PREDICTIONS_FILE), keep_default_na=False, encoding_errors="surrogateescape")
    evaluation = run.read_json(f"{EVALUATIONS_DIR}/{name}/{EVALUATION_FILE}") or {}
    class_names = list(evaluation.get("class_names") or [])
    raw = frame[[f"p_raw_{name}" for name in class_names]].to_numpy(dtype=float)
    calibrated_columns = [f"p_calibrated_{name}" for name in class_names]
    calibrated = frame[calibrated_columns].to_numpy(dtype=float) if all(column in frame for column in calibrated_columns) else None
    labels = np.array([class_names.index(value) for value in frame["label"]])
    return {
        "frame": frame,
        "labels": labels,
        "raw": raw,
        "calibrated": calibrated,
        "paths": frame["path"].tolist(),
        "patients": frame["patient"].astype(str).to_numpy(),
        "class_names": class_names,
    }


def rescore_evaluation(run: Run, name: str, threshold: float, scale: str, prevalence: float | None) -> dict:
    """An evaluation's figures at another operating point, from its stored probabilities (no network pass)."""
    stored = read_predictions(run, name)
    return summarize_scores(
        stored["labels"], stored["raw"], stored["calibrated"], stored["patients"], stored["class_names"],
        threshold=threshold, scale=scale, prevalence=prevalence,
    )


def store_evaluation(run: Run, name: str, evaluation: dict, write_predictions: Callable[[Path], None]) -> None:
    """Writes an evaluation folder next to the others and renames it into place, whole or not at all."""
    parent = run.path / EVALUATIONS_DIR
    parent.mkdir(exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=parent))
    try:
        write_predictions(staging / PREDICTIONS_FILE)
        write_json_atomic(staging / EVALUATION_FILE, evaluation)
        target = parent / name
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def latest_external(run: Run) -> dict | None:
    """The newest evaluation that is not the run's own test split, or None."""
    external = [item for item in run.evaluations() if item.get("name") != "test"]
    return external[-1] if external else None


def current_evaluations(run: Run) -> list[dict]:
    """The run's evaluations, each at the run's current operating point (re-scored in memory when it changed)."""
    point = run.read_json(OPERATING_POINT_FILE)
    evaluations = []
    for evaluation in run.evaluations():
        if point and (evaluation.get("threshold") != point["threshold"] or evaluation.get("scale") != point["choice"].get("probabilities")):
            try:
                scale = point["choice"].get("probabilities", "raw")
                evaluation = {
                    **evaluation,
                    **rescore_evaluation(run, evaluation["name"], point["threshold"], scale, point["choice"].get("prevalence")),
                    "threshold": point["threshold"],
                    "scale": scale,
                }
            except (OSError, ValueError, KeyError):
                pass  # Shown as stored, at the threshold it names.
        evaluations.append(evaluation)
    return evaluations
