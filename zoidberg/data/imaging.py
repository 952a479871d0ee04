"""Decodes JPEG, PNG and DICOM files (bytes, paths or uploads) to grayscale uint8 arrays."""

from __future__ import annotations

import io
import os
import re
import threading
import warnings
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps

from zoidberg.data.dicom_decoding import decode_dicom
from zoidberg.data.pixels import MAX_IMAGE_PIXELS, ImageDecodeError, check_pixel_count, error_detail, scale_to_uint8, too_large_reason
from zoidberg.data.sniffing import SNIFF_BYTES, has_dicom_suffix, header_size, sniff_kind

MAX_UPLOAD_BYTES = 50 * 1024 * 1024

# Pillow formats that decode_grayscale accepts, by sniffed kind. Image.open is only
# ever given the one format that sniffing found, so that no other Pillow plugin (EPS
# through Ghostscript, for instance) can be reached through a crafted file.
PILLOW_FORMATS = {
    "jpeg": "JPEG",
    "png": "PNG",
    "gif": "GIF",
    "bmp": "BMP",
    "tiff": "TIFF",
    "webp": "WEBP",
}

_NOT_AN_IMAGE_REASONS = {
    "empty": "empty file (0 bytes)",
    "html": "not an image: looks like HTML (a web page saved instead of the image)",
    "svg": "not supported: SVG vector drawing; export it as PNG or JPEG",
    "xml": "not an image: looks like an XML document",
    "text": "not an image: looks like a text file",
    "pdf": "not an image: looks like a PDF document",
    "zip": "not an image: looks like a ZIP archive; extract the images first",
    "gzip": "not an image: looks like a gzip archive; extract the images first",
    "unknown": "not a recognized image: expected JPEG, PNG or DICOM",
}

_FORMAT_LABELS = {
    "jpeg": "JPEG",
    "png": "PNG",
    "gif": "GIF",
    "bmp": "BMP",
    "tiff": "TIFF",
    "webp": "WebP",
    "dicom": "DICOM",
}

# Image.open under warnings.catch_warnings is serialized because catch_warnings swaps
# process-wide state: two threads entering it at once could leave the filters wrong.
_OPEN_LOCK = threading.Lock()

Source = Union[bytes, bytearray, memoryview, str, os.PathLike, BinaryIO]


# --------------------------------------------------------------------------- reading


def read_source(source: Source, *, limit: int = MAX_UPLOAD_BYTES) -> tuple[bytes, str]:
    """Reads bytes from a bytes-like object or a binary file object (an upload).

    Args:
        source: bytes, bytearray, memoryview, or an object with `getvalue()` or `read()`
            (Streamlit's UploadedFile, an open file, io.BytesIO).
        limit: Largest accepted size in bytes.

    Returns:
        (data, name), where name is the object's `name` attribute or "".

    Raises:
        ImageDecodeError: The content is larger than `limit`.
    """
    name = str(getattr(source, "name", "") or "")
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif hasattr(source, "getvalue"):
        data = bytes(source.getvalue())
    else:
        if hasattr(source, "seekable") and source.seekable():
            # A file object that was read before (a preview, say) starts at its end.
            source.seek(0)
        data = source.read(limit + 1)
    _check_file_size(len(data), limit)
    return data, name


def _check_file_size(size: int, limit: int = MAX_UPLOAD_BYTES) -> None:
    """Refuses files above the upload limit before they are parsed."""
    if size > limit:
        raise ImageDecodeError(
            f"file too large: {size / 2**20:.1f} MB exceeds the {limit / 2**20:.0f} MB limit"
        )


def _is_path(source: object) -> bool:
    """Tells whether `source` names a file rather than holding its content."""
    return isinstance(source, (str, os.PathLike))


# --------------------------------------------------------------------------- public API


