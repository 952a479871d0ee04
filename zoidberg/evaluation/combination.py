"""How an ensemble combines its members' probabilities: the mean, or stacking fitted (and cross-fitted) on out-of-fold predictions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Probabilities are clipped this far from 0 and 1 before logits, so a member's saturated 1.0
# cannot dominate the stacking's fit.
LOGIT_EPSILON = 1e-4
# The logistic regression's L2 strength (sklearn's C): mild, the members are few and correlated.
STACKING_C = 1.0


@dataclass(frozen=True)
class Combiner:
    """How an ensemble turns its members' class probabilities into one.

    Attributes:
        method: "mean" or "stacking".
        coefficients: Stacking: one weight per member on the logit of P(pneumonia).
        intercept: Stacking: the logistic regression's intercept.
    """

    method: str = "mean"
    coefficients: tuple[float, ...] = ()
    intercept: float = 0.0

    def apply(self, member_probabilities: np.ndarray) -> np.ndarray:
        """Combines (members, N, C) probabilities into (N, C)."""
        member_probabilities = np.asarray(member_probabilities, dtype=np.float64)
        if self.method == "mean":
            return member_probabilities.mean(axis=0)
        logits = _logits(member_probabilities[:, :, 1])  # (members, N)
        positive = 1.0 / (1.0 + np.exp(-(np.asarray(self.coefficients) @ logits + self.intercept)))
        return np.stack([1.0 - positive, positive], axis=1)

    def to_dict(self) -> dict:
        """The JSON stored as ensemble.json."""
        return {"method": self.method, "coefficients": list(self.coefficients), "intercept": self.intercept}

    @classmethod
    def from_dict(cls, payload: dict) -> Combiner:
        """Reads ensemble.json."""
        return cls(payload.get("method", "mean"), tuple(float(value) for value in payload.get("coefficients", ())), float(payload.get("intercept", 0.0)))


def _logits(positive: np.ndarray) -> np.ndarray:
    clipped = np.clip(positive, LOGIT_EPSILON, 1.0 - LOGIT_EPSILON)
    return np.log(clipped / (1.0 - clipped))


def fit_combiner(method: str, member_probabilities: np.ndarray, labels: np.ndarray) -> Combiner:
    """Fits a combiner on (members, N, C) out-of-fold probabilities.

    Raises:
        ValueError: Stacking asked of a three-class ensemble.
    """
    if method == "mean":
        return Combiner("mean")
    if member_probabilities.shape[2] != 2:
        raise ValueError("Stacking combines P(pneumonia) of binary runs; use the mean for three-class runs.")
    from sklearn.linear_model import LogisticRegression

    features = _logits(member_probabilities[:, :, 1]).T
    model = LogisticRegression(C=STACKING_C).fit(features, labels)
    return Combiner("stacking", tuple(float(value) for value in model.coef_[0]), float(model.intercept_[0]))


def out_of_fold_combination(method: str, member_probabilities: np.ndarray, labels: np.ndarray, fold_of: np.ndarray) -> np.ndarray:
    """The ensemble's own out-of-fold probabilities (N, C).

    The mean needs no fitting. Stacking is cross-fitted: each fold's rows are combined by a
    regression fitted on the other folds, so that the threshold and the calibration fitted
    next see probabilities no part of the ensemble was fitted on.
    """
    if method == "mean":
        return member_probabilities.mean(axis=0)
    combined = np.zeros(member_probabilities.shape[1:], dtype=np.float64)
    for fold in np.unique(fold_of):
        held = fold_of == fold
        combined[held] = fit_combiner(method, member_probabilities[:, ~held], labels[~held]).apply(member_probabilities[:, held])
    return combined
