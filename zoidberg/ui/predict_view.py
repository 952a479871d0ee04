"""Predict page pieces: per-file decoding and fold-ensemble prediction, Grad-CAM, cards and batch table."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pandas as pd
import streamlit as st

from zoidberg.data.imaging import MAX_UPLOAD_BYTES
from zoidberg.inference.attention import describe_share, lung_share
from zoidberg.data.ood import REFUSAL
from zoidberg.inference.decisions import Decision
from zoidberg.inference.record import RECORD_SCHEMA_VERSION, records_csv_text
from zoidberg.runs.store import Run, RunNotFoundError, RunStore
from zoidberg.ui import figures
from zoidberg.ui.widgets import escape_markdown, run_picker_ui
from zoidberg.ui.predict_inputs import ImageInput, demo_inputs, folder_inputs, uploads_to_inputs
from zoidberg.ui.predict_results import (
    ImageResult,
    display_jpeg,
    format_probability,
    gradcam_heatmap,
    headline,
    load_ensemble_cached,
    models_signature,
    overlay_jpeg,
    process_all,
    result_records,
    results_table,
)

LOGGER = logging.getLogger(__name__)

UPLOAD_TYPES = ["png", "jpg", "jpeg", "dcm", "dicom", "zip"]
MAX_UPLOAD_MB = MAX_UPLOAD_BYTES // (1024 * 1024)

# Cards drawn at once; the batch table always lists every file.
CARD_LIMIT = 24

DISCLAIMER = (
    "**Research demo, not a medical device.** These predictions come from models trained for teaching and "
    "experimentation. They have not been validated clinically and must never be used to diagnose, treat or "
    "triage a patient."
)



# ----------------------------------------------------------------------------- widgets


def predict_run_picker_ui(runs: Sequence[tuple[Run, str, list[int]]]) -> tuple[Run, str, list[int]]:
    """Draws the model picker (zoidberg.ui.widgets.run_picker_ui, newest first) and returns the chosen entry."""
    extras = {}
    for run, _, folds in runs:
        n_splits = run.config.get("n_splits", len(folds))
        extras[run.id] = (f"ensemble of {len(folds)} runs" if run.kind == "ensemble" else f"adapted from {run.config.get('parent')}"
                          if run.kind == "adapt" else f"{len(folds)}/{n_splits} folds")
    by_id = {run.id: (run, state, folds) for run, state, folds in runs}
    chosen = run_picker_ui(
        [run for run, _, _ in runs], {run.id: state for run, state, _ in runs}, None,
        label="Model (a finished cross-validation run, ensemble or adapted run)", key="predict_run",
        help_text="Every fold's model predicts each image; the page shows their mean and spread.", extras=extras,
    )
    return by_id[chosen]


def describe_ensemble(ensemble: Any, state: str, folds: Sequence[int], n_splits: int) -> str:
    """One-line description of what predicts: folds, input size, classes, threshold origin."""
    fold_list = ", ".join(str(fold) for fold in folds)
    if ensemble.run.kind == "ensemble":
        names = ", ".join(member.run.name for member in ensemble.members)
        which = f"Ensemble of {len(ensemble.members)} runs ({ensemble.combiner.method}: {names})"
    elif ensemble.run.kind == "adapt":
        which = f"Adapted to `{ensemble.run.config.get('site_dir')}`: {ensemble.describe_models()}"
    elif state == "completed" and len(folds) == n_splits:
        which = f"Ensemble of all {len(folds)} fold models"
    else:
        which = f"Ensemble of folds {fold_list} only (the run {state} after {len(folds)} of {n_splits} folds)"
    classes = " / ".join(ensemble.class_names)
    if ensemble.is_binary:
        summary = ensemble.run.summary() or {}
        point = ensemble.operating_point
        if point:
            from zoidberg.config import OperatingPointChoice

            choice = OperatingPointChoice.from_dict(point["choice"])
            origin = f"{choice.describe()} on out-of-fold predictions, {point['prevalence']:.0%} prevalence ({point['prevalence_source']})"
        else:
            method = summary.get("threshold_method")
            origin = f"{method} on out-of-fold predictions" if method else "default, the run has no out-of-fold threshold"
        threshold_text = f" · run threshold {ensemble.threshold:.3f} on {ensemble.scale} probabilities ({origin})"
    else:
        threshold_text = " · predicted class = most probable"
    return f"{which} · {ensemble.image_size} px input · {classes}{threshold_text}"


def threshold_ui(ensemble: Any) -> float | None:
    """Draws the global threshold slider (binary runs) with a reset button.

    Returns:
        The threshold, or None for three-class runs.
    """
    if not ensemble.is_binary:
        return None
    key = f"predict_threshold_{ensemble.run.id}"
    default = round(float(ensemble.threshold), 3)
    if key not in st.session_state:
        st.session_state[key] = default
    value = st.slider(
        f"Decision threshold: {ensemble.scale} P({ensemble.class_names[1]}) ≥ threshold → {ensemble.class_names[1]}",
        0.0,
        1.0,
        step=0.005,
        format="%.3f",
        key=key,
        help="Applies to every image. Lower it to miss fewer pneumonias (more false alarms); "
        "raise it for fewer false alarms. "
        "Moving it never re-runs the network.",
    )

    def reset() -> None:
        st.session_state[key] = default

    st.button(f"Reset to the run's threshold ({default:.3f})", on_click=reset, key=f"{key}_reset", type="tertiary")
    return float(value)


def gradcam_ui() -> tuple[bool, float]:
    """Draws the Grad-CAM toggle and opacity.

    Returns:
        (show heatmaps, overlay opacity).
    """
    show = st.toggle(
        "Grad-CAM heatmap",
        value=True,
        key="predict_gradcam",
        help="Gradient-weighted class activation map of the last convolution layer, averaged over fold models, for the "
        "predicted class. It shows which regions drove the score, not where disease is.",
    )
    alpha = st.slider("Heatmap opacity", 0.1, 0.9, 0.45, 0.05, key="predict_alpha", disabled=not show)
    return show, float(alpha)


def inputs_ui(label_mode: str) -> tuple[list[ImageInput], Any]:
    """Draws the uploader, the server folder, the PACS and the demo toggle.

    Returns:
        (the files to predict: uploads, the folder's, the PACS studies', then demo images;
        what the PACS write-back needs, or None).
    """
    from zoidberg.ui.pacs_source import pacs_inputs_ui

    uploads = st.file_uploader(
        f"Chest X-rays: PNG, JPEG or DICOM, up to {MAX_UPLOAD_MB} MB each, or a .zip of them",
        type=UPLOAD_TYPES,
        accept_multiple_files=True,
        key="predict_uploads",
        max_upload_size=MAX_UPLOAD_MB,
        help="Files are processed in memory and never written to disk. DICOM images are windowed "
        "(VOI LUT or window centre/width) and MONOCHROME1 is inverted. A .zip is read in memory: entries whose "
        "path leaves the archive are refused, and so is an archive that would unpack to more than 512 MB (all of a session's "
        "archives together), or whose files unpack to more than they declare.",
    )
    items = uploads_to_inputs(uploads)
    items += server_folder_ui()
    pacs_items, pacs_target = pacs_inputs_ui()
    items += pacs_items
    if st.toggle(
        "Try demo images (synthetic)",
        value=False,
        key="predict_demo",
        help="A few images from the test split of the synthetic demo dataset, with their true class.",
    ):
        items.extend(demo_items_ui(label_mode))
    return items, pacs_target


def server_folder_ui() -> list[ImageInput]:
    """Draws "or a folder on the server" and returns its images (none while it is empty or refused)."""
    from zoidberg.data.roots import check_allowed

    folder = st.text_input(
        "…or a folder on the server",
        value="",
        key="predict_folder",
        placeholder="/data/clinic/2026-12 (read recursively; files recognised by content)",
        help="Every image and DICOM file under it is predicted in batches; files inside NORMAL/PNEUMONIA folders "
        "get their true class and a correct column. On a shared server only folders under $ZOIDBERG_DATA_ROOTS can be read.",
    ).strip()
    if not folder:
        return []
    try:
        path = check_allowed(folder)
        if not path.is_dir():
            raise ValueError(f"{folder} does not exist or is not a folder.")
        with st.spinner(f"Reading {path} ..."):
            items, notes = folder_inputs(str(path))
    except (ValueError, OSError) as error:
        st.error(escape_markdown(str(error)))
        return []
    for note in notes:
        st.warning(note)
    if not items:
        st.info(f"No image files under {escape_markdown(str(path))}.")
    return items


def demo_items_ui(label_mode: str) -> list[ImageInput]:
    """Returns demo images, generating the demo dataset on first use (with a spinner)."""
    from zoidberg.data.demo import default_demo_dir, ensure_demo_dataset

    try:
        with st.spinner("Generating the synthetic demo dataset (first use only) ..."):
            root = ensure_demo_dataset(default_demo_dir())
    except (OSError, ValueError) as error:
        st.warning(f"The demo images are unavailable: {error}")
        return []
    items = demo_inputs(root, label_mode)
    if not items:
        st.warning(f"No demo images found in {root / 'test'}.")
    return items


def _empty_columns(table: pd.DataFrame, candidates: Sequence[str]) -> list[str]:
    """Returns the candidate columns whose cells are all empty or missing."""
    return [
        column for column in candidates if column in table and not table[column].fillna("").astype(str).str.len().any()
    ]


def show_batch_table(ensemble: Any, results: Sequence[ImageResult], threshold: float | None) -> None:
    """Draws the batch table with a CSV download (probabilities on the run's scale, with both scales when calibrated)."""
    class_names, run_id = list(ensemble.class_names), ensemble.run.id
    table = results_table(ensemble, results, threshold)
    column_config = {
        "probability": st.column_config.ProgressColumn(
            "probability",
            min_value=0.0,
            max_value=1.0,
            format="%.3f",
            help="P(pneumonia) for binary runs; P(predicted class) for three-class runs.",
        ),
        "spread": st.column_config.NumberColumn(
            "± spread", format="%.3f", help="Standard deviation across fold models."
        ),
    }
    # Columns with nothing to say (no demo images, no errors) are hidden on screen but kept in the CSV.
    shown = table.drop(columns=_empty_columns(table, ("error", "true class", "correct", "ood_reason")))
    # On screen a probability reads "> 0.999", never a bare 1 (the CSV keeps the numbers).
    for column in [name for name in shown.columns if name in ("raw", "calibrated") or name.startswith("P(")]:
        shown[column] = [format_probability(value) if isinstance(value, (int, float)) and value == value else "" for value in shown[column]]
    st.dataframe(shown, hide_index=True, width="stretch", column_config=column_config)
    failed = int(sum(1 for result in results if not result.ok))
    st.download_button(
        "Download predictions (CSV)",
        records_csv_text(result_records(ensemble, results, threshold), class_names).encode("utf-8", "surrogateescape"),
        file_name=f"predictions_{run_id}.csv",
        mime="text/csv",
        on_click="ignore",
        icon=":material/download:",
        help="One row per file, at the current threshold: the prediction record documented in the README (schema "
        f"{RECORD_SCHEMA_VERSION}), as predict --csv writes it."
        + (f" {failed} file(s) with an error keep their reason." if failed else ""),
    )


def show_card(
    ensemble: Any, result: ImageResult, threshold: float | None, gradcam: tuple[bool, float], index: int
) -> None:
    """Draws one image's card: image, optional Grad-CAM, decision, per-fold strip, class bars.

    Args:
        ensemble: The loaded Ensemble.
        result: The processed file.
        threshold: Binary decision threshold.
        gradcam: (show heatmap, opacity).
        index: Position of the card on the page (keeps chart keys unique).
    """
    class_names = list(ensemble.class_names)
    with st.container(border=True):
        source = " :violet-badge[synthetic demo]" if result.source == "demo" else ""
        # Upload names are the user's text: shown literally, never as Markdown.
        st.markdown(f"**{escape_markdown(result.name)}**{source}")
        if not result.ok:
            st.error(f"{escape_markdown(result.name)}: {escape_markdown(result.error)}", icon="🚫")
            return
        record = result.record(ensemble, threshold)
        if result.refused:
            _show_refusal(result, record, class_names)
            return
        decision = Decision.from_record(record)
        show_gradcam, alpha = gradcam
        columns = st.columns([1, 1, 1.3]) if show_gradcam else st.columns([1, 1.3])
        with columns[0]:
            kind = "DICOM, windowed" if result.kind == "dicom" else result.kind.upper()
            height, width = result.original_shape or (0, 0)
            st.image(display_jpeg(result), caption=f"{kind} · {width}×{height} px", width="stretch")
        if show_gradcam:
            with columns[1]:
                _show_gradcam(ensemble, result, decision, alpha)
        with columns[-1]:
            _show_decision(decision, class_names, result, index)


def _show_refusal(result: ImageResult, record: dict, class_names: Sequence[str]) -> None:
    """The card of an image the gate refused: the image and why, and no diagnosis."""
    columns = st.columns([1, 1.3])
    with columns[0]:
        if result.display is not None:
            st.image(display_jpeg(result), caption=f"{result.kind.upper()}", width="stretch")
        else:
            st.caption("Not retrieved: what its header says refused it.")
    with columns[1]:
        st.markdown("### :orange[No diagnosis]")
        reason = record.get("ood_reason") or ""
        if reason.startswith(REFUSAL):
            st.error(f"{REFUSAL}. The model's answer would mean nothing here.", icon=":material/block:")
            # The reason repeats the refusal sentence above it; the card shows only why.
            why = reason.removeprefix(f"{REFUSAL}: ")
            st.caption(f"{escape_markdown(why[:1].upper() + why[1:])} Upload a frontal chest X-ray (PA or AP), upright and not inverted.")
        else:
            # The feature stage and the DICOM header name what the film likely is: that is the headline.
            st.error(escape_markdown(reason), icon=":material/block:")
            st.caption("Upload a frontal chest X-ray (PA or AP) of a young child, upright and not inverted.")
        unscored = record.get("not_a_diagnosis")
        if unscored:
            with st.expander("For model developers: what the model would have said (not a diagnosis)"):
                st.caption(f"{unscored['label']} (probability {unscored['probability']:.3f}); out-of-distribution score "
                           f"{record['ood_score']:.2f}, refused above 1.")


def _show_gradcam(ensemble: Any, result: ImageResult, decision: Decision, alpha: float) -> None:
    """Draws the Grad-CAM overlay of the predicted class, or why it is unavailable."""
    try:
        overlay = overlay_jpeg(ensemble, result, decision.class_index, alpha)
    except Exception as error:  # Grad-CAM is an extra: its failure must not hide the prediction.
        LOGGER.exception("Grad-CAM failed for %s", result.name)
        st.caption(f"Grad-CAM unavailable for this model ({type(error).__name__}).")
        return
    st.image(overlay, caption=f"Grad-CAM: evidence for {decision.label}", width="stretch")
    warning = describe_share(lung_share(gradcam_heatmap(ensemble, result, decision.class_index)))
    if warning:
        st.warning(warning, icon="🫁")


def _show_decision(decision: Decision, class_names: Sequence[str], result: ImageResult, index: int) -> None:
    """Draws the predicted class, its probability and spread, and the per-fold strip."""
    positive = len(class_names) == 2 and decision.class_index == 1
    color = "red" if positive or (len(class_names) > 2 and decision.class_index > 0) else "green"
    st.markdown(f"### :{color}[{decision.label.capitalize()}]")
    st.markdown(headline(decision, class_names))
    if decision.threshold is not None and decision.calibrated_probability is not None and decision.raw_probability is not None:
        st.caption(f"The threshold applies to {decision.scale} probabilities: raw {format_probability(decision.raw_probability)}, "
                   f"calibrated {format_probability(decision.calibrated_probability)}.")
    if result.true_label is not None:
        mark = "✅ matches" if result.true_label == decision.label else "❌ differs"
        where = "synthetic" if result.source == "demo" else "from its folder"
        st.caption(f"True class ({where}): **{result.true_label}** · {mark}")
    if len(decision.per_fold) > 1 and decision.spread > 0.15:
        who = "members" if decision.unit == "member" else "fold models"
        st.caption(f"⚠️ The {who} disagree strongly on this image: treat the prediction as uncertain.")
    st.plotly_chart(
        figures.fold_strip_figure(decision, class_names), key=f"predict_strip_{index}", config={"displayModeBar": False}
    )
    if len(class_names) > 2:
        st.plotly_chart(
            figures.class_probability_figure(decision, class_names),
            key=f"predict_classes_{index}",
            config={"displayModeBar": False},
        )


def load_ensemble_ui(store: RunStore, run: Run, folds: Sequence[int]):
    """Loads a run's fold ensemble (cached) with a spinner; on failure shows why and returns None."""
    try:
        what = f"{len(folds)} member runs" if run.kind == "ensemble" else f"{len(folds)} fold model(s)"
        with st.spinner(f"Loading the {what} of {run.name} (once per run) ..."):
            return load_ensemble_cached(store, run)
    except (RunNotFoundError, ValueError, OSError) as error:
        st.error(f"Cannot load the models of {run.name}: {error}")
    except Exception as error:  # A corrupt .keras file must not show a traceback.
        LOGGER.exception("Loading the ensemble of %s failed", run.id)
        st.error(
            f"Cannot load the models of {run.name} ({type(error).__name__}). "
            "The model files may be damaged; re-run training."
        )
    return None


def results_ui(ensemble: Any, run: Run, store: RunStore, items: Sequence[ImageInput], threshold: float | None, gradcam) -> list[ImageResult]:
    """Predicts the files (reusing this session's results) and draws the batch table and one card per file.

    Returns:
        The results, for writing them back to a PACS.
    """
    run_key = (str(store.root), run.id, models_signature(run))
    results = process_all(ensemble, run_key, items)
    failed = [result for result in results if not result.ok]
    st.subheader(f"Results ({len(results)} image{'s' if len(results) != 1 else ''})")
    if failed:
        st.warning(
            f"{len(failed)} of {len(results)} file(s) could not be used; "
            "their reasons are in the table and cards below."
        )
    refused = [result for result in results if result.ok and result.refused]
    if refused:
        st.warning(
            f"{len(refused)} of {len(results)} image(s) do not look like the frontal chest X-rays this model learned from: "
            "they get no diagnosis.",
            icon=":material/block:",
        )
    if ensemble.gate is None:
        st.caption(f"Unchecked: {escape_markdown(ensemble.gate_note)}")
    show_batch_table(ensemble, results, threshold)
    for index, result in enumerate(results[:CARD_LIMIT]):
        show_card(ensemble, result, threshold, gradcam, index)
    if len(results) > CARD_LIMIT:
        st.caption(f"Showing the first {CARD_LIMIT} cards; the table above lists all {len(results)} files.")
    return results
