"""Train page: the cross-validation form, the run picker, and each run live or finished, read from the run store."""

from __future__ import annotations

import time
from collections.abc import Sequence

import pandas as pd
import streamlit as st

from zoidberg.config import make_data_config, make_run_config
from zoidberg.inference.loading import prediction_units
from zoidberg.launch import jobs
from zoidberg.options.registry import PREPROCESSING_OPTIONS
from zoidberg.runs.progress import Progress, eta_seconds, format_duration, overall_fraction, read_progress
from zoidberg.runs.store import (
    ACTIVE_STATES,
    DATA_FILE,
    MEMBERS_FILE,
    MODEL_FILE,
    MODEL_KINDS,
    Run,
    RunNotFoundError,
)
from zoidberg.runs.worker import RESUMABLE_STATES
from zoidberg.ui import adaptation_view, evaluation_view, figures, form_widgets, run_downloads, run_results, state, widgets
from zoidberg.ui import preset_cards as presets
from zoidberg.ui.widgets import escape_markdown, metrics_table, show_error, state_badge


# ---------------------------------------------------------------------------------------
# The form.
# ---------------------------------------------------------------------------------------


def form_section_ui(data_dir: str) -> None:
    """Draws the presets, the architecture choice and the form; validates and starts on submit."""
    # Started when the form is shown, so that Start finds TensorFlow already imported.
    state.keep_warm_worker()
    presets.presets_ui(data_dir)
    spec = form_widgets.architecture_ui()
    with st.form("train_form"):
        st.markdown(f"**{spec.label} hyperparameters**")
        model_values = form_widgets.hyperparameters_ui(spec)
        st.markdown("**Training**")
        first, second, third = st.columns(3)
        with first:
            run_options = form_widgets.run_options_ui()
        train_values = form_widgets.training_options_ui(columns=(second, third))
        with third:
            run_name = form_widgets.run_name_ui()
        engine_options = form_widgets.engine_ui()
        with st.expander("Operating point, calibration, duplicates and test-time augmentation"):
            evaluation_options = form_widgets.evaluation_options_ui()
        submitted = st.form_submit_button("🚀 Start cross-validation", type="primary")
    if submitted:
        start(data_dir, spec.name, model_values, train_values, {**run_options, **engine_options, **evaluation_options}, run_name)


def start(data_dir: str, architecture: str, model_values: dict, train_values: dict, run_options: dict, run_name: str) -> None:
    """Validates the form's values and starts (or attaches to) a run; starts nothing when invalid."""
    try:
        config = make_run_config(
            make_data_config(
                data_dir, run_options["label_mode"], run_options["image_size"],
                **{option.name: run_options[option.name] for option in PREPROCESSING_OPTIONS},
            ),
            architecture,
            model_values,
            train_values,
            n_splits=run_options["n_splits"],
            random_state=run_options["random_state"],
            operating_point=run_options["operating_point"],
            calibration_method=run_options["calibration_method"],
            duplicates=run_options["duplicates"],
            tta=run_options["tta"],
            tensorboard=run_options["tensorboard"],
            engine=run_options["engine"],
            parallel=run_options["parallel"],
            ray_address=run_options["ray_address"],
            preset=presets.filled_preset(),
            run_name=run_name,
        )
        run_id, attached = state.start_or_attach("cv", config)
    except (ValueError, FileNotFoundError, OSError) as error:
        show_error(error, "Not started.")
        return
    state.select_run(run_id)
    if attached:
        st.info(
            f"An identical run is already queued or running: showing `{run_id}` instead of starting a second one.",
            icon="🔁",
        )
    else:
        st.toast(f"Started run {run_id}", icon="🚀")


# The anchor of the Runs section, which the banner at the top links to.
RUNS_ANCHOR = "runs"


def active_banner_ui() -> None:
    """Shows, at the top of the page, every queued or running run and where it is, linking down to its live view."""
    widgets.active_runs_banner_ui(MODEL_KINDS, RUNS_ANCHOR, _where_it_is)


def _where_it_is(run: Run) -> str:
    """Where an active cross-validation or ensemble run is, in one phrase."""
    if run.kind == "ensemble":
        return "training its members"
    progress = read_progress(state.read_events_incrementally(run))
    return (f"{progress.phase}, fold {min(progress.current, progress.total) or '—'}/{progress.total or '—'}, "
            f"epoch {progress.epoch or progress.epochs_done}/{progress.epochs or '—'}, {overall_fraction(progress):.0%} done")


