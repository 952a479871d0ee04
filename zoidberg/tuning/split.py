"""The patient-grouped train/validation split that scores every trial of a search."""

from __future__ import annotations

import numpy as np

from zoidberg.data.folds import make_group_split


def tuning_split(dataset, validation_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Splits the pooled train+val images into patient-disjoint train and validation parts.

    The test split is never part of either: only Dataset.training_indices() are split.

    Args:
        dataset: A loaded Dataset.
        validation_fraction: Share of patients (about) in the validation part.
        seed: Split seed.

    Returns:
        (train_indices, validation_indices) into the dataset's arrays.
    """
    indices = dataset.training_indices()
    train_positions, validation_positions = make_group_split(
        dataset.labels[indices], dataset.patients[indices], validation_fraction, seed
    )
    return indices[np.sort(train_positions)], indices[np.sort(validation_positions)]


def split_facts(dataset, train_indices: np.ndarray, validation_indices: np.ndarray) -> dict:
    """Describes the split for split.json and the UI."""
    return {
        "root": str(dataset.root),
        "fingerprint": dataset.fingerprint,
        "synthetic": dataset.synthetic,
        "class_names": list(dataset.class_names),
        "n_train": int(len(train_indices)),
        "n_validation": int(len(validation_indices)),
        "n_train_patients": int(len(np.unique(dataset.patients[train_indices]))),
        "n_validation_patients": int(len(np.unique(dataset.patients[validation_indices]))),
        "train_class_counts": dataset.class_counts(train_indices),
        "validation_class_counts": dataset.class_counts(validation_indices),
        "n_test_held_out": int(len(dataset.test_indices())),
        "validation_patients": sorted(map(str, np.unique(dataset.patients[validation_indices]))),
    }


