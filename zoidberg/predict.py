"""Prediction with a finished run's fold ensemble: safe loading, one traced forward pass, decisions, Grad-CAM."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from zoidberg.data.imaging import decode_grayscale, prepare_image, resize_square
from zoidberg.evaluation.calibration import Calibration
from zoidberg.runs.store import CALIBRATION_FILE, DATA_FILE, MODEL_FILE, OPERATING_POINT_FILE, Run, RunStore

# The threshold of a binary run that has no out-of-fold threshold yet (a stopped run).
DEFAULT_THRESHOLD = 0.5
# Images per forward pass when scoring many: large enough to amortize the call, small
# enough that activations stay in cache on a CPU.
SCORING_BATCH_SIZE = 32


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


class FastPredictor:
    """Calls every model in one tf.function; model.predict costs ~50 ms per call on CPU.

    Attributes:
        models: The models, in output order.
        image_size: Square input side in pixels.
        output_dim: Units of each model's output.
    """

    def __init__(self, models: Sequence):
        import tensorflow as tf

        if not models:
            raise ValueError("make_fast_predictor needs at least one model.")
        self.models = list(models)
        input_shapes = {tuple(model.input.shape[1:]) for model in self.models}
        output_dims = {int(model.output.shape[-1]) for model in self.models}
        if len(input_shapes) != 1:
            raise ValueError(f"All models must take the same input shape, not {sorted(input_shapes)}.")
        if len(output_dims) != 1:
            raise ValueError(f"All models must have the same output size, not {sorted(output_dims)}.")
        input_shape = input_shapes.pop()
        self.image_size = int(input_shape[0])
        self.output_dim = output_dims.pop()
        # A fixed signature with a free batch size traces once; no jit_compile because
        # XLA made these models 3-5x slower on the project's CPUs.
        spec = tf.TensorSpec((None, *input_shape), tf.float32)
        self._predict = tf.function(self._stacked, input_signature=[spec], reduce_retracing=True)

    def _stacked(self, images):
        """Returns (n_models, N, output_dim) outputs of every model in inference mode."""
        import tensorflow as tf

        return tf.stack([model(images, training=False) for model in self.models], axis=0)

    def __call__(self, image_batch) -> np.ndarray:
        """Predicts a batch.

        Args:
            image_batch: float32 (N, S, S, 1) in [0, 1]; (N, S, S) is accepted too.

        Returns:
            float32 probabilities (n_models, N, output_dim).
        """
        import tensorflow as tf

        images = np.asarray(image_batch, dtype=np.float32)
        if images.ndim == 3:
            images = images[..., np.newaxis]
        return self._predict(tf.constant(images)).numpy()

    def warm_up(self) -> None:
        """Traces the function once with a one-image batch so the first real call is fast."""
        self(np.zeros((1, self.image_size, self.image_size, 1), dtype=np.float32))


def make_fast_predictor(models: Sequence, warm_up: bool = True) -> FastPredictor:
    """Builds a callable that predicts with all models at once.

    Args:
        models: Models taking the same (S, S, 1) input and giving the same output size.
        warm_up: Trace immediately (about a second per model) instead of on the first call.

    Returns:
        `predictor(batch float32 (N, S, S, 1)) -> np.ndarray (n_models, N, output_dim)`.
    """
    predictor = FastPredictor(models)
    if warm_up:
        predictor.warm_up()
    return predictor


class FrozenForward:
    """One traced call for frozen-backbone runs: the shared backbone once, then every fold's head.

    The fold models of a frozen run share their backbone (it never trained), so running it
    once per image instead of once per fold divides the work by the number of folds.

    Args:
        models: The fold models (full flat models with a "features" layer).
        model_config: The run's ModelConfig (to build the heads).
        num_classes: Number of classes.
    """

    def __init__(self, models: Sequence, model_config, num_classes: int):
        import keras
        import tensorflow as tf

        from zoidberg.models.build import build_head
        from zoidberg.models.layers import FEATURES_NAME

        first = models[0]
        self.extractor = keras.Model(first.input, first.get_layer(FEATURES_NAME).output)
        dimension = int(self.extractor.output.shape[-1])
        self.heads = []
        for model in models:
            head = build_head(model_config, dimension, num_classes)
            for layer in head.layers:
                if layer.weights:
                    layer.set_weights(model.get_layer(layer.name).get_weights())
            self.heads.append(head)
        size = tuple(first.input.shape[1:])
        self.image_size = int(size[0])
        spec = tf.TensorSpec((None, *size), tf.float32)
        self._forward = tf.function(self._stacked, input_signature=[spec], reduce_retracing=True)
        self._heads_only = tf.function(self._stacked_heads, input_signature=[tf.TensorSpec((None, dimension), tf.float32)])

    def _stacked(self, images):
        import tensorflow as tf

        features = self.extractor(images, training=False)
        return tf.stack([head(features, training=False) for head in self.heads], axis=0)

    def _stacked_heads(self, features):
        import tensorflow as tf

        return tf.stack([head(features, training=False) for head in self.heads], axis=0)

    def __call__(self, image_batch) -> np.ndarray:
        """(N, S, S, 1) float32 images -> (folds, N, output_dim)."""
        import tensorflow as tf

        images = np.asarray(image_batch, dtype=np.float32)
        if images.ndim == 3:
            images = images[..., np.newaxis]
        return self._forward(tf.constant(images)).numpy()

    def heads_on(self, features: np.ndarray) -> np.ndarray:
        """(N, D) backbone features -> (folds, N, output_dim)."""
        import tensorflow as tf

        return self._heads_only(tf.constant(np.asarray(features, dtype=np.float32))).numpy()

    def warm_up(self) -> None:
        """Traces the call once so that the first real one is fast."""
        self(np.zeros((1, self.image_size, self.image_size, 1), dtype=np.float32))


def gate_fields(verdict) -> dict:
    """A prediction row's gate fields; None where the run has no gate (its predictions are unchecked)."""
    if verdict is None:
        return {"in_distribution": None, "ood_score": None, "ood_reason": None}
    return verdict.to_dict()


