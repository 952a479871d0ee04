"""The evaluation instruments against hand-computed values: ECE, Brier, PPV at a prevalence, net benefit, bootstrap, DeLong, McNemar."""

from __future__ import annotations

import math

import numpy as np
import pytest

from zoidberg.config import OperatingPointChoice
from zoidberg.evaluation.calibration import (
    Calibration,
    brier_score,
    expected_calibration_error,
    fit_calibration,
    reliability_bins,
)
from zoidberg.evaluation.operating import (
    adjust_to_prevalence,
    choose_threshold,
    net_benefit,
    operating_point,
    predictive_values,
    rates_at,
)
from zoidberg.evaluation.statistics import bootstrap_interval, delong_test, mcnemar_test


def test_ece_and_brier_match_the_hand_computed_values():
    labels = np.array([1, 0, 1, 1])
    positive = np.array([0.9, 0.2, 0.65, 0.4])
    # One image per bin: gaps 0.1, 0.2, 0.35 and 0.6.
    assert expected_calibration_error(labels, positive) == pytest.approx(1.25 / 4)
    assert brier_score(labels, positive) == pytest.approx((0.01 + 0.04 + 0.1225 + 0.36) / 4)
    # The (N, 2) form gives the same numbers; a perfect forecast gives zero.
    assert brier_score(labels, np.stack([1 - positive, positive], axis=1)) == pytest.approx(0.133125)
    assert brier_score(labels, labels.astype(float)) == 0.0
    bins = reliability_bins(labels, positive)
    assert [item["count"] for item in bins] == [0, 0, 1, 0, 1, 0, 1, 0, 0, 1]
    # A probability of exactly 1 falls in the last bin.
    assert reliability_bins([1], [1.0])[-1]["count"] == 1


def test_temperature_cools_overconfident_predictions_and_keeps_their_ranking():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 4000)
    # Scores z ~ N(±1, 1) have true log-odds 2z; reporting 4z is overconfident by a factor 2.
    logits = np.where(labels == 1, 1.0, -1.0) + rng.normal(0, 1.0, 4000)
    reported = 1 / (1 + np.exp(-4 * logits))
    calibration = fit_calibration(labels, np.stack([1 - reported, reported], axis=1), "temperature")
    assert calibration.temperature == pytest.approx(2.0, rel=0.1)
    calibrated = calibration.apply(reported)
    order = np.argsort(reported, kind="stable")
    assert np.all(np.diff(calibrated[order]) >= -1e-12), "temperature scaling must keep the ranking"
    assert expected_calibration_error(labels, calibrated) < expected_calibration_error(labels, reported) / 3
    platt = fit_calibration(labels, np.stack([1 - reported, reported], axis=1), "platt")
    assert platt.platt_slope == pytest.approx(0.5, rel=0.1) and abs(platt.platt_intercept) < 0.15
    assert Calibration.from_dict(platt.to_dict()) == platt
    with pytest.raises(ValueError, match="two classes"):
        fit_calibration(np.zeros(5, int), np.full((5, 2), 0.5))


def test_predictive_values_follow_bayes_rule_at_the_stated_prevalence():
    ppv, npv = predictive_values(0.9, 0.8, 0.3)
    assert ppv == pytest.approx(0.27 / (0.27 + 0.14))
    assert npv == pytest.approx(0.56 / (0.56 + 0.03))
    # At the training prevalence odds are unchanged; at a lower one P(pneumonia) falls.
    assert adjust_to_prevalence(np.array([0.5]), 0.74, 0.74)[0] == pytest.approx(0.5)
    lowered = adjust_to_prevalence(np.array([0.5]), 0.5, 0.2)[0]
    assert lowered == pytest.approx(0.2)


def test_net_benefit_matches_the_hand_computed_decision_curve():
    labels = np.array([1, 1, 0, 0, 0])
    positive = np.array([0.8, 0.3, 0.6, 0.1, 0.2])
    curve = net_benefit(labels, positive, np.array([0.25, 0.5]))
    # p_t 0.25: TP 2, FP 1 of 5 -> 2/5 - 1/5 * 1/3. p_t 0.5: TP 1, FP 1 -> 0.
    assert curve["model"] == pytest.approx([0.4 - 0.2 / 3, 0.0])
    assert curve["treat_all"] == pytest.approx([0.4 - 0.6 / 3, 0.4 - 0.6])
    assert curve["treat_none"] == [0.0, 0.0]


def test_delong_matches_the_hand_computed_structural_components():
    labels = np.array([1, 1, 1, 0, 0])
    scores_a = np.array([0.9, 0.8, 0.4, 0.3, 0.5])
    scores_b = np.array([0.7, 0.6, 0.2, 0.1, 0.65])
    result = delong_test(labels, scores_a, scores_b)
    # AUCs 5/6 and 4/6; Var(A - B) = (1/12)/3 + (1/18)/2 = 1/18 (worked out by hand).
    assert (result["auc_a"], result["auc_b"]) == pytest.approx((5 / 6, 4 / 6))
    assert result["difference"] == pytest.approx(1 / 6)
    assert result["std_error"] == pytest.approx(math.sqrt(1 / 18))
    assert result["z"] == pytest.approx((1 / 6) / math.sqrt(1 / 18))
    assert result["p_value"] == pytest.approx(0.4795, abs=1e-4)
    same = delong_test(labels, scores_a, scores_a)
    assert same["difference"] == 0.0 and same["p_value"] == 1.0


