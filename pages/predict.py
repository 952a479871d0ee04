"""Predict page: a finished run's fold ensemble on uploaded chest X-rays, with Grad-CAM and a batch table."""

from __future__ import annotations

import streamlit as st

from zoidberg.inference.loading import predictable_runs
from zoidberg.runs.store import DATA_FILE, RunStore
from zoidberg.ui import predict_view as pv
from zoidberg.ui.frame import page_frame_ui
from zoidberg.ui.pacs_source import write_back_ui as pacs_write_back_ui


def main() -> None:
    """Draws the page."""
    page_frame_ui("pages/predict.py")
    st.title("Predict")
    st.warning(pv.DISCLAIMER, icon="⚠️")
    store = RunStore()
    try:
        runs = predictable_runs(store)
    except OSError as error:
        st.error(f"Cannot read the runs folder {store.root}: {error.strerror or error}.")
        return
    if not runs:
        st.info(
            "No finished run yet, so there is no model to predict with. Go to **Train**, start a cross-validation run "
            "(the synthetic demo dataset trains in about a minute on a laptop), and come back when at least one fold "
            "has finished. A stopped run can predict with the folds it finished.",
            icon="🩻",
        )
        return
    run, state, folds = pv.predict_run_picker_ui(runs)
    ensemble = pv.load_ensemble_ui(store, run, folds)
    if ensemble is None:
        return
    n_splits = int(run.config.get("n_splits", len(folds)))
    st.caption(pv.describe_ensemble(ensemble, state, folds, n_splits))
    if (run.read_json(DATA_FILE, {}) or {}).get("synthetic"):
        st.info(
            "This model was trained on the **synthetic demo dataset**: it has learned drawings, not medicine. "
            "Its outputs on real X-rays are meaningless; use the demo images to see how the page works.",
            icon="🧪",
        )
    controls, options = st.columns([3, 2])
    with controls:
        threshold = pv.threshold_ui(ensemble)
        if threshold is None:
            st.caption("Three-class run: the predicted class is the most probable one (no threshold).")
    with options:
        gradcam = pv.gradcam_ui()
    items, pacs_target = pv.inputs_ui("binary" if ensemble.is_binary else "three-class")
    if not items:
        st.info(
            f"Drop one or more chest X-rays above (PNG, JPEG or DICOM, up to {pv.MAX_UPLOAD_MB} MB each), "
            "pick studies from a PACS, or switch on **Try demo images** to see the page at work.",
            icon="⬆️",
        )
        return
    results = pv.results_ui(ensemble, run, store, items, threshold, gradcam)
    if pacs_target:
        pacs_write_back_ui(ensemble, threshold, pacs_target, results)


main()
