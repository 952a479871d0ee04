"""ROC curve points for plotting: one binary curve, or one per class against the rest."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from zoidberg.evaluation.metrics import NAN, binary_inputs, has_both_classes, multiclass_inputs


def _downsample_indices(length: int, max_points: int) -> np.ndarray:
    """Evenly spaced indices into a curve of the given length, always keeping both ends."""
    if length <= max_points:
        return np.arange(length)
    return np.unique(np.round(np.linspace(0, length - 1, max_points)).astype(int))


def _validate_max_points(max_points: int) -> None:
    """Raises ValueError unless max_points is a whole number of at least 2."""
    if isinstance(max_points, bool) or not isinstance(max_points, (int, np.integer)) or max_points < 2:
        raise ValueError(f"max_points must be a whole number of at least 2, not {max_points!r}.")


def roc_curve_points(y_true: Any, prob: Any, max_points: int = 200) -> dict:
    """Returns ROC curve points for plotting, downsampled to at most max_points.

    The first point (0, 0) and the last point (1, 1) are always kept. sklearn
    reports the first threshold as +inf (nothing called positive); it is given
    as 1.0 here so that every threshold is a finite probability.

    Args:
        y_true: Labels, 1 for the positive class and 0 otherwise, shape (N,).
        prob: Score of the positive class, shape (N,) or (N, 1).
        max_points: Largest number of points to return, at least 2.

    Returns:
        Dict with lists of python floats ``fpr``, ``tpr``, ``thresholds`` and the
        float ``auc``; the lists are empty and ``auc`` is NaN when y_true holds
        only one class.
    """
    _validate_max_points(max_points)
    labels, values = binary_inputs(y_true, prob)
    if not has_both_classes(labels):
        return {"fpr": [], "tpr": [], "thresholds": [], "auc": NAN}
    false_positive_rate, true_positive_rate, thresholds = roc_curve(labels, values)
    thresholds = np.where(np.isfinite(thresholds), thresholds, 1.0)
    keep = _downsample_indices(len(thresholds), max_points)
    return {
        "fpr": [float(value) for value in false_positive_rate[keep]],
        "tpr": [float(value) for value in true_positive_rate[keep]],
        "thresholds": [float(value) for value in np.clip(thresholds[keep], 0.0, 1.0)],
        "auc": float(roc_auc_score(labels, values)),
    }


def roc_curves_one_vs_rest(
    y_true: Any, probs: Any, class_names: Sequence[str], max_points: int = 200
) -> dict:
    """Returns one ROC curve per class, each class against all the others.

    Args:
        y_true: Class indices into class_names, shape (N,).
        probs: Class probabilities, shape (N, C) with C == len(class_names).
        class_names: Display name of each class, in column order.
        max_points: Largest number of points per curve, at least 2.

    Returns:
        ``{name: roc_curve_points(...)}``; a class absent from y_true (or the only
        class present) gets empty lists and a NaN ``auc``.
    """
    labels, values = multiclass_inputs(y_true, probs, class_names)
    return {
        str(name): roc_curve_points((labels == index).astype(int), values[:, index], max_points)
        for index, name in enumerate(class_names)
    }
