"""Tune page widgets, live views and figures: search-space editor, trial table, best-so-far, parallel coordinates."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from zoidberg import jobs, tuning
from zoidberg.models import ArchitectureSpec, HyperParameter
from zoidberg.runstore import ACTIVE_STATES, Run, RunNotFoundError
from zoidberg.ui import live, state, widgets
from zoidberg.ui.widgets import PERSIST, format_number, state_badge

SELECTED_TUNE_RUN_KEY = "zoidberg_selected_tune_run"
STARTED_CV_KEY = "zoidberg_tune_started_cv"
# Seconds between two refreshes of a running search.
POLL_SECONDS = 1.5
BEST_ROW_COLOR = "rgba(0, 204, 150, 0.28)"
BEST_MARK = "★"
NAS_NOTE = (
    "Searching over the number of conv blocks and the filters per block changes the network itself, "
    "so for the custom CNN this is a small **neural architecture search**, not only a tuning of training knobs."
)


# ---------------------------------------------------------------------------------------
# Reading progress out of events (pure functions).
# ---------------------------------------------------------------------------------------


@dataclass
class TuneProgress:
    """What a tuning run's events say about where it is.

    Attributes:
        phase: "starting", "loading", "searching" or "done".
        n_trials: Most trials planned.
        trial: The trial being trained (1-based), or 0.
        trial_epochs: Epochs planned for that trial.
        epoch: Its current epoch (1-based), or 0.
        epochs_done: Finished epochs of that trial.
        batch: Batches done in the current epoch.
        steps: Batches per epoch, when known.
        hyperparameters: Values of the trial being trained.
        finished: Trial numbers that ended (completed or failed).
        loading: (done, total) while images are decoded.
        started_at: Unix time of the last (re)start.
    """

    phase: str = "starting"
    n_trials: int = 0
    trial: int = 0
    trial_epochs: int = 0
    epoch: int = 0
    epochs_done: int = 0
    batch: int = 0
    steps: int | None = None
    hyperparameters: dict = field(default_factory=dict)
    finished: set = field(default_factory=set)
    loading: tuple[int, int] | None = None
    started_at: float | None = None


def read_tune_progress(events: Sequence[dict]) -> TuneProgress:
    """Folds a tuning run's events into a TuneProgress.

    Args:
        events: All events of the run, in order.

    Returns:
        The progress.
    """
    progress = TuneProgress()
    for event in events:
        kind = event.get("type")
        if kind == "run_started":
            progress.phase = "loading"
            progress.n_trials = int(event.get("n_trials") or progress.n_trials)
            progress.started_at = event.get("time")
        elif kind == "resumed":
            progress.phase = "starting"
        elif kind == "loading":
            progress.loading = (int(event.get("done", 0)), int(event.get("total", 0)))
        elif kind == "trial_started":
            progress.phase = "searching"
            progress.trial = int(event.get("trial") or 0)
            progress.trial_epochs = int(event.get("epochs") or 0)
            progress.epoch, progress.epochs_done, progress.batch = 0, 0, 0
            progress.hyperparameters = dict(event.get("hyperparameters") or {})
        elif kind == "progress":
            progress.epoch = int(event.get("epoch") or 0)
            progress.batch = int(event.get("batch") or 0)
            progress.steps = event.get("steps") or progress.steps
        elif kind == "epoch":
            progress.epoch = progress.epochs_done = int(event.get("epoch") or 0)
            progress.batch = 0
        elif kind == "trial_finished":
            progress.finished.add(int(event.get("trial") or 0))
        elif kind in ("run_finished", "failed"):
            progress.phase = "done"
    return progress


# ---------------------------------------------------------------------------------------
# Tables and figures (pure functions of run-store data).
# ---------------------------------------------------------------------------------------


def objective_label(objective: str) -> str:
    """Returns a readable name of an objective ("val_auc" -> "validation AUC")."""
    return tuning.OBJECTIVE_LABELS.get(objective, objective)


def best_trial_number(rows: Sequence[dict], direction: str) -> int | None:
    """Returns the number of the best completed trial, or None."""
    best = tuning.best_row(list(rows), direction)
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
    names = _hyperparameter_names(rows)
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


def _hyperparameter_names(rows: Sequence[dict]) -> list[str]:
    """Returns the hyperparameter names of the trials, in first-seen order."""
    names: list[str] = []
    for row in rows:
        for name in row.get("hyperparameters") or {}:
            if name not in names:
                names.append(name)
    return names


def _cell(value: Any) -> Any:
    """Makes a value table-friendly (None and booleans as text, so columns keep one type)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    return value


