"""Leakage between a run's training films and a folder it is evaluated on: shared patients, identical files."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from zoidberg.data.duplicates import file_digests
from zoidberg.runs.store import (
    ADAPTATION_FILE,
    DATA_FILE,
    FOLDS_FILE,
    HASHES_FILE,
    Run,
)

# How many shared patients or identical files an evaluation lists by name.
LISTED = 20


def training_patients(run: Run) -> set[str]:
    """The patient ids of the images the run's folds trained and validated on (from folds.csv)."""
    try:
        with run.open_text(FOLDS_FILE) as handle:
            return {row["patient"] for row in csv.DictReader(handle)}
    except (OSError, KeyError):
        return set()


def training_digests(run: Run) -> dict[str, str]:
    """{SHA-256: path} of the run's training images: hashes.json, or read again from the data folder."""
    stored = run.read_json(HASHES_FILE)
    if stored:
        return {digest: path for path, digest in stored.items() if digest}
    data = run.read_json(DATA_FILE) or {}
    root = data.get("root")
    try:
        with run.open_text(FOLDS_FILE) as handle:
            paths = [row["path"] for row in csv.DictReader(handle)]
    except (OSError, KeyError):
        return {}
    if not root or not Path(root).is_dir():
        return {}
    return {digest: path for path, digest in zip(paths, file_digests(root, paths)) if digest}


def leakage_check(run: Run, dataset, rows: np.ndarray, digests: list[str]) -> dict:
    """What the evaluated images share with the run's training data: patient ids and byte-identical files.

    Returns:
        {"shared_patients", "n_shared_patients", "identical_files", "n_identical_files", "clean"}.
    """
    patients = training_patients(run)
    shared = sorted({str(dataset.patients[row]) for row in rows} & patients)
    trained = training_digests(run)
    identical = [
        {"file": dataset.paths[row], "training_file": trained[digest]}
        for row, digest in zip(rows, digests)
        if digest and digest in trained
    ]
    return {
        "shared_patients": shared[:LISTED],
        "n_shared_patients": len(shared),
        "identical_files": identical[:LISTED],
        "n_identical_files": len(identical),
        "clean": not shared and not identical,
    }


def refuse_adaptation_films(run: Run, digests: list[str]) -> None:
    """Refuses to score an adapted run on films its site heads learned from: those figures would be leakage.

    Raises:
        ValueError: Naming how many films, and where the honest figures are.
    """
    if run.kind != "adapt":
        return
    seen = set((run.read_json(ADAPTATION_FILE) or {}).get("site_digests") or ())
    shared = sum(1 for digest in digests if digest and digest in seen)
    if shared:
        raise ValueError(
            f"{shared} of these {len(digests)} films are films adapted run {run.id} learned from (its site folder): scored "
            "here they would be leakage. Its honest figures on them are the cross-fitted ones in its summary "
            "(`python -m zoidberg runs`, or the run view); evaluate it on other films of the site."
        )


def describe_leakage(leakage: dict) -> list[str]:
    """Console and page lines for a leakage check (none when clean)."""
    lines = []
    if leakage["n_shared_patients"]:
        lines.append(
            f"{leakage['n_shared_patients']} patient(s) of this folder are in the run's training data "
            f"(e.g. {', '.join(leakage['shared_patients'][:5])}): their images were seen in training, so the "
            "scores are optimistic."
        )
    if leakage["n_identical_files"]:
        example = leakage["identical_files"][0]
        lines.append(
            f"{leakage['n_identical_files']} file(s) are byte-identical to training images "
            f"(e.g. {example['file']} = {example['training_file']})."
        )
    return lines
