"""The records log: every prediction record appended as one line, rotated, without pixels or names; read back from any output."""

from __future__ import annotations

import csv
import fcntl
import json
import os
from pathlib import Path

from zoidberg.data.appending import append_line
from zoidberg.inference.record import read_record

# Fields a log never keeps: a file name may name a patient, and a Grad-CAM is pixels.
NEVER_LOGGED = ("file", "image", "gradcam_png", "true_label", "correct")
# A log is rotated past this size; this many rotated files are kept (records.jsonl.1 is the newest).
ROTATE_BYTES = 50 * 1024**2
ROTATE_KEEP = 10


def watch_fields(record: dict) -> dict:
    """A record as the log keeps it: everything but what could name a patient or hold pixels."""
    return {key: value for key, value in record.items() if key not in NEVER_LOGGED}


def append_records(path: str | os.PathLike, records, *, rotate_bytes: int = ROTATE_BYTES, keep: int = ROTATE_KEEP) -> None:
    """Appends records to a JSON-lines log, each line whole or not at all; rotates the log past rotate_bytes.

    Several processes (Ray Serve replicas) may append to one log: a lock file orders the rotations.

    Args:
        path: The log (records.jsonl).
        records: Prediction records (zoidberg.inference.record).
        rotate_bytes: Rotate before an append that finds the log this large.
        keep: Rotated files kept (path.1 newest, path.KEEP oldest).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if path.exists() and path.stat().st_size >= rotate_bytes:
                _rotate(path, keep)
            for record in records:
                append_line(path, json.dumps(watch_fields(record), ensure_ascii=False))
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _rotate(path: Path, keep: int) -> None:
    """path.(k) → path.(k+1), the oldest dropped, then path → path.1 (renames: nothing is half-copied)."""
    oldest = path.with_name(f"{path.name}.{keep}")
    if oldest.exists():
        oldest.unlink()
    for index in range(keep - 1, 0, -1):
        older = path.with_name(f"{path.name}.{index}")
        if older.exists():
            older.rename(path.with_name(f"{path.name}.{index + 1}"))
    path.rename(path.with_name(f"{path.name}.1"))


def read_records(path: str | os.PathLike) -> list[dict]:
    """The records of a file: a records log (JSON lines), `predict --json` (a JSON list) or a predictions CSV.

    A torn last line of a log is skipped; records of an older schema are upgraded (read_record).

    Raises:
        ValueError: The file cannot be read, or holds no prediction records; the message names it.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as error:
        raise ValueError(f"Cannot read {path}: {error.strerror or error}.") from None
    stripped = text.lstrip()
    if path.suffix.lower() == ".csv":
        rows = [_typed_csv_row(row) for row in csv.DictReader(text.splitlines())]
    elif stripped.startswith("["):
        try:
            rows = json.loads(stripped)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON ({error.msg}, line {error.lineno}).") from None
    else:
        rows = []
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # A torn line, cut by a crash mid-write.
    records = []
    for row in rows:
        if isinstance(row, dict) and "schema_version" in row:
            try:
                records.append(read_record(row))
            except ValueError as error:
                raise ValueError(f"{path}: {error}") from None
    if not records:
        raise ValueError(f"{path} holds no prediction records: give a records log (serve --records-log), predict --json "
                         "output or a predictions CSV.")
    return records


def _typed_csv_row(row: dict) -> dict:
    """A predictions CSV row with its numbers, booleans and blanks typed as the JSON record has them."""
    typed = {}
    for key, value in row.items():
        if value in ("", None):
            typed[key] = None
        elif value in ("True", "False"):
            typed[key] = value == "True"
        else:
            try:
                typed[key] = float(value) if key not in ("schema_version", "run_id", "file", "image", "door") else value
            except ValueError:
                typed[key] = value
    return typed