def highlight_best(frame: pd.DataFrame, objective: str, dimensions: Sequence[tuning.Dimension] = ()):
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


def best_so_far_figure(rows: Sequence[dict], objective: str, direction: str) -> go.Figure:
    """Plots each finished trial's objective and the best-so-far line.

    Args:
        rows: trials.json rows.
        objective: The objective's name.
        direction: "max" or "min".

    Returns:
        The figure.
    """
    finished = [row for row in rows if row["status"] == "completed" and row.get("objective") is not None]
    figure = go.Figure()
    if finished:
        trials = [row["trial"] for row in finished]
        values = [row["objective"] for row in finished]
        pick = max if direction == "max" else min
        running, best = [], None
        for value in values:
            best = value if best is None else pick(best, value)
            running.append(best)
        figure.add_trace(
            go.Scatter(x=trials, y=values, mode="markers", name="trial", marker=dict(size=9, color="#8e9aaf"),
                       hovertemplate="trial %{x}: %{y:.4f}<extra></extra>")
        )
        figure.add_trace(
            go.Scatter(x=trials, y=running, mode="lines", line=dict(shape="hv", width=3, color="#00CC96"),
                       name="best so far", hovertemplate="best after trial %{x}: %{y:.4f}<extra></extra>")
        )
        best_row = tuning.best_row(list(rows), direction)
        figure.add_trace(
            go.Scatter(x=[best_row["trial"]], y=[best_row["objective"]], mode="markers", name="best",
                       marker=dict(symbol="star", size=18, color="#FFA15A"), hoverinfo="skip")
        )
    figure.update_layout(
        title=f"Best {objective_label(objective)} so far",
        xaxis_title="trial", yaxis_title=objective,
        height=300, margin=dict(l=10, r=10, t=40, b=10),
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0),
    )
    figure.update_xaxes(dtick=1 if len(finished) <= 20 else None)
    return figure


def _axis(dimension: tuning.Dimension | None, name: str, values: list) -> dict:
    """Returns one go.Parcoords dimension: numeric, log-scaled or categorical."""
    label = name.replace("_", " ")
    numeric = all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in values)
    categorical = dimension is not None and not dimension.is_range or not numeric
    if categorical:
        # Categorical values (choices, booleans, none) become positions with tick labels.
        order = list(dimension.choices) if dimension is not None and dimension.choices else []
        for value in values:
            if value not in order:
                order.append(value)
        if all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in order):
            order = sorted(order)
        ticks = [tuning._format_value(value) if not isinstance(value, bool) else ("on" if value else "off") for value in order]
        return dict(label=label, values=[order.index(value) for value in values], tickvals=list(range(len(order))),
                    ticktext=ticks, range=[-0.25, max(len(order) - 0.75, 0.25)])
    if dimension is not None and dimension.log and all(value > 0 for value in values):
        low, high = math.floor(math.log10(dimension.min_value)), math.ceil(math.log10(dimension.max_value))
        ticks = list(range(low, high + 1))
        return dict(label=f"{label} (log)", values=[math.log10(value) for value in values], tickvals=ticks,
                    ticktext=[f"{10.0 ** tick:g}" for tick in ticks], range=[math.log10(dimension.min_value), math.log10(dimension.max_value)])
    axis = dict(label=label, values=values)
    if dimension is not None and dimension.min_value is not None:
        axis["range"] = [dimension.min_value, dimension.max_value]
    return axis


