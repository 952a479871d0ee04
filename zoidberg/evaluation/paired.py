"""Whether two runs can be tested against each other, and the paired tests: on their folds, or on one evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from zoidberg.evaluation import significance
from zoidberg.evaluation.compare import METRIC_LABELS, PARAMETERS_ROW, TIME_ROW, RunRecord
from zoidberg.runs.store import Run

# The statistical comparison tests these fold metrics; "roc_auc" is the macro one-vs-rest
# AUC in three-class runs, so the same key works for both label modes.
TESTED_METRICS = ("roc_auc", "accuracy")


# ----------------------------------------------------------------------------- comparability


@dataclass(frozen=True)
class Comparability:
    """Whether two runs were evaluated on the same folds, and why not.

    Attributes:
        comparable: True when both folds.csv files hold the same rows.
        reasons: Plain sentences naming each difference (empty when comparable).
        notes: Facts worth knowing even when comparable.
    """

    comparable: bool
    reasons: tuple[str, ...]
    notes: tuple[str, ...] = ()


FIX_ADVICE = (
    "To compare them statistically, re-run one of them with the same data folder, label mode, "
    "number of folds k and fold seed as the other (on the Train page), so that every image "
    "lands in the same fold."
)


def check_comparability(first: RunRecord, second: RunRecord) -> Comparability:
    """Checks that two runs used the same patient-grouped folds.

    folds.csv (path, patient, label, fold of every image) is the ground truth: the
    data fingerprint includes file times, so a copied data folder changes it without
    changing the folds. The config facts only explain a difference.

    Args:
        first: Run A.
        second: Run B.

    Returns:
        The verdict with reasons.
    """
    reasons = []
    notes = []
    fingerprint_a, fingerprint_b = first.data.get("fingerprint"), second.data.get("fingerprint")
    same_fingerprint = fingerprint_a == fingerprint_b
    if first.label_mode != second.label_mode:
        reasons.append(
            f"Different label modes: {first.label} is {first.label_mode}, {second.label} is {second.label_mode}."
        )
    if first.n_splits != second.n_splits:
        reasons.append(f"Different number of folds: k = {first.n_splits} vs k = {second.n_splits}.")
    if first.random_state != second.random_state:
        reasons.append(f"Different fold seeds: {first.random_state} vs {second.random_state}.")
    if not same_fingerprint:
        roots = (first.data.get("root"), second.data.get("root"))
        where = f" ({roots[0]} vs {roots[1]})" if roots[0] != roots[1] else ""
        detail = f"Different data: the data fingerprints differ{where}."
        if first.folds_csv is not None and first.folds_csv == second.folds_csv:
            notes.append(
                "The data fingerprints differ (file dates or location changed), but every image is in the "
                "same fold in both runs, so the comparison holds."
            )
        else:
            reasons.append(detail)
    for record in (first, second):
        if record.folds_csv is None:
            reasons.append(f"{record.label} has no folds.csv, so its fold assignment cannot be checked.")
    both_present = first.folds_csv is not None and second.folds_csv is not None
    if both_present and first.folds_csv != second.folds_csv and not reasons:
        reasons.append(
            "The fold assignments in folds.csv differ although data, label mode, k and seed match "
            "(perhaps a different version of the fold splitter or images skipped in one run)."
        )
    comparable = first.folds_csv is not None and first.folds_csv == second.folds_csv
    if comparable:
        # Identical folds.csv overrides config facts: they matched where it counts.
        return Comparability(True, (), tuple(notes))
    return Comparability(False, tuple(reasons) or ("The runs used different folds.",), tuple(notes))


@dataclass(frozen=True)
class PairedTest:
    """One corrected resampled t-test between two runs on one metric.

    Attributes:
        metric: Metric key in summary["folds"].
        label: Display name of the metric.
        result: Output of significance.corrected_resampled_ttest, or None when it could not run.
        verdict: Plain-language sentences (or why the test could not run).
    """

    metric: str
    label: str
    result: dict | None
    verdict: str


def paired_tests(first: RunRecord, second: RunRecord) -> list[PairedTest]:
    """Runs the Nadeau & Bengio corrected resampled t-test on AUC and accuracy.

    Args:
        first: Run A (differences are A minus B).
        second: Run B, on the same folds.

    Returns:
        One PairedTest per metric in TESTED_METRICS.
    """
    n_train = float(np.mean(first.summary.get("n_train_per_fold") or [0]))
    n_test = float(np.mean(first.summary.get("n_validation_per_fold") or [0]))
    tests = []
    for metric_name in TESTED_METRICS:
        # Three-class runs store the macro one-vs-rest AUC under roc_auc.
        verdict_name = "macro_auc" if metric_name == "roc_auc" and not first.is_binary else metric_name
        label = METRIC_LABELS[verdict_name]
        scores_a, scores_b = first.fold_values(metric_name), second.fold_values(metric_name)
        if any(value is None for value in scores_a + scores_b):
            tests.append(
                PairedTest(
                    metric_name,
                    label,
                    None,
                    f"Cannot test {label}: some folds have no value (a fold with one class only).",
                )
            )
            continue
        try:
            result = significance.corrected_resampled_ttest(scores_a, scores_b, n_train, n_test)
            verdict = significance.comparison_verdict(result, verdict_name, first.label, second.label)
        except ValueError as error:
            tests.append(PairedTest(metric_name, label, None, f"Cannot test {label}: {error}"))
            continue
        tests.append(PairedTest(metric_name, label, result, verdict))
    return tests


def tests_table(tests: Sequence[PairedTest]) -> pd.DataFrame:
    """Formats t-test results as a small table (one row per metric)."""
    rows = []
    for test in tests:
        result = test.result
        if result is None:
            continue
        percent = round(100 * result.get("confidence", 0.95))
        rows.append(
            {
                "metric": test.label,
                "mean difference (A − B)": f"{result['mean_difference']:+.4f}",
                f"{percent}% CI": f"[{result['ci_low']:+.4f}, {result['ci_high']:+.4f}]",
                "t": f"{result['t_statistic']:.3f}",
                "df": result["df"],
                "p": _format_p(result["p_value"]),
                "k": result["k"],
                "n train / n test": f"{result['n_train']:.0f} / {result['n_test']:.0f}",
            }
        )
    return pd.DataFrame(rows)


def _format_p(p_value: float) -> str:
    """Formats a p-value for a table."""
    return "< 0.001" if p_value < 0.001 else f"{p_value:.3f}"


# ----------------------------------------------------------------------------- on an evaluation


def shared_evaluation_names(runs: Sequence[Run]) -> list[str]:
    """The evaluation names every one of the runs has (the runs' own test splits included as "test")."""
    names = None
    for run in runs:
        own = {item.get("name") for item in run.evaluations()}
        names = own if names is None else names & own
    return sorted(names or [], key=lambda name: (name == "test", name))


def _scores_and_decisions(run: Run, evaluation: dict) -> dict:
    """{path: (label, P(pneumonia) on the run's scale, decision)} of one evaluation, at its current operating point."""
    from zoidberg.evaluation.stored import read_predictions

    stored = read_predictions(run, evaluation["name"])
    probabilities = stored["calibrated"] if evaluation.get("scale") == "calibrated" and stored["calibrated"] is not None else stored["raw"]
    if len(stored["class_names"]) == 2:
        scores = probabilities[:, 1]
        decisions = (scores >= evaluation["threshold"]).astype(int)
    else:
        scores = probabilities.max(axis=1)
        decisions = probabilities.argmax(axis=1)
    return {path: (int(label), float(score), int(decision)) for path, label, score, decision in zip(stored["paths"], stored["labels"], scores, decisions)}


def paired_evaluation_tests(run_a: Run, evaluation_a: dict, run_b: Run, evaluation_b: dict) -> dict:
    """Paired tests of two runs on the same images of one evaluation: DeLong for the AUC, McNemar for accuracy.

    Both runs are taken at their own operating points. Only the images both evaluations
    scored count, matched by path.

    Returns:
        {"n_images", "only_a", "only_b", "delong" (binary runs, both classes present) or None,
        "mcnemar", "verdicts": [sentences]}.

    Raises:
        ValueError: When the two evaluations give an image different labels, or share none.
    """
    from zoidberg.evaluation.statistics import delong_test, mcnemar_test

    first, second = _scores_and_decisions(run_a, evaluation_a), _scores_and_decisions(run_b, evaluation_b)
    shared = sorted(set(first) & set(second))
    if not shared:
        raise ValueError(f"The two evaluations named {evaluation_a['name']} share no image: they are not the same folder.")
    conflicting = [path for path in shared if first[path][0] != second[path][0]]
    if conflicting:
        raise ValueError(f"The two evaluations label {len(conflicting)} image(s) differently (e.g. {conflicting[0]}): not the same data.")
    labels = np.array([first[path][0] for path in shared])
    result = {"n_images": len(shared), "only_a": len(set(first) - set(second)), "only_b": len(set(second) - set(first)), "delong": None}
    binary = len(evaluation_a.get("class_names") or []) == 2
    if binary and len(np.unique(labels)) == 2:
        result["delong"] = delong_test(labels, np.array([first[path][1] for path in shared]), np.array([second[path][1] for path in shared]))
    result["mcnemar"] = mcnemar_test(labels, np.array([first[path][2] for path in shared]), np.array([second[path][2] for path in shared]))
    result["verdicts"] = _paired_verdicts(result)
    return result


def _paired_verdicts(result: dict) -> list[str]:
    """Plain sentences for the DeLong and McNemar results."""
    sentences = []
    delong = result.get("delong")
    if delong:
        significant = delong["p_value"] < 0.05
        sentences.append(
            f"AUC: A {delong['auc_a']:.3f} vs B {delong['auc_b']:.3f}, difference {delong['difference']:+.3f} "
            f"(95% CI {delong['ci_low']:+.3f} to {delong['ci_high']:+.3f}), DeLong p = {delong['p_value']:.3g}: "
            + ("the ranking differs beyond chance on these images." if significant else "these images cannot tell the two rankings apart.")
        )
    mcnemar = result["mcnemar"]
    sentences.append(
        f"Accuracy: A {mcnemar['accuracy_a']:.3f} vs B {mcnemar['accuracy_b']:.3f}; A alone right on {mcnemar['a_only_correct']}, "
        f"B alone on {mcnemar['b_only_correct']} images, McNemar p = {mcnemar['p_value']:.3g}: "
        + ("the decisions differ beyond chance." if mcnemar["p_value"] < 0.05 else "no difference beyond chance.")
    )
    return sentences


def supported_best(records: Sequence[RunRecord], best: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Keeps a metric row's "best" mark only where a paired test supports it, and says why where none can.

    A mean ± std over a few folds names no winner by itself: the marks of the metric rows
    stay only where the corrected resampled t-test finds the difference (p < 0.05), on the
    winner's side. The cost rows (parameters, training time) keep theirs: they are counted,
    not estimated.

    Args:
        records: The compared runs, as summary_table got them.
        best: summary_table's marks.

    Returns:
        (the marks to draw, one sentence on what they mean or why there are none).
    """
    supported = best.copy()
    metric_rows = [row for row in best.index if row not in (PARAMETERS_ROW, TIME_ROW)]
    supported.loc[metric_rows, :] = False
    if len(records) != 2:
        return supported, ("No winner is marked on the metrics: a paired test compares two runs; choose two, or test a "
                           "pair under \"Is the difference real?\".")
    first, second = records
    check = check_comparability(first, second)
    if not check.comparable:
        return supported, "No winner is marked on the metrics: no paired test is possible. " + " ".join(check.reasons)
    found = []
    for test in paired_tests(first, second):
        if test.result is None or test.result["p_value"] >= 0.05:
            continue
        row = METRIC_LABELS.get(test.metric, test.metric)
        if row in supported.index:
            supported.loc[row, (first if test.result["mean_difference"] > 0 else second).label] = True
            found.append(test.label)
    if found:
        return supported, (f"Marked: where the corrected resampled t-test finds a difference (p < 0.05): {', '.join(found)}. "
                           "The other metrics are not tested, or differ within fold noise.")
    return supported, ("No winner is marked on the metrics: the corrected resampled t-test finds no difference beyond fold "
                       "noise in AUC or accuracy, and the other metrics are not tested.")
