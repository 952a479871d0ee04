"""Train page: configure a patient-grouped k-fold run, start it in a worker, watch it live."""

from __future__ import annotations

import streamlit as st

from zoidberg.ui import live, state, widgets


def form_section(data_dir: str) -> None:
    """Draws the architecture choice and the form; validates and starts on submit."""
    spec = widgets.architecture_ui()
    with st.form("train_form"):
        st.markdown(f"**{spec.label} hyperparameters**")
        model_values = widgets.hyperparameters_ui(spec)
        st.markdown("**Training**")
        options = widgets.training_options_ui()
        submitted = st.form_submit_button("🚀 Start cross-validation", type="primary")
    if submitted:
        start(data_dir, spec.name, model_values, options)


def start(data_dir: str, architecture: str, model_values: dict, options: dict) -> None:
    """Validates the form's values and starts (or attaches to) a run; starts nothing when invalid."""
    try:
        config = state.build_run_config(data_dir, architecture, model_values, options)
        with st.spinner("Checking the configuration against the data ..."):
            state.validate_run_config(config)
    except (ValueError, FileNotFoundError) as error:
        widgets.show_error(error, "Not started.")
        return
    try:
        with st.spinner("Starting the worker ..."):
            run_id, attached = state.start_or_attach(config)
    except (ValueError, OSError) as error:
        widgets.show_error(error, "Not started.")
        return
    state.select_run(run_id)
    if attached:
        st.info(
            f"An identical run is already queued or running: showing `{run_id}` instead of starting a second one.",
            icon="🔁",
        )
    else:
        st.toast(f"Started run {run_id}", icon="🚀")


def runs_section() -> None:
    """Draws the run picker and the selected run, live or finished."""
    st.subheader("Runs")
    runs = state.list_runs("cv")
    if not runs:
        st.caption(f"No cross-validation runs yet in `{state.runs_dir()}`. Start one above.")
        return
    states = {run.id: run.state for run in runs}
    active = [run_id for run_id, run_state in states.items() if run_state in ("queued", "running")]
    if len(active) > 1:
        live.active_runs_ui(active)
    elif active:
        st.caption(f"1 run active · {len(runs)} in total")
    chosen = widgets.run_picker_ui(runs, states, state.selected_run_id(runs, states))
    if chosen:
        state.select_run(chosen)
        live.run_view(chosen)


def main() -> None:
    """Draws the Train page."""
    st.title("🏋️ Train")
    st.caption(
        "Patient-grouped stratified k-fold cross-validation. Training runs in a separate worker process: "
        "switching pages, reloading or closing the tab does not stop it."
    )
    data_dir = widgets.chosen_data_folder_ui()
    form_section(data_dir)
    st.divider()
    runs_section()


main()
