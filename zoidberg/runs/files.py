"""The file operations every run-store file goes through: whole-or-nothing writes, JSON, and CSV that keeps any file name."""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable


def write_json_atomic(path: Path, payload: Any) -> None:
    """Writes JSON so that readers see the old or the new file, never half of one.

    Args:
        path: Destination file.
        payload: JSON-serializable object.
    """
    path = Path(path)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2, allow_nan=True, default=json_default)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_atomically(path: Path, write: Callable[[Path], Any]) -> None:
    """Lets `write` fill a temporary sibling file, then renames it over `path`.

    Readers (the dashboard, `predict`) see the old file or the complete new one, never a
    half-written model or array. The temporary name keeps the suffix, which Keras and
    NumPy read to choose the format. Errors name `path`, never the temporary file.

    Args:
        path: Destination file.
        write: Called with the temporary path, e.g. `model.save` or a NumPy save.

    Raises:
        IsADirectoryError: `path` is a folder.
        FileNotFoundError: Its folder does not exist.
        OSError: Writing failed (a full disk: errno ENOSPC), with `path` as its filename.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "A folder stands where the file should be written (name a file, not a folder)", str(path))
    if not path.parent.is_dir():
        raise FileNotFoundError(f"The folder {path.parent} does not exist: create it, or write {path.name} somewhere else.")
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(descriptor)
    try:
        write(Path(temporary))
        os.replace(temporary, path)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        if error.filename in (None, temporary, str(temporary)):
            # The temporary name means nothing to the user: the file they asked for does.
            raise type(error)(error.errno, error.strerror or str(error), str(path)) from error
        raise
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def open_csv(path: Path, mode: str = "r"):
    """Opens a CSV file for csv: UTF-8, and a file name that is not valid UTF-8 kept byte for byte.

    Such a name (its odd bytes held as surrogates, as os.listdir gives them) is written as the
    file system's own bytes (surrogateescape), so a reader that opens the file the same way
    (Python: errors="surrogateescape"; pandas: encoding_errors="surrogateescape") gets the
    exact path back: an escaping such as "\\udcff" would name no file.
    """
    return open(path, mode, newline="", encoding="utf-8", errors="surrogateescape")


def read_json(path: Path, default: Any = None) -> Any:
    """Reads a JSON file, returning `default` when it is absent or unreadable."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return default


def json_default(value: Any) -> Any:
    """Converts numpy scalars and arrays for json.dump."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
