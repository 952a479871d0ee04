"""Predict page inputs: uploads (zips unpacked once, capped per session), a server folder, demo films."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import streamlit as st

from zoidberg.data.archives import MAX_ARCHIVE_BYTES, declared_bytes, read_zip
from zoidberg.data.sniffing import SNIFF_BYTES, sniff_kind

LOGGER = logging.getLogger(__name__)

# The most files a server folder or archive contributes at once: past it the page says so.
MAX_BATCH_FILES = 2000
DEMO_IMAGE_COUNT = 4


# The session's unpacked .zip uploads, by upload, so that a rerun does not inflate them again.
UNPACKED_ARCHIVES_KEY = "predict_unpacked_archives"
# What one session's unpacked archives hold together: one archive's cap, so that several
# uploads cannot multiply the server's memory.
SESSION_ARCHIVE_BYTES = MAX_ARCHIVE_BYTES


@dataclass(frozen=True)
class ImageInput:
    """One image to predict, held in memory.

    Attributes:
        name: File name as uploaded (or the demo file's relative path).
        data: The file's bytes.
        source: "upload", "folder" or "demo".
        true_label: The known class of a demo image (synthetic) or of a file in a class folder, else None.
        reason: Why the file is not predicted (an archive entry refused), else None.
        record_name: What its record calls it when not `name` (a PACS film: its SOP Instance UID).
        fields: More record fields that name it, as (key, value) pairs (a PACS film's study and series).
        refusal: Why it is refused unread (what a PACS's header says), else None.
    """

    name: str
    data: bytes = field(repr=False)
    source: str = "upload"
    true_label: str | None = None
    reason: str | None = None
    record_name: str | None = None
    fields: tuple = ()
    refusal: str | None = None

    def as_source(self):
        """The film as the one prediction function takes it (zoidberg.inference.scoring.FilmSource)."""
        from zoidberg.inference.scoring import FilmSource

        fields = dict(self.fields)
        if self.true_label is not None:
            fields["true_label"] = self.true_label
        # An empty upload is decoded (and named empty); a film refused unread has no bytes to decode.
        data = None if self.refusal else self.data
        return FilmSource(self.record_name or self.name, data, fields, refusal=self.refusal, error=self.reason)

    @property
    def digest(self) -> str:
        """SHA-256 of the content (the cache key of its prediction)."""
        return hashlib.sha256(self.data).hexdigest()


def uploads_to_inputs(uploads: Sequence[Any] | None) -> list[ImageInput]:
    """Turns Streamlit UploadedFile objects into in-memory inputs; a .zip becomes its files.

    Args:
        uploads: The file_uploader value (a list, one file or None).

    Returns:
        Inputs in upload order (an archive's files in archive order, refused entries with their reason).
    """
    if uploads is None:
        return []
    if not isinstance(uploads, (list, tuple)):
        uploads = [uploads]
    items = []
    unpacked = st.session_state.setdefault(UNPACKED_ARCHIVES_KEY, {})
    kept = {}
    held = 0
    for upload in uploads:
        data = bytes(upload.getvalue())
        if sniff_kind(data[:SNIFF_BYTES], str(upload.name)) == "zip":
            # An archive is unpacked once per upload, not on every rerun of the page; only the
            # archives still uploaded are kept, and together they hold at most SESSION_ARCHIVE_BYTES.
            key = getattr(upload, "file_id", None) or hashlib.sha256(data).hexdigest()
            refusal = None if key in unpacked else over_session_cap(str(upload.name), data, SESSION_ARCHIVE_BYTES - held)
            if refusal is not None:
                # Not kept: once an archive above is removed, this one is unpacked on the next rerun.
                items.append(refusal)
                continue
            kept[key] = unpacked[key] if key in unpacked else archive_inputs(str(upload.name), data)
            held += sum(len(item.data) for item in kept[key])
            items += kept[key]
        else:
            items.append(ImageInput(name=str(upload.name), data=data, source="upload"))
    st.session_state[UNPACKED_ARCHIVES_KEY] = kept
    return items


def over_session_cap(name: str, data: bytes, room: int) -> ImageInput | None:
    """The refusal of an archive that would take the session's unpacked archives past SESSION_ARCHIVE_BYTES, else None.

    Args:
        name: The upload's name.
        data: Its bytes.
        room: What the session's unpacked archives may still hold, in bytes.
    """
    try:
        declared = declared_bytes(data)
    except ValueError:
        return None  # archive_inputs names what is wrong with it.
    if not MAX_ARCHIVE_BYTES >= declared > room:
        return None  # Within the room, or refused by read_zip as a bomb on its own.
    held = (SESSION_ARCHIVE_BYTES - room) / 1024**2
    return ImageInput(name=name, data=b"", reason=(
        f"It would unpack to {declared / 1024**2:,.0f} MB, and this session's other archives hold {held:,.0f} MB: "
        f"together at most {SESSION_ARCHIVE_BYTES / 1024**2:,.0f} MB are held at once. Remove an archive above first, "
        "or predict large batches with the CLI (predict --csv)."))


def archive_inputs(name: str, data: bytes) -> list[ImageInput]:
    """The files of an uploaded .zip as inputs, labelled from NORMAL/PNEUMONIA folders inside it."""
    from zoidberg.data.files import label_from_path

    try:
        entries = read_zip(data)
    except ValueError as error:
        return [ImageInput(name=name, data=b"", reason=str(error))]
    return [
        ImageInput(name=f"{name}/{entry.name}", data=entry.data, source="upload", true_label=label_from_path(entry.name), reason=entry.reason)
        for entry in entries
    ]


def folder_inputs(folder: str) -> tuple[list[ImageInput], list[str]]:
    """Reads the image files under a server folder (recursively, by content) as inputs.

    Returns:
        (inputs, notes): files that are not images are inputs with their reason, so they
        appear in the table; notes say what was cut when the folder is very large.
    """
    from zoidberg.data.files import collect_images, label_from_path
    from zoidberg.data.roots import is_allowed

    files, skipped = collect_images([folder])
    notes = []
    outside = [path for path in files if not is_allowed(path)]
    if outside:
        # A link inside an allowed folder must not read what lies outside it.
        notes.append(f"{len(outside)} file(s) are links that lead outside the allowed folders: refused.")
        files = [path for path in files if is_allowed(path)]
    if len(files) > MAX_BATCH_FILES:
        notes.append(f"The folder holds {len(files):,} images; the first {MAX_BATCH_FILES:,} are predicted here (the CLI takes any number).")
        files = files[:MAX_BATCH_FILES]
    root = Path(folder)
    items = []
    for path in files:
        try:
            data = path.read_bytes()
        except OSError as error:
            items.append(ImageInput(name=str(path.relative_to(root)), data=b"", source="folder", reason=f"unreadable: {error.strerror or error}"))
            continue
        items.append(ImageInput(name=str(path.relative_to(root)), data=data, source="folder", true_label=label_from_path(path)))
    items += [ImageInput(name=str(Path(item.path).relative_to(root)) if item.path.startswith(str(root)) else item.path, data=b"", source="folder", reason=item.reason) for item in skipped]
    return items, notes


def demo_inputs(demo_dir: str | Path, label_mode: str, count: int = DEMO_IMAGE_COUNT) -> list[ImageInput]:
    """Picks a few images of the synthetic demo test split, alternating classes.

    Args:
        demo_dir: Root of the demo dataset (Kaggle layout).
        label_mode: "binary" or "three-class", for the true labels.
        count: How many images.

    Returns:
        Inputs labelled with their (synthetic) true class; empty when the split is missing.
    """
    from zoidberg.data.dataset import parse_label

    root = Path(demo_dir) / "test"
    groups = {
        "normal": sorted((root / "NORMAL").glob("*.jpeg")),
        "bacteria": sorted(path for path in (root / "PNEUMONIA").glob("*.jpeg") if "bacteria" in path.name),
        "virus": sorted(path for path in (root / "PNEUMONIA").glob("*.jpeg") if "virus" in path.name),
    }
    # One image per patient, so that the few demo images show different patients.
    groups = {key: _one_per_patient(paths) for key, paths in groups.items()}
    order = ["normal", "bacteria", "normal", "virus"]
    chosen: list[Path] = []
    positions = {key: 0 for key in groups}
    for step in range(count * len(order)):
        if len(chosen) >= count:
            break
        key = order[step % len(order)]
        if positions[key] < len(groups[key]):
            chosen.append(groups[key][positions[key]])
            positions[key] += 1
    inputs = []
    for path in chosen:
        try:
            data = path.read_bytes()
        except OSError:
            continue
        truth = parse_label(path.parent.name, path.name, label_mode)
        inputs.append(ImageInput(name=f"{path.parent.name}/{path.name}", data=data, source="demo", true_label=truth))
    return inputs


def _one_per_patient(paths: Sequence[Path]) -> list[Path]:
    """Keeps the first image of each patient, in order."""
    from zoidberg.data.dataset import parse_patient_id

    kept, seen = [], set()
    for path in paths:
        patient = parse_patient_id(path.name)
        if patient not in seen:
            seen.add(patient)
            kept.append(path)
    return kept
