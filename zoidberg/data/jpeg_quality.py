"""The JPEG quality films were stored at, read from their quantization tables, and a round trip through it."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

# The IJG standard luminance quantization table (JPEG Annex K), in natural order, as Pillow gives tables.
STANDARD_LUMINANCE = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
])
# Files read to tell a folder's quality: enough to see past an odd file, few enough to cost nothing.
SAMPLE_FILES = 64


def _table_at(quality: int) -> np.ndarray:
    scale = 5000 / quality if quality < 50 else 200 - 2 * quality
    return np.clip((STANDARD_LUMINANCE * scale + 50) // 100, 1, 255)


def jpeg_quality(path: str | Path) -> int | None:
    """The IJG quality (1–100) whose luminance table is closest to a JPEG file's, or None for a file that is not a JPEG."""
    try:
        with Image.open(path) as image:
            if image.format != "JPEG" or not getattr(image, "quantization", None):
                return None
            table = np.asarray(image.quantization[0], dtype=float)
    except (OSError, ValueError):
        return None
    if table.size != 64:
        return None
    return int(min(range(1, 101), key=lambda quality: (np.abs(_table_at(quality) - table).sum(), -quality)))


def stored_quality(paths: Sequence[str | Path]) -> int:
    """The median JPEG quality of a sample of files, or 0 when fewer than half of them are JPEGs."""
    step = max(1, len(paths) // SAMPLE_FILES)
    sample = list(paths)[::step][:SAMPLE_FILES]
    qualities = [quality for quality in (jpeg_quality(path) for path in sample) if quality is not None]
    if not sample or len(qualities) * 2 < len(sample):
        return 0
    return int(np.median(qualities))


def jpeg_round_trip(image: np.ndarray, quality: int) -> np.ndarray:
    """A uint8 grayscale image encoded as JPEG at a quality and decoded again, as a film stored that way looks."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, "JPEG", quality=int(quality))
    with Image.open(io.BytesIO(buffer.getvalue())) as decoded:
        return np.asarray(decoded.convert("L"))
