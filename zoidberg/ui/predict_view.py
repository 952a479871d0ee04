"""Predict page pieces: per-file decoding and fold-ensemble prediction, Grad-CAM, cards and batch table."""

from __future__ import annotations

import hashlib
import io
import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image

from zoidberg.data.archives import MAX_ARCHIVE_BYTES, declared_bytes, read_zip
from zoidberg.data.imaging import (
    MAX_UPLOAD_BYTES,
    SNIFF_BYTES,
    downscale,
    sniff_kind,
)
from zoidberg.data.ood import REFUSAL
from zoidberg.inference.decisions import Decision, Prediction, decide
from zoidberg.runs.store import MODEL_FILE, Run, RunNotFoundError, RunStore
from zoidberg.ui import figures
from zoidberg.ui.widgets import escape_markdown, run_picker_ui

LOGGER = logging.getLogger(__name__)

UPLOAD_TYPES = ["png", "jpg", "jpeg", "dcm", "dicom", "zip"]
SOURCE_LABELS = {"demo": "synthetic demo", "upload": "upload", "folder": "server folder"}
MAX_UPLOAD_MB = MAX_UPLOAD_BYTES // (1024 * 1024)

# Runs whose fold models are final: a stopped or interrupted run keeps its finished folds.

# Decoded images are kept for display at most this large (long side); the network sees
# its own S×S resize of the full image, so this only bounds memory and page weight.
MAX_DISPLAY_SIDE = 1024

# Cards drawn at once; the batch table always lists every file.
CARD_LIMIT = 24
DEMO_IMAGE_COUNT = 4

RESULTS_KEY = "predict_results"
MAX_CACHED_RESULTS = 64
# Images decoded and predicted at once when many are uploaded or read from a folder.
PREDICT_BATCH = 32
# The most files a server folder or archive contributes at once: past it the page says so.
MAX_BATCH_FILES = 2000

DISCLAIMER = (
    "**Research demo, not a medical device.** These predictions come from models trained for teaching and "
    "experimentation. They have not been validated clinically and must never be used to diagnose, treat or "
    "triage a patient."
)


# ----------------------------------------------------------------------------- inputs

# The session's unpacked .zip uploads, by upload, so that a rerun does not inflate them again.
UNPACKED_ARCHIVES_KEY = "predict_unpacked_archives"
# What one session's unpacked archives hold together: one archive's cap, so that several
# uploads cannot multiply the server's memory.
SESSION_ARCHIVE_BYTES = MAX_ARCHIVE_BYTES


@dataclass(frozen=True)
class ImageInput:
    """One image to predict, held in memory.

    Attributes:
        name: File name as uploaded (or the demo file's relative path).
        data: The file's bytes.
        source: "upload", "folder" or "demo".
        true_label: The known class of a demo image (synthetic) or of a file in a class folder, else None.
        reason: Why the file is not predicted (an archive entry refused), else None.
    """

    name: str
    data: bytes = field(repr=False)
    source: str = "upload"
    true_label: str | None = None
    reason: str | None = None

    @property
    def digest(self) -> str:
        """SHA-256 of the content (the cache key of its prediction)."""
        return hashlib.sha256(self.data).hexdigest()


