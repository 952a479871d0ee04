"""Disk cache files of one NumPy array: atomic writes, validated reads, checksums overlapped with I/O."""

from __future__ import annotations

import json
import mmap
import os
import tempfile
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

# Layout: an 8-byte little-endian header length, a JSON header padded with spaces so that the
# raw C-order array starts on a page boundary, then the array. The header holds the array's
# shape, one Adler-32 per chunk of its bytes and whatever the caller adds (cache keys, file
# lists). Page alignment lets a memory-mapped array go to TensorFlow without a copy.
FORMAT = 3
CHUNK_BYTES = 8 * 1024 * 1024
MAX_HEADER_BYTES = 64 * 1024 * 1024
DATA_ALIGNMENT = 4096
# What TensorFlow's CPU kernels require of a buffer they did not allocate (Eigen's largest
# vector alignment).
TENSOR_ALIGNMENT = 64


def aligned_empty(shape: tuple[int, ...], dtype, alignment: int = TENSOR_ALIGNMENT) -> np.ndarray:
    """Returns an uninitialized C-order array whose data starts on an `alignment`-byte boundary.

    NumPy only guarantees 16 bytes; TensorFlow can share (rather than copy) 64-byte aligned
    buffers.

    Args:
        shape: Array shape.
        dtype: Array dtype.
        alignment: Byte alignment of the first element.
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + alignment, dtype=np.uint8)
    offset = (-raw.ctypes.data) % alignment
    return raw[offset : offset + nbytes].view(dtype).reshape(shape)


def aligned_take(array: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Returns array[indices] (rows) in a new aligned array (see aligned_empty)."""
    out = aligned_empty((len(indices), *array.shape[1:]), array.dtype)
    np.take(array, indices, axis=0, out=out)
    return out


def chunk_checksums(array: np.ndarray) -> list[int]:
    """Returns the Adler-32 of each CHUNK_BYTES chunk of an array's bytes.

    Args:
        array: Any array; it is read as contiguous bytes.

    Returns:
        One checksum per chunk (none for an empty array).
    """
    view = memoryview(np.ascontiguousarray(array)).cast("B")
    return [zlib.adler32(view[start : start + CHUNK_BYTES]) for start in range(0, len(view), CHUNK_BYTES)]


def write_array_file(path: Path, header: dict, array: np.ndarray) -> bool:
    """Writes an array and its header atomically (temporary file, fsync, then os.replace).

    Two processes writing the same file each rename a complete file over the other, so a
    reader never sees a partial one. A failure to write only costs speed next time.

    Args:
        path: Destination file.
        header: JSON-serializable facts to store with the array (keys, file lists).
        array: The array.

    Returns:
        Whether the file was written.
    """
    array = np.ascontiguousarray(array)
    full_header = {
        **header,
        "format": FORMAT,
        "dtype": array.dtype.str,
        "shape": list(array.shape),
        "checksums": chunk_checksums(array),
    }
    encoded = json.dumps(full_header).encode()
    encoded += b" " * ((-(8 + len(encoded))) % DATA_ALIGNMENT)
    temporary = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(len(encoded).to_bytes(8, "little"))
            handle.write(encoded)
            handle.write(memoryview(array).cast("B"))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        return True
    except OSError:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
        return False


def read_array_file(path: Path, dtype, accept: Callable[[dict], bool]) -> tuple[dict, np.ndarray] | None:
    """Reads and validates an array file written by write_array_file.

    The array is a copy-on-write memory map of the file: no bytes are copied, the pages
    come from the OS page cache as the checksums touch them, and the array stays writable
    without ever changing the file. The chunk checksums run on two threads (zlib releases
    the GIL), so validating a warm 85 MB file takes tens of milliseconds.

    Args:
        path: The file.
        dtype: The expected dtype.
        accept: Called with the header; returns False when the file is stale (another key,
            another file list, another shape).

    Returns:
        (header, array), or None when the file is absent, stale, truncated or corrupt.
    """
    try:
        with open(path, "rb") as handle:
            header_length = int.from_bytes(handle.read(8), "little")
            if not 0 < header_length < MAX_HEADER_BYTES:
                return None
            header = json.loads(handle.read(header_length))
            if header.get("format") != FORMAT or header.get("dtype") != np.dtype(dtype).str or not accept(header):
                return None
            shape = tuple(int(side) for side in header["shape"])
            offset = 8 + header_length
            nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
            if os.fstat(handle.fileno()).st_size != offset + nbytes:
                return None
            if nbytes == 0:
                array = np.empty(shape, dtype=dtype)
            else:
                mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY)
                array = np.frombuffer(mapped, dtype=dtype, count=nbytes // np.dtype(dtype).itemsize, offset=offset)
                array = array.reshape(shape)
        if _parallel_checksums(array) != header.get("checksums"):
            return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return header, array


def _parallel_checksums(array: np.ndarray) -> list[int]:
    """chunk_checksums on two threads."""
    view = memoryview(array).cast("B")
    starts = range(0, len(view), CHUNK_BYTES)
    if len(starts) < 2:
        return [zlib.adler32(view[start : start + CHUNK_BYTES]) for start in starts]
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(lambda start: zlib.adler32(view[start : start + CHUNK_BYTES]), starts))
