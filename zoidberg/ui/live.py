"""Live and finished views of one cross-validation run, read from the run store."""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import streamlit as st

from zoidberg import jobs
from zoidberg.runstore import ACTIVE_STATES, Run, RunNotFoundError
from zoidberg.ui import figures, state
from zoidberg.ui.widgets import escape_markdown, format_number, show_error, state_badge

# Seconds between two refreshes of a running run's view.
POLL_SECONDS = 1.5

# Summary metrics shown as cards, in this order, when the run has them.
HEADLINE_METRICS = (
    "roc_auc",
    "macro_auc",
    "accuracy",
    "sensitivity",
    "specificity",
    "f1",
    "balanced_accuracy",
    "macro_f1",
)
METRIC_LABELS = {
    "roc_auc": "AUC",
    "accuracy": "Accuracy",
    "sensitivity": "Sensitivity",
    "specificity": "Specificity",
    "precision": "Precision",
    "f1": "F1",
    "pr_auc": "PR AUC",
    "balanced_accuracy": "Balanced accuracy",
    "macro_f1": "Macro F1",
    "macro_auc": "Macro AUC",
}
# Multiclass results repeat macro_auc as roc_auc for cross-mode comparisons; tables show it once.
DUPLICATE_KEYS = {"roc_auc": "macro_auc"}
# Summary entries that are bookkeeping rather than model quality.
NON_METRIC_KEYS = ("n", "threshold", "train_seconds")
EVENTS_CACHE_KEY = "zoidberg_event_cache"


# ---------------------------------------------------------------------------------------
# Reading progress out of events (pure functions).
# ---------------------------------------------------------------------------------------


@dataclass
class Progress:
    """What a run's events say about where it is.

    Attributes:
        phase: "starting", "loading", "training", "evaluating" or "done".
        n_folds: Planned folds.
        epochs: Planned epochs per fold.
        fold: The fold being trained (1-based), or 0 before the first.
        epoch: The epoch being trained in that fold (1-based), or 0.
        batch: Batches done in that epoch, or 0.
        steps: Batches per epoch, when known.
        folds_finished: Folds with metrics.
        epochs_done_in_fold: Finished epochs of the current fold.
        epoch_seconds: Durations of the epochs finished since the last (re)start.
        loading: (done, total) of image decoding, when loading.
        started_at: Unix time of the last (re)start, if known.
        epoch_rows: One record per finished epoch of the latest attempt of each fold.
    """

    phase: str = "starting"
    n_folds: int = 0
    epochs: int = 0
    fold: int = 0
    epoch: int = 0
    batch: int = 0
    steps: int | None = None
    folds_finished: set = field(default_factory=set)
    epochs_done_in_fold: int = 0
    epoch_seconds: list = field(default_factory=list)
    loading: tuple[int, int] | None = None
    started_at: float | None = None
    epoch_rows: list = field(default_factory=list)


def read_progress(events: Sequence[dict]) -> Progress:
    """Folds a run's events into a Progress.

    Args:
        events: All events of the run, in order.

    Returns:
        The progress.
    """
    progress = Progress()
    fold_epochs: dict[int, list[dict]] = {}
    for event in events:
        _apply_event(progress, fold_epochs, event)
    progress.epoch_rows = [row for fold in sorted(fold_epochs) for row in fold_epochs[fold]]
    return progress


