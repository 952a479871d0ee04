"""Compare page: finished cross-validation runs side by side, with a corrected resampled t-test."""

from __future__ import annotations

from collections.abc import Sequence

import streamlit as st

from zoidberg.runstore import Run, RunStore
from zoidberg.ui import compare_figures as cf
from zoidberg.ui.figures import confusion_matrix_figure

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


def finished_records(runs: Sequence[Run]) -> tuple[list[cf.RunRecord], list[Run]]:
    """Splits runs into finished ones (with a summary) and the others.

    Args:
        runs: Cross-validation runs, newest first.

    Returns:
        (records of completed runs, runs without a summary).
    """
    records, unfinished = [], []
    for run in runs:
        record = cf.load_run_record(run) if run.state == "completed" else None
        if record is None:
            unfinished.append(run)
        else:
            records.append(record)
    return records, unfinished


def run_selection_ui(records: Sequence[cf.RunRecord], labels: dict[str, str]) -> list[str]:
    """Draws the run multiselect; the two newest completed runs are preselected.

    Args:
        records: Finished runs, newest first.
        labels: {run id: picker label}.

    Returns:
        The chosen run ids, in the order chosen.
    """
    ids = [record.run_id for record in records]
    return st.multiselect(
        "Runs to compare",
        ids,
        default=ids[:2],
        format_func=lambda run_id: labels.get(run_id, run_id),
        key="compare_runs",
        help=(
            "Finished cross-validation runs, newest first: name · architecture · label mode · image size · k · "
            "date · state."
        ),
    )


def pair_selection_ui(records: Sequence[cf.RunRecord]) -> tuple[cf.RunRecord, cf.RunRecord] | None:
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


def summary_table_ui(records: Sequence[cf.RunRecord]) -> None:
    """Draws the mean ± std table with the best value of each row highlighted."""
    text, best = cf.summary_table(records)
    styled = text.style.apply(lambda _: best.replace({True: BEST_CELL_STYLE, False: ""}), axis=None)
    st.dataframe(styled, width="stretch", height=min(38 + 35 * len(text), 640))
    st.caption(
        "Mean ± standard deviation over folds, each run at its own decision threshold (last row). "
        "Highlighted: the best run of each row (highest; lowest for parameters and training time). "
        "— = not defined for that run's label mode."
    )


def label_mode_note_ui(records: Sequence[cf.RunRecord]) -> None:
    """Says what can and cannot be compared when label modes are mixed."""
    modes = sorted({record.label_mode for record in records})
    if len(modes) < 2:
        return
    shared = [cf.METRIC_LABELS[name] for name in cf.shared_metrics(records)]
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


def statistical_comparison_ui(records: Sequence[cf.RunRecord]) -> None:
    """Draws the comparability check and, on the same folds, the corrected t-tests."""
    st.subheader("Is the difference real?")
    pair = pair_selection_ui(records)
    if pair is None:
        return
    first, second = pair
    check = cf.check_comparability(first, second)
    for note in check.notes:
        st.info(note)
    if not check.comparable:
        st.warning(
            f"**{first.label} and {second.label} are not comparable with a paired test**: they were not "
            "evaluated on the same folds.\n\n"
            + "\n".join(f"- {reason}" for reason in check.reasons)
            + f"\n\n{cf.FIX_ADVICE}",
            icon="🚫",
        )
    else:
        st.success(
            f"Same folds: {first.label} and {second.label} were evaluated on identical patient-grouped folds "
            f"(folds.csv matches: k = {first.n_splits}, seed {first.random_state}). The paired test applies.",
            icon="✅",
        )
        tests = cf.paired_tests(first, second)
        table = cf.tests_table(tests)
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


def fold_scores_ui(records: Sequence[cf.RunRecord]) -> None:
    """Draws per-fold strip plots of every shown metric."""
    names, _ = cf.table_metrics(records)
    st.plotly_chart(cf.fold_scores_figure(records, names), key="compare_fold_scores")
    st.caption("Each dot is one fold's score (hover for the fold number); the bar is the mean over folds.")


def validation_curves_ui(records: Sequence[cf.RunRecord]) -> None:
    """Draws the overlaid validation curves with their controls."""
    keys = cf.available_curve_keys(records)
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
            cf.validation_curves_figure(records, key, band=band, show_training=show_training),
            key=f"compare_curve_{key}",
        )


def confusion_matrices_ui(records: Sequence[cf.RunRecord]) -> None:
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


def costs_ui(records: Sequence[cf.RunRecord]) -> None:
    """Draws training time per fold and parameter counts."""
    left, right = st.columns([3, 2])
    with left:
        st.plotly_chart(cf.training_time_figure(records), key="compare_time")
    with right:
        st.plotly_chart(cf.parameters_figure(records), key="compare_parameters")


def main() -> None:
    """Draws the page."""
    st.title("Compare runs")
    st.caption(
        "Put finished cross-validation runs side by side: metrics, per-fold spread, learning curves, ROC, "
        "confusion matrices and cost, and test whether a difference is more than fold-to-fold noise."
    )
    try:
        runs = RunStore().list_runs(kind="cv")
    except OSError as error:
        st.error(f"Cannot read the runs folder: {error.strerror or error}.")
        return
    records, unfinished = finished_records(runs)
    if len(records) < 2:
        st.info(
            f"Comparing needs at least two completed cross-validation runs; there "
            f"{'is' if len(records) == 1 else 'are'} "
            f"{len(records)}. Go to **Train**, run two configurations on the same data with the same k and seed "
            "(for example the demo dataset with two architectures), then come back here.",
            icon="📊",
        )
        return
    labels = {record.run_id: cf.record_choice_label(record) for record in records}
    chosen = run_selection_ui(records, labels)
    if unfinished:
        st.caption(
            f"{len(unfinished)} run(s) not listed because they have not completed (running, stopped, failed or "
            "interrupted): a comparison needs the summary written when all folds finish."
        )
    by_id = {record.run_id: record for record in records}
    selected = cf.with_unique_names([by_id[run_id] for run_id in chosen if run_id in by_id])
    if len(selected) < 2:
        st.info("Choose at least two runs to compare.")
        return
    label_mode_note_ui(selected)
    st.subheader("Summary")
    summary_table_ui(selected)
    differences = cf.config_differences(selected)
    with st.expander(
        f"What differs between these runs ({len(differences)} setting{'s' if len(differences) != 1 else ''})"
    ):
        if differences.empty:
            st.write("The configurations are identical.")
        else:
            st.dataframe(differences, width="stretch")
    statistical_comparison_ui(selected)
    st.subheader("Details")
    tabs = st.tabs(["Per-fold scores", "Validation curves", "ROC curves", "Confusion matrices", "Time & size"])
    with tabs[0]:
        fold_scores_ui(selected)
    with tabs[1]:
        validation_curves_ui(selected)
    with tabs[2]:
        st.plotly_chart(cf.roc_overlay_figure(selected), key="compare_roc")
    with tabs[3]:
        confusion_matrices_ui(selected)
    with tabs[4]:
        costs_ui(selected)


main()
