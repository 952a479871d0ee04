"""Loading a finished run to predict with: its fold models (safe mode), an ensemble's members, an adapted run's parent."""

from __future__ import annotations

from zoidberg.evaluation.calibration import Calibration
from zoidberg.inference.adapted import AdaptedEnsemble
from zoidberg.inference.decisions import DEFAULT_THRESHOLD
from zoidberg.inference.ensemble import Ensemble
from zoidberg.inference.ensemble_of_runs import EnsembleOfRuns
from zoidberg.runs.store import CALIBRATION_FILE, DATA_FILE, MODEL_FILE, OPERATING_POINT_FILE, Run, RunStore


def load_fold_model(run, fold: int):
    """One fold's model.keras (safe_mode), or a ValueError that names the damaged file when it cannot be read."""
    import zipfile

    import keras

    from zoidberg.models.layers import as_float32

    path = run.model_path(fold)
    try:
        # Trained under mixed precision or not, a run predicts in float32.
        return as_float32(keras.models.load_model(path, safe_mode=True, compile=False))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        from zoidberg.models.layers import unsafe_layers

        unsafe = unsafe_layers(path)
        if unsafe:
            raise ValueError(
                f"Run {run.id}, fold {fold}: {path} holds Lambda layer(s) {', '.join(unsafe)}, which run arbitrary Python code: "
                "Zoidberg loads models with safe_mode and never runs them. Train the run again with this version (its models have none)."
            ) from error
        # Keras says "File not found" for a cut-short .keras zip; the file is there, and damaged.
        size = path.stat().st_size if path.exists() else None
        state = "missing" if size is None else f"damaged ({size:,} bytes that do not load as a Keras model: cut short or changed)"
        raise ValueError(
            f"Run {run.id}, fold {fold}: {path} is {state}. Restore it from a copy of the run, or train the run again."
        ) from error


def load_ensemble(run_id: str, *, runs_dir=None) -> Ensemble | EnsembleOfRuns:
    """Loads a finished run's fold models from the run store with safe_mode=True.

    Only files inside the runs directory are ever loaded; the run id is validated so
    that no path can point elsewhere.

    Raises:
        ValueError: when the run has no trained fold model yet.
    """
    run = RunStore(runs_dir).get(run_id)
    if run.kind == "ensemble":
        return load_ensemble_of_runs(run, runs_dir=runs_dir)
    if run.kind == "adapt":
        return load_adapted_ensemble(run, runs_dir=runs_dir)
    folds = run.folds_with(MODEL_FILE)
    if not folds:
        raise ValueError(f"Run {run_id} has no trained fold model yet; wait for a fold to finish.")
    config = run.checked_config()
    models = [load_fold_model(run, fold) for fold in folds]
    summary = run.summary() or {}
    data = run.read_json(DATA_FILE, {}) or {}
    class_names = tuple(summary.get("class_names") or data.get("class_names") or _class_names(config))
    stored = run.read_json(CALIBRATION_FILE) or {}
    calibration = Calibration.from_dict(stored["calibration"]) if stored.get("calibration") else None
    threshold, scale, operating = _operating_point(run, summary, calibration)
    return Ensemble(
        run=run,
        models=models,
        class_names=class_names,
        image_size=int(config["data"]["image_size"]),
        threshold=threshold,
        folds=tuple(folds),
        calibration=calibration,
        scale=scale,
        operating_point=operating,
        tta=bool(config.get("tta", False)),
    )


def _class_names(config: dict) -> tuple[str, ...]:
    from zoidberg.data.dataset import CLASS_NAMES

    return CLASS_NAMES[config.get("data", {}).get("label_mode", "binary")]


def _operating_point(run: Run, summary: dict, calibration) -> tuple[float, str, dict | None]:
    """A run's threshold, its scale and operating_point.json (the summary's threshold, raw, for older runs)."""
    operating = run.read_json(OPERATING_POINT_FILE)
    if operating:
        threshold, scale = float(operating["threshold"]), operating["choice"].get("probabilities", "raw")
    else:
        # Runs from before operating points, and stopped runs: the summary's threshold, raw.
        threshold, scale = float(summary.get("threshold", DEFAULT_THRESHOLD)), "raw"
    return threshold, scale if calibration is not None else "raw", operating


