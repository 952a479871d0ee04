"""Monitor page: after go-live, a run's records window by window against the films it knows, with alerts."""

from __future__ import annotations

import streamlit as st

from zoidberg.inference.loading import predictable_runs
from zoidberg.runs.store import RunStore
from zoidberg.ui import monitor_view as mv
from zoidberg.ui.frame import page_frame_ui
from zoidberg.ui.widgets import escape_markdown, run_picker_ui


def main() -> None:
    """Draws the page."""
    page_frame_ui("pages/monitor.py")
    st.title("Monitor")
    st.caption("After go-live: are the films that arrive still like those the run was adapted on? Records come from "
               "`serve --records-log`, `predict --records-log` or `predict --json`; the alert rule is in the README.")
    store = RunStore()
    runs = [run for run, state, _ in predictable_runs(store) if state == "completed" and run.kind in ("cv", "ensemble", "adapt")]
    if not runs:
        st.info("No completed run yet: train one on the **Train** page, adapt it, and serve it with `--records-log`.", icon="📈")
        return
    chosen = run_picker_ui(runs, {run.id: "completed" for run in runs}, None, label="Run whose records are watched", key="monitor_run",
                           help_text="An adapted run is compared with the site films it was adapted on.")
    run = next(run for run in runs if run.id == chosen)
    files = mv.records_source_ui()
    if not files:
        st.info("Drop records files above, or name a records log on this server.", icon="📂")
        return
    window = mv.window_choice_ui(files)
    try:
        summaries = mv.monitor_summaries(run, files, window)
    except ValueError as error:
        st.error(escape_markdown(str(error)))
        return
    mv.alerts_ui(summaries)
    st.plotly_chart(mv.monitor_figure(summaries), key="monitor_chart")
    mv.windows_table_ui(summaries)
    st.download_button("Download the windows (JSON)", data=__import__("json").dumps(summaries, indent=2), file_name=f"monitor_{run.id}.json",
                       mime="application/json", on_click="ignore", icon=":material/download:")


main()
