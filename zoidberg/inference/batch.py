"""The one prediction path of the CLI and the dashboard: decode as the run needs, score in batches, gate, one row per file."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from zoidberg.data.imaging import ImageDecodeError, decode_grayscale
from zoidberg.inference.gating import gate_fields

LOGGER = logging.getLogger(__name__)
# Decoded images held at once by predict_files: bounds memory on folders of thousands of files.
PREDICT_CHUNK = 256


def decode_for_run(source, *, name: str, image_size: int) -> tuple[np.ndarray | None, str | None]:
    """Decodes a file (path or bytes) as every prediction does: JPEG draft decoding at the run's size, then grayscale.

    Args:
        source: A path, or the file's bytes.
        name: The file's name, for messages and format sniffing.
        image_size: The run's (largest) input side: the draft never goes below it.

    Returns:
        (the decoded image, None), or (None, a one-line reason) for a file that cannot be used.
    """
    try:
        return decode_grayscale(source, name=name, draft_size=image_size), None
    except ImageDecodeError as error:
        return None, str(error)
    except OSError as error:
        return None, f"cannot read: {error.strerror or error}"
    except Exception as error:  # A decoder bug costs one file, never the batch.
        LOGGER.exception("Unexpected decoding failure for %s", name)
        return None, f"cannot read this file as an image ({type(error).__name__})"


@dataclass
class Scored:
    """What a run says of one decoded image, threshold-free.

    Attributes:
        model_input: The image resized as the run starts from it (Grad-CAM reads it again).
        prediction: The threshold-free Prediction, or None when scoring failed.
        verdict: The out-of-distribution gate's verdict, or None (no gate, or the gate failed).
        error: Why scoring failed, else None.
    """

    model_input: np.ndarray
    prediction: Any = None
    verdict: Any = None
    error: str | None = None


def score_decoded(ensemble, grays: Sequence[np.ndarray], *, headers: Sequence | None = None, tta: bool | None = None) -> list[Scored]:
    """Scores decoded images in one batched call, then gates them; one image that fails costs only itself.

    Args:
        ensemble: A loaded run (zoidberg.inference.loading.load_ensemble).
        grays: Decoded grayscale images (decode_for_run).
        headers: Each file's DicomFacts (None for a PNG or JPEG).
        tta: Test-time augmentation (default: the run's setting).

    Returns:
        One Scored per image, in order.
    """
    inputs = [ensemble.resized(gray) for gray in grays]
    try:
        predictions = ensemble.predictions_of(inputs, tta=tta)
    except Exception:  # One bad image never takes the others down: they are scored one by one.
        LOGGER.exception("Batched prediction failed; predicting one image at a time")
        predictions = None
    try:
        verdicts = ensemble.gate_verdicts(inputs, headers=list(headers) if headers is not None else None)
    except Exception:  # The gate's failure leaves the images unchecked, and each row says so.
        LOGGER.exception("The out-of-distribution gate failed")
        verdicts = [None] * len(inputs)
    scored = []
    for index, model_input in enumerate(inputs):
        item = Scored(model_input, verdict=verdicts[index])
        try:
            item.prediction = predictions[index] if predictions is not None else ensemble.probabilities(model_input, tta=tta)
        except Exception as error:
            LOGGER.exception("Prediction failed for image %d", index)
            item.error = f"prediction failed ({type(error).__name__}: {str(error)[:120]})"
        scored.append(item)
    return scored


def predict_files(
    ensemble, paths: Sequence, *, threshold: float | None = None, tta: bool | None = None, label_mode: str | None = None, progress=None
) -> list[dict]:
    """Predicts many image files in batches; a file that cannot be read costs only its own row.

    Args:
        ensemble: A loaded run.
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

    from zoidberg.data.dicom_facts import read_dicom_facts
    from zoidberg.data.files import label_from_path

    rows: list[dict] = []
    with ThreadPoolExecutor(max_workers=4) as pool:
        for start in range(0, len(paths), PREDICT_CHUNK):
            chunk = list(paths[start : start + PREDICT_CHUNK])
            decoded = list(pool.map(lambda path: decode_for_run(path, name=str(path), image_size=ensemble.image_size), chunk))
            good = [index for index, (gray, _) in enumerate(decoded) if gray is not None]
            scored = dict(zip(good, score_decoded(ensemble, [decoded[index][0] for index in good],
                                                  headers=[read_dicom_facts(chunk[index]) for index in good], tta=tta)))
            for index, path in enumerate(chunk):
                rows.append(_row(ensemble, path, decoded[index][1], scored.get(index), threshold, label_from_path(path, label_mode) if label_mode else None))
            if progress:
                progress(min(start + PREDICT_CHUNK, len(paths)), len(paths))
    return rows


def decided_row(ensemble, scored: Scored, threshold: float | None, **fields) -> dict:
    """A scored image's row: `fields` (file ...), then its decision at the threshold and the gate's fields, or its error.

    The one place a Scored becomes a row, for predict_files, a PACS study and the HTTP service.
    """
    if scored.error:
        return {**fields, "error": scored.error}
    return {**fields, **ensemble.decide(scored.prediction, threshold).to_dict(), **gate_fields(scored.verdict)}


def _row(ensemble, path, decode_error: str | None, scored: Scored | None, threshold: float | None, true_label: str | None) -> dict:
    """One file's row of predict_files."""
    fields: dict = {"file": str(path)}
    if true_label is not None:
        fields["true_label"] = true_label
    if scored is None:
        return {**fields, "error": decode_error}
    row = decided_row(ensemble, scored, threshold, **fields)
    if true_label is not None and "error" not in row:
        row["correct"] = row["label"] == true_label
    return row
