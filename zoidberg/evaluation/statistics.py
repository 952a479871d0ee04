"""Uncertainty and paired tests on one test set: patient bootstrap intervals, DeLong's test for AUCs, McNemar's test."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import stats

BOOTSTRAP_REPLICATES = 2000


def rank_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC from ranks (the Mann-Whitney statistic), equal to sklearn's roc_auc_score, ties counted half.

    About a hundred times cheaper per call than roc_auc_score on a few hundred images,
    which a 2,000-replicate bootstrap notices.
    """
    labels = np.asarray(labels)
    positives = labels == 1
    m = int(positives.sum())
    n = len(labels) - m
    if m == 0 or n == 0:
        raise ValueError("AUC needs both classes.")
    ranks = stats.rankdata(scores)
    return float((ranks[positives].sum() - m * (m + 1) / 2) / (m * n))


def bootstrap_interval(
    labels: np.ndarray,
    scores: np.ndarray,
    groups: np.ndarray,
    statistic: Callable[[np.ndarray, np.ndarray], float] = rank_auc,
    *,
    n_replicates: int = BOOTSTRAP_REPLICATES,
    confidence: float = 0.95,
    random_state: int = 0,
) -> dict:
    """A percentile bootstrap interval that resamples patients, not images.

    Images of one patient are correlated, so resampling images would understate the
    uncertainty; each replicate draws patients with replacement and keeps all their images.
    Replicates in which the statistic is undefined (one class only) are skipped and counted.

    Args:
        labels: 0/1 labels, one per image.
        scores: Scores or probabilities, one per image.
        groups: Patient ids, one per image.
        statistic: `statistic(labels, scores) -> float` (ROC AUC by default, from ranks).
        n_replicates: Bootstrap replicates.
        confidence: Interval coverage.
        random_state: Seed, so that the interval is reproducible.

    Returns:
        {"estimate", "low", "high", "confidence", "replicates", "skipped", "patients"};
        low and high are None when fewer than 100 replicates were usable.
    """
    labels, scores, groups = np.asarray(labels), np.asarray(scores, dtype=float), np.asarray(groups)
    estimate = _safe(statistic, labels, scores)
    unique, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == index) for index in range(len(unique))]
    rng = np.random.default_rng(random_state)
    values, skipped = [], 0
    for _ in range(n_replicates):
        chosen = rng.integers(0, len(unique), len(unique))
        rows = np.concatenate([members[index] for index in chosen])
        value = _safe(statistic, labels[rows], scores[rows])
        if value is None:
            skipped += 1
        else:
            values.append(value)
    alpha = (1.0 - confidence) / 2.0
    usable = len(values) >= 100
    return {
        "estimate": estimate,
        "low": float(np.quantile(values, alpha)) if usable else None,
        "high": float(np.quantile(values, 1.0 - alpha)) if usable else None,
        "confidence": confidence,
        "replicates": len(values),
        "skipped": skipped,
        "patients": int(len(unique)),
    }


def _safe(statistic, labels, scores) -> float | None:
    """Returns the statistic, or None where it is undefined (a single class)."""
    if len(np.unique(labels)) < 2:
        return None
    try:
        return float(statistic(labels, scores))
    except ValueError:
        return None


def _midranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 1 with ties sharing their mean rank."""
    return stats.rankdata(values, method="average")


def delong_components(labels: np.ndarray, scores: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Returns the AUC and DeLong's structural components (V10 per positive, V01 per negative).

    Uses the midrank formulation of Sun & Xu (2014), exact with ties.
    """
    labels, scores = np.asarray(labels).astype(int), np.asarray(scores, dtype=float)
    positives, negatives = scores[labels == 1], scores[labels == 0]
    m, n = len(positives), len(negatives)
    if m == 0 or n == 0:
        raise ValueError("DeLong's test needs both classes.")
    combined = _midranks(np.concatenate([positives, negatives]))
    within_positives, within_negatives = _midranks(positives), _midranks(negatives)
    auc = (combined[:m].sum() - m * (m + 1) / 2) / (m * n)
    v10 = (combined[:m] - within_positives) / n
    v01 = 1.0 - (combined[m:] - within_negatives) / m
    return float(auc), v10, v01


def delong_test(labels: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray, confidence: float = 0.95) -> dict:
    """DeLong's test of two correlated ROC AUCs measured on the same images (DeLong et al. 1988).

    Args:
        labels: 0/1 labels.
        scores_a: Model A's scores on those images.
        scores_b: Model B's scores on the same images, in the same order.
        confidence: Coverage of the interval of the difference.

    Returns:
        {"auc_a", "auc_b", "difference" (A - B), "std_error", "z", "p_value", "ci_low", "ci_high"}.
    """
    auc_a, v10_a, v01_a = delong_components(labels, scores_a)
    auc_b, v10_b, v01_b = delong_components(labels, scores_b)
    m, n = len(v10_a), len(v01_a)
    s10 = np.cov(np.vstack([v10_a, v10_b])) if m > 1 else np.zeros((2, 2))
    s01 = np.cov(np.vstack([v01_a, v01_b])) if n > 1 else np.zeros((2, 2))
    covariance = s10 / m + s01 / n
    variance = covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1]
    difference = auc_a - auc_b
    std_error = float(np.sqrt(max(variance, 0.0)))
    if std_error == 0.0:
        z, p_value = 0.0, 1.0
    else:
        z = difference / std_error
        p_value = float(2 * stats.norm.sf(abs(z)))
    half = stats.norm.ppf(0.5 + confidence / 2) * std_error
    return {
        "auc_a": auc_a,
        "auc_b": auc_b,
        "difference": float(difference),
        "std_error": std_error,
        "z": float(z),
        "p_value": p_value,
        "ci_low": float(difference - half),
        "ci_high": float(difference + half),
        "confidence": confidence,
    }


def mcnemar_test(labels: np.ndarray, predicted_a: np.ndarray, predicted_b: np.ndarray) -> dict:
    """McNemar's exact test of two classifiers' accuracies on the same images.

    Only the discordant images count: those A gets right and B wrong (b) and the reverse
    (c). Under equal accuracy b ~ Binomial(b + c, 0.5).

    Returns:
        {"a_only_correct", "b_only_correct", "accuracy_a", "accuracy_b", "p_value"}.
    """
    labels = np.asarray(labels)
    right_a, right_b = np.asarray(predicted_a) == labels, np.asarray(predicted_b) == labels
    b = int(np.sum(right_a & ~right_b))
    c = int(np.sum(~right_a & right_b))
    p_value = 1.0 if b + c == 0 else float(stats.binomtest(b, b + c, 0.5).pvalue)
    return {
        "a_only_correct": b,
        "b_only_correct": c,
        "accuracy_a": float(right_a.mean()),
        "accuracy_b": float(right_b.mean()),
        "p_value": p_value,
    }
