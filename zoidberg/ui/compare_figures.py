"""Plotly figures of the Compare page (pure functions of run records)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from zoidberg.evaluation.compare import CURVE_LABELS, METRIC_LABELS, RunRecord, aggregate_history
from zoidberg.evaluation.metrics import is_finite_number
from zoidberg.ui.figures import color_for, nearest_threshold_point


def _layout(figure: go.Figure, title: str, height: int) -> go.Figure:
    """Applies the shared compact layout."""
    # The title sits at the top of the canvas and the legend just above the plot area,
    # so that the two never overlap.
    figure.update_layout(
        title=dict(text=title, y=0.99, yref="container", yanchor="top") if title else None,
        height=height,
        margin=dict(l=10, r=10, t=90 if title else 40, b=10),
        legend=dict(orientation="h", yanchor="bottom", y=1.01, xanchor="left", x=0),
    )
    return figure


def fold_scores_figure(records: Sequence[RunRecord], metric_names: Sequence[str], columns: int = 4) -> go.Figure:
    """Strip plots of each fold's score, one panel per metric and one colour per run.

    Each run gets its fold points (spread horizontally) and a bar of its colour at the mean.

    Args:
        records: Runs to compare.
        metric_names: Metrics to plot (keys of summary["folds"][i]).
        columns: Panels per row.

    Returns:
        The figure.
    """
    metric_names = list(metric_names) or ["accuracy"]
    columns = max(1, min(columns, len(metric_names)))
    rows = math.ceil(len(metric_names) / columns)
    figure = make_subplots(
        rows=rows,
        cols=columns,
        subplot_titles=[METRIC_LABELS.get(name, name) for name in metric_names],
        horizontal_spacing=0.06,
        vertical_spacing=0.16 if rows > 1 else 0.1,
    )
    labels = [record.label for record in records]
    for panel, metric_name in enumerate(metric_names):
        row, column = panel // columns + 1, panel % columns + 1
        for index, record in enumerate(records):
            # Three-class folds store roc_auc too (the macro AUC); only plot what the table shows.
            if metric_name not in record.metric_names:
                continue
            values = record.fold_values(metric_name)
            points = [(fold + 1, value) for fold, value in enumerate(values) if value is not None]
            if not points:
                continue
            offsets = np.linspace(-0.15, 0.15, len(points)) if len(points) > 1 else np.zeros(1)
            figure.add_trace(
                go.Scatter(
                    x=[index + offset for offset in offsets],
                    y=[value for _, value in points],
                    mode="markers",
                    marker=dict(color=color_for(index), size=9, line=dict(width=1, color="white")),
                    name=record.label,
                    legendgroup=record.label,
                    showlegend=panel == 0,
                    customdata=[fold for fold, _ in points],
                    hovertemplate=f"{record.label}<br>fold %{{customdata}}: %{{y:.3f}}<extra></extra>",
                ),
                row=row,
                col=column,
            )
            mean = float(np.mean([value for _, value in points]))
            figure.add_trace(
                go.Scatter(
                    x=[index - 0.28, index + 0.28],
                    y=[mean, mean],
                    mode="lines",
                    line=dict(color=color_for(index), width=3),
                    showlegend=False,
                    legendgroup=record.label,
                    hovertemplate=f"{record.label} mean: {mean:.3f}<extra></extra>",
                ),
                row=row,
                col=column,
            )
        figure.update_xaxes(
            tickvals=list(range(len(labels))),
            ticktext=labels,
            range=[-0.6, len(labels) - 0.4],
            row=row,
            col=column,
            showticklabels=False,
        )
    figure = _layout(figure, "", 280 * rows + 100)
    # Subplot titles sit above each panel, so the legend goes to the very top of the canvas.
    figure.update_layout(margin=dict(t=95), legend=dict(y=1.0, yanchor="top", yref="container"))
    return figure


def _with_alpha(hex_color: str, alpha: float) -> str:
    """Turns "#RRGGBB" into an rgba() string."""
    red, green, blue = (int(hex_color[position : position + 2], 16) for position in (1, 3, 5))
    return f"rgba({red},{green},{blue},{alpha})"


def validation_curves_figure(
    records: Sequence[RunRecord], key: str, *, band: str = "minmax", show_training: bool = False
) -> go.Figure:
    """Overlays the fold-mean validation curve of each run with a band.

    Args:
        records: Runs to compare.
        key: History key to draw, e.g. "val_loss" or "val_auc".
        band: "minmax" (range over folds) or "std" (mean ± one standard deviation).
        show_training: Also draw the matching training curve (dotted).

    Returns:
        The figure; runs without the key are skipped.
    """
    figure = go.Figure()
    training_key = key[4:] if key.startswith("val_") else None
    for index, record in enumerate(records):
        color = color_for(index)
        curve = aggregate_history(record.histories, key)
        if not curve["epoch"]:
            continue
        if band == "std":
            low = [mean - std for mean, std in zip(curve["mean"], curve["std"], strict=True)]
            high = [mean + std for mean, std in zip(curve["mean"], curve["std"], strict=True)]
        else:
            low, high = curve["low"], curve["high"]
        figure.add_trace(
            go.Scatter(
                x=curve["epoch"] + curve["epoch"][::-1],
                y=high + low[::-1],
                fill="toself",
                mode="lines",
                fillcolor=_with_alpha(color, 0.18),
                line=dict(width=0),
                hoverinfo="skip",
                showlegend=False,
                legendgroup=record.label,
            )
        )
        figure.add_trace(
            go.Scatter(
                x=curve["epoch"],
                y=curve["mean"],
                mode="lines+markers",
                name=record.label,
                legendgroup=record.label,
                line=dict(color=color, width=2.5),
                customdata=list(zip(curve["low"], curve["high"], curve["count"], strict=True)),
                hovertemplate=(
                    f"{record.label}<br>epoch %{{x}}: mean %{{y:.4f}}<br>folds min %{{customdata[0]:.4f}}, "
                    "max %{customdata[1]:.4f}<br>%{customdata[2]} fold(s) reached this epoch<extra></extra>"
                ),
            )
        )
        if show_training and training_key:
            training = aggregate_history(record.histories, training_key)
            if training["epoch"]:
                figure.add_trace(
                    go.Scatter(
                        x=training["epoch"],
                        y=training["mean"],
                        mode="lines",
                        name=f"{record.label} (training)",
                        legendgroup=record.label,
                        line=dict(color=color, width=1.5, dash="dot"),
                        hovertemplate=f"{record.label} training<br>epoch %{{x}}: %{{y:.4f}}<extra></extra>",
                    )
                )
    band_text = "range over folds" if band != "std" else "± 1 std over folds"
    figure.update_xaxes(title="epoch", dtick=1 if _max_epoch(records, key) <= 20 else None)
    figure.update_yaxes(title=CURVE_LABELS.get(key, key))
    return _layout(figure, f"{CURVE_LABELS.get(key, key)}: mean over folds, band = {band_text}", 380)


def _max_epoch(records: Sequence[RunRecord], key: str) -> int:
    """Longest history among runs for a key."""
    return max((len(history.get(key, [])) for record in records for history in record.histories), default=0)



_CLASS_DASHES = ("solid", "dash", "dot", "dashdot")


def roc_overlay_figure(records: Sequence[RunRecord]) -> go.Figure:
    """Out-of-fold ROC curves of every run, one colour per run.

    Binary runs draw the pneumonia curve with a marker at the run's threshold;
    three-class runs draw one one-vs-rest curve per class, told apart by dash style.

    Args:
        records: Runs to compare.

    Returns:
        The figure.
    """
    figure = go.Figure()
    figure.add_trace(
        go.Scatter(
            x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dot", color="gray"), name="chance", hoverinfo="skip"
        )
    )
    for index, record in enumerate(records):
        curves = record.summary.get("roc") or {}
        for position, (class_name, curve) in enumerate(curves.items()):
            if not curve or not curve.get("fpr"):
                continue
            auc = curve.get("auc")
            auc_text = f" (AUC {auc:.3f})" if is_finite_number(auc) else ""
            name = f"{record.label}{auc_text}" if record.is_binary else f"{record.label} · {class_name}{auc_text}"
            figure.add_trace(
                go.Scatter(
                    x=curve["fpr"],
                    y=curve["tpr"],
                    mode="lines",
                    name=name,
                    legendgroup=record.label,
                    line=dict(color=color_for(index), width=2.2, dash=_CLASS_DASHES[position % len(_CLASS_DASHES)]),
                    customdata=curve.get("thresholds"),
                    hovertemplate=(
                        f"{name}<br>FPR %{{x:.3f}}, TPR %{{y:.3f}}<br>threshold %{{customdata:.3f}}<extra></extra>"
                    ),
                )
            )
            point = nearest_threshold_point(curve, record.summary.get("threshold")) if record.is_binary else None
            if point is not None:
                figure.add_trace(
                    go.Scatter(
                        x=[point[0]],
                        y=[point[1]],
                        mode="markers",
                        legendgroup=record.label,
                        showlegend=False,
                        marker=dict(color=color_for(index), size=12, symbol="x"),
                        hovertemplate=(
                            f"{record.label} threshold {record.summary['threshold']:.3f}<br>"
                            "FPR %{x:.3f}, TPR %{y:.3f}<extra></extra>"
                        ),
                    )
                )
    figure.update_xaxes(title="False positive rate (1 − specificity)", range=[0, 1])
    figure.update_yaxes(title="True positive rate (sensitivity)", range=[0, 1.02])
    figure = _layout(figure, "Out-of-fold ROC (× = the run's decision threshold)", 460)
    figure.update_layout(legend=dict(orientation="v", yanchor="bottom", y=0.02, xanchor="right", x=0.98))
    return figure


def training_time_figure(records: Sequence[RunRecord]) -> go.Figure:
    """Grouped bars of training seconds per fold, one colour per run."""
    figure = go.Figure()
    for index, record in enumerate(records):
        values = record.fold_values("train_seconds")
        folds = [f"fold {fold + 1}" for fold, value in enumerate(values) if value is not None]
        seconds = [value for value in values if value is not None]
        figure.add_trace(
            go.Bar(
                x=folds,
                y=seconds,
                name=record.label,
                marker_color=color_for(index),
                text=[f"{value:.0f} s" if value >= 10 else f"{value:.1f} s" for value in seconds],
                textposition="auto",
                hovertemplate=f"{record.label}<br>%{{x}}: %{{y:.1f}} s<extra></extra>",
            )
        )
    figure.update_yaxes(title="seconds")
    figure.update_layout(barmode="group")
    return _layout(figure, "Training time per fold", 340)


def parameters_figure(records: Sequence[RunRecord]) -> go.Figure:
    """Horizontal bars of each run's parameter count (trainable part shaded)."""
    figure = go.Figure()
    labels, totals, trainables, colors = [], [], [], []
    for index, record in enumerate(records):
        parameters = record.summary.get("parameters") or {}
        total = parameters.get("total") if isinstance(parameters, Mapping) else None
        if not is_finite_number(total):
            continue
        labels.append(record.label)
        totals.append(int(total))
        trainable = parameters.get("trainable")
        trainables.append(int(trainable) if is_finite_number(trainable) else int(total))
        colors.append(color_for(index))
    figure.add_trace(
        go.Bar(
            y=labels,
            x=totals,
            orientation="h",
            marker_color=colors,
            text=[f"{value:,}" for value in totals],
            textposition="auto",
            name="total",
            customdata=trainables,
            hovertemplate="%{y}<br>%{x:,} parameters<br>%{customdata:,} trainable<extra></extra>",
        )
    )
    figure.update_xaxes(title="parameters")
    figure.update_yaxes(autorange="reversed")
    figure.update_layout(showlegend=False)
    return _layout(figure, "Model size (parameters)", 120 + 45 * max(1, len(labels)))
