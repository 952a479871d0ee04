"""An ensemble run: its member runs' fold ensembles, combined as fitted on their out-of-fold predictions."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from zoidberg.inference.decisions import Prediction
from zoidberg.inference.ensemble import Ensemble
from zoidberg.inference.gating import Decides
from zoidberg.runs.store import Run


class EnsembleOfRuns(Decides):
    """An ensemble run: its member runs' fold ensembles, combined as fitted on their out-of-fold predictions.

    Each member prepares every image as it trained (its own size, resize and contrast), so
    members of different sizes combine; the ensemble's calibration and threshold apply to
    the combination.

    Args:
        run: The ensemble run.
        members: The members' loaded fold ensembles, in config order.
        combiner: The combination (ensemble.json).
        calibration: Fitted on the combined out-of-fold predictions, if any.
        threshold: The ensemble's threshold on `scale`.
        scale: "raw" or "calibrated".
        operating_point: operating_point.json.
    """

    frozen = False

    def __init__(self, run: Run, members: Sequence[Ensemble], combiner, calibration, threshold: float, scale: str, operating_point: dict | None):
        self.run = run
        self.members = list(members)
        self.combiner = combiner
        self.calibration = calibration
        self.threshold = threshold
        self.scale = scale
        self.operating_point = operating_point
        self.class_names = self.members[0].class_names
        self.image_size = max(member.image_size for member in self.members)
        # Each member scores as it did out of fold, with or without test-time augmentation.
        self.tta = False
        self.folds = tuple(range(1, len(self.members) + 1))

    @property
    def is_binary(self) -> bool:
        """Whether the run is normal vs pneumonia."""
        return len(self.class_names) == 2

    def resized(self, gray: np.ndarray) -> np.ndarray:
        """The image every member starts from: the decoded image itself, each member resizes it."""
        return gray

    def gate_input(self, gray: np.ndarray) -> np.ndarray:
        """The image the gate scores: as the first member, whose training films fit the gate, sees it."""
        return self.members[0].model_input(gray)

    def _member_tta(self, member: Ensemble, tta: bool | None) -> bool:
        return member.tta if not tta else True

    def probabilities(self, gray: np.ndarray, *, tta: bool | None = None) -> Prediction:
        """Every member's prediction of one decoded image, and their combination.

        Args:
            gray: 2-D uint8 image of any size.
            tta: True averages test-time variants in every member (default: each member's setting).

        Returns:
            The prediction: per member (mean of its folds), combined raw and calibrated.
        """
        return self.predictions_of([gray], tta=tta)[0]

    def predictions_of(self, grays: Sequence[np.ndarray], *, tta: bool | None = None, progress=None) -> list[Prediction]:
        """Predicts many decoded images: each member in batches, then the combination (see Ensemble.predictions_of)."""
        if not len(grays):
            return []
        outputs = []
        for member in self.members:
            images = np.stack([member.model_input(gray) for gray in grays])
            outputs.append(member.score_images(images, tta=self._member_tta(member, tta), progress=progress).mean(axis=0))
        per_member = np.stack(outputs)  # (members, N, classes)
        combined, calibrated = self.combine(per_member)
        return [
            Prediction(
                self.class_names, per_member[:, index], None, unit="member", combined=combined[index],
                combined_calibrated=None if calibrated is None else calibrated[index],
            )
            for index in range(len(grays))
        ]

    def score_dataset(self, dataset, rows: np.ndarray, *, progress=None, tta: bool | None = None) -> np.ndarray:
        """(members, len(rows), classes) raw probabilities: each member's fold mean.

        A member prepared like the dataset scores it as is; another reads the same folder
        again with its own size and preprocessing (from the disk cache after the first time).
        """
        from zoidberg.config import DataConfig, from_mapping
        from zoidberg.data.labeled_films import load_again

        rows = np.asarray(rows)
        outputs = []
        for member in self.members:
            options = from_mapping(DataConfig, {**(member.run.config.get("data") or {}), "data_dir": str(dataset.root)}).loader_options()
            same = options == {"label_mode": dataset.label_mode, "image_size": dataset.image_size, "resize": dataset.resize, "enhance": dataset.enhance}
            own, own_rows = dataset, rows
            if not same:
                own = load_again(dataset, **options)
                position = {path: index for index, path in enumerate(own.paths)}
                missing = [dataset.paths[row] for row in rows if dataset.paths[row] not in position]
                if missing:
                    raise ValueError(f"{len(missing)} image(s) could not be read at {member.image_size} px, e.g. {missing[0]}.")
                own_rows = np.array([position[dataset.paths[row]] for row in rows], dtype=np.int64)
            outputs.append(member.score_dataset(own, own_rows, progress=progress, tta=self._member_tta(member, tta)).mean(axis=0))
        return np.stack(outputs)

    def combine(self, per_member: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(N, C) raw and calibrated (or None) probabilities of (members, N, C) member outputs."""
        raw = self.combiner.apply(per_member)
        return raw, None if self.calibration is None else self.calibration.apply(raw)

    def signature(self) -> list[list]:
        """Every member's fold models: an evaluation is reused only for the same models."""
        return [[member.run.id, *entry] for member in self.members for entry in member.signature()]

    def describe_models(self) -> str:
        """What scores, for messages: "2 member runs (8 fold models, mean)"."""
        models = sum(len(member.folds) for member in self.members)
        return f"{len(self.members)} member runs ({models} fold models, {self.combiner.method})"

    def gradcam(self, gray: np.ndarray, class_index: int | None = None) -> np.ndarray:
        """The members' Grad-CAM maps (each averaged over its folds) at the largest member's size, averaged.

        Members that train at other sizes are resized to it first; every member explains
        the same class (for three-class runs, the one the ensemble predicts).
        """
        from PIL import Image

        if class_index is None and not self.is_binary:
            class_index = self.decide(self.probabilities(gray)).class_index
        heatmaps = []
        for member in self.members:
            heatmap = np.asarray(member.gradcam(member.resized(gray), class_index), dtype=np.float32)
            if heatmap.shape != (self.image_size, self.image_size):
                heatmap = np.asarray(Image.fromarray(heatmap).resize((self.image_size, self.image_size), Image.Resampling.BILINEAR))
            heatmaps.append(heatmap)
        heatmap = np.mean(heatmaps, axis=0)
        peak = heatmap.max()
        return heatmap / peak if peak > 0 else heatmap
