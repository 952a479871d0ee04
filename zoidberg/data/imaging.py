"""Decodes JPEG, PNG and DICOM files (bytes, paths or uploads) to grayscale uint8 arrays."""

from __future__ import annotations

import io
import os
import re
import struct
import threading
import warnings
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps

MAX_IMAGE_PIXELS = 50_000_000
MAX_UPLOAD_BYTES = 50 * 1024 * 1024

# How many leading bytes sniffing looks at: enough for the DICOM preamble, an HTML
# head and the JPEG segments (EXIF, ICC) that usually come before the frame header.
SNIFF_BYTES = 64 * 1024

DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")

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

# JPEG start-of-frame markers carry the image size; C4 (DHT), C8 (JPG) and CC (DAC)
# share the range but are not frame headers.
_JPEG_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}

# Image.open under warnings.catch_warnings is serialized because catch_warnings swaps
# process-wide state: two threads entering it at once could leave the filters wrong.
_OPEN_LOCK = threading.Lock()

Source = Union[bytes, bytearray, memoryview, str, os.PathLike, BinaryIO]


class ImageDecodeError(ValueError):
    """An input file cannot be turned into an image; str() is a one-line reason for a user."""

    def __init__(self, reason: str):
        super().__init__(_one_line(reason))

    @property
    def reason(self) -> str:
        """Returns the one-line reason."""
        return str(self)


def _one_line(text: str, limit: int = 300) -> str:
    """Collapses whitespace so that a message always fits on one line."""
    line = re.sub(r"\s+", " ", str(text)).strip()
    return line if len(line) <= limit else line[: limit - 1] + "…"


# --------------------------------------------------------------------------- sniffing


def sniff_kind(data: bytes, name: str = "") -> str:
    """Guesses what a file is from its first bytes, using the name only as a hint.

    Args:
        data: The file's content, or at least its first few kilobytes.
        name: The file's name, used only to recognise DICOM files that lack the
            128-byte preamble and "DICM" marker.

    Returns:
        One of "jpeg", "png", "gif", "bmp", "tiff", "webp", "dicom" (decodable), or
        "empty", "html", "svg", "xml", "text", "pdf", "zip", "gzip", "unknown".
    """
    head = bytes(data[:SNIFF_BYTES])
    if not head:
        return "empty"
    if head[128:132] == b"DICM":
        return "dicom"
    image_kind = _sniff_image_signature(head)
    if image_kind:
        return image_kind
    if _has_dicom_suffix(name) and _looks_like_raw_dicom(head):
        return "dicom"
    return _sniff_document(head)