def _apply_event(progress: Progress, fold_epochs: dict[int, list[dict]], event: dict) -> None:
    """Updates the progress with one event."""
    kind = event.get("type")
    if kind == "run_started":
        progress.phase = "loading"
        progress.n_folds = int(event.get("n_folds") or progress.n_folds)
        progress.epochs = int(event.get("epochs") or progress.epochs)
        progress.started_at = event.get("time")
        progress.epoch_seconds = []
    elif kind == "resumed":
        progress.phase = "starting"
    elif kind == "loading":
        progress.loading = (int(event.get("done", 0)), int(event.get("total", 0)))
    elif kind == "fold_started":
        progress.phase = "training"
        progress.fold = int(event["fold"])
        progress.n_folds = int(event.get("n_folds") or progress.n_folds)
        progress.epoch, progress.batch, progress.epochs_done_in_fold = 0, 0, 0
        # A restarted fold trains again from scratch: its curves start over.
        fold_epochs[progress.fold] = []
    elif kind == "progress":
        progress.epoch = int(event.get("epoch") or 0)
        progress.batch = int(event.get("batch") or 0)
        progress.steps = event.get("steps") or progress.steps
    elif kind == "epoch":
        fold = int(event.get("fold") or progress.fold)
        progress.epoch = int(event.get("epoch") or 0)
        progress.epochs_done_in_fold = progress.epoch
        progress.batch = 0
        progress.epoch_seconds.append(float(event.get("seconds") or 0.0))
        fold_epochs.setdefault(fold, []).append({"fold": fold, "epoch": progress.epoch, **(event.get("logs") or {})})
    elif kind == "fold_finished":
        progress.folds_finished.add(int(event["fold"]))
        if progress.n_folds and len(progress.folds_finished) >= progress.n_folds:
            progress.phase = "evaluating"
    elif kind in ("run_finished", "failed"):
        progress.phase = "done"


def eta_seconds(progress: Progress) -> float | None:
    """Estimates the time left from the mean duration of the finished epochs.

    Early stopping can end folds sooner, so this is an upper bound.

    Args:
        progress: The run's progress.

    Returns:
        Seconds left, or None before the first epoch has finished.
    """
    if not progress.epoch_seconds or not progress.n_folds or not progress.epochs:
        return None
    mean_epoch = sum(progress.epoch_seconds) / len(progress.epoch_seconds)
    folds_left = progress.n_folds - len(progress.folds_finished)
    in_current = progress.fold not in progress.folds_finished and progress.fold > 0
    epochs_left = folds_left * progress.epochs - (progress.epochs_done_in_fold if in_current else 0)
    if in_current and progress.steps and progress.batch and progress.epoch > progress.epochs_done_in_fold:
        epochs_left -= progress.batch / progress.steps
    return max(0.0, epochs_left * mean_epoch)


def format_duration(seconds: float | None) -> str:
    """Formats seconds as "1 h 02 min", "3 min 05 s" or "12 s".

    Args:
        seconds: A duration, or None.

    Returns:
        The text ("—" for None).
    """
    if seconds is None:
        return "—"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def overall_fraction(progress: Progress) -> float:
    """Returns the share of all planned epochs that is done, in [0, 1].

    Args:
        progress: The run's progress.
    """
    if not progress.n_folds or not progress.epochs:
        return 0.0
    done = len(progress.folds_finished) * progress.epochs
    if progress.fold and progress.fold not in progress.folds_finished:
        done += progress.epochs_done_in_fold
        if progress.steps and progress.epoch > progress.epochs_done_in_fold:
            done += progress.batch / progress.steps
    return min(1.0, done / (progress.n_folds * progress.epochs))


def fold_metrics_frame(fold_metrics: Sequence[dict]) -> pd.DataFrame:
    """Tabulates finished folds' metrics (as fold_k/metrics.json holds them).

    Args:
        fold_metrics: Payloads of fold_k/metrics.json.

    Returns:
        One row per fold with its scalar metrics, epochs and training time.
    """
    rows = []
    for payload in fold_metrics:
        metrics = payload.get("metrics", {})
        row = {"fold": payload.get("fold")}
        row.update({METRIC_LABELS.get(key, key): metrics[key] for key in shown_keys(metrics)})
        row["images (val)"] = payload.get("n_validation")
        row["epochs"] = payload.get("epochs_trained")
        row["train time"] = format_duration(payload.get("train_seconds"))
        rows.append(row)
    return pd.DataFrame(rows)


def shown_keys(metrics: dict) -> list[str]:
    """Returns the scalar metric keys worth a column, without bookkeeping or duplicates.

    Args:
        metrics: One metrics dict (or a mean_std dict).

    Returns:
        Keys in their original order.
    """
    return [
        key
        for key, value in metrics.items()
        if key not in NON_METRIC_KEYS
        and not (key in DUPLICATE_KEYS and DUPLICATE_KEYS[key] in metrics)
        and ((isinstance(value, dict) and "mean" in value) or _is_number(value))
    ]


