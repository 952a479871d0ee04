"""What every loaded run shares: decisions at its threshold, and the out-of-distribution gate before any diagnosis."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

import numpy as np

from zoidberg.data.imaging import decode_grayscale
from zoidberg.inference.decisions import Decision, Prediction, decide
from zoidberg.inference.forward import SCORING_BATCH_SIZE


def gate_fields(verdict) -> dict:
    """A prediction row's gate fields; None where the run has no gate (its predictions are unchecked)."""
    if verdict is None:
        return {"in_distribution": None, "ood_score": None, "ood_reason": None}
    return verdict.to_dict()


class Decides:
    """Decisions and the gate for anything with probabilities(), a threshold, a scale and an image size."""

    def decide(self, prediction: Prediction, threshold: float | None = None, scale: str | None = None) -> Decision:
        """Applies `threshold` on `scale` (default: the run's operating point) to a prediction."""
        return decide(prediction, self.threshold if threshold is None else threshold, scale or self.scale)

    def gate_input(self, gray: np.ndarray) -> np.ndarray:
        """The image the gate scores: the one the models (or the first member) see."""
        return self.model_input(gray)

    @cached_property
    def _gate_state(self) -> tuple:
        """(the gate or None, why there is none), read once per loaded ensemble."""
        from zoidberg.inference.gate import GateUnavailable, load_run_gate

        try:
            return load_run_gate(self.run), ""
        except GateUnavailable as error:
            return None, str(error)

    @property
    def gate(self):
        """The run's out-of-distribution gate (fitted on first use for older runs), or None (see gate_note)."""
        return self._gate_state[0]

    @property
    def gate_note(self) -> str:
        """Why the run has no gate, or ""."""
        return self._gate_state[1]

    def gate_verdicts(self, grays: Sequence[np.ndarray], *, prepared: bool = False, headers: Sequence | None = None) -> list:
        """The gate's verdict on each decoded image, or None for each when the run has no gate.

        Films the thumbnail stage lets through meet the feature stage when the run (or a
        member) has a frozen ImageNet backbone: their features against the training films'.

        Args:
            grays: Decoded images.
            prepared: They are already as the gate sees them (an evaluation's dataset rows).
            headers: Each file's DicomFacts (None for a PNG or JPEG): what a DICOM header says
                (another modality or body part, a side view, an adult) refuses it first.
        """
        from zoidberg.data.dicom_facts import facts_verdict

        settled = [facts_verdict(facts) for facts in (headers or [None] * len(grays))]
        if self.gate is None:
            return settled if any(settled) else [None] * len(grays)
        inputs = list(grays) if prepared else [self.gate_input(gray) for gray in grays]
        verdicts = self.gate.verdicts(inputs)
        verdicts = [header or verdict for header, verdict in zip(settled, verdicts)]
        feature_gate, member = self._feature_stage
        passing = [index for index, verdict in enumerate(verdicts) if verdict.in_distribution]
        if feature_gate is None or not passing:
            return verdicts
        films = feature_gate.prepare_films([member.model_input(inputs[index]) for index in passing])
        images = np.stack(films).astype(np.float32)[..., None] / 255.0
        features = np.concatenate([member._predict.features_of(images[start : start + SCORING_BATCH_SIZE])
                                   for start in range(0, len(images), SCORING_BATCH_SIZE)])
        for index, verdict in zip(passing, feature_gate.verdicts(features, films)):
            if verdict is not None:
                verdicts[index] = verdict
        return verdicts

    @cached_property
    def _feature_stage(self) -> tuple:
        """(the feature stage, the frozen member whose backbone it reads), or (None, None)."""
        from zoidberg.inference.gate import load_run_feature_gate

        candidates = list(getattr(self, "members", None) or [getattr(self, "parent", self)])
        candidates = [member for candidate in candidates for member in getattr(candidate, "members", [candidate])]
        member = next((candidate for candidate in candidates if getattr(candidate, "frozen", False)), None)
        if member is None:
            return None, None
        gate = load_run_feature_gate(member.run)
        return (gate, member) if gate is not None else (None, None)
