"""A run's fold ensemble exported as one model (Keras, SavedModel, TFLite, ONNX) with a model card beside it."""

from __future__ import annotations

import errno
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
# LogitRecalibration and LogOdds are imported so that loading an export registers them.
from zoidberg.inference.decisions import INTENDED_USE
from zoidberg.models.whole_run_graph import LogitRecalibration, LogOdds, build_serving_model, fold_ensembles, preparation_of, serving_inputs  # noqa: F401
from zoidberg.runs.store import ADAPTATION_FILE, Run, now_iso, write_json_atomic

MODEL_CARD_FILE = "model_card.json"
ARTIFACT_NAMES = {"keras": "model.keras", "savedmodel": "saved_model", "tflite": "model.tflite", "onnx": "model.onnx"}
# Keras' own exporter's name of each format.
KERAS_FORMATS = {"savedmodel": "tf_saved_model", "tflite": "litert", "onnx": "onnx"}
OUTPUTS = ("probability", "probability_calibrated")
# The largest difference an export may show from the run's own probabilities.
PARITY_TOLERANCE = 1e-4


def build_export_model(ensemble) -> keras.Model:
    """One Keras model of a whole run (see zoidberg.models.whole_run_graph.build_serving_model).

    Args:
        ensemble: A loaded run: a fold ensemble, an ensemble of runs or an adapted run.

    Returns:
        The model: uint8 images in (one input per preparation), "probability" and, when
        calibrated, "probability_calibrated" out.
    """
    return build_serving_model(ensemble)


def _input_card(name: str, preparation: dict, readers: list[str]) -> dict:
    """One input of the card: its shape and how to prepare an image for it."""
    size, resize, enhance = preparation["image_size"], preparation["resize"], preparation["enhance"]
    fit = "keep the aspect ratio and pad with black" if resize == "pad" else "ignore the aspect ratio"
    return {
        "name": name, "shape": [None, size, size, 1], "dtype": "uint8", "range": [0, 255],
        "preprocessing": f"Decode to grayscale; resize to {size}×{size} ({resize}: {fit}); contrast: {enhance}. "
                         "zoidberg.data.imaging.prepare_image does exactly this.",
        "resize": resize, "enhance": enhance, "read_by": readers,
    }


def _inputs_card(ensemble) -> list[dict]:
    inputs = serving_inputs(ensemble)
    parts = fold_ensembles(ensemble)
    readers = {name: [part.run.id for part in parts if preparation_of(part) == preparation] for name, preparation in inputs.items()}
    return [_input_card(name, preparation, readers[name]) for name, preparation in inputs.items()]


def _scoring_card(ensemble) -> tuple[dict, str]:
    """(what scores inside the model, how "probability" is made) for the card."""
    parts = [{"run_id": part.run.id, "folds": list(part.folds), "architecture": (part.run.config.get("model") or {}).get("architecture")}
             for part in fold_ensembles(ensemble)]
    if hasattr(ensemble, "heads"):
        stored = ensemble.run.read_json(ADAPTATION_FILE) or {}
        scoring = {
            "parent": stored.get("parent"), "members": parts, "method": stored.get("method"), "site_heads": len(ensemble.heads),
            "feature_member": stored.get("feature_member"), "site_dir": stored.get("site_dir"), "site_fingerprint": stored.get("site_fingerprint"),
        }
        return scoring, "P(pneumonia), (N, 1): the mean of the site heads, logistic regressions on the parent's log-odds (and frozen features)"
    if hasattr(ensemble, "members"):
        scoring = {"members": parts, "combination": ensemble.combiner.to_dict()}
        return scoring, f"P(pneumonia) or class probabilities: the members' fold means, combined ({ensemble.combiner.method})"
    return {"folds": list(ensemble.folds)}, (
        "P(pneumonia), (N, 1), the mean over folds" if ensemble.is_binary else "class probabilities (N, C), the mean over folds")


def _training_data(ensemble) -> dict:
    """The training folder and fingerprint of the run's first fold ensemble (an ensemble's members share one)."""
    config = fold_ensembles(ensemble)[0].run.config
    return {"data_dir": (config.get("data") or {}).get("data_dir"), "fingerprint": config.get("data_fingerprint")}


