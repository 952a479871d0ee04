"""Compare page: run selection, the summary table, the comparability check and paired tests, per-fold and curve plots."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import streamlit as st

from zoidberg.evaluation import compare, paired
from zoidberg.evaluation.stored import current_evaluations
from zoidberg.evaluation.gap import GAP_METRICS, evaluation_figures
from zoidberg.runs.store import Run
from zoidberg.ui import compare_figures, figures, state
from zoidberg.ui import evaluation_figures as curves_figures
from zoidberg.ui.figures import confusion_matrix_figure
from zoidberg.ui.widgets import escape_markdown, run_label

BEST_CELL_STYLE = "font-weight: 700; background-color: rgba(79, 179, 191, 0.28)"

CORRECTION_EXPLANATION = """
**Why not a plain paired t-test?** In k-fold cross-validation every pair of folds shares
most of its training images (with k = 5, any two training sets overlap by 75 %). The k
scores of a model are therefore *correlated*, not independent samples, and a paired
t-test that treats them as independent underestimates the variance of the mean
difference: it finds "significant" differences far too often (Dietterich 1998).

**The correction** (Nadeau & Bengio 2003, *Inference for the Generalization Error*)
inflates the variance of the mean difference from σ²/k to (1/k + n_test/n_train)·σ²,
where n_test and n_train are the validation and training images per fold. The test
statistic is t = mean difference / √((1/k + n_test/n_train)·σ²) with k − 1 degrees of
freedom.

**How to read it.** A small p-value (below 0.05) says the gap is unlikely to be fold
noise alone; a large one says *this experiment cannot tell the models apart*, which is not
proof that they are equal. With few folds (k = 2 or 3) the test has little power. The test
is only valid when both runs used **exactly the same folds** (same images, labels, k and
seed), which is why the page checks folds.csv first.
"""


def finished_records(runs: Sequence[Run]) -> tuple[list[compare.RunRecord], list[Run]]:
    """Splits runs into finished ones (with a summary) and the others.

    Args:
        runs: Cross-validation runs, newest first.

    Returns:
        (records of completed runs, runs without a summary).
    """
    records, unfinished = [], []
    for run in runs:
        record = compare.load_run_record(run) if run.state == "completed" else None
        if record is None:
            unfinished.append(run)
        else:
            records.append(record)
    return records, unfinished


def run_selection_ui(records: Sequence[compare.RunRecord], runs: Sequence[Run]) -> list[compare.RunRecord]:
    """Draws the run multiselect; the two newest completed runs are preselected.

    Args:
        records: Finished runs, newest first.
        runs: The runs of the store (for their picker labels).

    Returns:
        The chosen runs, in the order chosen, with names unique among them.
    """
    ids = [record.run_id for record in records]
    labels = {run.id: run_label(run, "completed") for run in runs if run.id in ids}
    chosen = st.multiselect(
        "Runs to compare",
        ids,
        default=ids[:2],
        format_func=lambda run_id: labels.get(run_id, run_id),
        key="compare_runs",
        help="Finished cross-validation runs, newest first: name · architecture · label mode · image size · k · date.",
    )
    by_id = {record.run_id: record for record in records}
    return compare.with_unique_names([by_id[run_id] for run_id in chosen if run_id in by_id])


def pair_selection_ui(records: Sequence[compare.RunRecord]) -> tuple[compare.RunRecord, compare.RunRecord] | None:
    """Lets the user pick the pair to test when more than two runs are compared.

    Args:
        records: The compared runs (two or more).

    Returns:
        (run A, run B), or None when the same run is picked twice.
    """
    if len(records) == 2:
        return records[0], records[1]
    by_label = {record.label: record for record in records}
    names = list(by_label)
    left, right = st.columns(2)
    first = left.selectbox("Run A", names, index=0, key="compare_pair_a")
    second = right.selectbox("Run B", names, index=1, key="compare_pair_b")
    if first == second:
        st.info("Pick two different runs for the statistical comparison.")
        return None
    return by_label[first], by_label[second]


def summary_table_ui(records: Sequence[compare.RunRecord]) -> None:
    """Draws the mean ± std table, a metric's winner marked only where a paired test supports it."""
    text, best = compare.summary_table(records)
    best, meaning = paired.supported_best(records, best)
    styled = text.style.apply(lambda _: best.replace({True: BEST_CELL_STYLE, False: ""}), axis=None)
    st.dataframe(styled, width="stretch", height=min(38 + 35 * len(text), 640))
    st.caption(
        "Mean ± standard deviation over folds, each run at its own decision threshold (last row). "
        f"{meaning} Parameters and training time: the smallest is marked. — = not defined for that run's label mode."
    )