def uploads_to_inputs(uploads: Sequence[Any] | None) -> list[ImageInput]:
    """Turns Streamlit UploadedFile objects into in-memory inputs; a .zip becomes its files.

    Args:
        uploads: The file_uploader value (a list, one file or None).

    Returns:
        Inputs in upload order (an archive's files in archive order, refused entries with their reason).
    """
    if uploads is None:
        return []
    if not isinstance(uploads, (list, tuple)):
        uploads = [uploads]
    items = []
    unpacked = st.session_state.setdefault(UNPACKED_ARCHIVES_KEY, {})
    kept = {}
    held = 0
    for upload in uploads:
        data = bytes(upload.getvalue())
        if sniff_kind(data[:SNIFF_BYTES], str(upload.name)) == "zip":
            # An archive is unpacked once per upload, not on every rerun of the page; only the
            # archives still uploaded are kept, and together they hold at most SESSION_ARCHIVE_BYTES.
            key = getattr(upload, "file_id", None) or hashlib.sha256(data).hexdigest()
            refusal = None if key in unpacked else over_session_cap(str(upload.name), data, SESSION_ARCHIVE_BYTES - held)
            if refusal is not None:
                # Not kept: once an archive above is removed, this one is unpacked on the next rerun.
                items.append(refusal)
                continue
            kept[key] = unpacked[key] if key in unpacked else archive_inputs(str(upload.name), data)
            held += sum(len(item.data) for item in kept[key])
            items += kept[key]
        else:
            items.append(ImageInput(name=str(upload.name), data=data, source="upload"))
    st.session_state[UNPACKED_ARCHIVES_KEY] = kept
    return items


def over_session_cap(name: str, data: bytes, room: int) -> ImageInput | None:
    """The refusal of an archive that would take the session's unpacked archives past SESSION_ARCHIVE_BYTES, else None.

    Args:
        name: The upload's name.
        data: Its bytes.
        room: What the session's unpacked archives may still hold, in bytes.
    """
    try:
        declared = declared_bytes(data)
    except ValueError:
        return None  # archive_inputs names what is wrong with it.
    if not MAX_ARCHIVE_BYTES >= declared > room:
        return None  # Within the room, or refused by read_zip as a bomb on its own.
    held = (SESSION_ARCHIVE_BYTES - room) / 1024**2
    return ImageInput(name=name, data=b"", reason=(
        f"It would unpack to {declared / 1024**2:,.0f} MB, and this session's other archives hold {held:,.0f} MB: "
        f"together at most {SESSION_ARCHIVE_BYTES / 1024**2:,.0f} MB are held at once. Remove an archive above first, "
        "or predict large batches with the CLI (predict --csv)."))


def archive_inputs(name: str, data: bytes) -> list[ImageInput]:
    """The files of an uploaded .zip as inputs, labelled from NORMAL/PNEUMONIA folders inside it."""
    from zoidberg.data.files import label_from_path

    try:
        entries = read_zip(data)
    except ValueError as error:
        return [ImageInput(name=name, data=b"", reason=str(error))]
    return [
        ImageInput(name=f"{name}/{entry.name}", data=entry.data, source="upload", true_label=label_from_path(entry.name), reason=entry.reason)
        for entry in entries
    ]


def folder_inputs(folder: str) -> tuple[list[ImageInput], list[str]]:
    """Reads the image files under a server folder (recursively, by content) as inputs.

    Returns:
        (inputs, notes): files that are not images are inputs with their reason, so they
        appear in the table; notes say what was cut when the folder is very large.
    """
    from zoidberg.data.files import collect_images, label_from_path
    from zoidberg.data.roots import is_allowed

    files, skipped = collect_images([folder])
    notes = []
    outside = [path for path in files if not is_allowed(path)]
    if outside:
        # A link inside an allowed folder must not read what lies outside it.
        notes.append(f"{len(outside)} file(s) are links that lead outside the allowed folders: refused.")
        files = [path for path in files if is_allowed(path)]
    if len(files) > MAX_BATCH_FILES:
        notes.append(f"The folder holds {len(files):,} images; the first {MAX_BATCH_FILES:,} are predicted here (the CLI takes any number).")
        files = files[:MAX_BATCH_FILES]
    root = Path(folder)
    items = []
    for path in files:
        try:
            data = path.read_bytes()
        except OSError as error:
            items.append(ImageInput(name=str(path.relative_to(root)), data=b"", source="folder", reason=f"unreadable: {error.strerror or error}"))
            continue
        items.append(ImageInput(name=str(path.relative_to(root)), data=data, source="folder", true_label=label_from_path(path)))
    items += [ImageInput(name=str(Path(item.path).relative_to(root)) if item.path.startswith(str(root)) else item.path, data=b"", source="folder", reason=item.reason) for item in skipped]
    return items, notes