def parallel_coordinates_figure(
    rows: Sequence[dict], objective: str, direction: str, dimensions: Sequence[tuning.Dimension] = ()
) -> go.Figure | None:
    """Draws every finished trial as a line across its hyperparameters and the objective.

    Args:
        rows: trials.json rows.
        objective: The objective's name (the last axis and the colour).
        direction: "max" or "min"; the best trials are drawn brightest either way.
        dimensions: The search space, for ranges, log scales and choice order.

    Returns:
        The figure, or None before any trial has finished.
    """
    finished = [row for row in rows if row["status"] == "completed" and row.get("objective") is not None]
    if not finished:
        return None
    by_name = {dimension.name: dimension for dimension in dimensions}
    names = [name for name in _hyperparameter_names(finished) if name in by_name or not by_name]
    axes = [_axis(by_name.get(name), name, [row["hyperparameters"].get(name) for row in finished]) for name in names]
    scores = [row["objective"] for row in finished]
    axes.append(dict(label=objective, values=scores))
    figure = go.Figure(
        go.Parcoords(
            line=dict(color=scores, colorscale="Viridis", reversescale=direction == "min", showscale=True,
                      colorbar=dict(title=objective)),
            dimensions=axes,
        )
    )
    figure.update_layout(
        title=dict(text="Hyperparameters against the objective", y=0.98), height=440, margin=dict(l=60, r=40, t=110, b=30)
    )
    return figure


# ---------------------------------------------------------------------------------------
# Configuration widgets.
# ---------------------------------------------------------------------------------------


def search_options_ui(prefix: str = "tune") -> dict[str, Any]:
    """Draws the data size, algorithm, objective, trial budget, seed and name.

    Args:
        prefix: Widget key prefix.

    Returns:
        Dict with image_size, label_mode, algorithm, objective, max_trials,
        epochs_per_trial, seed, validation_fraction and run_name.
    """
    first, second, third = st.columns(3)
    with first:
        image_size = st.number_input(
            "Image size (px)", min_value=16, max_value=512, value=64, step=16, key=f"{prefix}_image_size",
            persist_state=PERSIST, help="Side of the square grayscale input; default ranges shrink to what fits.",
        )
        label_mode = widgets.label_mode_ui(f"{prefix}_label_mode")
        algorithm = st.selectbox(
            "Algorithm", tuning.ALGORITHMS, index=tuning.ALGORITHMS.index("bayesian"), key=f"{prefix}_algorithm",
            persist_state=PERSIST, format_func=lambda name: tuning.ALGORITHM_LABELS[name],
            help="Bayesian optimization learns from finished trials; Hyperband gives promising trials more epochs; "
            "grid search tries every combination of a small space.",
        )
    with second:
        objective = st.selectbox(
            "Objective", list(tuning.OBJECTIVES), key=f"{prefix}_objective", persist_state=PERSIST,
            format_func=lambda name: f"{objective_label(name)} ({'higher' if tuning.OBJECTIVES[name] == 'max' else 'lower'} is better)",
            help="Measured on the patient-grouped validation part of the pooled train+val images; the test split is never used.",
        )
        max_trials = st.number_input(
            "Max trials", min_value=1, max_value=1000, value=10, step=1, key=f"{prefix}_max_trials", persist_state=PERSIST,
            help="Most configurations to train.",
        )
        epochs = st.number_input(
            "Epochs per trial", min_value=1, max_value=1000, value=3, step=1, key=f"{prefix}_epochs", persist_state=PERSIST,
            help="Hyperband: the most epochs any trial trains; it starts many trials short and continues the best.",
        )
    with third:
        seed = st.number_input(
            "Seed", min_value=0, max_value=2**31 - 1, value=42, step=1, key=f"{prefix}_seed", persist_state=PERSIST,
            help="Seed of the split, the search and each trial's training.",
        )
        validation_fraction = st.slider(
            "Validation patients", min_value=0.1, max_value=0.5, value=0.2, step=0.05, key=f"{prefix}_validation_fraction",
            persist_state=PERSIST, format="%.2f", help="Share of patients held out to score trials (no patient is in both parts).",
        )
        run_name = st.text_input(
            "Run name", value="", key=f"{prefix}_run_name", persist_state=PERSIST, max_chars=80, placeholder="optional",
        )
    return {
        "image_size": int(image_size),
        "label_mode": label_mode,
        "algorithm": algorithm,
        "objective": objective,
        "max_trials": int(max_trials),
        "epochs_per_trial": int(epochs),
        "seed": int(seed),
        "validation_fraction": float(validation_fraction),
        "run_name": str(run_name).strip(),
    }


