"""Per-fold metrics, Youden threshold, ROC points, fold summaries and the corrected resampled t-test."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

NAN = float("nan")

# Tolerance under which fold differences count as identical, so that rounding noise
# (0.9 - 0.8 is not exactly 0.85 - 0.75) does not turn a zero variance into a huge t.
_ZERO_TOLERANCE = 1e-12

# Every metric's names, declared once: (the short label of cards and table columns, the long
# label of comparison tables, the name inside a sentence).
METRIC_NAMES = {
    "roc_auc": ("AUC", "ROC AUC", "AUC"),
    "accuracy": ("Accuracy", "Accuracy", "accuracy"),
    "sensitivity": ("Sensitivity", "Sensitivity (recall)", "sensitivity"),
    "specificity": ("Specificity", "Specificity", "specificity"),
    "precision": ("Precision", "Precision (PPV)", "precision"),
    "f1": ("F1", "F1", "F1 score"),
    "pr_auc": ("PR AUC", "PR AUC (average precision)", "average precision"),
    "balanced_accuracy": ("Balanced accuracy", "Balanced accuracy", "balanced accuracy"),
    "macro_f1": ("Macro F1", "Macro F1", "macro F1 score"),
    "macro_auc": ("Macro AUC", "Macro AUC (one-vs-rest)", "macro AUC"),
}
SHORT_LABELS = {key: names[0] for key, names in METRIC_NAMES.items()}
LONG_LABELS = {key: names[1] for key, names in METRIC_NAMES.items()}
_METRIC_LABELS = {key: names[2] for key, names in METRIC_NAMES.items()}


def is_finite_number(value) -> bool:
    """Tells whether a value is a finite real number (bools excluded)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def finite_or_none(value) -> float | None:
    """The value as a float when it is a finite real number (bools excluded), else None."""
    return float(value) if is_finite_number(value) else None


# ---------------------------------------------------------------------------
# Input validation.
# ---------------------------------------------------------------------------


def _as_labels(y_true: Any, num_classes: int) -> np.ndarray:
    """Returns y_true as a 1-D int array after checking every label is in [0, num_classes)."""
    labels = np.asarray(y_true)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise ValueError(f"y_true must be a 1-D array of class indices, not shape {labels.shape}.")
    if labels.size == 0:
        raise ValueError("y_true is empty: there is nothing to evaluate.")
    if labels.dtype == bool:
        labels = labels.astype(int)
    if not np.issubdtype(labels.dtype, np.number):
        raise ValueError(f"y_true must hold class indices (numbers), not {labels.dtype}.")
    if not np.all(np.isfinite(labels)) or not np.all(labels == np.round(labels)):
        raise ValueError("y_true must hold whole-number class indices.")
    labels = labels.astype(int)
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(
            f"y_true must hold class indices from 0 to {num_classes - 1}, "
            f"found {labels.min()} to {labels.max()}."
        )
    return labels


def _as_probabilities(prob: Any, expected_length: int, name: str = "prob") -> np.ndarray:
    """Returns prob as float64 after checking it is finite and within [0, 1]."""
    values = np.asarray(prob, dtype=np.float64)
    if values.shape[0:1] != (expected_length,):
        raise ValueError(
            f"{name} has {values.shape[0] if values.ndim else 0} rows but y_true has "
            f"{expected_length} labels; they must match."
        )
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name} contains NaN or infinite values.")
    # A tiny tolerance absorbs float32 rounding in sigmoid and softmax outputs.
    if values.min() < -1e-6 or values.max() > 1 + 1e-6:
        raise ValueError(
            f"{name} must be probabilities in [0, 1], found {values.min():.4g} to {values.max():.4g}."
        )
    return np.clip(values, 0.0, 1.0)


