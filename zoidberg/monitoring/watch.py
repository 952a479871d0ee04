"""One window of prediction records against the films a run knows: what came, what was refused, what shifted, and the alert."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime

import numpy as np

from zoidberg.monitoring.reference import Reference

# The alert rule, documented in the README ("After go-live"); each test must pass a small p-value
# and a size that matters, so that a stable site's windows stay quiet.
ALERT_P = 0.001
# Refusals: at least this many points above the reference's share (Fisher's exact test, one-sided).
REFUSED_MARGIN = 0.05
# The gate's score: the share of films above the reference films' 95th percentile must reach this.
TAIL_QUANTILE = 0.95
TAIL_SHARE = 0.15
# The films' brightness and contrast: the share outside the reference films' central 95 % must exceed theirs by this.
EXPOSURE_MARGIN = 0.10
# The model's scores: the two-sample Kolmogorov-Smirnov distance must reach this.
SCORE_DISTANCE = 0.25
# Fewer diagnosed films than this give no score test (the distance of a handful means nothing).
MIN_SCORED = 10


def window_key(record: dict, window: str) -> str:
    """The window a record falls in by its time: "2026-W49" (week), "2026-12-08" (day); "undated" without a time."""
    stamp = record.get("predicted_at")
    if not stamp:
        return "undated"
    when = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    if window == "day":
        return when.date().isoformat()
    year, week, _ = when.isocalendar()
    return f"{year}-W{week:02d}"


def make_windows(records: Sequence[dict], window: str) -> list[tuple[str, list[dict]]]:
    """Records grouped into windows: "week", "day", or N (every N records in time order), oldest first.

    Raises:
        ValueError: An unknown window.
    """
    ordered = sorted(records, key=lambda record: str(record.get("predicted_at") or ""))
    if window in ("week", "day"):
        groups: dict[str, list[dict]] = {}
        for record in ordered:
            groups.setdefault(window_key(record, window), []).append(record)
        return list(groups.items())
    if not str(window).isdigit() or int(window) < 1:
        raise ValueError(f"--window must be week, day or a number of records (got {window!r}).")
    size = int(window)
    return [(f"records {start + 1}-{min(start + size, len(ordered))}", ordered[start : start + size]) for start in range(0, len(ordered), size)]


def watch_window(name: str, records: Sequence[dict], references: Sequence[Reference]) -> dict:
    """What one window says, against each reference, and whether it raises the alert.

    Args:
        name: The window's name.
        records: Its prediction records.
        references: load_references(run): the first that alerts decides the alert.

    Returns:
        {"window", "films", "unreadable", "refused", "refused_share", "refused_by_reason", "diagnosed",
        "pneumonia_share", "pneumonia_share_em", "shift": [one per reference], "alert", "why"}.
    """
    from zoidberg.evaluation.shift import em_prevalence

    readable = [record for record in records if "error" not in record]
    refused = [record for record in readable if record.get("in_distribution") is False]
    diagnosed = [record for record in readable if record.get("in_distribution") is not False and record.get("probability_raw") is not None]
    called = [record for record in diagnosed if record.get("class_index") == 1 or str(record.get("prediction", "")).lower() == "pneumonia"]
    main = references[0]
    calibrated = np.array([record.get("probability_calibrated") if record.get("probability_calibrated") is not None
                           else record["probability_raw"] for record in diagnosed], dtype=float)
    shifts = [_shift(readable, diagnosed, reference) for reference in references]
    reasons = Counter(_reason_key(record.get("ood_reason")) for record in refused)
    summary = {
        "window": name,
        "films": len(records),
        "unreadable": len(records) - len(readable),
        "refused": len(refused),
        "refused_share": len(refused) / len(readable) if readable else None,
        "refused_by_reason": dict(reasons.most_common()),
        "diagnosed": len(diagnosed),
        "pneumonia_share": len(called) / len(diagnosed) if diagnosed else None,
        "pneumonia_share_em": em_prevalence(calibrated, main.prevalence) if len(diagnosed) else None,
        "shift": shifts,
    }
    alerting = [shift for shift, reference in zip(shifts, references) if reference.alerts]
    reasons_why = [why for shift in alerting for why in shift["why"]]
    summary["alert"] = bool(reasons_why)
    summary["why"] = _sentence(summary, alerting[0] if alerting else shifts[0], reasons_why)
    return summary


def _reason_key(reason: str | None) -> str:
    """A refusal reason, short enough to count: its first clause."""
    text = (reason or "no reason given").split(":")[0].split(";")[0].strip()
    return text[:80]


def _shift(readable: list[dict], diagnosed: list[dict], reference: Reference) -> dict:
    """The window against one reference: refusals, the gate's score tail and the films' exposure (Fisher's exact tests:
    the reference is a sample too), the model's scores (Kolmogorov-Smirnov)."""
    from scipy.stats import fisher_exact

    why = []
    result: dict = {"against": reference.name, "reference_films": int(len(reference.positive))}
    n = len(readable)
    refused = sum(record.get("in_distribution") is False for record in readable)
    reference_films = len(reference.positive)
    # At least one refusal of the reference counted: a site sample that had none may well refuse a few in a hundred.
    reference_refused = max(round(reference.refused_share * reference_films), 1)
    result["reference_refused_share"] = round(reference.refused_share, 4)
    if n:
        p = fisher_exact([[refused, n - refused], [reference_refused, reference_films - reference_refused]], alternative="greater").pvalue
        result["refused_p"] = float(p)
        if p < ALERT_P and refused / n >= reference.refused_share + REFUSED_MARGIN:
            why.append(f"{refused / n:.0%} of the films were refused, against {reference.refused_share:.1%} of the {reference.name}")
    scores = np.array([record["ood_score"] for record in readable if record.get("ood_score") is not None], dtype=float)
    if reference.ood_score is not None and len(reference.ood_score) and len(scores):
        cut = float(np.quantile(reference.ood_score, TAIL_QUANTILE))
        above = int(np.sum(scores > cut))
        reference_above = int(np.sum(reference.ood_score > cut))
        p = fisher_exact([[above, len(scores) - above], [reference_above, len(reference.ood_score) - reference_above]],
                         alternative="greater").pvalue
        result.update(gate_tail_share=above / len(scores), gate_tail_p=float(p))
        if p < ALERT_P and above / len(scores) >= TAIL_SHARE:
            why.append(f"{above / len(scores):.0%} of the films look less like the {reference.name} to the gate than 95 % of them do")
    exposure = np.array([[record["pixel_mean"], record["pixel_std"]] for record in readable
                         if record.get("pixel_mean") is not None and record.get("pixel_std") is not None], dtype=float)
    if reference.exposure is not None and len(reference.exposure) and len(exposure):
        # Outside the reference films' central 95 % in brightness or contrast: another acquisition, even where the gate lets it through.
        low, high = np.quantile(reference.exposure, [(1 - TAIL_QUANTILE) / 2, (1 + TAIL_QUANTILE) / 2], axis=0)
        outside = int(np.sum(np.any((exposure < low) | (exposure > high), axis=1)))
        reference_outside = int(np.sum(np.any((reference.exposure < low) | (reference.exposure > high), axis=1)))
        p = fisher_exact([[outside, len(exposure) - outside], [reference_outside, len(reference.exposure) - reference_outside]],
                         alternative="greater").pvalue
        result.update(exposure_outside_share=outside / len(exposure), exposure_p=float(p))
        if p < ALERT_P and outside / len(exposure) >= EXPOSURE_MARGIN + reference_outside / len(reference.exposure):
            why.append(f"{outside / len(exposure):.0%} of the films are brighter, darker or of another contrast than 95 % of the "
                       f"{reference.name}")
    positive = np.array([record["probability_raw"] for record in diagnosed], dtype=float)
    if len(positive) >= MIN_SCORED:
        distance, p, share = _score_shift(positive, reference)
        result.update(score_distance=distance, score_p=p, score_mix_pneumonia=share)
        if p < ALERT_P and distance >= SCORE_DISTANCE:
            why.append(f"the model's scores are distributed unlike those of the {reference.name}, whatever their mix of normal and "
                       f"pneumonia (KS distance {distance:.2f})")
    result["why"] = why
    return result


