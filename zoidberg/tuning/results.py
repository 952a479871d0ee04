"""Tuning results: trial tables from keras-tuner's oracle, the best trial, summaries, and the best configuration for cross-validation."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

from zoidberg.config import ModelConfig, RunConfig, TrainConfig, require
from zoidberg.runs.store import SPLIT_FILE, TRIAL_SECONDS_FILE, TRIALS_FILE, Run, RunStore
from zoidberg.tuning.config import TuneConfig, configs_for_values
from zoidberg.tuning.space import clean_values, format_value


def trial_number(trial_id: str) -> int:
    """Returns the 1-based trial number of a keras-tuner trial id ("00" -> 1)."""
    return int(trial_id) + 1


def last_line(message: str | None) -> str | None:
    """Returns the last non-empty line of a traceback: the error itself."""
    if not message:
        return None
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    if not lines:
        return None
    line = lines[-1]
    # "keras_tuner.src.errors.FailedTrialError: 5 conv blocks ..." -> "5 conv blocks ...".
    head, _, rest = line.partition(": ")
    return rest if rest and "." in head and " " not in head else line


def _finite(value: Any) -> float | None:
    """Returns a float, or None for missing and non-finite values.

    Unlike zoidberg.evaluation.metrics.finite_or_none it converts what keras-tuner hands over
    (NumPy float32 scalars, numeric strings), which are not Python floats.
    """
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def trial_rows(oracle, config: TuneConfig, run: Run | None = None) -> list[dict]:
    """Tabulates every trial keras-tuner knows of, in trial order.

    Args:
        oracle: The tuner's oracle.
        config: The tuning configuration.
        run: The run, for trial durations.

    Returns:
        Rows {trial, trial_id, status, objective, hyperparameters, metrics, best_epoch,
        epochs, continues_trial, seconds, message}; status is "completed", "failed",
        "invalid" or "running" (unfinished: a resumed search runs it again).
    """
    dimensions = config.dimensions()
    seconds = (run.read_json(TRIAL_SECONDS_FILE, {}) or {}) if run else {}
    rows = []
    for trial_id in sorted(oracle.trials, key=int):
        trial = oracle.trials[trial_id]
        values = trial.hyperparameters.values
        metrics = {name: _finite(trial.metrics.get_last_value(name)) for name in sorted(trial.metrics.metrics)}
        status = str(trial.status).lower()
        parent = values.get("tuner/trial_id")
        rows.append(
            {
                "trial": trial_number(trial_id),
                "trial_id": trial_id,
                "status": status,
                "objective": _finite(trial.score) if status == "completed" else None,
                "hyperparameters": clean_values(values, dimensions),
                "metrics": metrics,
                "best_epoch": int(trial.best_step) + 1 if status == "completed" and trial.best_step is not None else None,
                "epochs": int(values.get("tuner/epochs", config.epochs_per_trial)),
                "continues_trial": trial_number(parent) if parent is not None else None,
                "seconds": seconds.get(trial_id),
                "message": last_line(trial.message),
            }
        )
    return rows


def best_row(rows: list[dict], direction: str) -> dict | None:
    """Returns the completed trial with the best objective, or None.

    Args:
        rows: Rows from trial_rows.
        direction: "max" or "min".
    """
    finished = [row for row in rows if row["status"] == "completed" and row["objective"] is not None]
    if not finished:
        return None
    pick = max if direction == "max" else min
    return pick(finished, key=lambda row: row["objective"])


def hyperparameter_names(rows: Sequence[dict]) -> list[str]:
    """Returns the hyperparameter names of the trials, in first-seen order."""
    names: list[str] = []
    for row in rows:
        for name in row.get("hyperparameters") or {}:
            if name not in names:
                names.append(name)
    return names


def format_objective(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def format_values(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{name}={format_value(value)}" for name, value in values.items()) or "default configuration"


def make_summary(run: Run, config: TuneConfig, rows: list[dict], state: str) -> dict:
    """Builds summary.json: the best configuration and the full trial table."""
    best = best_row(rows, config.direction)
    summary = {
        "run_id": run.id,
        "kind": "tune",
        "state": state,
        "architecture": config.architecture,
        "algorithm": config.algorithm,
        "objective": config.objective,
        "direction": config.direction,
        "max_trials": config.max_trials,
        "n_trials": len(rows),
        "n_completed": sum(row["status"] == "completed" for row in rows),
        "n_failed": sum(row["status"] in ("failed", "invalid") for row in rows),
        "best_trial": best["trial"] if best else None,
        "best_objective": best["objective"] if best else None,
        "best_hyperparameters": best["hyperparameters"] if best else None,
        "best_model_config": None,
        "best_train_config": None,
        "search_space": [dimension.to_dict() for dimension in config.dimensions()],
        "split": run.read_json(SPLIT_FILE),
        "trials": rows,
    }
    if best:
        model, train = configs_for_values(config, best["hyperparameters"], best["epochs"])
        summary["best_model_config"] = dataclasses.asdict(model)
        summary["best_train_config"] = dataclasses.asdict(train)
    return summary




# ---------------------------------------------------------------------------------------
# From tuning to cross-validation.
# ---------------------------------------------------------------------------------------


def load_tuning_results(tuning_run_id: str, runs_dir=None) -> tuple[Run, TuneConfig, list[dict]]:
    """Reads a tuning run's configuration and trial table.

    Raises:
        ValueError: The run is not a tuning run.
        RunNotFoundError: No such run.
    """
    run = RunStore(runs_dir).get(tuning_run_id)
    require(run.kind == "tune", f"Run {tuning_run_id} is a {run.kind} run, not a tuning run.")
    config = TuneConfig.from_dict(run.config)
    summary = run.summary() or {}
    rows = summary.get("trials") or run.read_json(TRIALS_FILE, []) or []
    return run, config, rows


def best_model_and_train_config(tuning_run_id: str, runs_dir=None) -> tuple[ModelConfig, TrainConfig, str]:
    """Returns the best configuration a tuning run found, ready for cross-validation.

    Works on completed runs and on stopped or interrupted ones with a finished trial.
    The training config has the trial's epochs and the default early-stopping patience.

    Args:
        tuning_run_id: The tuning run's id.
        runs_dir: The run store folder.

    Returns:
        (ModelConfig, TrainConfig, tuning_run_id).

    Raises:
        ValueError: The run is not a tuning run or has no finished trial yet.
    """
    run, config, rows = load_tuning_results(tuning_run_id, runs_dir)
    best = best_row(rows, config.direction)
    require(best is not None, f"Tuning run {tuning_run_id} has no finished trial yet; wait for one or resume it.")
    model, train = configs_for_values(config, best["hyperparameters"], best["epochs"])
    train = dataclasses.replace(train, early_stopping_patience=TrainConfig().early_stopping_patience)
    return model, train, run.id


def cv_config_from_tuning(
    tuning_run_id: str,
    *,
    n_splits: int = 5,
    epochs: int | None = None,
    random_state: int | None = None,
    run_name: str = "",
    runs_dir=None,
):
    """Returns the RunConfig that cross-validates a tuning run's best configuration.

    The data folder, label mode and image size are the tuning run's; the RunConfig
    records the tuning run in source_tuning_run.

    Args:
        tuning_run_id: The tuning run's id.
        n_splits: Folds k.
        epochs: Epochs per fold (default: those of the best trial).
        random_state: Seed (default: the tuning run's).
        run_name: A readable name (default: "best of <tuning run>").
        runs_dir: The run store folder.

    Returns:
        A validated RunConfig.
    """
    model, train, source = best_model_and_train_config(tuning_run_id, runs_dir)
    _, config, _ = load_tuning_results(tuning_run_id, runs_dir)
    if epochs is not None:
        train = dataclasses.replace(train, epochs=int(epochs))
    return RunConfig(
        data=config.data,
        model=model,
        train=train,
        n_splits=n_splits,
        random_state=config.seed if random_state is None else random_state,
        run_name=run_name or f"best of {source}"[:80],
        source_tuning_run=source,
    )


