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


def _training_rows(run: Run) -> tuple[str | None, list[str]]:
    """The run's training data folder (data.json) and its images' paths in it (folds.csv)."""
    root = (run.read_json(DATA_FILE) or {}).get("root")
    try:
        with run.open_text(FOLDS_FILE) as handle:
            return root, [row["path"] for row in csv.DictReader(handle)]
    except (OSError, KeyError):
        return root, []


def near_duplicates(run: Run, dataset, rows: np.ndarray, skip: set[int] = frozenset()) -> dict:
    """The evaluated films that are near-duplicates of training films (the same film re-saved, resized or cropped a little).

    The training films are read again from their folder (the decoded-image cache makes this
    quick), and every pair is compared by its 256-bit perceptual hash, as the data audit does.

    Args:
        run: The run (data.json and folds.csv name its training films).
        dataset: The evaluated folder's dataset.
        rows: Its evaluated rows.
        skip: Rows already found byte-identical to a training film.

    Returns:
        {"checked": bool, "why": reason when not checked, "matches": [{"file", "training_file", "bits"}], "n": int}.
    """
    from zoidberg.data.dataset import DatasetError, load_dataset
    from zoidberg.data.duplicates import NEAR_DUPLICATE_BITS, perceptual_hashes

    root, paths = _training_rows(run)
    if not root or not paths or not Path(root).is_dir():
        return {"checked": False, "why": "the run's training folder is not on this machine", "matches": [], "n": 0}
    try:
        training = load_dataset(root, image_size=dataset.image_size, purpose="evaluation")
    except (DatasetError, OSError) as error:
        return {"checked": False, "why": f"the training folder cannot be read ({error})", "matches": [], "n": 0}
    where = {path: index for index, path in enumerate(training.paths)}
    training_rows = np.array([where[path] for path in paths if path in where], dtype=int)
    evaluated = np.array([row for row in rows if int(row) not in skip], dtype=int)
    if not len(training_rows) or not len(evaluated):
        return {"checked": True, "why": "", "matches": [], "n": 0}
    trained = perceptual_hashes(training.images[training_rows])
    found = perceptual_hashes(dataset.images[evaluated])
    matches = []
    for position, row in enumerate(evaluated):
        distances = np.bitwise_count(found[position][None, :] ^ trained).sum(axis=1)
        closest = int(np.argmin(distances))
        if distances[closest] <= NEAR_DUPLICATE_BITS:
            matches.append({"file": dataset.paths[row], "training_file": training.paths[training_rows[closest]], "bits": int(distances[closest])})
    return {"checked": True, "why": "", "matches": matches[:LISTED], "n": len(matches)}


def leakage_check(run: Run, dataset, rows: np.ndarray, digests: list[str], *, other_site: bool = False) -> dict:
    """What the evaluated images share with the run's training data: file-name patient numbers, identical and near-duplicate films.

    Args:
        run: The run.
        dataset: The evaluated folder's dataset.
        rows: Its evaluated rows.
        digests: The SHA-256 of each evaluated row's file.
        other_site: The user stated that the folder comes from another site, where the same
            file-name patient number names another child.

    Returns:
        {"shared_patients", "n_shared_patients", "identical_files", "n_identical_files",
        "near_duplicates", "n_near_duplicates", "near_checked", "other_site", "clean"}; clean
        means no film was found identical or nearly so (a number match alone is no evidence).
    """
    patients = training_patients(run)
    shared = sorted({str(dataset.patients[row]) for row in rows} & patients)
    trained = training_digests(run)
    identical_rows = {int(row) for row, digest in zip(rows, digests) if digest and digest in trained}
    identical = [
        {"file": dataset.paths[row], "training_file": trained[digest]}
        for row, digest in zip(rows, digests)
        if digest and digest in trained
    ]
    near = near_duplicates(run, dataset, rows, identical_rows)
    return {
        "shared_patients": shared[:LISTED],
        "n_shared_patients": len(shared),
        "identical_files": identical[:LISTED],
        "n_identical_files": len(identical),
        "near_duplicates": near["matches"],
        "n_near_duplicates": near["n"],
        "near_checked": near["checked"],
        "near_unchecked_reason": near["why"],
        "other_site": bool(other_site),
        "clean": not identical and not near["n"],
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


# The openings of the leakage lines that evaluations made before this wording stored in their
# notes; the page and the report leave those out and write the lines of describe_leakage.
_OLD_LEAKAGE_NOTES = ("patient(s) of this folder are in the run's training data", "file(s) are byte-identical to training images")


def describe_leakage(leakage: dict) -> list[str]:
    """The page's, the console's and the report's sentences for a leakage check (none when nothing matched).

    Byte-identical and near-duplicate films are evidence that the model saw those films; a
    matching file-name patient number alone is not: in the Kermany data a person number
    names the same child only within one split, and another site's numbers name other
    children. Scores are called optimistic only on evidence.
    """
    lines = []
    identical, near = leakage.get("n_identical_files", 0), leakage.get("n_near_duplicates", 0)
    if identical:
        example = leakage["identical_files"][0]
        lines.append(
            f"{identical} film(s) are byte-identical to training films (e.g. {example['file']} = {example['training_file']}): "
            "the model saw them in training, so its scores on them are optimistic."
        )
    if near:
        example = leakage["near_duplicates"][0]
        lines.append(
            f"{near} film(s) are near-duplicates of training films (perceptual hash within {example['bits']} of 256 bits, e.g. "
            f"{example['file']} ~ {example['training_file']}): most likely the same film saved again, so the scores on them "
            "are likely optimistic."
        )
    shared = leakage.get("n_shared_patients", 0)
    if shared and leakage.get("other_site"):
        lines.append(
            f"This folder was stated to come from another site: its {shared} file-name patient number(s) that also occur in "
            "the training data (e.g. " + ", ".join(leakage["shared_patients"][:5]) + ") are taken as other children."
        )
    elif shared:
        evidence = (
            "Films identical or nearly so are listed above."
            if identical or near
            else "No film is byte-identical or a near-duplicate of a training film"
            + ("" if leakage.get("near_checked", False) else f" (near-duplicates not checked: {leakage.get('near_unchecked_reason') or 'unknown'})")
            + ", so this is no evidence that the model saw these children: the scores are not called optimistic on it."
        )
        lines.append(
            f"{shared} patient(s) of this folder have the same file-name patient number as training patients (e.g. "
            + ", ".join(leakage["shared_patients"][:5])
            + "). A number match is weak evidence: in this data set a person number names the same child only within one "
            f"split, and another site's numbers name other children. {evidence} If this folder comes from another site, "
            "say so (evaluate --other-site, or the checkbox) and the match is set aside."
        )
    return lines


def evaluation_notes(evaluation: dict) -> list[str]:
    """An evaluation's notes with its leakage sentences in today's wording (older evaluations stored other ones)."""
    notes = [note for note in evaluation.get("notes") or [] if not any(opening in note for opening in _OLD_LEAKAGE_NOTES)]
    leakage = evaluation.get("leakage")
    return notes + (describe_leakage(leakage) if isinstance(leakage, dict) else [])
