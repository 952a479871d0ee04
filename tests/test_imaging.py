"""Tests of zoidberg.imaging over the odd-file corpus in tests/imagegen.py."""

from __future__ import annotations

import io
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import imagegen
import numpy as np
import pytest

from zoidberg.data import imaging, sniffing
from zoidberg.data.imaging import ImageDecodeError, decode_grayscale, load_image, resize_square
from zoidberg.data.sniffing import sniff_kind
from conftest import SHARED_DATA

FULLRES_DIR = SHARED_DATA / "chest_xray_fullres"


def _source(case, how: str, tmp_path: Path):
    """Returns a corpus case as bytes, a path, or an upload-like file object."""
    data = case.make()
    if how == "path":
        return imagegen.write_case(tmp_path, case.filename, lambda: data), {}
    if how == "upload":
        upload = io.BytesIO(data)
        upload.name = case.filename
        return upload, {}
    return data, {"name": case.filename}


# --------------------------------------------------------------------------- bad files


@pytest.mark.parametrize("how", ["bytes", "path", "upload"])
@pytest.mark.parametrize("case_name", sorted(imagegen.BAD_CASES))
def test_bad_file_gives_one_line_reason(case_name, how, tmp_path):
    case = imagegen.BAD_CASES[case_name]
    source, options = _source(case, how, tmp_path)
    with pytest.raises(ImageDecodeError) as caught:
        decode_grayscale(source, **options)
    reason = str(caught.value)
    assert case.reason in reason
    assert "\n" not in reason and "Traceback" not in reason
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("case_name", sorted(imagegen.BAD_CASES))
def test_load_image_refuses_bad_files_too(case_name):
    case = imagegen.BAD_CASES[case_name]
    with pytest.raises(ImageDecodeError) as caught:
        load_image(case.make(), 32, name=case.filename)
    assert case.reason in str(caught.value)


@pytest.mark.parametrize("case_name", ["png_bomb_60000", "gif_bomb_60000", "gif_8000_over_limit"])
@pytest.mark.parametrize("how", ["bytes", "path"])
def test_bomb_is_refused_quickly_without_allocating(case_name, how, tmp_path):
    case = imagegen.BAD_CASES[case_name]
    source, options = _source(case, how, tmp_path)
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(ImageDecodeError, match="image too large"):
            decode_grayscale(source, **options)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 1.0
    assert peak < 50 * 2**20
    assert len(case.make()) < 1000


def test_bomb_between_pillow_warning_and_error_limits_is_refused():
    # 100 MP is above Pillow's warning threshold (89 MP) but below its error (179 MP).
    with pytest.raises(ImageDecodeError, match="image too large: 100 MP exceeds the 50 MP limit"):
        decode_grayscale(imagegen.gif_bomb_bytes(10_000, 10_000))


def test_png_bomb_message_names_the_declared_size():
    with pytest.raises(ImageDecodeError) as caught:
        decode_grayscale(imagegen.png_bomb_bytes())
    assert str(caught.value) == "image too large: 60000×60000 px exceeds the 50 MP limit"


def test_pillow_global_limit_is_left_alone():
    from PIL import Image

    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageDecodeError):
        decode_grayscale(imagegen.png_bomb_bytes())
    decode_grayscale(imagegen.png_named_jpg())
    assert Image.MAX_IMAGE_PIXELS == before


def test_oversized_upload_bytes_are_refused():
    with pytest.raises(ImageDecodeError, match="file too large: 50.0 MB exceeds the 50 MB limit"):
        decode_grayscale(b"\xff\xd8\xff" + bytes(imaging.MAX_UPLOAD_BYTES))


def test_oversized_file_on_disk_is_refused_before_reading(tmp_path):
    path = tmp_path / "huge.jpeg"
    with open(path, "wb") as handle:
        handle.write(imagegen.jpeg_bytes(imagegen.xray_like()))
        handle.truncate(imaging.MAX_UPLOAD_BYTES + 10 * 2**20)  # Sparse: no disk used.
    with pytest.raises(ImageDecodeError, match="file too large: 60.0 MB"):
        decode_grayscale(path)