def _score_shift(positive: np.ndarray, reference: Reference) -> tuple[float, float, float | None]:
    """The Kolmogorov-Smirnov distance of the window's scores from the nearest mix of the reference's two classes.

    A week with more pneumonia than the reference (an epidemic) shifts the scores without any
    change in the films: it is compared with the reference's normal and pneumonia films mixed in
    the proportion that fits it best, so that only scores no mix explains raise the alert.

    Returns:
        (distance, its p-value (two-sample, the reference counted as a sample), the best mix's share of pneumonia or None).
    """
    from scipy.stats import kstwobign

    if reference.labels is None or len(np.unique(reference.labels)) < 2:
        from scipy.stats import ks_2samp

        test = ks_2samp(positive, reference.positive)
        return float(test.statistic), float(test.pvalue), None
    grid = np.union1d(positive, reference.positive)
    window_cdf = np.searchsorted(np.sort(positive), grid, side="right") / len(positive)
    normal = np.sort(reference.positive[reference.labels == 0])
    pneumonia = np.sort(reference.positive[reference.labels == 1])
    normal_cdf = np.searchsorted(normal, grid, side="right") / len(normal)
    pneumonia_cdf = np.searchsorted(pneumonia, grid, side="right") / len(pneumonia)
    shares = np.linspace(0.0, 1.0, 51)
    distances = [float(np.max(np.abs(window_cdf - (share * pneumonia_cdf + (1 - share) * normal_cdf)))) for share in shares]
    best = int(np.argmin(distances))
    n, m = len(positive), len(reference.positive)
    p = float(kstwobign.sf(distances[best] * np.sqrt(n * m / (n + m))))
    return distances[best], p, float(shares[best])


def _sentence(summary: dict, shift: dict, reasons: list[str]) -> str:
    """The alert in a sentence a clinician can act on, or why the window is quiet."""
    if reasons:
        return (f"This window's films differ from the {shift['against']}: " + "; ".join(reasons)
                + ". Re-check the model on a sample of these films before trusting its answers.")
    refused = summary["refused_share"]
    return (f"Like the {shift['against']}: {summary['films']} films, {refused:.0%} refused, no shift beyond the alert rule."
            if refused is not None else "No readable film in this window.")
