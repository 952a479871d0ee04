"""Operating points: how the decision threshold is chosen on out-of-fold predictions, and what it gives at a stated prevalence."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_curve

from zoidberg.config import OperatingPointChoice


def rates_at(labels: np.ndarray, positive: np.ndarray, threshold: float) -> dict:
    """Sensitivity, specificity and the confusion counts of calling pneumonia at P >= threshold."""
    labels = np.asarray(labels).astype(int)
    called = np.asarray(positive) >= threshold
    tp, fn = int(np.sum(called & (labels == 1))), int(np.sum(~called & (labels == 1)))
    tn, fp = int(np.sum(~called & (labels == 0))), int(np.sum(called & (labels == 0)))
    return {
        "sensitivity": tp / (tp + fn) if tp + fn else None,
        "specificity": tn / (tn + fp) if tn + fp else None,
        "tp": tp, "fn": fn, "tn": tn, "fp": fp,
    }


def predictive_values(sensitivity: float, specificity: float, prevalence: float) -> tuple[float | None, float | None]:
    """PPV and NPV at a prevalence, by Bayes' rule.

    PPV = sens·π / (sens·π + (1 − spec)(1 − π)); NPV = spec(1 − π) / (spec(1 − π) + (1 − sens)π).
    """
    true_positive = sensitivity * prevalence
    false_positive = (1.0 - specificity) * (1.0 - prevalence)
    true_negative = specificity * (1.0 - prevalence)
    false_negative = (1.0 - sensitivity) * prevalence
    ppv = true_positive / (true_positive + false_positive) if true_positive + false_positive else None
    npv = true_negative / (true_negative + false_negative) if true_negative + false_negative else None
    return ppv, npv


def adjust_to_prevalence(positive: np.ndarray, training_prevalence: float, prevalence: float) -> np.ndarray:
    """Re-weights calibrated P(pneumonia) from the training prevalence to another one (Bayes' rule on the odds)."""
    positive = np.clip(np.asarray(positive, dtype=float), 1e-9, 1 - 1e-9)
    ratio = (prevalence / (1 - prevalence)) / (training_prevalence / (1 - training_prevalence))
    odds = positive / (1 - positive) * ratio
    return odds / (1 + odds)


def _candidates(labels: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points (fpr, tpr, threshold), every threshold a probability in [0, 1].

    sklearn's first point ("call nobody") has an infinite threshold. It becomes 1.0, the
    highest threshold a probability can meet: a model that learned nothing, whose best
    point is that one, then still gets a valid threshold instead of crashing the summary.
    """
    fpr, tpr, thresholds = roc_curve(labels, positive)
    thresholds = np.clip(thresholds, 0.0, 1.0)
    return fpr, tpr, thresholds


def choose_threshold(labels: np.ndarray, positive: np.ndarray, choice: OperatingPointChoice) -> float:
    """Returns the decision threshold a method picks on out-of-fold P(pneumonia).

    - youden: the ROC point with the largest sensitivity + specificity − 1;
    - fixed-0.5: 0.5;
    - target-sensitivity: the highest threshold whose sensitivity reaches the target,
      which gives the best specificity at that sensitivity;
    - target-specificity: the lowest threshold whose specificity reaches the target;
    - cost: the point with the least expected cost π·(1 − sens)·ratio + (1 − π)·(1 − spec)
      at the stated (or training) prevalence π.

    Args:
        labels: 0/1 labels of the out-of-fold images.
        positive: Their P(pneumonia) on the scale the choice names.
        choice: The method and its parameters.

    Raises:
        ValueError: When the labels hold one class only.
    """
    labels = np.asarray(labels).astype(int)
    if len(np.unique(labels)) < 2:
        raise ValueError("Choosing a threshold needs out-of-fold predictions of both classes.")
    if choice.method == "fixed-0.5":
        return 0.5
    fpr, tpr, thresholds = _candidates(labels, positive)
    if choice.method == "youden":
        index = int(np.argmax(tpr - fpr))
    elif choice.method == "target-sensitivity":
        index = int(np.flatnonzero(tpr >= choice.target - 1e-12)[0])
    elif choice.method == "target-specificity":
        index = int(np.flatnonzero(1.0 - fpr >= choice.target - 1e-12)[-1])
    else:
        prevalence = choice.prevalence if choice.prevalence is not None else float(labels.mean())
        cost = prevalence * (1.0 - tpr) * choice.cost_ratio + (1.0 - prevalence) * fpr
        index = int(np.argmin(cost))
    return float(thresholds[index])


def operating_point(
    labels: np.ndarray,
    positive: np.ndarray,
    fold_of: np.ndarray,
    choice: OperatingPointChoice,
) -> dict:
    """Fits a threshold on the pooled out-of-fold predictions and measures it on each fold.

    The fold-wise spread says how much the operating point's sensitivity and specificity
    move from one held-out group of patients to the next: what a new hospital may see.

    Args:
        labels: 0/1 labels of the out-of-fold images.
        positive: Their P(pneumonia) on the choice's scale.
        fold_of: The fold of each image (0-based).
        choice: The method and its parameters.

    Returns:
        {"choice", "threshold", "prevalence" (stated or training), "prevalence_source",
        "pooled": rates with PPV and NPV, "folds": per-fold rates, "mean_std": {metric:
        {"mean", "std"}}}.
    """
    labels, positive, fold_of = np.asarray(labels).astype(int), np.asarray(positive, dtype=float), np.asarray(fold_of)
    threshold = choose_threshold(labels, positive, choice)
    prevalence = choice.prevalence if choice.prevalence is not None else float(labels.mean())
    pooled = _with_predictive_values(rates_at(labels, positive, threshold), prevalence)
    folds = []
    for fold in np.unique(fold_of):
        mask = fold_of == fold
        folds.append({"fold": int(fold) + 1, **_with_predictive_values(rates_at(labels[mask], positive[mask], threshold), prevalence)})
    mean_std = {}
    for name in ("sensitivity", "specificity", "ppv", "npv"):
        values = [row[name] for row in folds if row[name] is not None]
        mean_std[name] = {
            "mean": float(np.mean(values)) if values else None,
            "std": float(np.std(values, ddof=1)) if len(values) > 1 else None,
        }
    return {
        "choice": choice.to_dict(),
        "threshold": threshold,
        "prevalence": prevalence,
        "prevalence_source": "stated" if choice.prevalence is not None else "training data",
        "pooled": pooled,
        "folds": folds,
        "mean_std": mean_std,
    }


def _with_predictive_values(rates: dict, prevalence: float) -> dict:
    """Adds PPV and NPV at the prevalence to a rates dict."""
    if rates["sensitivity"] is None or rates["specificity"] is None:
        return {**rates, "ppv": None, "npv": None}
    ppv, npv = predictive_values(rates["sensitivity"], rates["specificity"], prevalence)
    return {**rates, "ppv": ppv, "npv": npv}


def operating_point_table(labels: np.ndarray, positive: np.ndarray, fold_of: np.ndarray, prevalence: float | None = None) -> list[dict]:
    """The usual operating points side by side: Youden, 0.5, 95 % sensitivity, 95 % specificity, equal costs.

    Returns:
        One row per method: {"method", "description", "threshold", "sensitivity",
        "specificity", "ppv", "npv", "sensitivity_std", "specificity_std"}.
    """
    choices = (
        OperatingPointChoice("youden", prevalence=prevalence),
        OperatingPointChoice("fixed-0.5", prevalence=prevalence),
        OperatingPointChoice("target-sensitivity", target=0.95, prevalence=prevalence),
        OperatingPointChoice("target-specificity", target=0.95, prevalence=prevalence),
        OperatingPointChoice("cost", cost_ratio=1.0, prevalence=prevalence),
    )
    rows = []
    for choice in choices:
        point = operating_point(labels, positive, fold_of, choice)
        rows.append(
            {
                "method": choice.method,
                "description": choice.describe(),
                "threshold": point["threshold"],
                **{name: point["pooled"][name] for name in ("sensitivity", "specificity", "ppv", "npv")},
                "sensitivity_std": point["mean_std"]["sensitivity"]["std"],
                "specificity_std": point["mean_std"]["specificity"]["std"],
            }
        )
    return rows


def net_benefit(labels: np.ndarray, positive: np.ndarray, thresholds: np.ndarray) -> dict:
    """Decision curve analysis (Vickers & Elkin 2006): net benefit against threshold probability.

    Treating everyone whose P(pneumonia) >= p_t gives net benefit TP/n − FP/n · p_t/(1 − p_t);
    "treat all" gives π − (1 − π) · p_t/(1 − p_t); "treat none" gives 0.

    Args:
        labels: 0/1 labels.
        positive: P(pneumonia), calibrated for the curve to mean what it says.
        thresholds: Threshold probabilities in (0, 1).

    Returns:
        {"thresholds", "model", "treat_all", "treat_none"} lists.
    """
    labels = np.asarray(labels).astype(int)
    positive = np.asarray(positive, dtype=float)
    n = len(labels)
    prevalence = labels.mean()
    model, treat_all = [], []
    for threshold in np.asarray(thresholds, dtype=float):
        weight = threshold / (1.0 - threshold)
        called = positive >= threshold
        tp = np.sum(called & (labels == 1)) / n
        fp = np.sum(called & (labels == 0)) / n
        model.append(float(tp - fp * weight))
        treat_all.append(float(prevalence - (1 - prevalence) * weight))
    return {
        "thresholds": [float(value) for value in thresholds],
        "model": model,
        "treat_all": treat_all,
        "treat_none": [0.0] * len(model),
    }


DECISION_CURVE_THRESHOLDS = np.round(np.arange(0.01, 0.991, 0.01), 2)


# What the out-of-fold rates carried to another prevalence take for granted.
SAME_FILMS_ASSUMPTION = "assumes the site's films look like the training films"


def rates_to_read(point: dict, evaluations: list[dict]) -> list[dict]:
    """The rates at a run's operating point in the order a clinician should read them.

    First what each evaluation measured on its films (sensitivity and specificity counted
    there; PPV and NPV at that folder's own prevalence, or at the stated one). Then the
    pooled out-of-fold rates of cross-validation, and those carried by Bayes' rule to each
    evaluation's prevalence and to 10 % and 50 %: rows that only hold where the films look like
    the training films, and say so.

    Args:
        point: operating_point.json.
        evaluations: The run's current evaluations (binary ones count).

    Returns:
        [{"rates", "measured" (bool), "prevalence", "sensitivity", "specificity", "ppv", "npv"}].
    """
    rows = []
    for item in evaluations:
        measured = item.get("metrics") or {}
        values = item.get("predictive_values") or {}
        if measured.get("sensitivity") is None or measured.get("specificity") is None:
            continue
        where = "at the stated prevalence" if values.get("source") == "stated" else "at its own prevalence"
        rows.append({
            "rates": f"measured on {item['name']} ({item.get('n_images', '?')} films; PPV and NPV {where})", "measured": True,
            "prevalence": values.get("prevalence"), "sensitivity": measured["sensitivity"], "specificity": measured["specificity"],
            "ppv": values.get("ppv"), "npv": values.get("npv"),
        })
    pooled = point.get("pooled") or {}
    sensitivity, specificity = pooled.get("sensitivity"), pooled.get("specificity")
    if sensitivity is None or specificity is None:
        return rows
    # Out of fold: the prevalence of the films the threshold was validated on (an adapted run's: the site's labeled films).
    carried = [("cross-validation, out of fold (the prevalence of the films it was validated on)", point.get("prevalence"))]
    carried += [(f"cross-validation carried to {item['name']}'s prevalence ({SAME_FILMS_ASSUMPTION})",
                 (item.get("predictive_values") or {}).get("prevalence")) for item in evaluations]
    carried += [(f"cross-validation carried to {share:.0%} prevalence ({SAME_FILMS_ASSUMPTION})", share) for share in (0.10, 0.50)]
    for label, prevalence in carried:
        if prevalence is None:
            continue
        ppv, npv = predictive_values(sensitivity, specificity, prevalence)
        rows.append({"rates": label, "measured": False, "prevalence": prevalence, "sensitivity": sensitivity,
                     "specificity": specificity, "ppv": ppv, "npv": npv})
    return rows