def demo_inputs(demo_dir: str | Path, label_mode: str, count: int = DEMO_IMAGE_COUNT) -> list[ImageInput]:
    """Picks a few images of the synthetic demo test split, alternating classes.

    Args:
        demo_dir: Root of the demo dataset (Kaggle layout).
        label_mode: "binary" or "three-class", for the true labels.
        count: How many images.

    Returns:
        Inputs labelled with their (synthetic) true class; empty when the split is missing.
    """
    from zoidberg.data.dataset import parse_label

    root = Path(demo_dir) / "test"
    groups = {
        "normal": sorted((root / "NORMAL").glob("*.jpeg")),
        "bacteria": sorted(path for path in (root / "PNEUMONIA").glob("*.jpeg") if "bacteria" in path.name),
        "virus": sorted(path for path in (root / "PNEUMONIA").glob("*.jpeg") if "virus" in path.name),
    }
    # One image per patient, so that the few demo images show different patients.
    groups = {key: _one_per_patient(paths) for key, paths in groups.items()}
    order = ["normal", "bacteria", "normal", "virus"]
    chosen: list[Path] = []
    positions = {key: 0 for key in groups}
    for step in range(count * len(order)):
        if len(chosen) >= count:
            break
        key = order[step % len(order)]
        if positions[key] < len(groups[key]):
            chosen.append(groups[key][positions[key]])
            positions[key] += 1
    inputs = []
    for path in chosen:
        try:
            data = path.read_bytes()
        except OSError:
            continue
        truth = parse_label(path.parent.name, path.name, label_mode)
        inputs.append(ImageInput(name=f"{path.parent.name}/{path.name}", data=data, source="demo", true_label=truth))
    return inputs


def _one_per_patient(paths: Sequence[Path]) -> list[Path]:
    """Keeps the first image of each patient, in order."""
    from zoidberg.data.dataset import parse_patient_id

    kept, seen = [], set()
    for path in paths:
        patient = parse_patient_id(path.name)
        if patient not in seen:
            seen.add(patient)
            kept.append(path)
    return kept


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
    # The page shows the whole film (and its size); the run reads a JPEG drafted at its own size, as the CLI does.
    full = gray if result.kind != "jpeg" or image_size is None else decode_for_run(item.data, name=item.name, image_size=None)[0]
    full = gray if full is None else full
    result.original_shape = (int(full.shape[0]), int(full.shape[1]))
    result.display = downscale(full, MAX_DISPLAY_SIDE)
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


def headline(decision: Decision, class_names: Sequence[str]) -> str:
    """Returns e.g. "Pneumonia 0.87 ± 0.04 across 5 folds" (the probability of the class named).

    For a binary "normal" call the probability shown is P(normal), so the number
    always belongs to the word before it.
    """
    folds = len(decision.per_fold)
    fold_text = f"across {folds} {decision.unit}{'s' if folds != 1 else ''}"
    probability = decision.probability
    if len(class_names) == 2 and decision.class_index == 0:
        probability = 1.0 - decision.probability
    return f"{decision.label.capitalize()} {probability:.2f} ± {decision.spread:.2f} {fold_text}"


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


# ----------------------------------------------------------------------------- widgets


def predict_run_picker_ui(runs: Sequence[tuple[Run, str, list[int]]]) -> tuple[Run, str, list[int]]:
    """Draws the model picker (zoidberg.ui.widgets.run_picker_ui, newest first) and returns the chosen entry."""
    extras = {}
    for run, _, folds in runs:
        n_splits = run.config.get("n_splits", len(folds))
        extras[run.id] = (f"ensemble of {len(folds)} runs" if run.kind == "ensemble" else f"adapted from {run.config.get('parent')}"
                          if run.kind == "adapt" else f"{len(folds)}/{n_splits} folds")
    by_id = {run.id: (run, state, folds) for run, state, folds in runs}
    chosen = run_picker_ui(
        [run for run, _, _ in runs], {run.id: state for run, state, _ in runs}, None,
        label="Model (a finished cross-validation run, ensemble or adapted run)", key="predict_run",
        help_text="Every fold's model predicts each image; the page shows their mean and spread.", extras=extras,
    )
    return by_id[chosen]


