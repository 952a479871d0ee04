"""A search's trial table: one row per trial, the best marked and coloured, values formatted by their scale."""

from __future__ import annotations

from typing import Any, Sequence

import pandas as pd

from zoidberg.tuning import config as tuning
from zoidberg.tuning import results
from zoidberg.tuning import space as tuning_space

BEST_ROW_COLOR = "rgba(0, 204, 150, 0.28)"
BEST_MARK = "★"


def objective_label(objective: str) -> str:
    """Returns a readable name of an objective ("val_auc" -> "validation AUC")."""
    return tuning.OBJECTIVE_LABELS.get(objective, objective)


def best_trial_number(rows: Sequence[dict], direction: str) -> int | None:
    """Returns the number of the best completed trial, or None."""
    best = results.best_row(list(rows), direction)
    return best["trial"] if best else None


def trials_frame(rows: Sequence[dict], objective: str, direction: str) -> pd.DataFrame:
    """Tabulates trials: number, best mark, status, objective, hyperparameters, epochs, time.

    Args:
        rows: trials.json rows.
        objective: The objective's name (the column title).
        direction: "max" or "min".

    Returns:
        One row per trial, in trial order.
    """
    best = best_trial_number(rows, direction)
    names = results.hyperparameter_names(rows)
    records = []
    for row in rows:
        record = {
            "trial": row["trial"],
            "best": BEST_MARK if row["trial"] == best else "",
            "status": row["status"],
            objective: row.get("objective"),
        }
        values = row.get("hyperparameters") or {}
        record.update({name: _cell(values.get(name)) for name in names})
        record["epochs"] = row.get("epochs")
        record["seconds"] = row.get("seconds")
        record["note"] = row.get("message") or (f"continues trial {row['continues_trial']}" if row.get("continues_trial") else "")
        records.append(record)
    return pd.DataFrame(records)


def _cell(value: Any) -> Any:
    """Makes a value table-friendly (None and booleans as text, so columns keep one type)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    return value


def highlight_best(frame: pd.DataFrame, objective: str, dimensions: Sequence[tuning_space.Dimension] = ()):
    """Returns a Styler that colours the best trial's row and formats numbers readably.

    Args:
        frame: From trials_frame.
        objective: The objective's column.
        dimensions: The search space; log-scaled columns are shown in scientific notation.

    Returns:
        A pandas Styler (st.dataframe keeps the table sortable on the raw values).
    """

    def color(row):
        return [f"background-color: {BEST_ROW_COLOR}" if row.get("best") == BEST_MARK else ""] * len(row)

    log_names = {dimension.name for dimension in dimensions if dimension.log}
    formats = {objective: "{:.4f}", "seconds": "{:.1f}"}
    for column in frame.columns:
        if column not in formats and pd.api.types.is_float_dtype(frame[column]):
            formats[column] = "{:.2e}" if column in log_names else "{:.3g}"
    return frame.style.apply(color, axis=1).format(formats, na_rep="—")
