"""A finished run's downloads: the report, the one-model exports, config.json and the fold models' zip."""

from __future__ import annotations

import json
import time

import streamlit as st

from zoidberg.inference.loading import models_archive
from zoidberg.runs.store import Run
from zoidberg.ui import state


def export_zip(run: Run, fmt: str) -> bytes:
    """The run's export in one format (written into the run first), zipped for the download button."""
    from zoidberg.inference.export import export_archive
    from zoidberg.ui import predict_results

    return export_archive(run, predict_results.load_ensemble_cached(state.run_store(), run), fmt)


def _exports(run: Run) -> None:
    """Draws the export of the run as one model: a format, then its zip (model and model card)."""
    from zoidberg.config import EXPORT_FORMATS

    left, right, _ = st.columns([1, 1.3, 1.7], vertical_alignment="bottom")
    fmt = left.selectbox("Export as", EXPORT_FORMATS, key=f"export_format_{run.id}",
                         help="One model: uint8 input at the run's size (an ensemble of runs at several sizes: one input per "
                         "size); scaling, every fold, an ensemble's combination, an adapted run's site heads and the calibration "
                         "inside; model_card.json beside it. Each export is reloaded with its own runtime and checked "
                         "against the run's probabilities before it is offered.")
    with right:
        st.download_button(
            f"⬇ {fmt} export (.zip)", lambda: export_zip(run, fmt), file_name=f"{run.id}-{fmt}.zip", mime="application/zip",
            on_click="ignore", key=f"download_export_{run.id}_{fmt}", help="Built on demand: seconds for one run, about a minute for an ensemble of runs or an adapted one.",
        )


def _report(run: Run) -> None:
    """Draws "Make report" (HTML and PDF into runs/<id>/reports/), then the downloads of the stored report."""
    from zoidberg.reporting.report_files import REPORT_FORMATS, report_path, write_report
    from zoidberg.ui import predict_results

    left, middle, right, _ = st.columns([1, 1, 1, 1], vertical_alignment="bottom")
    if left.button("Make report", key=f"make_report_{run.id}",
                   help="One document for a clinician: intended use, data, method, CV and external results with CIs, "
                   "curves, operating point, confusion matrices and the most wrong X-rays with Grad-CAM (about 10 s)."):
        with st.spinner("Writing the report (figures and Grad-CAM)…"):
            try:
                ensemble = predict_results.load_ensemble_cached(state.run_store(), run)
                write_report(run, REPORT_FORMATS, ensemble=ensemble)
            except (ValueError, OSError, LookupError) as error:
                st.error(f"The report could not be written: {error}")
    for column, fmt in zip((middle, right), REPORT_FORMATS):
        path = report_path(run, fmt)
        if path.is_file():
            column.download_button(
                f"⬇ Report (.{fmt})", path.read_bytes(), file_name=f"{run.id}-report.{fmt}",
                mime="text/html" if fmt == "html" else "application/pdf", on_click="ignore", key=f"download_report_{run.id}_{fmt}",
                help=f"Made {time.strftime('%Y-%m-%d %H:%M', time.localtime(path.stat().st_mtime))}; self-contained, opens offline.",
            )


def downloads_ui(run: Run, has_models: bool) -> None:
    """Draws the report, downloads of config.json, of a zip of the fold models and of the one-model exports."""
    if has_models:
        _report(run)
        _exports(run)
    left, right, _ = st.columns([1, 1, 2])
    with left:
        st.download_button(
            "⬇ config.json",
            json.dumps(run.config, indent=2),
            file_name=f"{run.id}-config.json",
            mime="application/json",
            on_click="ignore",
            key=f"download_config_{run.id}",
        )
    with right:
        st.download_button(
            "⬇ Fold models (.zip)",
            lambda: models_archive(run, state.run_store()),
            file_name=f"{run.id}-models.zip",
            mime="application/zip",
            on_click="ignore",
            disabled=not has_models,
            key=f"download_models_{run.id}",
            help="Every fold's model.keras and config.json (an ensemble's members, an adapted run's parent and its site heads "
            "inside), zipped on demand.",
        )