def test_mcnemar_counts_only_the_discordant_images():
    labels = np.zeros(10, int)
    predicted_a = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 0])
    predicted_b = np.array([0, 0, 0, 0, 0, 0, 0, 0, 0, 1])
    result = mcnemar_test(labels, predicted_a, predicted_b)
    assert (result["a_only_correct"], result["b_only_correct"]) == (1, 5)
    # Two-sided exact: 2 * P(X <= 1 | n = 6, 1/2) = 2 * 7 / 64.
    assert result["p_value"] == pytest.approx(14 / 64)


def test_bootstrap_interval_is_seeded_and_resamples_patients():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 60)
    scores = labels * 0.6 + rng.random(60) * 0.8
    patients = np.repeat(np.arange(20), 3)
    first = bootstrap_interval(labels, scores, patients, random_state=7)
    again = bootstrap_interval(labels, scores, patients, random_state=7)
    assert first == again
    assert first["low"] <= first["estimate"] <= first["high"] and first["patients"] == 20
    # Ten copies of each image as one patient widen nothing but count ten times: the
    # interval must be that of the 60 patients, not of 600 independent images.
    copies = bootstrap_interval(np.repeat(labels, 10), np.repeat(scores, 10), np.repeat(np.arange(60), 10), random_state=7)
    as_images = bootstrap_interval(np.repeat(labels, 10), np.repeat(scores, 10), np.arange(600), random_state=7)
    assert (copies["high"] - copies["low"]) > 2 * (as_images["high"] - as_images["low"])
    assert bootstrap_interval(np.zeros(6), np.arange(6), np.arange(6))["low"] is None


def test_threshold_methods_reach_their_targets():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 500)
    positive = 1 / (1 + np.exp(-(labels * 1.5 - 0.75 + rng.normal(0, 1, 500))))
    sensitive = choose_threshold(labels, positive, OperatingPointChoice("target-sensitivity", target=0.95))
    rates = rates_at(labels, positive, sensitive)
    assert rates["sensitivity"] >= 0.95
    # It is the highest such threshold: a hair higher misses the target.
    assert rates_at(labels, positive, sensitive + 1e-6)["sensitivity"] < 0.95
    specific = choose_threshold(labels, positive, OperatingPointChoice("target-specificity", target=0.9))
    assert rates_at(labels, positive, specific)["specificity"] >= 0.9
    cautious = choose_threshold(labels, positive, OperatingPointChoice("cost", cost_ratio=10.0))
    balanced = choose_threshold(labels, positive, OperatingPointChoice("cost", cost_ratio=1.0))
    assert cautious < balanced  # Missing pneumonia costing more lowers the threshold.
    assert choose_threshold(labels, positive, OperatingPointChoice("fixed-0.5")) == 0.5


def test_operating_point_reports_its_fold_wise_spread_and_predictive_values():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 400)
    positive = np.clip(labels * 0.4 + rng.random(400) * 0.6, 0, 1)
    fold_of = np.arange(400) % 4
    point = operating_point(labels, positive, fold_of, OperatingPointChoice("youden", prevalence=0.3))
    assert len(point["folds"]) == 4 and point["prevalence"] == 0.3 and point["prevalence_source"] == "stated"
    pooled = point["pooled"]
    assert pooled["ppv"] == pytest.approx(predictive_values(pooled["sensitivity"], pooled["specificity"], 0.3)[0])
    assert point["mean_std"]["sensitivity"]["std"] > 0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"method": "target-sensitivity"}, "sensitivity target"),
        ({"method": "guess"}, "threshold method must be one of"),
        ({"prevalence": 1.5}, "prevalence must be from 0.01 to 0.99"),
        ({"probabilities": "tempered"}, "raw or calibrated"),
        ({"cost_ratio": 0}, "cost_ratio"),
    ],
)
def test_operating_point_choices_are_validated_with_what_to_change(changes, message):
    with pytest.raises(ValueError, match=message):
        OperatingPointChoice(**changes)


def test_rank_auc_equals_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    from zoidberg.evaluation.statistics import rank_auc

    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.random(300) + labels * 0.3, 1)  # Rounded: many ties.
    assert rank_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))


@pytest.mark.parametrize("method", ["youden", "target-sensitivity", "target-specificity", "cost"])
def test_a_model_that_learned_nothing_gets_a_threshold_in_0_1_and_a_summary(method):
    # Bare-clone regression: a random frozen backbone ranks the films backwards, Youden's
    # best point is sklearn's "call nobody" point, and its threshold was 1 + 1e-9.
    from zoidberg.evaluation import metrics
    from zoidberg.config import OperatingPointChoice
    from zoidberg.evaluation.operating import choose_threshold, operating_point

    labels = np.array([0, 0, 0, 1, 1, 1])
    backwards = np.array([0.9, 0.8, 0.7, 0.3, 0.2, 0.1])
    choice = OperatingPointChoice(method, target=0.99) if method.startswith("target") else OperatingPointChoice(method)
    threshold = choose_threshold(labels, backwards, choice)
    assert 0.0 <= threshold <= 1.0
    point = operating_point(labels, backwards, np.array([0, 1, 0, 1, 0, 1]), choice)
    assert 0.0 <= point["threshold"] <= 1.0
    summary = metrics.binary_metrics(labels, backwards, threshold)
    assert summary["threshold"] == pytest.approx(threshold)