def runs_section_ui() -> None:
    """Draws the run picker and the selected run, live or finished."""
    st.subheader("Runs", anchor=RUNS_ANCHOR)
    runs = state.list_runs(MODEL_KINDS)
    if not runs:
        st.caption(f"No cross-validation runs yet in `{state.runs_dir()}`. Start one above.")
        return
    states = {run.id: run.state for run in runs}
    active = [run_id for run_id, run_state in states.items() if run_state in ACTIVE_STATES]
    if len(active) > 1:
        active_runs_ui(active)
    elif active:
        st.caption(f"1 run active · {len(runs)} in total")
    chosen = widgets.run_picker_ui(
        runs, states, state.selected_run_id(runs, states),
        help_text="Running and past cross-validation runs and ensembles from the run store, newest first.",
    )
    if chosen:
        state.select_run(chosen)
        run_view(chosen)


# ---------------------------------------------------------------------------------------
# Drawing.
# ---------------------------------------------------------------------------------------


def active_runs_frame(runs: Sequence[Run]) -> pd.DataFrame:
    """Tabulates where each active run is: fold, epoch, overall progress, latest validation AUC.

    Args:
        runs: Queued or running runs.

    Returns:
        One row per run.
    """
    rows = []
    for run in runs:
        progress = read_progress(state.read_events_incrementally(run))
        latest = progress.epoch_rows[-1] if progress.epoch_rows else {}
        elapsed = time.time() - progress.started_at if progress.started_at else None
        if run.kind == "ensemble":
            rows.append(_ensemble_row(run, elapsed))
            continue
        rows.append(
            {
                "run": run.name,
                "id": run.id,
                "architecture": run.config.get("model", {}).get("architecture", "?"),
                "state": run.state,
                "phase": progress.phase,
                "fold": f"{min(progress.current, progress.total) or '—'}/{progress.total or '—'}",
                "epoch": f"{progress.epoch or progress.epochs_done}/{progress.epochs or '—'}",
                "progress": overall_fraction(progress),
                "latest val AUC": latest.get("val_auc"),
                "elapsed": format_duration(elapsed),
            }
        )
    return pd.DataFrame(rows)


def _ensemble_row(run: Run, elapsed: float | None) -> dict:
    """An active ensemble's row: which member it trains, and the share of members done."""
    members = members_frame(run)
    total = len(members)
    done = int((members["state"] == "completed").sum()) if total else 0
    active = members[members["state"].isin(ACTIVE_STATES)] if total else members
    phase = f"training member {int(active.iloc[0]['member'])}/{total}" if len(active) else "combining"
    return {
        "run": run.name, "id": run.id, "architecture": "ensemble", "state": run.state, "phase": phase,
        "fold": "—", "epoch": "—", "progress": done / total if total else 0.0, "latest val AUC": None,
        "elapsed": format_duration(elapsed),
    }


def active_runs_ui(run_ids: Sequence[str]) -> None:
    """Shows every active run in one self-refreshing table (two runs at once, say).

    Args:
        run_ids: Ids of the runs that were active when the page was drawn.
    """
    st.fragment(run_every=widgets.POLL_SECONDS)(_active_runs_fragment)(tuple(run_ids))


def _active_runs_fragment(run_ids: tuple[str, ...]) -> None:
    """Body of the overview fragment; a full rerun once a run has ended updates the picker."""
    store = state.run_store()
    runs = []
    for run_id in run_ids:
        try:
            runs.append(store.get(run_id))
        except (RunNotFoundError, ValueError):
            continue
    if any(run.state not in ACTIVE_STATES for run in runs) or len(runs) != len(run_ids):
        st.rerun()
    st.markdown(f"**{len(runs)} runs in progress**")
    st.dataframe(
        active_runs_frame(runs),
        hide_index=True,
        width="stretch",
        column_config={
            "progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0, format="percent"),
            "latest val AUC": st.column_config.NumberColumn(format="%.3f"),
        },
    )


def run_view(run_id: str) -> None:
    """Draws a run: live and self-refreshing while it is active, full results when it ended."""
    widgets.run_view_ui(run_id, live_view, finished_view)


def live_view(run: Run, status: dict) -> None:
    """Draws progress, learning curves, finished folds and the Stop button.

    Args:
        run: An active run.
        status: Its status.
    """
    if run.kind == "ensemble":
        _ensemble_live_view(run, status)
        return
    events = state.read_events_incrementally(run)
    progress = read_progress(events)
    _run_header(run, status)
    # The button comes before the progress so that a click shows "stop requested" at once.
    widgets.stop_button_ui(run)
    _progress_block(progress, status, run.stop_requested)
    _curves(progress, key_prefix=f"live_{run.id}")
    fold_metrics = run.fold_metrics()
    if fold_metrics:
        st.markdown("**Finished folds**")
        metrics_table(run_results.fold_metrics_frame(fold_metrics))


