"""A site's threshold chosen on all its films, labeled or not: expected sensitivity from the adapted model's calibrated probabilities."""

from __future__ import annotations

import numpy as np

from zoidberg.config import OperatingPointChoice
from zoidberg.evaluation.calibration import fit_platt
from zoidberg.evaluation.operating import choose_threshold
from zoidberg.models.site_heads import log_odds

# Below this many unlabeled films the pool adds too little: the labeled films' cross-fitted scores choose alone.
MIN_POOL = 50
POOL_METHODS = ("target-sensitivity", "target-specificity")


def choose_pool_threshold(labels: np.ndarray, crossfit_positive: np.ndarray, pool_positive: np.ndarray, choice: OperatingPointChoice) -> float:
    """The threshold that meets the sensitivity (or specificity) target in expectation over the site's unlabeled films.

    A few dozen labels hold only a handful of pneumonias, and the threshold that keeps 95 % of
    them is their second lowest score: a noisy pick. The site's unlabeled films are many: each
    counts as pneumonia with its calibrated probability (Platt, fitted on the labeled films'
    cross-fitted scores, a fair sample of the site), and the threshold is the highest whose
    expected sensitivity reaches the target.

    Args:
        labels: 0/1 labels of the labeled films.
        crossfit_positive: Their cross-fitted P(pneumonia) (each from heads that never saw it).
        pool_positive: The adapted model's P(pneumonia) of the unlabeled films.
        choice: The operating point; other methods than POOL_METHODS, or a small pool, use the labeled films alone.

    Returns:
        The threshold on the adapted model's raw scale.
    """
    labels = np.asarray(labels).astype(int)
    pool_positive = np.asarray(pool_positive, dtype=float)
    if choice.method not in POOL_METHODS or len(pool_positive) < MIN_POOL:
        return choose_threshold(labels, crossfit_positive, choice)
    slope, intercept = fit_platt(labels, np.asarray(crossfit_positive, dtype=float))
    pneumonia = 1.0 / (1.0 + np.exp(-(slope * log_odds(pool_positive) + intercept)))
    order = np.argsort(-pool_positive, kind="stable")
    scores = pool_positive[order]
    if choice.method == "target-sensitivity":
        reached = np.cumsum(pneumonia[order]) / max(pneumonia.sum(), 1e-12)
        index = int(np.flatnonzero(reached >= choice.target - 1e-12)[0])
        return float(scores[index])
    # Target specificity: the lowest threshold whose expected share of normals below it reaches the target.
    normal = (1.0 - pneumonia)[order]
    below = (normal.sum() - np.cumsum(normal)) / max(normal.sum(), 1e-12)
    index = int(np.flatnonzero(below >= choice.target - 1e-12)[-1])
    return float(scores[index])
