"""Chest X-ray datasets: layout discovery, labels, patient ids, decoding with a disk cache."""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from zoidberg.data.arraycache import aligned_take, stream_bytes
from zoidberg.data.decoding_cache import CACHE_FORMAT_VERSION, ProgressCallback, decode_records, decode_records_to_cache, read_cache, write_cache
from zoidberg.data.demo import is_synthetic_dataset

SPLITS = ("train", "val", "test")
CLASS_FOLDERS = ("NORMAL", "PNEUMONIA")
CLASS_NAMES = {
    "binary": ("normal", "pneumonia"),
    "three-class": ("normal", "bacterial", "viral"),
}
CACHE_DIR_ENV = "ZOIDBERG_CACHE_DIR"
PURPOSES = ("training", "evaluation")
EXPECTED_LAYOUTS = (
    "Expected one of these layouts (class folder names are case-insensitive):\n"
    "  Kaggle:  <root>/train/NORMAL/*.jpeg, <root>/train/PNEUMONIA/*.jpeg "
    "(and optionally val/ and test/ with the same class folders)\n"
    "  Flat:    <root>/NORMAL/*.jpeg, <root>/PNEUMONIA/*.jpeg"
)

# One alternation instead of three patterns: a warm load parses thousands of names, and a
# single match per name keeps that a few milliseconds.
_PATIENT = re.compile(r"(?:(person\d+)_|(NORMAL2-IM-\d+)-\d+|(IM-\d+)-\d+)", re.IGNORECASE)


class DatasetError(ValueError):
    """Raised when a folder cannot be read as a dataset; the message says what to change."""


@dataclass(frozen=True)
class SkippedFile:
    """A file left out of a dataset, and why."""

    path: str
    reason: str


class FileRecord(NamedTuple):
    """One image file found in a dataset folder, before decoding.

    A NamedTuple rather than a frozen dataclass: a warm load builds thousands of these, and
    tuple construction costs a fraction of a frozen dataclass's __init__.
    """

    path: str  # Relative to the dataset root, with '/' separators.
    split: str  # train, val, test, or all for the flat layout.
    class_folder: str  # NORMAL or PNEUMONIA.
    size: int
    mtime_ns: int


@dataclass
class Dataset:
    """Decoded images and their labels, patients and splits.

    Images stay uint8 in memory (N, S, S); the training pipeline scales each batch.
    """

    root: Path
    label_mode: str
    image_size: int
    images: np.ndarray
    labels: np.ndarray
    patients: np.ndarray
    paths: list[str]
    splits: np.ndarray
    class_names: tuple[str, ...]
    skipped: list[SkippedFile] = field(default_factory=list)
    fingerprint: str = ""
    synthetic: bool = False
    from_cache: bool = False
    resize: str = "stretch"
    enhance: str = "none"
    # The labels file the films were named by (data.labeled_films), None for a folder: how the same films load again.
    site_labels: object = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        """Number of classes of the label mode."""
        return len(self.class_names)

    @property
    def has_test_split(self) -> bool:
        """Whether a held-out test split exists."""
        return bool(np.any(self.splits == "test"))

    def training_indices(self) -> np.ndarray:
        """Indices of the pooled train+val images (all images in a flat layout)."""
        return np.flatnonzero(self.splits != "test")

    def test_indices(self) -> np.ndarray:
        """Indices of the held-out test images (empty without a test split)."""
        return np.flatnonzero(self.splits == "test")

    def class_counts(self, indices: np.ndarray | None = None) -> dict[str, int]:
        """Counts images per class name."""
        labels = self.labels if indices is None else self.labels[indices]
        counts = np.bincount(labels, minlength=self.num_classes)
        return {name: int(count) for name, count in zip(self.class_names, counts)}


def parse_patient_id(filename: str) -> str:
    """Returns the patient id encoded in a Kermany file name.

    `personN_...` is patient `personN` (whatever the pathogen), `IM-XXXX-YYYY` is
    `IM-XXXX`, `NORMAL2-IM-XXXX-YYYY` is `NORMAL2-IM-XXXX`; any other name is its own
    patient (its stem).

    Args:
        filename: A file name or path.

    Returns:
        The patient id.
    """
    name = filename.replace("\\", "/").rpartition("/")[2]
    match = _PATIENT.match(name)
    if match is None:
        return name.rpartition(".")[0] or name
    person, normal2, image = match.groups()
    return person.lower() if person else (normal2 or image).upper()