def label_mode_note_ui(records: Sequence[compare.RunRecord]) -> None:
    """Says what can and cannot be compared when label modes are mixed."""
    modes = sorted({record.label_mode for record in records})
    if len(modes) < 2:
        return
    shared = [compare.METRIC_LABELS[name] for name in compare.shared_metrics(records)]
    by_mode = {mode: [record.label for record in records if record.label_mode == mode] for mode in modes}
    st.warning(
        "These runs use different label modes ("
        + "; ".join(f"{mode}: {', '.join(names)}" for mode, names in by_mode.items())
        + "). Shared metrics: "
        + (", ".join(shared) or "none")
        + ". Sensitivity, specificity, precision, F1 and PR AUC exist only for binary runs; macro F1 and "
        "macro AUC only for three-class runs. Even the shared ones are not like for like (chance accuracy is "
        "about 50 % with two classes and 33 % with three), and no statistical test is possible across label modes.",
        icon="⚖️",
    )


def statistical_comparison_ui(records: Sequence[compare.RunRecord]) -> None:
    """Draws the comparability check and, on the same folds, the corrected t-tests."""
    st.subheader("Is the difference real?")
    pair = pair_selection_ui(records)
    if pair is None:
        return
    first, second = pair
    check = paired.check_comparability(first, second)
    for note in check.notes:
        st.info(note)
    if not check.comparable:
        st.warning(
            f"**{first.label} and {second.label} are not comparable with a paired test**: they were not "
            "evaluated on the same folds.\n\n"
            + "\n".join(f"- {reason}" for reason in check.reasons)
            + f"\n\n{paired.FIX_ADVICE}",
            icon="🚫",
        )
    else:
        st.success(
            f"Same folds: {first.label} and {second.label} were evaluated on identical patient-grouped folds "
            f"(folds.csv matches: k = {first.n_splits}, seed {first.random_state}). The paired test applies.",
            icon="✅",
        )
        tests = paired.paired_tests(first, second)
        table = paired.tests_table(tests)
        if not table.empty:
            st.dataframe(table, hide_index=True, width="stretch")
            st.caption(
                f"A = {first.label}, B = {second.label}. Corrected resampled t-test (Nadeau & Bengio 2003), two-sided."
            )
        for test in tests:
            if test.result is None:
                st.warning(test.verdict)
            elif test.result["p_value"] < 0.05:
                st.success(f"**{test.label}.** {test.verdict}")
            else:
                st.info(f"**{test.label}.** {test.verdict}")
    with st.expander("What does the corrected resampled t-test correct for?"):
        st.markdown(CORRECTION_EXPLANATION)


def fold_scores_ui(records: Sequence[compare.RunRecord]) -> None:
    """Draws per-fold strip plots of every shown metric."""
    names, _ = compare.table_metrics(records)
    st.plotly_chart(compare_figures.fold_scores_figure(records, names), key="compare_fold_scores")
    st.caption("Each dot is one fold's score (hover for the fold number); the bar is the mean over folds.")


def validation_curves_ui(records: Sequence[compare.RunRecord]) -> None:
    """Draws the overlaid validation curves with their controls."""
    keys = compare.available_curve_keys(records)
    if not keys:
        st.info("These runs have no per-epoch history to plot.")
        return
    left, middle, right = st.columns([2, 2, 2])
    band = left.radio(
        "Band",
        ["minmax", "std"],
        horizontal=True,
        key="compare_band",
        format_func=lambda value: "min–max over folds" if value == "minmax" else "± 1 std",
    )
    show_training = middle.toggle("Show training curves (dotted)", value=False, key="compare_show_training")
    right.caption("Folds that stopped early (early stopping) drop out of the mean after their last epoch.")
    for key in keys:
        st.plotly_chart(
            compare_figures.validation_curves_figure(records, key, band=band, show_training=show_training),
            key=f"compare_curve_{key}",
        )


