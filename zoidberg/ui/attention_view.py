"""The run view's "Where it looks": the share of Grad-CAM evidence inside the lung fields, and the films where it is not."""

from __future__ import annotations

import os

import streamlit as st

from zoidberg.inference.attention import DEFAULT_SAMPLE, LUNG_BOX, OUTSIDE_SHARE, attention_sentence, measure_and_store, stored_checks
from zoidberg.runs.store import Run
from zoidberg.ui.widgets import escape_markdown, show_error


def attention_ui(run: Run, evaluations: list[dict]) -> None:
    """Draws every stored check, its flagged films, and buttons that measure the sources not measured yet."""
    x0, y0, x1, y1 = (round(100 * value) for value in LUNG_BOX)
    st.caption(
        f"Grad-CAM of the decided class on each film, and the share of its mass inside a lung-field box (x {x0}–{x1} %, "
        f"y {y0}–{y1} % of the film, read off the mean of the training films). On this data set models learn shortcuts: "
        f"the \"R\" marker, the neck, the abdomen. A film with less than {OUTSIDE_SHARE:.0%} of its evidence inside is flagged."
    )
    checks = {check["source"]: check for check in stored_checks(run, evaluations)}
    for check in checks.values():
        st.markdown(escape_markdown(attention_sentence(check)))
        if check["outside"]:
            with st.expander(f"Films with most of the evidence outside the lungs ({check['n_outside']})"):
                for item in check["outside"]:
                    st.caption(f"{item['share']:.0%} inside · {escape_markdown(item['label'])} called {escape_markdown(item['predicted'])} · "
                               f"{escape_markdown(os.path.basename(item['path']))}")
    missing = [None] if "out-of-fold" not in checks else []
    missing += [item for item in evaluations if item["name"] not in checks]
    for evaluation in missing:
        what = "out-of-fold films" if evaluation is None else f"the films of {evaluation['name']}"
        key = f"attention_{run.id}_{'oof' if evaluation is None else evaluation['name']}"
        if st.button(f"Measure where it looks on {what}", key=key, help=f"Grad-CAM on up to {DEFAULT_SAMPLE} films (about a minute for an ensemble of runs)."):
            _measure(run, evaluation)


def _measure(run: Run, evaluation: dict | None) -> None:
    """Measures one source with a progress bar and stores it in the run; a failure is one message."""
    from zoidberg.ui import predict_results, state

    bar = st.progress(0.0, text="Grad-CAM …")
    try:
        ensemble = predict_results.load_ensemble_cached(state.run_store(), run)
        measure_and_store(run, ensemble, evaluation, progress=lambda done, total: bar.progress(done / total, text=f"Grad-CAM {done}/{total}"))
    except (ValueError, OSError, LookupError) as error:
        show_error(error, "Not measured.")
        return
    st.rerun()
