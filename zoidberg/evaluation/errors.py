"""The X-rays a run gets wrong, most wrong first: out of fold or in any evaluation, at the run's operating point."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoidberg.runs.store import DATA_FILE, OPERATING_POINT_FILE, Run

# What a gallery can show: the two kinds of mistake of a binary run, every wrong image, or one confusion cell.
ERROR_KINDS = ("false positives", "false negatives", "all errors")


@dataclass(frozen=True)
class ScoredImage:
    """One image of a gallery.

    Attributes:
        path: The file, absolute.
        label: Its true class.
        predicted: The class decided at the run's operating point.
        probability: P(pneumonia) for binary runs, P(predicted class) otherwise, on the scale decided on.
        loss: How wrong the decision is: the cross-entropy of the true class.
        patient: The patient id.
        fold: The fold that scored it (out-of-fold images), else None.
    """

    path: str
    label: str
    predicted: str
    probability: float
    loss: float
    patient: str
    fold: int | None = None


@dataclass(frozen=True)
class ScoredSet:
    """Every image of one source (out of fold, or an evaluation) with its decision."""

    source: str
    images: list[ScoredImage]
    class_names: tuple[str, ...]
    threshold: float | None

    def select(self, kind: str = "all errors", cell: tuple[str, str] | None = None) -> list[ScoredImage]:
        """The images of a kind of mistake (or of one confusion cell: (true, predicted)), most wrong first."""
        if cell is not None:
            chosen = [image for image in self.images if (image.label, image.predicted) == cell]
        elif kind == "false positives":
            chosen = [image for image in self.images if image.label == self.class_names[0] and image.predicted != image.label]
        elif kind == "false negatives":
            chosen = [image for image in self.images if image.label != self.class_names[0] and image.predicted == self.class_names[0]]
        elif kind == "all errors":
            chosen = [image for image in self.images if image.predicted != image.label]
        else:
            raise ValueError(f"kind must be one of {', '.join(ERROR_KINDS)}, not {kind!r}.")
        return sorted(chosen, key=lambda image: image.loss, reverse=True)


def _decide(probabilities: np.ndarray, threshold: float | None) -> np.ndarray:
    if probabilities.shape[1] == 2 and threshold is not None:
        return (probabilities[:, 1] >= threshold).astype(int)
    return probabilities.argmax(axis=1)


def _scored(source, root, paths, labels, probabilities, patients, class_names, threshold, folds=None) -> ScoredSet:
    predicted = _decide(probabilities, threshold)
    losses = -np.log(np.clip(probabilities[np.arange(len(labels)), labels], 1e-7, 1.0))
    binary = len(class_names) == 2
    images = [
        ScoredImage(
            path=str(Path(root) / paths[row]) if root else str(paths[row]),
            label=class_names[labels[row]],
            predicted=class_names[predicted[row]],
            probability=float(probabilities[row, 1] if binary else probabilities[row, predicted[row]]),
            loss=float(losses[row]),
            patient=str(patients[row]),
            fold=None if folds is None else int(folds[row]) + 1,
        )
        for row in range(len(labels))
    ]
    return ScoredSet(source, images, tuple(class_names), threshold if binary else None)


def out_of_fold_images(run: Run) -> ScoredSet:
    """The pooled images, each scored by the fold model that never saw it, decided at the run's operating point.

    Raises:
        ValueError: The run lacks out-of-fold predictions of some fold.
    """
    from zoidberg.evaluation.out_of_fold import read_out_of_fold

    out_of_fold = read_out_of_fold(run)
    point = run.read_json(OPERATING_POINT_FILE) or {}
    threshold = point.get("threshold", (run.summary() or {}).get("threshold", 0.5))
    scale = (point.get("choice") or {}).get("probabilities", "raw")
    root = (run.read_json(DATA_FILE) or {}).get("root") or (run.config.get("data") or {}).get("data_dir")
    return _scored(
        "out-of-fold", root, out_of_fold.paths, out_of_fold.labels, out_of_fold.scaled(scale), out_of_fold.patients,
        out_of_fold.class_names, threshold, out_of_fold.fold_of,
    )


def evaluation_images(run: Run, evaluation: dict) -> ScoredSet:
    """An evaluation's images, decided at the threshold and scale it is shown at."""
    from zoidberg.evaluation.stored import read_predictions

    stored = read_predictions(run, evaluation["name"])
    scale = evaluation.get("scale", "raw")
    probabilities = stored["calibrated"] if scale == "calibrated" and stored["calibrated"] is not None else stored["raw"]
    return _scored(
        evaluation["name"], evaluation.get("data_dir"), stored["paths"], stored["labels"], probabilities, stored["patients"],
        stored["class_names"], evaluation.get("threshold"),
    )