def _sniff_image_signature(head: bytes) -> str | None:
    """Returns the image format named by the file's magic number, if any."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:2] == b"BM" and len(head) >= 26:
        return "bmp"
    return None


def _looks_like_raw_dicom(head: bytes) -> bool:
    """Tells whether bytes look like a DICOM data set written without its preamble.

    Such files start directly with an element of group 0x0002 (file meta) or
    0x0008 (identification), little-endian.
    """
    if len(head) < 8:
        return False
    group = struct.unpack("<H", head[:2])[0]
    return group in (0x0002, 0x0008)


def _sniff_document(head: bytes) -> str:
    """Names the kind of a non-image file so that the user gets a useful reason."""
    if head.startswith(b"%PDF"):
        return "pdf"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    text = _as_text(head[:4096])
    if text is None:
        return "unknown"
    lowered = text.lstrip().lower()
    if lowered.startswith(("<!doctype html", "<html")) or re.search(r"<(html|head|body)[\s>]", lowered):
        return "html"
    if "<svg" in lowered:
        return "svg"
    if lowered.startswith("<?xml"):
        return "xml"
    return "text"


def _as_text(sample: bytes) -> str | None:
    """Decodes a byte sample as text, or returns None when it is binary."""
    for bom, encoding in ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be")):
        if sample.startswith(bom):
            return sample[len(bom) :].decode(encoding, errors="replace")
    if b"\x00" in sample:
        return None
    text = sample.decode("utf-8", errors="replace")
    printable = sum(character.isprintable() or character in "\r\n\t" for character in text)
    return text if printable >= 0.95 * len(text) else None


def _has_dicom_suffix(name: str | os.PathLike) -> bool:
    """Tells whether a file name ends with a DICOM extension."""
    return str(name).lower().endswith(DICOM_SUFFIXES)


def header_size(head: bytes) -> tuple[int, int] | None:
    """Reads (width, height) from a PNG or JPEG header without decoding pixels.

    Args:
        head: The first bytes of the file (the JPEG frame header must be among them).

    Returns:
        (width, height), or None when the format is not PNG/JPEG or the size is not
        within `head`.
    """
    if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR" and len(head) >= 24:
        return struct.unpack(">II", head[16:24])
    if head.startswith(b"\xff\xd8"):
        return _jpeg_header_size(head)
    return None


def _jpeg_header_size(head: bytes) -> tuple[int, int] | None:
    """Walks JPEG segments up to the start-of-frame marker and reads the size there."""
    offset = 2
    while offset + 9 <= len(head):
        if head[offset] != 0xFF:
            return None
        marker = head[offset + 1]
        if marker == 0xFF:
            # Fill bytes may pad a marker; skip one and look again.
            offset += 1
            continue
        if marker in _JPEG_SOF_MARKERS:
            height, width = struct.unpack(">HH", head[offset + 5 : offset + 9])
            return width, height
        if marker in (0x01, *range(0xD0, 0xD8)):
            offset += 2
            continue
        segment_length = struct.unpack(">H", head[offset + 2 : offset + 4])[0]
        offset += 2 + segment_length
    return None


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
        return Image.fromarray(_decode_dicom(stream, force=head[128:132] != b"DICM"))
    if kind in PILLOW_FORMATS:
        return _decode_with_pillow(stream, head, kind, draft_size=draft_size)
    if _has_dicom_suffix(name) and kind != "empty":
        reason = _NOT_AN_IMAGE_REASONS.get(kind, "")
        detail = reason.split(": ", 1)[1] if reason.startswith("not an image: ") else "no DICM marker at byte 128"
        raise ImageDecodeError(f"not a DICOM file: {detail}")
    raise ImageDecodeError(_NOT_AN_IMAGE_REASONS.get(kind, _NOT_AN_IMAGE_REASONS["unknown"]))


# --------------------------------------------------------------------------- Pillow


def _too_large_reason(width: int, height: int) -> str:
    """Words the decompression-bomb refusal."""
    return (
        f"image too large: {width}×{height} px exceeds the "
        f"{MAX_IMAGE_PIXELS / 1e6:g} MP limit"
    )


def _check_pixel_count(width: int, height: int) -> None:
    """Refuses images whose pixels would not fit the memory budget."""
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageDecodeError(_too_large_reason(width, height))


def _decode_with_pillow(stream: BinaryIO, head: bytes, kind: str, *, draft_size: int | None) -> Image.Image:
    """Opens, checks the size of, and decodes a JPEG/PNG/GIF/BMP/TIFF/WebP stream."""
    label = _FORMAT_LABELS[kind]
    declared_size = header_size(head)
    if declared_size is not None:
        # Refused from the header bytes alone, before Pillow parses anything.
        _check_pixel_count(*declared_size)
    image = _open_with_pillow(stream, kind, label, declared_size)
    try:
        _check_pixel_count(*image.size)
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
        raise ImageDecodeError(f"truncated or corrupt {label}: {_pillow_detail(error)}") from error


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
            raise ImageDecodeError(_too_large_reason(*declared_size)) from error
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


def _pillow_detail(error: Exception) -> str:
    """Turns a Pillow exception into a short lowercase detail for the reason."""
    text = _one_line(str(error), limit=120)
    return text[:1].lower() + text[1:] if text else type(error).__name__


def _to_gray(image: Image.Image) -> Image.Image:
    """Converts a loaded Pillow image of any mode to mode "L"."""
    if image.mode == "L":
        return image
    if image.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        return Image.fromarray(_scale_to_uint8(np.asarray(image)))
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


def _scale_to_uint8(values: np.ndarray) -> np.ndarray:
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


# --------------------------------------------------------------------------- DICOM


def _decode_dicom(stream: BinaryIO, *, force: bool) -> np.ndarray:
    """Reads a DICOM stream and returns its first frame as display-ready uint8."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        dataset = pydicom.dcmread(stream, force=force)
    except InvalidDicomError as error:
        raise ImageDecodeError("not a DICOM file: no DICM marker at byte 128") from error
    except Exception as error:
        raise ImageDecodeError(f"truncated or corrupt DICOM: {_pillow_detail(error)}") from error
    try:
        return _dataset_to_display(dataset)
    except ImageDecodeError:
        raise
    except Exception as error:
        # pydicom parses elements lazily, so a malformed value surfaces only here.
        raise ImageDecodeError(f"corrupt DICOM: {_pillow_detail(error)}") from error


