"""A run's out-of-distribution gate: fitted on its training films when it ends, read (or fitted on first use) when it predicts."""

from __future__ import annotations

import csv
from collections.abc import Callable

import numpy as np

from zoidberg.data.ood import OodGate, fit_gate
from zoidberg.data.feature_gate import FeatureGate, fit_feature_gate
from zoidberg.runs.store import FOLDS_FILE, OOD_FEATURES_FILE, OOD_GATE_FILE, Run, RunStore, write_atomically


class GateUnavailable(ValueError):
    """Raised when a run has no gate and none can be fitted; the message says why."""


def fit_run_gate(
    run: Run, images: np.ndarray, indices: np.ndarray, fold_of: np.ndarray, say: Callable[[str], None] = print
) -> OodGate | None:
    """Fits the gate on a run's training films and stores it in the run (ood_gate.npz).

    Args:
        run: The run; the gate is written into its folder.
        images: The data set's films, (N, S, S) uint8, as the models saw them.
        indices: The rows of its pooled training films.
        fold_of: The fold (0-based) of each of them.
        say: Console reporter.

    Returns:
        The gate, or None when the run has too few films for one.
    """
    gate = fit_gate(images, fold_of, indices=indices)
    if gate is None:
        say("No out-of-distribution gate: too few training films to set its threshold.")
        return None
    data = gate.to_bytes()
    write_atomically(run.path / OOD_GATE_FILE, lambda path: path.write_bytes(data))
    say(f"Gate: {gate.describe()}.")
    return gate


def fit_run_feature_gate(run: Run, features: np.ndarray, fold_of: np.ndarray, images=None, say: Callable[[str], None] = print,
                         paths=()) -> FeatureGate | None:
    """Fits the gate's feature stage on a frozen run's training films' features and stores it (ood_features.npz).

    Args:
        run: A run with a frozen ImageNet backbone.
        features: (N, D) pooled features of its training films, in fold_of's order.
        fold_of: The fold (0-based) of each.
        images: The training films (uint8), in the same order, for the side-view symmetry floor.
        say: Console reporter.
        paths: The training films' files: the JPEG quality they were stored at is read from them.
    """
    from zoidberg.data.jpeg_quality import stored_quality

    gate = fit_feature_gate(features, fold_of, images, stored_quality=stored_quality(paths))
    if gate is None:
        return None
    data = gate.to_bytes()
    write_atomically(run.path / OOD_FEATURES_FILE, lambda path: path.write_bytes(data))
    say(f"Gate: {gate.describe()}.")
    return gate


def load_run_feature_gate(run: Run) -> FeatureGate | None:
    """A frozen run's feature stage, fitted first from its training folder's cached features for an older run; None where it cannot be."""
    path = run.path / OOD_FEATURES_FILE
    if path.is_file():
        try:
            return FeatureGate.from_bytes(path.read_bytes())
        except (OSError, ValueError):
            pass
    try:
        return _fit_features_from_training_folder(run)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _fit_features_from_training_folder(run: Run) -> FeatureGate | None:
    """Fits the feature stage of an older frozen run from its training folder (features from the cache) and folds.csv."""
    from zoidberg.config import RunConfig
    from zoidberg.data.dataset import load_dataset
    from zoidberg.inference.features import load_or_compute_features

    config = RunConfig.from_dict(run.config)
    if config.model.transfer_mode != "frozen" or not config.model.weights:
        return None
    with run.open_text(FOLDS_FILE) as handle:
        rows = list(csv.DictReader(handle))
    dataset = load_dataset(config.data.data_dir, **config.data.loader_options())
    position = {path: index for index, path in enumerate(dataset.paths)}
    found = [(position[row["path"]], int(row["fold"]) - 1) for row in rows if row["path"] in position]
    if len(found) < len(rows) * 0.9:
        return None
    features = load_or_compute_features(dataset, config.model, config.data.image_size)
    indices = np.array([index for index, _ in found])
    return fit_run_feature_gate(run, features[indices], np.array([fold for _, fold in found]), sampled_images(dataset, indices),
                                say=lambda _message: None, paths=[dataset.root / dataset.paths[index] for index in indices])


def sampled_images(dataset, indices: np.ndarray, most: int = 2000) -> np.ndarray:
    """At most `most` training films (a seeded sample), enough for a percentile of their symmetry."""
    if len(indices) > most:
        indices = np.sort(np.random.default_rng(0).choice(indices, most, replace=False))
    return np.stack([dataset.images[index] for index in indices])


