"""Figures of labeled films with patient-bootstrap intervals (a site's, an evaluation's): AUC of the scores, accuracy, sensitivity and specificity of the decisions."""

from __future__ import annotations

import numpy as np

from zoidberg.evaluation.statistics import bootstrap_interval, rank_auc


def _accuracy(labels: np.ndarray, decided: np.ndarray) -> float:
    return float(np.mean(labels == decided))


def _sensitivity(labels: np.ndarray, decided: np.ndarray) -> float:
    return float(np.mean(decided[labels == 1]))


def _specificity(labels: np.ndarray, decided: np.ndarray) -> float:
    return float(np.mean(decided[labels == 0] == 0))


DECISION_STATISTICS = {"accuracy": _accuracy, "sensitivity": _sensitivity, "specificity": _specificity}


def site_figures(labels: np.ndarray, positive: np.ndarray, decided: np.ndarray, groups: np.ndarray, *, random_state: int = 0) -> dict:
    """Every headline figure of scores and decisions on a labeled site, each with its patient-bootstrap interval.

    Args:
        labels: 0/1 labels.
        positive: P(pneumonia) (the AUC's scores).
        decided: 0/1 decisions (accuracy, sensitivity, specificity).
        groups: Patient ids: each replicate draws patients, not films.
        random_state: Seed of the bootstrap.

    Returns:
        {"roc_auc" | "accuracy" | "sensitivity" | "specificity": {"estimate", "low", "high", ...},
        "n", "n_patients", "normal_called_pneumonia", "n_normal", "pneumonia_missed", "n_pneumonia"}.
    """
    labels = np.asarray(labels).astype(int)
    decided = np.asarray(decided).astype(int)
    groups = np.asarray(groups).astype(str)
    figures = {"roc_auc": bootstrap_interval(labels, positive, groups, rank_auc, random_state=random_state)}
    for name, statistic in DECISION_STATISTICS.items():
        figures[name] = bootstrap_interval(labels, decided, groups, statistic, random_state=random_state)
    return {
        **figures,
        "n": int(len(labels)),
        "n_patients": int(len(np.unique(groups))),
        "n_normal": int(np.sum(labels == 0)),
        "normal_called_pneumonia": int(np.sum((labels == 0) & (decided == 1))),
        "n_pneumonia": int(np.sum(labels == 1)),
        "pneumonia_missed": int(np.sum((labels == 1) & (decided == 0))),
    }


def describe_figure(figure: dict | None) -> str:
    """"0.971 [0.955, 0.984]", or "n/a"."""
    if not figure or figure.get("estimate") is None:
        return "n/a"
    if figure.get("low") is None:
        return f"{figure['estimate']:.3f}"
    return f"{figure['estimate']:.3f} [{figure['low']:.3f}, {figure['high']:.3f}]"


def describe_harm(figures: dict) -> str:
    """The sentence a clinician reads: how many healthy children are called pneumonia and how many are missed."""
    return (
        f"on these {figures['n']} films, {figures['normal_called_pneumonia']} of {figures['n_normal']} healthy children "
        f"would be called pneumonia and {figures['pneumonia_missed']} of {figures['n_pneumonia']} pneumonias missed"
    )