def test_missing_file_and_folder_give_reasons(tmp_path):
    with pytest.raises(ImageDecodeError, match="cannot read file"):
        decode_grayscale(tmp_path / "missing.jpeg")
    with pytest.raises(ImageDecodeError, match="cannot read file"):
        decode_grayscale(tmp_path)


def test_error_message_is_collapsed_to_one_line():
    assert str(ImageDecodeError("first line\n  second\tline ")) == "first line second line"


# --------------------------------------------------------------------------- odd valid files


@pytest.mark.parametrize("how", ["bytes", "path", "upload"])
@pytest.mark.parametrize("case_name", sorted(imagegen.ODD_VALID_CASES))
def test_odd_valid_file_decodes_to_sensible_gray(case_name, how, tmp_path):
    case = imagegen.ODD_VALID_CASES[case_name]
    source, options = _source(case, how, tmp_path)
    gray = decode_grayscale(source, **options)
    assert gray.dtype == np.uint8 and gray.ndim == 2
    assert gray.shape == case.shape
    assert gray.flags.c_contiguous and gray.flags.writeable
    if case.check is not None:
        case.check(gray)


@pytest.mark.parametrize("case_name", sorted(imagegen.ODD_VALID_CASES))
def test_odd_valid_file_loads_square(case_name):
    case = imagegen.ODD_VALID_CASES[case_name]
    square = load_image(case.make(), 24, name=case.filename)
    assert square.shape == (24, 24) and square.dtype == np.uint8


def test_sixteen_bit_png_is_scaled_not_clipped():
    gray = decode_grayscale(imagegen.gray16_png())
    # Pillow's own convert("L") would clip 12-bit data to 255 from value 255 on.
    assert (gray == 255).mean() < 0.05
    assert int(gray[0, 32]) == pytest.approx(32 / 63 * 255, abs=2)


def test_monochrome1_is_inverted_and_monochrome2_is_not():
    pixels = np.full((32, 48), 3000, dtype=np.uint16)
    pixels[:16] = 200
    mono1 = decode_grayscale(imagegen.dicom_bytes(pixels, photometric="MONOCHROME1", bits_stored=12))
    mono2 = decode_grayscale(imagegen.dicom_bytes(pixels, photometric="MONOCHROME2", bits_stored=12))
    assert mono1[0, 0] == 255 and mono1[-1, 0] == 0
    assert mono2[0, 0] == 0 and mono2[-1, 0] == 255


def test_monochrome1_window_is_applied_before_inversion():
    pixels = imagegen.gradient(8, 100, high=4000, dtype=np.uint16)
    data = imagegen.dicom_bytes(pixels, photometric="MONOCHROME1", bits_stored=12, window=(2000, 1000))
    gray = decode_grayscale(data)
    row = gray[4].astype(int)
    assert row[:35].min() == 255 and row[65:].max() == 0
    assert np.all(np.diff(row) <= 0)


def test_same_content_with_any_extension_decodes_identically():
    data = imagegen.png_named_jpg()
    reference = decode_grayscale(data, name="image.png")
    for name in ("image.jpg", "image.jpeg", "image", "image.dcm", "IMAGE.PNG.txt"):
        np.testing.assert_array_equal(decode_grayscale(data, name=name), reference)


def test_path_bytes_and_upload_give_the_same_pixels(tmp_path):
    data = imagegen.jpeg_bytes(imagegen.xray_like(300, 260))
    path = imagegen.write_case(tmp_path, "x.jpeg", lambda: data)
    upload = io.BytesIO(data)
    upload.read()  # An upload that was already read once (e.g. for a preview).
    from_bytes = load_image(data, 64)
    np.testing.assert_array_equal(load_image(path, 64), from_bytes)
    np.testing.assert_array_equal(load_image(str(path), 64), from_bytes)
    np.testing.assert_array_equal(load_image(upload, 64), from_bytes)


