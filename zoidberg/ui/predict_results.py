"""Predict page results: each file decoded and scored through the CLI's path, cached per session, drawn as JPEG."""

from __future__ import annotations

import io
import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image

from zoidberg.data.imaging import downscale
from zoidberg.data.sniffing import SNIFF_BYTES, sniff_kind
from zoidberg.inference.decisions import Decision, Prediction, decide
from zoidberg.runs.store import MODEL_FILE, Run, RunNotFoundError, RunStore
from zoidberg.ui.predict_inputs import ImageInput

LOGGER = logging.getLogger(__name__)

SOURCE_LABELS = {"demo": "synthetic demo", "upload": "upload", "folder": "server folder", "pacs": "PACS"}


# Decoded images are kept for display at most this large (long side); the network sees
# its own S×S resize of the full image, so this only bounds memory and page weight.
MAX_DISPLAY_SIDE = 1024

RESULTS_KEY = "predict_results"
MAX_CACHED_RESULTS = 64
# Images decoded and predicted at once when many are uploaded or read from a folder.
PREDICT_BATCH = 32


# ----------------------------------------------------------------------------- processing


@dataclass
class ImageResult:
    """What one image gave, independent of the decision threshold.

    Attributes:
        name: File name.
        source: "upload" or "demo".
        true_label: Known class of a demo image.
        size_bytes: File size.
        error: One-line reason when the file could not be used, else None.
        kind: Sniffed format ("jpeg", "png", "dicom", ...).
        header: What a DICOM file's header says of itself (DicomFacts), else None.
        original_shape: (height, width) of the decoded image.
        display: Grayscale uint8 image for display (long side at most MAX_DISPLAY_SIDE).
        model_input: The S×S uint8 image the networks saw.
        prediction: The fold models' threshold-free probabilities.
        verdict: The out-of-distribution gate's verdict (None when the run has no gate).
        heatmaps: Grad-CAM maps already computed, by class index.
        encoded: JPEG bytes of the display image ("image",) and of overlays
            ("overlay", class index, opacity), so reruns re-encode nothing.
    """

    name: str
    source: str = "upload"
    true_label: str | None = None
    size_bytes: int = 0
    error: str | None = None
    kind: str = ""
    header: Any = None
    original_shape: tuple[int, int] | None = None
    display: np.ndarray | None = field(default=None, repr=False)
    model_input: np.ndarray | None = field(default=None, repr=False)
    prediction: Prediction | None = None
    verdict: Any = None
    heatmaps: dict[int, np.ndarray] = field(default_factory=dict, repr=False)
    encoded: dict[tuple, bytes] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        """Whether the image was predicted."""
        return self.error is None and self.prediction is not None

    @property
    def refused(self) -> bool:
        """Whether the gate refused the image: no diagnosis is shown for it."""
        return self.verdict is not None and not self.verdict.in_distribution


def process_image(ensemble: Any, item: ImageInput) -> ImageResult:
    """Decodes one file and predicts it with the run; never raises.

    Args:
        ensemble: A loaded run (zoidberg.inference.loading.load_ensemble).
        item: The file.

    Returns:
        The result; `error` holds a one-line reason when the file is unusable.
    """
    result, gray = decode_input(item, getattr(ensemble, "image_size", None))
    return result if gray is None else predict_decoded(ensemble, [(result, gray)])[0]