def confusion_matrices_ui(records: Sequence[compare.RunRecord]) -> None:
    """Draws the out-of-fold confusion matrices side by side."""
    per_row = min(3, len(records))
    for start in range(0, len(records), per_row):
        columns = st.columns(per_row)
        for column, record in zip(columns, records[start : start + per_row], strict=False):
            matrix = (record.summary.get("out_of_fold") or {}).get("confusion_matrix")
            with column:
                if not matrix:
                    st.info(f"{record.label}: no confusion matrix in the summary.")
                    continue
                threshold = record.summary.get("threshold")
                title = f"{record.label}" + (
                    f" (threshold {threshold:.2f})" if record.is_binary and threshold is not None else ""
                )
                st.plotly_chart(
                    confusion_matrix_figure(matrix, record.class_names, title=title), key=f"compare_cm_{record.run_id}"
                )
    st.caption("Out-of-fold predictions: every image is predicted once, by the model of the fold that held it out.")


def costs_ui(records: Sequence[compare.RunRecord]) -> None:
    """Draws training time per fold and parameter counts."""
    left, right = st.columns([3, 2])
    with left:
        st.plotly_chart(compare_figures.training_time_figure(records), key="compare_time")
    with right:
        st.plotly_chart(compare_figures.parameters_figure(records), key="compare_parameters")


def differences_ui(records: Sequence[compare.RunRecord]) -> None:
    """Draws the settings that differ between the runs, in an expander."""
    differences = compare.config_differences(records)
    with st.expander(
        f"What differs between these runs ({len(differences)} setting{'s' if len(differences) != 1 else ''})"
    ):
        if differences.empty:
            st.write("The configurations are identical.")
        else:
            st.dataframe(differences, width="stretch")


def details_ui(records: Sequence[compare.RunRecord]) -> None:
    """Draws the detail tabs: per-fold scores, validation curves, ROC, confusion matrices, cost."""
    tabs = st.tabs(["Per-fold scores", "Validation curves", "ROC curves", "Confusion matrices", "Time & size"])
    with tabs[0]:
        fold_scores_ui(records)
    with tabs[1]:
        validation_curves_ui(records)
    with tabs[2]:
        st.plotly_chart(compare_figures.roc_overlay_figure(records), key="compare_roc")
    with tabs[3]:
        confusion_matrices_ui(records)
    with tabs[4]:
        costs_ui(records)


def comparison_basis_ui(records: Sequence[compare.RunRecord]) -> str | None:
    """Draws "Compare on": the cross-validation folds, or an evaluation every selected run has.

    Returns:
        None for the cross-validation folds, else the evaluation's name.
    """
    runs = [state.run_store().get(record.run_id) for record in records]
    names = paired.shared_evaluation_names(runs)
    options = [None, *names]
    if not names:
        st.caption("Compare on new data: evaluate each run on the same folder (Train page, run view, **Evaluations**) "
                   "and its name appears here.")
        return None
    return st.radio(
        "Compare on",
        options,
        format_func=lambda name: "cross-validation folds" if name is None else f"evaluation: {name}",
        horizontal=True,
        key="compare_basis",
        help="On an evaluation the runs are compared on the same new images, with DeLong's test for the AUC and "
        "McNemar's for accuracy.",
    )


def measured_first_ui(records: Sequence[compare.RunRecord]) -> None:
    """Leads the cross-validation comparison with what the runs measured on the films they share, when they share any."""
    runs = [state.run_store().get(record.run_id) for record in records]
    for name in paired.shared_evaluation_names(runs):
        lines = []
        for record, run in zip(records, runs):
            evaluation = next((item for item in current_evaluations(run) if item["name"] == name), None)
            if evaluation is None:
                continue
            numbers = evaluation_figures(evaluation)
            shown = [f"{label} {numbers[key]['value']:.3f}" for key, label in GAP_METRICS[:4] if (numbers.get(key) or {}).get("value") is not None]
            lines.append(f"- **{escape_markdown(record.label)}**: " + ", ".join(shown))
        if lines:
            st.info(
                f"**Measured on {escape_markdown(name)}** ({evaluation['n_images']} films none of them trained on), each at "
                "its own operating point. Quote these before the cross-validation figures below; choose "
                f"*Compare on: evaluation: {escape_markdown(name)}* above for the paired tests on them.\n\n" + "\n".join(lines),
                icon="📏",
            )


