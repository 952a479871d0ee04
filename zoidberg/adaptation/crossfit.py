"""Patient-grouped cross-fitting of site heads: each part of the site is scored by heads that never saw it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zoidberg.models.site_heads import SiteHead, fit_site_head
from zoidberg.config import OperatingPointChoice
from zoidberg.data.folds import make_folds
from zoidberg.evaluation.operating import choose_threshold


@dataclass(frozen=True)
class CrossFit:
    """What cross-fitting on a labeled site sample gives.

    Attributes:
        part_of: The part (0-based) of every film; one patient's films share a part.
        positive: Every film's P(pneumonia) from the head fitted without its part.
        thresholds: Per part, the threshold chosen on the other parts' inner out-of-fold
            scores (the part itself never chooses its threshold).
        decided: Every film's 0/1 decision at its part's threshold.
        heads: Per part, the head fitted on the other parts: the adapted model averages them.
    """

    part_of: np.ndarray
    positive: np.ndarray
    thresholds: list[float]
    decided: np.ndarray
    heads: list[SiteHead]

    def scored_rows_of(self, part: int) -> np.ndarray:
        """The rows the head of `part` scored (and so never fitted on)."""
        return np.flatnonzero(self.part_of == part)


def crossfit_heads(
    inputs: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    choice: OperatingPointChoice,
    *,
    n_prior: int,
    n_parts: int = 5,
    unlabeled: np.ndarray | None = None,
    random_state: int = 0,
) -> CrossFit:
    """Adapts on k−1 parts of the site and scores the part left out, k times.

    Args:
        inputs: (N, D) head inputs of the labeled site films.
        labels: 0/1 labels.
        groups: Patient ids: no patient is in two parts.
        choice: The operating point (the parent's), chosen again inside each fit.
        n_prior: How many leading input columns are the parent's log-odds.
        n_parts: k.
        unlabeled: Inputs of unlabeled films of the site (standardization only).
        random_state: Seed of the parts and inner folds.

    Returns:
        The CrossFit.

    Raises:
        ValueError: When a class has fewer than k patients.
    """
    labels = np.asarray(labels).astype(int)
    groups = np.asarray(groups).astype(str)
    part_of = make_folds(labels, groups, n_parts, random_state)
    positive = np.zeros(len(labels))
    decided = np.zeros(len(labels), dtype=int)
    thresholds, heads = [], []
    for part in range(n_parts):
        train, held = np.flatnonzero(part_of != part), np.flatnonzero(part_of == part)
        head, inner = fit_site_head(inputs[train], labels[train], groups[train], n_prior=n_prior, unlabeled=unlabeled, random_state=random_state)
        threshold = choose_threshold(labels[train], inner, choice)
        positive[held] = head.positive(inputs[held])
        decided[held] = (positive[held] >= threshold).astype(int)
        thresholds.append(float(threshold))
        heads.append(head)
    return CrossFit(part_of, positive, thresholds, decided, heads)