def decode_input(item: ImageInput, image_size: int | None) -> tuple[ImageResult, np.ndarray | None]:
    """Decodes one file as the CLI does for the run (zoidberg.inference.batch.decode_for_run), and for display; never raises.

    Returns:
        (the result so far, the image the run is fed, or None when the file is unusable).
    """
    from zoidberg.inference.batch import decode_for_run

    result = ImageResult(name=item.name, source=item.source, true_label=item.true_label, size_bytes=len(item.data))
    if item.reason:
        result.error = item.reason
        return result, None
    result.kind = sniff_kind(item.data[:SNIFF_BYTES], item.name)
    # decode_grayscale also refuses files above MAX_UPLOAD_BYTES, naming the limit.
    gray, error = decode_for_run(item.data, name=item.name, image_size=image_size)
    if gray is None:
        result.error = error
        return result, None
    # The run reads a JPEG drafted at its own size, as the CLI does; the page shows it drafted at
    # the display's size (never a full decode of a large original) and states the file's own size.
    shown = gray
    if result.kind == "jpeg" and image_size is not None and image_size < MAX_DISPLAY_SIDE:
        drafted = decode_for_run(item.data, name=item.name, image_size=MAX_DISPLAY_SIDE)[0]
        shown = gray if drafted is None else drafted
    result.original_shape = _stored_shape(item.data) or (int(shown.shape[0]), int(shown.shape[1]))
    result.display = downscale(shown, MAX_DISPLAY_SIDE)
    if result.kind == "dicom":
        from zoidberg.data.dicom_facts import read_dicom_facts

        result.header = read_dicom_facts(item.data)
    return result, gray


def predict_decoded(ensemble: Any, pairs: Sequence[tuple[ImageResult, np.ndarray]]) -> list[ImageResult]:
    """Predicts decoded images through the CLI's path (zoidberg.inference.batch.score_decoded); one bad image costs only itself."""
    from zoidberg.inference.batch import score_decoded

    scored = score_decoded(ensemble, [gray for _, gray in pairs], headers=[getattr(result, "header", None) for result, _ in pairs])
    for (result, _), item in zip(pairs, scored):
        if item.error:
            result.error = item.error
            result.display = None
            continue
        result.prediction, result.model_input, result.verdict = item.prediction, item.model_input, item.verdict
    return [result for result, _ in pairs]


def format_probability(value: float) -> str:
    """Three digits, or "> 0.999" / "< 0.001": a calibrated probability is never shown as a bare 1 or 0."""
    if value > 0.999:
        return "> 0.999"
    if value < 0.001:
        return "< 0.001"
    return f"{value:.3f}"


def headline(decision: Decision, class_names: Sequence[str]) -> str:
    """The card's headline in a clinician's terms: P(pneumonia) against the threshold, then the call.

    Binary runs: e.g. "P(pneumonia) 0.638 ± 0.170 across 3 members, below the threshold 0.712: normal".
    Three-class runs: the probability of the most probable class, which is the call.
    """
    folds = len(decision.per_fold)
    fold_text = f"across {folds} {decision.unit}{'s' if folds != 1 else ''}"
    spread = f"± {decision.spread:.3f} {fold_text}"
    if len(class_names) == 2 and decision.threshold is not None:
        side = "at or above" if decision.probability >= decision.threshold else "below"
        return (f"P({class_names[1]}) {format_probability(decision.probability)} {spread}, {side} the threshold "
                f"{decision.threshold:.3f}: {decision.label}")
    return f"P({decision.label}) {format_probability(decision.probability)} {spread}: the most probable class"


def gradcam_heatmap(ensemble: Any, result: ImageResult, class_index: int) -> np.ndarray:
    """Returns (and caches in the result) the fold-averaged Grad-CAM map of a class."""
    if class_index not in result.heatmaps:
        result.heatmaps[class_index] = np.asarray(ensemble.gradcam(result.model_input, class_index), dtype=np.float32)
    return result.heatmaps[class_index]


def gradcam_overlay(ensemble: Any, result: ImageResult, class_index: int, alpha: float) -> np.ndarray:
    """Blends the Grad-CAM map of a class over the display image (RGB uint8)."""
    from zoidberg.inference.explain import overlay_heatmap

    return overlay_heatmap(result.display, gradcam_heatmap(ensemble, result, class_index), alpha=alpha)


