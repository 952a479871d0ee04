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
# Arrays at least this large are cached and validated in blocks and read through their
# mapping without staying resident ($ZOIDBERG_STREAM_BYTES sets it, e.g. for tests).
STREAM_BYTES_ENV = "ZOIDBERG_STREAM_BYTES"
DEFAULT_STREAM_BYTES = 1024**3


def stream_bytes() -> int:
    """The size from which arrays are cached in blocks and validated from the file."""
    try:
        return int(os.environ.get(STREAM_BYTES_ENV, DEFAULT_STREAM_BYTES))
    except ValueError:
        return DEFAULT_STREAM_BYTES
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
        # A large array is checked by reading the file, so that validating it does not bring
        # every page into this process (see release_pages).
        checksums = file_checksums(path, offset, nbytes) if nbytes >= stream_bytes() else _parallel_checksums(array)
        if checksums != header.get("checksums"):
            return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return header, array


class ChunkedChecksums:
    """Adler-32 of each CHUNK_BYTES chunk of a byte stream fed in pieces of any size (as chunk_checksums gives)."""

    def __init__(self):
        self.checksums: list[int] = []
        self._value = 1
        self._filled = 0

    def update(self, data) -> None:
        view = memoryview(data).cast("B")
        while len(view):
            take = min(len(view), CHUNK_BYTES - self._filled)
            self._value = zlib.adler32(view[:take], self._value)
            self._filled += take
            view = view[take:]
            if self._filled == CHUNK_BYTES:
                self.checksums.append(self._value)
                self._value, self._filled = 1, 0

    def finish(self) -> list[int]:
        if self._filled:
            self.checksums.append(self._value)
            self._value, self._filled = 1, 0
        return self.checksums


class StreamedArrayFile:
    """Writes an array file from consecutive row blocks, never holding the whole array.

    The rows go to a temporary data file as they come, with their checksums; `finish`
    writes the header (which may hold what was learned on the way, such as which files
    decoded) and then the data behind it with an in-kernel copy, so that a data set larger
    than memory is cached without ever being in memory. The result is the file
    write_array_file writes for the same array.

    Args:
        path: Destination file.
        shape: The whole array's shape.
        dtype: Its dtype.
    """

    def __init__(self, path: Path, shape: tuple[int, ...], dtype):
        self.path = Path(path)
        self.shape = tuple(int(side) for side in shape)
        self.dtype = np.dtype(dtype)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, self._data_path = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".data.tmp", dir=self.path.parent)
        self._data = os.fdopen(descriptor, "wb")
        self._checksums = ChunkedChecksums()
        self._rows = 0

    def write_rows(self, rows: np.ndarray) -> None:
        """Appends the next rows (in order)."""
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        self._data.write(memoryview(rows).cast("B"))
        self._checksums.update(rows)
        self._rows += len(rows)

    def finish(self, header: dict) -> bool:
        """Writes the final file atomically; returns whether it was written (a failure only costs speed)."""
        temporary = None
        try:
            self._data.flush()
            self._data.close()
            if self._rows != self.shape[0]:
                raise ValueError(f"{self._rows} rows written, {self.shape[0]} expected")
            full_header = {**header, "format": FORMAT, "dtype": self.dtype.str, "shape": list(self.shape), "checksums": self._checksums.finish()}
            encoded = json.dumps(full_header).encode()
            encoded += b" " * ((-(8 + len(encoded))) % DATA_ALIGNMENT)
            descriptor, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
            with os.fdopen(descriptor, "wb") as handle, open(self._data_path, "rb") as data:
                handle.write(len(encoded).to_bytes(8, "little"))
                handle.write(encoded)
                handle.flush()
                _copy_file(data, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)
            return True
        except (OSError, ValueError):
            if temporary is not None:
                Path(temporary).unlink(missing_ok=True)
            return False
        finally:
            Path(self._data_path).unlink(missing_ok=True)

    def abort(self) -> None:
        """Drops the temporary data."""
        self._data.close()
        Path(self._data_path).unlink(missing_ok=True)


def _copy_file(source, target) -> None:
    """Copies the rest of `source` to the end of `target` inside the kernel where it can (no pages in this process)."""
    remaining = os.fstat(source.fileno()).st_size - source.tell()
    try:
        while remaining > 0:
            copied = os.copy_file_range(source.fileno(), target.fileno(), min(remaining, 1 << 30))
            if copied == 0:
                break
            remaining -= copied
    except (AttributeError, OSError):
        pass
    while remaining > 0:
        block = source.read(min(remaining, CHUNK_BYTES))
        if not block:
            break
        target.write(block)
        remaining -= len(block)


def file_checksums(path: Path, offset: int, nbytes: int) -> list[int]:
    """chunk_checksums of `nbytes` of a file from `offset`, read with pread: the page cache, never this process's memory."""
    checksums = []
    with open(path, "rb", buffering=0) as handle:
        def one(start: int) -> int:
            return zlib.adler32(os.pread(handle.fileno(), min(CHUNK_BYTES, nbytes - start), offset + start))

        with ThreadPoolExecutor(max_workers=2) as pool:
            checksums = list(pool.map(one, range(0, nbytes, CHUNK_BYTES)))
    return checksums


def release_pages(array: np.ndarray) -> bool:
    """Gives back the resident pages of a memory-mapped array (they are read from the file again when used).

    A cached data set larger than memory is read through its mapping; without this, every
    page read stays counted in the process's memory until the mapping closes. The
    mapping is private (copy-on-write) and nothing writes to a loaded data set, so no
    change can be lost.

    Returns:
        Whether the array was memory-mapped (and its pages released).
    """
    base = array
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None) if isinstance(base, np.ndarray) else getattr(base, "obj", None)
    if not isinstance(base, mmap.mmap):
        return False
    try:
        base.madvise(mmap.MADV_DONTNEED)
    except (AttributeError, OSError, ValueError):
        return False
    return True


def _parallel_checksums(array: np.ndarray) -> list[int]:
    """chunk_checksums on two threads."""
    view = memoryview(array).cast("B")
    starts = range(0, len(view), CHUNK_BYTES)
    if len(starts) < 2:
        return [zlib.adler32(view[start : start + CHUNK_BYTES]) for start in starts]
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(lambda start: zlib.adler32(view[start : start + CHUNK_BYTES]), starts))
