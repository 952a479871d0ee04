"""Patient-grouped, stratified k-fold splits on indices (sklearn's StratifiedGroupKFold)."""

from __future__ import annotations

import numpy as np


def check_fold_count(labels: np.ndarray, patients: np.ndarray, n_splits: int, class_names=None) -> None:
    """Refuses a k that some class cannot fill with distinct patients.

    Args:
        labels: Integer labels.
        patients: Patient ids, one per image.
        n_splits: Requested number of folds k.
        class_names: Optional names for the message.

    Raises:
        ValueError: naming the smallest class and the largest k it allows.
    """
    if n_splits < 2:
        raise ValueError("k must be at least 2.")
    for label in np.unique(labels):
        patient_count = len(np.unique(patients[labels == label]))
        if patient_count < n_splits:
            name = class_names[label] if class_names is not None else str(label)
            raise ValueError(
                f"k = {n_splits} is more than the {patient_count} patients of class '{name}': "
                f"every fold needs a patient of each class. Choose k ≤ {patient_count}."
            )


def make_folds(labels: np.ndarray, patients: np.ndarray, n_splits: int, random_state: int) -> np.ndarray:
    """Assigns each sample a fold so that no patient is in two folds.

    Args:
        labels: Integer labels, shape (N,).
        patients: Patient ids, shape (N,).
        n_splits: Number of folds k.
        random_state: Seed of the shuffle.

    Returns:
        An int array (N,) of fold numbers 0..k-1.
    """
    labels = np.asarray(labels)
    patients = np.asarray(patients)
    check_fold_count(labels, patients, n_splits)
    # Imported here: the command line's parser reads this module, and scikit-learn takes seconds to import.
    from sklearn.model_selection import StratifiedGroupKFold

    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=random_state)
    fold_of = np.full(len(labels), -1, dtype=np.int64)
    for fold, (_, validation) in enumerate(splitter.split(np.zeros(len(labels)), labels, groups=patients)):
        fold_of[validation] = fold
    return fold_of


def iter_fold_indices(fold_of: np.ndarray):
    """Yields (fold, train_indices, validation_indices) for a fold assignment."""
    for fold in range(int(fold_of.max()) + 1):
        yield fold, np.flatnonzero(fold_of != fold), np.flatnonzero(fold_of == fold)


def make_group_split(labels: np.ndarray, patients: np.ndarray, validation_fraction: float, random_state: int):
    """Splits indices into patient-disjoint train and validation parts (for tuning).

    Uses one fold of StratifiedGroupKFold with k = round(1 / validation_fraction) so the
    split is stratified as well as grouped; falls back to GroupShuffleSplit otherwise.

    Returns:
        (train_indices, validation_indices)
    """
    n_splits = max(2, int(round(1.0 / validation_fraction)))
    try:
        fold_of = make_folds(labels, patients, n_splits, random_state)
        return np.flatnonzero(fold_of != 0), np.flatnonzero(fold_of == 0)
    except ValueError:
        from sklearn.model_selection import GroupShuffleSplit

        splitter = GroupShuffleSplit(n_splits=1, test_size=validation_fraction, random_state=random_state)
        train, validation = next(splitter.split(np.zeros(len(labels)), labels, groups=patients))
        return train, validation


def fold_table(paths, patients, labels, fold_of, class_names) -> list[dict]:
    """Returns rows `path, patient, label, fold` (fold 1-based) for folds.csv."""
    return [
        {"path": path, "patient": patient, "label": class_names[label], "fold": int(fold) + 1}
        for path, patient, label, fold in zip(paths, patients, labels, fold_of)
    ]


def fold_overview(labels, patients, fold_of, class_names) -> list[dict]:
    """Per fold: image count, patients and images per class, for previews."""
    rows = []
    for fold in range(int(fold_of.max()) + 1):
        mask = fold_of == fold
        row = {"fold": fold + 1, "images": int(mask.sum()), "patients": len(np.unique(patients[mask]))}
        for index, name in enumerate(class_names):
            row[name] = int(np.sum(labels[mask] == index))
        rows.append(row)
    return rows


def shared_patients(patients, groups) -> set:
    """Returns the patients found in more than one group (empty when grouping holds).

    Args:
        patients: Patient ids, one per image.
        groups: The group of each image: a fold number, a split name, ...

    Returns:
        The patients whose images sit in two groups or more.
    """
    groups_per_patient: dict = {}
    for patient, group in zip(patients, groups):
        groups_per_patient.setdefault(patient, set()).add(group.item() if hasattr(group, "item") else group)
    return {patient for patient, seen in groups_per_patient.items() if len(seen) > 1}
