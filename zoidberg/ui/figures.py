"""Plotly figure builders shared by the dashboard pages (pure functions of engine data)."""

from __future__ import annotations

from typing import Mapping, Sequence

import plotly.graph_objects as go

# One colour per fold (or run); Plotly's qualitative palette, readable on dark and light themes.
PALETTE = ("#636EFA", "#EF553B", "#00CC96", "#AB63FA", "#FFA15A", "#19D3F3", "#FF6692", "#B6E880", "#FF97FF", "#FECB52")


def color_for(index: int) -> str:
    """Returns the palette colour of item `index` (cycling)."""
    return PALETTE[index % len(PALETTE)]


def confusion_matrix_figure(matrix: Sequence[Sequence[int]], class_names: Sequence[str], title: str = "") -> go.Figure:
    """Heatmap of a confusion matrix with counts and row percentages.

    Args:
        matrix: C×C counts, rows are true classes, columns predicted classes.
        class_names: Class names in order.
        title: Figure title.
    """
    rows = [list(map(int, row)) for row in matrix]
    text = []
    for row in rows:
        total = sum(row) or 1
        text.append([f"{count}<br>({count / total:.0%})" for count in row])
    figure = go.Figure(
        go.Heatmap(
            z=rows,
            x=[f"pred {name}" for name in class_names],
            y=[f"true {name}" for name in class_names],
            text=text,
            texttemplate="%{text}",
            colorscale="Blues",
            showscale=False,
            hovertemplate="%{y} → %{x}: %{z}<extra></extra>",
        )
    )
    figure.update_yaxes(autorange="reversed")
    figure.update_layout(title=title, height=320, margin=dict(l=10, r=10, t=40 if title else 10, b=10))
    return figure


def roc_figure(
    curves: Mapping[str, Mapping[str, Sequence[float]]],
    *,
    threshold_points: Mapping[str, tuple[float, float, float]] | None = None,
    title: str = "",
) -> go.Figure:
    """Overlaid ROC curves.

    Args:
        curves: {label: {"fpr": [...], "tpr": [...], "auc": float}}.
        threshold_points: {label: (fpr, tpr, threshold)} markers for chosen thresholds.
        title: Figure title.
    """
    figure = go.Figure()
    figure.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dot", color="gray"), name="chance", hoverinfo="skip"))
    for index, (label, curve) in enumerate(curves.items()):
        auc = curve.get("auc")
        name = f"{label} (AUC {auc:.3f})" if isinstance(auc, (int, float)) else label
        figure.add_trace(go.Scatter(x=list(curve.get("fpr", [])), y=list(curve.get("tpr", [])), mode="lines", name=name, line=dict(color=color_for(index), width=2)))
        if threshold_points and label in threshold_points:
            fpr, tpr, threshold = threshold_points[label]
            figure.add_trace(
                go.Scatter(
                    x=[fpr], y=[tpr], mode="markers", marker=dict(size=11, color=color_for(index), symbol="x"),
                    name=f"{label} threshold {threshold:.2f}", hovertemplate=f"threshold {threshold:.3f}<br>FPR %{{x:.3f}}, TPR %{{y:.3f}}<extra></extra>",
                )
            )
    figure.update_layout(
        title=title, height=380, xaxis_title="False positive rate (1 − specificity)", yaxis_title="True positive rate (sensitivity)",
        xaxis=dict(range=[0, 1]), yaxis=dict(range=[0, 1.02]), legend=dict(yanchor="bottom", y=0.02, xanchor="right", x=0.98),
        margin=dict(l=10, r=10, t=40 if title else 10, b=10),
    )
    return figure
