"""What a window of new films is compared with: the films a run knows, as its own files describe them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zoidberg.runs.store import MONITOR_REFERENCE_FILE, Run, RunStore

# The gate refuses this share of films like its training films, by construction (its 99.5th percentile).
TRAINING_REFUSED_SHARE = 0.005


@dataclass(frozen=True)
class Reference:
    """Films a run knows, as a window is compared with them.

    Attributes:
        name: "site films" (those an adapted run learned from) or "training films".
        positive: Their raw P(pneumonia), each from a model that never saw it (out-of-fold or cross-fitted).
        ood_score: The gate's score of each, or None where only the gate's construction is known
            (training films: median 0, 99.5 % below 1).
        refused_share: The share of them the gate refuses.
        prevalence: Their share of pneumonia.
        exposure: (N, 2) mean and standard deviation of each film's gray levels, or None (training films).
        labels: Each film's class (1: pneumonia), so that a window is compared with any mix of the two classes.
        alerts: Whether a difference from them raises the alert (an adapted run's site films: yes;
            its parent's training films, which the site differs from by design: no).
    """

    name: str
    positive: np.ndarray
    ood_score: np.ndarray | None
    refused_share: float
    prevalence: float
    alerts: bool = True
    exposure: np.ndarray | None = None
    labels: np.ndarray | None = None


def load_references(run: Run) -> list[Reference]:
    """The references of a run: its training films; an adapted run's site films first, then its parent's training films.

    Raises:
        ValueError: The run has no out-of-fold predictions (not finished), in one sentence.
    """
    if run.kind != "adapt":
        return [_training_reference(run, alerts=True)]
    site = _site_reference(run)
    parent = RunStore(run.path.parent).get(run.config.get("parent"))
    return [site, _training_reference(parent, alerts=False)]


def _positive_and_labels(run: Run) -> tuple[np.ndarray, np.ndarray]:
    from zoidberg.evaluation.out_of_fold import read_out_of_fold

    out_of_fold = read_out_of_fold(run)
    if len(out_of_fold.class_names) != 2:
        raise ValueError(f"Run {run.id} is three-class: the monitor watches normal-vs-pneumonia runs.")
    return out_of_fold.raw[:, 1], (out_of_fold.labels == 1).astype(int)


def _training_reference(run: Run, *, alerts: bool) -> Reference:
    positive, labels = _positive_and_labels(run)
    return Reference("training films", positive, None, TRAINING_REFUSED_SHARE, float(labels.mean()), alerts, labels=labels)


def _site_reference(run: Run) -> Reference:
    positive, labels = _positive_and_labels(run)
    stored = run.read_json(MONITOR_REFERENCE_FILE) or {}
    scores = stored.get("ood_score")
    means, spreads = stored.get("pixel_mean") or [], stored.get("pixel_std") or []
    exposure = np.column_stack([means, spreads]).astype(float) if means and len(means) == len(spreads) else None
    return Reference("site films", positive, np.asarray(scores, dtype=float) if scores else None,
                     float(stored.get("refused_share", TRAINING_REFUSED_SHARE)), float(labels.mean()), True, exposure, labels)