def describe_ensemble(ensemble: Any, state: str, folds: Sequence[int], n_splits: int) -> str:
    """One-line description of what predicts: folds, input size, classes, threshold origin."""
    fold_list = ", ".join(str(fold) for fold in folds)
    if ensemble.run.kind == "ensemble":
        names = ", ".join(member.run.name for member in ensemble.members)
        which = f"Ensemble of {len(ensemble.members)} runs ({ensemble.combiner.method}: {names})"
    elif ensemble.run.kind == "adapt":
        which = f"Adapted to `{ensemble.run.config.get('site_dir')}`: {ensemble.describe_models()}"
    elif state == "completed" and len(folds) == n_splits:
        which = f"Ensemble of all {len(folds)} fold models"
    else:
        which = f"Ensemble of folds {fold_list} only (the run {state} after {len(folds)} of {n_splits} folds)"
    classes = " / ".join(ensemble.class_names)
    if ensemble.is_binary:
        summary = ensemble.run.summary() or {}
        point = ensemble.operating_point
        if point:
            from zoidberg.config import OperatingPointChoice

            choice = OperatingPointChoice.from_dict(point["choice"])
            origin = f"{choice.describe()} on out-of-fold predictions, {point['prevalence']:.0%} prevalence ({point['prevalence_source']})"
        else:
            method = summary.get("threshold_method")
            origin = f"{method} on out-of-fold predictions" if method else "default, the run has no out-of-fold threshold"
        threshold_text = f" · run threshold {ensemble.threshold:.3f} on {ensemble.scale} probabilities ({origin})"
    else:
        threshold_text = " · predicted class = most probable"
    return f"{which} · {ensemble.image_size} px input · {classes}{threshold_text}"


def threshold_ui(ensemble: Any) -> float | None:
    """Draws the global threshold slider (binary runs) with a reset button.

    Returns:
        The threshold, or None for three-class runs.
    """
    if not ensemble.is_binary:
        return None
    key = f"predict_threshold_{ensemble.run.id}"
    default = round(float(ensemble.threshold), 3)
    if key not in st.session_state:
        st.session_state[key] = default
    value = st.slider(
        f"Decision threshold: {ensemble.scale} P({ensemble.class_names[1]}) ≥ threshold → {ensemble.class_names[1]}",
        0.0,
        1.0,
        step=0.005,
        format="%.3f",
        key=key,
        help="Applies to every image. Lower it to miss fewer pneumonias (more false alarms); "
        "raise it for fewer false alarms. "
        "Moving it never re-runs the network.",
    )

    def reset() -> None:
        st.session_state[key] = default

    st.button(f"Reset to the run's threshold ({default:.3f})", on_click=reset, key=f"{key}_reset", type="tertiary")
    return float(value)


def gradcam_ui() -> tuple[bool, float]:
    """Draws the Grad-CAM toggle and opacity.

    Returns:
        (show heatmaps, overlay opacity).
    """
    show = st.toggle(
        "Grad-CAM heatmap",
        value=True,
        key="predict_gradcam",
        help="Gradient-weighted class activation map of the last convolution layer, averaged over fold models, for the "
        "predicted class. It shows which regions drove the score, not where disease is.",
    )
    alpha = st.slider("Heatmap opacity", 0.1, 0.9, 0.45, 0.05, key="predict_alpha", disabled=not show)
    return show, float(alpha)


