"""What a user must know about a loaded dataset: counts per split and class, patients, leakage, skipped files."""

from __future__ import annotations

import numpy as np

from zoidberg.data.dataset import SPLITS, Dataset
from zoidberg.data.folds import shared_patients


def split_class_rows(dataset: Dataset) -> list[dict]:
    """Counts images per split and class.

    Args:
        dataset: The loaded dataset.

    Returns:
        Records with split, class and images.
    """
    rows = []
    present = set(dataset.splits.tolist())
    for split in [name for name in (*SPLITS, "all") if name in present]:
        indices = np.flatnonzero(dataset.splits == split)
        for name, count in dataset.class_counts(indices).items():
            rows.append({"split": split, "class": name, "images": count})
    return rows


def images_per_patient(dataset: Dataset, indices: np.ndarray) -> dict[str, list[int]]:
    """Lists how many images each patient has, per class.

    Args:
        dataset: The loaded dataset.
        indices: Which images to count.

    Returns:
        {class name: [image count of each patient]}.
    """
    result = {}
    for label, name in enumerate(dataset.class_names):
        patients = dataset.patients[indices][dataset.labels[indices] == label]
        _, counts = np.unique(patients, return_counts=True)
        result[name] = counts.tolist()
    return result


def patients_in_several_splits(dataset: Dataset) -> list[str]:
    """Finds patients whose images sit in more than one split folder (train/val/test leakage).

    Args:
        dataset: The loaded dataset.

    Returns:
        Sorted patient ids.
    """
    return sorted(map(str, shared_patients(dataset.patients, dataset.splits)))


def describe_dataset(dataset: Dataset, limit: int = 20) -> list[str]:
    """Returns console lines that say what a user must know about a loaded dataset.

    Synthetic demo data is named as such, and each skipped file is listed with its
    reason (the first `limit`, then a count).

    Args:
        dataset: The loaded dataset.
        limit: Most skipped files to list.

    Returns:
        Lines without trailing newlines (none for real data with nothing skipped).
    """
    lines = []
    if dataset.synthetic:
        lines.append("SYNTHETIC demo data (drawn by zoidberg.demo, not real X-rays): metrics say nothing about medicine.")
    if dataset.skipped:
        lines.append(f"{len(dataset.skipped)} file(s) skipped:")
        lines += [f"  {skipped.path}: {skipped.reason}" for skipped in dataset.skipped[:limit]]
        if len(dataset.skipped) > limit:
            lines.append(f"  ... and {len(dataset.skipped) - limit} more (all listed in the run's data.json)")
    return lines