def decode_grayscale(
    source: Source,
    *,
    name: str = "",
    draft_size: int | None = None,
) -> np.ndarray:
    """Decodes a JPEG, PNG or DICOM file to a 2-D uint8 grayscale array.

    The format is sniffed from the content, so a PNG named .jpg decodes fine; the name
    only helps to recognise preamble-less DICOM files and to word error messages.
    Transparent pixels are composited on black, the background of a radiograph.
    Images of more than 8 bits (16-bit PNG, 32-bit TIFF) are min-max scaled to 0..255.
    DICOM pixels go through the modality LUT (rescale), then the VOI LUT or window
    (min-max when there is none), and MONOCHROME1 is inverted so that bone is bright.

    Args:
        source: File content (bytes), a path, or a binary file object such as an upload.
        name: File name for uploads given as bytes; defaults to the path's or object's name.
        draft_size: When set, a JPEG is decoded at a reduced DCT scale (1/2, 1/4, 1/8)
            that still keeps both sides at least `draft_size` pixels. Other formats
            ignore it.

    Returns:
        A C-contiguous uint8 array of shape (height, width).

    Raises:
        ImageDecodeError: The file is empty, not an image, corrupt, too large or unsupported.
    """
    return np.array(_decode_to_pillow(source, name=name, draft_size=draft_size))


RESIZE_MODES = ("stretch", "pad")
ENHANCEMENTS = ("none", "equalize", "clahe")
# CLAHE's clip limit (scikit-image's normalized scale): mild, so that bone and lung texture
# gain contrast without noise being amplified into structure.
CLAHE_CLIP_LIMIT = 0.01


def resize_square(gray: np.ndarray, image_size: int, mode: str = "stretch") -> np.ndarray:
    """Resizes a grayscale image to a square.

    "stretch" ignores the aspect ratio, as the Kaggle 224-pixel copy of the data set was
    made; "pad" scales the long side to the square and centres the image on black.
    Downsampling is antialiased (Pillow's bilinear filter widens with the scale factor)
    after a fast integer box reduction of large images.

    Args:
        gray: 2-D uint8 array, any shape from 1×1 up.
        image_size: Side of the output square in pixels.
        mode: "stretch" or "pad".

    Returns:
        uint8 array of shape (image_size, image_size).

    Raises:
        ValueError: `gray` is not a 2-D uint8 array, `image_size` is not positive, or the mode is unknown.
    """
    gray = np.asarray(gray)
    if gray.ndim != 2 or gray.dtype != np.uint8:
        raise ValueError(f"resize_square needs a 2-D uint8 array, not {gray.dtype} of shape {gray.shape}.")
    _check_image_size(image_size)
    if gray.shape == (image_size, image_size):
        return np.ascontiguousarray(gray)
    return np.array(_fit_square(Image.fromarray(np.ascontiguousarray(gray)), image_size, mode))