def _is_number(value: Any) -> bool:
    """Tells whether a value is a real number (bools excluded) or a missing one."""
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def summary_frame(summary: dict) -> pd.DataFrame:
    """Tabulates mean ± std of each metric across folds.

    Args:
        summary: summary.json.

    Returns:
        Rows metric, mean, std, per-fold values.
    """
    rows = []
    mean_std = summary.get("mean_std", {})
    for key in shown_keys(mean_std):
        entry = mean_std[key]
        values = entry.get("values") or []
        rows.append(
            {
                "metric": METRIC_LABELS.get(key, key),
                "mean": entry.get("mean"),
                "std": entry.get("std"),
                "mean ± std": f"{format_number(entry.get('mean'))} ± {format_number(entry.get('std'))}",
                "per fold": ", ".join(format_number(value) for value in values),
            }
        )
    return pd.DataFrame(rows)


def per_fold_frame(summary: dict) -> pd.DataFrame:
    """Tabulates each fold's metrics at the run's threshold.

    Args:
        summary: summary.json.

    Returns:
        One row per fold.
    """
    rows = []
    for index, fold in enumerate(summary.get("folds", []), start=1):
        row = {"fold": index}
        row.update({METRIC_LABELS.get(key, key): fold[key] for key in shown_keys(fold)})
        row["images (val)"] = fold.get("n")
        row["train time"] = format_duration(fold.get("train_seconds"))
        rows.append(row)
    return pd.DataFrame(rows)


def per_class_frame(result: dict) -> pd.DataFrame:
    """Tabulates per-class metrics of a multiclass result.

    Args:
        result: A multiclass metrics dict with "per_class".

    Returns:
        One row per class.
    """
    return pd.DataFrame([{"class": name, **values} for name, values in (result.get("per_class") or {}).items()])


def models_zip(run: Run) -> bytes:
    """Zips every fold's model.keras (with config.json) in memory.

    Args:
        run: The run.

    Returns:
        The zip file's bytes.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.write(run.path / "config.json", "config.json")
        for path in sorted(run.path.glob("fold_*/model.keras"), key=lambda item: int(item.parent.name[5:])):
            archive.write(path, f"{path.parent.name}/model.keras")
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------
# Drawing.
# ---------------------------------------------------------------------------------------


def read_events_incrementally(run: Run) -> list[dict]:
    """Returns all events of a run, reading only the bytes added since the last call.

    Args:
        run: The run.

    Returns:
        The events in order.
    """
    cache = st.session_state.setdefault(EVENTS_CACHE_KEY, {})
    offset, events = cache.get(run.id, (0, []))
    new_events, offset = run.read_events(offset)
    events = events + new_events
    cache[run.id] = (offset, events)
    return events


def active_runs_frame(runs: Sequence[Run]) -> pd.DataFrame:
    """Tabulates where each active run is: fold, epoch, overall progress, latest validation AUC.

    Args:
        runs: Queued or running runs.

    Returns:
        One row per run.
    """
    rows = []
    for run in runs:
        progress = read_progress(read_events_incrementally(run))
        latest = progress.epoch_rows[-1] if progress.epoch_rows else {}
        elapsed = time.time() - progress.started_at if progress.started_at else None
        rows.append(
            {
                "run": run.name,
                "id": run.id,
                "architecture": run.config.get("model", {}).get("architecture", "?"),
                "state": run.state,
                "phase": progress.phase,
                "fold": f"{min(progress.fold, progress.n_folds) or '—'}/{progress.n_folds or '—'}",
                "epoch": f"{progress.epoch or progress.epochs_done_in_fold}/{progress.epochs or '—'}",
                "progress": overall_fraction(progress),
                "latest val AUC": latest.get("val_auc"),
                "elapsed": format_duration(elapsed),
            }
        )
    return pd.DataFrame(rows)


def active_runs_ui(run_ids: Sequence[str]) -> None:
    """Shows every active run in one self-refreshing table (two runs at once, say).

    Args:
        run_ids: Ids of the runs that were active when the page was drawn.
    """
    st.fragment(run_every=POLL_SECONDS)(_active_runs_fragment)(tuple(run_ids))


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
    """Draws a run: live and self-refreshing while it is active, full results when it ended.

    Args:
        run_id: The run's id.
    """
    try:
        run = state.run_store().get(run_id)
    except (RunNotFoundError, ValueError) as error:
        show_error(error)
        return
    status = run.status()
    if status.get("state") in ACTIVE_STATES:
        # The fragment alone polls; the rest of the page stays still while it refreshes.
        st.fragment(run_every=POLL_SECONDS)(_live_fragment)(run_id, status.get("state"))
    else:
        finished_view(run, status)


def _live_fragment(run_id: str, initial_state: str) -> None:
    """Body of the polling fragment; asks for a full rerun once the run's state changes."""
    try:
        run = state.run_store().get(run_id)
    except (RunNotFoundError, ValueError):
        # The run folder was deleted meanwhile: the full page lists what is left.
        st.rerun()
    status = run.status()
    if status.get("state") != initial_state:
        # A full rerun updates the run picker's badge and, once the run has ended,
        # redraws the page with the final view and no polling.
        st.rerun()
    live_view(run, status)