def search_space_ui(spec: ArchitectureSpec, image_size: int) -> dict[str, Any]:
    """Draws, per hyperparameter, "tune it" with its range or choices, or its fixed value.

    Only what differs from the default space is returned, so default ranges can still be
    narrowed to the image size.

    Args:
        spec: The architecture's registry entry.
        image_size: Input side in pixels, for the searched-range caption.

    Returns:
        Search-space overrides for TuneConfig.search_space.
    """
    overrides: dict[str, Any] = {}
    try:
        fitted = {dimension.name: dimension for dimension in tuning.resolve_search_space(spec.name, {}, image_size)}
    except ValueError:
        fitted = {}
    header = st.columns([2, 1, 5])
    header[0].caption("**Hyperparameter**")
    header[1].caption("**Tune**")
    header[2].caption("**Range, choices or fixed value**")
    for parameter, target in tuning.tunable_hyperparameters(spec.name):
        override = _dimension_row_ui(spec.name, parameter, target, fitted.get(parameter.name), image_size)
        if override is not _UNCHANGED:
            overrides[parameter.name] = override
    return overrides


_UNCHANGED = object()


def _dimension_row_ui(
    architecture: str, parameter: HyperParameter, target: str, fitted: tuning.Dimension | None, image_size: int
) -> Any:
    """Draws one hyperparameter's row; returns its override or _UNCHANGED."""
    default = tuning.default_dimension(architecture, parameter.name)
    key = f"tune_{architecture}_{parameter.name}"
    name_column, tune_column, settings = st.columns([2, 1, 5], vertical_alignment="center")
    name_column.markdown(f"`{parameter.name}`" + (" · training" if target == "train" else ""), help=parameter.help)
    tuned = tune_column.checkbox(
        "Tune", value=default.tuned, key=f"{key}_tuned", persist_state=PERSIST, label_visibility="collapsed",
        help=f"Search {parameter.name}; unticked, it is fixed at the value on the right.",
    )
    with settings:
        if not tuned:
            value = widgets.hyperparameter_ui(parameter, key=f"{key}_value")
            return _UNCHANGED if not default.tuned and value == default.value else value
        if default.kind == "bool":
            st.caption("searches on and off")
            return _UNCHANGED if default.tuned else {}
        if default.kind == "choice":
            return _choices_ui(default, key, changed_from_default=not default.tuned)
        override = _range_ui(default, key, changed_from_default=not default.tuned)
        if override is _UNCHANGED and fitted is not None and fitted.max_value != default.max_value:
            # The default range is narrowed to what can be built at this image size.
            st.caption(f"{'searched' if fitted.tuned else ''} {fitted.describe()} to fit {image_size} px".strip())
        return override


def _choices_ui(default: tuning.Dimension, key: str, changed_from_default: bool) -> Any:
    """Draws the choices of a tuned choice hyperparameter."""
    chosen = st.multiselect(
        "Choices", list(default.choices), default=list(default.choices), key=f"{key}_choices", persist_state=PERSIST,
        format_func=widgets.format_choice, label_visibility="collapsed",
    )
    if list(chosen) == list(default.choices) and not changed_from_default:
        return _UNCHANGED
    return {"choices": list(chosen)}


