"""Comparing finished cross-validation runs: run records, summary tables, configuration differences and history curves."""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from zoidberg.evaluation import metrics
from zoidberg.evaluation.metrics import is_finite_number
from zoidberg.runs.store import DATA_FILE, FOLDS_FILE, Run

BINARY_METRICS = ("accuracy", "sensitivity", "specificity", "precision", "f1", "roc_auc", "pr_auc", "balanced_accuracy")
MULTICLASS_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "macro_auc")

METRIC_LABELS = metrics.LONG_LABELS

# Row names of the summary table that are not metrics; for both, smaller is better.
PARAMETERS_ROW = "Parameters"
TIME_ROW = "Training time per fold (s)"
EPOCHS_ROW = "Epochs trained per fold"
THRESHOLD_ROW = "Decision threshold"

# Lines of history the validation-curve figure can draw, by history key.
CURVE_LABELS = {
    "val_loss": "Validation loss",
    "val_auc": "Validation AUC",
    "val_accuracy": "Validation accuracy",
    "loss": "Training loss",
    "auc": "Training AUC",
    "accuracy": "Training accuracy",
}



@dataclass(frozen=True)
class RunRecord:
    """Everything the Compare page shows about one finished cross-validation run.

    Attributes:
        run_id: The run's id.
        name: The user's run name (or the id).
        state: The run's state.
        created: Creation time as ISO text.
        config: config.json.
        summary: summary.json.
        data: data.json (fingerprint, class counts).
        histories: Keras history of each fold, in fold order.
        epochs_trained: Epochs each fold trained (early stopping may end folds early).
        folds_csv: Rows of folds.csv (path, patient, label, fold), or None when absent.
    """

    run_id: str
    name: str
    state: str
    created: str
    config: dict
    summary: dict
    data: dict
    histories: tuple[dict, ...] = ()
    epochs_trained: tuple[int, ...] = ()
    folds_csv: tuple[tuple[str, ...], ...] | None = None
    display_name: str = field(default="", compare=False)

    @property
    def label(self) -> str:
        """The name shown in legends and tables (unique among the compared runs)."""
        return self.display_name or self.name

    @property
    def architecture(self) -> str:
        """The architecture name from the config ("ensemble" for an ensemble run)."""
        if "members" in self.config and "method" in self.config:
            return "ensemble"
        if "parent" in self.config and "site_dir" in self.config:
            return "adapted"
        return str(self.config.get("model", {}).get("architecture", "?"))

    @property
    def label_mode(self) -> str:
        """'binary' or 'three-class'."""
        return str(self.config.get("data", {}).get("label_mode", "binary"))

    @property
    def n_splits(self) -> int | None:
        """The number of folds k."""
        value = self.config.get("n_splits")
        return int(value) if isinstance(value, (int, float)) else None

    @property
    def random_state(self) -> Any:
        """The fold seed."""
        return self.config.get("random_state")

    @property
    def class_names(self) -> list[str]:
        """Class names in output order."""
        return list(self.summary.get("class_names") or self.data.get("class_names") or [])

    @property
    def is_binary(self) -> bool:
        """Whether the run is normal vs pneumonia."""
        return len(self.class_names) == 2

    @property
    def metric_names(self) -> tuple[str, ...]:
        """The table metrics that this run's label mode defines."""
        return BINARY_METRICS if self.is_binary else MULTICLASS_METRICS

    @property
    def fold_results(self) -> list[dict]:
        """Per-fold metrics at the run threshold (summary["folds"])."""
        return list(self.summary.get("folds") or [])

    def fold_values(self, metric_name: str) -> list[float | None]:
        """Returns one value per fold for a metric (None where undefined).

        Args:
            metric_name: A key of summary["folds"][i].

        Returns:
            Values in fold order.
        """
        values = []
        for fold in self.fold_results:
            value = fold.get(metric_name)
            values.append(float(value) if is_finite_number(value) else None)
        return values




def _read_folds_csv(run: Run) -> tuple[tuple[str, ...], ...] | None:
    """Reads folds.csv as a tuple of rows, or None when it is absent or unreadable."""
    try:
        text = (run.path / FOLDS_FILE).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    return tuple(tuple(row) for row in csv.reader(io.StringIO(text)) if row)


