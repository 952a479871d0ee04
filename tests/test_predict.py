"""Decisions of the fold ensemble as engine code: thresholds, spreads, the binary and three-class rules."""

from __future__ import annotations

import numpy as np
import pytest

from zoidberg.predict import DEFAULT_THRESHOLD, Prediction, decide

BINARY = ("normal", "pneumonia")
THREE = ("normal", "bacterial", "viral")


def binary_prediction(*pneumonia: float) -> Prediction:
    return Prediction(BINARY, np.array([[1 - value, value] for value in pneumonia]))


def test_binary_decision_applies_the_threshold_to_the_mean_over_folds():
    prediction = binary_prediction(0.6, 0.8)
    decision = decide(prediction, 0.75)
    assert decision.label == "normal" and decision.class_index == 0
    assert decision.probability == pytest.approx(0.7) and decision.spread == pytest.approx(0.1)
    assert decision.per_fold == pytest.approx((0.6, 0.8)) and decision.threshold == 0.75
    assert decision.class_probabilities == pytest.approx({"normal": 0.3, "pneumonia": 0.7})
    # At exactly the threshold the call is pneumonia; without one the default applies.
    assert decide(prediction, 0.7).label == "pneumonia"
    assert decide(prediction).label == "pneumonia" and decide(prediction).threshold == DEFAULT_THRESHOLD


def test_three_class_decision_takes_the_most_probable_class_and_ignores_thresholds():
    prediction = Prediction(THREE, np.array([[0.2, 0.5, 0.3], [0.2, 0.6, 0.2]]))
    decision = decide(prediction, 0.9)
    assert decision.label == "bacterial" and decision.threshold is None
    assert decision.probability == pytest.approx(0.55) and decision.per_fold == pytest.approx((0.5, 0.6))


def test_the_cli_json_of_a_decision_keeps_its_keys():
    payload = decide(binary_prediction(0.9), 0.5).to_dict()
    assert set(payload) == {
        "label", "class_index", "probability", "spread", "per_fold", "class_probabilities", "threshold",
        "scale", "probability_raw", "probability_calibrated",
    }
    assert payload["label"] == "pneumonia" and payload["per_fold"] == pytest.approx([0.9])


def test_calibrated_decisions_use_the_calibrated_probabilities_and_report_both():
    raw = np.array([[0.4, 0.6], [0.2, 0.8]])
    calibrated = np.array([[0.55, 0.45], [0.45, 0.55]])
    prediction = Prediction(BINARY, raw, calibrated)
    on_raw, on_calibrated = decide(prediction, 0.6, "raw"), decide(prediction, 0.6, "calibrated")
    assert on_raw.label == "pneumonia" and on_calibrated.label == "normal"
    assert on_calibrated.probability == pytest.approx(0.5) and on_calibrated.raw_probability == pytest.approx(0.7)
    # Without a calibration, "calibrated" falls back to raw and says so.
    assert decide(binary_prediction(0.9), 0.5, "calibrated").scale == "raw"
