"""Prediction with a finished run's fold ensemble: safe loading, fast inference, Grad-CAM."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zoidberg.imaging import decode_grayscale, resize_square
from zoidberg.runstore import Run, RunStore


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
        from zoidberg.predict_core import make_fast_predictor

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

    def predict_gray(self, gray: np.ndarray, threshold: float | None = None) -> dict:
        """Predicts one decoded image.

        Args:
            gray: 2-D uint8 image of any size.
            threshold: Decision threshold for binary runs (default: the run's).

        Returns:
            dict with label, probability (of pneumonia for binary runs, of the predicted
            class otherwise), spread (std across folds), per_fold and class_probabilities.
        """
        from zoidberg.training import as_class_probabilities

        outputs = np.asarray(self._predict(self.prepare(gray)))  # (folds, 1, out)
        per_fold = np.stack([as_class_probabilities(fold_output)[0] for fold_output in outputs])
        mean = per_fold.mean(axis=0)
        return self._decide(mean, per_fold, self.threshold if threshold is None else threshold)

    def _decide(self, mean: np.ndarray, per_fold: np.ndarray, threshold: float) -> dict:
        class_probabilities = {name: float(value) for name, value in zip(self.class_names, mean)}
        if self.is_binary:
            probability = float(mean[1])
            index = int(probability >= threshold)
            spread = float(per_fold[:, 1].std())
            fold_values = per_fold[:, 1].tolist()
        else:
            index = int(np.argmax(mean))
            probability = float(mean[index])
            spread = float(per_fold[:, index].std())
            fold_values = per_fold[:, index].tolist()
        return {
            "label": self.class_names[index],
            "class_index": index,
            "probability": probability,
            "spread": spread,
            "per_fold": [float(value) for value in fold_values],
            "class_probabilities": class_probabilities,
            "threshold": float(threshold) if self.is_binary else None,
        }

    def predict_file(self, source, *, name: str = "", threshold: float | None = None) -> dict:
        """Decodes a file or bytes (PNG, JPEG, DICOM) and predicts it."""
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
            class_index = self.predict_gray(gray)["class_index"]

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
    model_paths = sorted(run.path.glob("fold_*/model.keras"), key=lambda path: int(path.parent.name[5:]))
    root = run.path.resolve()
    model_paths = [path for path in model_paths if root in path.resolve().parents]
    if not model_paths:
        raise ValueError(f"Run {run_id} has no trained fold model yet; wait for a fold to finish.")
    models = [keras.models.load_model(path, safe_mode=True, compile=False) for path in model_paths]
    config = run.config
    summary = run.summary() or {}
    data = run.read_json("data.json", {}) or {}
    class_names = tuple(summary.get("class_names") or data.get("class_names") or _class_names(config))
    return Ensemble(
        run=run,
        models=models,
        class_names=class_names,
        image_size=int(config["data"]["image_size"]),
        threshold=float(summary.get("threshold", 0.5)),
    )


def _class_names(config: dict) -> tuple[str, ...]:
    from zoidberg.data import CLASS_NAMES

    return CLASS_NAMES[config.get("data", {}).get("label_mode", "binary")]