def _ensemble_live_view(run: Run, status: dict) -> None:
    """Draws an ensemble at work: its members, and the one it is training, live."""
    _run_header(run, status)
    widgets.stop_button_ui(run)
    members = members_frame(run)
    if not members.empty:
        st.dataframe(members, hide_index=True, width="stretch")
    active = [row for row in members.to_dict("records") if row["state"] in ACTIVE_STATES]
    if not active:
        st.info("Combining the members' out-of-fold predictions ...", icon="🧮")
        return
    member = state.run_store().get(active[0]["run"])
    st.markdown(f"**Training member {active[0]['member']}: {escape_markdown(member.name)}**")
    progress = read_progress(state.read_events_incrementally(member))
    _progress_block(progress, member.status(), member.stop_requested)
    _curves(progress, key_prefix=f"live_{member.id}")


def members_frame(run: Run) -> pd.DataFrame:
    """One row per member of an ensemble run: number, name, state, architecture and size, out-of-fold AUC."""
    store = state.run_store()
    config = run.config
    trained = run.read_json(MEMBERS_FILE) or {}
    ids = run.member_ids()
    rows = []
    for number, member_id in enumerate(ids, start=1):
        try:
            member = store.get(member_id)
        except (RunNotFoundError, ValueError):
            rows.append({"member": number, "run": member_id, "name": "(deleted)", "state": "missing"})
            continue
        summary = member.summary() or {}
        auc = ((summary.get("mean_std") or {}).get("roc_auc") or {}).get("mean")
        rows.append({
            "member": number,
            "run": member.id,
            "name": member.name,
            "state": member.state,
            "model": f"{(member.config.get('model') or {}).get('architecture', '?')} {(member.config.get('data') or {}).get('image_size', '?')} px",
            "CV AUC": None if auc is None else round(float(auc), 3),
        })
    pending = len(config.get("recipes") or []) - len(trained)
    for offset in range(max(0, pending)):
        rows.append({"member": len(rows) + 1, "run": "", "name": "to train", "state": "waiting"})
    return pd.DataFrame(rows)


def _run_header(run: Run, status: dict) -> None:
    """Draws the run's name, state badge and the synthetic-data notice."""
    config = run.config
    model = config.get("model", {})
    data = config.get("data", {})
    st.subheader(f"{escape_markdown(run.name)} {state_badge(status.get('state', 'queued'))}", anchor=False)
    if run.kind == "adapt":
        st.caption(f"`{run.id}` · adapted from `{config.get('parent')}` ({config.get('method')}, {config.get('n_parts')} parts) · "
                   f"site: `{str(config.get('site_dir')).replace('`', '')}`")
        return
    if run.kind == "ensemble":
        count = len(config.get("members") or []) + len(config.get("recipes") or [])
        preset = f" · preset {config['preset']}" if config.get("preset") else ""
        st.caption(f"`{run.id}` · ensemble of {count} runs ({config.get('method', 'mean')}){preset} · data: `{data.get('data_dir', '?')}`")
        return
    facts = [
        f"`{run.id}`",
        f"{model.get('architecture', '?')}",
        f"{data.get('image_size', '?')} px",
        f"{data.get('label_mode', '?')}",
        f"k = {config.get('n_splits', '?')}",
        f"{config.get('train', {}).get('epochs', '?')} epochs",
        f"engine {jobs.describe_engine(config)}" + (f" on {', '.join(status['task_hosts'])}" if status.get("task_hosts") else ""),
    ]
    st.caption(" · ".join(facts) + f" · data: `{data.get('data_dir', '?')}`")
    data_facts = run.read_json(DATA_FILE) or {}
    if data_facts.get("synthetic") or state.is_synthetic(data.get("data_dir", "")):
        st.caption("🧪 **Synthetic demo data — not real X-rays.**")