def _range_ui(default: tuning.Dimension, key: str, changed_from_default: bool) -> Any:
    """Draws min, max and (for floats) the log-scale switch of a tuned numeric hyperparameter."""
    low_column, high_column, log_column = st.columns([2, 2, 1], vertical_alignment="center")
    if default.kind == "int":
        step = int(default.step or 1)
        low = low_column.number_input("min", value=int(default.min_value), step=step, key=f"{key}_min", persist_state=PERSIST)
        high = high_column.number_input("max", value=int(default.max_value), step=step, key=f"{key}_max", persist_state=PERSIST)
        log = default.log
    else:
        step = float(default.step) if default.step else float(default.min_value) if default.log and default.min_value else 0.01
        low = low_column.number_input("min", value=float(default.min_value), step=step, format="%g", key=f"{key}_min", persist_state=PERSIST)
        high = high_column.number_input("max", value=float(default.max_value), step=step, format="%g", key=f"{key}_max", persist_state=PERSIST)
        log = log_column.checkbox("log", value=default.log, key=f"{key}_log", persist_state=PERSIST, help="Sample on a log scale.")
    override = {}
    if low != default.min_value or changed_from_default:
        override["min_value"] = low
    if high != default.max_value or changed_from_default:
        override["max_value"] = high
    if bool(log) != default.log:
        override["log"] = bool(log)
    if not override and not changed_from_default:
        return _UNCHANGED
    return override


def build_tune_config(data_dir: str, architecture: str, space: dict, options: dict) -> tuning.TuneConfig:
    """Builds the validated TuneConfig from the page's values.

    Raises:
        ValueError: With what to change.
    """
    return tuning.TuneConfig(
        data=state.build_data_config(data_dir, options),
        architecture=architecture,
        search_space=space,
        algorithm=options["algorithm"],
        objective=options["objective"],
        max_trials=options["max_trials"],
        epochs_per_trial=options["epochs_per_trial"],
        seed=options["seed"],
        validation_fraction=options["validation_fraction"],
        run_name=options["run_name"],
    )


def space_summary_ui(config: tuning.TuneConfig) -> None:
    """Shows what the search varies, the resolved ranges and (for grid search) the grid size."""
    dimensions = config.dimensions()
    tuned = [dimension for dimension in dimensions if dimension.tuned]
    text = f"Searching **{len(tuned)}** hyperparameter(s): " + "; ".join(
        f"`{dimension.name}` {dimension.describe()}" for dimension in tuned
    )
    st.caption(text if tuned else "Nothing is tuned: every hyperparameter is fixed, so every trial trains the same model.")
    if config.algorithm == "grid":
        st.caption(f"Grid search: {tuning.grid_size(dimensions):,} combination(s), at most {config.max_trials} tried.")


def configure_section_ui(data_dir: str) -> None:
    """Draws the architecture, options and search space; validates and starts a search."""
    spec = widgets.architecture_ui(key="tune_architecture")
    options = search_options_ui()
    st.markdown(f"**Search space for {spec.label}** — tick a hyperparameter to search it, untick it to fix it.")
    space = search_space_ui(spec, options["image_size"])
    try:
        config = build_tune_config(data_dir, spec.name, space, options)
    except ValueError as error:
        st.error(f"**Search space not valid.** {error}", icon="🚫")
        st.button("🔎 Start tuning", type="primary", disabled=True, key="tune_start")
        return
    space_summary_ui(config)
    if st.button("🔎 Start tuning", type="primary", key="tune_start"):
        start_tuning(config)


def start_tuning(config: tuning.TuneConfig) -> None:
    """Checks a config against the data and weights, then starts (or attaches to) a search."""
    try:
        with st.spinner("Checking the configuration against the data ..."):
            dataset = state.load_dataset_cached(config.data.data_dir, config.data.label_mode, config.data.image_size)
            tuning.check_tune_config(config, dataset)
            payload = tuning.tune_payload(config, dataset)
    except (ValueError, FileNotFoundError) as error:
        st.error(f"**Not started.** {error}", icon="🚫")
        return
    existing = state.find_identical_active_run("tune", config.to_dict())
    if existing is not None:
        select_tune_run(existing.id)
        st.info(f"An identical search is already queued or running: showing `{existing.id}` instead of starting a second one.", icon="🔁")
        return
    try:
        with st.spinner("Starting the worker ..."):
            run_id = jobs.start_run("tune", payload, name=config.run_name, runs_dir=state.runs_dir())
    except (ValueError, OSError) as error:
        st.error(f"**Not started.** {error}", icon="🚫")
        return
    select_tune_run(run_id)
    st.toast(f"Started tuning run {run_id}", icon="🔎")


