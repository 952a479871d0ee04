"""Figures by subgroup: bacterial and viral pneumonia (named by the Kermany files), and view, sex and age where DICOM headers give them."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

# Kermany's pneumonia files say which: person1_bacteria_1.jpeg, person1_virus_6.jpeg.
_KIND = re.compile(r"_(bacteria|virus)_", re.IGNORECASE)
# Fewer films than this make no subgroup row (its interval would span everything).
MIN_FILMS = 10
AGE_BANDS = ((0, 1, "under 1 year"), (1, 6, "1 to 5 years"), (6, 18, "6 to 17 years"), (18, 200, "adult"))


def pneumonia_kind(path: str) -> str | None:
    """"bacterial" or "viral" from a Kermany file name, else None."""
    found = _KIND.search(Path(str(path)).name)
    return None if found is None else ("bacterial" if found.group(1).lower() == "bacteria" else "viral")


def header_groups(path: str | Path) -> dict:
    """The subgroups a DICOM film's header names: view (AP/PA), sex and age band; {} for other files."""
    from zoidberg.data.dicom_facts import read_dicom_facts

    facts = read_dicom_facts(Path(path)) if Path(path).suffix.lower() in (".dcm", ".dicom", "") else None
    if facts is None:
        return {}
    groups = {}
    if facts.view_position in ("AP", "PA"):
        groups["view"] = f"{facts.view_position} view"
    if facts.age_years is not None:
        groups["age"] = "aged " + next(label for low, high, label in AGE_BANDS if low <= facts.age_years < high)
    sex = _sex(path)
    if sex:
        groups["sex"] = sex
    return groups


def _sex(path) -> str | None:
    import pydicom

    try:
        value = str(pydicom.dcmread(str(path), stop_before_pixels=True, specific_tags=["PatientSex"]).get("PatientSex", "")).upper()
    except Exception:  # An unreadable header names no subgroup.
        return None
    return {"F": "female", "M": "male"}.get(value)


def bootstrap_rate(correct: np.ndarray, patients: np.ndarray, *, replicates: int = 2000, random_state: int = 0) -> dict:
    """The share of films decided right, with its percentile interval from resampling patients (not films).

    Returns:
        {"estimate", "low", "high"}.
    """
    correct = np.asarray(correct, dtype=float)
    unique, inverse = np.unique(np.asarray(patients), return_inverse=True)
    right = np.bincount(inverse, weights=correct, minlength=len(unique))
    films = np.bincount(inverse, minlength=len(unique)).astype(float)
    rng = np.random.default_rng(random_state)
    draws = rng.integers(0, len(unique), (replicates, len(unique)))
    rates = right[draws].sum(axis=1) / films[draws].sum(axis=1)
    return {"estimate": float(correct.mean()), "low": float(np.quantile(rates, 0.025)), "high": float(np.quantile(rates, 0.975))}


def subgroup_figures(paths: Sequence[str], labels: np.ndarray, decided: np.ndarray, patients: np.ndarray, *, root: str | Path | None = None,
                     random_state: int = 0) -> list[dict]:
    """One row per subgroup with at least MIN_FILMS films: how often the decision is right, with its patient-bootstrap interval.

    Args:
        paths: The films (relative to root, or absolute).
        labels: 0/1 labels.
        decided: 0/1 decisions at the run's threshold.
        patients: Patient ids (the bootstrap draws patients).
        root: The folder the paths are relative to (to read DICOM headers).
        random_state: Seed.

    Returns:
        [{"by", "subgroup", "films", "patients", "measure", "estimate", "low", "high"}], the pneumonia kinds first.
    """
    labels, decided, patients = np.asarray(labels).astype(int), np.asarray(decided).astype(int), np.asarray(patients).astype(str)
    members: dict[tuple[str, str], list[int]] = {}
    for row, path in enumerate(paths):
        kind = pneumonia_kind(path) if labels[row] == 1 else None
        if kind:
            members.setdefault(("pneumonia", f"{kind} pneumonia"), []).append(row)
        if labels[row] == 0:
            members.setdefault(("pneumonia", "normal films"), []).append(row)
        full = Path(root) / path if root is not None and not Path(path).is_absolute() else Path(path)
        for by, group in header_groups(full).items():
            members.setdefault((by, group), []).append(row)
    if not any(by == "pneumonia" and group != "normal films" for by, group in members):
        members = {key: rows for key, rows in members.items() if key[0] != "pneumonia"}
    out = []
    for (by, group), rows in sorted(members.items(), key=lambda item: (item[0][0] != "pneumonia", item[0])):
        rows = np.asarray(rows)
        if len(rows) < MIN_FILMS:
            continue
        classes = set(labels[rows].tolist())
        measure = "sensitivity" if classes == {1} else "specificity" if classes == {0} else "accuracy"
        interval = bootstrap_rate(labels[rows] == decided[rows], patients[rows], random_state=random_state)
        out.append({"by": by, "subgroup": group, "films": int(len(rows)), "patients": int(len(np.unique(patients[rows]))),
                    "measure": measure, "estimate": interval["estimate"], "low": interval["low"], "high": interval["high"]})
    return out


def run_subgroups(run) -> list[dict]:
    """The run's out-of-fold decisions by subgroup (an adapted run: its site films, cross-fitted)."""
    from zoidberg.evaluation.out_of_fold import read_out_of_fold

    out_of_fold = read_out_of_fold(run)
    if len(out_of_fold.class_names) != 2:
        return []
    summary = run.summary() or {}
    point = run.read_json("operating_point.json") or {}
    threshold = point.get("threshold", summary.get("threshold", 0.5))
    scale = (point.get("choice") or {}).get("probabilities", "raw")
    positive = out_of_fold.scaled(scale)[:, 1]
    decided = (positive >= threshold).astype(int)
    part_thresholds = (run.read_json("adaptation.json") or {}).get("part_thresholds") if run.kind == "adapt" else None
    if part_thresholds:
        # An adapted run's site films, decided as its run view decides them: each part at its own threshold.
        decided = (out_of_fold.raw[:, 1] >= np.asarray(part_thresholds)[out_of_fold.fold_of]).astype(int)
    root = (run.read_json("data.json") or {}).get("root")
    return subgroup_figures(out_of_fold.paths, (out_of_fold.labels == 1).astype(int), decided, out_of_fold.patients, root=root)


def evaluation_subgroups(run, evaluation: dict) -> list[dict]:
    """A stored evaluation's decisions by subgroup, at the threshold it is shown at (current_evaluations), its films read for DICOM headers."""
    from zoidberg.evaluation.stored import read_predictions

    stored = read_predictions(run, evaluation["name"])
    if len(stored["class_names"]) != 2:
        return []
    scores = stored["calibrated"] if evaluation.get("scale") == "calibrated" and stored["calibrated"] is not None else stored["raw"]
    threshold = evaluation.get("threshold", 0.5)
    return subgroup_figures(stored["paths"], (stored["labels"] == 1).astype(int), (scores[:, 1] >= threshold).astype(int),
                            stored["patients"], root=evaluation.get("data_dir"))
