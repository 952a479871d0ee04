"""Data page sections: the folder inputs, counts per split and class, patients, samples, the fold preview, skipped files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from zoidberg.data.dataset import Dataset
from zoidberg.data.folds import check_fold_count, fold_overview, make_folds, shared_patients
from zoidberg.data.summary import images_per_patient, patients_in_several_splits, split_class_rows
from zoidberg.ui import figures, form_widgets, state, widgets

PREVIEW_SIZES = (64, 128, 224)
SAMPLES_PER_CLASS = 6


DATA_DIR_WIDGET = "data_dir_input"


def use_demo_data() -> None:
    """Puts the synthetic demo folder into the folder input (a button callback)."""
    st.session_state[DATA_DIR_WIDGET] = state.demo_data_dir()


def folder_section_ui() -> tuple[str, str, int]:
    """Draws the folder, label-mode and preview-size inputs; remembers the folder."""
    left, button, middle, right = st.columns([4, 1.4, 2, 1], vertical_alignment="bottom")
    with left:
        data_dir = form_widgets.data_dir_ui(default=state.chosen_data_dir(), key=DATA_DIR_WIDGET)
    with button:
        st.button("🧪 Demo data", on_click=use_demo_data, help="Use the generated synthetic dataset (not real X-rays).")
    with middle:
        label_mode = form_widgets.label_mode_ui("data_label_mode")
    with right:
        image_size = st.selectbox(
            "Preview size (px)", PREVIEW_SIZES, index=1, key="data_preview_size", persist_state="session"
        )
    data_dir = data_dir or state.demo_data_dir()
    state.remember_data_dir(data_dir)
    return data_dir, label_mode, int(image_size)


def overview_section_ui(dataset: Dataset) -> None:
    """Draws headline numbers, counts per split and class, and class imbalance."""
    training = dataset.training_indices()
    counts = dataset.class_counts(training)
    largest, smallest = max(counts.values()), min(counts.values())
    columns = st.columns(5)
    columns[0].metric("Images", len(dataset), border=True)
    columns[1].metric("Patients", len(np.unique(dataset.patients)), border=True)
    columns[2].metric(
        "Test images", len(dataset.test_indices()), border=True, help="Held out: never used by cross-validation."
    )
    columns[3].metric(
        "Imbalance",
        f"{largest / smallest:.1f} : 1" if smallest else "∞",
        border=True,
        help="Largest to smallest class in the cross-validation pool (train + val).",
    )
    columns[4].metric("Skipped files", len(dataset.skipped), border=True)
    left, right = st.columns([2, 3])
    rows = split_class_rows(dataset)
    with left:
        splits = list(dict.fromkeys(row["split"] for row in rows))
        table = (
            pd.DataFrame(rows)
            .pivot(index="split", columns="class", values="images")
            .reindex(index=splits, columns=list(dataset.class_names))
        )
        table["total"] = table.sum(axis=1)
        st.dataframe(table, width="stretch")
        shares = ", ".join(f"{name} {count / max(1, len(training)):.0%}" for name, count in counts.items())
        st.caption(
            f"Cross-validation pool (train + val): {len(training)} images — {shares}. "
            + (
                "Class weighting 'balanced' on the Train page compensates the imbalance."
                if largest > 1.5 * smallest
                else ""
            )
        )
    with right:
        st.plotly_chart(figures.class_counts_figure(rows), key="data_counts_chart")


def patients_section_ui(dataset: Dataset) -> None:
    """Draws patient counts, the images-per-patient histogram and split leakage."""
    training = dataset.training_indices()
    per_class = images_per_patient(dataset, training)
    left, right = st.columns([5, 6])
    with left:
        table = pd.DataFrame(
            [
                {
                    "class": name,
                    "patients": len(counts),
                    "images": int(sum(counts)),
                    "mean / patient": round(float(np.mean(counts)), 2) if counts else 0.0,
                    "max / patient": max(counts) if counts else 0,
                }
                for name, counts in per_class.items()
            ]
        )
        st.dataframe(table, hide_index=True, width="stretch")
        st.caption(
            "Patients come from the file names (personN_…, IM-XXXX-…, NORMAL2-IM-XXXX-…). Folds keep each "
            "patient's images together, so no patient is scored by a model that saw them."
        )
        leaked = patients_in_several_splits(dataset)
        if leaked:
            st.warning(
                f"{len(leaked)} patient(s) have images in more than one split folder (e.g. {', '.join(leaked[:5])}). "
                "Cross-validation pools train and val, but a patient also in test makes the test score optimistic."
            )
        else:
            st.success("No patient has images in more than one split folder ✓")
    with right:
        st.plotly_chart(
            figures.images_per_patient_figure(per_class, title="Images per patient (train + val)"),
            key="data_patients_chart",
        )


def samples_section_ui(dataset: Dataset) -> None:
    """Draws a few images per class, re-drawn on request."""
    header, button = st.columns([5, 1])
    header.markdown("##### Sample images")
    if button.button("🔀 Other samples", key="data_shuffle_samples"):
        st.session_state["data_sample_seed"] = st.session_state.get("data_sample_seed", 0) + 1
    generator = np.random.default_rng(st.session_state.get("data_sample_seed", 0))
    for label, name in enumerate(dataset.class_names):
        indices = np.flatnonzero(dataset.labels == label)
        chosen = (
            generator.choice(indices, size=min(SAMPLES_PER_CLASS, len(indices)), replace=False) if len(indices) else []
        )
        st.markdown(f"**{name}** ({len(indices)} images)")
        if len(chosen):
            st.image(
                [dataset.images[index] for index in chosen],
                caption=[f"{dataset.paths[index].rsplit('/', 1)[-1]} · {dataset.patients[index]}" for index in chosen],
                width=150,
            )


def folds_section_ui(dataset: Dataset) -> None:
    """Draws the patient-grouped fold preview for a chosen k and seed."""
    st.markdown("##### Fold preview")
    left, right, _ = st.columns([1, 1, 3])
    n_splits = left.number_input(
        "Folds k", min_value=2, max_value=20, value=5, step=1, key="data_fold_k", persist_state="session"
    )
    seed = right.number_input("Seed", min_value=0, value=42, step=1, key="data_fold_seed", persist_state="session")
    training = dataset.training_indices()
    labels, patients = dataset.labels[training], dataset.patients[training]
    try:
        check_fold_count(labels, patients, int(n_splits), dataset.class_names)
        fold_of = make_folds(labels, patients, int(n_splits), int(seed))
    except ValueError as error:
        widgets.show_error(error)
        return
    overview = fold_overview(labels, patients, fold_of, dataset.class_names)
    shared = shared_patients(patients, fold_of)
    if shared:
        st.error(f"{len(shared)} patient(s) appear in more than one fold: {', '.join(sorted(map(str, shared))[:10])}")
    else:
        st.success(f"No patient is shared between folds ✓ (checked all {len(np.unique(patients))} patients)")
    table, chart = st.columns([2, 3])
    with table:
        st.dataframe(pd.DataFrame(overview), hide_index=True, width="stretch")
    with chart:
        st.plotly_chart(
            figures.fold_balance_figure(overview, dataset.class_names, title="Images per class and fold"),
            key="data_folds_chart",
        )


def skipped_section_ui(dataset: Dataset) -> None:
    """Lists the files that could not be used, with their reasons."""
    st.markdown("##### Skipped files")
    if not dataset.skipped:
        st.caption("Every file was read ✓")
        return
    st.warning(f"{len(dataset.skipped)} file(s) were skipped and are not used for training.")
    st.dataframe(
        pd.DataFrame([{"file": item.path, "reason": item.reason} for item in dataset.skipped]),
        hide_index=True,
        width="stretch",
    )


def duplicates_section_ui(dataset: Dataset) -> None:
    """Lists exact and near-duplicate images, marking those that cross patients or split folders."""
    from zoidberg.data.duplicates import NEAR_DUPLICATE_BITS

    st.markdown("##### Duplicates")
    with st.spinner("Hashing every file and image (once per data folder) ..."):
        report = state.duplicate_report_cached(dataset)
    summary = report.summary()
    if not report.groups:
        st.success(f"No duplicate images ✓ (byte-identical files, or perceptual hashes within {NEAR_DUPLICATE_BITS} of 256 bits)")
        return
    crossing = summary["crossing_patients"] + summary["crossing_splits"]
    text = (
        f"{summary['exact_groups']} group(s) of byte-identical files ({summary['exact_images']} images) and "
        f"{summary['near_groups']} of near-duplicates ({summary['near_images']} images); "
        f"{summary['crossing_patients']} cross patients, {summary['crossing_splits']} cross split folders."
    )
    (st.warning if crossing else st.info)(
        text + " Cross-validation's default duplicates policy, *group*, keeps each group in one fold; the Train "
        "form can drop the copies instead.",
        icon="🪞",
    )
    rows = [
        {
            "kind": group.kind,
            "images": len(group.paths),
            "files": ", ".join(path.rsplit("/", 1)[-1] for path in group.paths),
            "patients": ", ".join(group.patients),
            "across patients": "yes" if group.crosses_patients else "",
            "across splits": "yes" if group.crosses_splits else "",
            "bits apart": group.max_bits,
        }
        for group in report.groups
    ]
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    st.caption(
        f"Exact: the same bytes (SHA-256). Near: a 256-bit DCT perceptual hash within {NEAR_DUPLICATE_BITS} bits; on the "
        "Kermany images distinct films are 38 or more bits apart and re-encoded or resized copies 14 or fewer. "
        "`python -m zoidberg audit --data DIR` prints the same list."
    )