def inputs_ui(label_mode: str) -> list[ImageInput]:
    """Draws the uploader and the demo toggle.

    Returns:
        The files to predict: uploads first, then demo images.
    """
    uploads = st.file_uploader(
        f"Chest X-rays: PNG, JPEG or DICOM, up to {MAX_UPLOAD_MB} MB each, or a .zip of them",
        type=UPLOAD_TYPES,
        accept_multiple_files=True,
        key="predict_uploads",
        max_upload_size=MAX_UPLOAD_MB,
        help="Files are processed in memory and never written to disk. DICOM images are windowed "
        "(VOI LUT or window centre/width) and MONOCHROME1 is inverted. A .zip is read in memory: entries whose "
        "path leaves the archive are refused, and so is an archive that would unpack to more than 512 MB (all of a session's "
        "archives together), or whose files unpack to more than they declare.",
    )
    items = uploads_to_inputs(uploads)
    items += server_folder_ui()
    if st.toggle(
        "Try demo images (synthetic)",
        value=False,
        key="predict_demo",
        help="A few images from the test split of the synthetic demo dataset, with their true class.",
    ):
        items.extend(demo_items_ui(label_mode))
    return items


def server_folder_ui() -> list[ImageInput]:
    """Draws "or a folder on the server" and returns its images (none while it is empty or refused)."""
    from zoidberg.data.roots import check_allowed

    folder = st.text_input(
        "…or a folder on the server",
        value="",
        key="predict_folder",
        placeholder="/data/clinic/2026-12 (read recursively; files recognised by content)",
        help="Every image and DICOM file under it is predicted in batches; files inside NORMAL/PNEUMONIA folders "
        "get their true class and a correct column. On a shared server only folders under $ZOIDBERG_DATA_ROOTS can be read.",
    ).strip()
    if not folder:
        return []
    try:
        path = check_allowed(folder)
        if not path.is_dir():
            raise ValueError(f"{folder} does not exist or is not a folder.")
        with st.spinner(f"Reading {path} ..."):
            items, notes = folder_inputs(str(path))
    except (ValueError, OSError) as error:
        st.error(escape_markdown(str(error)))
        return []
    for note in notes:
        st.warning(note)
    if not items:
        st.info(f"No image files under {escape_markdown(str(path))}.")
    return items


def demo_items_ui(label_mode: str) -> list[ImageInput]:
    """Returns demo images, generating the demo dataset on first use (with a spinner)."""
    from zoidberg.data.demo import default_demo_dir, ensure_demo_dataset

    try:
        with st.spinner("Generating the synthetic demo dataset (first use only) ..."):
            root = ensure_demo_dataset(default_demo_dir())
    except (OSError, ValueError) as error:
        st.warning(f"The demo images are unavailable: {error}")
        return []
    items = demo_inputs(root, label_mode)
    if not items:
        st.warning(f"No demo images found in {root / 'test'}.")
    return items


def _empty_columns(table: pd.DataFrame, candidates: Sequence[str]) -> list[str]:
    """Returns the candidate columns whose cells are all empty or missing."""
    return [
        column for column in candidates if column in table and not table[column].fillna("").astype(str).str.len().any()
    ]


def show_batch_table(
    results: Sequence[ImageResult], class_names: Sequence[str], threshold: float | None, run_id: str, scale: str = "raw"
) -> None:
    """Draws the batch table with a CSV download (probabilities on `scale`, with both scales when calibrated)."""
    table = results_table(results, class_names, threshold, scale)
    column_config = {
        "probability": st.column_config.ProgressColumn(
            "probability",
            min_value=0.0,
            max_value=1.0,
            format="%.3f",
            help="P(pneumonia) for binary runs; P(predicted class) for three-class runs.",
        ),
        "spread": st.column_config.NumberColumn(
            "± spread", format="%.3f", help="Standard deviation across fold models."
        ),
    }
    # Columns with nothing to say (no demo images, no errors) are hidden on screen but kept in the CSV.
    shown = table.drop(columns=_empty_columns(table, ("error", "true class", "correct")))
    st.dataframe(shown, hide_index=True, width="stretch", column_config=column_config)
    failed = int(sum(1 for result in results if not result.ok))
    st.download_button(
        "Download predictions (CSV)",
        table.to_csv(index=False).encode("utf-8"),
        file_name=f"predictions_{run_id}.csv",
        mime="text/csv",
        on_click="ignore",
        icon=":material/download:",
        help="One row per file, at the current threshold."
        + (f" {failed} file(s) with an error keep their reason." if failed else ""),
    )


