"""Generators of test images: odd-but-valid files and a corpus of corrupt or hostile ones."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
from PIL import Image

# Fixed UIDs keep the generated DICOM files byte-identical from run to run.
_UID_ROOT = "1.2.826.0.1.3680043.10.1234"
_DIGITAL_XRAY_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"


class BadCase(NamedTuple):
    """A file that decoding must refuse with a one-line reason."""

    filename: str
    make: Callable[[], bytes]
    reason: str  # A substring of str(ImageDecodeError).


class OddValidCase(NamedTuple):
    """A valid but unusual file, and what its decoded grayscale array must look like."""

    filename: str
    make: Callable[[], bytes]
    shape: tuple[int, int]  # (height, width) after decoding and EXIF rotation.
    check: Callable[[np.ndarray], None] | None  # Asserts on the decoded array.


# --------------------------------------------------------------------------- building blocks


def gradient(height: int, width: int, high: int = 255, dtype=np.uint8) -> np.ndarray:
    """Returns a left-to-right ramp from 0 to `high`, the same on every row.

    Args:
        height: Rows.
        width: Columns.
        high: Value of the last column.
        dtype: Array type.

    Returns:
        Array of shape (height, width).
    """
    row = np.linspace(0, high, width).round().astype(dtype)
    return np.repeat(row[None, :], height, axis=0)


def encode(image: Image.Image, format: str, **options) -> bytes:
    """Saves a Pillow image to bytes.

    Args:
        image: Image to save.
        format: Pillow format name ("PNG", "JPEG", ...).
        **options: Saving options such as quality or exif.

    Returns:
        The encoded file.
    """
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def jpeg_bytes(pixels: np.ndarray, quality: int = 90, **options) -> bytes:
    """Encodes a uint8 array (2-D gray or H×W×3 RGB) as JPEG."""
    return encode(Image.fromarray(pixels), "JPEG", quality=quality, **options)


def png_bytes(pixels: np.ndarray) -> bytes:
    """Encodes a uint8 or uint16 2-D array (or uint8 RGB/RGBA) as PNG."""
    return encode(Image.fromarray(pixels), "PNG")


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """Builds one PNG chunk: length, type, data and the CRC of type + data."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def xray_like(height: int = 96, width: int = 80, seed: int = 0) -> np.ndarray:
    """Returns a small chest-X-ray-like uint8 image (dark lungs, bright spine), fast.

    Args:
        height: Rows.
        width: Columns.
        seed: Seed of the noise.

    Returns:
        uint8 array of shape (height, width).
    """
    y, x = np.mgrid[-1 : 1 : height * 1j, -1 : 1 : width * 1j]
    body = (x / 0.9) ** 2 + (y / 1.1) ** 2 < 1.0
    lungs = (((np.abs(x) - 0.4) / 0.25) ** 2 + (y / 0.6) ** 2) < 1.0
    spine = np.abs(x) < 0.1
    image = 20 + 120 * body - 70 * lungs + 80 * spine
    noise = np.random.default_rng(seed).normal(0, 6, size=image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def big_jpeg_bytes(width: int = 2400, height: int = 2000, seed: int = 0) -> bytes:
    """Returns a large full-resolution-like JPEG (smooth anatomy plus grain).

    Args:
        width: Columns.
        height: Rows.
        seed: Seed of the grain.

    Returns:
        The JPEG file, grayscale, quality 90.
    """
    small = Image.fromarray(xray_like(height // 8, width // 8, seed))
    smooth = np.asarray(small.resize((width, height), Image.Resampling.BICUBIC), dtype=np.int16)
    grain = np.random.default_rng(seed).integers(-4, 5, size=(height, width), dtype=np.int16)
    return jpeg_bytes(np.clip(smooth + grain, 0, 255).astype(np.uint8))


# --------------------------------------------------------------------------- DICOM


def dicom_bytes(
    pixels: np.ndarray | None,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    window: tuple[float, float] | None = None,
    rescale: tuple[float, float] | None = None,
    tags: dict | None = None,
) -> bytes:
    """Builds a DICOM Part 10 file (Explicit VR Little Endian) in memory.

    Args:
        pixels: uint8 or uint16 array (see `_set_pixels` for shapes), or None for a
            file without pixel data.
        photometric: "MONOCHROME1", "MONOCHROME2" or "RGB".
        bits_stored: Bits Stored; defaults to the array's bit depth.
        window: (center, width) to store as Window Center/Width.
        rescale: (slope, intercept) to store as Rescale Slope/Intercept.
        tags: More attributes by keyword (Modality, ViewPosition, PatientAge ...); they win.

    Returns:
        The file, with 128-byte preamble and "DICM" marker.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.filewriter import dcmwrite
    from pydicom.uid import ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = _DIGITAL_XRAY_STORAGE
    meta.MediaStorageSOPInstanceUID = f"{_UID_ROOT}.1"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = _DIGITAL_XRAY_STORAGE
    dataset.SOPInstanceUID = f"{_UID_ROOT}.1"
    dataset.StudyInstanceUID = f"{_UID_ROOT}.2"
    dataset.SeriesInstanceUID = f"{_UID_ROOT}.3"
    dataset.Modality = "DX"
    dataset.PatientName = "Synthetic^Test"
    dataset.PatientID = "TEST-0001"
    if pixels is not None:
        _set_pixels(dataset, pixels, photometric, bits_stored)
    if window is not None:
        dataset.WindowCenter, dataset.WindowWidth = window
    if rescale is not None:
        dataset.RescaleSlope, dataset.RescaleIntercept = rescale
    for keyword, value in (tags or {}).items():
        setattr(dataset, keyword, value)
    buffer = io.BytesIO()
    dcmwrite(buffer, dataset, enforce_file_format=True)
    return buffer.getvalue()


def _set_pixels(dataset, pixels: np.ndarray, photometric: str, bits_stored: int | None) -> None:
    """Stores a native (uncompressed) array and its Image Pixel module.

    `pixels` is (rows, columns) gray, (rows, columns, 3) when `photometric` is "RGB",
    or (frames, rows, columns) gray for a multi-frame file.
    """
    bits_allocated = 8 if pixels.dtype == np.uint8 else 16
    if photometric == "RGB":
        dataset.Rows, dataset.Columns = pixels.shape[:2]
        dataset.SamplesPerPixel = 3
        dataset.PlanarConfiguration = 0
    else:
        if pixels.ndim == 3:
            dataset.NumberOfFrames = pixels.shape[0]
        dataset.Rows, dataset.Columns = pixels.shape[-2:]
        dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = photometric
    dataset.BitsAllocated = bits_allocated
    dataset.BitsStored = bits_stored or bits_allocated
    dataset.HighBit = dataset.BitsStored - 1
    dataset.PixelRepresentation = 0
    dataset.PixelData = pixels.astype(f"<u{bits_allocated // 8}").tobytes()


# --------------------------------------------------------------------------- bad files


def truncated_jpeg() -> bytes:
    """Returns the first half of a valid noisy JPEG: header intact, scan cut."""
    pixels = np.random.default_rng(1).integers(0, 256, size=(256, 256), dtype=np.uint8)
    data = jpeg_bytes(pixels)
    return data[: len(data) // 2]


def truncated_png() -> bytes:
    """Returns the first half of a valid noisy PNG."""
    pixels = np.random.default_rng(2).integers(0, 256, size=(128, 128), dtype=np.uint8)
    data = png_bytes(pixels)
    return data[: len(data) // 2]


def text_bytes() -> bytes:
    """Returns plain text, as when notes are saved with an image extension."""
    return b"Patient notes\nRight lower lobe opacity, follow-up in two weeks.\n" * 4


def html_bytes() -> bytes:
    """Returns an HTML page, as when a browser saves a viewer page instead of the image."""
    return (
        b"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>chest.jpeg</title>"
        b"</head><body><img src=\"chest.jpeg\"></body></html>\n"
    )


def png_bomb_bytes(width: int = 60_000, height: int = 60_000) -> bytes:
    """Returns a tiny PNG whose IHDR claims a huge size (a decompression bomb).

    Args:
        width: Claimed width.
        height: Claimed height.

    Returns:
        A well-formed PNG (correct CRCs) of about 60 bytes.
    """
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + png_chunk(b"IEND", b"")
    )


def gif_bomb_bytes(width: int = 60_000, height: int = 60_000) -> bytes:
    """Returns a tiny GIF whose screen claims a huge size; Pillow itself refuses it."""
    screen = struct.pack("<HHBBB", width, height, 0x80, 0, 0)  # Global 2-colour palette.
    palette = b"\x00\x00\x00\xff\xff\xff"
    descriptor = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0)
    pixels = b"\x02\x02\x44\x01\x00"  # A minimal LZW stream.
    return b"GIF89a" + screen + palette + descriptor + pixels + b"\x3b"


def gif_over_limit_bytes() -> bytes:
    """Returns a tiny GIF of 8000×8000 px: below Pillow's own limit, above ours."""
    return gif_bomb_bytes(8_000, 8_000)


def not_dicom_bytes() -> bytes:
    """Returns binary junk, as a .dcm file that is really something else."""
    return b"\x13\x37NOTDICOM" + np.random.default_rng(3).integers(0, 256, size=600, dtype=np.uint8).tobytes()


def random_binary_bytes() -> bytes:
    """Returns random bytes with no known signature."""
    return b"\x13\x37" + np.random.default_rng(4).integers(0, 256, size=2000, dtype=np.uint8).tobytes()


def dicom_without_pixels() -> bytes:
    """Returns a valid DICOM file (a structured report, say) that has no Pixel Data."""
    return dicom_bytes(None)


def truncated_dicom() -> bytes:
    """Returns a 12-bit DICOM whose pixel data lacks its last 100 bytes."""
    data = dicom_bytes(gradient(64, 64, high=4000, dtype=np.uint16), bits_stored=12)
    return data[:-100]


BAD_CASES: dict[str, BadCase] = {
    "zero_bytes": BadCase("empty.jpeg", lambda: b"", "empty file (0 bytes)"),
    "zero_bytes_dcm": BadCase("empty.dcm", lambda: b"", "empty file (0 bytes)"),
    "truncated_jpeg": BadCase("truncated.jpeg", truncated_jpeg, "truncated or corrupt JPEG"),
    "truncated_png": BadCase("truncated.png", truncated_png, "truncated or corrupt PNG"),
    "text_named_jpg": BadCase("notes.jpg", text_bytes, "looks like a text file"),
    "html_page": BadCase("chest.jpeg", html_bytes, "looks like HTML"),
    "png_bomb_60000": BadCase("bomb.png", png_bomb_bytes, "image too large: 60000×60000 px"),
    "gif_bomb_60000": BadCase("bomb.gif", gif_bomb_bytes, "image too large"),
    "gif_8000_over_limit": BadCase("big.gif", gif_over_limit_bytes, "image too large: 8000×8000 px"),
    "random_binary": BadCase("scan.jpeg", random_binary_bytes, "not a recognized image"),
    "dicom_without_pixels": BadCase("report.dcm", dicom_without_pixels, "DICOM has no pixel data"),
    "truncated_dicom": BadCase("cut.dcm", truncated_dicom, "truncated or corrupt DICOM"),
    "not_dicom_named_dcm": BadCase("scan.dcm", not_dicom_bytes, "not a DICOM file"),
    "text_named_dcm": BadCase("scan.dcm", text_bytes, "not a DICOM file"),
}


# --------------------------------------------------------------------------- odd valid files


def gray16_png() -> bytes:
    """Returns a 16-bit PNG with 12-bit data (0..4095), as detector exports often are."""
    return png_bytes(gradient(40, 64, high=4095, dtype=np.uint16))


def cmyk_jpeg() -> bytes:
    """Returns a CMYK JPEG: left half white (no ink), right half black (full K)."""
    cmyk = np.zeros((40, 64, 4), dtype=np.uint8)
    cmyk[:, 32:, 3] = 255
    return encode(_cmyk_image(cmyk), "JPEG", quality=95)


def _cmyk_image(cmyk: np.ndarray) -> Image.Image:
    """Builds a CMYK Pillow image from an H×W×4 array."""
    return Image.frombytes("CMYK", (cmyk.shape[1], cmyk.shape[0]), cmyk.tobytes())


def rgba_png() -> bytes:
    """Returns an RGBA PNG: opaque gray ramp on the left, transparent white on the right."""
    rgba = np.zeros((40, 64, 4), dtype=np.uint8)
    rgba[..., :3] = 255
    rgba[:, :32, :3] = 200
    rgba[:, :32, 3] = 255
    return png_bytes(rgba)


def la_png() -> bytes:
    """Returns a gray+alpha PNG: opaque bright top half, transparent bottom half."""
    la = np.full((40, 64, 2), 220, dtype=np.uint8)
    la[20:, :, 1] = 0
    return encode(Image.frombytes("LA", (64, 40), la.tobytes()), "PNG")


def palette_png() -> bytes:
    """Returns a palette (P mode) PNG of a dark-to-bright ramp."""
    return encode(Image.fromarray(gradient(40, 64)).convert("P"), "PNG")


def one_bit_png() -> bytes:
    """Returns a 1-bit PNG: left half black, right half white."""
    return encode(Image.fromarray(gradient(40, 64) > 127).convert("1"), "PNG")


def rgb_jpeg() -> bytes:
    """Returns an RGB JPEG of a gray chest-like image (R = G = B, as many exports)."""
    gray = xray_like(96, 80)
    return jpeg_bytes(np.stack([gray] * 3, axis=-1))


def exif_rotated_jpeg() -> bytes:
    """Returns a 64 wide × 40 tall JPEG tagged orientation 6 (display rotated 90° clockwise).

    A bright block sits at the stored top-left corner, which shows at the top-right.
    """
    pixels = np.full((40, 64), 30, dtype=np.uint8)
    pixels[:12, :12] = 240
    exif = Image.Exif()
    exif[0x0112] = 6
    return jpeg_bytes(pixels, quality=95, exif=exif.tobytes())


def one_pixel_png() -> bytes:
    """Returns a 1×1 gray PNG."""
    return png_bytes(np.array([[128]], dtype=np.uint8))


def strip_png() -> bytes:
    """Returns a 5 × 4000 px (rows × columns) ramp strip."""
    return png_bytes(gradient(5, 4000))


def png_named_jpg() -> bytes:
    """Returns a valid PNG (to be named .jpg)."""
    return png_bytes(xray_like())


def jpeg_named_dcm() -> bytes:
    """Returns a valid JPEG (to be named .dcm)."""
    return jpeg_bytes(xray_like())


def dicom_monochrome1() -> bytes:
    """Returns a MONOCHROME1 DICOM whose top half stores low values (bone: bright once shown)."""
    pixels = np.full((32, 48), 3000, dtype=np.uint16)
    pixels[:16] = 200
    return dicom_bytes(pixels, photometric="MONOCHROME1", bits_stored=12)


def dicom_16bit() -> bytes:
    """Returns a 16-bit MONOCHROME2 DICOM ramp 0..60000 with no window (min-max applies)."""
    return dicom_bytes(gradient(32, 64, high=60000, dtype=np.uint16), bits_stored=16)


def dicom_windowed() -> bytes:
    """Returns a 12-bit DICOM ramp with rescale and a window that clips both ends."""
    pixels = gradient(32, 100, high=4000, dtype=np.uint16)
    # Stored 0..4000 with slope 1 and intercept -1000 is -1000..3000; the window 1000±500
    # shows 500..1500, i.e. stored 1500..2500.
    return dicom_bytes(pixels, bits_stored=12, window=(1000, 1000), rescale=(1, -1000))


def dicom_8bit() -> bytes:
    """Returns an 8-bit MONOCHROME2 DICOM of a chest-like image."""
    return dicom_bytes(xray_like(48, 40), bits_stored=8)


def dicom_rgb() -> bytes:
    """Returns an 8-bit RGB DICOM (a secondary capture): white left half, black right half."""
    rgb = np.zeros((32, 48, 3), dtype=np.uint8)
    rgb[:, :24] = 255
    return dicom_bytes(rgb, photometric="RGB")


def dicom_multiframe() -> bytes:
    """Returns a 3-frame 16-bit DICOM whose first frame is a ramp and the others noise."""
    frames = np.random.default_rng(5).integers(0, 4096, size=(3, 32, 64), dtype=np.uint16)
    frames[0] = gradient(32, 64, high=4000, dtype=np.uint16)
    return dicom_bytes(frames, bits_stored=12)


def dicom_raw_no_preamble() -> bytes:
    """Returns an old-style DICOM: implicit VR data set with no preamble, marker or file meta."""
    from pydicom import dcmread
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    dataset = dcmread(io.BytesIO(dicom_8bit()))
    del dataset.file_meta
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = True
    write_dataset(buffer, dataset)
    return buffer.getvalue()


def _check_ramp(gray: np.ndarray) -> None:
    """Asserts a full-range left-to-right ramp: not clipped, not flat."""
    row = gray[gray.shape[0] // 2].astype(int)
    assert row[0] <= 2 and row[-1] >= 253, (row[0], row[-1])
    assert np.all(np.diff(row) >= -2), "ramp must increase left to right"
    assert len(np.unique(row)) > min(len(row), 256) // 2, "ramp must not be clipped to a few levels"


def _check_left_brighter(gray: np.ndarray) -> None:
    """Asserts the left half is clearly brighter than the right half."""
    width = gray.shape[1]
    assert gray[:, : width // 2 - 4].mean() > gray[:, width // 2 + 4 :].mean() + 100


def _check_top_brighter(gray: np.ndarray) -> None:
    """Asserts the top half is clearly brighter than the bottom half."""
    height = gray.shape[0]
    assert gray[: height // 2 - 2].mean() > gray[height // 2 + 2 :].mean() + 100


def _check_right_transparent_black(gray: np.ndarray) -> None:
    """Asserts transparent pixels came out black and opaque ones kept their gray."""
    assert abs(int(gray[:, :28].mean()) - 200) <= 3
    assert gray[:, 36:].max() <= 3


def _check_exif_rotation(gray: np.ndarray) -> None:
    """Asserts the bright block moved from the stored top-left to the top-right."""
    assert gray[:8, -8:].mean() > 200, "orientation 6 puts the stored top-left at the top-right"
    assert gray[:8, :8].mean() < 80


def _check_constant_128(gray: np.ndarray) -> None:
    """Asserts a 1×1 mid-gray pixel."""
    assert abs(int(gray[0, 0]) - 128) <= 1


def _check_dicom_ramp_windowed(gray: np.ndarray) -> None:
    """Asserts the window clipped the ramp's ends and stretched its middle."""
    row = gray[16].astype(int)
    assert row[:30].max() == 0 and row[70:].min() == 255, (row[:30].max(), row[70:].min())
    assert 100 <= row[50] <= 155


def _check_xray_like(gray: np.ndarray) -> None:
    """Asserts dark lungs beside a bright spine, as in xray_like()."""
    height, width = gray.shape
    spine = gray[height // 3 : 2 * height // 3, width // 2 - 1 : width // 2 + 1].mean()
    lung = gray[height // 2 - 3 : height // 2 + 3, int(width * 0.18) : int(width * 0.22)].mean()
    assert spine > lung + 60, (spine, lung)


ODD_VALID_CASES: dict[str, OddValidCase] = {
    "gray16_png": OddValidCase("gray16.png", gray16_png, (40, 64), _check_ramp),
    "cmyk_jpeg": OddValidCase("cmyk.jpeg", cmyk_jpeg, (40, 64), _check_left_brighter),
    "rgba_png": OddValidCase("rgba.png", rgba_png, (40, 64), _check_right_transparent_black),
    "la_png": OddValidCase("gray_alpha.png", la_png, (40, 64), _check_top_brighter),
    "palette_png": OddValidCase("palette.png", palette_png, (40, 64), _check_ramp),
    "one_bit_png": OddValidCase("one_bit.png", one_bit_png, (40, 64), lambda gray: _check_left_brighter(255 - gray)),
    "rgb_jpeg": OddValidCase("rgb.jpeg", rgb_jpeg, (96, 80), _check_xray_like),
    "exif_rotated_jpeg": OddValidCase("rotated.jpeg", exif_rotated_jpeg, (64, 40), _check_exif_rotation),
    "one_pixel_png": OddValidCase("pixel.png", one_pixel_png, (1, 1), _check_constant_128),
    "strip_5x4000_png": OddValidCase("strip.png", strip_png, (5, 4000), _check_ramp),
    "png_named_jpg": OddValidCase("actually_png.jpg", png_named_jpg, (96, 80), _check_xray_like),
    "jpeg_named_dcm": OddValidCase("actually_jpeg.dcm", jpeg_named_dcm, (96, 80), _check_xray_like),
    "dicom_monochrome1": OddValidCase("mono1.dcm", dicom_monochrome1, (32, 48), _check_top_brighter),
    "dicom_16bit": OddValidCase("ramp16.dcm", dicom_16bit, (32, 64), _check_ramp),
    "dicom_windowed": OddValidCase("windowed.dcm", dicom_windowed, (32, 100), _check_dicom_ramp_windowed),
    "dicom_8bit_no_extension": OddValidCase("IMG0001", dicom_8bit, (48, 40), _check_xray_like),
    "dicom_rgb": OddValidCase("colour.dcm", dicom_rgb, (32, 48), _check_left_brighter),
    "dicom_multiframe": OddValidCase("cine.dcm", dicom_multiframe, (32, 64), _check_ramp),
    "dicom_raw_no_preamble": OddValidCase("old.dcm", dicom_raw_no_preamble, (48, 40), _check_xray_like),
}


def write_case(directory: str | Path, filename: str, make: Callable[[], bytes]) -> Path:
    """Writes one corpus case to a folder (e.g. pytest's tmp_path).

    Args:
        directory: Folder to write into; created if missing.
        filename: The case's file name.
        make: The case's bytes factory.

    Returns:
        The written file's path.
    """
    path = Path(directory) / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(make())
    return path


def write_corpus(directory: str | Path, cases: dict[str, BadCase | OddValidCase]) -> dict[str, Path]:
    """Writes every case of a corpus to its own subfolder (names may repeat across cases).

    Args:
        directory: Folder to write into.
        cases: BAD_CASES or ODD_VALID_CASES (or a subset).

    Returns:
        {case name: written path}.
    """
    return {name: write_case(Path(directory) / name, case.filename, case.make) for name, case in cases.items()}