def model_card(run: Run, ensemble, fmt: str, artifact: str) -> dict:
    """What the exported file is, how to feed it, when to trust it: the card written beside it."""
    from zoidberg.evaluation.stored import current_evaluations
    from zoidberg.inference.model_facts import model_facts

    config = run.config
    summary = run.summary() or {}
    point = ensemble.operating_point or {}
    evaluations = [
        {"name": item["name"], "n_images": item["n_images"], "metrics": {key: item["metrics"].get(key) for key in ("roc_auc", "accuracy", "sensitivity", "specificity")},
         "auc_ci": item.get("auc_ci"), "data_dir": item.get("data_dir")}
        for item in current_evaluations(run)
    ]
    inputs = _inputs_card(ensemble)
    scoring, probability = _scoring_card(ensemble)
    # An adapted run's preset is its parent's; an ensemble's members may each have their own.
    lineage = [config, *([ensemble.parent.run.config] if hasattr(ensemble, "heads") else []), fold_ensembles(ensemble)[0].run.config]
    return {
        "created": now_iso(),
        "run_id": run.id,
        "run_name": run.name,
        "run_kind": getattr(run, "kind", "cv"),
        "format": fmt,
        "artifact": artifact,
        "class_names": list(ensemble.class_names),
        # The largest input; "inputs" lists every one (an ensemble of runs at several sizes has several).
        "input": inputs[0],
        "inputs": inputs,
        "outputs": {
            "probability": probability,
            **({"probability_calibrated": "the same after the run's calibration"} if ensemble.calibration else {}),
        },
        "scoring": scoring,
        "folds": list(ensemble.folds),
        "operating_point": {
            "threshold": ensemble.threshold if ensemble.is_binary else None,
            "probabilities": ensemble.scale,
            "choice": point.get("choice"),
            "prevalence": point.get("prevalence"),
            "decision": "pneumonia when the output named by `probabilities` is ≥ threshold" if ensemble.is_binary else "the most probable class",
        },
        "calibration": ensemble.calibration.to_dict() if ensemble.calibration else None,
        # What the reporting guidelines ask, the same facts as the report's first page.
        "model_facts": model_facts(run),
        "architecture": (config.get("model") or {}).get("architecture") or sorted({part["architecture"] for part in scoring.get("members", []) if part["architecture"]}),
        "preset": next((item.get("preset") for item in lineage if item.get("preset")), None),
        "cross_validation": {
            "n_splits": config.get("n_splits"),
            "grouped_by": "patient",
            "mean_std": {key: value for key, value in (summary.get("mean_std") or {}).items() if key in ("roc_auc", "accuracy", "sensitivity", "specificity")},
        },
        "evaluations": evaluations,
        "training_data": _training_data(ensemble),
        "versions": next((item.get("versions") for item in lineage if item.get("versions")), None),
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
        model(export_feed(ensemble, [np.zeros((ensemble.image_size, ensemble.image_size), dtype=np.uint8)]))
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
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        if _is_full_disk(error):
            # TensorFlow's writers report a full disk as ResourceExhaustedError, Keras' with the staging
            # file's name: either way the user's folder is what filled up.
            raise OSError(errno.ENOSPC, "No space left on device", str(out)) from error
        raise
    return out / ARTIFACT_NAMES[fmt]


def _is_full_disk(error: BaseException) -> bool:
    if isinstance(error, OSError):
        return error.errno == errno.ENOSPC
    return "No space left on device" in str(error)


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
    """Loads an exported artifact with its own runtime and returns predict(feed) -> {output: array}.

    The feed is export_feed()'s {input name: uint8 images}, or one uint8 array for a model
    with one input. Used by the parity checks: Keras (safe_mode=True), tf.saved_model.load,
    the TFLite interpreter and onnxruntime.
    """
    path = str(path)
    if fmt == "keras":
        model = keras.models.load_model(path, safe_mode=True, compile=False)
        names = [tensor.name for tensor in model.inputs]

        def predict(feed):
            feed = _as_feed(feed, names)
            outputs = model(feed if len(names) > 1 else feed[names[0]], training=False)
            return {key: np.asarray(value) for key, value in outputs.items()}

        return predict
    if fmt == "savedmodel":
        import tensorflow as tf

        loaded = tf.saved_model.load(path)
        names = [spec.name for spec in tf.nest.flatten(loaded.serve.input_signature)]

        def predict(feed):
            feed = _as_feed(feed, names)
            if len(names) == 1:
                return {key: value.numpy() for key, value in loaded.serve(tf.constant(feed[names[0]])).items()}
            structured = tf.nest.map_structure(lambda spec: tf.constant(feed[spec.name]), loaded.serve.input_signature)
            return {key: value.numpy() for key, value in loaded.serve(*structured).items()}

        return predict
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        outputs = [output.name for output in session.get_outputs()]
        names = [item.name for item in session.get_inputs()]
        return lambda feed: dict(zip(_output_keys(outputs), session.run(None, _as_feed(feed, names))))
    if fmt == "tflite":
        import tensorflow as tf

        with warnings.catch_warnings():
            # TF announces the interpreter's move to LiteRT on every load; the interpreter works.
            warnings.filterwarnings("ignore", category=UserWarning, message=".*tf.lite.Interpreter is deprecated.*")
            interpreter = tf.lite.Interpreter(model_path=path)

        def predict(feed):
            # The signature runner names its outputs as the model did; a fresh one per batch size.
            runner = interpreter.get_signature_runner()
            names = list(runner.get_input_details())
            return {key: np.asarray(value) for key, value in runner(**_as_feed(feed, names)).items()}

        return predict
    raise ValueError(f"format must be one of {', '.join(EXPORT_FORMATS)}, not {fmt!r}.")


def _as_feed(feed, names: list[str]) -> dict:
    """{runtime input name: array}: a runtime may decorate the model's input names (":0", a prefix), so they are matched by ending."""
    if not isinstance(feed, dict):
        if len(names) != 1:
            raise ValueError(f"This export has {len(names)} inputs ({', '.join(names)}): feed one array per input.")
        return {names[0]: feed}
    matched = {}
    for name in names:
        bare = name.split(":")[0]
        key = next((key for key in sorted(feed, key=len, reverse=True) if bare == key or bare.endswith(key)), None)
        if key is None:
            raise ValueError(f"The export's input {name!r} got no images (fed: {', '.join(feed)}).")
        matched[name] = feed[key]
    return matched


def _output_keys(names: list[str]) -> list[str]:
    """Maps a runtime's output names (which may be decorated) back to OUTPUTS."""
    keys = []
    for name in names:
        keys.append("probability_calibrated" if "calibrated" in name else "probability")
    return keys


def dumps_card(card: dict) -> str:
    """The model card as indented JSON."""
    return json.dumps(card, indent=2, default=str)


def export_feed(ensemble, grays) -> dict:
    """{input name: uint8 (N, S, S, 1)} of decoded images, each prepared as the fold ensembles reading that input train."""
    inputs = serving_inputs(ensemble)
    parts = fold_ensembles(ensemble)
    feed = {}
    for name, preparation in inputs.items():
        reader = next(part for part in parts if preparation_of(part) == preparation)
        feed[name] = np.stack([reader.model_input(gray) for gray in grays])[..., None]
    return feed


def parity_images(ensemble, count: int = 6, seed: int = 0) -> np.ndarray:
    """A few uint8 images at the run's (largest) size for parity checks: smooth random fields, reproducible."""
    generator = np.random.default_rng(seed)
    size = ensemble.image_size
    coarse = generator.integers(0, 256, size=(count, 8, 8), dtype=np.uint8)
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR)) for image in coarse])[..., None]


def parity_check(ensemble, path: str | Path, fmt: str, images: np.ndarray | None = None) -> float:
    """The largest difference between an export (reloaded with its own runtime) and the run, over every output.

    Args:
        ensemble: The loaded run.
        path: The artifact.
        fmt: Its format.
        images: uint8 (N, H, W, 1) source images (default: parity_images), prepared for every
            input as the run prepares them.

    Raises:
        ValueError: An output differs by more than PARITY_TOLERANCE.
    """
    images = parity_images(ensemble) if images is None else images
    grays = [image[..., 0] for image in images]
    exported = load_exported(path, fmt)(export_feed(ensemble, grays))
    predictions = ensemble.predictions_of(grays)
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


def export_archive(run: Run, ensemble, fmt: str) -> bytes:
    """Exports a run in one format into runs/<id>/exports/<format>/ (checked against the run) and zips that folder in memory."""
    import io
    import zipfile

    from zoidberg.runs.store import EXPORTS_DIR

    folder = run.path / EXPORTS_DIR / fmt
    export_run(run, ensemble, fmt, folder, check=True)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(folder.rglob("*")):
            if file.is_file():
                archive.write(file, file.relative_to(folder.parent).as_posix())
    return buffer.getvalue()
