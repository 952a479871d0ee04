"""What every decoder shares: the one-line decode error, the pixel-count limit, and scaling any numbers to uint8."""

from __future__ import annotations

import re

import numpy as np

MAX_IMAGE_PIXELS = 50_000_000


class ImageDecodeError(ValueError):
    """An input file cannot be turned into an image; str() is a one-line reason for a user."""

    def __init__(self, reason: str):
        super().__init__(one_line(reason))

    @property
    def reason(self) -> str:
        """Returns the one-line reason."""
        return str(self)



def one_line(text: str, limit: int = 300) -> str:
    """Collapses whitespace so that a message always fits on one line."""
    line = re.sub(r"\s+", " ", str(text)).strip()
    return line if len(line) <= limit else line[: limit - 1] + "…"



def too_large_reason(width: int, height: int) -> str:
    """Words the decompression-bomb refusal."""
    return (
        f"image too large: {width}×{height} px exceeds the "
        f"{MAX_IMAGE_PIXELS / 1e6:g} MP limit"
    )



def check_pixel_count(width: int, height: int) -> None:
    """Refuses images whose pixels would not fit the memory budget."""
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageDecodeError(too_large_reason(width, height))



def error_detail(error: Exception) -> str:
    """Turns a Pillow exception into a short lowercase detail for the reason."""
    text = one_line(str(error), limit=120)
    return text[:1].lower() + text[1:] if text else type(error).__name__



def scale_to_uint8(values: np.ndarray) -> np.ndarray:
    """Min-max scales numbers of any type to 0..255; a constant image becomes black."""
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(values.shape, dtype=np.uint8)
    low = values[finite].min()
    high = values[finite].max()
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = (np.where(finite, values, low) - low) * (255.0 / (high - low))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
