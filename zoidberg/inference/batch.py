"""The steps under the one prediction function (zoidberg.inference.scoring): decode as the run needs, then score in batches and gate."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from zoidberg.data.imaging import ImageDecodeError, decode_grayscale

LOGGER = logging.getLogger(__name__)


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