def evaluation_comparison_ui(records: Sequence[compare.RunRecord], name: str) -> None:
    """Draws the runs on one shared evaluation: the table, paired tests, ROC and decision curves."""
    runs = [state.run_store().get(record.run_id) for record in records]
    evaluations = [next(item for item in current_evaluations(run) if item["name"] == name) for run in runs]
    st.subheader(f"On the evaluation {name}")
    table = {}
    for record, evaluation in zip(records, evaluations):
        numbers = evaluation_figures(evaluation)
        column = {}
        for key, label in GAP_METRICS:
            entry = numbers.get(key) or {}
            value = entry.get("value")
            text = "—" if value is None else f"{value:.3f}"
            if entry.get("low") is not None:
                text += f" [{entry['low']:.3f}, {entry['high']:.3f}]"
            column[label] = text
        column["Images"] = str(evaluation["n_images"])
        column["Operating point"] = f"{evaluation['threshold']:.3f} ({evaluation['scale']})" if len(evaluation["class_names"]) == 2 else "argmax"
        table[record.label] = column
    st.dataframe(pd.DataFrame(table), width="stretch")
    st.caption("Each run at its own operating point; AUC with its patient-bootstrap 95 % interval.")
    pair = pair_selection_ui(records)
    if pair is not None:
        first, second = pair
        index_a, index_b = records.index(first), records.index(second)
        try:
            result = paired.paired_evaluation_tests(runs[index_a], evaluations[index_a], runs[index_b], evaluations[index_b])
        except ValueError as error:
            st.warning(str(error), icon="🚫")
        else:
            st.markdown(f"**A = {first.label}, B = {second.label}**, paired on the {result['n_images']} images both scored.")
            for sentence in result["verdicts"]:
                st.info(sentence)
    left, right = st.columns(2)
    with left:
        roc_curves = {record.label: (evaluation.get("roc") or {}).get("pneumonia") for record, evaluation in zip(records, evaluations)}
        roc_curves = {label: curve for label, curve in roc_curves.items() if curve and curve.get("fpr")}
        if roc_curves:
            st.plotly_chart(figures.roc_figure(roc_curves, title=f"ROC on {name}"), key="compare_evaluation_roc")
    with right:
        decision = {record.label: evaluation["decision_curve"] for record, evaluation in zip(records, evaluations) if evaluation.get("decision_curve")}
        if decision:
            st.plotly_chart(curves_figures.decision_curve_figure(decision, title=f"Decision curves on {name}"), key="compare_evaluation_dca")


def ensemble_ui(records: Sequence[compare.RunRecord]) -> None:
    """Draws "Combine into an ensemble": the method, the threshold rule and a name; starts the ensemble run.

    The ensemble is a run of its own: its threshold and calibration are fitted on the
    members' combined out-of-fold predictions, and Predict, evaluations and this page
    treat it as any run.
    """
    from zoidberg.config import ENSEMBLE_METHOD_HELP, ENSEMBLE_METHODS, EnsembleConfig, OperatingPointChoice
    from zoidberg.ui.widgets import show_error

    with st.expander(f"Combine these {len(records)} runs into an ensemble"):
        members = [record for record in records if record.architecture != "ensemble"]
        if len(members) < 2:
            st.caption("An ensemble combines cross-validation runs; choose at least two that are not ensembles.")
            return
        modes = {record.label_mode for record in members}
        left, middle, right = st.columns([1.2, 1.5, 2])
        binary = modes == {"binary"}
        method = left.radio("Combination", ENSEMBLE_METHODS if binary else ("mean",), key="ensemble_method", help=ENSEMBLE_METHOD_HELP)
        target = middle.number_input(
            "Target sensitivity", 0.5, 0.999, 0.95, 0.01, format="%.3f", key="ensemble_target", disabled=not binary,
            help="The threshold is the one that finds this share of pneumonia on the combined out-of-fold predictions.",
        )
        name = right.text_input("Ensemble name", value="", max_chars=80, key="ensemble_name", placeholder="optional, e.g. cnn+mobilenet")
        st.caption("Members: " + ", ".join(record.label for record in members) + ". They must come from the same data folder.")
        if st.button("🧩 Make the ensemble", key="ensemble_start", type="primary"):
            try:
                config = EnsembleConfig(
                    members=tuple(record.run_id for record in members), method=method,
                    operating_point=OperatingPointChoice("target-sensitivity", target=float(target)) if binary else OperatingPointChoice(),
                    run_name=name.strip(),
                )
                run_id, attached = state.start_or_attach("ensemble", config)
            except (ValueError, OSError) as error:
                show_error(error, "No ensemble made.")
                return
            state.select_run(run_id)
            st.success(f"Ensemble `{run_id}` {'is already being made' if attached else 'started'}: it takes seconds. "
                       "It is listed here, on Predict, and on Train, where its members and evaluations are.", icon="🧩")
            st.page_link("pages/train.py", label="Open it on the Train page", icon="🏋️")