def gate_run_of(run: Run, runs_dir=None) -> Run:
    """The run whose training films define the gate: an ensemble's first member, else the run itself."""
    store = RunStore(runs_dir if runs_dir is not None else run.path.parent)
    if run.kind == "ensemble" and run.member_ids():
        return store.get(run.member_ids()[0])
    if run.kind == "adapt" and run.config.get("parent"):
        # The site heads change decisions, not which films the models know: the parent's gate.
        return gate_run_of(store.get(run.config["parent"]), runs_dir)
    return run


def load_run_gate(run: Run, *, fit_missing: bool = True, runs_dir=None) -> OodGate:
    """Reads a run's gate, fitting it first for a run made before gates existed.

    Args:
        run: A cross-validation or ensemble run.
        fit_missing: Fit and store the gate when the run has none (needs its training folder).
        runs_dir: The runs directory (default: the run's parent).

    Returns:
        The gate.

    Raises:
        GateUnavailable: The run has none and none can be fitted, or its file is damaged;
            the message says which and what to do.
    """
    source = gate_run_of(run, runs_dir)
    path = source.path / OOD_GATE_FILE
    if path.is_file():
        try:
            return OodGate.from_bytes(path.read_bytes())
        except (OSError, ValueError) as error:
            if not fit_missing:
                raise GateUnavailable(f"The out-of-distribution gate of run {source.id} ({path}) cannot be read: {error}. Delete the file to fit it again.") from None
    if not fit_missing:
        raise GateUnavailable(f"Run {source.id} has no out-of-distribution gate.")
    return _fit_from_training_folder(source)


def _fit_from_training_folder(run: Run) -> OodGate:
    """Fits the gate of an older run from its training folder and folds.csv."""
    from zoidberg.config import RunConfig
    from zoidberg.data.dataset import load_dataset

    try:
        config = RunConfig.from_dict(run.config)
        with run.open_text(FOLDS_FILE) as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise GateUnavailable(f"Run {run.id} has no out-of-distribution gate, and its folds cannot be read to fit one ({error}).") from None
    try:
        dataset = load_dataset(config.data.data_dir, **config.data.loader_options())
    except (OSError, ValueError) as error:
        raise GateUnavailable(
            f"Run {run.id} was made before the out-of-distribution gate, and its training folder "
            f"{config.data.data_dir} cannot be loaded to fit one ({error}): its predictions are not checked."
        ) from None
    position = {path: index for index, path in enumerate(dataset.paths)}
    found = [(position[row["path"]], int(row["fold"]) - 1) for row in rows if row["path"] in position]
    if len(found) < len(rows) * 0.9:
        raise GateUnavailable(
            f"Run {run.id} was made before the out-of-distribution gate, and its training folder "
            f"{config.data.data_dir} no longer holds its films: its predictions are not checked."
        )
    indices = np.array([index for index, _ in found])
    gate = fit_run_gate(run, dataset.images, indices, np.array([fold for _, fold in found]), say=lambda _message: None)
    if gate is None:
        raise GateUnavailable(f"Run {run.id} has too few training films for an out-of-distribution gate.")
    return gate


def gate_check(ensemble, dataset, rows) -> dict:
    """What the run's out-of-distribution gate says of an evaluation's images.

    The metrics still count every image, so that evaluations stay comparable; the flagged
    ones are counted and listed beside them.

    Returns:
        {"checked", "note", "n_flagged", "flagged": [{"path", "ood_score", "reason"}],
        "scores": per image (in_distribution, ood_score) or None when unchecked}.
    """
    gate = ensemble.gate
    if gate is None:
        return {"checked": False, "note": ensemble.gate_note, "n_flagged": 0, "flagged": [], "scores": None}
    verdicts = ensemble.gate_verdicts([dataset.images[row] for row in rows], prepared=True)
    flagged = [
        {"path": dataset.paths[row], "ood_score": round(verdict.ood_score, 4), "reason": verdict.reason}
        for row, verdict in zip(rows, verdicts)
        if not verdict.in_distribution
    ]
    return {
        "checked": True,
        "note": gate.describe(),
        "n_flagged": len(flagged),
        "flagged": flagged,
        "scores": [(verdict.in_distribution, round(verdict.ood_score, 4)) for verdict in verdicts],
    }