# ---------------------------------------------------------------------------------------
# Runs.
# ---------------------------------------------------------------------------------------


def select_tune_run(run_id: str) -> None:
    """Makes a tuning run the one the Tune page shows."""
    st.session_state[SELECTED_TUNE_RUN_KEY] = run_id


def selected_tune_run_id(runs: Sequence[Run], states: dict[str, str]) -> str | None:
    """Returns the session's choice, else the newest active run (reattach), else the newest."""
    ids = [run.id for run in runs]
    chosen = st.session_state.get(SELECTED_TUNE_RUN_KEY)
    if chosen in ids:
        return chosen
    for run in runs:
        if states.get(run.id) in ACTIVE_STATES:
            return run.id
    return ids[0] if ids else None


def tune_run_label(run: Run, run_state: str) -> str:
    """Returns "icon name · architecture · algorithm · N trials · id (state)"."""
    config = run.config
    facts = [
        str(config.get("architecture", "?")),
        str(config.get("algorithm", "?")),
        f"{config.get('max_trials', '?')} trials",
        f"{config.get('data', {}).get('image_size', '?')} px",
    ]
    title = f"{run.name} · " if run.name != run.id else ""
    return f"{widgets.STATE_ICONS.get(run_state, '•')} {title}{' · '.join(facts)} · {run.id} ({run_state})"


def runs_section_ui() -> None:
    """Draws the tuning-run picker and the selected run, live or finished."""
    st.subheader("Tuning runs")
    runs = state.list_runs("tune")
    if not runs:
        st.caption(f"No tuning runs yet in `{state.runs_dir()}`. Start one above.")
        return
    states = {run.id: run.state for run in runs}
    ids = [run.id for run in runs]
    selected = selected_tune_run_id(runs, states)
    labels = {run.id: tune_run_label(run, states[run.id]) for run in runs}
    chosen = st.selectbox(
        "Tuning run", ids, index=ids.index(selected) if selected in ids else 0, format_func=lambda run_id: labels[run_id],
        help="Running and past searches, newest first; a running one is reattached when the page is opened again.",
    )
    if chosen:
        select_tune_run(chosen)
        tuning_run_view(chosen)


def tuning_run_view(run_id: str) -> None:
    """Draws a tuning run: self-refreshing while active, with results and actions when ended."""
    try:
        run = state.run_store().get(run_id)
    except (RunNotFoundError, ValueError) as error:
        st.error(str(error))
        return
    status = run.status()
    if status.get("state") in ACTIVE_STATES:
        # Only the fragment polls; the editor above stays still while it refreshes.
        st.fragment(run_every=POLL_SECONDS)(_live_fragment)(run_id, status.get("state"))
    else:
        finished_view(run, status)


def _live_fragment(run_id: str, initial_state: str) -> None:
    """Body of the polling fragment; asks for a full rerun once the run's state changes."""
    run = state.run_store().get(run_id)
    status = run.status()
    if status.get("state") != initial_state:
        st.rerun()
    live_view(run, status)


def _run_config(run: Run) -> tuning.TuneConfig | None:
    """Returns a run's TuneConfig, or None when its config.json cannot be read as one."""
    try:
        return tuning.TuneConfig.from_dict(run.config)
    except (ValueError, TypeError):
        return None


