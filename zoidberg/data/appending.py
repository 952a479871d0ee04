"""Whole-or-nothing appends of one text line: one O_APPEND write, flushed to disk, never glued to a torn line."""

from __future__ import annotations

import os
from pathlib import Path


def append_line(path: str | os.PathLike, line: str) -> None:
    """Appends `line` (a newline is added) in a single write that is on disk before it returns.

    A crash loses at most this line: readers skip a torn last line, and the next append starts
    on a line of its own.

    Raises:
        OSError: When the write is short or fails (the file keeps what it had, whole lines and at most one torn).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = line.rstrip("\n") + "\n"
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        if os.fstat(descriptor).st_size and _last_byte(path) != b"\n":
            # The last append was torn by a crash: this line must not be glued to it.
            text = "\n" + text
        data = text.encode("utf-8", "surrogateescape")
        written = os.write(descriptor, data)
        if written != len(data):
            raise OSError(f"wrote {written} of {len(data)} bytes")
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1)
