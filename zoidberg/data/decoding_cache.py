"""Decoding a data folder's files once, in threads, into the disk cache: whole in memory, or block by block into a streamed file."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from zoidberg.data.arraycache import StreamedArrayFile, aligned_empty, read_array_file, write_array_file
from zoidberg.data.imaging import ImageDecodeError, load_image

# Bumped whenever the cache's content changes, so that older cache files are decoded again.
CACHE_FORMAT_VERSION = 4
# Images decoded at once into one block of the streamed cache file.
STREAM_BLOCK_IMAGES = 2048
# Called with (files done, files in all) as decoding goes on.
ProgressCallback = Callable[[int, int], None]


def decode_records(
    root: Path,
    records: Sequence,
    image_size: int,
    progress: ProgressCallback | None,
    max_workers: int | None,
    resize: str = "stretch",
    enhance: str = "none",
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Decodes every record (a data set's FileRecord: only its relative .path is read); returns images, a success mask and failure reasons."""
    # Aligned so that training can hand the array to TensorFlow without copying it.
    images = aligned_empty((len(records), image_size, image_size), np.uint8)
    images.fill(0)
    ok_mask = np.zeros(len(records), dtype=bool)
    reasons = [""] * len(records)

    def decode(index: int) -> None:
        try:
            images[index] = load_image(root / records[index].path, image_size, resize=resize, enhance=enhance)
            ok_mask[index] = True
        except ImageDecodeError as error:
            reasons[index] = str(error)
        except (OSError, ValueError, MemoryError) as error:
            reasons[index] = f"unreadable: {error.__class__.__name__}: {str(error).splitlines()[0] if str(error) else ''}"

    workers = max_workers or min(8, (os.cpu_count() or 2) + 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for done, _ in enumerate(pool.map(decode, range(len(records))), start=1):
            if progress and (done % 64 == 0 or done == len(records)):
                progress(done, len(records))
    return images, ok_mask, reasons


def decode_records_to_cache(
    path: Path, root: Path, records: Sequence, image_size: int, progress, max_workers, resize: str, enhance: str
) -> None:
    """Decodes the records block by block straight into the cache file (StreamedArrayFile), for data sets larger than memory."""
    writer = StreamedArrayFile(path, (len(records), image_size, image_size), np.uint8)
    ok_mask = np.zeros(len(records), dtype=bool)
    reasons = [""] * len(records)
    try:
        for start in range(0, len(records), STREAM_BLOCK_IMAGES):
            block = records[start : start + STREAM_BLOCK_IMAGES]
            images, ok, why = decode_records(root, block, image_size, None, max_workers, resize, enhance)
            writer.write_rows(images)
            ok_mask[start : start + len(block)] = ok
            reasons[start : start + len(block)] = why
            if progress:
                progress(start + len(block), len(records))
    except BaseException:
        writer.abort()
        raise
    writer.finish({"version": CACHE_FORMAT_VERSION, "paths": [record.path for record in records], "ok": ok_mask.astype(int).tolist(), "reasons": reasons})


def write_cache(path: Path, records: Sequence, images, ok_mask, reasons) -> None:
    """Writes the decoded images with the file list and each file's outcome."""
    header = {
        "version": CACHE_FORMAT_VERSION,
        "paths": [record.path for record in records],
        "ok": ok_mask.astype(int).tolist(),
        "reasons": reasons,
    }
    write_array_file(path, header, images)


def read_cache(path: Path, records: Sequence):
    """Reads and validates a cache file; returns None when absent, stale or corrupt."""
    paths = [record.path for record in records]

    def accept(header: dict) -> bool:
        return header.get("version") == CACHE_FORMAT_VERSION and header.get("paths") == paths

    found = read_array_file(path, np.uint8, accept)
    if found is None:
        return None
    header, images = found
    if images.ndim != 3 or len(images) != len(records) or len(header["ok"]) != len(records):
        return None
    return images, np.asarray(header["ok"], dtype=bool), list(header["reasons"])
