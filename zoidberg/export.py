"""A run's fold ensemble exported as one model (Keras, SavedModel, TFLite, ONNX) with a model card beside it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import keras
import numpy as np

from zoidberg.config import EXPORT_FORMATS
from zoidberg.reporting.content import INTENDED_USE
from zoidberg.runs.store import Run, now_iso, write_json_atomic

MODEL_CARD_FILE = "model_card.json"
ARTIFACT_NAMES = {"keras": "model.keras", "savedmodel": "saved_model", "tflite": "model.tflite", "onnx": "model.onnx"}
# Keras' own exporter's name of each format.
KERAS_FORMATS = {"savedmodel": "tf_saved_model", "tflite": "litert", "onnx": "onnx"}
OUTPUTS = ("probability", "probability_calibrated")
# The largest difference an export may show from the run's own probabilities.
PARITY_TOLERANCE = 1e-4
# The probability clipping of zoidberg.evaluation.calibration, so that exported calibration matches it.
CALIBRATION_EPSILON = 1e-6


@keras.saving.register_keras_serializable(package="zoidberg")
class LogitRecalibration(keras.layers.Layer):
    """Recalibrates probabilities on their logits: sigmoid(slope·logit + intercept), or softmax(slope·log p).

    The exported twin of zoidberg.evaluation.calibration.Calibration: temperature scaling is
    slope = 1/T and intercept 0, Platt's fit its slope and intercept.
    """

    def __init__(self, slope: float = 1.0, intercept: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.slope = float(slope)
        self.intercept = float(intercept)

    def call(self, probabilities):
        ops = keras.ops
        clipped = ops.clip(probabilities, CALIBRATION_EPSILON, 1.0 - CALIBRATION_EPSILON)
        if probabilities.shape[-1] == 1:
            logits = ops.log(clipped) - ops.log(1.0 - clipped)
            return ops.sigmoid(self.slope * logits + self.intercept)
        return ops.softmax(self.slope * ops.log(clipped), axis=-1)

    def get_config(self):
        return {**super().get_config(), "slope": self.slope, "intercept": self.intercept}


def _recalibration(calibration, binary: bool) -> LogitRecalibration | None:
    if calibration is None:
        return None
    if calibration.method == "platt" and calibration.platt_slope is not None and binary:
        return LogitRecalibration(calibration.platt_slope, calibration.platt_intercept, name="calibration")
    return LogitRecalibration(1.0 / calibration.temperature, 0.0, name="calibration")


def build_export_model(ensemble) -> keras.Model:
    """One Keras model of a run's fold ensemble: uint8 (N, S, S, 1) in, the fold mean (and its calibration) out.

    Inside: the scaling to [0, 1], every fold model, the mean over folds and, when the run
    has one, the calibration of each fold's output before the mean (as the run computes it).

    Args:
        ensemble: A loaded zoidberg.predict.Ensemble (one run's folds).

    Returns:
        A model with outputs "probability" and, when calibrated, "probability_calibrated":
        P(pneumonia) (N, 1) for binary runs, the class probabilities (N, C) otherwise.

    Raises:
        ValueError: For an ensemble of runs (export its members one by one).
    """
    if getattr(ensemble.run, "kind", None) == "adapt":
        raise ValueError(
            f"Run {ensemble.run.id} is adapted to a site: its site heads read its parent's outputs and frozen features, "
            f"which no exported format holds yet. Export the parent run {ensemble.run.config.get('parent')}, and apply the "
            "heads, calibration and threshold of adaptation.json and operating_point.json to its outputs; predict and evaluate "
            "use the adapted run as it is."
        )
    if not hasattr(ensemble, "models"):
        raise ValueError(
            "Export writes one run's fold ensemble; an ensemble of runs combines several runs at their own sizes and "
            "preprocessing. Export each member run, and combine their outputs as its ensemble.json says."
        )
    size = ensemble.image_size
    image = keras.Input((size, size, 1), dtype="uint8", name="image")
    scaled = keras.layers.Rescaling(1.0 / 255.0, name="scale")(image)
    folds = [keras.Model(model.input, model.output, name=f"fold_{fold}")(scaled) for fold, model in zip(ensemble.folds, ensemble.models)]
    binary = ensemble.is_binary
    mean = folds[0] if len(folds) == 1 else keras.layers.Average(name="fold_mean")(folds)
    outputs = {"probability": keras.layers.Identity(name="probability")(mean)}
    recalibration = _recalibration(ensemble.calibration, binary)
    if recalibration is not None:
        calibrated = [recalibration(fold) for fold in folds]
        calibrated_mean = calibrated[0] if len(calibrated) == 1 else keras.layers.Average(name="calibrated_mean")(calibrated)
        outputs["probability_calibrated"] = keras.layers.Identity(name="probability_calibrated")(calibrated_mean)
    return keras.Model(image, outputs, name="zoidberg_ensemble")


def model_card(run: Run, ensemble, fmt: str, artifact: str) -> dict:
    """What the exported file is, how to feed it, when to trust it: the card written beside it."""
    from zoidberg.evaluation.external import current_evaluations

    config = run.config
    data = config.get("data") or {}
    summary = run.summary() or {}
    point = ensemble.operating_point or {}
    evaluations = [
        {"name": item["name"], "n_images": item["n_images"], "metrics": {key: item["metrics"].get(key) for key in ("roc_auc", "accuracy", "sensitivity", "specificity")},
         "auc_ci": item.get("auc_ci"), "data_dir": item.get("data_dir")}
        for item in current_evaluations(run)
    ]
    return {
        "created": now_iso(),
        "run_id": run.id,
        "run_name": run.name,
        "format": fmt,
        "artifact": artifact,
        "class_names": list(ensemble.class_names),
        "input": {
            "shape": [None, ensemble.image_size, ensemble.image_size, 1], "dtype": "uint8", "range": [0, 255],
            "preprocessing": (
                f"Decode to grayscale; resize to {ensemble.image_size}×{ensemble.image_size} "
                f"({data.get('resize', 'stretch')}: {'keep the aspect ratio and pad with black' if data.get('resize') == 'pad' else 'ignore the aspect ratio'}); "
                f"contrast: {data.get('enhance', 'none')}. zoidberg.data.imaging.prepare_image does exactly this."
            ),
            "resize": data.get("resize", "stretch"), "enhance": data.get("enhance", "none"),
        },
        "outputs": {
            "probability": "P(pneumonia), (N, 1), the mean over folds" if ensemble.is_binary else "class probabilities (N, C), the mean over folds",
            **({"probability_calibrated": "the same after the run's calibration, fitted on out-of-fold predictions"} if ensemble.calibration else {}),
        },
        "folds": list(ensemble.folds),
        "operating_point": {
            "threshold": ensemble.threshold if ensemble.is_binary else None,
            "probabilities": ensemble.scale,
            "choice": point.get("choice"),
            "prevalence": point.get("prevalence"),
            "decision": "pneumonia when the output named by `probabilities` is ≥ threshold" if ensemble.is_binary else "the most probable class",
        },
        "calibration": ensemble.calibration.to_dict() if ensemble.calibration else None,
        "architecture": (config.get("model") or {}).get("architecture"),
        "preset": config.get("preset"),
        "cross_validation": {
            "n_splits": config.get("n_splits"),
            "grouped_by": "patient",
            "mean_std": {key: value for key, value in (summary.get("mean_std") or {}).items() if key in ("roc_auc", "accuracy", "sensitivity", "specificity")},
        },
        "evaluations": evaluations,
        "training_data": {"data_dir": data.get("data_dir"), "fingerprint": config.get("data_fingerprint")},
        "versions": config.get("versions"),
        "intended_use": INTENDED_USE,
        "not_a_medical_device": True,
    }


def export_run(run: Run, ensemble, fmt: str, out_dir: str | Path, *, check: bool = False) -> Path:
    """Writes one format of a run's fold ensemble and its model card into a folder.

    The export is written into a staging folder beside out_dir and renamed into place only
    once it is whole (and, with check, matches the run), so a full disk or a failed check
    leaves the previous export, or none, never a truncated one.

    Args:
        run: The run.
        ensemble: Its loaded fold ensemble.
        fmt: One of EXPORT_FORMATS.
        out_dir: The folder (created; a previous export in it is replaced).
        check: Reload the staged export with its own runtime and compare it with the run
            (parity_check) before it replaces anything; the card records the difference.

    Returns:
        The artifact's path.

    Raises:
        ValueError: An unknown format, an ensemble of runs, or a failed check.
    """
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"format must be one of {', '.join(EXPORT_FORMATS)}, not {fmt!r}.")
    out = Path(out_dir).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    model = build_export_model(ensemble)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    try:
        artifact = staging / ARTIFACT_NAMES[fmt]
        # Keras' ONNX exporter needs a model that has been called once.
        model(np.zeros((1, ensemble.image_size, ensemble.image_size, 1), dtype=np.uint8))
        if fmt == "keras":
            model.save(artifact)
        else:
            with warnings.catch_warnings():
                # tf2onnx probes np.object, which NumPy 2 warns about; the export is unaffected.
                warnings.filterwarnings("ignore", category=FutureWarning, message=".*np.object.*")
                model.export(str(artifact), format=KERAS_FORMATS[fmt], verbose=False)
        card = model_card(run, ensemble, fmt, artifact.name)
        card["artifact_sha256"] = artifact_digest(artifact)
        if check:
            card["parity_max_difference"] = parity_check(ensemble, artifact, fmt)
        write_json_atomic(staging / MODEL_CARD_FILE, card)
        _swap_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out / ARTIFACT_NAMES[fmt]


def _swap_into_place(staging: Path, out: Path) -> None:
    """Renames a whole staged export to out, the previous one (if any) moved aside first and then removed."""
    previous = None
    if out.exists():
        previous = out.with_name(f".{out.name}.previous-{os.getpid()}")
        shutil.rmtree(previous, ignore_errors=True)
        os.replace(out, previous)
    try:
        os.replace(staging, out)
    except BaseException:
        if previous is not None:
            os.replace(previous, out)
        raise
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)


def artifact_digest(path: Path) -> str:
    """The SHA-256 of an artifact: of its bytes, or for a folder (SavedModel) of every file's path and bytes in order."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(item for item in path.rglob("*") if item.is_file())
    for file in files:
        if file != path:
            digest.update(file.relative_to(path).as_posix().encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def export_problem(out_dir: str | Path, fmt: str) -> str | None:
    """Why the export in a folder cannot be reused (missing, damaged, changed since written), or None when it is whole.

    Args:
        out_dir: The format's folder (runs/<id>/exports/<format>).
        fmt: One of EXPORT_FORMATS.
    """
    out = Path(out_dir)
    artifact = out / ARTIFACT_NAMES[fmt]
    if not artifact.exists():
        return f"{artifact} is missing"
    try:
        card = json.loads((out / MODEL_CARD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return f"its model card {out / MODEL_CARD_FILE} is missing or damaged"
    expected = card.get("artifact_sha256") if isinstance(card, dict) else None
    if not expected:
        return f"its model card {out / MODEL_CARD_FILE} records no checksum (an export made before checksums)"
    if artifact_digest(artifact) != expected:
        return f"{artifact} differs from the checksum its model card recorded (damaged or cut short)"
    return None


def load_exported(path: str | Path, fmt: str):
    """Loads an exported artifact with its own runtime and returns predict(uint8 images) -> {output: array}.

    Used by the parity checks: Keras (safe_mode=True), tf.saved_model.load, the TFLite
    interpreter and onnxruntime.
    """
    path = str(path)
    if fmt == "keras":
        model = keras.models.load_model(path, safe_mode=True, compile=False)
        return lambda images: {key: np.asarray(value) for key, value in model(images, training=False).items()}
    if fmt == "savedmodel":
        import tensorflow as tf

        loaded = tf.saved_model.load(path)
        return lambda images: {key: value.numpy() for key, value in loaded.serve(tf.constant(images)).items()}
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        names = [output.name for output in session.get_outputs()]
        input_name = session.get_inputs()[0].name
        return lambda images: dict(zip(_output_keys(names), session.run(None, {input_name: images})))
    if fmt == "tflite":
        import tensorflow as tf

        interpreter = tf.lite.Interpreter(model_path=path)

        def predict(images):
            # The signature runner names its outputs as the model did; a fresh one per batch size.
            runner = interpreter.get_signature_runner()
            name = next(iter(runner.get_input_details()))
            return {key: np.asarray(value) for key, value in runner(**{name: images}).items()}

        return predict
    raise ValueError(f"format must be one of {', '.join(EXPORT_FORMATS)}, not {fmt!r}.")


def _output_keys(names: list[str]) -> list[str]:
    """Maps a runtime's output names (which may be decorated) back to OUTPUTS."""
    keys = []
    for name in names:
        keys.append("probability_calibrated" if "calibrated" in name else "probability")
    return keys


def dumps_card(card: dict) -> str:
    """The model card as indented JSON."""
    return json.dumps(card, indent=2, default=str)


def parity_images(ensemble, count: int = 6, seed: int = 0) -> np.ndarray:
    """A few uint8 images at the run's size for parity checks: smooth random fields, reproducible."""
    generator = np.random.default_rng(seed)
    size = ensemble.image_size
    coarse = generator.integers(0, 256, size=(count, 8, 8), dtype=np.uint8)
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR)) for image in coarse])[..., None]


def parity_check(ensemble, path: str | Path, fmt: str, images: np.ndarray | None = None) -> float:
    """The largest difference between an export (reloaded with its own runtime) and the run, over every output.

    Raises:
        ValueError: An output differs by more than PARITY_TOLERANCE.
    """
    images = parity_images(ensemble) if images is None else images
    exported = load_exported(path, fmt)(images)
    predictions = ensemble.predictions_of([image[..., 0] for image in images])
    column = 1 if ensemble.is_binary else slice(None)
    expected = {"probability": np.array([prediction.on("raw")[column] for prediction in predictions])}
    if ensemble.calibration is not None:
        expected["probability_calibrated"] = np.array([prediction.on("calibrated")[column] for prediction in predictions])
    worst = 0.0
    for name, values in expected.items():
        got = np.asarray(exported[name])
        got = got[:, 0] if ensemble.is_binary else got
        worst = max(worst, float(np.abs(got - values).max()))
    if worst > PARITY_TOLERANCE:
        raise ValueError(f"The {fmt} export differs from the run by {worst:.2e} (more than {PARITY_TOLERANCE:g}): it was not kept as correct.")
    return worst
