"""Shared widgets: notices, escaping, run labels and badges, the run picker, a run's live view, stop and resume."""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd
import streamlit as st

from zoidberg.launch import jobs
from zoidberg.launch.kinds import get_kind
from zoidberg.runs.store import ACTIVE_STATES, Run, RunNotFoundError
from zoidberg.ui import state

SYNTHETIC_NOTICE = "Synthetic demo data — not real X-rays"

STATE_ICONS = {
    "queued": "⏳",
    "running": "🏃",
    "completed": "✅",
    "stopped": "⏹️",
    "failed": "❌",
    "interrupted": "⚠️",
}
STATE_COLORS = {
    "queued": "gray",
    "running": "blue",
    "completed": "green",
    "stopped": "orange",
    "failed": "red",
    "interrupted": "orange",
}

# Widget values survive page switches, so the Train form is as the user left it.
PERSIST = "session"


def seeded(key: str, default: Any) -> str:
    """Puts a widget's first value into session state once and returns its key.

    Widgets then take their value from session state alone, never from a default as well
    (Streamlit warns about both), so that a preset can fill the form by writing the keys.
    """
    if key not in st.session_state:
        st.session_state[key] = default
    return key

# Seconds between two refreshes of an active run's view.
POLL_SECONDS = 1.5


def synthetic_notice(synthetic: bool) -> None:
    """Warns, unmissably, that the data is the generated demo set.

    Args:
        synthetic: Whether the dataset is synthetic.
    """
    if synthetic:
        st.warning(
            f"**{SYNTHETIC_NOTICE}.** These images were drawn by `zoidberg.demo` from random numbers so the "
            "dashboard can be tried without downloading data. Models trained on them learn the drawings, not medicine.",
            icon="🧪",
        )


def chosen_data_folder_ui() -> str:
    """Shows the data folder chosen on the Data page, marked when synthetic, and returns it.

    Returns:
        The data folder.
    """
    data_dir = state.chosen_data_dir()
    st.caption(f"Data folder: `{data_dir}` — choose another on the **Data** page.")
    if state.is_synthetic(data_dir):
        st.caption("🧪 **Synthetic demo data — not real X-rays.**")
    return data_dir


MARKDOWN_SPECIAL = "\\`*_[]<>#~|$"


URL_PATTERN = re.compile(r"(https?://[^\s<>()]+[^\s<>().,;:!?])")


def escape_markdown(text: str) -> str:
    """Makes engine messages display literally in Streamlit Markdown.

    Paths such as `<root>/train/NORMAL/*.jpeg` would otherwise turn into italics, and
    `$` into LaTeX; line breaks are kept. Web addresses are left whole (Streamlit links
    them, and a backslash inside one would break the link); a full stop or comma that ends
    the sentence after one is not part of it.

    Args:
        text: Plain text.

    Returns:
        Markdown that renders as the same text.
    """
    parts = URL_PATTERN.split(str(text))
    escaped = "".join(
        part if index % 2 else "".join(f"\\{character}" if character in MARKDOWN_SPECIAL else character for character in part)
        for index, part in enumerate(parts)
    )
    return escaped.replace("\n", "  \n")


def show_error(error: BaseException | str, prefix: str = "") -> None:
    """Shows an error message in plain words, never a traceback.

    Args:
        error: The exception (its message is shown) or a message.
        prefix: Bold words before the message, e.g. "Not started."
    """
    lead = f"**{prefix}** " if prefix else ""
    st.error(lead + escape_markdown(str(error)), icon="🚫")


def state_badge(state: str) -> str:
    """Returns Markdown for a coloured state badge.

    Args:
        state: A run state (queued, running, completed, stopped, failed, interrupted).

    Returns:
        Markdown such as ":green-badge[✅ completed]".
    """
    color = STATE_COLORS.get(state, "gray")
    return f":{color}-badge[{STATE_ICONS.get(state, '•')} {state}]"


