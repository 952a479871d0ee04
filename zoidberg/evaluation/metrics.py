"""Per-fold metrics (binary and multi-class), their names, fold summaries and JSON conversion."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

NAN = float("nan")

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


def is_scalar_number(value: Any) -> bool:
    """Says whether a value is a real number (bools excluded)."""
    if isinstance(value, (bool, np.bool_)):
        return False
    return isinstance(value, (int, float, np.integer, np.floating))


def is_finite_number(value) -> bool:
    """Tells whether a value is a finite real number (bools excluded)."""
    return is_scalar_number(value) and math.isfinite(value)


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


def binary_inputs(y_true: Any, prob: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validates binary labels and a 1-D (or N x 1) probability vector."""
    labels = _as_labels(y_true, num_classes=2)
    values = _as_probabilities(prob, len(labels))
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1:
        raise ValueError(f"prob must be shape (N,) or (N, 1) for binary metrics, not {values.shape}.")
    return labels, values


def has_both_classes(labels: np.ndarray) -> bool:
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
    labels, values = binary_inputs(y_true, prob)
    threshold = _validate_threshold(threshold)
    predicted = values >= threshold
    actual = labels == 1
    true_positives = int(np.sum(predicted & actual))
    false_positives = int(np.sum(predicted & ~actual))
    false_negatives = int(np.sum(~predicted & actual))
    true_negatives = int(np.sum(~predicted & ~actual))

    sensitivity = _ratio(true_positives, true_positives + false_negatives)
    specificity = _ratio(true_negatives, true_negatives + false_positives)
    both_classes = has_both_classes(labels)
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


def multiclass_inputs(y_true: Any, probs: Any, class_names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
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
    if not has_both_classes(is_class.astype(int)):
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
    labels, values = multiclass_inputs(y_true, probs, class_names)
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
# Fold summaries.
# ---------------------------------------------------------------------------


def scalar_or_missing(value: Any) -> bool:
    """Says whether a value is a real number or a missing one (None, as to_jsonable writes NaN)."""
    return value is None or is_scalar_number(value)


def _summary_keys(fold_metrics: Sequence[Mapping[str, Any]]) -> list[str]:
    """Keys, in first-fold order, that hold a number (or None) in every fold and a number in one."""
    keys = []
    for key in fold_metrics[0]:
        values = [fold[key] for fold in fold_metrics if key in fold]
        in_every_fold = len(values) == len(fold_metrics)
        all_scalar = all(scalar_or_missing(value) for value in values)
        if in_every_fold and all_scalar and any(is_scalar_number(value) for value in values):
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
            if key not in fold or not scalar_or_missing(fold[key]):
                raise ValueError(f"Fold {fold_index} has no numeric value for metric {key!r}.")
            values.append(NAN if fold[key] is None else float(fold[key]))
        summary[key] = {**_describe(values), "values": values}
    return summary


# The architecture contract calls this function summarize.
summarize = summarize_folds

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
