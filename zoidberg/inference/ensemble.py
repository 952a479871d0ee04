"""One run's fold models and what is needed to apply them: preparation, batched scoring, cached features, Grad-CAM."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from zoidberg.data.imaging import prepare_image, resize_square
from zoidberg.evaluation.calibration import Calibration
from zoidberg.inference.decisions import Prediction
from zoidberg.inference.forward import SCORING_BATCH_SIZE, FrozenForward, make_fast_predictor
from zoidberg.inference.gating import Decides
from zoidberg.runs.store import Run


@dataclass
class Ensemble(Decides):
    """The fold models of one run and what is needed to apply them.

    Attributes:
        run: The run.
        models: Fold models, loaded with safe_mode=True from the run folder.
        class_names: Class names in output order.
        image_size: Input side in pixels.
        threshold: The run's decision threshold (binary runs), on `scale`.
        folds: The fold numbers of the models, in order.
        calibration: The calibration fitted on the out-of-fold predictions, if any.
        scale: "raw" or "calibrated": the probabilities the threshold applies to.
        operating_point: The run's operating_point.json (choice, threshold, fold-wise spread), if any.
    """

    run: Run
    models: list
    class_names: tuple[str, ...]
    image_size: int
    threshold: float
    folds: tuple[int, ...] = ()
    calibration: Calibration | None = None
    scale: str = "raw"
    operating_point: dict | None = None
    tta: bool = False

    def __post_init__(self):
        self._gradcam = None
        self.frozen = (self.run.config.get("model") or {}).get("transfer_mode") == "frozen"
        if self.frozen:
            from zoidberg.config import ModelConfig, from_mapping

            self._predict = FrozenForward(self.models, from_mapping(ModelConfig, self.run.config["model"]), len(self.class_names))
        else:
            # Traced on the first call: an evaluation from cached features never needs it.
            self._predict = make_fast_predictor(self.models, warm_up=False)

    @property
    def is_binary(self) -> bool:
        """Whether the run is normal vs pneumonia."""
        return len(self.class_names) == 2

    def resized(self, gray: np.ndarray) -> np.ndarray:
        """The S×S uint8 image, resized (stretched or padded) as the run trained, not yet enhanced.

        Enhancement is idempotent on nothing, so callers keep this image (for Grad-CAM, say)
        and hand it to probabilities(), which enhances it once.
        """
        return resize_square(gray, self.image_size, (self.run.config.get("data") or {}).get("resize", "stretch"))

    def model_input(self, gray: np.ndarray) -> np.ndarray:
        """The S×S uint8 image the models see: resized and enhanced as the run trained."""
        data = self.run.config.get("data") or {}
        return prepare_image(gray, self.image_size, resize=data.get("resize", "stretch"), enhance=data.get("enhance", "none"))

    def prepare(self, gray: np.ndarray) -> np.ndarray:
        """Prepares a decoded grayscale image as a (1, S, S, 1) float batch in [0, 1]."""
        return (self.model_input(gray).astype(np.float32) / 255.0)[None, :, :, None]

    def _prediction(self, per_fold: np.ndarray) -> Prediction:
        """Wraps (folds, classes) raw probabilities with their calibrated twins."""
        calibrated = None if self.calibration is None else self.calibration.apply(per_fold)
        return Prediction(self.class_names, per_fold, calibrated)

    def _forward(self, batch: np.ndarray, tta: bool) -> np.ndarray:
        """(folds, N, output) of a float (N, S, S, 1) batch, averaged over the TTA variants when asked."""
        if not tta:
            return np.asarray(self._predict(batch))
        from zoidberg.inference.tta import tta_variants

        return np.mean([np.asarray(self._predict(np.asarray(variant))) for variant in tta_variants(batch)], axis=0)

    def probabilities(self, gray: np.ndarray, *, tta: bool | None = None) -> Prediction:
        """Runs every fold model on one decoded image.

        Args:
            gray: 2-D uint8 image of any size.
            tta: Average over the test-time variants (default: the run's setting).

        Returns:
            The threshold-free prediction, raw and (when the run has a calibration) calibrated.
        """
        from zoidberg.inference.decisions import as_class_probabilities

        outputs = self._forward(self.prepare(gray), self.tta if tta is None else tta)  # (folds, 1, out)
        per_fold = np.stack([as_class_probabilities(fold_output)[0] for fold_output in outputs])
        return self._prediction(per_fold)

    def predictions_of(self, grays: Sequence[np.ndarray], *, tta: bool | None = None, progress=None) -> list[Prediction]:
        """Predicts many decoded images in batches: one forward pass per batch, not per image.

        A frozen-backbone run computes the backbone once per image and only the heads per fold.

        Args:
            grays: 2-D uint8 images of any sizes.
            tta: Average over the test-time variants (default: the run's setting).
            progress: Called as progress(done, total) after every batch.

        Returns:
            One threshold-free prediction per image, in order.
        """
        if not len(grays):
            return []
        images = np.stack([self.model_input(gray) for gray in grays])
        per_fold = self.score_images(images, tta=tta, progress=progress)
        return [self._prediction(per_fold[:, index]) for index in range(len(grays))]

    def score_images(self, images: np.ndarray, *, batch_size: int = SCORING_BATCH_SIZE, progress=None, tta: bool | None = None) -> np.ndarray:
        """Raw class probabilities of every fold model for many uint8 images at the run's size.

        Args:
            images: (N, S, S) uint8 images, already prepared at the run's size.
            batch_size: Images per forward pass.
            progress: Called as progress(done, total) after every batch.
            tta: Average over the test-time variants (default: the run's setting); four
                forward passes per image.

        Returns:
            (folds, N, classes) probabilities.
        """
        from zoidberg.inference.decisions import as_class_probabilities

        tta = self.tta if tta is None else tta
        outputs = []
        for start in range(0, len(images), batch_size):
            batch = np.asarray(images[start : start + batch_size], dtype=np.float32)[..., None] / 255.0
            outputs.append(self._forward(batch, tta))
            if progress:
                progress(min(start + batch_size, len(images)), len(images))
        if not outputs:
            return np.zeros((len(self.models), 0, len(self.class_names)), dtype=np.float32)
        stacked = np.concatenate(outputs, axis=1)
        return np.stack([as_class_probabilities(fold_outputs) for fold_outputs in stacked])

    def score_dataset(self, dataset, rows: np.ndarray, *, progress=None, tta: bool | None = None) -> np.ndarray:
        """Raw class probabilities (folds, len(rows), classes) of dataset rows.

        A frozen-backbone run reads the backbone's features from the feature cache (computing
        and caching them once per dataset), so that only the small heads run per fold; with
        test-time augmentation every variant needs the backbone, so the cache is not used.
        """
        rows = np.asarray(rows)
        tta = self.tta if tta is None else tta
        if tta:
            return self.score_images(dataset.images[rows], progress=progress, tta=True)
        if self.frozen:
            features = self._dataset_features(dataset, progress)
            if features is not None:
                from zoidberg.inference.decisions import as_class_probabilities

                outputs = self.heads_on_features(features[rows])
                return np.stack([as_class_probabilities(fold_outputs) for fold_outputs in outputs])
        return self.score_images(dataset.images[rows], progress=progress)

    def frozen_parts(self) -> tuple | None:
        """(the shared backbone extractor, the fold heads) of a frozen run, or None: what exports build on."""
        return (self._predict.extractor, self._predict.heads) if self.frozen else None

    def heads_on_features(self, features: np.ndarray) -> np.ndarray:
        """(folds, N, output) outputs of a frozen run's heads on backbone features."""
        return self._predict.heads_on(features)

    def _dataset_features(self, dataset, progress):
        """The cached backbone features of a dataset, or None when the run's weights file is not here."""
        from zoidberg.config import ModelConfig, from_mapping
        from zoidberg.models.weights import WeightsNotFoundError
        from zoidberg.inference.features import load_or_compute_features

        try:
            features = load_or_compute_features(dataset, from_mapping(ModelConfig, self.run.config["model"]), self.image_size, progress=progress)
        except WeightsNotFoundError:
            # The backbone is inside every fold model, so scoring still works, only uncached.
            return None
        # The cache is keyed by the weights file; should that file have changed since the run
        # trained, its features are not this run's, so a few rows are checked against the models.
        probe = np.asarray(dataset.images[:2], dtype=np.float32)[..., None] / 255.0
        expected = np.asarray(self._predict.extractor(probe, training=False))
        if not np.allclose(expected, features[: len(probe)], atol=1e-3, rtol=1e-3):
            return None
        return features

    def combine(self, per_fold: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(N, C) raw and calibrated (or None) probabilities of (folds, N, C) fold outputs: their means."""
        raw = per_fold.mean(axis=0)
        if self.calibration is None:
            return raw, None
        return raw, np.mean([self.calibration.apply(fold) for fold in per_fold], axis=0)

    def signature(self) -> list[list]:
        """[fold, size, mtime] of each fold model: an evaluation is reused only for the same models."""
        signature = []
        for fold in self.folds:
            stat = self.run.model_path(fold).stat()
            signature.append([int(fold), stat.st_size, stat.st_mtime_ns])
        return signature

    def describe_models(self) -> str:
        """What scores, for messages: "3 fold models"."""
        return f"{len(self.folds)} fold model{'s' if len(self.folds) != 1 else ''}"

    def gradcam(self, gray: np.ndarray, class_index: int | None = None) -> np.ndarray:
        """Returns the Grad-CAM heatmap (h, w) in [0, 1], averaged over fold models.

        For binary runs the map explains the pneumonia score; for three-class runs the
        class the ensemble predicts unless `class_index` is given, so that every fold
        model explains the same class.
        """
        from zoidberg.inference.explain import make_gradcam

        if class_index is None and not self.is_binary:
            class_index = self.decide(self.probabilities(gray)).class_index

        if self._gradcam is None:
            self._gradcam = [make_gradcam(model) for model in self.models]
        batch = self.prepare(gray)
        heatmaps = [explain(batch, class_index)[1][0] for explain in self._gradcam]
        heatmap = np.mean(np.stack([np.asarray(h) for h in heatmaps]), axis=0)
        peak = heatmap.max()
        return heatmap / peak if peak > 0 else heatmap
