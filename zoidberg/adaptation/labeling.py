"""A site's labeling as it goes: where its labels file lives, when to adapt again, the learning curve and when to stop."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoidberg.adaptation.config import AdaptConfig
from zoidberg.data.site_labels import SiteLabels

LABELS_DIR_ENV = "ZOIDBERG_LABELS_DIR"
# Adapt again after this many new labels (the Label page's default).
ROUND_SIZE = 20
MAX_PARTS = 5
# The curve's last steps that the stop sentence reads, and the move that counts as "little" (in points).
STOP_LABELS = 40
STOP_MOVE = 0.01


def default_labels_dir() -> Path:
    """$ZOIDBERG_LABELS_DIR, or labels/ beside the runs folder's parent (the working folder)."""
    return Path(os.environ.get(LABELS_DIR_ENV) or "labels").expanduser()


def labels_path_for(source: str, parent: str) -> Path:
    """The labels file of one site source labeled for one run: labels/<source's name>-<short hash>.jsonl.

    The run is part of the name: the films a run wants labeled next depend on its scores.
    """
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(source.rstrip("/")).name or "site").strip("-")[:40] or "site"
    digest = hashlib.sha256(f"{Path(source).expanduser().resolve()}\0{parent}".encode()).hexdigest()[:8]
    return default_labels_dir() / f"{name}-{digest}.jsonl"


def parts_for(labels: SiteLabels) -> int:
    """Cross-fit parts the labels allow: MAX_PARTS, or fewer patients of the rarer class (0: too few to adapt)."""
    from zoidberg.data.dataset import parse_patient_id

    counts = []
    for label in ("normal", "pneumonia"):
        films = [entry for entry in labels.films.values() if entry.label == label]
        counts.append(len({entry.patient or parse_patient_id(entry.file or entry.film) for entry in films}))
    smallest = min(counts)
    return min(MAX_PARTS, smallest) if smallest >= 2 else 0


def round_due(labels: SiteLabels, adapted_at: list[int], every: int = ROUND_SIZE) -> bool:
    """Whether `every` labels have come since the last adaptation of this file (and enough of both classes for one)."""
    usable = len(labels.usable())
    return parts_for(labels) >= 2 and usable >= (max(adapted_at) if adapted_at else 0) + every


def round_config(parent: str, labels_file: str | os.PathLike, labels: SiteLabels) -> AdaptConfig:
    """The adaptation of one round: everything labeled so far, in as many parts as the labels allow."""
    usable = len(labels.usable())
    return AdaptConfig(parent=parent, labels_file=str(Path(labels_file).resolve()), n_parts=parts_for(labels),
                       run_name=f"{parent} on {usable} site labels"[:80])


@dataclass(frozen=True)
class CurvePoint:
    """One adaptation of a labels file: how many labels, its cross-fitted figures and the run."""

    n_labels: int
    run_id: str
    figures: dict
    zero_shot: dict


def learning_curve(store, labels_file: str | os.PathLike, parent: str) -> list[CurvePoint]:
    """The completed adaptations of `parent` on this labels file, by number of labels (the latest run of each count)."""
    target = str(Path(labels_file).resolve())
    points: dict[int, CurvePoint] = {}
    for run in sorted(store.list_runs("adapt"), key=lambda run: run.id):
        config = run.config or {}
        if config.get("labels_file") != target or config.get("parent") != parent or run.state != "completed":
            continue
        adaptation = (run.summary() or {}).get("adaptation") or {}
        if not adaptation.get("adapted"):
            continue
        n = int(adaptation["adapted"]["n"])
        points[n] = CurvePoint(n, run.id, adaptation["adapted"], adaptation.get("zero_shot") or {})
    return [points[n] for n in sorted(points)]


def stop_sentence(points: list[CurvePoint], what: str = "specificity") -> str:
    """What a clinician can act on: whether the last labels still moved the figure, against its interval."""
    if len(points) < 2:
        return "Keep labeling: the curve needs two adaptations before it can say whether more labels help."
    last = points[-1]
    earlier = [point for point in points if point.n_labels <= last.n_labels - STOP_LABELS] or points[:1]
    before = earlier[-1]
    estimate, low, high = (last.figures[what].get(key) for key in ("estimate", "low", "high"))
    move = estimate - before.figures[what]["estimate"]
    half = (high - low) / 2 if low is not None and high is not None else float("nan")
    labels = last.n_labels - before.n_labels
    words = f"the last {labels} labels moved {what} by {abs(move) * 100:.1f} points (its interval is ±{half * 100:.0f})"
    if abs(move) < STOP_MOVE or (np.isfinite(half) and abs(move) < half / 4):
        return f"{words[0].upper()}{words[1:]}: more labels are unlikely to change much."
    trend = "rises" if move > 0 else "falls"
    return f"Keep labeling: {what} still {trend} ({words})."
