"""Compare page: finished runs and ensembles side by side, with paired tests; combine runs into an ensemble."""

from __future__ import annotations

import streamlit as st

from zoidberg.runs.store import MODEL_KINDS, RunStore
from zoidberg.ui import compare_view as view
from zoidberg.ui.frame import page_frame_ui


def main() -> None:
    """Draws the page."""
    page_frame_ui("pages/compare.py")
    st.title("Compare runs")
    st.caption(
        "Put finished cross-validation runs side by side: metrics, per-fold spread, learning curves, ROC, "
        "confusion matrices and cost, and test whether a difference is more than fold-to-fold noise."
    )
    try:
        runs = RunStore().list_runs(kind=MODEL_KINDS)
    except OSError as error:
        st.error(f"Cannot read the runs folder: {error.strerror or error}.")
        return
    records, unfinished = view.finished_records(runs)
    if len(records) < 2:
        st.info(
            f"Comparing needs at least two completed cross-validation runs; there "
            f"{'is' if len(records) == 1 else 'are'} "
            f"{len(records)}. Go to **Train**, run two configurations on the same data with the same k and seed "
            "(for example the demo dataset with two architectures), then come back here.",
            icon="📊",
        )
        return
    selected = view.run_selection_ui(records, runs)
    if unfinished:
        st.caption(
            f"{len(unfinished)} run(s) not listed because they have not completed (running, stopped, failed or "
            "interrupted): a comparison needs the summary written when all folds finish."
        )
    if len(selected) < 2:
        st.info("Choose at least two runs to compare.")
        return
    view.label_mode_note_ui(selected)
    view.ensemble_ui(selected)
    basis = view.comparison_basis_ui(selected)
    if basis is not None:
        view.evaluation_comparison_ui(selected, basis)
        return
    view.measured_first_ui(selected)
    st.subheader("Summary")
    view.summary_table_ui(selected)
    view.differences_ui(selected)
    view.statistical_comparison_ui(selected)
    st.subheader("Details")
    view.details_ui(selected)


main()