def _header(run: Run, status: dict, config: tuning.TuneConfig | None) -> None:
    """Draws the run's name, badge, facts and the synthetic-data notice."""
    st.markdown(f"#### {run.name} &nbsp; {state_badge(status.get('state', 'queued'))}")
    raw = run.config
    facts = [
        f"`{run.id}`",
        str(raw.get("architecture", "?")),
        tuning.ALGORITHM_LABELS.get(raw.get("algorithm"), str(raw.get("algorithm", "?"))),
        f"objective {raw.get('objective', '?')}",
        f"{raw.get('max_trials', '?')} trials × {raw.get('epochs_per_trial', '?')} epoch(s)",
        f"{raw.get('data', {}).get('image_size', '?')} px",
    ]
    st.caption(" · ".join(facts))
    split = run.read_json("split.json") or {}
    if split:
        st.caption(
            f"Patient-grouped split of the pooled train+val images: {split.get('n_train')} images "
            f"({split.get('n_train_patients')} patients) train, {split.get('n_validation')} "
            f"({split.get('n_validation_patients')} patients) score the trials; "
            f"{split.get('n_test_held_out', 0)} test images are never used."
        )
    if split.get("synthetic") or state.is_synthetic(raw.get("data", {}).get("data_dir", "")):
        st.caption("🧪 **Synthetic demo data — not real X-rays.**")


def live_view(run: Run, status: dict) -> None:
    """Draws the current trial's progress, the Stop button and the results so far."""
    config = _run_config(run)
    events = live.read_events_incrementally(run)
    progress = read_tune_progress(events)
    _header(run, status, config)
    stop_requested = run.stop_requested
    _progress_block(progress, status, stop_requested)
    live.stop_button_ui(run, kept="finished trials")
    results_block(run, config, live_run=True)


def _progress_block(progress: TuneProgress, status: dict, stop_requested: bool) -> None:
    """Draws the phase, trial/epoch/batch counters and progress bars."""
    if live.phase_notice_ui(progress, status, stop_requested, kept="finished trials"):
        return
    elapsed = time.time() - progress.started_at if progress.started_at else None
    columns = st.columns(4)
    columns[0].metric("Trial", f"{progress.trial or '—'}/{progress.n_trials or '—'}")
    columns[1].metric("Epoch", f"{progress.epoch or progress.epochs_done}/{progress.trial_epochs or '—'}")
    columns[2].metric("Batch", f"{progress.batch}/{progress.steps}" if progress.steps and progress.batch else "—")
    columns[3].metric("Elapsed", live.format_duration(elapsed))
    fraction = min(1.0, len(progress.finished) / progress.n_trials) if progress.n_trials else 0.0
    st.progress(fraction, text=f"{len(progress.finished)} of at most {progress.n_trials} trials finished")
    if progress.hyperparameters and progress.trial not in progress.finished:
        st.caption(f"Trial {progress.trial}: " + ", ".join(
            f"`{name}` {widgets.format_choice(value) if not isinstance(value, float) else f'{value:.4g}'}"
            for name, value in progress.hyperparameters.items()
        ))


def results_block(run: Run, config: tuning.TuneConfig | None, live_run: bool) -> None:
    """Draws the trial table (best highlighted), the best-so-far chart and parallel coordinates."""
    rows = run.read_json("trials.json", []) or []
    objective = (config.objective if config else run.config.get("objective")) or "objective"
    direction = config.direction if config else tuning.OBJECTIVES.get(objective, "max")
    if not rows:
        st.caption("The trial table appears when the first trial ends.")
        return
    best = tuning.best_row(rows, direction)
    if best:
        st.markdown(
            f"**Best so far: trial {best['trial']}** — {objective_label(objective)} **{format_number(best['objective'], 4)}**"
        )
    st.markdown("**Trials** (click a column title to sort; ★ marks the best)")
    frame = trials_frame(rows, objective, direction)
    dimensions = config.dimensions() if config else ()
    st.dataframe(
        highlight_best(frame, objective, dimensions), hide_index=True, width="stretch", placeholder="—",
        key=f"tune_trials_{run.id}_{'live' if live_run else 'done'}",
    )
    st.plotly_chart(best_so_far_figure(rows, objective, direction), key=f"tune_best_{run.id}_{live_run}")
    figure = parallel_coordinates_figure(rows, objective, direction, dimensions)
    if figure is not None:
        st.plotly_chart(figure, key=f"tune_parcoords_{run.id}_{live_run}")
        st.caption("One line per finished trial; drag along an axis to filter. Choices and on/off are drawn as positions.")


