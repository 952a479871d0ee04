"""Train page: configure a patient-grouped k-fold run, start it in a worker, watch it live."""

from __future__ import annotations

import streamlit as st

from zoidberg.ui import train_view, widgets
from zoidberg.ui.frame import page_frame_ui


def main() -> None:
    """Draws the Train page."""
    page_frame_ui("pages/train.py")
    st.title("🏋️ Train")
    st.caption(
        "Patient-grouped stratified k-fold cross-validation. Training runs in a separate worker process: "
        "switching pages, reloading or closing the tab does not stop it."
    )
    train_view.active_banner_ui()
    data_dir = widgets.chosen_data_folder_ui()
    train_view.form_section_ui(data_dir)
    st.divider()
    train_view.runs_section_ui()


main()
