"""A site's labeled films read from its labels file as a Dataset, decoded and cached as a data folder is."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from zoidberg.data.dataset import CLASS_NAMES, Dataset, DatasetError, FileRecord, SkippedFile, assemble_dataset, decode_with_cache, parse_patient_id
from zoidberg.data.site_labels import SiteLabels

CLASS_FOLDER_OF = {"normal": "NORMAL", "pneumonia": "PNEUMONIA"}


def load_labeled_films(
    labels: SiteLabels,
    *,
    image_size: int = 128,
    cache_dir=None,
    use_cache: bool = True,
    progress=None,
    resize: str = "stretch",
    enhance: str = "none",
) -> Dataset:
    """The films a labels file calls normal or pneumonia, as a binary Dataset.

    Films are read where the file says (relative paths from the labels file's folder). The
    patient is the file's `patient` column, else what the file name says (data.dataset's rule).
    Films labeled not usable, films readers disagree on, and films that cannot be found or read
    are listed in `skipped` with why.

    Args:
        labels: The resolved labels file (data.site_labels.read_labels).
        image_size, cache_dir, use_cache, progress, resize, enhance: As data.dataset.load_dataset.

    Returns:
        The Dataset; its fingerprint changes with any label or any film's size or time.

    Raises:
        DatasetError: No usable film of one class.
    """
    found, skipped = [], []
    for entry in labels.usable():
        path = labels.resolve(entry)
        if path is None:
            skipped.append(SkippedFile(entry.film, "a PACS film without a local file: label it from a folder, or keep the file the Label page saved"))
        elif not path.is_file():
            skipped.append(SkippedFile(entry.file, "no such file"))
        else:
            found.append((path.resolve(), entry))
    skipped += [SkippedFile(film, "not usable, said its reader") for film, entry in labels.films.items() if entry.label == "not_usable"]
    skipped += [SkippedFile(film, "readers disagree (" + ", ".join(f"{reader}: {label}" for reader, label in said.items()) + ")")
                for film, said in labels.disagreements.items()]
    counts = {name: sum(entry.label == name for _, entry in found) for name in CLASS_FOLDER_OF}
    if not all(counts.values()):
        missing = " and ".join(name for name, count in counts.items() if not count)
        raise DatasetError(f"{labels.path} has no usable {missing} film ({counts['normal']} normal, {counts['pneumonia']} pneumonia, "
                           f"{len(skipped)} left out): adaptation needs films of both classes.")
    root = Path(os.path.commonpath([str(path.parent) for path, _ in found]))
    records = []
    for path, entry in found:
        stat = path.stat()
        records.append(FileRecord(path.relative_to(root).as_posix(), "all", CLASS_FOLDER_OF[entry.label], stat.st_size, stat.st_mtime_ns))
    fingerprint = _fingerprint(labels, records)
    decoded, from_cache = decode_with_cache(root, records, fingerprint, image_size=image_size, cache_dir=cache_dir, use_cache=use_cache,
                                            progress=progress, resize=resize, enhance=enhance)
    dataset = assemble_dataset(root, records, *decoded, "binary", image_size, fingerprint, from_cache)
    patient_of = {record.path: entry.patient or parse_patient_id(entry.file) for record, (_, entry) in zip(records, found)}
    dataset.patients = np.asarray([patient_of[path] for path in dataset.paths], dtype=object)
    dataset.resize, dataset.enhance, dataset.site_labels = resize, enhance, labels
    dataset.skipped += skipped
    if len(np.unique(dataset.labels)) < len(CLASS_NAMES["binary"]):
        raise DatasetError(f"Of the films {labels.path} labels, only one class could be read: adaptation needs both.")
    return dataset


def load_again(dataset: Dataset, *, label_mode: str, image_size: int, resize: str = "stretch", enhance: str = "none") -> Dataset:
    """The same films read at another size or preprocessing (an ensemble member's, a frozen member's): from their folder or their labels file."""
    from zoidberg.data.dataset import load_dataset

    if dataset.site_labels is not None:
        return load_labeled_films(dataset.site_labels, image_size=image_size, resize=resize, enhance=enhance)
    return load_dataset(dataset.root, label_mode=label_mode, image_size=image_size, resize=resize, enhance=enhance, purpose="evaluation")


def _fingerprint(labels: SiteLabels, records: list[FileRecord]) -> str:
    """The labels' digest and every film's path, size and time, in one short hex string."""
    digest = hashlib.sha256(labels.digest.encode())
    for record in records:
        digest.update(f"{record.path}\0{record.class_folder}\0{record.size}\0{record.mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()[:16]
