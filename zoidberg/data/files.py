"""Files to predict: folders walked recursively, images told apart by content, labels read from class folders."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from zoidberg.data.dataset import CLASS_FOLDERS, parse_label
from zoidberg.data.sniffing import SNIFF_BYTES, sniff_kind

# What sniff_kind calls a file that decode_grayscale can read.
DECODABLE_KINDS = ("jpeg", "png", "gif", "bmp", "tiff", "webp", "dicom")


@dataclass(frozen=True)
class SkippedInput:
    """A path that is not predicted, and why."""

    path: str
    reason: str


def _kind(path: Path) -> str:
    with open(path, "rb") as handle:
        return sniff_kind(handle.read(SNIFF_BYTES), path.name)


def collect_images(paths: Iterable[str | os.PathLike]) -> tuple[list[Path], list[SkippedInput]]:
    """Expands files and folders (recursively, in sorted order) into the image and DICOM files among them.

    Files are recognised by their content, not their extension; everything else is listed
    with its reason, so that a batch never aborts on one bad file.

    Args:
        paths: Files and folders, as given on the command line.

    Returns:
        (image files, skipped inputs), each in the order found.
    """
    images: list[Path] = []
    skipped: list[SkippedInput] = []
    seen: set[Path] = set()
    for given in paths:
        path = Path(given).expanduser()
        if path.is_dir():
            children = sorted(path.rglob("*"))
            candidates = [child for child in children if child.is_file()]
            # A link to nothing (a loop, a deleted target) gets its row, never a silent gap.
            skipped.extend(SkippedInput(str(child), "a link that leads to no file (missing target or a link loop)")
                           for child in children if child.is_symlink() and not child.exists())
        elif path.is_file():
            candidates = [path]
        elif path.is_symlink():
            skipped.append(SkippedInput(str(given), "a link that leads to no file (missing target or a link loop)"))
            continue
        else:
            skipped.append(SkippedInput(str(given), "no such file or folder"))
            continue
        for candidate in candidates:
            resolved = candidate.resolve()
            if resolved in seen:
                continue
            seen.add(resolved)
            try:
                kind = _kind(candidate)
            except OSError as error:
                skipped.append(SkippedInput(str(candidate), f"unreadable: {error.strerror or error}"))
                continue
            if kind in DECODABLE_KINDS:
                images.append(candidate)
            else:
                skipped.append(SkippedInput(str(candidate), f"not an image ({kind})"))
    return images, skipped


def label_from_path(path: str | os.PathLike, label_mode: str = "binary") -> str | None:
    """The class of a file inside a NORMAL or PNEUMONIA folder (Kaggle or flat layout), else None."""
    for parent in Path(path).parents:
        folder = parent.name.upper()
        if folder in CLASS_FOLDERS:
            return parse_label(folder, Path(path).name, label_mode)
    return None
