"""Tune page: the search-space editor, and each search live or finished with its trial table and best configuration."""

from __future__ import annotations

import time
from typing import Any

import pandas as pd
import streamlit as st

from zoidberg.config import make_data_config
from zoidberg.options.registry import PREPROCESSING_OPTIONS, ArchitectureSpec, HyperParameter
from zoidberg.runs.progress import Progress, format_duration, overall_fraction, read_progress
from zoidberg.runs.store import Run
from zoidberg.runs.worker import RESUMABLE_STATES
from zoidberg.tuning import config as tuning
from zoidberg.tuning import results
from zoidberg.tuning import space as tuning_space
from zoidberg.ui import figures, form_widgets, state, trials_table, widgets
from zoidberg.ui.widgets import PERSIST, format_number, state_badge

STARTED_CV_KEY = "zoidberg_tune_started_cv"
NAS_NOTE = (
    "Searching over the number of conv blocks and the filters per block changes the network itself, "
    "so for the custom CNN this is a small **neural architecture search**, not only a tuning of training knobs."
)


# ---------------------------------------------------------------------------------------
# Configuration widgets.
# ---------------------------------------------------------------------------------------


def search_options_ui(prefix: str = "tune") -> dict[str, Any]:
    """Draws the data size, algorithm, objective, trial budget, seed and name.

    Args:
        prefix: Widget key prefix.

    Returns:
        Dict with image_size, label_mode, algorithm, objective, max_trials,
        epochs_per_trial, seed, validation_fraction, run_name, engine, parallel and ray_address.
    """
    first, second, third = st.columns(3)
    with first:
        image_size = st.number_input(
            "Image size (px)", min_value=16, max_value=512, value=64, step=16, key=f"{prefix}_image_size",
            persist_state=PERSIST, help="Side of the square grayscale input; default ranges shrink to what fits.",
        )
        label_mode = form_widgets.label_mode_ui(f"{prefix}_label_mode")
        preprocessing = form_widgets.preprocessing_ui(prefix)
        algorithm = st.selectbox(
            "Algorithm", tuning.ALGORITHMS, index=tuning.ALGORITHMS.index("bayesian"), key=f"{prefix}_algorithm",
            persist_state=PERSIST, format_func=lambda name: tuning.ALGORITHM_LABELS[name],
            help="Bayesian optimization learns from finished trials; Hyperband gives promising trials more epochs; "
            "grid search tries every combination of a small space.",
        )
    with second:
        objective = st.selectbox(
            "Objective", list(tuning.OBJECTIVES), key=f"{prefix}_objective", persist_state=PERSIST,
            format_func=lambda name: f"{trials_table.objective_label(name)} ({'higher' if tuning.OBJECTIVES[name] == 'max' else 'lower'} is better)",
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
    engine = form_widgets.engine_ui(prefix, tuning.TUNE_ENGINES, "inprocess", tuning.TUNE_ENGINE_HELP, unit="trials")
    return {
        **engine,
        "image_size": int(image_size),
        "label_mode": label_mode,
        "algorithm": algorithm,
        "objective": objective,
        "max_trials": int(max_trials),
        "epochs_per_trial": int(epochs),
        "seed": int(seed),
        "validation_fraction": float(validation_fraction),
        "run_name": str(run_name).strip(),
        **preprocessing,
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
        fitted = {dimension.name: dimension for dimension in tuning_space.resolve_search_space(spec.name, {}, image_size)}
    except ValueError:
        fitted = {}
    header = st.columns([2, 1, 5])
    header[0].caption("**Hyperparameter**")
    header[1].caption("**Tune**")
    header[2].caption("**Range, choices or fixed value**")
    for parameter, target in tuning_space.tunable_hyperparameters(spec.name):
        override = _dimension_row_ui(spec.name, parameter, target, fitted.get(parameter.name), image_size)
        if override is not _UNCHANGED:
            overrides[parameter.name] = override
    return overrides


_UNCHANGED = object()


def _dimension_row_ui(
    architecture: str, parameter: HyperParameter, target: str, fitted: tuning_space.Dimension | None, image_size: int
) -> Any:
    """Draws one hyperparameter's row; returns its override or _UNCHANGED."""
    default = tuning_space.default_dimension(architecture, parameter.name)
    key = f"tune_{architecture}_{parameter.name}"
    name_column, tune_column, settings = st.columns([2, 1, 5], vertical_alignment="center")
    name_column.markdown(f"`{parameter.name}`" + (" · training" if target == "train" else ""), help=parameter.help)
    tuned = tune_column.checkbox(
        "Tune", value=default.tuned, key=f"{key}_tuned", persist_state=PERSIST, label_visibility="collapsed",
        help=f"Search {parameter.name}; unticked, it is fixed at the value on the right.",
    )
    with settings:
        if not tuned:
            value = form_widgets.option_ui(parameter, key=f"{key}_value")
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


def _choices_ui(default: tuning_space.Dimension, key: str, changed_from_default: bool) -> Any:
    """Draws the choices of a tuned choice hyperparameter."""
    chosen = st.multiselect(
        "Choices", list(default.choices), default=list(default.choices), key=f"{key}_choices", persist_state=PERSIST,
        format_func=form_widgets.format_choice, label_visibility="collapsed",
    )
    if list(chosen) == list(default.choices) and not changed_from_default:
        return _UNCHANGED
    return {"choices": list(chosen)}


def _range_ui(default: tuning_space.Dimension, key: str, changed_from_default: bool) -> Any:
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
        data=make_data_config(
            data_dir, options["label_mode"], options["image_size"], **{option.name: options[option.name] for option in PREPROCESSING_OPTIONS}
        ),
        architecture=architecture,
        search_space=space,
        algorithm=options["algorithm"],
        objective=options["objective"],
        max_trials=options["max_trials"],
        epochs_per_trial=options["epochs_per_trial"],
        seed=options["seed"],
        validation_fraction=options["validation_fraction"],
        run_name=options["run_name"],
        engine=options["engine"],
        parallel=options["parallel"],
        ray_address=options["ray_address"],
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
        st.caption(f"Grid search: {tuning_space.grid_size(dimensions):,} combination(s), at most {config.max_trials} tried.")


def configure_section_ui(data_dir: str) -> None:
    """Draws the architecture, options and search space; validates and starts a search."""
    # Started when the form is shown, so that Start finds TensorFlow already imported.
    state.keep_warm_worker()
    spec = form_widgets.architecture_ui(key="tune_architecture")
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
        run_id, attached = state.start_or_attach("tune", config)
    except (ValueError, FileNotFoundError, OSError) as error:
        widgets.show_error(error, "Not started.")
        return
    state.select_run(run_id, "tune")
    if attached:
        st.info(f"An identical search is already queued or running: showing `{run_id}` instead of starting a second one.", icon="🔁")
    else:
        st.toast(f"Started tuning run {run_id}", icon="🔎")


# ---------------------------------------------------------------------------------------
# Runs.
# ---------------------------------------------------------------------------------------


# The anchor of the Tuning runs section, which the banner at the top links to.
RUNS_ANCHOR = "tuning-runs"


def active_banner_ui() -> None:
    """Shows, at the top of the Tune page, every queued or running search, linking down to its live view."""
    widgets.active_runs_banner_ui("tune", RUNS_ANCHOR, _where_it_is)


def _where_it_is(run: Run) -> str:
    """Where an active search is, in one phrase."""
    progress = read_progress(state.read_events_incrementally(run))
    return f"{progress.phase}, {overall_fraction(progress):.0%} done"


def runs_section_ui() -> None:
    """Draws the tuning-run picker and the selected run, live or finished."""
    st.subheader("Tuning runs", anchor=RUNS_ANCHOR)
    runs = state.list_runs("tune")
    if not runs:
        st.caption(f"No tuning runs yet in `{state.runs_dir()}`. Start one above.")
        return
    states = {run.id: run.state for run in runs}
    chosen = widgets.run_picker_ui(
        runs,
        states,
        state.selected_run_id(runs, states, "tune"),
        label="Tuning run",
        help_text="Running and past searches, newest first; a running one is reattached when the page is opened again.",
    )
    if chosen:
        state.select_run(chosen, "tune")
        widgets.run_view_ui(chosen, live_view, finished_view)


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
    events = state.read_events_incrementally(run)
    progress = read_progress(events)
    _header(run, status, config)
    stop_requested = run.stop_requested
    _progress_block(progress, status, stop_requested)
    widgets.stop_button_ui(run)
    results_block(run, config, live_run=True)


def _progress_block(progress: Progress, status: dict, stop_requested: bool) -> None:
    """Draws the phase, trial/epoch/batch counters and progress bars."""
    if widgets.phase_notice_ui(progress, status, stop_requested, kept="finished trials"):
        return
    elapsed = time.time() - progress.started_at if progress.started_at else None
    columns = st.columns(4)
    columns[0].metric("Trial", f"{progress.current or '—'}/{progress.total or '—'}")
    columns[1].metric("Epoch", f"{progress.epoch or progress.epochs_done}/{progress.epochs or '—'}")
    columns[2].metric("Batch", f"{progress.batch}/{progress.steps}" if progress.steps and progress.batch else "—")
    columns[3].metric("Elapsed", format_duration(elapsed))
    fraction = min(1.0, len(progress.finished) / progress.total) if progress.total else 0.0
    st.progress(fraction, text=f"{len(progress.finished)} of at most {progress.total} trials finished")
    if progress.hyperparameters and progress.current not in progress.finished:
        st.caption(f"Trial {progress.current}: " + ", ".join(
            f"`{name}` {form_widgets.format_choice(value) if not isinstance(value, float) else f'{value:.4g}'}"
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
    best = results.best_row(rows, direction)
    if best:
        st.markdown(
            f"**Best so far: trial {best['trial']}** — {trials_table.objective_label(objective)} **{format_number(best['objective'], 4)}**"
        )
    st.markdown("**Trials** (click a column title to sort; ★ marks the best)")
    frame = trials_table.trials_frame(rows, objective, direction)
    dimensions = config.dimensions() if config else ()
    st.dataframe(
        trials_table.highlight_best(frame, objective, dimensions), hide_index=True, width="stretch", placeholder="—",
        key=f"tune_trials_{run.id}_{'live' if live_run else 'done'}",
    )
    st.plotly_chart(figures.best_so_far_figure(rows, objective, direction), key=f"tune_best_{run.id}_{live_run}")
    figure = figures.parallel_coordinates_figure(rows, objective, direction, dimensions)
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
    if run_state in RESUMABLE_STATES:
        widgets.resume_button_ui(run)
    results_block(run, config, live_run=False)
    if config is not None:
        cross_validate_ui(run, config)


def cross_validate_ui(run: Run, config: tuning.TuneConfig) -> None:
    """Draws the best configuration and the button that cross-validates it."""
    try:
        model, train, _ = results.best_model_and_train_config(run.id, runs_dir=state.runs_dir())
    except ValueError:
        return
    st.markdown("##### Best configuration")
    values = {dimension.name: getattr(train if dimension.target == "train" else model, dimension.name) for dimension in config.dimensions()}
    st.dataframe(
        pd.DataFrame([{"hyperparameter": name, "value": form_widgets.format_choice(value) if not isinstance(value, float) else f"{value:.4g}",
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
        config = results.cv_config_from_tuning(run.id, n_splits=n_splits, epochs=epochs, runs_dir=state.runs_dir())
        cv_run_id, attached = state.start_or_attach("cv", config)
    except (ValueError, FileNotFoundError, OSError) as error:
        widgets.show_error(error, "Not started.")
        return
    state.select_run(cv_run_id, "cv")
    st.session_state.setdefault(STARTED_CV_KEY, {})[run.id] = cv_run_id
    if attached:
        st.info(f"An identical cross-validation run is already active: `{cv_run_id}`.", icon="🔁")
