"""Plotly figure builders shared by the dashboard pages (pure functions of engine data)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

from zoidberg.inference.decisions import Decision
from zoidberg.tuning.config import OBJECTIVE_LABELS
from zoidberg.tuning.results import best_row, hyperparameter_names
from zoidberg.tuning.space import Dimension, format_value

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
    x_labels = [f"pred {name}" for name in class_names]
    y_labels = [f"true {name}" for name in class_names]
    figure = go.Figure(
        go.Heatmap(
            z=rows,
            x=x_labels,
            y=y_labels,
            colorscale="Blues",
            showscale=False,
            hovertemplate="%{y} → %{x}: %{z}<extra></extra>",
        )
    )
    # Per-cell annotations pick white text on dark cells and black on light ones, which a
    # single heatmap text colour cannot do.
    largest = max((count for row in rows for count in row), default=0) or 1
    for row_index, row in enumerate(rows):
        total = sum(row) or 1
        for column_index, count in enumerate(row):
            figure.add_annotation(
                x=x_labels[column_index],
                y=y_labels[row_index],
                text=f"<b>{count}</b><br>({count / total:.0%})",
                showarrow=False,
                font={"size": 14, "color": "white" if count > 0.45 * largest else "#1f2d3d"},
            )
    figure.update_yaxes(autorange="reversed")
    figure.update_layout(title=title, height=320, margin={"l": 10, "r": 10, "t": 40 if title else 10, "b": 10})
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
    figure.add_trace(
        go.Scatter(
            x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dot", "color": "gray"}, name="chance", hoverinfo="skip"
        )
    )
    for index, (label, curve) in enumerate(curves.items()):
        auc = curve.get("auc")
        name = f"{label} (AUC {auc:.3f})" if isinstance(auc, (int, float)) else label
        figure.add_trace(
            go.Scatter(
                x=list(curve.get("fpr", [])),
                y=list(curve.get("tpr", [])),
                mode="lines",
                name=name,
                line={"color": color_for(index), "width": 2},
            )
        )
        if threshold_points and label in threshold_points:
            fpr, tpr, threshold = threshold_points[label]
            figure.add_trace(
                go.Scatter(
                    x=[fpr],
                    y=[tpr],
                    mode="markers",
                    marker={"size": 11, "color": color_for(index), "symbol": "x"},
                    name=f"{label} threshold {threshold:.2f}",
                    hovertemplate=f"threshold {threshold:.3f}<br>FPR %{{x:.3f}}, TPR %{{y:.3f}}<extra></extra>",
                )
            )
    figure.update_layout(
        title=title,
        height=380,
        xaxis_title="False positive rate (1 − specificity)",
        yaxis_title="True positive rate (sensitivity)",
        xaxis={"range": [0, 1]},
        yaxis={"range": [0, 1.02]},
        legend={"yanchor": "bottom", "y": 0.02, "xanchor": "right", "x": 0.98},
        margin={"l": 10, "r": 10, "t": 40 if title else 10, "b": 10},
    )
    return figure


def nearest_threshold_point(
    curve: Mapping[str, Sequence[float]], threshold: float
) -> tuple[float, float, float] | None:
    """Finds the ROC point whose threshold is closest to a chosen one.

    Args:
        curve: {"fpr": [...], "tpr": [...], "thresholds": [...]} from curves.roc_curve_points.
        threshold: The decision threshold of the run.

    Returns:
        (fpr, tpr, threshold) of that point, or None when the curve is empty.
    """
    thresholds = list(curve.get("thresholds") or [])
    if not thresholds or threshold is None:
        return None
    index = min(range(len(thresholds)), key=lambda position: abs(thresholds[position] - threshold))
    return float(curve["fpr"][index]), float(curve["tpr"][index]), float(threshold)


def class_counts_figure(rows: Sequence[Mapping[str, object]], title: str = "") -> go.Figure:
    """Grouped bar chart of images per split and class.

    Args:
        rows: Records with keys "split", "class" and "images".
        title: Figure title.
    """
    figure = go.Figure()
    class_names = list(dict.fromkeys(str(row["class"]) for row in rows))
    for index, name in enumerate(class_names):
        chosen = [row for row in rows if row["class"] == name]
        figure.add_trace(
            go.Bar(
                x=[row["split"] for row in chosen],
                y=[row["images"] for row in chosen],
                name=name,
                marker_color=color_for(index),
                text=[row["images"] for row in chosen],
                textposition="auto",
            )
        )
    figure.update_layout(
        title=title,
        barmode="group",
        height=300,
        yaxis_title="images",
        xaxis_title="split",
        margin={"l": 10, "r": 10, "t": 40 if title else 10, "b": 10},
        legend={"orientation": "h", "y": 1.12},
    )
    return figure


def images_per_patient_figure(counts_by_class: Mapping[str, Sequence[int]], title: str = "") -> go.Figure:
    """Histogram of how many images each patient has, one colour per class.

    Args:
        counts_by_class: {class name: [images of each patient of that class]}.
        title: Figure title.
    """
    figure = go.Figure()
    for index, (name, counts) in enumerate(counts_by_class.items()):
        figure.add_trace(
            go.Histogram(x=list(counts), name=name, marker_color=color_for(index), xbins={"size": 1}, opacity=0.85)
        )
    figure.update_layout(
        title=title,
        barmode="stack",
        height=300,
        xaxis_title="images per patient",
        yaxis_title="patients",
        margin={"l": 10, "r": 10, "t": 40 if title else 10, "b": 10},
        legend={"orientation": "h", "y": 1.12},
        bargap=0.1,
    )
    return figure


def fold_balance_figure(
    overview: Sequence[Mapping[str, int]], class_names: Sequence[str], title: str = ""
) -> go.Figure:
    """Stacked bars of images per class in each fold.

    Args:
        overview: Rows of zoidberg.folds.fold_overview (fold, images, patients, one key per class).
        class_names: Class names in order.
        title: Figure title.
    """
    figure = go.Figure()
    folds = [f"fold {row['fold']}" for row in overview]
    for index, name in enumerate(class_names):
        figure.add_trace(go.Bar(x=folds, y=[row[name] for row in overview], name=name, marker_color=color_for(index)))
    figure.update_layout(
        title=title,
        barmode="stack",
        height=300,
        yaxis_title="images",
        margin={"l": 10, "r": 10, "t": 40 if title else 10, "b": 10},
        legend={"orientation": "h", "y": 1.12},
    )
    return figure


def training_curves_figure(epochs: Sequence[Mapping[str, object]], metric: str, title: str = "") -> go.Figure:
    """Per-fold learning curves of one metric: training dashed, validation solid.

    Args:
        epochs: Records with "fold", "epoch" and the logged metrics (e.g. "loss", "val_loss").
        metric: Base metric name ("loss", "accuracy" or "auc").
        title: Figure title.
    """
    figure = go.Figure()
    folds = sorted({int(row["fold"]) for row in epochs})
    for fold in folds:
        rows = sorted((row for row in epochs if int(row["fold"]) == fold), key=lambda row: int(row["epoch"]))
        for prefix, dash, part in (("", "dash", "train"), ("val_", "solid", "validation")):
            key = prefix + metric
            points = [(row["epoch"], row[key]) for row in rows if row.get(key) is not None]
            if not points:
                continue
            figure.add_trace(
                go.Scatter(
                    x=[epoch for epoch, _ in points],
                    y=[value for _, value in points],
                    mode="lines+markers",
                    name=f"fold {fold} {part}",
                    legendgroup=f"fold {fold}",
                    line={"color": color_for(fold - 1), "dash": dash, "width": 2},
                    marker={"size": 5},
                    hovertemplate=f"fold {fold} {part}<br>epoch %{{x}}<br>{metric} %{{y:.4f}}<extra></extra>",
                )
            )
    figure.update_layout(
        title=title,
        height=320,
        xaxis_title="epoch",
        yaxis_title=metric,
        margin={"l": 10, "r": 10, "t": 40 if title else 10, "b": 10},
        legend={"font": {"size": 11}},
    )
    figure.update_xaxes(rangemode="tozero", dtick=1 if len({row["epoch"] for row in epochs}) <= 20 else None)
    return figure


def best_so_far_figure(rows: Sequence[dict], objective: str, direction: str) -> go.Figure:
    """Plots each finished trial's objective and the best-so-far line.

    Args:
        rows: trials.json rows.
        objective: The objective's name.
        direction: "max" or "min".

    Returns:
        The figure.
    """
    finished = [row for row in rows if row["status"] == "completed" and row.get("objective") is not None]
    figure = go.Figure()
    if finished:
        trials = [row["trial"] for row in finished]
        values = [row["objective"] for row in finished]
        pick = max if direction == "max" else min
        running, best = [], None
        for value in values:
            best = value if best is None else pick(best, value)
            running.append(best)
        figure.add_trace(
            go.Scatter(x=trials, y=values, mode="markers", name="trial", marker=dict(size=9, color="#8e9aaf"),
                       hovertemplate="trial %{x}: %{y:.4f}<extra></extra>")
        )
        figure.add_trace(
            go.Scatter(x=trials, y=running, mode="lines", line=dict(shape="hv", width=3, color="#00CC96"),
                       name="best so far", hovertemplate="best after trial %{x}: %{y:.4f}<extra></extra>")
        )
        best = best_row(list(rows), direction)
        figure.add_trace(
            go.Scatter(x=[best["trial"]], y=[best["objective"]], mode="markers", name="best",
                       marker=dict(symbol="star", size=18, color="#FFA15A"), hoverinfo="skip")
        )
    figure.update_layout(
        title=f"Best {OBJECTIVE_LABELS.get(objective, objective)} so far",
        xaxis_title="trial", yaxis_title=objective,
        height=300, margin=dict(l=10, r=10, t=40, b=10),
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0),
    )
    figure.update_xaxes(dtick=1 if len(finished) <= 20 else None)
    return figure


def _axis(dimension: Dimension | None, name: str, values: list) -> dict:
    """Returns one go.Parcoords dimension: numeric, log-scaled or categorical."""
    label = name.replace("_", " ")
    numeric = all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in values)
    categorical = dimension is not None and not dimension.is_range or not numeric
    if categorical:
        # Categorical values (choices, booleans, none) become positions with tick labels.
        order = list(dimension.choices) if dimension is not None and dimension.choices else []
        for value in values:
            if value not in order:
                order.append(value)
        if all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in order):
            order = sorted(order)
        ticks = [format_value(value) if not isinstance(value, bool) else ("on" if value else "off") for value in order]
        return dict(label=label, values=[order.index(value) for value in values], tickvals=list(range(len(order))),
                    ticktext=ticks, range=[-0.25, max(len(order) - 0.75, 0.25)])
    if dimension is not None and dimension.log and all(value > 0 for value in values):
        low, high = math.floor(math.log10(dimension.min_value)), math.ceil(math.log10(dimension.max_value))
        ticks = list(range(low, high + 1))
        return dict(label=f"{label} (log)", values=[math.log10(value) for value in values], tickvals=ticks,
                    ticktext=[f"{10.0 ** tick:g}" for tick in ticks], range=[math.log10(dimension.min_value), math.log10(dimension.max_value)])
    axis = dict(label=label, values=values)
    if dimension is not None and dimension.min_value is not None:
        axis["range"] = [dimension.min_value, dimension.max_value]
    return axis


def parallel_coordinates_figure(
    rows: Sequence[dict], objective: str, direction: str, dimensions: Sequence[Dimension] = ()
) -> go.Figure | None:
    """Draws every finished trial as a line across its hyperparameters and the objective.

    Args:
        rows: trials.json rows.
        objective: The objective's name (the last axis and the colour).
        direction: "max" or "min"; the best trials are drawn brightest either way.
        dimensions: The search space, for ranges, log scales and choice order.

    Returns:
        The figure, or None before any trial has finished.
    """
    finished = [row for row in rows if row["status"] == "completed" and row.get("objective") is not None]
    if not finished:
        return None
    by_name = {dimension.name: dimension for dimension in dimensions}
    names = [name for name in hyperparameter_names(finished) if name in by_name or not by_name]
    axes = [_axis(by_name.get(name), name, [row["hyperparameters"].get(name) for row in finished]) for name in names]
    scores = [row["objective"] for row in finished]
    axes.append(dict(label=objective, values=scores))
    figure = go.Figure(
        go.Parcoords(
            line=dict(color=scores, colorscale="Viridis", reversescale=direction == "min", showscale=True,
                      colorbar=dict(title=objective)),
            dimensions=axes,
        )
    )
    figure.update_layout(
        title=dict(text="Hyperparameters against the objective", y=0.98), height=440, margin=dict(l=60, r=40, t=110, b=30)
    )
    return figure


def fold_strip_figure(decision: Decision, class_names: Sequence[str]) -> go.Figure:
    """A one-line strip of each fold model's probability, with the threshold line.

    The figure is built from one dict because a page may draw dozens of these on every
    slider move, and plotly's incremental helpers (add_vline) cost ~10x more.

    Args:
        decision: The image's decision.
        class_names: The run's classes.

    Returns:
        A short plotly figure.
    """
    binary = len(class_names) == 2
    what = f"P({class_names[1]})" if binary else f"P({decision.label})"
    values = list(decision.per_fold)
    folds = list(range(1, len(values) + 1))
    data = [
        {
            "type": "scatter",
            "x": values,
            "y": [0] * len(values),
            "mode": "markers",
            "customdata": folds,
            "marker": {"size": 12, "color": color_for(0), "line": {"width": 1, "color": "white"}},
            "hovertemplate": f"{decision.unit} %{{customdata}}: {what} = %{{x:.3f}}<extra></extra>",
            "showlegend": False,
        },
        {
            "type": "scatter",
            "x": [decision.probability],
            "y": [0],
            "mode": "markers",
            "showlegend": False,
            "marker": {"size": 18, "symbol": "line-ns", "line": {"width": 3, "color": "#FFA15A"}},
            "hovertemplate": "ensemble mean: %{x:.3f}<extra></extra>",
        },
    ]
    layout: dict[str, Any] = {
        "height": 130,
        "margin": {"l": 10, "r": 10, "t": 25, "b": 40},
        "xaxis": {"range": [-0.02, 1.02], "title": {"text": f"{what} per {decision.unit}"}, "tickformat": ".1f"},
        "yaxis": {"visible": False, "range": [-1, 1]},
    }
    if binary and decision.threshold is not None:
        layout["shapes"] = [
            {
                "type": "line",
                "x0": decision.threshold,
                "x1": decision.threshold,
                "y0": 0,
                "y1": 1,
                "yref": "paper",
                "line": {"color": "gray", "dash": "dot"},
            }
        ]
        layout["annotations"] = [
            {
                "x": decision.threshold,
                "y": 1,
                "yref": "paper",
                "yanchor": "bottom",
                "text": "threshold",
                "showarrow": False,
            }
        ]
    return go.Figure({"data": data, "layout": layout})


def class_probability_figure(decision: Decision, class_names: Sequence[str]) -> go.Figure:
    """Horizontal bars of every class's mean probability (three-class runs), built from one dict."""
    values = [decision.class_probabilities.get(name, 0.0) for name in class_names]
    bars = {
        "type": "bar",
        "x": values,
        "y": list(class_names),
        "orientation": "h",
        "marker": {"color": [color_for(index) for index in range(len(class_names))]},
        "text": [f"{value:.2f}" for value in values],
        "textposition": "auto",
        "hovertemplate": "%{y}: %{x:.3f}<extra></extra>",
    }
    layout = {
        "height": 60 + 32 * len(class_names),
        "margin": {"l": 10, "r": 10, "t": 10, "b": 40},
        "showlegend": False,
        "xaxis": {"range": [0, 1], "title": {"text": "mean probability over folds"}},
        "yaxis": {"autorange": "reversed"},
    }
    return go.Figure({"data": [bars], "layout": layout})
