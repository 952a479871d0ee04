"""A site head: a regularized logistic regression of the site's labels on the parent's log-odds and frozen features."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold

# Inverse L2 strengths tried by the inner, patient-grouped search of every head.
C_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
INNER_SPLITS = 4
# The parent's log-odds enter the head multiplied by this and not standardized, so that the
# L2 penalty barely touches their weight: the head keeps the parent's judgement as its prior
# and spends its penalty on what the site's films add. Measured on the 312-film site sample
# (BENCHMARKS.md, "Adaptation"): standardizing them with the 1,280 features cost 3 points of
# accuracy at the same sensitivity.
PRIOR_SCALE = 10.0
_EPSILON = 1e-6


def log_odds(positive: np.ndarray) -> np.ndarray:
    """log(p / (1 − p)) of probabilities, clipped away from 0 and 1."""
    positive = np.clip(np.asarray(positive, dtype=float), _EPSILON, 1 - _EPSILON)
    return np.log(positive / (1 - positive))


@dataclass(frozen=True)
class SiteHead:
    """One fitted head: standardization, then a linear score on [parent log-odds, features].

    Attributes:
        mean: Per-column mean the inputs are centred by (features: from the films it was
            fitted on, plus any unlabeled films of the site; the parent's log-odds: 0).
        scale: Per-column divisor (features: their standard deviation; log-odds: 1 / PRIOR_SCALE).
        coef: The logistic regression's weights, one per column.
        intercept: Its intercept.
        c: The inverse L2 strength the inner search chose.
    """

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    c: float

    def positive(self, inputs: np.ndarray) -> np.ndarray:
        """P(pneumonia) of (N, D) inputs."""
        score = ((np.asarray(inputs, dtype=float) - self.mean) / self.scale) @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-score))

    def to_dict(self) -> dict:
        """The JSON stored in the run."""
        return {
            "mean": self.mean.tolist(), "scale": self.scale.tolist(), "coef": self.coef.tolist(),
            "intercept": float(self.intercept), "c": float(self.c),
        }

    @classmethod
    def from_dict(cls, payload: dict) -> SiteHead:
        """Reads a stored head."""
        return cls(
            np.asarray(payload["mean"], dtype=float), np.asarray(payload["scale"], dtype=float),
            np.asarray(payload["coef"], dtype=float), float(payload["intercept"]), float(payload["c"]),
        )


def make_inputs(member_positive: np.ndarray, features: np.ndarray | None) -> np.ndarray:
    """The head's (N, D) inputs: each parent member's log-odds, then the frozen features (if any).

    Args:
        member_positive: (members, N) P(pneumonia) of the parent's members (one row for a
            single run: its fold mean).
        features: (N, F) frozen backbone features, or None for a recalibration only.
    """
    columns = log_odds(np.asarray(member_positive, dtype=float)).T
    return columns if features is None else np.hstack([columns, np.asarray(features, dtype=float)])


def _standardization(inputs: np.ndarray, extra: np.ndarray | None, n_prior: int) -> tuple[np.ndarray, np.ndarray]:
    pool = inputs if extra is None or not len(extra) else np.vstack([inputs, extra])
    mean = pool.mean(axis=0)
    scale = pool.std(axis=0)
    scale = np.where(scale > 1e-8, scale, 1.0)
    mean[:n_prior], scale[:n_prior] = 0.0, 1.0 / PRIOR_SCALE
    return mean, scale


def _inner_splits(labels: np.ndarray, groups: np.ndarray, random_state: int) -> list:
    """Patient-grouped inner folds, as many as the smaller class's patients allow (at most INNER_SPLITS)."""
    smallest = min(len(np.unique(groups[labels == label])) for label in (0, 1))
    n_splits = min(INNER_SPLITS, smallest)
    if n_splits < 2:
        return []
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=random_state)
    return list(splitter.split(np.zeros(len(labels)), labels, groups=groups))


def _fit(inputs: np.ndarray, labels: np.ndarray, c: float) -> LogisticRegression:
    return LogisticRegression(C=c, max_iter=2000).fit(inputs, labels)


def inner_probabilities(inputs: np.ndarray, labels: np.ndarray, groups: np.ndarray, c: float, splits: list) -> np.ndarray:
    """Out-of-fold P(pneumonia) of standardized inputs over the given patient-grouped splits."""
    out = np.zeros(len(labels))
    for train, held in splits:
        out[held] = _fit(inputs[train], labels[train], c).predict_proba(inputs[held])[:, 1]
    return out


def _log_loss(labels: np.ndarray, positive: np.ndarray) -> float:
    positive = np.clip(positive, _EPSILON, 1 - _EPSILON)
    return float(-np.mean(labels * np.log(positive) + (1 - labels) * np.log(1 - positive)))


def fit_site_head(
    inputs: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    *,
    n_prior: int,
    unlabeled: np.ndarray | None = None,
    c_grid: tuple[float, ...] = C_GRID,
    random_state: int = 0,
) -> tuple[SiteHead, np.ndarray]:
    """Fits a head on labeled site films, choosing its L2 strength by patient-grouped inner folds.

    Args:
        inputs: (N, D) make_inputs() of the labeled films.
        labels: 0/1 labels.
        groups: Patient ids (inner folds never split a patient).
        n_prior: How many leading columns are the parent's log-odds (make_inputs' first rows).
        unlabeled: (M, D) inputs of unlabeled films of the same site: they join the
            standardization statistics only (what the site's films look like), never the fit.
        c_grid: The inverse L2 strengths to try.
        random_state: Seed of the inner folds.

    Returns:
        (the head fitted on every labeled film at the chosen strength, the inner out-of-fold
        P(pneumonia) at that strength: honest scores of the films it was fitted on, for
        choosing a threshold without looking at held-out films).
    """
    labels = np.asarray(labels).astype(int)
    groups = np.asarray(groups)
    mean, scale = _standardization(inputs, unlabeled, n_prior)
    standard = (inputs - mean) / scale
    splits = _inner_splits(labels, groups, random_state)
    if not splits:
        raise ValueError("A site head needs films of at least two patients of each class.")
    scored = [(c, inner_probabilities(standard, labels, groups, c, splits)) for c in c_grid]
    c, inner = min(scored, key=lambda item: (_log_loss(labels, item[1]), item[0]))
    model = _fit(standard, labels, c)
    return SiteHead(mean, scale, model.coef_[0].astype(float), float(model.intercept_[0]), float(c)), inner
