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
from zoidberg.inference.decisions import Decision
from zoidberg.inference.scoring import ScoredFilm
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
    """What one image gave, independent of the decision threshold: the scored film and how the page shows it.

    Attributes:
        name: File name (what the page shows).
        source: "upload", "folder", "pacs" or "demo".
        true_label: Known class of a demo image.
        size_bytes: File size.
        film: The one prediction function's ScoredFilm (zoidberg.inference.scoring): every
            record and decision the page shows is drawn from it by record_of.
        kind: Sniffed format ("jpeg", "png", "dicom", ...).
        original_shape: (height, width) of the decoded image.
        display: Grayscale uint8 image for display (long side at most MAX_DISPLAY_SIDE).
        heatmaps: Grad-CAM maps already computed, by class index.
        encoded: JPEG bytes of the display image ("image",) and of overlays
            ("overlay", class index, opacity), so reruns re-encode nothing.
    """

    name: str
    film: ScoredFilm
    source: str = "upload"
    true_label: str | None = None
    size_bytes: int = 0
    kind: str = ""
    original_shape: tuple[int, int] | None = None
    display: np.ndarray | None = field(default=None, repr=False)
    heatmaps: dict[int, np.ndarray] = field(default_factory=dict, repr=False)
    encoded: dict[tuple, bytes] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        """Whether the image was scored (or refused unread by its header)."""
        return self.film.ok

    @property
    def error(self) -> str | None:
        """Why the file could not be used, else None."""
        return None if self.film.ok else (self.film.error or "not predicted")

    @property
    def refused(self) -> bool:
        """Whether the gate (or a PACS header) refused the image: no diagnosis is shown for it."""
        return self.film.refused

    @property
    def prediction(self):
        """The threshold-free Prediction, or None."""
        return self.film.prediction

    @property
    def verdict(self):
        """The gate's verdict (None when the run has no gate)."""
        return self.film.verdict

    @property
    def model_input(self) -> np.ndarray | None:
        """The S×S image the networks saw."""
        return self.film.model_input

    @property
    def header(self):
        """What a DICOM file's header says of itself (DicomFacts), else None."""
        return self.film.header

    def record(self, ensemble: Any, threshold: float | None, scale: str | None = None) -> dict:
        """Its prediction record at the page's threshold: record_of, as every door decides."""
        from zoidberg.inference.scoring import record_of

        return record_of(ensemble, self.film, threshold, scale, door="page")


def process_image(ensemble: Any, item: ImageInput) -> ImageResult:
    """Scores one file with the run through the one prediction function; never raises.

    Args:
        ensemble: A loaded run (zoidberg.inference.loading.load_ensemble).
        item: The file.

    Returns:
        The result; `error` holds a one-line reason when the file is unusable.
    """
    return score_inputs(ensemble, [item])[0]


def score_inputs(ensemble: Any, items: Sequence[ImageInput]) -> list[ImageResult]:
    """Scores files as every door does (zoidberg.inference.scoring.score_films), then readies them for display."""
    from zoidberg.inference.scoring import score_films

    films = score_films(ensemble, [item.as_source() for item in items], keep_images=True)
    return [_shown(item, film, getattr(ensemble, "image_size", None)) for item, film in zip(items, films)]


def _shown(item: ImageInput, film: ScoredFilm, image_size: int | None) -> ImageResult:
    """A scored film with what the page shows of it: the film at display size, its format and its own size."""
    from zoidberg.inference.batch import decode_for_run

    result = ImageResult(name=item.name, film=film, source=item.source, true_label=item.true_label, size_bytes=len(item.data),
                         kind=sniff_kind(item.data[:SNIFF_BYTES], item.name) if item.data else "")
    if film.gray is None:
        return result
    # The run reads a JPEG drafted at its own size, as the CLI does; the page shows it drafted at
    # the display's size (never a full decode of a large original) and states the file's own size.
    shown = film.gray
    if result.kind == "jpeg" and image_size is not None and image_size < MAX_DISPLAY_SIDE:
        drafted = decode_for_run(item.data, name=item.name, image_size=MAX_DISPLAY_SIDE)[0]
        shown = film.gray if drafted is None else drafted
    result.original_shape = _stored_shape(item.data) or (int(shown.shape[0]), int(shown.shape[1]))
    result.display = downscale(shown, MAX_DISPLAY_SIDE)
    # The session keeps the film at display size only: what a Grad-CAM capture written back needs.
    film.gray = result.display if film.ok else None
    if not film.ok:
        result.display = None
    return result


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


def results_table(ensemble: Any, results: Sequence[ImageResult], threshold: float | None, scale: str | None = None) -> pd.DataFrame:
    """One row per file, drawn from its record (record_of): prediction, probability (raw and calibrated), spread, class probabilities, error.

    Args:
        ensemble: The loaded run.
        results: Processed files, in order.
        threshold: Binary decision threshold, on `scale`.
        scale: "raw" or "calibrated": the probabilities the threshold applies to (default: the run's).

    Returns:
        The table shown on the page.
    """
    class_names = list(ensemble.class_names)
    rows = []
    for result in results:
        record = result.record(ensemble, threshold, scale)
        row: dict[str, Any] = {"file": result.name, "source": SOURCE_LABELS.get(result.source, result.source)}
        diagnosed = "error" not in record and not result.refused
        row.update(prediction="refused" if result.refused else record.get("label"), probability=_rounded(record.get("probability")),
                   spread=_rounded(record.get("spread")), folds=len(record["per_fold"]) if diagnosed else None,
                   scale=record.get("scale"))
        if diagnosed and record.get("probability_calibrated") is not None:
            row["raw"], row["calibrated"] = _rounded(record["probability_raw"]), _rounded(record["probability_calibrated"])
        for name in class_names:
            row[f"P({name})"] = _rounded((record.get("class_probabilities") or {}).get(name))
        if len(class_names) == 2:
            cutoff = record.get("threshold", threshold)
            row["threshold"] = _rounded(cutoff)
        if result.verdict is not None or result.film.source.refusal:
            row["in_distribution"] = record.get("in_distribution")
            row["ood_score"] = _rounded(record.get("ood_score"), 3)
            row["ood_reason"] = record.get("ood_reason")
        row["true class"] = result.true_label
        row["correct"] = record.get("correct")
        row["error"] = record.get("error") or ""
        rows.append(row)
    frame = pd.DataFrame(rows)
    # The reason of a failed file stays visible without scrolling a wide table.
    leading = [column for column in ("file", "prediction", "probability", "spread", "error") if column in frame]
    return frame[leading + [column for column in frame.columns if column not in leading]]


def _rounded(value, digits: int = 4):
    return None if value is None else round(float(value), digits)


def result_records(ensemble: Any, results: Sequence[ImageResult], threshold: float | None, scale: str | None = None) -> list[dict]:
    """The page's results as prediction records (record_of), as predict --csv writes them."""
    return [result.record(ensemble, threshold, scale) for result in results]


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
    # Files are scored in batches: one forward pass per PREDICT_BATCH images.
    for start in range(0, len(missing), PREDICT_BATCH):
        chunk = missing[start : start + PREDICT_BATCH]
        for index, result in zip(chunk, score_inputs(ensemble, [items[index] for index in chunk])):
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