def encode_jpeg(pixels: np.ndarray, quality: int = 90) -> bytes:
    """Encodes a gray or RGB uint8 array as JPEG bytes for st.image."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def display_jpeg(result: ImageResult) -> bytes:
    """The display image as JPEG, encoded once per result."""
    if ("image",) not in result.encoded:
        result.encoded[("image",)] = encode_jpeg(result.display)
    return result.encoded[("image",)]


def overlay_jpeg(ensemble: Any, result: ImageResult, class_index: int, alpha: float) -> bytes:
    """The Grad-CAM overlay as JPEG, computed once per (class, opacity) and result."""
    key = ("overlay", int(class_index), round(float(alpha), 2))
    if key not in result.encoded:
        # Only the latest opacity of each class is kept, so dragging the slider cannot grow memory.
        for stale in [other for other in result.encoded if other[:2] == key[:2]]:
            del result.encoded[stale]
        result.encoded[key] = encode_jpeg(gradcam_overlay(ensemble, result, class_index, alpha))
    return result.encoded[key]


def results_table(
    results: Sequence[ImageResult], class_names: Sequence[str], threshold: float | None, scale: str = "raw"
) -> pd.DataFrame:
    """One row per file: prediction, probability (raw and calibrated), spread, class probabilities, error.

    Args:
        results: Processed files, in order.
        class_names: The run's classes.
        threshold: Binary decision threshold, on `scale`.
        scale: "raw" or "calibrated": the probabilities the threshold applies to.

    Returns:
        The table (also the CSV download).
    """
    rows = []
    binary = len(class_names) == 2
    for result in results:
        row: dict[str, Any] = {"file": result.name, "source": SOURCE_LABELS.get(result.source, result.source)}
        if result.ok:
            decision = decide(result.prediction, threshold, scale)
            row.update(
                prediction=decision.label,
                probability=round(decision.probability, 4),
                spread=round(decision.spread, 4),
                folds=len(decision.per_fold),
                scale=decision.scale,
            )
            if decision.calibrated_probability is not None:
                row["raw"] = round(decision.raw_probability, 4)
                row["calibrated"] = round(decision.calibrated_probability, 4)
            for name in class_names:
                row[f"P({name})"] = round(decision.class_probabilities.get(name, float("nan")), 4)
            if binary:
                row["threshold"] = round(decision.threshold, 4)
            if result.refused:
                # No probability stands where a diagnosis would: the gate says it would mean nothing.
                row["prediction"] = "refused"
                for key in list(row):
                    if key in ("probability", "spread", "raw", "calibrated") or key.startswith("P("):
                        row[key] = None
            if result.verdict is not None:
                row["in_distribution"] = result.verdict.in_distribution
                row["ood_score"] = round(result.verdict.ood_score, 3)
        else:
            row.update(prediction=None, probability=None, spread=None, folds=None, scale=None)
            for name in class_names:
                row[f"P({name})"] = None
            if binary:
                row["threshold"] = round(float(threshold), 4) if threshold is not None else None
        row["true class"] = result.true_label
        row["correct"] = (row["prediction"] == result.true_label) if result.true_label and result.ok else None
        row["error"] = result.error or ""
        rows.append(row)
    frame = pd.DataFrame(rows)
    # The reason of a failed file stays visible without scrolling a wide table.
    leading = [column for column in ("file", "prediction", "probability", "spread", "error") if column in frame]
    return frame[leading + [column for column in frame.columns if column not in leading]]


def result_records(results: Sequence[ImageResult], threshold: float | None, scale: str, run_id: str, tta: bool | None = None) -> list[dict]:
    """The page's results as prediction records (zoidberg.inference.record), as predict --csv writes them."""
    from zoidberg.inference.gating import gate_fields
    from zoidberg.inference.record import make_record

    records = []
    for result in results:
        row: dict[str, Any] = {"file": result.name}
        if result.true_label:
            row["true_label"] = result.true_label
        if result.ok:
            decision = decide(result.prediction, threshold, scale)
            row.update(decision.to_dict(), **gate_fields(result.verdict), tta=tta)
            if result.true_label:
                row["correct"] = decision.label == result.true_label
        else:
            row["error"] = result.error or "not predicted"
        records.append(make_record(row, run_id=run_id))
    return records


# ----------------------------------------------------------------------------- figures


# ----------------------------------------------------------------------------- runs and caches