def test_common_files_skip_the_warnings_machinery(monkeypatch):
    def refuse():
        raise AssertionError("catch_warnings resets warning registries; the hot path must avoid it")

    monkeypatch.setattr(imaging.warnings, "catch_warnings", refuse)
    assert load_image(imagegen.jpeg_bytes(imagegen.xray_like()), 32).shape == (32, 32)
    assert load_image(imagegen.png_named_jpg(), 32).shape == (32, 32)


def test_decoding_from_threads_is_consistent():
    sources = [imagegen.ODD_VALID_CASES[name] for name in sorted(imagegen.ODD_VALID_CASES)] * 3
    expected = [decode_grayscale(case.make(), name=case.filename) for case in sources]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda case: decode_grayscale(case.make(), name=case.filename), sources))
    for got, want in zip(results, expected):
        np.testing.assert_array_equal(got, want)


# --------------------------------------------------------------------------- sniffing


@pytest.mark.parametrize(
    ("data", "name", "kind"),
    [
        (b"", "x.jpeg", "empty"),
        (b"\xff\xd8\xff\xe0rest", "x.png", "jpeg"),
        (b"\x89PNG\r\n\x1a\n....", "x.jpg", "png"),
        (b"\x00" * 128 + b"DICM" + b"\x00" * 16, "x.jpg", "dicom"),
        (b"GIF89a......", "", "gif"),
        (b"II*\x00....", "", "tiff"),
        (b"%PDF-1.7\n...", "x.jpeg", "pdf"),
        (b"PK\x03\x04....", "x.jpeg", "zip"),
        (b"  <!doctype html><html>", "x.jpeg", "html"),
        (b"<?xml version='1.0'?><svg xmlns='http://www.w3.org/2000/svg'/>", "x.jpeg", "svg"),
        (b"plain words, nothing else\n", "x.jpeg", "text"),
        (b"\x08\x00\x05\x00CS\x0a\x00ISO_IR 100", "x.dcm", "dicom"),
        (b"\x08\x00\x05\x00CS\x0a\x00ISO_IR 100", "x.bin", "unknown"),
    ],
)
def test_sniff_kind(data, name, kind):
    assert sniff_kind(data, name) == kind


def test_header_size_reads_png_and_jpeg_without_decoding():
    assert sniffing.header_size(imagegen.png_bomb_bytes(1234, 567)) == (1234, 567)
    jpeg = imagegen.exif_rotated_jpeg()  # EXIF segment before the frame header.
    assert sniffing.header_size(jpeg) == (64, 40)
    assert sniffing.header_size(b"GIF89a") is None


# --------------------------------------------------------------------------- resizing


@pytest.mark.parametrize("shape", [(1, 1), (5, 4000), (4000, 5), (3, 7), (300, 200), (64, 64)])
def test_resize_square_any_shape(shape):
    gray = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    square = resize_square(gray, 64)
    assert square.shape == (64, 64) and square.dtype == np.uint8


def test_resize_square_keeps_constant_and_ignores_aspect_ratio():
    np.testing.assert_array_equal(resize_square(np.full((1, 1), 77, np.uint8), 16), np.full((16, 16), 77))
    ramp = imagegen.gradient(10, 400)
    square = resize_square(ramp, 40)
    # The full ramp is squeezed horizontally, not cropped.
    assert square[:, 0].max() < 10 and square[:, -1].min() > 245


def test_resize_square_downsampling_is_antialiased():
    # A one-pixel checkerboard must average to gray, not alias to black or white.
    checker = (np.indices((512, 512)).sum(axis=0) % 2 * 255).astype(np.uint8)
    square = resize_square(checker, 32)
    assert abs(square.astype(float).mean() - 127.5) < 3 and square.std() < 3