def _dataset_to_display(dataset) -> np.ndarray:
    """Checks a parsed data set, decodes its first frame and maps it to display uint8."""
    if not any(keyword in dataset for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise ImageDecodeError("DICOM has no pixel data")
    _check_pixel_count(int(dataset.get("Columns", 0) or 0), int(dataset.get("Rows", 0) or 0))
    _ensure_transfer_syntax(dataset)
    pixels = _dicom_first_frame(dataset)
    return _dicom_to_display(pixels, dataset)


def _ensure_transfer_syntax(dataset) -> None:
    """Fills in the Transfer Syntax UID of a data set read without file meta.

    Old or preamble-less files often lack it; pydicom then knows the encoding it
    actually read, which for uncompressed pixels is all the decoder needs.
    """
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    file_meta = getattr(dataset, "file_meta", None)
    if file_meta is not None and "TransferSyntaxUID" in file_meta:
        return
    if file_meta is None:
        dataset.file_meta = file_meta = FileMetaDataset()
    implicit, little_endian = getattr(dataset, "original_encoding", (True, True))
    if implicit:
        file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    else:
        file_meta.TransferSyntaxUID = ExplicitVRLittleEndian if little_endian else ExplicitVRBigEndian


def _dicom_first_frame(dataset) -> np.ndarray:
    """Decodes the first frame's stored values as a 2-D (or RGB 3-D) array."""
    from pydicom.pixels import pixel_array

    try:
        frames = int(dataset.get("NumberOfFrames", 1) or 1)
        pixels = pixel_array(dataset, index=0) if frames > 1 else dataset.pixel_array
    except (NotImplementedError, RuntimeError) as error:
        syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
        syntax_name = getattr(syntax, "name", None) or "this transfer syntax"
        raise ImageDecodeError(f"unsupported DICOM compression: {syntax_name}") from error
    except Exception as error:
        raise ImageDecodeError(f"truncated or corrupt DICOM pixel data: {_pillow_detail(error)}") from error
    if str(dataset.get("PhotometricInterpretation", "")).strip().upper() == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        pixels = apply_color_lut(pixels, dataset)
    if pixels.ndim == 3 and pixels.shape[-1] in (3, 4):
        # Colour DICOM (secondary captures): luminance, as Pillow's convert("L") does.
        pixels = pixels[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    elif pixels.ndim != 2:
        raise ImageDecodeError(f"unsupported DICOM pixel layout: shape {pixels.shape}")
    return pixels


def _dicom_to_display(pixels: np.ndarray, dataset) -> np.ndarray:
    """Applies rescale, VOI LUT or window, and MONOCHROME1 inversion; returns uint8."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    is_monochrome = photometric.startswith("MONOCHROME")
    try:
        values = apply_modality_lut(pixels, dataset) if is_monochrome else pixels
        if is_monochrome and "VOILUTSequence" in dataset:
            display = _scale_to_uint8(apply_voi_lut(values, dataset, prefer_lut=True))
        elif is_monochrome:
            display = _window(values, dataset)
            if display is None:
                display = _scale_to_uint8(values)
        else:
            display = _colour_to_uint8(values)
    except ImageDecodeError:
        raise
    except Exception as error:
        raise ImageDecodeError(f"corrupt DICOM lookup table or rescale: {_pillow_detail(error)}") from error
    if photometric == "MONOCHROME1":
        # MONOCHROME1 stores bone as low values; invert so that bone is bright.
        display = 255 - display
    return display


def _colour_to_uint8(luminance: np.ndarray) -> np.ndarray:
    """Keeps 8-bit colour luminance as it is; min-max scales deeper colour data."""
    if luminance.size and luminance.min() >= 0 and luminance.max() <= 255:
        return np.rint(luminance).astype(np.uint8)
    return _scale_to_uint8(luminance)


def _window(values: np.ndarray, dataset) -> np.ndarray | None:
    """Applies the first Window Center/Width (DICOM PS3.3 C.11.2.1.2) mapped to 0..255.

    Returns:
        The windowed uint8 image, or None when the data set has no usable window.
    """
    center = _first_number(dataset.get("WindowCenter"))
    width = _first_number(dataset.get("WindowWidth"))
    if center is None or width is None or width < 1:
        return None
    function = str(dataset.get("VOILUTFunction", "LINEAR")).strip().upper()
    values = np.asarray(values, dtype=np.float64)
    if function == "SIGMOID":
        scaled = 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    elif function == "LINEAR_EXACT":
        scaled = (values - center) / width + 0.5
    else:
        if width < 2:
            return None
        scaled = (values - (center - 0.5)) / (width - 1) + 0.5
    return np.clip(np.rint(scaled * 255.0), 0, 255).astype(np.uint8)


def _first_number(value) -> float | None:
    """Returns the first value of a possibly multi-valued DICOM number, or None."""
    from pydicom.multival import MultiValue

    if isinstance(value, (list, tuple, MultiValue)):
        value = value[0] if len(value) else None
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def downscale(gray: np.ndarray, max_side: int) -> np.ndarray:
    """Shrinks a grayscale image so that its long side is at most `max_side`, keeping its aspect."""
    height, width = gray.shape
    scale = max_side / max(height, width)
    if scale >= 1:
        return gray
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(gray).resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0))