def live_view(run: Run, status: dict) -> None:
    """Draws progress, learning curves, finished folds and the Stop button.

    Args:
        run: An active run.
        status: Its status.
    """
    events = read_events_incrementally(run)
    progress = read_progress(events)
    _run_header(run, status)
    # The button comes before the progress so that a click shows "stop requested" at once.
    stop_button_ui(run, kept="finished folds")
    _progress_block(progress, status, run.stop_requested)
    _curves(progress, key_prefix=f"live_{run.id}")
    fold_metrics = run.fold_metrics()
    if fold_metrics:
        st.markdown("**Finished folds**")
        metrics_table(fold_metrics_frame(fold_metrics))


def stop_button_ui(run: Run, *, kept: str) -> None:
    """Draws Stop, which asks the worker to end after its current batch.

    Args:
        run: The running run.
        kept: What survives a stop, for the tooltip ("finished folds", "finished trials").
    """
    clicked = st.button(
        "⏹ Stop",
        key=f"stop_{run.id}",
        disabled=run.stop_requested,
        help=f"Stops after the current batch; {kept} are kept and the run can be resumed.",
    )
    if not clicked:
        return
    try:
        jobs.stop_run(run.id, runs_dir=state.runs_dir())
    except (RunNotFoundError, ValueError, OSError) as error:
        show_error(error, "Could not stop the run:")
        return
    st.toast("Stop requested: the run ends after its current batch.", icon="⏹")


def resume_button_ui(run: Run, *, continues: str) -> None:
    """Draws Resume, which starts a new worker that continues an interrupted or stopped run.

    Args:
        run: The resumable run.
        continues: What the worker does, for the tooltip and the toast.
    """
    if not st.button("▶ Resume", key=f"resume_{run.id}", type="primary", help=f"{continues}."):
        return
    try:
        jobs.resume_run(run.id, runs_dir=state.runs_dir())
    except (ValueError, RunNotFoundError, OSError) as error:
        show_error(error, "Could not resume:")
        return
    st.session_state.get(EVENTS_CACHE_KEY, {}).pop(run.id, None)
    st.toast(f"Resumed: {continues[0].lower()}{continues[1:]}.", icon="▶")
    st.rerun()


def phase_notice_ui(progress, status: dict, stop_requested: bool, *, kept: str) -> bool:
    """Draws the stop, start-up and image-loading notices shared by every live view.

    Args:
        progress: A Progress or TuneProgress (phase, loading).
        status: The run's status.
        stop_requested: Whether Stop was asked for.
        kept: What survives a stop ("finished folds", "finished trials").

    Returns:
        True when the worker is still starting or loading images, so that there are no
        counters to draw yet.
    """
    if stop_requested:
        st.info(f"Stop requested: the worker stops after its current batch and keeps {kept}.", icon="⏹")
    if status.get("state") == "queued" or progress.phase == "starting":
        st.info("Starting the worker process (loading TensorFlow takes a few seconds) ...", icon="⏳")
        return True
    if progress.phase == "loading":
        done, total = progress.loading or (0, 0)
        st.progress(done / total if total else 0.0, text=f"Loading images {done}/{total} ...")
        return True
    return False


