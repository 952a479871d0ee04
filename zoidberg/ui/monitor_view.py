"""Monitor page: a run's prediction records, window by window, against the films it knows; alerts and Plotly charts."""

from __future__ import annotations

import tempfile
from pathlib import Path

import plotly.graph_objects as go
import streamlit as st

from zoidberg.ui.widgets import escape_markdown

WINDOWS = ("week", "day", "one per file", "every N records")


def records_source_ui() -> list[tuple[str, list[dict]]] | None:
    """Records files: uploaded (predict --json, a records log, a predictions CSV) or a log on this server; None until given."""
    from zoidberg.data.roots import check_folder_allowed
    from zoidberg.monitoring.records_log import read_records

    uploads = st.file_uploader("Records files (a records log, predict --json, a predictions CSV)", type=["jsonl", "json", "csv", "log"],
                               accept_multiple_files=True, key="monitor_uploads")
    typed = st.text_input("…or a records log on this server (serve --records-log)", key="monitor_log",
                          placeholder="logs/records.jsonl").strip()
    files: list[tuple[str, list[dict]]] = []
    try:
        for upload in uploads or []:
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / Path(upload.name).name
                path.write_bytes(upload.getvalue())
                files.append((upload.name, read_records(path)))
        if typed:
            log = Path(typed).expanduser()
            check_folder_allowed(str(log.parent if log.parent != Path("") else Path(".")))
            rotated = sorted(log.parent.glob(log.name + ".*"), key=lambda path: path.suffix, reverse=True)
            for path in [item for item in rotated if item.suffix[1:].isdigit()] + [log]:
                if path.is_file():
                    files.append((str(path), read_records(path)))
            if not any(name == str(log) for name, _ in files):
                st.error(f"{escape_markdown(typed)} is not a file on this server.")
    except ValueError as error:
        st.error(escape_markdown(str(error)))
        return None
    return files or None


def window_choice_ui(files: list[tuple[str, list[dict]]]) -> str:
    """The windows: week, day, one per file or every N records."""
    left, right = st.columns([2, 1])
    choice = left.radio("Windows", WINDOWS, horizontal=True, key="monitor_window", index=2 if len(files) > 1 else 0)
    if choice == "every N records":
        return str(right.number_input("N", min_value=5, max_value=10_000, value=100, step=5, key="monitor_n"))
    return choice


def monitor_summaries(run, files: list[tuple[str, list[dict]]], window: str) -> list[dict]:
    """watch_window over the windows (the monitor command's summaries)."""
    from zoidberg.monitoring.reference import load_references
    from zoidberg.monitoring.watch import make_windows, watch_window

    references = load_references(run)
    if window == "one per file":
        windows = files
    else:
        windows = make_windows([record for _, records in files for record in records], window)
    return [watch_window(name, records, references) for name, records in windows]


def alerts_ui(summaries: list[dict]) -> None:
    """The alerts first, each with its sentence; then one line for the quiet windows."""
    alerting = [summary for summary in summaries if summary["alert"]]
    for summary in alerting:
        st.error(f"**{escape_markdown(summary['window'])}**: {escape_markdown(summary['why'])}", icon=":material/notification_important:")
    if not alerting:
        st.success(f"No alert in {len(summaries)} window(s): the films look like those the run knows.", icon=":material/check_circle:")
    elif len(alerting) < len(summaries):
        st.caption(f"{len(summaries) - len(alerting)} other window(s) quiet.")


def windows_table_ui(summaries: list[dict]) -> None:
    """One row per window: films, refused, pneumonia share raw and by EM, the shift's numbers, the alert."""
    rows = []
    for summary in summaries:
        shift = summary["shift"][0]
        rows.append({
            "window": summary["window"], "alert": "⚠️" if summary["alert"] else "", "films": summary["films"], "refused": summary["refused"],
            "pneumonia (called)": summary["pneumonia_share"], "pneumonia (EM)": summary["pneumonia_share_em"],
            f"gate tail vs {shift['against']}": shift.get("gate_tail_share"), "score KS distance": shift.get("score_distance"),
            "refused by reason": "; ".join(f"{reason}: {count}" for reason, count in summary["refused_by_reason"].items()),
        })
    percent = st.column_config.NumberColumn(format="percent")
    st.dataframe(rows, hide_index=True, width="stretch", column_config={
        "pneumonia (called)": percent, "pneumonia (EM)": percent, f"gate tail vs {summaries[0]['shift'][0]['against']}": percent,
        "score KS distance": st.column_config.NumberColumn(format="%.2f")})


def monitor_figure(summaries: list[dict]) -> go.Figure:
    """Films and refusals per window (bars), the pneumonia share called and by EM, and the shift's numbers (lines)."""
    from plotly.subplots import make_subplots

    from zoidberg.monitoring.watch import SCORE_DISTANCE, TAIL_SHARE

    names = [summary["window"] for summary in summaries]
    figure = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.07,
                           subplot_titles=("Films seen and refused", "Share called pneumonia", "Shift against the films the run knows"))
    figure.add_bar(x=names, y=[summary["films"] - summary["refused"] for summary in summaries], name="scored", marker_color="#4fb3bf", row=1, col=1)
    figure.add_bar(x=names, y=[summary["refused"] for summary in summaries], name="refused", marker_color="#e4572e", row=1, col=1)
    figure.add_scatter(x=names, y=[summary["pneumonia_share"] for summary in summaries], name="called", mode="lines+markers", row=2, col=1)
    figure.add_scatter(x=names, y=[summary["pneumonia_share_em"] for summary in summaries], name="by EM (prevalence)", mode="lines+markers",
                       line={"dash": "dot"}, row=2, col=1)
    shift = [summary["shift"][0] for summary in summaries]
    figure.add_scatter(x=names, y=[item.get("gate_tail_share") for item in shift], name="gate tail share", mode="lines+markers", row=3, col=1)
    figure.add_scatter(x=names, y=[item.get("score_distance") for item in shift], name="score KS distance", mode="lines+markers", row=3, col=1)
    figure.add_hline(y=TAIL_SHARE, line_dash="dash", line_color="#e4572e", row=3, col=1, annotation_text="tail alert", annotation_position="top left")
    figure.add_hline(y=SCORE_DISTANCE, line_dash="dash", line_color="#f0a202", row=3, col=1, annotation_text="KS alert",
                     annotation_position="bottom left")
    for index, summary in enumerate(summaries):
        if summary["alert"]:
            figure.add_vrect(x0=index - 0.5, x1=index + 0.5, fillcolor="#e4572e", opacity=0.12, line_width=0)
    figure.update_layout(barmode="stack", height=720, margin={"t": 40, "b": 20}, legend={"orientation": "h", "y": -0.05})
    figure.update_yaxes(tickformat=".0%", range=[0, 1], row=2, col=1)
    figure.update_yaxes(range=[0, 1], row=3, col=1)
    return figure