def finished_view(run: Run, status: dict) -> None:
    """Draws an ended search: its state, Resume, results and the cross-validation action."""
    config = _run_config(run)
    _header(run, status, config)
    run_state = status.get("state")
    finished = sum(row.get("status") == "completed" for row in run.read_json("trials.json", []) or [])
    if run_state == "failed":
        st.error(f"**The search failed:** {status.get('error') or 'no reason was recorded (see worker.log in the run folder).'}")
    elif run_state == "interrupted":
        st.warning(
            "The worker stopped without finishing (killed, crashed or the machine restarted). "
            f"{finished} finished trial(s) are kept; Resume continues the search.", icon="⚠️",
        )
    elif run_state == "stopped":
        st.info(f"Stopped by request; {finished} finished trial(s) kept. Resume continues the search.", icon="⏹")
    if run_state in jobs.RESUMABLE_STATES:
        live.resume_button_ui(run, continues="Continues the search; finished trials are kept and an unfinished one runs again")
    results_block(run, config, live_run=False)
    if config is not None:
        cross_validate_ui(run, config)


def cross_validate_ui(run: Run, config: tuning.TuneConfig) -> None:
    """Draws the best configuration and the button that cross-validates it."""
    try:
        model, train, _ = tuning.best_model_and_train_config(run.id, runs_dir=state.runs_dir())
    except ValueError:
        return
    st.markdown("##### Best configuration")
    values = {dimension.name: getattr(train if dimension.target == "train" else model, dimension.name) for dimension in config.dimensions()}
    st.dataframe(
        pd.DataFrame([{"hyperparameter": name, "value": widgets.format_choice(value) if not isinstance(value, float) else f"{value:.4g}",
                       "searched": "yes" if dimension.tuned else "fixed"}
                      for (name, value), dimension in zip(values.items(), config.dimensions())]),
        hide_index=True, width="content", column_config={"value": st.column_config.TextColumn("value", width="medium")},
    )
    first, second, third = st.columns([1, 1, 2], vertical_alignment="bottom")
    n_splits = first.number_input("Folds k", min_value=2, max_value=20, value=5, step=1, key=f"tune_cv_k_{run.id}",
                                  help="Patient-grouped stratified folds of the same data, size and label mode.")
    epochs = second.number_input("Epochs per fold", min_value=1, max_value=1000, value=int(train.epochs), step=1,
                                 key=f"tune_cv_epochs_{run.id}", help="Defaults to the epochs the best trial trained.")
    with third:
        clicked = st.button("🧪 Cross-validate the best configuration", key=f"tune_cv_{run.id}", type="primary",
                            help="Starts a k-fold cross-validation run of this configuration; watch it on the Train page.")
    if clicked:
        _start_cross_validation(run, int(n_splits), int(epochs))
    started = st.session_state.get(STARTED_CV_KEY, {}).get(run.id)
    if started:
        st.success(f"Cross-validation run `{started}` of this configuration is on its way.", icon="🧪")
        st.page_link("pages/train.py", label="Watch it on the Train page", icon="🏋️")


def _start_cross_validation(run: Run, n_splits: int, epochs: int) -> None:
    """Validates and starts the cross-validation of a tuning run's best configuration."""
    try:
        config = tuning.cv_config_from_tuning(run.id, n_splits=n_splits, epochs=epochs, runs_dir=state.runs_dir())
        with st.spinner("Checking the configuration against the data ..."):
            state.validate_run_config(config)
        with st.spinner("Starting the worker ..."):
            cv_run_id, attached = state.start_or_attach(config)
    except (ValueError, FileNotFoundError, OSError) as error:
        st.error(f"**Not started.** {error}", icon="🚫")
        return
    state.select_run(cv_run_id)
    st.session_state.setdefault(STARTED_CV_KEY, {})[run.id] = cv_run_id
    if attached:
        st.info(f"An identical cross-validation run is already active: `{cv_run_id}`.", icon="🔁")
