"""Plotly figures of calibration, decision curves and score distributions (pure functions of stored evaluations)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import plotly.graph_objects as go

from zoidberg.ui.figures import color_for


def _layout(figure: go.Figure, title: str, height: int = 380) -> go.Figure:
    """The shared compact layout, legend above the plot."""
    figure.update_layout(
        title=dict(text=title, y=0.98, yanchor="top") if title else None,
        height=height,
        margin=dict(l=10, r=10, t=70 if title else 30, b=10),
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="left", x=0),
    )
    return figure


def reliability_figure(curves: Mapping[str, Sequence[Mapping]], title: str = "Reliability diagram") -> go.Figure:
    """Observed frequency against mean predicted probability per bin, one line per set of predictions.

    Args:
        curves: {label: reliability bins (calibration.reliability_bins)}; marker size follows the bin's count.
        title: Figure title.
    """
    figure = go.Figure()
    figure.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dot", color="gray"), name="perfect", hoverinfo="skip"))
    for index, (label, bins) in enumerate(curves.items()):
        used = [item for item in bins if item.get("count")]
        if not used:
            continue
        largest = max(item["count"] for item in used)
        figure.add_trace(
            go.Scatter(
                x=[item["mean_predicted"] for item in used],
                y=[item["observed"] for item in used],
                mode="lines+markers",
                name=label,
                line=dict(color=color_for(index), width=2),
                marker=dict(size=[6 + 14 * item["count"] / largest for item in used], color=color_for(index)),
                customdata=[[item["count"], item["low"], item["high"]] for item in used],
                hovertemplate=f"{label}<br>predicted %{{x:.3f}}, observed %{{y:.3f}}<br>%{{customdata[0]}} images in "
                "[%{customdata[1]:.1f}, %{customdata[2]:.1f})<extra></extra>",
            )
        )
    figure.update_xaxes(title="mean predicted P(pneumonia)", range=[0, 1])
    figure.update_yaxes(title="observed share of pneumonia", range=[0, 1.02])
    return _layout(figure, title)


def decision_curve_figure(curves: Mapping[str, Mapping], title: str = "Decision curve") -> go.Figure:
    """Net benefit against threshold probability, with treat-all and treat-none.

    Args:
        curves: {label: net_benefit(...) output}; treat-all is drawn for the first one.
        title: Figure title.
    """
    figure = go.Figure()
    for index, (label, curve) in enumerate(curves.items()):
        if index == 0:
            figure.add_trace(
                go.Scatter(x=curve["thresholds"], y=curve["treat_all"], mode="lines", name="treat all",
                           line=dict(color="gray", dash="dash"), hovertemplate="treat all at %{x:.2f}: %{y:.3f}<extra></extra>")
            )
            figure.add_trace(
                go.Scatter(x=curve["thresholds"], y=curve["treat_none"], mode="lines", name="treat none",
                           line=dict(color="gray", dash="dot"), hoverinfo="skip")
            )
        figure.add_trace(
            go.Scatter(x=curve["thresholds"], y=curve["model"], mode="lines", name=label, line=dict(color=color_for(index), width=2.5),
                       hovertemplate=f"{label} at %{{x:.2f}}: net benefit %{{y:.3f}}<extra></extra>")
        )
    top = max((max(curve["model"] + curve["treat_all"]) for curve in curves.values()), default=1.0)
    figure.update_xaxes(title="threshold probability (the risk at which one would treat)", range=[0, 1])
    figure.update_yaxes(title="net benefit", range=[-0.05, max(0.05, top * 1.1)])
    return _layout(figure, title)


def score_distribution_figure(histograms: Mapping[str, Mapping], title: str = "Scores by true class") -> go.Figure:
    """Share of each class's images per score bin, one line per (set, class): a shift is seen, not guessed.

    Args:
        histograms: {set label: {"edges": [...], "counts": {class: [...]}}}.
        title: Figure title.
    """
    figure = go.Figure()
    dashes = ("solid", "dash", "dot", "dashdot")
    for set_index, (label, histogram) in enumerate(histograms.items()):
        edges = histogram["edges"]
        centers = [(low + high) / 2 for low, high in zip(edges[:-1], edges[1:])]
        for class_index, (class_name, counts) in enumerate(histogram["counts"].items()):
            total = sum(counts) or 1
            figure.add_trace(
                go.Scatter(
                    x=centers,
                    y=[count / total for count in counts],
                    mode="lines",
                    name=f"{label} · {class_name} ({sum(counts)})",
                    line=dict(color=color_for(class_index), dash=dashes[set_index % len(dashes)], width=2, shape="hvh"),
                    hovertemplate=f"{label}, true {class_name}<br>score %{{x:.2f}}: %{{y:.1%}} of the class<extra></extra>",
                )
            )
    figure.update_xaxes(title="P(pneumonia)", range=[0, 1])
    figure.update_yaxes(title="share of the class's images", tickformat=".0%")
    return _layout(figure, title)
