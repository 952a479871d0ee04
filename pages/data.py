"""Data page: choose a dataset folder and inspect counts, patients, samples, folds and skipped files."""

from __future__ import annotations

import streamlit as st

from zoidberg.ui import data_view as view
from zoidberg.ui import shift_view, state, widgets
from zoidberg.ui.frame import page_frame_ui


def main() -> None:
    """Draws the Data page."""
    page_frame_ui("pages/data.py")
    st.title("🗂️ Data")
    st.caption("Check a chest X-ray dataset before training: classes, patients, samples and patient-grouped folds.")
    data_dir, label_mode, image_size = view.folder_section_ui()
    try:
        dataset = state.load_dataset_cached(data_dir, label_mode, image_size)
    except ValueError as error:  # DatasetError, or a folder outside $ZOIDBERG_DATA_ROOTS.
        widgets.show_error(error)
        return
    widgets.synthetic_notice(dataset.synthetic)
    st.caption(
        f"`{dataset.root}` · fingerprint `{dataset.fingerprint}` · {'from the disk cache' if dataset.from_cache else 'decoded now'}"
    )
    view.overview_section_ui(dataset)
    st.divider()
    view.patients_section_ui(dataset)
    st.divider()
    view.duplicates_section_ui(dataset)
    st.divider()
    view.samples_section_ui(dataset)
    st.divider()
    view.folds_section_ui(dataset)
    st.divider()
    view.skipped_section_ui(dataset)
    st.divider()
    shift_view.shift_section_ui(dataset)


main()