def format_created(created: str) -> str:
    """Formats an ISO creation time as local "YYYY-MM-DD HH:MM" (or returns it unchanged)."""
    try:
        moment = dt.datetime.fromisoformat(created)
    except (TypeError, ValueError):
        return str(created or "")
    if moment.tzinfo is not None:
        moment = moment.astimezone()
    return moment.strftime("%Y-%m-%d %H:%M")


def run_facts(kind: str, config: Mapping[str, Any]) -> list[str]:
    """Returns the few facts that tell runs apart in a picker.

    Args:
        kind: "cv", "tune" or "ensemble".
        config: The run's config.json.

    Returns:
        Architecture, label mode, size and k for cross-validation; architecture,
        algorithm, trials and size for a search; the member count and method of an ensemble.
    """
    config = config if isinstance(config, Mapping) else {}
    data = config.get("data", {}) or {}
    if kind == "adapt":
        return [f"adapted from {config.get('parent', '?')}", str(config.get("method", "head")), f"{config.get('n_parts', '?')} parts"]
    if kind == "ensemble":
        count = len(config.get("members") or []) + len(config.get("recipes") or [])
        return [f"ensemble of {count} runs", str(config.get("method", "mean")), str(data.get("label_mode", "binary"))]
    if kind == "tune":
        return [
            str(config.get("architecture", "?")),
            str(config.get("algorithm", "?")),
            f"{config.get('max_trials', '?')} trials",
            f"{data.get('image_size', '?')} px",
        ]
    return [
        str((config.get("model", {}) or {}).get("architecture", "?")),
        str(data.get("label_mode", "binary")),
        f"{data.get('image_size', '?')} px",
        f"k={config.get('n_splits', '?')}",
    ]


def run_label(run: Run, state: str | None = None, *, extra: str = "") -> str:
    """Returns the one-line description of a run that every run picker shows.

    Args:
        run: The run.
        state: Its state, when already known (saves a status read).
        extra: A last fact, e.g. "2/3 folds".

    Returns:
        "icon name · facts · date · id (state)".
    """
    state = state or run.state
    name = f"{run.name} · " if run.name != run.id else ""
    facts = run_facts(run.kind, run.config) + [format_created(str(run.meta.get("created", "")))] + ([extra] if extra else [])
    return f"{STATE_ICONS.get(state, '•')} {name}{' · '.join(fact for fact in facts if fact)} · {run.id} ({state})"


def run_picker_ui(
    runs: Sequence[Run], states: dict[str, str], selected: str | None, *, label: str = "Run", key: str | None = None, help_text: str = "",
    extras: dict[str, str] | None = None,
) -> str | None:
    """Draws a picker of runs, newest first, with state icons.

    Args:
        runs: Runs, newest first.
        states: {run id: state}.
        selected: The run id to show selected, if it is among the runs.
        label: The picker's label.
        key: Widget key.
        help_text: Its tooltip.
        extras: {run id: what each label adds} ("3/5 folds", say).

    Returns:
        The chosen run id, or None when there are no runs.
    """
    if not runs:
        return None
    ids = [run.id for run in runs]
    labels = {run.id: run_label(run, states.get(run.id), extra=(extras or {}).get(run.id, "")) for run in runs}
    index = ids.index(selected) if selected in ids else 0
    return st.selectbox(
        label,
        ids,
        index=index,
        format_func=lambda run_id: labels[run_id],
        key=key,
        help=help_text or "Running and past runs from the run store, newest first.",
    )


def active_runs_banner_ui(kinds, anchor: str, where: Callable[[Run], str]) -> None:
    """Shows, at the top of a page, every queued or running run of some kinds, linking down to its live view.

    A run started from the form (or a preset card) appears here on the next rerun, where the
    user clicked, instead of only in the live view far below the form.

    Args:
        kinds: The run kinds the page shows.
        anchor: The anchor of the page's runs section.
        where: Says where an active run is, in one phrase.
    """
    st.fragment(run_every=POLL_SECONDS)(_active_runs_banner)(kinds, anchor, where)