def _run_header(run: Run, status: dict) -> None:
    """Draws the run's name, state badge and the synthetic-data notice."""
    config = run.config
    model = config.get("model", {})
    data = config.get("data", {})
    st.subheader(f"{escape_markdown(run.name)} {state_badge(status.get('state', 'queued'))}", anchor=False)
    facts = [
        f"`{run.id}`",
        f"{model.get('architecture', '?')}",
        f"{data.get('image_size', '?')} px",
        f"{data.get('label_mode', '?')}",
        f"k = {config.get('n_splits', '?')}",
        f"{config.get('train', {}).get('epochs', '?')} epochs",
    ]
    st.caption(" · ".join(facts) + f" · data: `{data.get('data_dir', '?')}`")
    data_facts = run.read_json("data.json") or {}
    if data_facts.get("synthetic") or state.is_synthetic(data.get("data_dir", "")):
        st.caption("🧪 **Synthetic demo data — not real X-rays.**")


def _progress_block(progress: Progress, status: dict, stop_requested: bool) -> None:
    """Draws the phase, fold/epoch/batch counters, progress bar, elapsed time and ETA."""
    if phase_notice_ui(progress, status, stop_requested, kept="finished folds"):
        return
    if progress.phase == "evaluating":
        st.info(
            "All folds trained: computing out-of-fold metrics and testing the fold ensemble on the held-out split ...",
            icon="🧮",
        )
    elapsed = time.time() - progress.started_at if progress.started_at else None
    columns = st.columns(5)
    columns[0].metric("Fold", f"{min(progress.fold, progress.n_folds) or '—'}/{progress.n_folds or '—'}")
    columns[1].metric("Epoch", f"{progress.epoch or progress.epochs_done_in_fold}/{progress.epochs or '—'}")
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
        fraction, text=f"Overall {fraction:.0%} · {len(progress.folds_finished)} of {progress.n_folds} folds finished"
    )
    if progress.steps and progress.epoch > progress.epochs_done_in_fold:
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


def metrics_table(frame: pd.DataFrame) -> None:
    """Draws a metrics table with three decimals and a dash for missing values.

    Args:
        frame: Rows of metrics; float columns are formatted.
    """
    config = {
        column: st.column_config.NumberColumn(column, format="%.3f")
        for column in frame.columns
        if pd.api.types.is_float_dtype(frame[column]) or frame[column].isna().any()
    }
    st.dataframe(frame, hide_index=True, width="stretch", column_config=config, placeholder="—")


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
    if run_state in jobs.RESUMABLE_STATES:
        resume_button_ui(run, continues="Continues from the first unfinished fold; finished folds are kept")
    if summary:
        _summary_block(summary)
    fold_metrics = run.fold_metrics()
    if not summary and fold_metrics:
        st.markdown("**Finished folds**")
        metrics_table(fold_metrics_frame(fold_metrics))
    progress = read_progress(read_events_incrementally(run))
    if progress.epoch_rows:
        with st.expander("Learning curves", expanded=not summary):
            _curves(progress, key_prefix=f"done_{run.id}")
    _downloads(run, has_models=bool(fold_metrics))


def _summary_block(summary: dict) -> None:
    """Draws mean ± std cards, tables, the confusion matrix, the ROC curve and test metrics."""
    mean_std = summary.get("mean_std", {})
    class_names = summary.get("class_names", [])
    binary = len(class_names) == 2
    st.markdown(f"##### Cross-validation: mean ± std over {len(summary.get('folds', []))} folds")
    cards = [key for key in HEADLINE_METRICS if key in shown_keys(mean_std)][:5]
    for column, key in zip(st.columns(len(cards) or 1), cards):
        entry = mean_std[key]
        column.metric(
            METRIC_LABELS.get(key, key),
            format_number(entry.get("mean")),
            f"± {format_number(entry.get('std'))}",
            delta_color="off",
            delta_arrow="off",
            border=True,
        )
    threshold_text = (
        f"Decision threshold {format_number(summary.get('threshold'))} ({summary.get('threshold_method')}, chosen on out-of-fold predictions)."
        if binary
        else "Prediction: the most probable class (argmax)."
    )
    st.caption(threshold_text)
    summary_tab, folds_tab = st.tabs(["Mean ± std", "Per fold"])
    with summary_tab:
        st.dataframe(summary_frame(summary)[["metric", "mean ± std", "per fold"]], hide_index=True, width="stretch")
    with folds_tab:
        metrics_table(per_fold_frame(summary))
    _out_of_fold_block(summary, class_names, binary)
    if summary.get("test"):
        _test_block(summary["test"], summary, class_names, binary)