def parse_label(class_folder: str, filename: str, label_mode: str) -> str | None:
    """Returns the class name of a file, or None when the mode cannot label it.

    Args:
        class_folder: NORMAL or PNEUMONIA.
        filename: The file name (three-class mode reads bacteria/virus from it).
        label_mode: "binary" or "three-class".
    """
    if class_folder == "NORMAL":
        return "normal"
    if label_mode == "binary":
        return "pneumonia"
    name = os.path.basename(filename).lower()
    if "bacteria" in name:
        return "bacterial"
    if "virus" in name:
        return "viral"
    return None


def _class_folders(parent: Path) -> dict[str, Path]:
    """Maps NORMAL/PNEUMONIA to the case-insensitive matching subfolders of `parent`."""
    found = {}
    for child in parent.iterdir():
        if child.is_dir() and child.name.upper() in CLASS_FOLDERS:
            found[child.name.upper()] = child
    return found


def find_class_folders(root: str | os.PathLike) -> list[tuple[str, str, Path]]:
    """Finds the (split, class folder, path) triples of a dataset in either layout.

    Raises:
        DatasetError: when the folder is missing or in neither layout.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"Data folder {root} does not exist or is not a folder.\n{EXPECTED_LAYOUTS}")
    split_dirs = {child.name.lower(): child for child in root.iterdir() if child.is_dir() and child.name.lower() in SPLITS}
    triples: list[tuple[str, str, Path]] = []
    if split_dirs:
        for split in SPLITS:
            if split in split_dirs:
                triples += [(split, name, path) for name, path in sorted(_class_folders(split_dirs[split]).items())]
    else:
        triples = [("all", name, path) for name, path in sorted(_class_folders(root).items())]
    if not triples:
        names = ", ".join(sorted(child.name for child in root.iterdir())[:10]) or "nothing"
        raise DatasetError(f"{root} holds no NORMAL/PNEUMONIA class folders (found: {names}).\n{EXPECTED_LAYOUTS}")
    return triples


def unknown_folders(root: str | os.PathLike) -> list[SkippedFile]:
    """Lists the folders a dataset load ignores because their name is no class or split.

    A `COVID/` beside `NORMAL/` and `PNEUMONIA/` (or inside `train/`) is left out; saying
    so beats silently training on less than the user thinks.

    Args:
        root: Dataset root.

    Returns:
        One SkippedFile per ignored folder, with the reason.
    """
    root = Path(root).expanduser()
    split_dirs = [child for child in root.iterdir() if child.is_dir() and child.name.lower() in SPLITS]
    class_reason = "folder ignored: class folders must be named NORMAL or PNEUMONIA"
    if split_dirs:
        # Kaggle layout: splits at the root, class folders inside each split.
        checks = [(root, set(SPLITS), "folder ignored: not a split folder (train, val or test)")]
        checks += [(split_dir, {name.lower() for name in CLASS_FOLDERS}, class_reason) for split_dir in sorted(split_dirs)]
    else:
        checks = [(root, {name.lower() for name in CLASS_FOLDERS}, class_reason)]
    ignored = []
    for parent, allowed, reason in checks:
        for child in sorted(parent.iterdir()):
            if child.is_dir() and not child.name.startswith(".") and child.name.lower() not in allowed:
                ignored.append(SkippedFile(child.relative_to(root).as_posix() + "/", reason))
    return ignored


def scan_dataset(root: str | os.PathLike, unreadable: list | None = None) -> list[FileRecord]:
    """Lists every file of a dataset folder without decoding anything.

    Hidden files (such as .DS_Store) are ignored; every other file is a candidate image.
    Paths are joined as strings because pathlib costs more than the stat calls here.

    Args:
        root: The dataset folder.
        unreadable: When given, a SkippedFile is appended for each entry that cannot be
            read as a file (a link loop, a link to nothing), which is left out either way.
    """
    root = Path(root).expanduser()
    records = []
    for split, class_folder, folder in find_class_folders(root):
        prefix = folder.relative_to(root).as_posix() + "/"
        with os.scandir(folder) as entries:
            files = sorted((entry for entry in entries if not entry.name.startswith(".")), key=lambda item: item.name)
        for entry in files:
            try:
                if not entry.is_file():
                    if entry.is_symlink() and unreadable is not None:
                        unreadable.append(SkippedFile(prefix + entry.name, "a link that leads to no file (missing target or a link loop)"))
                    continue
                stat = entry.stat()
            except OSError as error:
                # A link loop raises ELOOP here: one file is left out, never the whole data set.
                if unreadable is not None:
                    unreadable.append(SkippedFile(prefix + entry.name, f"unreadable: {error.strerror or error}"))
                continue
            records.append(FileRecord(prefix + entry.name, split, class_folder, stat.st_size, stat.st_mtime_ns))
    return records


def fingerprint_records(records: Sequence[FileRecord]) -> str:
    """Hashes the file list (paths, sizes, mtimes) into a short hex fingerprint."""
    digest = hashlib.sha256()
    for record in records:
        # surrogateescape: a file name that is not valid UTF-8 still hashes, byte for byte.
        digest.update(f"{record.path}\0{record.size}\0{record.mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()[:16]


def default_cache_dir() -> Path:
    """Returns $ZOIDBERG_CACHE_DIR or ~/.cache/zoidberg."""
    return Path(os.environ.get(CACHE_DIR_ENV) or Path.home() / ".cache" / "zoidberg").expanduser()


def _check_label_mode(records: Sequence[FileRecord], label_mode: str, root: Path, purpose: str = "training") -> None:
    """Refuses a label mode the data cannot support, before any decoding.

    Training needs both classes outside the test split; an evaluation may hold one class
    only (its AUC is then undefined, which the evaluation says).
    """
    if label_mode not in CLASS_NAMES:
        raise DatasetError(f"label_mode must be one of {', '.join(CLASS_NAMES)}, not {label_mode!r}.")
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {', '.join(PURPOSES)}, not {purpose!r}.")
    folders = {record.class_folder for record in records if record.split != "test"}
    if not records:
        raise DatasetError(f"{root} has class folders but no image files in them.\n{EXPECTED_LAYOUTS}")
    if purpose == "evaluation":
        if label_mode == "three-class":
            pneumonia = [Path(record.path).name.lower() for record in records if record.class_folder == "PNEUMONIA"]
            if pneumonia and not any("bacteria" in name or "virus" in name for name in pneumonia):
                raise DatasetError(
                    "The run is three-class (normal / bacterial / viral), but no PNEUMONIA file name here says "
                    "bacteria or virus, so these images cannot be labeled in its mode. Evaluate a binary run instead."
                )
        return
    if len(folders) < 2:
        only = next(iter(folders)) if folders else "none"
        ignored = [item.path for item in unknown_folders(root)]
        # A PNEUMONIA folder under another name (COVID/, sick/) is the usual cause: name it.
        hint = f" Ignored folder(s), not named as a class: {', '.join(ignored)}." if ignored else ""
        raise DatasetError(
            f"{root} has images of one class only ({only}); training needs both NORMAL and PNEUMONIA images.{hint}"
        )
    if label_mode == "three-class":
        pneumonia = [Path(record.path).name.lower() for record in records if record.class_folder == "PNEUMONIA"]
        missing = [word for word in ("bacteria", "virus") if not any(word in name for name in pneumonia)]
        if missing:
            raise DatasetError(
                "Three-class mode needs PNEUMONIA file names that say the pathogen "
                "(personN_bacteria_M.jpeg and personN_virus_M.jpeg); no file name here contains "
                f"{' or '.join(repr(word) for word in missing)}. Use the binary label mode."
            )


def load_dataset(
    root: str | os.PathLike,
    *,
    label_mode: str = "binary",
    image_size: int = 128,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    progress: ProgressCallback | None = None,
    max_workers: int | None = None,
    purpose: str = "training",
    resize: str = "stretch",
    enhance: str = "none",
) -> Dataset:
    """Loads a dataset folder as uint8 arrays, from the disk cache when it is current.

    Files that cannot be decoded are skipped and listed in `Dataset.skipped` with a
    reason; they never abort the load.

    Args:
        root: Dataset folder (Kaggle or flat layout).
        label_mode: "binary" or "three-class".
        image_size: Side of the square grayscale images.
        cache_dir: Where decoded arrays are cached; defaults to default_cache_dir().
        use_cache: Read and write the cache.
        progress: Called as progress(done, total) while decoding.
        max_workers: Decoding threads (Pillow releases the GIL while decoding).
        purpose: "training" (both classes needed) or "evaluation" (one class is allowed).
        resize: "stretch" or "pad" (zoidberg.data.imaging.resize_square).
        enhance: "none", "equalize" or "clahe", applied after resizing.

    Returns:
        The Dataset.

    Raises:
        DatasetError: for a missing folder, an unknown layout, no images, one class only
            (for training), or three-class mode on names without bacteria/virus.
    """
    root = Path(root).expanduser().resolve()
    unreadable: list[SkippedFile] = []
    records = scan_dataset(root, unreadable)
    _check_label_mode(records, label_mode, root, purpose)
    fingerprint = fingerprint_records(records)
    decoded, from_cache = decode_with_cache(root, records, fingerprint, image_size=image_size, cache_dir=cache_dir, use_cache=use_cache,
                                            progress=progress, max_workers=max_workers, resize=resize, enhance=enhance)
    images, ok_mask, reasons = decoded
    dataset = assemble_dataset(root, records, images, ok_mask, reasons, label_mode, image_size, fingerprint, from_cache)
    dataset.resize, dataset.enhance = resize, enhance
    _check_decoded(dataset, purpose)
    dataset.skipped += unreadable + unknown_folders(root)
    return dataset


def decode_with_cache(root: Path, records: Sequence[FileRecord], fingerprint: str, *, image_size: int, cache_dir=None, use_cache: bool = True,
                      progress: ProgressCallback | None = None, max_workers: int | None = None, resize: str = "stretch",
                      enhance: str = "none") -> tuple[tuple, bool]:
    """Decodes files (paths relative to `root`), from the disk cache of this fingerprint when it is current.

    Returns:
        ((images, ok mask, reasons), whether they came from the cache).
    """
    # The default preprocessing keeps the cache names of earlier versions, so their caches stay valid.
    preprocessing = "" if (resize, enhance) == ("stretch", "none") else f"-{resize}-{enhance}"
    cache_path = Path(cache_dir or default_cache_dir()) / f"images-{fingerprint}-{image_size}px{preprocessing}-v{CACHE_FORMAT_VERSION}"
    decoded = read_cache(cache_path, records) if use_cache else None
    from_cache = decoded is not None
    if decoded is None and use_cache and len(records) * image_size * image_size >= stream_bytes():
        # Larger than this, the images are decoded block by block into the cache file and
        # then read back through its mapping: the data set never has to fit in memory.
        try:
            decode_records_to_cache(cache_path, root, records, image_size, progress, max_workers, resize, enhance)
            decoded = read_cache(cache_path, records)
        except OSError:
            decoded = None  # The cache folder cannot be written: decoded in memory below.
    if decoded is None:
        decoded = decode_records(root, records, image_size, progress, max_workers, resize, enhance)
        if use_cache:
            write_cache(cache_path, records, *decoded)
    return decoded, from_cache


def assemble_dataset(root, records, images, ok_mask, reasons, label_mode, image_size, fingerprint, from_cache) -> Dataset:
    """Builds the Dataset from decoded arrays, skipping failures and unlabelable files."""
    class_names = CLASS_NAMES[label_mode]
    keep, labels, skipped = [], [], []
    for index, record in enumerate(records):
        if not ok_mask[index]:
            skipped.append(SkippedFile(record.path, reasons[index]))
            continue
        label = parse_label(record.class_folder, record.path, label_mode)
        if label is None:
            skipped.append(SkippedFile(record.path, "three-class mode: the file name says neither bacteria nor virus"))
            continue
        keep.append(index)
        labels.append(class_names.index(label))
    keep_array = np.asarray(keep, dtype=np.int64)
    kept = [records[index] for index in keep]
    dataset = Dataset(
        root=root,
        label_mode=label_mode,
        image_size=image_size,
        images=aligned_take(images, keep_array) if len(keep) != len(records) else images,
        labels=np.asarray(labels, dtype=np.int64),
        patients=np.asarray([parse_patient_id(record.path) for record in kept], dtype=object),
        paths=[record.path for record in kept],
        splits=np.asarray([record.split for record in kept], dtype=object),
        class_names=class_names,
        skipped=skipped,
        fingerprint=fingerprint,
        synthetic=is_synthetic_dataset(root),
        from_cache=from_cache,
    )
    return dataset


def _check_decoded(dataset: Dataset, purpose: str = "training") -> None:
    """Refuses a dataset without usable images (of some class, for training) after decoding."""
    if purpose == "evaluation":
        if len(dataset) == 0:
            raise DatasetError(
                f"No readable image in {dataset.root} ({len(dataset.skipped)} file(s) skipped: "
                + "; ".join(f"{item.path}: {item.reason}" for item in dataset.skipped[:3])
                + ("; ..." if len(dataset.skipped) > 3 else "")
                + "). Nothing was evaluated."
            )
        return
    counts = dataset.class_counts(dataset.training_indices())
    empty = [name for name, count in counts.items() if count == 0]
    if empty:
        raise DatasetError(
            f"No readable training images of class {', '.join(empty)} in {dataset.root} "
            f"({len(dataset.skipped)} files were skipped as unreadable)."
        )


def time_load(root, **kwargs) -> tuple[Dataset, float]:
    """Loads a dataset and returns it with the wall time in seconds (for benchmarks)."""
    start = time.perf_counter()
    dataset = load_dataset(root, **kwargs)
    return dataset, time.perf_counter() - start
