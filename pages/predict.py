"""Predict page: a finished run's fold ensemble on uploaded chest X-rays, with Grad-CAM and a batch table."""

from __future__ import annotations

import streamlit as st

from zoidberg.runstore import RunNotFoundError, RunStore
from zoidberg.ui import predict_view as pv


def main() -> None:
    """Draws the page."""
    st.title("Predict")
    st.warning(pv.DISCLAIMER, icon="⚠️")
    store = RunStore()
    try:
        runs = pv.eligible_runs(store)
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
    run, state, folds = pv.run_picker_ui(runs)
    try:
        with st.spinner(f"Loading the {len(folds)} fold model(s) of {run.name} (once per run) ..."):
            ensemble = pv.load_ensemble_cached(store, run)
    except (RunNotFoundError, ValueError, OSError) as error:
        st.error(f"Cannot load the models of {run.name}: {error}")
        return
    except Exception as error:  # A corrupt .keras file must not show a traceback.
        pv.LOGGER.exception("Loading the ensemble of %s failed", run.id)
        st.error(
            f"Cannot load the models of {run.name} ({type(error).__name__}). "
            "The model files may be damaged; re-run training."
        )
        return
    n_splits = int(run.config.get("n_splits", len(folds)))
    st.caption(pv.describe_ensemble(ensemble, state, folds, n_splits))
    data_facts = run.read_json("data.json", {}) or {}
    if data_facts.get("synthetic"):
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

    label_mode = "binary" if ensemble.is_binary else "three-class"
    items = pv.inputs_ui(label_mode)
    if not items:
        st.info(
            f"Drop one or more chest X-rays above (PNG, JPEG or DICOM, up to {pv.MAX_UPLOAD_MB} MB each), "
            "or switch on **Try demo images** to see the page at work.",
            icon="⬆️",
        )
        return

    run_key = (str(store.root), run.id, pv.models_signature(run))
    results = pv.process_all(ensemble, run_key, items)
    failed = [result for result in results if not result.ok]
    st.subheader(f"Results ({len(results)} image{'s' if len(results) != 1 else ''})")
    if failed:
        st.warning(
            f"{len(failed)} of {len(results)} file(s) could not be used; "
            "their reasons are in the table and cards below."
        )
    pv.show_batch_table(results, list(ensemble.class_names), threshold, run.id)
    for index, result in enumerate(results[: pv.CARD_LIMIT]):
        pv.show_card(ensemble, result, threshold, gradcam, index)
    if len(results) > pv.CARD_LIMIT:
        st.caption(f"Showing the first {pv.CARD_LIMIT} cards; the table above lists all {len(results)} files.")


main()
