"""A run logged to MLflow (an optional extra): parameters, every fold's epochs, the summary, evaluations and the export."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from zoidberg.evaluation.metrics import finite_or_none
from zoidberg.runs.store import (
    CALIBRATION_FILE,
    CONFIG_FILE,
    DATA_FILE,
    EVALUATIONS_DIR,
    EXPORTS_DIR,
    FOLDS_FILE,
    OPERATING_POINT_FILE,
    REPORTS_DIR,
    SUMMARY_FILE,
    Run,
)

MLFLOW_URI_ENV = "MLFLOW_TRACKING_URI"
INSTALL_HINT = "MLflow is not installed: pip install -r requirements-mlflow.txt (or choose no tracking URI)."
EXPERIMENT_NAME = "zoidberg"
RUN_ID_TAG = "zoidberg.run_id"
# The run-store files logged as artifacts, next to the evaluations, exports and reports folders.
ARTIFACT_FILES = (CONFIG_FILE, SUMMARY_FILE, DATA_FILE, OPERATING_POINT_FILE, CALIBRATION_FILE, FOLDS_FILE)
ARTIFACT_FOLDERS = (EVALUATIONS_DIR, EXPORTS_DIR, REPORTS_DIR)
# MLflow refuses longer parameter values; a longer one (a list of paths) is cut with a mark.
MAX_PARAM_LENGTH = 500
# How many metrics, and how many parameters, one log_batch call carries.
BATCH_SIZE = 1000
PARAMS_PER_CALL = 100


def check_mlflow_installed() -> None:
    """Raises ValueError with what to install when MLflow is missing; never imports it."""
    if importlib.util.find_spec("mlflow") is None:
        raise ValueError(INSTALL_HINT)


def tracking_uri(uri: str) -> str:
    """The URI MLflow is given: a plain folder becomes a file:// URI of its absolute path.

    A file store is what the user asked for by naming a folder, so MLflow 3's refusal of
    new file stores (it prefers a database) is lifted for this process.
    """
    uri = uri.strip()
    if "://" not in uri and not uri.startswith(("databricks", "sqlite:", "postgresql:", "mysql:")):
        uri = Path(uri).expanduser().resolve().as_uri()
    if uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return uri


def flatten_params(config: dict, prefix: str = "") -> dict[str, str]:
    """{"model.architecture": "cnn", ...}: a nested configuration as MLflow parameters."""
    params = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            params.update(flatten_params(value, f"{name}."))
            continue
        text = value if isinstance(value, str) else json.dumps(value)
        params[name] = text if len(text) <= MAX_PARAM_LENGTH else text[: MAX_PARAM_LENGTH - 3] + "..."
    return params


def run_metrics(run: Run) -> list[tuple[str, float, int]]:
    """(name, value, step) of every metric: each fold's epochs, CV mean and std, pooled out of fold, evaluations."""
    metrics = []
    for fold in run.fold_metrics():
        number = fold.get("fold")
        for key, values in (fold.get("history") or {}).items():
            metrics += [(f"fold_{number}/{key}", value, step) for step, value in enumerate(values) if finite_or_none(value) is not None]
        metrics += [(f"fold_{number}/final_{key}", value, 0) for key, value in (fold.get("metrics") or {}).items() if finite_or_none(value) is not None]
    summary = run.summary() or {}
    for key, entry in (summary.get("mean_std") or {}).items():
        for statistic in ("mean", "std"):
            if finite_or_none((entry or {}).get(statistic)) is not None:
                metrics.append((f"cv/{key}_{statistic}", entry[statistic], 0))
    metrics += [(f"oof/{key}", value, 0) for key, value in (summary.get("out_of_fold") or {}).items() if finite_or_none(value) is not None]
    if finite_or_none(summary.get("threshold")) is not None:
        metrics.append(("threshold", summary["threshold"], 0))
    for evaluation in run.evaluations():
        name = evaluation.get("name", "evaluation")
        metrics += [(f"eval/{name}/{key}", value, 0) for key, value in (evaluation.get("metrics") or {}).items() if finite_or_none(value) is not None]
        interval = evaluation.get("auc_ci") or {}
        metrics += [(f"eval/{name}/roc_auc_ci_{side}", interval[side], 0) for side in ("low", "high") if finite_or_none(interval.get(side)) is not None]
    return [(name, float(value), int(step)) for name, value, step in metrics]


