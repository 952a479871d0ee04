"""Calibration: reliability bins, ECE and Brier score, and temperature or Platt scaling fitted on out-of-fold predictions."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from sklearn.linear_model import LogisticRegression

CALIBRATION_METHODS = ("temperature", "platt")
RELIABILITY_BINS = 10
_EPSILON = 1e-6


def _as_columns(probabilities: np.ndarray) -> np.ndarray:
    """(N,) P(positive) becomes (N, 2); (N, C) is kept."""
    values = np.asarray(probabilities, dtype=float)
    return np.stack([1.0 - values, values], axis=1) if values.ndim == 1 else values


def brier_score(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean squared distance between the predicted distribution and the one-hot truth.

    For two classes this is the usual mean of (p - y)^2 on P(positive); for more classes
    the sum over classes (Brier's original definition) divided by 2, so that both scales
    run from 0 (perfect) to 1.

    Args:
        labels: Class indices.
        probabilities: (N,) P(positive) or (N, C) class probabilities.
    """
    columns = _as_columns(probabilities)
    truth = np.eye(columns.shape[1])[np.asarray(labels, dtype=int)]
    return float(np.mean(np.sum((columns - truth) ** 2, axis=1)) / 2.0)


def reliability_bins(labels: np.ndarray, probabilities: np.ndarray, n_bins: int = RELIABILITY_BINS) -> list[dict]:
    """Equal-width bins of the predicted probability with the observed frequency in each.

    Binary runs bin P(pneumonia) against the share of pneumonia; multiclass runs bin the
    top class's probability against the share of images where that class is right.

    Returns:
        One {"low", "high", "count", "mean_predicted", "observed"} per bin (empty bins have
        count 0 and None values).
    """
    columns = _as_columns(probabilities)
    labels = np.asarray(labels, dtype=int)
    if columns.shape[1] == 2:
        confidence, hit = columns[:, 1], (labels == 1).astype(float)
    else:
        top = columns.argmax(axis=1)
        confidence, hit = columns[np.arange(len(top)), top], (top == labels).astype(float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # The last bin is closed on the right, so that a probability of exactly 1 is counted.
    which = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, n_bins - 1)
    bins = []
    for index in range(n_bins):
        mask = which == index
        count = int(mask.sum())
        bins.append(
            {
                "low": float(edges[index]),
                "high": float(edges[index + 1]),
                "count": count,
                "mean_predicted": float(confidence[mask].mean()) if count else None,
                "observed": float(hit[mask].mean()) if count else None,
            }
        )
    return bins


def expected_calibration_error(labels: np.ndarray, probabilities: np.ndarray, n_bins: int = RELIABILITY_BINS) -> float:
    """ECE: the count-weighted mean gap between predicted probability and observed frequency over the bins."""
    bins = reliability_bins(labels, probabilities, n_bins)
    total = sum(item["count"] for item in bins)
    return float(sum(item["count"] * abs(item["mean_predicted"] - item["observed"]) for item in bins if item["count"]) / total)


def calibration_summary(labels: np.ndarray, probabilities: np.ndarray) -> dict:
    """ECE, Brier score and the reliability bins, as stored in the run."""
    return {
        "ece": expected_calibration_error(labels, probabilities),
        "brier": brier_score(labels, probabilities),
        "bins": reliability_bins(labels, probabilities),
    }


def _logits(columns: np.ndarray) -> np.ndarray:
    """Binary: the log-odds of the positive class (N,); multiclass: log-probabilities (N, C)."""
    clipped = np.clip(columns, _EPSILON, 1.0 - _EPSILON)
    if clipped.shape[1] == 2:
        return np.log(clipped[:, 1]) - np.log(clipped[:, 0])
    return np.log(clipped)


def _from_logits(logits: np.ndarray) -> np.ndarray:
    """Inverse of _logits: (N, 2) or (N, C) probabilities."""
    if logits.ndim == 1:
        positive = 1.0 / (1.0 + np.exp(-logits))
        return np.stack([1.0 - positive, positive], axis=1)
    shifted = logits - logits.max(axis=1, keepdims=True)
    exponentials = np.exp(shifted)
    return exponentials / exponentials.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class Calibration:
    """A fitted recalibration of a run's probabilities.

    Attributes:
        method: "temperature" (divides the logits by one temperature, ranking unchanged) or
            "platt" (a logistic regression on the log-odds; binary runs only).
        temperature: The fitted temperature.
        platt_slope: Platt's slope on the log-odds (binary runs).
        platt_intercept: Platt's intercept.
    """

    method: str = "temperature"
    temperature: float = 1.0
    platt_slope: float | None = None
    platt_intercept: float | None = None

    def apply(self, probabilities: np.ndarray) -> np.ndarray:
        """Recalibrates (N, C) class probabilities (or (N,) P(positive), returned as (N,))."""
        values = np.asarray(probabilities, dtype=float)
        logits = _logits(_as_columns(values))
        if self.method == "platt" and self.platt_slope is not None and logits.ndim == 1:
            calibrated = _from_logits(self.platt_slope * logits + self.platt_intercept)
        else:
            calibrated = _from_logits(logits / self.temperature)
        return calibrated[:, 1] if values.ndim == 1 else calibrated

    def to_dict(self) -> dict:
        """Returns the JSON stored in the run."""
        return asdict(self)

    @classmethod
    def from_dict(cls, payload: dict) -> Calibration:
        """Reads a stored calibration."""
        return cls(**{key: payload[key] for key in ("method", "temperature", "platt_slope", "platt_intercept") if key in payload})


def fit_temperature(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Returns the temperature that minimizes the negative log-likelihood of the labels."""
    logits = _logits(_as_columns(probabilities))
    labels = np.asarray(labels, dtype=int)

    def loss(log_temperature: float) -> float:
        calibrated = _from_logits(logits / np.exp(log_temperature))
        return float(-np.mean(np.log(np.clip(calibrated[np.arange(len(labels)), labels], _EPSILON, 1.0))))

    result = minimize_scalar(loss, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(result.x))


def fit_platt(labels: np.ndarray, probabilities: np.ndarray) -> tuple[float, float]:
    """Returns (slope, intercept) of a logistic regression of the labels on the log-odds (binary)."""
    logits = _logits(_as_columns(probabilities))
    # A large C is an almost unregularized fit, as Platt (1999) intended.
    model = LogisticRegression(C=1e6, max_iter=1000).fit(logits[:, None], np.asarray(labels, dtype=int))
    return float(model.coef_[0, 0]), float(model.intercept_[0])


def fit_calibration(labels: np.ndarray, probabilities: np.ndarray, method: str = "temperature") -> Calibration:
    """Fits a calibration on out-of-fold predictions (never on test or external data).

    Args:
        labels: Class indices of the out-of-fold images.
        probabilities: Their (N, C) out-of-fold probabilities.
        method: "temperature" or "platt" (Platt falls back to temperature for more than two classes).

    Returns:
        The Calibration, holding the temperature always and Platt's parameters for binary runs.

    Raises:
        ValueError: For an unknown method or labels of one class only.
    """
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"Calibration method must be one of {', '.join(CALIBRATION_METHODS)}, not {method!r}.")
    columns = _as_columns(probabilities)
    if len(np.unique(labels)) < 2:
        raise ValueError("Calibration needs out-of-fold predictions of at least two classes.")
    temperature = fit_temperature(labels, columns)
    if columns.shape[1] != 2:
        return Calibration("temperature", temperature)
    slope, intercept = fit_platt(labels, columns)
    return Calibration(method, temperature, slope, intercept)
