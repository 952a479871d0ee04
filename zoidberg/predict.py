"""Prediction with a finished run's fold ensemble: safe loading, one traced forward pass, decisions, Grad-CAM."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from zoidberg.data.imaging import decode_grayscale, resize_square
from zoidberg.runs.store import DATA_FILE, MODEL_FILE, Run, RunStore

# The threshold of a binary run that has no out-of-fold threshold yet (a stopped run).
DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class Prediction:
    """What the fold models say about one image, before any threshold.

    Attributes:
        class_names: Class names in output order.
        per_fold: Class probabilities of every fold model, (folds, classes).
    """

    class_names: tuple[str, ...]
    per_fold: np.ndarray

    @property
    def mean(self) -> np.ndarray:
        """The ensemble's class probabilities: the mean over fold models."""
        return self.per_fold.mean(axis=0)

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
    """

    label: str
    class_index: int
    probability: float
    spread: float
    per_fold: tuple[float, ...]
    class_probabilities: dict[str, float]
    threshold: float | None

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
        }


def decide(prediction: Prediction, threshold: float | None = None) -> Decision:
    """Applies a threshold to a threshold-free prediction.

    Binary runs call pneumonia when P(pneumonia) >= threshold; three-class runs take the
    most probable class and ignore the threshold.

    Args:
        prediction: The fold models' probabilities.
        threshold: Decision threshold for binary runs (DEFAULT_THRESHOLD when None).

    Returns:
        The decision.
    """
    mean = prediction.mean
    class_probabilities = {str(name): float(value) for name, value in zip(prediction.class_names, mean)}
    if prediction.is_binary:
        cutoff = DEFAULT_THRESHOLD if threshold is None else float(threshold)
        index = int(mean[1] >= cutoff)
        column = 1
    else:
        cutoff = None
        index = column = int(np.argmax(mean))
    values = prediction.per_fold[:, column]
    return Decision(
        label=prediction.class_names[index],
        class_index=index,
        probability=float(mean[column]),
        spread=float(values.std()),
        per_fold=tuple(float(value) for value in values),
        class_probabilities=class_probabilities,
        threshold=cutoff,
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


@dataclass
class Ensemble:
    """The fold models of one run and what is needed to apply them.

    Attributes:
        run: The run.
        models: Fold models, loaded with safe_mode=True from the run folder.
        class_names: Class names in output order.
        image_size: Input side in pixels.
        threshold: The run's decision threshold (binary runs).
    """

    run: Run
    models: list
    class_names: tuple[str, ...]
    image_size: int
    threshold: float

    def __post_init__(self):
        self._predict = make_fast_predictor(self.models)
        self._gradcam = None

    @property
    def is_binary(self) -> bool:
        """Whether the run is normal vs pneumonia."""
        return len(self.class_names) == 2

    def prepare(self, gray: np.ndarray) -> np.ndarray:
        """Resizes a decoded grayscale image into a (1, S, S, 1) float batch in [0, 1]."""
        resized = resize_square(gray, self.image_size)
        return (resized.astype(np.float32) / 255.0)[None, :, :, None]

    def probabilities(self, gray: np.ndarray) -> Prediction:
        """Runs every fold model on one decoded image.

        Args:
            gray: 2-D uint8 image of any size.

        Returns:
            The threshold-free prediction.
        """
        from zoidberg.training.pipeline import as_class_probabilities

        outputs = np.asarray(self._predict(self.prepare(gray)))  # (folds, 1, out)
        per_fold = np.stack([as_class_probabilities(fold_output)[0] for fold_output in outputs])
        return Prediction(self.class_names, per_fold)

    def decide(self, prediction: Prediction, threshold: float | None = None) -> Decision:
        """Applies `threshold` (default: the run's) to a prediction of this ensemble."""
        return decide(prediction, self.threshold if threshold is None else threshold)

    def predict_gray(self, gray: np.ndarray, threshold: float | None = None) -> dict:
        """Predicts one decoded image at a threshold (default: the run's).

        Returns:
            Decision.to_dict(): label, probability (of pneumonia for binary runs, of the
            predicted class otherwise), spread (std across folds), per_fold,
            class_probabilities and threshold.
        """
        return self.decide(self.probabilities(gray), threshold).to_dict()

    def predict_file(self, source, *, name: str = "", threshold: float | None = None) -> dict:
        """Decodes a file or bytes (PNG, JPEG, DICOM) and predicts it (see predict_gray)."""
        gray = decode_grayscale(source, name=name or str(source) if not isinstance(source, bytes) else name, draft_size=self.image_size)
        return self.predict_gray(gray, threshold)

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


def load_ensemble(run_id: str, *, runs_dir=None) -> Ensemble:
    """Loads a finished run's fold models from the run store with safe_mode=True.

    Only files inside the runs directory are ever loaded; the run id is validated so
    that no path can point elsewhere.

    Raises:
        ValueError: when the run has no trained fold model yet.
    """
    import keras

    run = RunStore(runs_dir).get(run_id)
    folds = run.folds_with(MODEL_FILE)
    if not folds:
        raise ValueError(f"Run {run_id} has no trained fold model yet; wait for a fold to finish.")
    models = [keras.models.load_model(run.model_path(fold), safe_mode=True, compile=False) for fold in folds]
    config = run.config
    summary = run.summary() or {}
    data = run.read_json(DATA_FILE, {}) or {}
    class_names = tuple(summary.get("class_names") or data.get("class_names") or _class_names(config))
    return Ensemble(
        run=run,
        models=models,
        class_names=class_names,
        image_size=int(config["data"]["image_size"]),
        threshold=float(summary.get("threshold", DEFAULT_THRESHOLD)),
    )


def _class_names(config: dict) -> tuple[str, ...]:
    from zoidberg.data.dataset import CLASS_NAMES

    return CLASS_NAMES[config.get("data", {}).get("label_mode", "binary")]
