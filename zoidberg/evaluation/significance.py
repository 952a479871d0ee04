"""The corrected resampled t-test (Nadeau & Bengio) between two models' fold scores, and its verdict in words."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy import stats

from zoidberg.evaluation.metrics import METRIC_NAMES, is_scalar_number

# Tolerance under which fold differences count as identical, so that rounding noise
# (0.9 - 0.8 is not exactly 0.85 - 0.75) does not turn a zero variance into a huge t.
_ZERO_TOLERANCE = 1e-12

# The name of each metric inside a sentence.
_METRIC_LABELS = {key: names[2] for key, names in METRIC_NAMES.items()}


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
    if not is_scalar_number(value) or not math.isfinite(value) or value <= 0:
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
