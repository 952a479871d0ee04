"""What a file is, from its first bytes: image kind, document kinds that are not images, and a JPEG's or PNG's declared size."""

from __future__ import annotations

import os
import re
import struct

# How many leading bytes sniffing looks at: enough for the DICOM preamble, an HTML
# head and the JPEG segments (EXIF, ICC) that usually come before the frame header.
SNIFF_BYTES = 64 * 1024

DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")

# JPEG start-of-frame markers carry the image size; C4 (DHT), C8 (JPG) and CC (DAC)
# share the range but are not frame headers.
_JPEG_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


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
    if has_dicom_suffix(name) and looks_like_raw_dicom(head):
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



def looks_like_raw_dicom(head: bytes) -> bool:
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



def has_dicom_suffix(name: str | os.PathLike) -> bool:
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
