"""The Data page's shift check: how far the chosen folder's films are from a finished run's training films."""

from __future__ import annotations

import numpy as np
import streamlit as st

from zoidberg.data.dataset import Dataset
from zoidberg.runs.store import MODEL_KINDS
from zoidberg.ui import state
from zoidberg.ui.adaptation_view import shift_ui
from zoidberg.ui.widgets import run_label, show_error

SHIFT_RESULTS_KEY = "zoidberg_shift_results"


def shift_section_ui(dataset: Dataset) -> None:
    """Draws "Against a model's training films": a run picker and a button that measures the shift of this folder."""
    st.subheader("Against a model's training films", anchor=False)
    runs = [run for run in state.list_runs(MODEL_KINDS)
            if run.state == "completed" and len((run.summary() or {}).get("class_names") or ()) == 2]
    if not runs:
        st.caption("Train a model first: this check compares the folder's films with the films a finished run learned from.")
        return
    st.caption(
        "Before trusting a model on new films: a classifier tries to tell this folder's films from the run's training "
        "films (on the model's frozen ImageNet features, or thumbnails), and the model's own probabilities estimate the "
        "share of pneumonia here. Films it can tell apart are where cross-validation overstates specificity."
    )
    left, right = st.columns([4, 1], vertical_alignment="bottom")
    by_id = {run.id: run for run in runs}
    chosen = left.selectbox("Model", list(by_id), format_func=lambda run_id: run_label(by_id[run_id]), key="shift_run")
    key = (chosen, dataset.fingerprint)
    results = st.session_state.setdefault(SHIFT_RESULTS_KEY, {})
    if right.button("🧭 Check the shift", key="shift_start"):
        try:
            with st.spinner("Scoring the folder and comparing it with the training films ..."):
                results[key] = measure_folder_shift(chosen, dataset)
        except (ValueError, OSError) as error:
            show_error(error, "Not measured.")
            return
    if key in results:
        shift_ui(results[key])


def measure_folder_shift(run_id: str, dataset: Dataset) -> dict:
    """The shift of a folder against a run: its films at the run's size, scored for the EM prevalence."""
    from zoidberg.config import DataConfig, from_mapping
    from zoidberg.evaluation.shift import measure_shift
    from zoidberg.inference.loading import load_ensemble

    store = state.run_store()
    ensemble = load_ensemble(run_id, runs_dir=store.root)
    data = from_mapping(DataConfig, {**(store.get(run_id).config.get("data") or {}), "data_dir": str(dataset.root), "label_mode": "binary"})
    own = state.load_dataset_cached(str(dataset.root), "binary", data.image_size, data.resize, data.enhance)
    rows = np.arange(len(own))
    _, calibrated = ensemble.combine(ensemble.score_dataset(own, rows))
    labelled = own.labels[rows]
    return measure_shift(ensemble, own, rows, calibrated_positive=None if calibrated is None else calibrated[:, 1],
                         stated_prevalence=float(np.mean(labelled == 1)) if len(np.unique(labelled)) > 1 else None)
