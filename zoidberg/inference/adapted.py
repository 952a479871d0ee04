"""An adapted run: its parent's models, then the site heads fitted on the site's films."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

import numpy as np

from zoidberg.inference.decisions import Prediction
from zoidberg.inference.forward import SCORING_BATCH_SIZE
from zoidberg.inference.gating import Decides
from zoidberg.runs.store import Run


class AdaptedEnsemble(Decides):
    """An adapted run: its parent's models, then site heads fitted on the site's films (adaptation.json).

    Each head is a logistic regression on the parent's members' log-odds and, for the "head"
    method, on the frozen backbone features of the parent's frozen member. The heads are the
    k cross-fit heads, each fitted on k−1 parts of the site: their mean is the adapted
    probability, and their spread the per-"part" spread. The calibration and threshold were
    fitted on the cross-fitted site predictions.

    Args:
        run: The adapted run.
        parent: The parent's loaded Ensemble or EnsembleOfRuns.
        heads: The fitted SiteHeads.
        feature_member: The parent's frozen member whose features the heads read, or None.
        calibration: Fitted on the cross-fitted site predictions, if any.
        threshold: The threshold on `scale`.
        scale: "raw" or "calibrated".
        operating_point: operating_point.json.
    """

    frozen = False
    tta = False

    def __init__(self, run: Run, parent, heads, feature_member, calibration, threshold: float, scale: str, operating_point: dict | None):
        self.run = run
        self.parent = parent
        self.heads = list(heads)
        self.feature_member = feature_member
        self.calibration = calibration
        self.threshold = threshold
        self.scale = scale
        self.operating_point = operating_point
        self.class_names = parent.class_names
        self.image_size = parent.image_size
        self.folds = tuple(range(1, len(self.heads) + 1))

    @property
    def is_binary(self) -> bool:
        """Whether the run is normal vs pneumonia (adaptation is binary only)."""
        return True

    @property
    def _members(self) -> list:
        return list(getattr(self.parent, "members", [self.parent]))

    def resized(self, gray: np.ndarray) -> np.ndarray:
        """The image the parent starts from."""
        return self.parent.resized(gray)

    def model_input(self, gray: np.ndarray) -> np.ndarray:
        """The image the parent's (first member's) models see."""
        return self._members[0].model_input(gray)

    def gate_input(self, gray: np.ndarray) -> np.ndarray:
        """The image the parent's gate scores."""
        return self.parent.gate_input(gray)

    @cached_property
    def _gate_state(self) -> tuple:
        """The parent's gate: the adapted heads change decisions, not which films the models know."""
        return self.parent._gate_state

    def _head_inputs(self, member_positive: np.ndarray, features: np.ndarray | None) -> np.ndarray:
        from zoidberg.models.site_heads import make_inputs

        return make_inputs(member_positive, features)

    def _per_head(self, inputs: np.ndarray) -> np.ndarray:
        """(heads, N, 2) probabilities of the heads on their inputs."""
        positive = np.stack([head.positive(inputs) for head in self.heads])
        return np.stack([1.0 - positive, positive], axis=-1)

    def _features_of_images(self, grays: Sequence[np.ndarray]) -> np.ndarray | None:
        if self.feature_member is None:
            return None
        member = self.feature_member
        images = np.stack([member.model_input(gray) for gray in grays]).astype(np.float32)[..., None] / 255.0
        batches = [member._predict.features_of(images[start : start + SCORING_BATCH_SIZE])
                   for start in range(0, len(images), SCORING_BATCH_SIZE)]
        return np.concatenate(batches)

    def member_positive_of_images(self, grays: Sequence[np.ndarray]) -> np.ndarray:
        """(members, N) raw P(pneumonia) of the parent's members (one row for a single run)."""
        rows = []
        for member in self._members:
            images = np.stack([member.model_input(gray) for gray in grays])
            rows.append(member.score_images(images).mean(axis=0)[:, 1])
        return np.stack(rows)

    def probabilities(self, gray: np.ndarray, *, tta: bool | None = None) -> Prediction:
        """The heads' prediction of one decoded image (test-time augmentation does not apply)."""
        return self.predictions_of([gray])[0]

    def predictions_of(self, grays: Sequence[np.ndarray], *, tta: bool | None = None, progress=None) -> list[Prediction]:
        """Predicts many decoded images: the parent's members, the features, then every head."""
        if not len(grays):
            return []
        per_head = self._per_head(self._head_inputs(self.member_positive_of_images(grays), self._features_of_images(grays)))
        if progress:
            progress(len(grays), len(grays))
        raw, calibrated = self.combine(per_head)
        per_calibrated = None if self.calibration is None else np.stack([self.calibration.apply(head) for head in per_head])
        return [
            Prediction(self.class_names, per_head[:, index], None if per_calibrated is None else per_calibrated[:, index], unit="part",
                       combined=raw[index], combined_calibrated=None if calibrated is None else calibrated[index])
            for index in range(len(grays))
        ]

    def site_inputs(self, dataset, rows: np.ndarray, *, progress=None, per_member: np.ndarray | None = None) -> np.ndarray:
        """The heads' (len(rows), D) inputs for dataset rows: parent member log-odds and cached features.

        per_member: the parent's score_dataset() of these rows, when the caller has it already.
        """
        from zoidberg.config import DataConfig, from_mapping
        from zoidberg.data.labeled_films import load_again

        rows = np.asarray(rows)
        if per_member is None:
            per_member = self.parent.score_dataset(dataset, rows, progress=progress)
        member_positive = per_member[:, :, 1] if len(self._members) > 1 else per_member.mean(axis=0)[None, :, 1]
        features = None
        if self.feature_member is not None:
            member = self.feature_member
            options = from_mapping(DataConfig, {**(member.run.config.get("data") or {}), "data_dir": str(dataset.root)}).loader_options()
            own, own_rows = dataset, rows
            if own.image_size != member.image_size or own.resize != options["resize"] or own.enhance != options["enhance"]:
                own = load_again(dataset, **options)
                position = {path: index for index, path in enumerate(own.paths)}
                own_rows = np.array([position[dataset.paths[row]] for row in rows], dtype=np.int64)
            cached = member._dataset_features(own, None)
            features = cached[own_rows] if cached is not None else self._features_of_images([own.images[row] for row in own_rows])
        return self._head_inputs(member_positive, features)

    def score_dataset(self, dataset, rows: np.ndarray, *, progress=None, tta: bool | None = None) -> np.ndarray:
        """(heads, len(rows), 2) probabilities of dataset rows."""
        return self._per_head(self.site_inputs(dataset, rows, progress=progress))

    def combine(self, per_head: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(N, 2) raw and calibrated (or None) probabilities: the heads' mean, then the calibration."""
        raw = per_head.mean(axis=0)
        return raw, None if self.calibration is None else self.calibration.apply(raw)

    def signature(self) -> list[list]:
        """The parent's models and this run's adaptation.json: an evaluation is reused only for the same ones."""
        from zoidberg.runs.store import ADAPTATION_FILE

        path = self.run.path / ADAPTATION_FILE
        stat = path.stat() if path.exists() else None
        return [*self.parent.signature(), [ADAPTATION_FILE, stat.st_size if stat else 0, int(stat.st_mtime) if stat else 0]]

    def describe_models(self) -> str:
        """What scores, for messages."""
        return f"{self.parent.describe_models()} of run {self.parent.run.id}, then {len(self.heads)} site heads"

    def gradcam(self, gray: np.ndarray, class_index: int | None = None) -> np.ndarray:
        """The parent's Grad-CAM: the heads reweight its evidence; where it looks is the parent's."""
        return self.parent.gradcam(gray, class_index)
