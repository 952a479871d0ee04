"""Carving a patient-disjoint hold-out folder out of a dataset, as links, to evaluate a run on patients it never saw."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoidberg.data.dataset import parse_patient_id, scan_dataset
from zoidberg.data.demo import MARKER_NAME, is_synthetic_dataset
from zoidberg.data.folds import make_group_split

HOLDOUT_METHODS = ("patient", "acquisition")
# The Kermany normals come from two acquisitions: IM-XXXX and NORMAL2-IM-XXXX patients.
ACQUISITION_PREFIX = "NORMAL2-"


@dataclass(frozen=True)
class Holdout:
    """What was carved.

    Attributes:
        rest: The folder of the remaining images (train on it).
        holdout: The folder of the held-out images (evaluate on it).
        counts: {"rest": {class folder: images}, "holdout": {...}}.
        patients: {"rest": patients, "holdout": patients}.
        method: How patients were chosen.
    """

    rest: Path
    holdout: Path
    counts: dict
    patients: dict
    method: str


def carve_holdout(
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    fraction: float = 0.2,
    random_state: int = 0,
    method: str = "patient",
) -> Holdout:
    """Splits a dataset's train+val images into two patient-disjoint flat folders of links.

    The test split, if any, is left out of both. Files are linked, never copied, so the
    folders cost no space; each keeps its file name, so patients and labels read as before.

    Args:
        data_dir: The dataset (Kaggle or flat layout).
        out_dir: A new or empty folder; rest/ and holdout/ are made inside it.
        fraction: About this share of the patients (stratified by class) is held out.
        random_state: Seed of the choice.
        method: "patient" (a stratified, patient-grouped share) or "acquisition" (every
            NORMAL2-IM-* normal held out, with a patient-grouped share of the pneumonia
            images: a shifted proxy, the normals coming from another acquisition).

    Returns:
        The Holdout.

    Raises:
        ValueError: For a fraction outside (0, 0.9], an unknown method, or an out folder
            that is not empty.
    """
    if not 0 < fraction <= 0.9:
        raise ValueError(f"fraction must be above 0 and at most 0.9 (e.g. 0.2), not {fraction!r}.")
    if method not in HOLDOUT_METHODS:
        raise ValueError(f"method must be one of {', '.join(HOLDOUT_METHODS)}, not {method!r}.")
    root = Path(data_dir).expanduser().resolve()
    out = Path(out_dir).expanduser().resolve()
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} is not empty: choose a new folder for the hold-out.")
    records = [record for record in scan_dataset(root) if record.split != "test"]
    labels = np.array([record.class_folder == "PNEUMONIA" for record in records], dtype=int)
    patients = np.array([parse_patient_id(record.path) for record in records], dtype=object)
    held = np.zeros(len(records), dtype=bool)
    if method == "patient":
        _, validation = make_group_split(labels, patients, fraction, random_state)
        held[validation] = True
    else:
        other = np.array([str(patient).startswith(ACQUISITION_PREFIX) for patient in patients])
        held |= other & (labels == 0)
        pneumonia = np.flatnonzero(labels == 1)
        _, chosen = make_group_split(np.zeros(len(pneumonia), dtype=int), patients[pneumonia], fraction, random_state)
        held[pneumonia[chosen]] = True
        if not held[labels == 0].any():
            raise ValueError(f"{root} has no {ACQUISITION_PREFIX}IM-* normals, so it has no second acquisition to hold out.")
    counts, patient_counts = {}, {}
    for name, mask in (("rest", ~held), ("holdout", held)):
        folder = out / name
        counts[name], patient_counts[name] = {}, int(len(set(patients[mask])))
        for record, keep in zip(records, mask):
            if not keep:
                continue
            target = folder / record.class_folder / Path(record.path).name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(root / record.path, target)
            counts[name][record.class_folder] = counts[name].get(record.class_folder, 0) + 1
        if is_synthetic_dataset(root):
            # Carved from the synthetic demo set, both halves must still say so everywhere.
            os.symlink(root / MARKER_NAME, folder / MARKER_NAME)
    return Holdout(out / "rest", out / "holdout", counts, patient_counts, method)