def load_ensemble_of_runs(run: Run, *, runs_dir=None) -> EnsembleOfRuns:
    """Loads a completed ensemble run: its members' fold models, its combination, calibration and threshold.

    Raises:
        ValueError: The ensemble has not combined its members yet, or a member run was deleted.
    """
    from zoidberg.evaluation.combination import Combiner
    from zoidberg.runs.store import ENSEMBLE_FILE, RunNotFoundError

    stored = run.read_json(ENSEMBLE_FILE)
    if not stored or run.summary() is None:
        # summary.json is written once the members are combined, just before the test split is scored.
        raise ValueError(f"Ensemble {run.id} is {run.state}: it predicts once its members are combined.")
    members = []
    for member_id in run.member_ids():
        try:
            members.append(load_ensemble(member_id, runs_dir=runs_dir))
        except RunNotFoundError:
            raise ValueError(f"Member run {member_id} of ensemble {run.id} was deleted: the ensemble cannot predict without it.") from None
    calibration_payload = (run.read_json(CALIBRATION_FILE) or {}).get("calibration")
    calibration = Calibration.from_dict(calibration_payload) if calibration_payload else None
    threshold, scale, operating = _operating_point(run, run.summary() or {}, calibration)
    return EnsembleOfRuns(run, members, Combiner.from_dict(stored), calibration, threshold, scale, operating)


def load_adapted_ensemble(run: Run, *, runs_dir=None) -> AdaptedEnsemble:
    """Loads a completed adapted run: its parent's models, its site heads, calibration and threshold.

    Raises:
        ValueError: The adaptation has not finished, or its parent run was deleted.
    """
    from zoidberg.models.site_heads import SiteHead
    from zoidberg.runs.store import ADAPTATION_FILE, RunNotFoundError

    stored = run.read_json(ADAPTATION_FILE)
    if not stored or run.summary() is None:
        raise ValueError(f"Adapted run {run.id} is {run.state}: it predicts once its site heads are fitted.")
    try:
        parent = load_ensemble(stored["parent"], runs_dir=runs_dir)
    except RunNotFoundError:
        raise ValueError(f"The parent run {stored['parent']} of adapted run {run.id} was deleted: it cannot predict without it.") from None
    feature_member = None
    if stored.get("feature_member"):
        feature_member = next((member for member in getattr(parent, "members", [parent]) if member.run.id == stored["feature_member"]), None)
        if feature_member is None:
            raise ValueError(f"Adapted run {run.id} reads the features of run {stored['feature_member']}, which its parent no longer holds.")
    calibration_payload = (run.read_json(CALIBRATION_FILE) or {}).get("calibration")
    calibration = Calibration.from_dict(calibration_payload) if calibration_payload else None
    threshold, scale, operating = _operating_point(run, run.summary() or {}, calibration)
    heads = [SiteHead.from_dict(head) for head in stored["heads"]]
    return AdaptedEnsemble(run, parent, heads, feature_member, calibration, threshold, scale, operating)


# States in which a cross-validation run predicts with the folds it finished.
PREDICTING_STATES = ("completed", "stopped", "interrupted")


def prediction_units(run: Run) -> list[int] | None:
    """What a run predicts with, or None when it cannot predict: its finished fold numbers, an ensemble's
    members (1..n) or an adapted run's parts (1..k), once combined or fitted."""
    state = run.state
    if run.kind == "ensemble":
        return list(range(1, len(run.member_ids()) + 1)) if state == "completed" else None
    if run.kind == "adapt":
        return list(range(1, int(run.config.get("n_parts") or 0) + 1)) if state == "completed" else None
    if state not in PREDICTING_STATES:
        return None
    return run.folds_with(MODEL_FILE) or None


def predictable_runs(store: RunStore) -> list[tuple[Run, str, list[int]]]:
    """(run, state, prediction_units) of every run that can predict, newest first."""
    from zoidberg.runs.store import MODEL_KINDS

    found = []
    for run in store.list_runs(kind=MODEL_KINDS):
        units = prediction_units(run)
        if units:
            found.append((run, run.state, units))
    return found


def model_files(run: Run, store: RunStore, prefix: str = "") -> list[tuple]:
    """(file, name in an archive) of everything a run predicts with: its fold models, or its members' or
    parent's, and the files that combine and calibrate them (config, ensemble.json, adaptation.json ...)."""
    from zoidberg.runs.store import ADAPTATION_FILE, CONFIG_FILE, ENSEMBLE_FILE, RunNotFoundError

    names = (CONFIG_FILE, ENSEMBLE_FILE, ADAPTATION_FILE, CALIBRATION_FILE, OPERATING_POINT_FILE)
    files = [(run.path / name, prefix + name) for name in names if (run.path / name).is_file()]
    files += [(run.model_path(fold), prefix + run.model_path(fold).relative_to(run.path).as_posix()) for fold in run.folds_with(MODEL_FILE)]
    linked = run.member_ids() if run.kind == "ensemble" else [run.config["parent"]] if run.kind == "adapt" and run.config.get("parent") else []
    for other in linked:
        try:
            files += model_files(store.get(other), store, f"{prefix}{'members' if run.kind == 'ensemble' else 'parent'}/{other}/")
        except RunNotFoundError:
            continue  # A deleted member or parent: the run cannot predict, and its own files still zip.
    return files


def models_archive(run: Run, store: RunStore) -> bytes:
    """A zip (in memory, stored, not deflated: .keras files are zips already) of model_files(run)."""
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for path, name in model_files(run, store):
            archive.write(path, name)
    return buffer.getvalue()
