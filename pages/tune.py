"""Tune page: search hyperparameters with keras-tuner on a patient-grouped split, live, then cross-validate the best."""

from __future__ import annotations

import streamlit as st

from zoidberg.ui import tune_view, widgets
from zoidberg.ui.frame import page_frame_ui


def main() -> None:
    """Draws the Tune page."""
    page_frame_ui("pages/tune.py")
    st.title("🎛️ Tune")
    st.caption(
        "Hyperparameter search with keras-tuner on a patient-grouped train/validation split of the pooled "
        "train+val images (the test split is never used). The search runs in a separate worker process: "
        "switching pages, reloading or closing the tab does not stop it, and a stopped search can be resumed."
    )
    st.info(tune_view.NAS_NOTE, icon="🧬")
    tune_view.active_banner_ui()
    data_dir = widgets.chosen_data_folder_ui()
    tune_view.configure_section_ui(data_dir)
    st.divider()
    tune_view.runs_section_ui()


main()
