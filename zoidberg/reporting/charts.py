"""The report's figures drawn with matplotlib as PNG bytes: ROC, reliability and decision curves."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # No display: figures are drawn to memory only.

import matplotlib.pyplot as plt  # noqa: E402

from zoidberg.reporting.document import Chart  # noqa: E402

SIZE_INCHES = (6.0, 4.2)
DPI = 110


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=DPI)
    plt.close(figure)
    return buffer.getvalue()


def _positive_curve(curves: dict) -> tuple[str, dict] | None:
    """The curve of the positive class (the last class) of {class: {"fpr", "tpr"}}."""
    if not curves:
        return None
    name = list(curves)[-1]
    return name, curves[name]


def roc_chart(out_of_fold_roc: dict, evaluations: list[dict]) -> Chart | None:
    """ROC curves: out of fold and every evaluation (the positive class of binary runs, every class otherwise)."""
    figure, axes = plt.subplots(figsize=SIZE_INCHES)
    drawn = 0
    binary = len(out_of_fold_roc) <= 1
    for name, curve in (out_of_fold_roc.items() if not binary else [_positive_curve(out_of_fold_roc)] if out_of_fold_roc else []):
        axes.plot(curve["fpr"], curve["tpr"], linewidth=2, label="out of fold" + ("" if binary else f" · {name}"))
        drawn += 1
    for item in evaluations:
        positive = _positive_curve(item.get("roc") or {})
        if positive:
            auc = (item.get("metrics") or {}).get("roc_auc")
            axes.plot(positive[1]["fpr"], positive[1]["tpr"], linewidth=1.5, label=f"{item['name']}" + (f" (AUC {auc:.3f})" if auc is not None else ""))
            drawn += 1
    if not drawn:
        plt.close(figure)
        return None
    axes.plot([0, 1], [0, 1], linestyle=":", color="grey", linewidth=1)
    axes.set(xlabel="1 − specificity (false positive rate)", ylabel="Sensitivity (true positive rate)", xlim=(0, 1), ylim=(0, 1.01))
    axes.legend(loc="lower right", fontsize=8)
    axes.grid(alpha=0.3)
    return Chart("ROC curves", _png(figure), "The closer to the top-left corner, the better the ranking; the dotted line is chance.")


def reliability_chart(out_of_fold_bins: list[dict], evaluation_bins: list[tuple[str, list[dict]]]) -> Chart | None:
    """Reliability diagram: the observed frequency of pneumonia against the predicted probability, per bin."""
    series = [("out of fold", out_of_fold_bins), *evaluation_bins]
    series = [(name, [entry for entry in bins if entry.get("count")]) for name, bins in series]
    series = [(name, bins) for name, bins in series if bins]
    if not series:
        return None
    figure, axes = plt.subplots(figsize=SIZE_INCHES)
    for name, bins in series:
        axes.plot([entry["mean_predicted"] for entry in bins], [entry["observed"] for entry in bins], marker="o", linewidth=1.5, label=name)
    axes.plot([0, 1], [0, 1], linestyle=":", color="grey", linewidth=1, label="perfect calibration")
    axes.set(xlabel="Predicted probability", ylabel="Observed frequency", xlim=(0, 1), ylim=(0, 1.01))
    axes.legend(loc="upper left", fontsize=8)
    axes.grid(alpha=0.3)
    return Chart("Calibration (reliability diagram)", _png(figure),
                 "Points below the diagonal: the model is over-confident there; above: under-confident.")


def decision_curve_chart(out_of_fold_curve: dict | None, evaluations: list[dict]) -> Chart | None:
    """Decision curves: net benefit against the threshold probability, with treat-all and treat-none."""
    curves = ([("out of fold", out_of_fold_curve)] if out_of_fold_curve else []) + [(item["name"], item.get("decision_curve")) for item in evaluations if item.get("decision_curve")]
    if not curves:
        return None
    figure, axes = plt.subplots(figsize=SIZE_INCHES)
    low = 0.0
    for name, curve in curves:
        axes.plot(curve["thresholds"], curve["model"], linewidth=1.8, label=f"model · {name}")
        axes.plot(curve["thresholds"], curve["treat_all"], linestyle="--", linewidth=1, label=f"treat all · {name}")
        low = min(low, min(value for value in curve["model"] if value is not None))
    axes.axhline(0.0, color="black", linewidth=1, label="treat none")
    top = max(max(curve["model"]) for _, curve in curves)
    axes.set(xlabel="Threshold probability", ylabel="Net benefit", xlim=(0, 1), ylim=(max(low, -0.05), top * 1.1 + 0.01))
    axes.legend(loc="lower left", fontsize=7)
    axes.grid(alpha=0.3)
    return Chart("Decision curves", _png(figure),
                 "Net benefit of acting on the model at each threshold probability, against treating every child or none.")