def show_card(
    ensemble: Any, result: ImageResult, threshold: float | None, gradcam: tuple[bool, float], index: int
) -> None:
    """Draws one image's card: image, optional Grad-CAM, decision, per-fold strip, class bars.

    Args:
        ensemble: The loaded Ensemble.
        result: The processed file.
        threshold: Binary decision threshold.
        gradcam: (show heatmap, opacity).
        index: Position of the card on the page (keeps chart keys unique).
    """
    class_names = list(ensemble.class_names)
    with st.container(border=True):
        source = " :violet-badge[synthetic demo]" if result.source == "demo" else ""
        # Upload names are the user's text: shown literally, never as Markdown.
        st.markdown(f"**{escape_markdown(result.name)}**{source}")
        if not result.ok:
            st.error(f"{escape_markdown(result.name)}: {escape_markdown(result.error)}", icon="🚫")
            return
        decision = decide(result.prediction, threshold, ensemble.scale)
        if result.refused:
            _show_refusal(result, decision, class_names)
            return
        show_gradcam, alpha = gradcam
        columns = st.columns([1, 1, 1.3]) if show_gradcam else st.columns([1, 1.3])
        with columns[0]:
            kind = "DICOM, windowed" if result.kind == "dicom" else result.kind.upper()
            height, width = result.original_shape or (0, 0)
            st.image(display_jpeg(result), caption=f"{kind} · {width}×{height} px", width="stretch")
        if show_gradcam:
            with columns[1]:
                _show_gradcam(ensemble, result, decision, alpha)
        with columns[-1]:
            _show_decision(decision, class_names, result, index)


def _show_refusal(result: ImageResult, decision: Decision, class_names: Sequence[str]) -> None:
    """The card of an image the gate refused: the image and why, and no diagnosis."""
    columns = st.columns([1, 1.3])
    with columns[0]:
        st.image(display_jpeg(result), caption=f"{result.kind.upper()}", width="stretch")
    with columns[1]:
        st.markdown("### :orange[No diagnosis]")
        reason = result.verdict.reason or ""
        if reason.startswith(REFUSAL):
            st.error(f"{REFUSAL}. The model's answer would mean nothing here.", icon=":material/block:")
            # The reason repeats the refusal sentence above it; the card shows only why.
            why = reason.removeprefix(f"{REFUSAL}: ")
            st.caption(f"{escape_markdown(why[:1].upper() + why[1:])} Upload a frontal chest X-ray (PA or AP), upright and not inverted.")
        else:
            # The feature stage and the DICOM header name what the film likely is: that is the headline.
            st.error(escape_markdown(reason), icon=":material/block:")
            st.caption("Upload a frontal chest X-ray (PA or AP) of a young child, upright and not inverted.")
        with st.expander("For model developers: what the model would have said"):
            probability = decision.class_probabilities.get(class_names[-1], decision.probability)
            st.caption(f"{decision.label} (P({class_names[-1]}) = {probability:.3f}); out-of-distribution score {result.verdict.ood_score:.2f}, refused above 1.")


def _show_gradcam(ensemble: Any, result: ImageResult, decision: Decision, alpha: float) -> None:
    """Draws the Grad-CAM overlay of the predicted class, or why it is unavailable."""
    try:
        overlay = overlay_jpeg(ensemble, result, decision.class_index, alpha)
    except Exception as error:  # Grad-CAM is an extra: its failure must not hide the prediction.
        LOGGER.exception("Grad-CAM failed for %s", result.name)
        st.caption(f"Grad-CAM unavailable for this model ({type(error).__name__}).")
        return
    st.image(overlay, caption=f"Grad-CAM: evidence for {decision.label}", width="stretch")