def ensure_keras_export(run: Run) -> None:
    """Writes the keras export into the run unless a whole one is there, so the tracker holds a model that loads.

    An export that fails its check (cut short by a full disk, changed since) is written again.
    """
    from zoidberg.inference.export import export_problem, export_run

    folder = run.path / EXPORTS_DIR / "keras"
    if export_problem(folder, "keras") is None:
        return
    from zoidberg.inference.loading import load_ensemble

    export_run(run, load_ensemble(run.id, runs_dir=run.path.parent), "keras", folder)


def _find_or_create_run(client, experiment_id: str, run: Run):
    """The MLflow run that already holds this Zoidberg run (logging again updates it), or a new one."""
    found = client.search_runs([experiment_id], filter_string=f"tags.`{RUN_ID_TAG}` = '{run.id}'", max_results=1)
    if found:
        return found[0].info.run_id, True
    created = client.create_run(experiment_id, run_name=run.name or run.id, tags={RUN_ID_TAG: run.id, "zoidberg.kind": run.kind})
    return created.info.run_id, False


def log_run_to_mlflow(run: Run, uri: str, *, experiment: str = EXPERIMENT_NAME, export: bool = True) -> dict:
    """Logs a finished run to an MLflow tracking server or store; logging it again updates the same MLflow run.

    Args:
        run: A finished cross-validation or ensemble run.
        uri: The tracking URI (file:///path, a plain folder, http://host:5000, ...).
        experiment: The MLflow experiment, created when missing.
        export: Write a keras export into the run first when it has none, and log it.

    Returns:
        {"uri", "experiment_id", "run_id", "metrics", "updated"}.

    Raises:
        ValueError: When MLflow is not installed.
    """
    check_mlflow_installed()
    import mlflow
    from mlflow.entities import Metric, Param, RunTag

    uri = tracking_uri(uri)
    client = mlflow.MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    mlflow_run_id, updated = _find_or_create_run(client, experiment_id, run)
    existing = client.get_run(mlflow_run_id).data.params if updated else {}
    params = [Param(key, value) for key, value in flatten_params(run.config).items() if key not in existing]
    if updated:
        # A metric logged before would appear twice: only the new ones (a later evaluation) are added.
        known = set(client.get_run(mlflow_run_id).data.metrics)
        metrics = [item for item in run_metrics(run) if item[0] not in known]
    else:
        metrics = run_metrics(run)
    timestamp = int(1000 * os.path.getmtime(run.path / SUMMARY_FILE)) if (run.path / SUMMARY_FILE).exists() else 0
    tags = [RunTag("zoidberg.state", run.state), RunTag("zoidberg.path", str(run.path))]
    # MLflow takes at most 100 parameters and 1,000 entities per call: parameters and tags go
    # in calls of their own, then the metrics.
    client.log_batch(mlflow_run_id, tags=tags)
    for start in range(0, len(params), PARAMS_PER_CALL):
        client.log_batch(mlflow_run_id, params=params[start : start + PARAMS_PER_CALL])
    for start in range(0, len(metrics), BATCH_SIZE):
        client.log_batch(mlflow_run_id, metrics=[Metric(name, value, timestamp, step) for name, value, step in metrics[start : start + BATCH_SIZE]])
    if export and run.summary():
        ensure_keras_export(run)
    for name in ARTIFACT_FILES:
        if (run.path / name).is_file():
            client.log_artifact(mlflow_run_id, str(run.path / name))
    for folder in ARTIFACT_FOLDERS:
        if (run.path / folder).is_dir():
            client.log_artifacts(mlflow_run_id, str(run.path / folder), artifact_path=folder)
    client.set_terminated(mlflow_run_id, status="FINISHED" if run.state == "completed" else "KILLED")
    return {"uri": uri, "experiment_id": experiment_id, "run_id": mlflow_run_id, "metrics": len(metrics), "updated": updated}

