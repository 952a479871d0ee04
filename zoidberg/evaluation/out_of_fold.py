"""A finished run's out-of-fold predictions read back, and its operating point chosen again on them."""

from __future__ import annotations

import csv
from dataclasses import dataclass

import numpy as np

from zoidberg.config import OperatingPointChoice
from zoidberg.evaluation import curves, metrics
from zoidberg.evaluation.calibration import Calibration
from zoidberg.evaluation.operating import operating_point, operating_point_table
from zoidberg.runs.store import (
    CALIBRATION_FILE,
    DATA_FILE,
    FOLDS_FILE,
    OOF_FILE,
    OPERATING_POINT_FILE,
    SUMMARY_FILE,
    Run,
)


@dataclass(frozen=True)
class OutOfFold:
    """Every pooled image scored by the fold model that never saw it.

    Attributes:
        labels: Class indices.
        raw: (N, C) raw probabilities.
        calibrated: (N, C) probabilities after the run's calibration, or None.
        fold_of: The fold (0-based) of each image.
        paths: Image paths, relative to the data folder.
        patients: Patient ids.
        class_names: Class names in order.
    """

    labels: np.ndarray
    raw: np.ndarray
    calibrated: np.ndarray | None
    fold_of: np.ndarray
    paths: list[str]
    patients: np.ndarray
    class_names: tuple[str, ...]

    def scaled(self, scale: str) -> np.ndarray:
        """The probabilities on "raw" or "calibrated" (raw when the run has no calibration)."""
        return self.calibrated if scale == "calibrated" and self.calibrated is not None else self.raw


def read_out_of_fold(run: Run) -> OutOfFold:
    """Reads folds.csv, every fold's oof.npz and calibration.json of a run.

    Raises:
        ValueError: The run has no folds.csv or a fold has no out-of-fold predictions.
    """
    try:
        with run.open_text(FOLDS_FILE) as handle:
            rows = list(csv.DictReader(handle))
    except OSError:
        raise ValueError(f"Run {run.id} has no folds.csv: it has not started its folds.") from None
    summary = run.summary() or {}
    data = run.read_json(DATA_FILE) or {}
    class_names = tuple(summary.get("class_names") or data.get("class_names") or sorted({row["label"] for row in rows}))
    labels = np.array([class_names.index(row["label"]) for row in rows])
    fold_of = np.array([int(row["fold"]) - 1 for row in rows])
    raw = np.full((len(rows), len(class_names)), np.nan)
    for fold in run.folds_with(OOF_FILE):
        with np.load(run.fold_path(fold, OOF_FILE)) as stored:
            raw[stored["indices"]] = stored["probabilities"]
    if np.isnan(raw).any():
        raise ValueError(f"Run {run.id} lacks out-of-fold predictions of some folds: operating points need every fold.")
    stored_calibration = (run.read_json(CALIBRATION_FILE) or {}).get("calibration")
    calibrated = Calibration.from_dict(stored_calibration).apply(raw) if stored_calibration else None
    return OutOfFold(
        labels=labels,
        raw=raw,
        calibrated=calibrated,
        fold_of=fold_of,
        paths=[row["path"] for row in rows],
        patients=np.array([row["patient"] for row in rows], dtype=object),
        class_names=class_names,
    )


def roc_payload(labels: np.ndarray, probabilities: np.ndarray, class_names) -> dict:
    """ROC curve points: of pneumonia for binary runs, one vs rest per class otherwise."""
    if len(class_names) == 2:
        return {"pneumonia": curves.roc_curve_points(labels, probabilities[:, 1])}
    return curves.roc_curves_one_vs_rest(labels, probabilities, list(class_names))


def figures_at_threshold(
    labels: np.ndarray, probabilities: np.ndarray, fold_of: np.ndarray, class_names, threshold: float, train_seconds: list
) -> dict:
    """The summary's threshold-dependent figures: per-fold metrics, their mean ± std, the pooled out-of-fold metrics and ROC.

    Args:
        labels: Class indices of the out-of-fold images.
        probabilities: Their (N, C) probabilities on the scale the threshold applies to.
        fold_of: The fold (0-based) of each image.
        class_names: Class names in order.
        threshold: The decision threshold (binary runs).
        train_seconds: Each fold's training time, kept in the per-fold rows.
    """
    folds = []
    for fold in range(int(fold_of.max()) + 1):
        mask = fold_of == fold
        fold_metrics = metrics.evaluate_predictions(labels[mask], probabilities[mask], class_names, threshold)
        folds.append({**metrics.to_jsonable(fold_metrics), "train_seconds": train_seconds[fold] if fold < len(train_seconds) else None})
    return {
        "folds": folds,
        "mean_std": metrics.to_jsonable(metrics.summarize_folds(folds)),
        "out_of_fold": metrics.to_jsonable(metrics.evaluate_predictions(labels, probabilities, class_names, threshold)),
        "roc": metrics.to_jsonable(roc_payload(labels, probabilities, class_names)),
    }


def set_operating_point(run: Run, choice: OperatingPointChoice) -> dict:
    """Chooses a completed binary run's operating point again on its out-of-fold predictions, and stores it.

    Predict, `predict`, `evaluate` and reports then use the new threshold; stored
    evaluations are re-scored from their stored probabilities when next shown or evaluated.

    Args:
        run: A completed binary cross-validation run.
        choice: The method, its parameters, the prevalence and the probability scale.

    Returns:
        The operating point (also operating_point.json), with the table of the usual methods.

    Raises:
        ValueError: For a three-class run, a run without every fold's predictions, or
            "calibrated" on a run without a calibration.
    """
    out_of_fold = read_out_of_fold(run)
    if len(out_of_fold.class_names) != 2:
        raise ValueError("Three-class runs predict the most probable class: they have no threshold to choose.")
    if choice.probabilities == "calibrated" and out_of_fold.calibrated is None:
        raise ValueError(f"Run {run.id} has no calibration (it was made before calibrations were fitted); use raw probabilities.")
    positive = out_of_fold.scaled(choice.probabilities)[:, 1]
    point = operating_point(out_of_fold.labels, positive, out_of_fold.fold_of, choice)
    point["table"] = operating_point_table(out_of_fold.labels, positive, out_of_fold.fold_of, choice.prevalence)
    run.write_json(OPERATING_POINT_FILE, point)
    summary = run.summary()
    if summary and summary.get("folds"):
        # The summary's sensitivities, specificities and accuracies are at the threshold: they
        # follow the new operating point, as everything else that reads the run does.
        seconds = [fold.get("train_seconds") for fold in summary["folds"]]
        refreshed = figures_at_threshold(
            out_of_fold.labels, out_of_fold.scaled(choice.probabilities), out_of_fold.fold_of, out_of_fold.class_names,
            point["threshold"], seconds,
        )
        summary.update(refreshed)
        summary.update(
            threshold=point["threshold"],
            threshold_method=choice.method,
            operating_point=choice.describe(),
            probabilities=choice.probabilities,
            operating_points=point["table"],
        )
        run.write_json(SUMMARY_FILE, summary)
    return point


def current_operating_point(run: Run) -> dict | None:
    """The run's stored operating point, or None (three-class runs, runs from before operating points)."""
    return run.read_json(OPERATING_POINT_FILE)