def test_resize_square_rejects_wrong_input():
    with pytest.raises(ValueError):
        resize_square(np.zeros((4, 4, 3), np.uint8), 8)
    with pytest.raises(ValueError):
        resize_square(np.zeros((4, 4), np.float32), 8)
    with pytest.raises(ValueError):
        resize_square(np.zeros((4, 4), np.uint8), 0)


# --------------------------------------------------------------------------- draft decoding


@pytest.fixture(scope="module")
def big_jpeg() -> bytes:
    return imagegen.big_jpeg_bytes(2400, 2000)


def _best_cpu_time(function, repeats: int = 5) -> float:
    """Returns the least CPU time of a few runs: robust to other processes on a busy machine."""
    times = []
    for _ in range(repeats):
        started = time.process_time()
        function()
        times.append(time.process_time() - started)
    return min(times)


def test_draft_keeps_short_side_at_least_draft_size(big_jpeg):
    for draft_size in (64, 128, 224, 299, 512, 1000):
        height, width = decode_grayscale(big_jpeg, draft_size=draft_size).shape
        assert min(height, width) >= draft_size
        assert width < 2400 or draft_size > 1000
    assert decode_grayscale(big_jpeg, draft_size=128).shape == (250, 300)  # 1/8 scale.


def test_draft_is_faster_and_looks_the_same(big_jpeg):
    # Huffman decoding, which draft cannot skip, bounds the gain to about 2x.
    full_time = _best_cpu_time(lambda: resize_square(decode_grayscale(big_jpeg), 128))
    draft_time = _best_cpu_time(lambda: load_image(big_jpeg, 128))
    assert draft_time < 0.8 * full_time, (draft_time, full_time)
    full = resize_square(decode_grayscale(big_jpeg), 128).astype(float)
    drafted = load_image(big_jpeg, 128).astype(float)
    assert np.corrcoef(full.ravel(), drafted.ravel())[0, 1] > 0.98
    assert np.abs(full - drafted).mean() < 4


def test_draft_converts_rgb_jpeg_to_gray_consistently():
    data = imagegen.jpeg_bytes(np.stack([imagegen.xray_like(640, 560)] * 3, axis=-1))
    full = resize_square(decode_grayscale(data), 64).astype(float)
    drafted = load_image(data, 64).astype(float)
    assert np.corrcoef(full.ravel(), drafted.ravel())[0, 1] > 0.98


def test_draft_is_ignored_for_png():
    data = imagegen.png_bytes(imagegen.xray_like(400, 300))
    assert decode_grayscale(data, draft_size=64).shape == (400, 300)


# --------------------------------------------------------------------------- real data


def test_real_fullres_jpegs_load_with_draft():
    if not FULLRES_DIR.exists():
        pytest.skip(f"{FULLRES_DIR} is absent (real data lives beside the repo, in ../shared)")
    paths = sorted(FULLRES_DIR.glob("*/*/*.jpeg"))[:6]
    for path in paths:
        drafted = load_image(path, 128).astype(float)
        full = resize_square(decode_grayscale(path), 128).astype(float)
        assert drafted.shape == (128, 128)
        assert np.corrcoef(full.ravel(), drafted.ravel())[0, 1] > 0.98


def test_an_8_bit_dicom_decodes_to_the_same_pixels_as_a_png():
    """An 8-bit film with no window is shown as stored: stretching it would score the same pixels differently by format."""
    pixels = (imagegen.xray_like(48, 40).astype(float) * 0.8 + 20).astype(np.uint8)
    assert pixels.min() > 0 and pixels.max() < 255
    as_png = decode_grayscale(imagegen.png_bytes(pixels), name="film.png")
    as_dicom = decode_grayscale(imagegen.dicom_bytes(pixels, bits_stored=8), name="film.dcm")
    np.testing.assert_array_equal(as_png, as_dicom)