def _show_decision(decision: Decision, class_names: Sequence[str], result: ImageResult, index: int) -> None:
    """Draws the predicted class, its probability and spread, and the per-fold strip."""
    positive = len(class_names) == 2 and decision.class_index == 1
    color = "red" if positive or (len(class_names) > 2 and decision.class_index > 0) else "green"
    st.markdown(f"### :{color}[{decision.label.capitalize()}]")
    st.markdown(headline(decision, class_names))
    if decision.threshold is not None:
        st.caption(f"P({class_names[1]}) = {decision.probability:.3f}; threshold {decision.threshold:.3f}")
    if result.true_label is not None:
        mark = "✅ matches" if result.true_label == decision.label else "❌ differs"
        where = "synthetic" if result.source == "demo" else "from its folder"
        st.caption(f"True class ({where}): **{result.true_label}** · {mark}")
    if len(decision.per_fold) > 1 and decision.spread > 0.15:
        who = "members" if decision.unit == "member" else "fold models"
        st.caption(f"⚠️ The {who} disagree strongly on this image: treat the prediction as uncertain.")
    st.plotly_chart(
        figures.fold_strip_figure(decision, class_names), key=f"predict_strip_{index}", config={"displayModeBar": False}
    )
    if len(class_names) > 2:
        st.plotly_chart(
            figures.class_probability_figure(decision, class_names),
            key=f"predict_classes_{index}",
            config={"displayModeBar": False},
        )


def load_ensemble_ui(store: RunStore, run: Run, folds: Sequence[int]):
    """Loads a run's fold ensemble (cached) with a spinner; on failure shows why and returns None."""
    try:
        what = f"{len(folds)} member runs" if run.kind == "ensemble" else f"{len(folds)} fold model(s)"
        with st.spinner(f"Loading the {what} of {run.name} (once per run) ..."):
            return load_ensemble_cached(store, run)
    except (RunNotFoundError, ValueError, OSError) as error:
        st.error(f"Cannot load the models of {run.name}: {error}")
    except Exception as error:  # A corrupt .keras file must not show a traceback.
        LOGGER.exception("Loading the ensemble of %s failed", run.id)
        st.error(
            f"Cannot load the models of {run.name} ({type(error).__name__}). "
            "The model files may be damaged; re-run training."
        )
    return None


def results_ui(ensemble: Any, run: Run, store: RunStore, items: Sequence[ImageInput], threshold: float | None, gradcam) -> None:
    """Predicts the files (reusing this session's results) and draws the batch table and one card per file."""
    run_key = (str(store.root), run.id, models_signature(run))
    results = process_all(ensemble, run_key, items)
    failed = [result for result in results if not result.ok]
    st.subheader(f"Results ({len(results)} image{'s' if len(results) != 1 else ''})")
    if failed:
        st.warning(
            f"{len(failed)} of {len(results)} file(s) could not be used; "
            "their reasons are in the table and cards below."
        )
    refused = [result for result in results if result.ok and result.refused]
    if refused:
        st.warning(
            f"{len(refused)} of {len(results)} image(s) do not look like the frontal chest X-rays this model learned from: "
            "they get no diagnosis.",
            icon=":material/block:",
        )
    if ensemble.gate is None:
        st.caption(f"Unchecked: {escape_markdown(ensemble.gate_note)}")
    show_batch_table(results, list(ensemble.class_names), threshold, run.id, ensemble.scale)
    for index, result in enumerate(results[:CARD_LIMIT]):
        show_card(ensemble, result, threshold, gradcam, index)
    if len(results) > CARD_LIMIT:
        st.caption(f"Showing the first {CARD_LIMIT} cards; the table above lists all {len(results)} files.")
