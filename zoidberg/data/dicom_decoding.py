"""DICOM to display pixels: the first frame, the modality LUT, the VOI LUT or window, MONOCHROME1 inverted (pydicom)."""

from __future__ import annotations

from typing import BinaryIO

import numpy as np

from zoidberg.data.pixels import ImageDecodeError, check_pixel_count, error_detail, scale_to_uint8


def decode_dicom(stream: BinaryIO, *, force: bool) -> np.ndarray:
    """Reads a DICOM stream and returns its first frame as display-ready uint8."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        dataset = pydicom.dcmread(stream, force=force)
    except InvalidDicomError as error:
        raise ImageDecodeError("not a DICOM file: no DICM marker at byte 128") from error
    except Exception as error:
        raise ImageDecodeError(f"truncated or corrupt DICOM: {error_detail(error)}") from error
    try:
        return _dataset_to_display(dataset)
    except ImageDecodeError:
        raise
    except Exception as error:
        # pydicom parses elements lazily, so a malformed value surfaces only here.
        raise ImageDecodeError(f"corrupt DICOM: {error_detail(error)}") from error



def _dataset_to_display(dataset) -> np.ndarray:
    """Checks a parsed data set, decodes its first frame and maps it to display uint8."""
    if not any(keyword in dataset for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise ImageDecodeError("DICOM has no pixel data")
    check_pixel_count(int(dataset.get("Columns", 0) or 0), int(dataset.get("Rows", 0) or 0))
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
        raise ImageDecodeError(f"truncated or corrupt DICOM pixel data: {error_detail(error)}") from error
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
            display = scale_to_uint8(apply_voi_lut(values, dataset, prefer_lut=True))
        elif is_monochrome:
            display = _window(values, dataset)
            if display is None:
                display = _unwindowed(values, dataset)
        else:
            display = _colour_to_uint8(values)
    except ImageDecodeError:
        raise
    except Exception as error:
        raise ImageDecodeError(f"corrupt DICOM lookup table or rescale: {error_detail(error)}") from error
    if photometric == "MONOCHROME1":
        # MONOCHROME1 stores bone as low values; invert so that bone is bright.
        display = 255 - display
    return display



def _unwindowed(values: np.ndarray, dataset) -> np.ndarray:
    """An image with no window: 8-bit values are display values already (as a PNG's are); deeper data is min-max scaled.

    Stretching an 8-bit film would score the same pixels differently as a DICOM and as a PNG.
    """
    bits = int(dataset.get("BitsStored", 16) or 16)
    values = np.asarray(values)
    if bits <= 8 and values.size and values.min() >= 0 and values.max() <= 255:
        return np.rint(values).astype(np.uint8)
    return scale_to_uint8(values)


def _colour_to_uint8(luminance: np.ndarray) -> np.ndarray:
    """Keeps 8-bit colour luminance as it is; min-max scales deeper colour data."""
    if luminance.size and luminance.min() >= 0 and luminance.max() <= 255:
        return np.rint(luminance).astype(np.uint8)
    return scale_to_uint8(luminance)



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