class Decides:
    """Decisions and file prediction for anything with probabilities(), a threshold, a scale and an image size."""

    def decide(self, prediction: Prediction, threshold: float | None = None, scale: str | None = None) -> Decision:
        """Applies `threshold` on `scale` (default: the run's operating point) to a prediction."""
        return decide(prediction, self.threshold if threshold is None else threshold, scale or self.scale)

    def predict_gray(self, gray: np.ndarray, threshold: float | None = None, *, tta: bool | None = None, headers=None) -> dict:
        """Predicts one decoded image at a threshold (default: the run's operating point).

        Returns:
            Decision.to_dict(): label, probability (of pneumonia for binary runs, of the
            predicted class otherwise), spread (std across folds or members), per_fold,
            class_probabilities, threshold, the scale and both raw and calibrated probabilities;
            then the gate's in_distribution, ood_score and ood_reason.
        """
        return {**self.decide(self.probabilities(gray, tta=tta), threshold).to_dict(), **gate_fields(self.gate_verdicts([gray], headers=[headers])[0])}

    def gate_input(self, gray: np.ndarray) -> np.ndarray:
        """The image the gate scores: the one the models (or the first member) see."""
        return self.model_input(gray)

    @cached_property
    def _gate_state(self) -> tuple:
        """(the gate or None, why there is none), read once per loaded ensemble."""
        from zoidberg.evaluation.gate import GateUnavailable, load_run_gate

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
        features = np.concatenate([np.asarray(member._predict.extractor(images[start : start + SCORING_BATCH_SIZE], training=False))
                                   for start in range(0, len(images), SCORING_BATCH_SIZE)])
        for index, verdict in zip(passing, feature_gate.verdicts(features, films)):
            if verdict is not None:
                verdicts[index] = verdict
        return verdicts

    @cached_property
    def _feature_stage(self) -> tuple:
        """(the feature stage, the frozen member whose backbone it reads), or (None, None)."""
        from zoidberg.evaluation.gate import load_run_feature_gate

        candidates = list(getattr(self, "members", None) or [getattr(self, "parent", self)])
        candidates = [member for candidate in candidates for member in getattr(candidate, "members", [candidate])]
        member = next((candidate for candidate in candidates if getattr(candidate, "frozen", False)), None)
        if member is None:
            return None, None
        gate = load_run_feature_gate(member.run)
        return (gate, member) if gate is not None else (None, None)

    def predict_file(self, source, *, name: str = "", threshold: float | None = None, tta: bool | None = None) -> dict:
        """Decodes a file or bytes (PNG, JPEG, DICOM) and predicts it (see predict_gray; tta: the run's setting by default)."""
        from zoidberg.data.dicom_facts import read_dicom_facts

        gray = decode_grayscale(source, name=name or str(source) if not isinstance(source, bytes) else name, draft_size=self.image_size)
        return self.predict_gray(gray, threshold, tta=tta, headers=read_dicom_facts(source))


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
        from zoidberg.training.pipeline import tta_variants

        return np.mean([np.asarray(self._predict(np.asarray(variant))) for variant in tta_variants(batch)], axis=0)

    def probabilities(self, gray: np.ndarray, *, tta: bool | None = None) -> Prediction:
        """Runs every fold model on one decoded image.

        Args:
            gray: 2-D uint8 image of any size.
            tta: Average over the test-time variants (default: the run's setting).

        Returns:
            The threshold-free prediction, raw and (when the run has a calibration) calibrated.
        """
        from zoidberg.training.pipeline import as_class_probabilities

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
        from zoidberg.training.pipeline import as_class_probabilities

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
                from zoidberg.training.pipeline import as_class_probabilities

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
        from zoidberg.training.features import load_or_compute_features

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
        from zoidberg.explain import make_gradcam

        if class_index is None and not self.is_binary:
            class_index = self.decide(self.probabilities(gray)).class_index

        if self._gradcam is None:
            self._gradcam = [make_gradcam(model) for model in self.models]
        batch = self.prepare(gray)
        heatmaps = [explain(batch, class_index)[1][0] for explain in self._gradcam]
        heatmap = np.mean(np.stack([np.asarray(h) for h in heatmaps]), axis=0)
        peak = heatmap.max()
        return heatmap / peak if peak > 0 else heatmap


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
        from zoidberg.data.dataset import load_dataset

        rows = np.asarray(rows)
        outputs = []
        for member in self.members:
            options = from_mapping(DataConfig, {**(member.run.config.get("data") or {}), "data_dir": str(dataset.root)}).loader_options()
            same = options == {"label_mode": dataset.label_mode, "image_size": dataset.image_size, "resize": dataset.resize, "enhance": dataset.enhance}
            own, own_rows = dataset, rows
            if not same:
                own = load_dataset(dataset.root, **options, purpose="evaluation")
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
        from zoidberg.adaptation.heads import make_inputs

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
        batches = [np.asarray(member._predict.extractor(images[start : start + SCORING_BATCH_SIZE], training=False))
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
        from zoidberg.data.dataset import load_dataset

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
                own = load_dataset(dataset.root, **options, purpose="evaluation")
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


def load_fold_model(run, fold: int):
    """One fold's model.keras (safe_mode), or a ValueError that names the damaged file when it cannot be read."""
    import zipfile

    import keras

    path = run.model_path(fold)
    try:
        return keras.models.load_model(path, safe_mode=True, compile=False)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        from zoidberg.models.layers import unsafe_layers

        unsafe = unsafe_layers(path)
        if unsafe:
            raise ValueError(
                f"Run {run.id}, fold {fold}: {path} holds Lambda layer(s) {', '.join(unsafe)}, which run arbitrary Python code: "
                "Zoidberg loads models with safe_mode and never runs them. Train the run again with this version (its models have none)."
            ) from error
        # Keras says "File not found" for a cut-short .keras zip; the file is there, and damaged.
        size = path.stat().st_size if path.exists() else None
        state = "missing" if size is None else f"damaged ({size:,} bytes that do not load as a Keras model: cut short or changed)"
        raise ValueError(
            f"Run {run.id}, fold {fold}: {path} is {state}. Restore it from a copy of the run, or train the run again."
        ) from error


def load_ensemble(run_id: str, *, runs_dir=None) -> Ensemble | EnsembleOfRuns:
    """Loads a finished run's fold models from the run store with safe_mode=True.

    Only files inside the runs directory are ever loaded; the run id is validated so
    that no path can point elsewhere.

    Raises:
        ValueError: when the run has no trained fold model yet.
    """
    run = RunStore(runs_dir).get(run_id)
    if run.kind == "ensemble":
        return load_ensemble_of_runs(run, runs_dir=runs_dir)
    if run.kind == "adapt":
        return load_adapted_ensemble(run, runs_dir=runs_dir)
    folds = run.folds_with(MODEL_FILE)
    if not folds:
        raise ValueError(f"Run {run_id} has no trained fold model yet; wait for a fold to finish.")
    config = run.checked_config()
    models = [load_fold_model(run, fold) for fold in folds]
    summary = run.summary() or {}
    data = run.read_json(DATA_FILE, {}) or {}
    class_names = tuple(summary.get("class_names") or data.get("class_names") or _class_names(config))
    stored = run.read_json(CALIBRATION_FILE) or {}
    calibration = Calibration.from_dict(stored["calibration"]) if stored.get("calibration") else None
    threshold, scale, operating = _operating_point(run, summary, calibration)
    return Ensemble(
        run=run,
        models=models,
        class_names=class_names,
        image_size=int(config["data"]["image_size"]),
        threshold=threshold,
        folds=tuple(folds),
        calibration=calibration,
        scale=scale,
        operating_point=operating,
        tta=bool(config.get("tta", False)),
    )


def _class_names(config: dict) -> tuple[str, ...]:
    from zoidberg.data.dataset import CLASS_NAMES

    return CLASS_NAMES[config.get("data", {}).get("label_mode", "binary")]


def _operating_point(run: Run, summary: dict, calibration) -> tuple[float, str, dict | None]:
    """A run's threshold, its scale and operating_point.json (the summary's threshold, raw, for older runs)."""
    operating = run.read_json(OPERATING_POINT_FILE)
    if operating:
        threshold, scale = float(operating["threshold"]), operating["choice"].get("probabilities", "raw")
    else:
        # Runs from before operating points, and stopped runs: the summary's threshold, raw.
        threshold, scale = float(summary.get("threshold", DEFAULT_THRESHOLD)), "raw"
    return threshold, scale if calibration is not None else "raw", operating


def load_ensemble_of_runs(run: Run, *, runs_dir=None) -> EnsembleOfRuns:
    """Loads a completed ensemble run: its members' fold models, its combination, calibration and threshold.

    Raises:
        ValueError: The ensemble has not combined its members yet, or a member run was deleted.
    """
    from zoidberg.runs.store import ENSEMBLE_FILE, RunNotFoundError
    from zoidberg.evaluation.combination import Combiner

    stored = run.read_json(ENSEMBLE_FILE)
    if not stored or run.summary() is None:
        # summary.json is written once the members are combined, just before the test split is scored.
        raise ValueError(f"Ensemble {run.id} is {run.state}: it predicts once its members are combined.")
    members = []
    for member_id in run.member_ids():
        try:
            members.append(load_ensemble(member_id, runs_dir=runs_dir))
        except RunNotFoundError:
            raise ValueError(f"Member run {member_id} of ensemble {run.id} was deleted: the ensemble cannot predict without it.") from None
    calibration_payload = (run.read_json(CALIBRATION_FILE) or {}).get("calibration")
    calibration = Calibration.from_dict(calibration_payload) if calibration_payload else None
    threshold, scale, operating = _operating_point(run, run.summary() or {}, calibration)
    return EnsembleOfRuns(run, members, Combiner.from_dict(stored), calibration, threshold, scale, operating)


def load_adapted_ensemble(run: Run, *, runs_dir=None) -> AdaptedEnsemble:
    """Loads a completed adapted run: its parent's models, its site heads, calibration and threshold.

    Raises:
        ValueError: The adaptation has not finished, or its parent run was deleted.
    """
    from zoidberg.adaptation.heads import SiteHead
    from zoidberg.runs.store import ADAPTATION_FILE, RunNotFoundError

    stored = run.read_json(ADAPTATION_FILE)
    if not stored or run.summary() is None:
        raise ValueError(f"Adapted run {run.id} is {run.state}: it predicts once its site heads are fitted.")
    try:
        parent = load_ensemble(stored["parent"], runs_dir=runs_dir)
    except RunNotFoundError:
        raise ValueError(f"The parent run {stored['parent']} of adapted run {run.id} was deleted: it cannot predict without it.") from None
    feature_member = None
    if stored.get("feature_member"):
        feature_member = next((member for member in getattr(parent, "members", [parent]) if member.run.id == stored["feature_member"]), None)
        if feature_member is None:
            raise ValueError(f"Adapted run {run.id} reads the features of run {stored['feature_member']}, which its parent no longer holds.")
    calibration_payload = (run.read_json(CALIBRATION_FILE) or {}).get("calibration")
    calibration = Calibration.from_dict(calibration_payload) if calibration_payload else None
    threshold, scale, operating = _operating_point(run, run.summary() or {}, calibration)
    heads = [SiteHead.from_dict(head) for head in stored["heads"]]
    return AdaptedEnsemble(run, parent, heads, feature_member, calibration, threshold, scale, operating)


# Decoded images held at once by predict_files: bounds memory on folders of thousands of files.
PREDICT_CHUNK = 256


def predict_files(
    ensemble, paths: Sequence, *, threshold: float | None = None, tta: bool | None = None, label_mode: str | None = None, progress=None
) -> list[dict]:
    """Predicts many image files in batches; a file that cannot be read costs only its own row.

    Args:
        ensemble: A loaded Ensemble or EnsembleOfRuns.
        paths: Image files (see zoidberg.data.files.collect_images for folders).
        threshold: The decision threshold (default: the run's operating point).
        tta: Test-time augmentation (default: the run's setting).
        label_mode: When given, the true class is read from NORMAL/PNEUMONIA folders.
        progress: Called as progress(done, total) after every chunk of images.

    Returns:
        One row per file: file, the Decision's fields (label is the predicted class), the gate's
        in_distribution, ood_score and ood_reason,
        true_label and correct where the folder names the class, or error.
    """
    from concurrent.futures import ThreadPoolExecutor

    from zoidberg.data.files import label_from_path
    from zoidberg.data.imaging import ImageDecodeError

    from zoidberg.data.dicom_facts import read_dicom_facts

    def decode(path):
        try:
            return decode_grayscale(path, name=str(path), draft_size=ensemble.image_size), None
        except ImageDecodeError as error:
            return None, str(error)
        except OSError as error:
            return None, f"cannot read: {error.strerror or error}"

    rows: list[dict] = []
    with ThreadPoolExecutor(max_workers=4) as pool:
        for start in range(0, len(paths), PREDICT_CHUNK):
            chunk = list(paths[start : start + PREDICT_CHUNK])
            decoded = list(pool.map(decode, chunk))
            good = [index for index, (gray, _) in enumerate(decoded) if gray is not None]
            # Resized once for the models and the gate (a resize to the same size is free).
            grays = [ensemble.resized(decoded[index][0]) for index in good]
            predictions = dict(zip(good, ensemble.predictions_of(grays, tta=tta)))
            headers = [read_dicom_facts(chunk[index]) for index in good]
            verdicts = dict(zip(good, ensemble.gate_verdicts(grays, headers=headers)))
            for index, path in enumerate(chunk):
                row: dict = {"file": str(path)}
                true_label = label_from_path(path, label_mode) if label_mode else None
                if true_label is not None:
                    row["true_label"] = true_label
                if index in predictions:
                    decision = ensemble.decide(predictions[index], threshold)
                    row.update(decision.to_dict())
                    row.update(gate_fields(verdicts[index]))
                    if true_label is not None:
                        row["correct"] = decision.label == true_label
                else:
                    row["error"] = decoded[index][1]
                rows.append(row)
            if progress:
                progress(min(start + PREDICT_CHUNK, len(paths)), len(paths))
    return rows
