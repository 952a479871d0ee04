"""What a run says of one image: its probabilities (raw, calibrated, per fold), and the decision at a threshold."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# What every decision is for, said wherever one is shown or exported (the report, model cards, results).
INTENDED_USE = (
    "Research and teaching: detecting pneumonia on pediatric chest X-rays, to learn and to demonstrate how such models "
    "are trained and validated. Not a medical device: it has not been validated clinically and must never be used to "
    "diagnose, treat or triage a patient."
)
# The threshold of a binary run that has no out-of-fold threshold yet (a stopped run).
DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class Prediction:
    """What the models say about one image, before any threshold.

    Attributes:
        class_names: Class names in output order.
        per_fold: Raw class probabilities of every fold model (or ensemble member), (models, classes).
        calibrated: The same after the run's calibration, or None when it has none (or
            when only the combination is calibrated, as in an ensemble of runs).
        unit: What each row is: "fold" or "member".
        combined: The raw combination when it is not the mean of the rows (stacking).
        combined_calibrated: The calibrated combination of an ensemble of runs.
    """

    class_names: tuple[str, ...]
    per_fold: np.ndarray
    calibrated: np.ndarray | None = None
    unit: str = "fold"
    combined: np.ndarray | None = None
    combined_calibrated: np.ndarray | None = None

    def scaled(self, scale: str = "raw") -> np.ndarray:
        """The per-model probabilities on a scale: "raw" or "calibrated" (raw when they have no calibration)."""
        return self.calibrated if scale == "calibrated" and self.calibrated is not None else self.per_fold

    @property
    def has_calibration(self) -> bool:
        """Whether calibrated probabilities exist."""
        return self.calibrated is not None or self.combined_calibrated is not None

    def on(self, scale: str = "raw") -> np.ndarray:
        """The ensemble's class probabilities on a scale (raw when there is no calibration)."""
        if scale == "calibrated" and self.combined_calibrated is not None:
            return self.combined_calibrated
        if scale == "calibrated" and self.calibrated is not None:
            return self.calibrated.mean(axis=0)
        return self.combined if self.combined is not None else self.per_fold.mean(axis=0)

    @property
    def mean(self) -> np.ndarray:
        """The ensemble's raw class probabilities."""
        return self.on("raw")

    @property
    def is_binary(self) -> bool:
        """Whether the run is normal vs pneumonia."""
        return len(self.class_names) == 2


@dataclass(frozen=True)
class Decision:
    """A prediction at a given threshold.

    Attributes:
        label: Predicted class name.
        class_index: Its index.
        probability: P(pneumonia) for binary runs, P(predicted class) otherwise.
        spread: Standard deviation of that probability across folds.
        per_fold: That probability for each fold model.
        class_probabilities: Mean probability of every class.
        threshold: The threshold used (binary runs), else None.
        scale: The probabilities the threshold applied to: "raw" or "calibrated".
        raw_probability: `probability` before calibration.
        calibrated_probability: After calibration, or None.
        unit: What each per_fold value is: "fold" or "member".
    """

    label: str
    class_index: int
    probability: float
    spread: float
    per_fold: tuple[float, ...]
    class_probabilities: dict[str, float]
    threshold: float | None
    scale: str = "raw"
    raw_probability: float | None = None
    calibrated_probability: float | None = None
    unit: str = "fold"

    @classmethod
    def from_record(cls, record: dict) -> "Decision":
        """The decision a diagnosed prediction record carries (what the page draws from record_of's record)."""
        return cls(
            label=record["label"], class_index=record["class_index"], probability=record["probability"], spread=record["spread"],
            per_fold=tuple(record["per_fold"]), class_probabilities=dict(record["class_probabilities"]), threshold=record["threshold"],
            scale=record["scale"], raw_probability=record["probability_raw"], calibrated_probability=record["probability_calibrated"],
            unit=record["unit"],
        )

    def to_dict(self) -> dict:
        """Returns the decision as the JSON the CLI prints."""
        return {
            "label": self.label,
            "class_index": self.class_index,
            "probability": self.probability,
            "spread": self.spread,
            "per_fold": list(self.per_fold),
            "class_probabilities": dict(self.class_probabilities),
            "threshold": self.threshold,
            "scale": self.scale,
            "probability_raw": self.raw_probability,
            "probability_calibrated": self.calibrated_probability,
            "unit": self.unit,
        }


def decide(prediction: Prediction, threshold: float | None = None, scale: str = "raw") -> Decision:
    """Applies a threshold to a threshold-free prediction.

    Binary runs call pneumonia when P(pneumonia) >= threshold; three-class runs take the
    most probable class and ignore the threshold.

    Args:
        prediction: The fold models' probabilities.
        threshold: Decision threshold for binary runs (DEFAULT_THRESHOLD when None), on `scale`.
        scale: "raw" or "calibrated" probabilities (raw when the run has no calibration).

    Returns:
        The decision.
    """
    scale = scale if prediction.has_calibration else "raw"
    per_fold_values = prediction.scaled(scale)
    mean = prediction.on(scale)
    class_probabilities = {str(name): float(value) for name, value in zip(prediction.class_names, mean)}
    if prediction.is_binary:
        cutoff = DEFAULT_THRESHOLD if threshold is None else float(threshold)
        index = int(mean[1] >= cutoff)
        column = 1
    else:
        cutoff = None
        index = column = int(np.argmax(mean))
    values = per_fold_values[:, column]
    return Decision(
        label=prediction.class_names[index],
        class_index=index,
        probability=float(mean[column]),
        spread=float(values.std()),
        per_fold=tuple(float(value) for value in values),
        class_probabilities=class_probabilities,
        threshold=cutoff,
        scale=scale,
        raw_probability=float(prediction.on("raw")[column]),
        calibrated_probability=float(prediction.on("calibrated")[column]) if prediction.has_calibration else None,
        unit=prediction.unit,
    )


def as_class_probabilities(outputs: np.ndarray) -> np.ndarray:
    """Turns a sigmoid (N, 1) output into (N, 2) columns; leaves softmax outputs alone."""
    outputs = np.asarray(outputs, dtype=np.float32)
    if outputs.ndim == 1:
        outputs = outputs[:, None]
    if outputs.shape[1] == 1:
        return np.concatenate([1.0 - outputs, outputs], axis=1)
    return outputs