def _fit_square(image: Image.Image, image_size: int, mode: str) -> Image.Image:
    """Stretches or pads a Pillow image to image_size × image_size."""
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {', '.join(RESIZE_MODES)}, not {mode!r}.")
    if mode == "stretch" or image.size[0] == image.size[1]:
        return _resize_pillow(image, image_size)
    width, height = image.size
    scale = image_size / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0)
    canvas = Image.new("L", (image_size, image_size), 0)
    canvas.paste(resized, ((image_size - size[0]) // 2, (image_size - size[1]) // 2))
    return canvas


def enhance_contrast(gray: np.ndarray, method: str = "none") -> np.ndarray:
    """Equalizes a grayscale image's histogram ("equalize") or its local contrast ("clahe").

    Applied to the image at the model's size, after resizing, so that training, predict and
    evaluate give identical pixels whatever resolution the file had.

    Args:
        gray: 2-D uint8 array.
        method: "none", "equalize" (global histogram equalization) or "clahe"
            (contrast-limited adaptive histogram equalization, scikit-image).

    Returns:
        uint8 array of the same shape.
    """
    if method == "none":
        return gray
    if method not in ENHANCEMENTS:
        raise ValueError(f"enhance must be one of {', '.join(ENHANCEMENTS)}, not {method!r}.")
    from skimage import exposure

    if method == "equalize":
        values = exposure.equalize_hist(gray)
    else:
        values = exposure.equalize_adapthist(gray, clip_limit=CLAHE_CLIP_LIMIT)
    return np.clip(np.round(values * 255.0), 0, 255).astype(np.uint8)


def prepare_image(gray: np.ndarray, image_size: int, *, resize: str = "stretch", enhance: str = "none") -> np.ndarray:
    """The model's view of a decoded image: resized to the square, then enhanced, as in training."""
    return enhance_contrast(resize_square(gray, image_size, resize), enhance)


def load_image(source: Source, image_size: int, *, name: str = "", resize: str = "stretch", enhance: str = "none") -> np.ndarray:
    """Decodes a file, resizes it to a square and enhances it: the hot path of data set loading.

    JPEGs are decoded at a reduced DCT scale (see `decode_grayscale`'s `draft_size`)
    and the result stays a Pillow image until resized, which avoids full-size copies.

    Args:
        source: File content (bytes), a path, or a binary file object.
        image_size: Side of the output square in pixels.
        name: File name for uploads given as bytes.
        resize: "stretch" or "pad" (see resize_square).
        enhance: "none", "equalize" or "clahe" (see enhance_contrast).

    Returns:
        uint8 array of shape (image_size, image_size).

    Raises:
        ImageDecodeError: The file cannot be decoded (see `decode_grayscale`).
    """
    _check_image_size(image_size)
    image = _decode_to_pillow(source, name=name, draft_size=image_size)
    if image.size != (image_size, image_size):
        image = _fit_square(image, image_size, resize)
    return enhance_contrast(np.array(image), enhance)


def _check_image_size(image_size: int) -> None:
    """Rejects a non-positive output size, a programming error rather than bad input."""
    if not isinstance(image_size, (int, np.integer)) or image_size < 1:
        raise ValueError(f"image_size must be a positive number of pixels, not {image_size!r}.")


def _resize_pillow(image: Image.Image, image_size: int) -> Image.Image:
    """Resizes an "L" image to a square with antialiased bilinear resampling."""
    # reducing_gap=3 first box-averages by an integer factor (cheap) and leaves at least
    # 3x for the bilinear pass, which is indistinguishable from a full bilinear pass.
    return image.resize((image_size, image_size), Image.Resampling.BILINEAR, reducing_gap=3.0)


# --------------------------------------------------------------------------- dispatch


def _decode_to_pillow(source: Source, *, name: str, draft_size: int | None) -> Image.Image:
    """Decodes any accepted source to a loaded Pillow image of mode "L"."""
    if _is_path(source):
        return _decode_path(Path(source), name=name or os.fspath(source), draft_size=draft_size)
    data, object_name = read_source(source)
    return _decode_bytes(data, name=name or object_name, draft_size=draft_size)


def _decode_path(path: Path, *, name: str, draft_size: int | None) -> Image.Image:
    """Decodes a file on disk, reading it through one open handle."""
    try:
        handle = open(path, "rb")
    except OSError as error:
        raise ImageDecodeError(f"cannot read file: {error.strerror or error}") from error
    with handle:
        _check_file_size(os.fstat(handle.fileno()).st_size)
        head = handle.read(SNIFF_BYTES)
        handle.seek(0)
        return _decode_stream(handle, head, name=name, draft_size=draft_size)


def _decode_bytes(data: bytes, *, name: str, draft_size: int | None) -> Image.Image:
    """Decodes file content held in memory."""
    return _decode_stream(io.BytesIO(data), data[:SNIFF_BYTES], name=name, draft_size=draft_size)


def _decode_stream(stream: BinaryIO, head: bytes, *, name: str, draft_size: int | None) -> Image.Image:
    """Sniffs the content and hands the stream to the Pillow or the DICOM decoder."""
    kind = sniff_kind(head, name)
    if kind == "dicom":
        return Image.fromarray(decode_dicom(stream, force=head[128:132] != b"DICM"))
    if kind in PILLOW_FORMATS:
        return _decode_with_pillow(stream, head, kind, draft_size=draft_size)
    if has_dicom_suffix(name) and kind != "empty":
        reason = _NOT_AN_IMAGE_REASONS.get(kind, "")
        detail = reason.split(": ", 1)[1] if reason.startswith("not an image: ") else "no DICM marker at byte 128"
        raise ImageDecodeError(f"not a DICOM file: {detail}")
    raise ImageDecodeError(_NOT_AN_IMAGE_REASONS.get(kind, _NOT_AN_IMAGE_REASONS["unknown"]))


# --------------------------------------------------------------------------- Pillow


def _decode_with_pillow(stream: BinaryIO, head: bytes, kind: str, *, draft_size: int | None) -> Image.Image:
    """Opens, checks the size of, and decodes a JPEG/PNG/GIF/BMP/TIFF/WebP stream."""
    label = _FORMAT_LABELS[kind]
    declared_size = header_size(head)
    if declared_size is not None:
        # Refused from the header bytes alone, before Pillow parses anything.
        check_pixel_count(*declared_size)
    image = _open_with_pillow(stream, kind, label, declared_size)
    try:
        check_pixel_count(*image.size)
        if draft_size and image.format in ("JPEG", "MPO"):
            image.draft("L", (draft_size, draft_size))
        image.load()
        ImageOps.exif_transpose(image, in_place=True)
        return _to_gray(image)
    except ImageDecodeError:
        raise
    except Exception as error:
        # Pillow reports bad data with many exception types (OSError, SyntaxError,
        # ValueError, struct.error...); all of them mean the same thing to a user.
        raise ImageDecodeError(f"truncated or corrupt {label}: {error_detail(error)}") from error


def _open_with_pillow(
    stream: BinaryIO, kind: str, label: str, declared_size: tuple[int, int] | None
) -> Image.Image:
    """Runs Image.open (header only) and maps its failures to ImageDecodeError."""
    formats = (PILLOW_FORMATS[kind],)
    try:
        if not _pillow_may_warn(declared_size):
            return Image.open(stream, formats=formats)
        with _OPEN_LOCK, warnings.catch_warnings():
            # Pillow only warns between its limit and twice it; make that a refusal too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(stream, formats=formats)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        if declared_size is not None:
            raise ImageDecodeError(too_large_reason(*declared_size)) from error
        raise ImageDecodeError(_bomb_reason(str(error))) from error
    except Exception as error:
        raise ImageDecodeError(f"truncated or corrupt {label}: unreadable header") from error


def _pillow_may_warn(declared_size: tuple[int, int] | None) -> bool:
    """Tells whether Image.open might emit DecompressionBombWarning for this file.

    When the header size is known and within Pillow's limit, the warnings machinery
    is skipped: catch_warnings resets the warning registries (so "once" warnings of
    other code would show again) and needs the lock, both too costly for every file.
    """
    if declared_size is None:
        return True
    limit = Image.MAX_IMAGE_PIXELS
    return limit is not None and declared_size[0] * declared_size[1] > limit


def _bomb_reason(pillow_message: str) -> str:
    """Words Pillow's decompression-bomb refusal with the pixel count it names."""
    match = re.search(r"\((\d+) pixels\)", pillow_message)
    size = f"{int(match.group(1)) / 1e6:,.0f} MP " if match else ""
    return f"image too large: {size}exceeds the {MAX_IMAGE_PIXELS / 1e6:g} MP limit"


def _to_gray(image: Image.Image) -> Image.Image:
    """Converts a loaded Pillow image of any mode to mode "L"."""
    if image.mode == "L":
        return image
    if image.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        return Image.fromarray(scale_to_uint8(np.asarray(image)))
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("LA", "La", "PA", "RGBA", "RGBa"):
        return _composite_on_black(image)
    if image.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        image = image.convert("RGB")
    return image.convert("L")


def _composite_on_black(image: Image.Image) -> Image.Image:
    """Flattens an image with alpha onto black, the background of a radiograph."""
    gray_alpha = image.convert("LA") if image.mode in ("LA", "RGBA") else image.convert("RGBA").convert("LA")
    gray, alpha = gray_alpha.split()
    return Image.composite(gray, Image.new("L", gray.size, 0), alpha)


def downscale(gray: np.ndarray, max_side: int) -> np.ndarray:
    """Shrinks a grayscale image so that its long side is at most `max_side`, keeping its aspect."""
    height, width = gray.shape
    scale = max_side / max(height, width)
    if scale >= 1:
        return gray
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(gray).resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0))
