"""Label page: a site's films one at a time for a reader, the labels file written as they come, and adaptation every 20 labels."""

from __future__ import annotations


import streamlit as st

from zoidberg.adaptation.labeling import labels_path_for
from zoidberg.inference.loading import predictable_runs
from zoidberg.runs.store import RunStore
from zoidberg.ui import label_view as lv
from zoidberg.ui.frame import page_frame_ui
from zoidberg.ui.predict_view import load_ensemble_ui
from zoidberg.ui.widgets import run_picker_ui


def main() -> None:
    """Draws the page."""
    page_frame_ui("pages/label.py")
    st.title("Label")
    st.caption("Label the site's own films, the most useful first; the run adapts to them as the labels come. "
               f"Keys: **N** normal, **P** pneumonia, **U** not usable, **S** skip, **Z** undo. Labeling as *{lv.reader_name()}*.")
    store = RunStore()
    runs = [(run, state, folds) for run, state, folds in predictable_runs(store) if run.kind in ("cv", "ensemble") and state == "completed"]
    if not runs:
        st.info("No completed cross-validation or ensemble run yet: train one on the **Train** page (`best` or `fast` adapt best), then come back.", icon="🩻")
        return
    chosen = run_picker_ui([run for run, _, _ in runs], {run.id: state for run, state, _ in runs}, None, label="Run to adapt",
                           key="label_run", help_text="Its scores choose which films to label; the labels adapt it.")
    run, _, folds = next(entry for entry in runs if entry[0].id == chosen)
    folder = lv.films_source_ui()
    if not folder:
        st.info("Name the folder of the site's films (unlabeled, any layout), or drop films above.", icon="📂")
        return
    ensemble = load_ensemble_ui(store, run, folds)
    if ensemble is None or not ensemble.is_binary:
        if ensemble is not None:
            st.error("This run is three-class: labeling for adaptation needs a normal-vs-pneumonia run.")
        return
    labels_file = labels_path_for(folder, run.id)
    st.caption(f"Labels are appended to `{labels_file}` (a reload or a restart goes on from it).")
    records = lv.candidate_records(store, run, folder)
    if not records:
        st.warning(f"No image file in `{folder}`.")
        return
    lv.labeling_ui(run, ensemble, records, labels_file)
    auto, every = lv.rounds_ui()
    lv.adaptation_ui(store, run, labels_file, auto, every)


main()