def models_signature(run: Run) -> tuple:
    """Identifies the exact fold model files, so a resumed run's new folds reload the ensemble.

    An ensemble run's signature is its members' and its own operating point's.
    """
    if run.kind == "adapt":
        from zoidberg.runs.store import ADAPTATION_FILE

        path = run.path / ADAPTATION_FILE
        parent = run.config.get("parent")
        try:
            parent_signature = models_signature(RunStore(run.path.parent).get(parent))
        except (RunNotFoundError, ValueError):
            parent_signature = ()
        return (parent, parent_signature, path.stat().st_mtime_ns if path.exists() else 0)
    if run.kind == "ensemble":
        store = RunStore(run.path.parent)
        members = []
        for member_id in run.member_ids():
            try:
                members.append((member_id, models_signature(store.get(member_id))))
            except (RunNotFoundError, ValueError):
                members.append((member_id, ()))
        return tuple(members)
    signature = []
    for fold in run.folds_with(MODEL_FILE):
        try:
            stat = run.model_path(fold).stat()
        except OSError:
            continue
        signature.append((fold, stat.st_size, stat.st_mtime_ns))
    return tuple(signature)


@st.cache_resource(show_spinner=False, max_entries=3)
def _cached_ensemble(runs_dir: str, run_id: str, signature: tuple) -> Any:
    """Loads a run's fold ensemble once per process (keyed by run id and model files)."""
    from zoidberg.inference.loading import load_ensemble

    del signature  # Only part of the cache key.
    return load_ensemble(run_id, runs_dir=runs_dir)


def load_ensemble_cached(store: RunStore, run: Run) -> Any:
    """Returns the cached Ensemble of a run (loading it with safe_mode=True the first time)."""
    return _cached_ensemble(str(store.root), run.id, models_signature(run))


def results_cache() -> OrderedDict[tuple, ImageResult]:
    """The session's threshold-free results, oldest first (a small LRU)."""
    if RESULTS_KEY not in st.session_state:
        st.session_state[RESULTS_KEY] = OrderedDict()
    return st.session_state[RESULTS_KEY]


def process_all(ensemble: Any, run_key: tuple, items: Sequence[ImageInput]) -> list[ImageResult]:
    """Processes files, reusing this session's results so that widgets never recompute the network.

    Args:
        ensemble: The loaded Ensemble.
        run_key: Identifies the run and its model files.
        items: Files to predict.

    Returns:
        One result per file, in order.
    """
    cache = results_cache()
    keys = [(run_key, item.name, item.digest) for item in items]
    missing = [index for index, key in enumerate(keys) if key not in cache]
    progress = st.progress(0.0, text="Predicting ...") if len(missing) > 1 else None
    # Decoded images are predicted in batches: one forward pass per PREDICT_BATCH images.
    for start in range(0, len(missing), PREDICT_BATCH):
        chunk = missing[start : start + PREDICT_BATCH]
        decoded = [(index, *decode_input(items[index], ensemble.image_size)) for index in chunk]
        for index, result, gray in decoded:
            if gray is None:
                cache[keys[index]] = result
        good = [(index, result, gray) for index, result, gray in decoded if gray is not None]
        for (index, _, _), result in zip(good, predict_decoded(ensemble, [(result, gray) for _, result, gray in good])):
            cache[keys[index]] = result
        if progress is not None:
            done = min(start + PREDICT_BATCH, len(missing))
            progress.progress(done / len(missing), text=f"Predicted {done} of {len(missing)} new images")
    if progress is not None:
        progress.empty()
    results = []
    for key in keys:
        cache.move_to_end(key)
        results.append(cache[key])
    while len(cache) > max(MAX_CACHED_RESULTS, len(keys)):
        cache.popitem(last=False)
    return results


def _stored_shape(data: bytes) -> tuple[int, int] | None:
    """(height, width) of a JPEG as decoded (its header, turned by its EXIF orientation), read without decoding pixels; None for other files."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format != "JPEG":
                return None
            # EXIF orientations 5 to 8 turn the film a quarter, as decoding does.
            turned = image.getexif().get(0x0112) in (5, 6, 7, 8)
            return (int(image.width), int(image.height)) if turned else (int(image.height), int(image.width))
    except (OSError, ValueError):
        return None
