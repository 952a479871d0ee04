"""A finished run's results on the page: mean ± std cards and tables, out-of-fold confusion matrix and ROC, the old test block."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import streamlit as st

from zoidberg.evaluation.metrics import SHORT_LABELS, scalar_or_missing
from zoidberg.runs.progress import format_duration
from zoidberg.ui import figures
from zoidberg.ui.widgets import format_number, metrics_table

# Summary metrics shown as cards, in this order, when the run has them.
HEADLINE_METRICS = (
    "roc_auc",
    "macro_auc",
    "accuracy",
    "sensitivity",
    "specificity",
    "f1",
    "balanced_accuracy",
    "macro_f1",
)
METRIC_LABELS = SHORT_LABELS
# Multiclass results repeat macro_auc as roc_auc for cross-mode comparisons; tables show it once.
DUPLICATE_KEYS = {"roc_auc": "macro_auc"}
# Summary entries that are bookkeeping rather than model quality.
NON_METRIC_KEYS = ("n", "threshold", "train_seconds")


def fold_metrics_frame(fold_metrics: Sequence[dict]) -> pd.DataFrame:
    """Tabulates finished folds' metrics (as fold_k/metrics.json holds them).

    Args:
        fold_metrics: Payloads of fold_k/metrics.json.

    Returns:
        One row per fold with its scalar metrics, epochs and training time.
    """
    rows = []
    for payload in fold_metrics:
        metrics = payload.get("metrics", {})
        row = {"fold": payload.get("fold")}
        row.update({METRIC_LABELS.get(key, key): metrics[key] for key in shown_keys(metrics)})
        row["images (val)"] = payload.get("n_validation")
        row["epochs"] = payload.get("epochs_trained")
        row["train time"] = format_duration(payload.get("train_seconds"))
        rows.append(row)
    return pd.DataFrame(rows)


def shown_keys(metrics: dict) -> list[str]:
    """Returns the scalar metric keys worth a column, without bookkeeping or duplicates.

    Args:
        metrics: One metrics dict (or a mean_std dict).

    Returns:
        Keys in their original order.
    """
    return [
        key
        for key, value in metrics.items()
        if key not in NON_METRIC_KEYS
        and not (key in DUPLICATE_KEYS and DUPLICATE_KEYS[key] in metrics)
        and ((isinstance(value, dict) and "mean" in value) or scalar_or_missing(value))
    ]


def summary_frame(summary: dict) -> pd.DataFrame:
    """Tabulates mean ± std of each metric across folds.

    Args:
        summary: summary.json.

    Returns:
        Rows metric, mean, std, per-fold values.
    """
    rows = []
    mean_std = summary.get("mean_std", {})
    for key in shown_keys(mean_std):
        entry = mean_std[key]
        values = entry.get("values") or []
        rows.append(
            {
                "metric": METRIC_LABELS.get(key, key),
                "mean": entry.get("mean"),
                "std": entry.get("std"),
                "mean ± std": f"{format_number(entry.get('mean'))} ± {format_number(entry.get('std'))}",
                "per fold": ", ".join(format_number(value) for value in values),
            }
        )
    return pd.DataFrame(rows)


def per_fold_frame(summary: dict) -> pd.DataFrame:
    """Tabulates each fold's metrics at the run's threshold.

    Args:
        summary: summary.json.

    Returns:
        One row per fold.
    """
    rows = []
    for index, fold in enumerate(summary.get("folds", []), start=1):
        row = {"fold": index}
        row.update({METRIC_LABELS.get(key, key): fold[key] for key in shown_keys(fold)})
        row["images (val)"] = fold.get("n")
        row["train time"] = format_duration(fold.get("train_seconds"))
        rows.append(row)
    return pd.DataFrame(rows)


def per_class_frame(result: dict) -> pd.DataFrame:
    """Tabulates per-class metrics of a multiclass result.

    Args:
        result: A multiclass metrics dict with "per_class".

    Returns:
        One row per class.
    """
    return pd.DataFrame([{"class": name, **values} for name, values in (result.get("per_class") or {}).items()])


def summary_block(summary: dict, has_test_evaluation: bool = False) -> None:
    """Draws mean ± std cards, tables, the confusion matrix, the ROC curve and test metrics."""
    mean_std = summary.get("mean_std", {})
    class_names = summary.get("class_names", [])
    binary = len(class_names) == 2
    if summary.get("adaptation"):
        st.markdown(f"##### The site's films, cross-fitted: mean ± std over {len(summary.get('folds', []))} parts")
    else:
        st.markdown(f"##### Cross-validation: mean ± std over {len(summary.get('folds', []))} folds")
    cards = [key for key in HEADLINE_METRICS if key in shown_keys(mean_std)][:5]
    for column, key in zip(st.columns(len(cards) or 1), cards):
        entry = mean_std[key]
        column.metric(
            METRIC_LABELS.get(key, key),
            format_number(entry.get("mean")),
            f"± {format_number(entry.get('std'))}",
            delta_color="off",
            delta_arrow="off",
            border=True,
        )
    threshold_text = (
        f"Decision threshold {format_number(summary.get('threshold'))} ({summary.get('operating_point') or summary.get('threshold_method')}, "
        f"{summary.get('probabilities', 'raw')} probabilities, chosen on out-of-fold predictions)."
        if binary
        else "Prediction: the most probable class (argmax)."
    )
    st.caption(threshold_text)
    summary_tab, folds_tab = st.tabs(["Mean ± std", "Per fold"])
    with summary_tab:
        st.dataframe(summary_frame(summary)[["metric", "mean ± std", "per fold"]], hide_index=True, width="stretch")
    with folds_tab:
        metrics_table(per_fold_frame(summary))
    _out_of_fold_block(summary, class_names, binary)
    # Runs made before evaluations existed keep their test split in the summary only.
    if summary.get("test") and not has_test_evaluation:
        _test_block(summary["test"], summary, class_names, binary)


def _out_of_fold_block(summary: dict, class_names: Sequence[str], binary: bool) -> None:
    """Draws the out-of-fold confusion matrix and ROC curve(s)."""
    out_of_fold = summary.get("out_of_fold") or {}
    st.markdown("##### Out-of-fold predictions (every image scored by the fold model that never saw it)")
    left, right = st.columns(2)
    with left:
        if out_of_fold.get("confusion_matrix"):
            st.plotly_chart(
                figures.confusion_matrix_figure(out_of_fold["confusion_matrix"], class_names, title="Confusion matrix")
            )
    with right:
        _roc_chart(summary.get("roc") or {}, summary.get("threshold") if binary else None, "ROC curve")
        if binary:
            st.caption(
                "The pooled out-of-fold AUC ranks all images together, so it can sit below the mean per-fold AUC "
                "when the fold models score on different scales. ✕ marks the decision threshold."
            )
    if not binary and out_of_fold.get("per_class"):
        st.markdown("**Per class (one vs rest)**")
        metrics_table(per_class_frame(out_of_fold))


def _roc_chart(curves: dict, threshold: float | None, title: str) -> None:
    """Draws ROC curves with the run's threshold marked on binary ones."""
    if not any(curve.get("fpr") for curve in curves.values()):
        st.caption("No ROC curve: the predictions hold one class only.")
        return
    points = {}
    if threshold is not None:
        for label, curve in curves.items():
            point = figures.nearest_threshold_point(curve, threshold)
            if point:
                points[label] = point
    st.plotly_chart(figures.roc_figure(curves, threshold_points=points, title=title))


def _test_block(test: dict, summary: dict, class_names: Sequence[str], binary: bool) -> None:
    """Draws the held-out test split's metrics of the fold ensemble."""
    st.markdown(
        f"##### Held-out test split ({test.get('n', '?')} images, mean of the {len(summary.get('folds', []))} fold models)"
    )
    cards = [key for key in HEADLINE_METRICS if key in shown_keys(test) and test.get(key) is not None][:5]
    for column, key in zip(st.columns(len(cards) or 1), cards):
        column.metric(METRIC_LABELS.get(key, key), format_number(test.get(key)), border=True)
    left, right = st.columns(2)
    with left:
        if test.get("confusion_matrix"):
            st.plotly_chart(
                figures.confusion_matrix_figure(test["confusion_matrix"], class_names, title="Test confusion matrix")
            )
    with right:
        _roc_chart(test.get("roc") or {}, summary.get("threshold") if binary else None, "Test ROC curve")
    if not binary and test.get("per_class"):
        metrics_table(per_class_frame(test))