def _out_of_fold_block(summary: dict, class_names: Sequence[str], binary: bool) -> None:
    """Draws the out-of-fold confusion matrix and ROC curve(s)."""
    out_of_fold = summary.get("out_of_fold") or {}
    st.markdown("##### Out-of-fold predictions (every image scored by the fold model that never saw it)")
    left, right = st.columns(2)
    with left:
        if out_of_fold.get("confusion_matrix"):
            st.plotly_chart(
                figures.confusion_matrix_figure(out_of_fold["confusion_matrix"], class_names, title="Confusion matrix")
            )
    with right:
        _roc_chart(summary.get("roc") or {}, summary.get("threshold") if binary else None, "ROC curve")
        if binary:
            st.caption(
                "The pooled out-of-fold AUC ranks all images together, so it can sit below the mean per-fold AUC "
                "when the fold models score on different scales. ✕ marks the decision threshold."
            )
    if not binary and out_of_fold.get("per_class"):
        st.markdown("**Per class (one vs rest)**")
        metrics_table(per_class_frame(out_of_fold))


def _roc_chart(curves: dict, threshold: float | None, title: str) -> None:
    """Draws ROC curves with the run's threshold marked on binary ones."""
    if not any(curve.get("fpr") for curve in curves.values()):
        st.caption("No ROC curve: the predictions hold one class only.")
        return
    points = {}
    if threshold is not None:
        for label, curve in curves.items():
            point = figures.nearest_threshold_point(curve, threshold)
            if point:
                points[label] = point
    st.plotly_chart(figures.roc_figure(curves, threshold_points=points, title=title))


def _test_block(test: dict, summary: dict, class_names: Sequence[str], binary: bool) -> None:
    """Draws the held-out test split's metrics of the fold ensemble."""
    st.markdown(
        f"##### Held-out test split ({test.get('n', '?')} images, mean of the {len(summary.get('folds', []))} fold models)"
    )
    cards = [key for key in HEADLINE_METRICS if key in shown_keys(test) and test.get(key) is not None][:5]
    for column, key in zip(st.columns(len(cards) or 1), cards):
        column.metric(METRIC_LABELS.get(key, key), format_number(test.get(key)), border=True)
    left, right = st.columns(2)
    with left:
        if test.get("confusion_matrix"):
            st.plotly_chart(
                figures.confusion_matrix_figure(test["confusion_matrix"], class_names, title="Test confusion matrix")
            )
    with right:
        _roc_chart(test.get("roc") or {}, summary.get("threshold") if binary else None, "Test ROC curve")
    if not binary and test.get("per_class"):
        metrics_table(per_class_frame(test))


def _downloads(run: Run, has_models: bool) -> None:
    """Draws downloads of config.json and of a zip of the fold models."""
    left, right, _ = st.columns([1, 1, 2])
    with left:
        st.download_button(
            "⬇ config.json",
            json.dumps(run.config, indent=2),
            file_name=f"{run.id}-config.json",
            mime="application/json",
            on_click="ignore",
            key=f"download_config_{run.id}",
        )
    with right:
        st.download_button(
            "⬇ Fold models (.zip)",
            lambda: models_zip(run),
            file_name=f"{run.id}-models.zip",
            mime="application/zip",
            on_click="ignore",
            disabled=not has_models,
            key=f"download_models_{run.id}",
            help="Every fold's model.keras and config.json, zipped on demand.",
        )