def load_run_record(run: Run) -> RunRecord | None:
    """Reads what the Compare page needs from a run folder.

    Args:
        run: A cross-validation run.

    Returns:
        The record, or None when the run has no summary.json (not finished).
    """
    summary = run.summary()
    if not isinstance(summary, dict) or not summary.get("folds"):
        return None
    histories, epochs = [], []
    for payload in run.fold_metrics():
        history = payload.get("history") if isinstance(payload, dict) else None
        histories.append(history if isinstance(history, dict) else {})
        epochs.append(int(payload.get("epochs_trained") or len(histories[-1].get("loss", []))))
    return RunRecord(
        run_id=run.id,
        name=run.name,
        state=run.state,
        created=str(run.meta.get("created", "")),
        config=run.config,
        summary=summary,
        data=run.read_json(DATA_FILE, {}) or {},
        histories=tuple(histories),
        epochs_trained=tuple(epochs),
        folds_csv=_read_folds_csv(run),
    )


def with_unique_names(records: Sequence[RunRecord]) -> list[RunRecord]:
    """Gives records display names that are unique, adding the id where names repeat.

    Args:
        records: Runs to compare.

    Returns:
        The same records with `display_name` set.
    """
    counts: dict[str, int] = {}
    for record in records:
        counts[record.name] = counts.get(record.name, 0) + 1
    unique = []
    for record in records:
        name = record.name if counts[record.name] == 1 else f"{record.name} ({record.run_id[-6:]})"
        unique.append(dataclasses.replace(record, display_name=name))
    return unique


# ----------------------------------------------------------------------------- metrics


def table_metrics(records: Sequence[RunRecord]) -> tuple[list[str], dict[str, list[str]]]:
    """Chooses the metric rows for the summary table.

    Args:
        records: Runs to compare.

    Returns:
        (metric names in display order, {metric: labels of the runs that lack it}); a
        metric appears when at least one run defines it.
    """
    order = list(BINARY_METRICS) + [name for name in MULTICLASS_METRICS if name not in BINARY_METRICS]
    shown = [name for name in order if any(name in record.metric_names for record in records)]
    missing = {name: [record.label for record in records if name not in record.metric_names] for name in shown}
    return shown, {name: labels for name, labels in missing.items() if labels}


def shared_metrics(records: Sequence[RunRecord]) -> list[str]:
    """Returns the table metrics that every run defines."""
    names, missing = table_metrics(records)
    return [name for name in names if name not in missing]


def _mean_std(record: RunRecord, metric_name: str) -> tuple[float | None, float | None]:
    """Returns (mean, std) of a metric across folds from summary["mean_std"] or the folds."""
    stored = (record.summary.get("mean_std") or {}).get(metric_name)
    if isinstance(stored, Mapping) and is_finite_number(stored.get("mean")):
        std = stored.get("std")
        return float(stored["mean"]), float(std) if is_finite_number(std) else None
    values = [value for value in record.fold_values(metric_name) if value is not None]
    if not values:
        return None, None
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def parameter_count(record: RunRecord) -> int | None:
    """Returns the model's total parameter count, if the summary has it."""
    parameters = record.summary.get("parameters")
    if isinstance(parameters, Mapping) and is_finite_number(parameters.get("total")):
        return int(parameters["total"])
    return None