def _binary_inputs(y_true: Any, prob: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validates binary labels and a 1-D (or N x 1) probability vector."""
    labels = _as_labels(y_true, num_classes=2)
    values = _as_probabilities(prob, len(labels))
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1:
        raise ValueError(f"prob must be shape (N,) or (N, 1) for binary metrics, not {values.shape}.")
    return labels, values


def _has_both_classes(labels: np.ndarray) -> bool:
    """Says whether a binary label vector contains at least one 0 and one 1."""
    positives = int(labels.sum())
    return 0 < positives < len(labels)


def _ratio(numerator: float, denominator: float) -> float:
    """Returns numerator / denominator as a float, or NaN when the denominator is zero."""
    return float(numerator) / float(denominator) if denominator else NAN


def _nanmean(values: Sequence[float]) -> float:
    """Mean of the finite values, NaN when there are none (without numpy's empty-slice warning)."""
    finite = [float(value) for value in values if value is not None and math.isfinite(value)]
    return sum(finite) / len(finite) if finite else NAN


# ---------------------------------------------------------------------------
# Binary and multiclass metrics.
# ---------------------------------------------------------------------------


def binary_metrics(y_true: Any, prob: Any, threshold: float = 0.5) -> dict:
    """Computes pneumonia-vs-normal metrics for one set of predictions.

    A case is called pneumonia when ``prob >= threshold`` (the same rule as
    sklearn's ``roc_curve``). Ratios with a zero denominator are NaN, and so are
    ``roc_auc`` and ``pr_auc`` when y_true holds only one class, because a
    ranking metric says nothing about the model without both classes.

    Args:
        y_true: Labels, 1 for pneumonia and 0 for normal, shape (N,).
        prob: Predicted probability of pneumonia, shape (N,) or (N, 1).
        threshold: Decision threshold in [0, 1].

    Returns:
        Dict with python floats ``accuracy``, ``sensitivity``, ``specificity``,
        ``precision``, ``f1``, ``roc_auc``, ``pr_auc``, ``balanced_accuracy``,
        ``threshold``, the int ``n`` and ``confusion_matrix`` as
        ``[[tn, fp], [fn, tp]]``.
    """
    labels, values = _binary_inputs(y_true, prob)
    threshold = _validate_threshold(threshold)
    predicted = values >= threshold
    actual = labels == 1
    true_positives = int(np.sum(predicted & actual))
    false_positives = int(np.sum(predicted & ~actual))
    false_negatives = int(np.sum(~predicted & actual))
    true_negatives = int(np.sum(~predicted & ~actual))

    sensitivity = _ratio(true_positives, true_positives + false_negatives)
    specificity = _ratio(true_negatives, true_negatives + false_positives)
    both_classes = _has_both_classes(labels)
    return {
        "accuracy": _ratio(true_positives + true_negatives, len(labels)),
        "sensitivity": sensitivity,
        "specificity": specificity,
        "precision": _ratio(true_positives, true_positives + false_positives),
        "f1": _ratio(2 * true_positives, 2 * true_positives + false_positives + false_negatives),
        "roc_auc": float(roc_auc_score(labels, values)) if both_classes else NAN,
        "pr_auc": float(average_precision_score(labels, values)) if both_classes else NAN,
        # Like sklearn, average the recalls of the classes that are present.
        "balanced_accuracy": _nanmean([sensitivity, specificity]),
        "confusion_matrix": [
            [true_negatives, false_positives],
            [false_negatives, true_positives],
        ],
        "n": int(len(labels)),
        "threshold": threshold,
    }


def _validate_threshold(threshold: float) -> float:
    """Returns the threshold as a float after checking it is a finite number in [0, 1]."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.number)):
        raise ValueError(f"threshold must be a number in [0, 1], not {threshold!r}.")
    threshold = float(threshold)
    if not (0.0 <= threshold <= 1.0):
        raise ValueError(f"threshold must be in [0, 1], not {threshold}.")
    return threshold


def _multiclass_inputs(y_true: Any, probs: Any, class_names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Validates class indices and an (N, C) probability matrix that matches class_names."""
    num_classes = len(class_names)
    if num_classes < 2:
        raise ValueError(f"class_names needs at least two classes, got {list(class_names)}.")
    labels = _as_labels(y_true, num_classes)
    values = _as_probabilities(probs, len(labels), name="probs")
    if values.ndim != 2 or values.shape[1] != num_classes:
        raise ValueError(
            f"probs must be shape (N, {num_classes}) to match class_names {list(class_names)}, "
            f"not {values.shape}."
        )
    return labels, values


def _confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts (true class, predicted class) pairs into a C x C int matrix."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    return matrix


def _one_vs_rest_auc(labels: np.ndarray, scores: np.ndarray, class_index: int) -> float:
    """AUC of one class against the rest, NaN when that class is absent or is every sample."""
    is_class = labels == class_index
    if not _has_both_classes(is_class.astype(int)):
        return NAN
    return float(roc_auc_score(is_class, scores))


def multiclass_metrics(y_true: Any, probs: Any, class_names: Sequence[str]) -> dict:
    """Computes multiclass metrics with the argmax class as the prediction.

    Per-class ratios with a zero denominator are NaN (for example the recall of a
    class absent from y_true). Macro averages skip NaN classes, which matches
    sklearn's macro F1 and balanced accuracy on the classes that occur.

    Args:
        y_true: Class indices into class_names, shape (N,).
        probs: Class probabilities, shape (N, C) with C == len(class_names).
        class_names: Display name of each class, in column order.

    Returns:
        Dict with python floats ``accuracy``, ``balanced_accuracy``, ``macro_f1``,
        ``macro_auc`` (one-vs-rest), the int ``n``, ``class_names``,
        ``confusion_matrix`` (C x C list, rows are true classes) and
        ``per_class`` as ``{name: {precision, recall, specificity, f1, auc, support}}``.
    """
    labels, values = _multiclass_inputs(y_true, probs, class_names)
    num_classes = len(class_names)
    predicted = np.argmax(values, axis=1)
    matrix = _confusion_matrix(labels, predicted, num_classes)
    total = int(matrix.sum())

    per_class = {}
    for index, name in enumerate(class_names):
        true_positives = int(matrix[index, index])
        false_positives = int(matrix[:, index].sum()) - true_positives
        false_negatives = int(matrix[index, :].sum()) - true_positives
        true_negatives = total - true_positives - false_positives - false_negatives
        per_class[str(name)] = {
            "precision": _ratio(true_positives, true_positives + false_positives),
            "recall": _ratio(true_positives, true_positives + false_negatives),
            "specificity": _ratio(true_negatives, true_negatives + false_positives),
            "f1": _ratio(2 * true_positives, 2 * true_positives + false_positives + false_negatives),
            "auc": _one_vs_rest_auc(labels, values[:, index], index),
            "support": true_positives + false_negatives,
        }

    class_results = list(per_class.values())
    return {
        "accuracy": _ratio(int(np.trace(matrix)), total),
        "balanced_accuracy": _nanmean([result["recall"] for result in class_results]),
        "macro_f1": _nanmean([result["f1"] for result in class_results]),
        "macro_auc": _nanmean([result["auc"] for result in class_results]),
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
        "n": total,
        "class_names": [str(name) for name in class_names],
    }


def _pneumonia_column(probs: Any) -> np.ndarray:
    """Returns the pneumonia probability from an (N,), (N, 1) or (N, 2) array."""
    values = np.asarray(probs, dtype=np.float64)
    if values.ndim == 1:
        return values
    if values.ndim == 2 and values.shape[1] == 1:
        return values[:, 0]
    if values.ndim == 2 and values.shape[1] == 2:
        # Column 1 is pneumonia because labels are 1 for pneumonia.
        return values[:, 1]
    raise ValueError(f"Binary probs must be shape (N,), (N, 1) or (N, 2), not {values.shape}.")


def evaluate_predictions(
    y_true: Any, probs: Any, class_names: Sequence[str], threshold: float = 0.5
) -> dict:
    """Computes binary or multiclass metrics depending on the number of classes.

    Both modes return ``accuracy`` and ``roc_auc`` (the macro one-vs-rest AUC in
    multiclass mode), so runs of either mode can be compared with one key.

    Args:
        y_true: Class indices into class_names, shape (N,).
        probs: Binary: pneumonia probability (N,), (N, 1), or (N, 2) with
            pneumonia in column 1. Multiclass: (N, C) class probabilities.
        class_names: Display name of each class; two names means binary mode.
        threshold: Decision threshold, used in binary mode only.

    Returns:
        The dict of ``binary_metrics`` or ``multiclass_metrics`` plus ``mode``
        ("binary" or "multiclass") and ``class_names``; multiclass also has
        ``roc_auc`` equal to ``macro_auc``.
    """
    names = [str(name) for name in class_names]
    if len(names) == 2:
        result = binary_metrics(y_true, _pneumonia_column(probs), threshold)
        result["mode"] = "binary"
        result["class_names"] = names
        return result
    result = multiclass_metrics(y_true, probs, names)
    result["roc_auc"] = result["macro_auc"]
    result["mode"] = "multiclass"
    return result


# ---------------------------------------------------------------------------
# Threshold choice and ROC curves.
# ---------------------------------------------------------------------------


def youden_threshold(y_true: Any, prob: Any) -> float:
    """Finds the threshold that maximizes Youden's J = sensitivity + specificity - 1.

    Candidates are the distinct predicted probabilities (sklearn's ROC
    thresholds, used with ``prob >= threshold``). Among thresholds with the same
    best J, the one closest to 0.5 wins, and at equal distance the lower one
    wins, because missing pneumonia costs more than a false alarm.

    Args:
        y_true: Labels, 1 for pneumonia and 0 for normal, shape (N,).
        prob: Predicted probability of pneumonia, shape (N,) or (N, 1).

    Returns:
        A finite threshold in [0, 1]; 0.5 when y_true has one class only or when
        no threshold does better than chance (best J <= 0).
    """
    labels, values = _binary_inputs(y_true, prob)
    if not _has_both_classes(labels):
        return 0.5
    false_positive_rate, true_positive_rate, thresholds = roc_curve(
        labels, values, drop_intermediate=False
    )
    # The first threshold is +inf (nothing called positive); it is never a useful choice.
    finite = np.isfinite(thresholds)
    youden = (true_positive_rate - false_positive_rate)[finite]
    candidates = thresholds[finite]
    best = youden.max()
    if best <= _ZERO_TOLERANCE:
        return 0.5
    tied = np.sort(candidates[np.isclose(youden, best, rtol=0.0, atol=_ZERO_TOLERANCE)])
    # np.argmin returns the first minimum, i.e. the lowest of equally close thresholds.
    chosen = tied[int(np.argmin(np.abs(tied - 0.5)))]
    return float(np.clip(chosen, 0.0, 1.0))


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
    labels, values = _binary_inputs(y_true, prob)
    if not _has_both_classes(labels):
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
    labels, values = _multiclass_inputs(y_true, probs, class_names)
    return {
        str(name): roc_curve_points((labels == index).astype(int), values[:, index], max_points)
        for index, name in enumerate(class_names)
    }


# ---------------------------------------------------------------------------
# Fold summaries and model comparison.
# ---------------------------------------------------------------------------


def _is_scalar_number(value: Any) -> bool:
    """Says whether a value is a real number (bools excluded)."""
    if isinstance(value, (bool, np.bool_)):
        return False
    return isinstance(value, (int, float, np.integer, np.floating))


def _scalar_or_missing(value: Any) -> bool:
    """Says whether a value is a real number or a missing one (None, as to_jsonable writes NaN)."""
    return value is None or _is_scalar_number(value)


def _summary_keys(fold_metrics: Sequence[Mapping[str, Any]]) -> list[str]:
    """Keys, in first-fold order, that hold a number (or None) in every fold and a number in one."""
    keys = []
    for key in fold_metrics[0]:
        values = [fold[key] for fold in fold_metrics if key in fold]
        in_every_fold = len(values) == len(fold_metrics)
        all_scalar = all(_scalar_or_missing(value) for value in values)
        if in_every_fold and all_scalar and any(_is_scalar_number(value) for value in values):
            keys.append(key)
    return keys


def _describe(values: list[float]) -> dict:
    """Mean and standard deviation of the finite values (ddof=1 when there are two or more)."""
    finite = np.array([value for value in values if math.isfinite(value)], dtype=np.float64)
    if finite.size == 0:
        return {"mean": NAN, "std": NAN, "count": 0}
    # One value has no spread to estimate; report 0 rather than NaN so tables stay readable.
    std = float(np.std(finite, ddof=1)) if finite.size > 1 else 0.0
    return {"mean": float(np.mean(finite)), "std": std, "count": int(finite.size)}


def summarize_folds(
    fold_metrics: Sequence[Mapping[str, Any]], keys: Sequence[str] | None = None
) -> dict:
    """Summarizes scalar metrics across folds, ignoring NaN (or None) folds.

    Args:
        fold_metrics: One metrics dict per fold, e.g. from ``evaluate_predictions``.
        keys: Metric names to summarize; by default every key whose value is a
            number (or None) in all folds, in the order of the first fold.

    Returns:
        ``{key: {"mean", "std", "values", "count"}}`` where ``values`` lists each
        fold's value (NaN where missing), ``count`` is the number of finite
        values, ``std`` uses ddof=1 when count > 1 and is 0.0 for one value, and
        mean and std are NaN when no fold has a finite value.
    """
    if not fold_metrics:
        raise ValueError("fold_metrics is empty: there are no folds to summarize.")
    if keys is None:
        keys = _summary_keys(fold_metrics)
    summary = {}
    for key in keys:
        values = []
        for fold_index, fold in enumerate(fold_metrics):
            if key not in fold or not _scalar_or_missing(fold[key]):
                raise ValueError(f"Fold {fold_index} has no numeric value for metric {key!r}.")
            values.append(NAN if fold[key] is None else float(fold[key]))
        summary[key] = {**_describe(values), "values": values}
    return summary


# The architecture contract calls this function summarize.
summarize = summarize_folds


def _validate_scores(scores_a: Any, scores_b: Any) -> tuple[np.ndarray, np.ndarray]:
    """Returns the two score vectors after checking they are finite, paired and k >= 2."""
    first = np.asarray(scores_a, dtype=np.float64)
    second = np.asarray(scores_b, dtype=np.float64)
    if first.ndim != 1 or second.ndim != 1:
        raise ValueError("scores_a and scores_b must be flat lists with one score per fold.")
    if len(first) != len(second):
        raise ValueError(
            f"scores_a has {len(first)} folds but scores_b has {len(second)}; "
            "compare the two models on the same folds."
        )
    if len(first) < 2:
        raise ValueError(f"The t-test needs at least 2 folds per model, got {len(first)}.")
    if not (np.all(np.isfinite(first)) and np.all(np.isfinite(second))):
        raise ValueError("Scores contain NaN or infinity; drop or fix those folds before comparing.")
    return first, second


def _validate_size(value: Any, name: str) -> None:
    """Raises ValueError unless value is a positive number of samples."""
    if not _is_scalar_number(value) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number of samples per fold, not {value!r}.")


def corrected_resampled_ttest(
    scores_a: Any, scores_b: Any, n_train: int, n_test: int, confidence: float = 0.95
) -> dict:
    """Compares two models' k-fold scores with the Nadeau & Bengio (2003) corrected t-test.

    The folds' training sets overlap, so fold scores are correlated and the plain
    paired t-test is overconfident. The correction inflates the variance of the
    mean difference from s²/k to (1/k + n_test/n_train) * s². With zero variance
    (every fold has the same difference) t is 0 and p is 1 when that difference
    is 0, and t is ±inf with p = 0 otherwise.

    Args:
        scores_a: Model A's score on each fold, in fold order.
        scores_b: Model B's score on the same folds, in the same order.
        n_train: Training samples per fold (an average if folds differ).
        n_test: Validation samples per fold (an average if folds differ).
        confidence: Level of the confidence interval of the mean difference.

    Returns:
        Dict with ``t_statistic``, ``p_value`` (two-sided), ``df`` (k - 1),
        ``mean_difference`` (A minus B), ``ci_low``, ``ci_high``, ``confidence``,
        ``k``, ``n_train`` and ``n_test``.

    Raises:
        ValueError: If the score lists differ in length, have fewer than two
            folds, hold non-finite values, or the sample sizes are not positive.
    """
    first, second = _validate_scores(scores_a, scores_b)
    _validate_size(n_train, "n_train")
    _validate_size(n_test, "n_test")
    if not (0.0 < confidence < 1.0):
        raise ValueError(f"confidence must be between 0 and 1, not {confidence!r}.")

    differences = first - second
    folds = len(differences)
    degrees_of_freedom = folds - 1
    mean_difference = float(np.mean(differences))
    variance = float(np.var(differences, ddof=1))
    corrected_standard_error = math.sqrt((1.0 / folds + n_test / n_train) * variance)

    if np.ptp(differences) <= _ZERO_TOLERANCE:
        # Identical differences on every fold: the formula would divide by zero.
        corrected_standard_error = 0.0
        if abs(mean_difference) <= _ZERO_TOLERANCE:
            t_statistic, p_value = 0.0, 1.0
        else:
            t_statistic, p_value = math.copysign(math.inf, mean_difference), 0.0
    else:
        t_statistic = mean_difference / corrected_standard_error
        p_value = float(2.0 * stats.t.sf(abs(t_statistic), degrees_of_freedom))

    margin = float(stats.t.ppf(0.5 + confidence / 2.0, degrees_of_freedom)) * corrected_standard_error
    return {
        "t_statistic": float(t_statistic),
        "p_value": min(1.0, float(p_value)),
        "df": int(degrees_of_freedom),
        "mean_difference": mean_difference,
        "ci_low": mean_difference - margin,
        "ci_high": mean_difference + margin,
        "confidence": float(confidence),
        "k": int(folds),
        "n_train": n_train.item() if isinstance(n_train, np.generic) else n_train,
        "n_test": n_test.item() if isinstance(n_test, np.generic) else n_test,
    }


def _format_number(value: float) -> str:
    """Formats a difference with three decimals and a true minus sign."""
    text = f"{value:.3f}"
    return text.replace("-", "\u2212")


def _format_p_value(p_value: float, alpha: float) -> str:
    """Formats p so that its rounding never contradicts the comparison with alpha."""
    if p_value < 0.001:
        return "p < 0.001"
    for digits in (2, 3, 4):
        text = f"{p_value:.{digits}f}"
        if (float(text) < alpha) == (p_value < alpha) and float(text) > 0:
            return f"p = {text}"
    return f"p = {p_value:.4g}"


def comparison_verdict(
    result: Mapping[str, Any], metric_name: str, name_a: str, name_b: str, alpha: float = 0.05
) -> str:
    """Explains a corrected resampled t-test result in plain language.

    Args:
        result: Output of ``corrected_resampled_ttest`` (A minus B).
        metric_name: Metric key (e.g. "roc_auc") or display name (e.g. "AUC").
        name_a: Display name of model A.
        name_b: Display name of model B.
        alpha: Significance level.

    Returns:
        A few sentences: which model has the higher mean and by how much, the
        confidence interval, whether the difference is statistically
        significant, and what the correction accounts for.
    """
    if not (0.0 < alpha < 1.0):
        raise ValueError(f"alpha must be between 0 and 1, not {alpha!r}.")
    label = _METRIC_LABELS.get(metric_name, metric_name)
    difference = float(result["mean_difference"])
    p_value = float(result["p_value"])
    folds = int(result["k"])
    percent = round(100 * float(result.get("confidence", 0.95)))
    p_text = _format_p_value(p_value, alpha)
    significant = p_value < alpha
    correction_note = (
        " The correction accounts for the training sets overlapping across folds, "
        "which makes a plain paired t-test overconfident."
    )

    if abs(difference) <= _ZERO_TOLERANCE:
        return (
            f"{name_a} and {name_b} have the same mean {label} across {folds} folds "
            f"(corrected resampled t-test, {p_text}). Treat the two as equivalent on this data."
            + correction_note
        )

    # Name the better model first, and flip the interval so it describes that ordering.
    if difference > 0:
        better, worse, low, high = name_a, name_b, result["ci_low"], result["ci_high"]
    else:
        better, worse, low, high = name_b, name_a, -result["ci_high"], -result["ci_low"]
    opening = (
        f"{better} has a higher mean {label} than {worse} by {_format_number(abs(difference))} "
        f"({percent}% CI {_format_number(low)} to {_format_number(high)})"
    )
    if significant:
        return (
            f"{opening}, and with {folds} folds this difference is statistically significant "
            f"(corrected resampled t-test, {p_text} < {alpha:g}). The gap is unlikely to be "
            "chance alone; whether it matters clinically depends on its size."
            + correction_note
        )
    return (
        f"{opening}, but with {folds} folds this difference is not statistically significant "
        f"(corrected resampled t-test, {p_text}). Treat the two as equivalent on this data: "
        "the test found no reliable difference, which is not proof that they are the same."
        + correction_note
    )


# ---------------------------------------------------------------------------
# JSON conversion.
# ---------------------------------------------------------------------------


def to_jsonable(obj: Any) -> Any:
    """Converts numpy types to python ones and non-finite floats to None, recursively.

    Strict JSON has no NaN or Infinity, so summary.json stores them as null.

    Args:
        obj: Any nesting of dicts, lists, tuples, sets, numpy arrays and scalars.

    Returns:
        The same structure with dicts (string keys) and lists of python
        scalars; other objects are returned unchanged.
    """
    if isinstance(obj, Mapping):
        return {_json_key(key): to_jsonable(value) for key, value in obj.items()}
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(item) for item in obj]
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _json_key(key: Any) -> str:
    """Turns a dict key into a string the way json.dumps would for python scalars."""
    if isinstance(key, str):
        return key
    if isinstance(key, np.generic):
        key = key.item()
    return str(key)