def _progress_block(progress: Progress, status: dict, stop_requested: bool) -> None:
    """Draws the phase, fold/epoch/batch counters, progress bar, elapsed time and ETA."""
    if widgets.phase_notice_ui(progress, status, stop_requested, kept="finished folds"):
        return
    if progress.phase == "evaluating":
        st.info(
            "All folds trained: computing out-of-fold metrics and testing the fold ensemble on the held-out split ...",
            icon="🧮",
        )
    elapsed = time.time() - progress.started_at if progress.started_at else None
    columns = st.columns(5)
    columns[0].metric("Fold", f"{min(progress.current, progress.total) or '—'}/{progress.total or '—'}")
    columns[1].metric("Epoch", f"{progress.epoch or progress.epochs_done}/{progress.epochs or '—'}")
    batch_text = f"{progress.batch}/{progress.steps}" if progress.steps and progress.batch else "—"
    columns[2].metric("Batch", batch_text)
    columns[3].metric("Elapsed", format_duration(elapsed))
    columns[4].metric(
        "ETA (at most)",
        format_duration(eta_seconds(progress)),
        help="From the mean epoch time; early stopping can finish sooner.",
    )
    fraction = overall_fraction(progress)
    st.progress(
        fraction, text=f"Overall {fraction:.0%} · {len(progress.finished)} of {progress.total} folds finished"
    )
    if progress.steps and progress.epoch > progress.epochs_done:
        st.progress(
            min(1.0, progress.batch / progress.steps),
            text=f"Epoch {progress.epoch}: batch {progress.batch}/{progress.steps}",
        )


def _curves(progress: Progress, key_prefix: str) -> None:
    """Draws per-fold loss and accuracy/AUC curves, one colour per fold."""
    if not progress.epoch_rows:
        st.caption("Learning curves appear after the first epoch.")
        return
    metric = (
        st.segmented_control(
            "Second curve",
            ["auc", "accuracy"],
            default="auc",
            required=True,
            key=f"{key_prefix}_metric",
            format_func=lambda name: "AUC" if name == "auc" else "Accuracy",
        )
        or "auc"
    )
    left, right = st.columns(2)
    with left:
        st.plotly_chart(
            figures.training_curves_figure(progress.epoch_rows, "loss", title="Loss"), key=f"{key_prefix}_loss"
        )
    with right:
        title = "AUC" if metric == "auc" else "Accuracy"
        st.plotly_chart(
            figures.training_curves_figure(progress.epoch_rows, metric, title=title), key=f"{key_prefix}_second"
        )
    st.caption("Dashed: training · solid: validation (the held-out fold) · one colour per fold.")


def finished_view(run: Run, status: dict) -> None:
    """Draws an ended run: summary, per-fold table, confusion matrix, ROC, test, downloads.

    Failed runs show their error, and interrupted, stopped or failed runs a Resume button.

    Args:
        run: A run in a final state.
        status: Its status.
    """
    _run_header(run, status)
    run_state = status.get("state")
    summary = run.summary() if run_state == "completed" else None
    if run_state == "failed":
        show_error(
            status.get("error") or "No reason was recorded (see worker.log in the run folder).", "The run failed:"
        )
    elif run_state == "interrupted":
        st.warning(escape_markdown(status.get("error") or "The worker stopped without finishing."), icon="⚠️")
    elif run_state == "stopped":
        st.info(f"Stopped by request; {len(run.fold_metrics())} finished fold(s) kept.", icon="⏹")
    if run_state in RESUMABLE_STATES:
        widgets.resume_button_ui(run)
    if summary:
        # The verdict on new films leads: what cross-validation promised and what new children got.
        evaluation_view.gap_verdict_ui(run, evaluation_view.current_evaluations(run))
    fold_metrics = run.fold_metrics()
    if run.kind == "ensemble":
        st.markdown("**Members**")
        st.dataframe(members_frame(run), hide_index=True, width="stretch")
        combiner = (summary or {}).get("combiner") or {}
        if combiner.get("method") == "stacking":
            st.caption("Stacking weights on each member's logit of P(pneumonia): " + ", ".join(f"{weight:+.2f}" for weight in combiner["coefficients"]))
    if summary and run.kind == "adapt":
        adaptation_view.adaptation_result_ui(run, summary)
    if summary and adaptation_view.can_adapt(run, summary):
        adaptation_view.adapt_to_site_ui(run)
    if summary:
        evaluation_view.honest_numbers_ui(run)
        run_results.summary_block(summary, has_test_evaluation=any(item.get("name") == "test" for item in run.evaluations()))
    elif fold_metrics:
        st.markdown("**Finished folds**")
        metrics_table(run_results.fold_metrics_frame(fold_metrics))
        if run.folds_with(MODEL_FILE):
            with st.expander("Evaluate the finished folds on a folder"):
                evaluation_view.evaluations_ui(run, evaluation_view.current_evaluations(run))
    progress = read_progress(state.read_events_incrementally(run))
    if progress.epoch_rows:
        with st.expander("Learning curves", expanded=not summary):
            _curves(progress, key_prefix=f"done_{run.id}")
    run_downloads.downloads_ui(run, has_models=prediction_units(run) is not None)