def _active_runs_banner(kinds, anchor: str, where: Callable[[Run], str]) -> None:
    for run in [run for run in state.list_runs(kinds) if run.state in ACTIVE_STATES]:
        st.info(f"{STATE_ICONS.get(run.state, '')} **{escape_markdown(run.name)}** (`{run.id}`) is {run.state}: {where(run)}. "
                f"[Live view ↓](#{anchor})", icon="🚀")


def run_view_ui(run_id: str, live_view: Callable[[Run, dict], None], finished_view: Callable[[Run, dict], None]) -> None:
    """Draws a run: live and self-refreshing while it is active, its results once it ended.

    Args:
        run_id: The run's id.
        live_view: Draws an active run, `live_view(run, status)`; it runs in a fragment
            that refreshes every POLL_SECONDS, so the rest of the page stays still.
        finished_view: Draws an ended run, `finished_view(run, status)`.
    """
    try:
        run = state.run_store().get(run_id)
    except (RunNotFoundError, ValueError) as error:
        show_error(error)
        return
    status = run.status()
    if status.get("state") in ACTIVE_STATES:
        st.fragment(run_every=POLL_SECONDS)(_live_fragment)(run_id, status.get("state"), live_view)
    else:
        finished_view(run, status)


def _live_fragment(run_id: str, initial_state: str, live_view: Callable[[Run, dict], None]) -> None:
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


def stop_button_ui(run: Run) -> None:
    """Draws Stop, which asks the worker to end after its current batch.

    Args:
        run: The running run; its kind says what a stop keeps.
    """
    kept = get_kind(run.kind).kept
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


def resume_button_ui(run: Run) -> None:
    """Draws Resume, which starts a new worker that continues an interrupted or stopped run.

    Args:
        run: The resumable run; its kind says what a resume does.
    """
    continues = get_kind(run.kind).resume_note
    if not st.button("▶ Resume", key=f"resume_{run.id}", type="primary", help=f"{continues}."):
        return
    try:
        jobs.resume_run(run.id, runs_dir=state.runs_dir())
    except (ValueError, RunNotFoundError, OSError) as error:
        show_error(error, "Could not resume:")
        return
    state.forget_events(run.id)
    st.toast(f"Resumed: {continues[0].lower()}{continues[1:]}.", icon="▶")
    st.rerun()


def phase_notice_ui(progress, status: dict, stop_requested: bool, *, kept: str) -> bool:
    """Draws the stop, start-up and image-loading notices shared by every live view.

    Args:
        progress: The run's Progress (phase, loading).
        status: The run's status.
        stop_requested: Whether Stop was asked for.
        kept: What survives a stop ("finished folds", "finished trials").

    Returns:
        True when the worker is still starting or loading images, so that there are no
        counters to draw yet.
    """
    if stop_requested:
        st.info(f"Stop requested: the worker stops after its current batch and keeps {kept}.", icon="⏹")
    if status.get("state") == "queued" and status.get("waiting") and status.get("position"):
        st.info(f"Queued: number {status['position']} in line. The machine is training as many runs as it can "
                "(`ZOIDBERG_MAX_RUNS`, by default one per two cores); this one starts when a run ends. Stop cancels it.",
                icon="⏳")
        return True
    if status.get("state") == "queued" or progress.phase == "starting":
        st.info("Starting the worker process (loading TensorFlow takes a few seconds) ...", icon="⏳")
        return True
    if progress.phase == "loading":
        done, total = progress.loading or (0, 0)
        st.progress(done / total if total else 0.0, text=f"Loading images {done}/{total} ...")
        return True
    return False


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


def format_number(value: Any, digits: int = 3) -> str:
    """Formats a metric value, with an em dash for missing or non-finite values.

    Args:
        value: A number or None.
        digits: Decimals.

    Returns:
        The text.
    """
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "—"
    return f"{value:.{digits}f}"