def _format_mean_std(mean: float | None, std: float | None, digits: int = 3) -> str:
    """Formats "mean ± std", or an em dash when the mean is missing."""
    if mean is None:
        return "—"
    if std is None:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def summary_table(records: Sequence[RunRecord]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Builds the side-by-side table of mean ± std per metric, with costs.

    Args:
        records: Runs to compare (unique labels).

    Returns:
        (text frame with one row per metric and one column per run, boolean frame of
        the same shape that marks the best value of each row: highest for metrics,
        lowest for parameters and training time; rows where fewer than two runs have a
        value, or all are equal, mark nothing).
    """
    names, _ = table_metrics(records)
    rows: dict[str, list[str]] = {}
    means: dict[str, list[float | None]] = {}
    for name in names:
        pairs = [_mean_std(record, name) if name in record.metric_names else (None, None) for record in records]
        rows[METRIC_LABELS.get(name, name)] = [_format_mean_std(mean, std) for mean, std in pairs]
        means[METRIC_LABELS.get(name, name)] = [mean for mean, _ in pairs]
    parameters = [parameter_count(record) for record in records]
    rows[PARAMETERS_ROW] = [f"{value:,}" if value is not None else "—" for value in parameters]
    means[PARAMETERS_ROW] = [float(value) if value is not None else None for value in parameters]
    times = [_time_mean_std(record) for record in records]
    rows[TIME_ROW] = [_format_mean_std(mean, std, digits=1) for mean, std in times]
    means[TIME_ROW] = [mean for mean, _ in times]
    rows[EPOCHS_ROW] = [_epochs_text(record) for record in records]
    rows[THRESHOLD_ROW] = [_threshold_text(record) for record in records]
    columns = [record.label for record in records]
    text = pd.DataFrame.from_dict(rows, orient="index", columns=columns)
    best = pd.DataFrame(False, index=text.index, columns=columns)
    # Scores of binary and three-class runs have different chance levels, so no "best" is named.
    mixed_modes = len({record.label_mode for record in records}) > 1
    for row, values in means.items():
        lower_is_better = row in (PARAMETERS_ROW, TIME_ROW)
        if mixed_modes and not lower_is_better:
            continue
        for column in _best_columns(values, lower_is_better):
            best.loc[row, columns[column]] = True
    return text, best


def _time_mean_std(record: RunRecord) -> tuple[float | None, float | None]:
    """Mean and std of the per-fold training seconds."""
    values = [value for value in record.fold_values("train_seconds") if value is not None]
    if not values:
        return None, None
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _epochs_text(record: RunRecord) -> str:
    """Epochs trained per fold, e.g. "5, 3, 5 (of 5)"."""
    if not record.epochs_trained:
        return "—"
    planned = record.config.get("train", {}).get("epochs")
    text = ", ".join(str(value) for value in record.epochs_trained)
    return f"{text} (of {planned})" if planned else text


def _threshold_text(record: RunRecord) -> str:
    """The run's decision threshold and how it was chosen, e.g. "0.412 (youden)"."""
    threshold = record.summary.get("threshold")
    method = record.summary.get("threshold_method") or ""
    if not record.is_binary:
        return "argmax (three-class)"
    if not is_finite_number(threshold):
        return "—"
    return f"{threshold:.3f} ({method})" if method else f"{threshold:.3f}"


def _best_columns(values: Sequence[float | None], lower_is_better: bool) -> list[int]:
    """Indices of the best values; empty when fewer than two values or all are tied."""
    present = [(index, value) for index, value in enumerate(values) if value is not None]
    if len(present) < 2:
        return []
    numbers = [value for _, value in present]
    target = min(numbers) if lower_is_better else max(numbers)
    if all(math.isclose(value, target, rel_tol=1e-9, abs_tol=1e-12) for value in numbers):
        return []
    return [index for index, value in present if math.isclose(value, target, rel_tol=1e-9, abs_tol=1e-12)]


def config_differences(records: Sequence[RunRecord]) -> pd.DataFrame:
    """Lists the config settings that differ between runs (flattened keys).

    Args:
        records: Runs to compare.

    Returns:
        A frame with one row per differing setting and one column per run; empty when
        the configs are identical.
    """
    flattened = [_flatten(record.config) for record in records]
    keys = sorted(set().union(*flattened)) if flattened else []
    rows = {}
    for key in keys:
        values = [flat.get(key, "—") for flat in flattened]
        if len({repr(value) for value in values}) > 1:
            rows[key] = [str(value) for value in values]
    return pd.DataFrame.from_dict(rows, orient="index", columns=[record.label for record in records])


def _flatten(payload: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flattens nested dicts to {"model.base_filters": 8, ...}."""
    flat = {}
    for key, value in payload.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def aggregate_history(histories: Sequence[Mapping[str, Sequence[float]]], key: str) -> dict[str, list]:
    """Aligns fold histories by epoch and summarizes them.

    Folds may stop at different epochs (early stopping); each epoch is summarized over
    the folds that reached it.

    Args:
        histories: One Keras history dict per fold.
        key: History key, e.g. "val_loss".

    Returns:
        {"epoch", "mean", "std", "low", "high", "count"} lists (epochs are 1-based);
        empty lists when no fold has the key.
    """
    series = [
        [float(value) if is_finite_number(value) else math.nan for value in history.get(key, [])]
        for history in histories
        if isinstance(history, Mapping) and history.get(key)
    ]
    result: dict[str, list] = {name: [] for name in ("epoch", "mean", "std", "low", "high", "count")}
    longest = max((len(values) for values in series), default=0)
    for epoch in range(longest):
        values = [values[epoch] for values in series if epoch < len(values) and math.isfinite(values[epoch])]
        if not values:
            continue
        result["epoch"].append(epoch + 1)
        result["mean"].append(float(np.mean(values)))
        result["std"].append(float(np.std(values, ddof=1)) if len(values) > 1 else 0.0)
        result["low"].append(float(np.min(values)))
        result["high"].append(float(np.max(values)))
        result["count"].append(len(values))
    return result



def available_curve_keys(records: Sequence[RunRecord]) -> list[str]:
    """Returns the validation history keys that at least one run has, in a sensible order."""
    present = {key for record in records for history in record.histories for key in history}
    return [key for key in ("val_loss", "val_auc", "val_accuracy") if key in present]
