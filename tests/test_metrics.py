"""Tests for zoidberg.evaluation.metrics against hand-computed values and sklearn/scipy."""

import json
import math
import warnings

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import (
    average_precision_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

from zoidberg.config import OperatingPointChoice
from zoidberg.evaluation import curves, metrics, significance
from zoidberg.evaluation.operating import choose_threshold

# Ten cases built to give tn=4, fp=2, fn=1, tp=3 at threshold 0.5.
KNOWN_LABELS = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
KNOWN_PROBS = [0.9, 0.8, 0.6, 0.3, 0.7, 0.55, 0.4, 0.2, 0.1, 0.45]

# Hand-worked t-test example from the brief.
SCORES_A = [0.9, 0.85, 0.88, 0.92, 0.87]
SCORES_B = [0.8, 0.82, 0.79, 0.85, 0.81]


def _assert_plain_json(value):
    """Fails unless value serializes as strict JSON with only python built-in types."""
    json.dumps(metrics.to_jsonable(value), allow_nan=False)
    if isinstance(value, dict):
        for item in value.values():
            _assert_plain_json(item)
    elif isinstance(value, list):
        for item in value:
            _assert_plain_json(item)
    else:
        assert type(value) in (int, float, str, bool, type(None)), f"{value!r} is {type(value)}"


# ---------------------------------------------------------------------------
# binary_metrics
# ---------------------------------------------------------------------------


def test_binary_metrics_known_confusion_matrix():
    result = metrics.binary_metrics(KNOWN_LABELS, KNOWN_PROBS, threshold=0.5)
    assert result["confusion_matrix"] == [[4, 2], [1, 3]]
    assert result["n"] == 10
    assert result["threshold"] == 0.5
    assert result["accuracy"] == pytest.approx(7 / 10)
    assert result["sensitivity"] == pytest.approx(3 / 4)
    assert result["specificity"] == pytest.approx(4 / 6)
    assert result["precision"] == pytest.approx(3 / 5)
    assert result["f1"] == pytest.approx(2 * 3 / (2 * 3 + 2 + 1))
    assert result["balanced_accuracy"] == pytest.approx((3 / 4 + 4 / 6) / 2)


def test_binary_metrics_match_sklearn():
    predicted = (np.array(KNOWN_PROBS) >= 0.5).astype(int)
    result = metrics.binary_metrics(KNOWN_LABELS, KNOWN_PROBS)
    assert result["confusion_matrix"] == confusion_matrix(KNOWN_LABELS, predicted).tolist()
    assert result["precision"] == pytest.approx(precision_score(KNOWN_LABELS, predicted))
    assert result["sensitivity"] == pytest.approx(recall_score(KNOWN_LABELS, predicted))
    assert result["f1"] == pytest.approx(f1_score(KNOWN_LABELS, predicted))
    assert result["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(KNOWN_LABELS, predicted))
    assert result["roc_auc"] == pytest.approx(roc_auc_score(KNOWN_LABELS, KNOWN_PROBS))
    assert result["pr_auc"] == pytest.approx(average_precision_score(KNOWN_LABELS, KNOWN_PROBS))


def test_binary_metrics_threshold_is_inclusive():
    result = metrics.binary_metrics([0, 1], [0.3, 0.3], threshold=0.3)
    assert result["confusion_matrix"] == [[0, 1], [0, 1]]


def test_binary_metrics_returns_python_types():
    result = metrics.binary_metrics(np.array(KNOWN_LABELS), np.array(KNOWN_PROBS, dtype=np.float32))
    _assert_plain_json(result)


@pytest.mark.parametrize("only_class", [0, 1])
def test_binary_metrics_one_class_gives_nan_auc_without_warnings(only_class):
    labels = [only_class] * 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = metrics.binary_metrics(labels, [0.1, 0.4, 0.6, 0.9])
    assert math.isnan(result["roc_auc"])
    assert math.isnan(result["pr_auc"])
    assert result["accuracy"] == pytest.approx(0.5)
    if only_class == 1:
        assert math.isnan(result["specificity"])
        assert result["balanced_accuracy"] == pytest.approx(result["sensitivity"])
    else:
        assert math.isnan(result["sensitivity"])
        assert result["balanced_accuracy"] == pytest.approx(result["specificity"])


def test_binary_metrics_precision_is_nan_when_nothing_is_called_positive():
    result = metrics.binary_metrics([0, 1, 1], [0.1, 0.2, 0.3], threshold=0.9)
    assert math.isnan(result["precision"])
    assert result["f1"] == 0.0
    assert result["sensitivity"] == 0.0


@pytest.mark.parametrize(
    "labels, probs, threshold",
    [
        ([0, 1], [0.1], 0.5),
        ([0, 2], [0.1, 0.9], 0.5),
        ([0, 1], [0.1, 1.5], 0.5),
        ([0, 1], [0.1, float("nan")], 0.5),
        ([0, 1], [0.1, 0.9], 1.5),
        ([], [], 0.5),
    ],
)
def test_binary_metrics_rejects_bad_input(labels, probs, threshold):
    with pytest.raises(ValueError):
        metrics.binary_metrics(labels, probs, threshold)


# ---------------------------------------------------------------------------
# multiclass_metrics and evaluate_predictions
# ---------------------------------------------------------------------------

CLASS_NAMES = ["NORMAL", "BACTERIA", "VIRUS"]
# Class 1 (BACTERIA) is missing from y_true but predicted once (row 1).
MISSING_LABELS = np.array([0, 0, 2, 2, 0, 2, 2])
MISSING_PROBS = np.array(
    [
        [0.7, 0.2, 0.1],
        [0.3, 0.5, 0.2],
        [0.1, 0.1, 0.8],
        [0.5, 0.2, 0.3],
        [0.6, 0.3, 0.1],
        [0.2, 0.3, 0.5],
        [0.1, 0.2, 0.7],
    ]
)


def test_multiclass_with_missing_class_by_hand():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = metrics.multiclass_metrics(MISSING_LABELS, MISSING_PROBS, CLASS_NAMES)
    # Predictions are [0, 1, 2, 0, 0, 2, 2].
    assert result["confusion_matrix"] == [[2, 1, 0], [0, 0, 0], [1, 0, 3]]
    assert result["n"] == 7
    assert result["accuracy"] == pytest.approx(5 / 7)
    bacteria = result["per_class"]["BACTERIA"]
    assert bacteria["support"] == 0
    assert math.isnan(bacteria["recall"])
    assert math.isnan(bacteria["auc"])
    assert bacteria["precision"] == 0.0
    assert bacteria["f1"] == 0.0
    assert bacteria["specificity"] == pytest.approx(6 / 7)
    normal = result["per_class"]["NORMAL"]
    assert normal["precision"] == pytest.approx(2 / 3)
    assert normal["recall"] == pytest.approx(2 / 3)
    assert normal["specificity"] == pytest.approx(3 / 4)
    assert normal["support"] == 3
    assert result["per_class"]["VIRUS"]["recall"] == pytest.approx(3 / 4)
    # Balanced accuracy averages only the classes present: NORMAL 2/3 and VIRUS 3/4.
    assert result["balanced_accuracy"] == pytest.approx((2 / 3 + 3 / 4) / 2)
    expected_auc = np.mean(
        [roc_auc_score(MISSING_LABELS == index, MISSING_PROBS[:, index]) for index in (0, 2)]
    )
    assert result["macro_auc"] == pytest.approx(expected_auc)
    _assert_plain_json(result)


def test_multiclass_with_missing_class_matches_sklearn():
    predicted = MISSING_PROBS.argmax(axis=1)
    result = metrics.multiclass_metrics(MISSING_LABELS, MISSING_PROBS, CLASS_NAMES)
    with warnings.catch_warnings():
        # sklearn warns that a predicted class is absent from y_true; that case is the point.
        warnings.simplefilter("ignore")
        expected_balanced = balanced_accuracy_score(MISSING_LABELS, predicted)
    assert result["balanced_accuracy"] == pytest.approx(expected_balanced)
    assert result["macro_f1"] == pytest.approx(f1_score(MISSING_LABELS, predicted, average="macro"))


def test_multiclass_all_classes_matches_sklearn_ovr_auc():
    generator = np.random.default_rng(0)
    labels = np.tile([0, 1, 2], 20)
    logits = generator.normal(size=(60, 3)) + np.eye(3)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    result = metrics.multiclass_metrics(labels, probs, CLASS_NAMES)
    assert result["macro_auc"] == pytest.approx(roc_auc_score(labels, probs, multi_class="ovr"))
    assert result["macro_f1"] == pytest.approx(f1_score(labels, probs.argmax(axis=1), average="macro"))
    assert result["confusion_matrix"] == confusion_matrix(labels, probs.argmax(axis=1)).tolist()


def test_multiclass_rejects_wrong_number_of_columns():
    with pytest.raises(ValueError, match="shape"):
        metrics.multiclass_metrics([0, 1], [[0.5, 0.5], [0.4, 0.6]], CLASS_NAMES)


@pytest.mark.parametrize(
    "probs",
    [
        np.array(KNOWN_PROBS),
        np.array(KNOWN_PROBS)[:, None],
        np.stack([1 - np.array(KNOWN_PROBS), np.array(KNOWN_PROBS)], axis=1),
    ],
)
def test_evaluate_predictions_binary_accepts_all_shapes(probs):
    result = metrics.evaluate_predictions(KNOWN_LABELS, probs, ["NORMAL", "PNEUMONIA"])
    assert result["mode"] == "binary"
    assert result["confusion_matrix"] == [[4, 2], [1, 3]]
    assert result["roc_auc"] == pytest.approx(roc_auc_score(KNOWN_LABELS, KNOWN_PROBS))


def test_evaluate_predictions_multiclass_has_shared_keys():
    result = metrics.evaluate_predictions(MISSING_LABELS, MISSING_PROBS, CLASS_NAMES)
    assert result["mode"] == "multiclass"
    assert result["roc_auc"] == result["macro_auc"]
    assert result["accuracy"] == pytest.approx(5 / 7)


# ---------------------------------------------------------------------------
# The Youden rule the runs use (operating.choose_threshold), and ROC points
# ---------------------------------------------------------------------------

YOUDEN = OperatingPointChoice(method="youden")


def test_youden_threshold_unique_best():
    labels = [0, 0, 0, 1, 1, 1]
    probs = [0.1, 0.2, 0.3, 0.65, 0.8, 0.9]
    threshold = choose_threshold(np.array(labels), np.array(probs), YOUDEN)
    assert threshold == pytest.approx(0.65)
    result = metrics.binary_metrics(labels, probs, threshold)
    assert result["sensitivity"] == 1.0
    assert result["specificity"] == 1.0


def test_youden_threshold_tie_goes_to_the_higher_threshold():
    # J is 0.75 at both 0.7 (tpr 3/4, fpr 0) and 0.4 (tpr 1, fpr 1/4); the first ROC point
    # reaching the best J wins, the higher threshold, so the run raises fewer false alarms.
    labels = [0, 0, 0, 0, 1, 1, 1, 1]
    probs = [0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9]
    assert choose_threshold(np.array(labels), np.array(probs), YOUDEN) == pytest.approx(0.7)


def test_youden_threshold_maximizes_j_on_random_data():
    generator = np.random.default_rng(1)
    labels = generator.integers(0, 2, size=200)
    probs = np.clip(0.3 * labels + generator.uniform(0, 0.7, size=200), 0, 1)
    threshold = choose_threshold(labels, probs, YOUDEN)
    false_positive_rate, true_positive_rate, _ = roc_curve(labels, probs)
    result = metrics.binary_metrics(labels, probs, threshold)
    achieved = result["sensitivity"] + result["specificity"] - 1
    assert achieved == pytest.approx(np.max(true_positive_rate - false_positive_rate))
    assert 0.0 <= threshold <= 1.0


@pytest.mark.parametrize(
    "labels, probs",
    [
        ([1, 1, 1], [0.2, 0.5, 0.9]),
        ([0, 0], [0.2, 0.9]),
        # Perfectly wrong ranking: no threshold beats chance, so nobody is called positive.
        ([1, 1, 0, 0], [0.1, 0.2, 0.8, 0.9]),
    ],
)
def test_youden_threshold_degenerate(labels, probs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        if len(set(labels)) < 2:
            with pytest.raises(ValueError, match="both classes"):
                choose_threshold(np.array(labels), np.array(probs), YOUDEN)
        else:
            threshold = choose_threshold(np.array(labels), np.array(probs), YOUDEN)
            assert threshold == 1.0
            assert metrics.binary_metrics(labels, probs, threshold)["sensitivity"] == 0.0


def test_youden_threshold_is_finite_when_probability_is_one():
    threshold = choose_threshold(np.array([0, 1, 1]), np.array([0.2, 1.0, 1.0]), YOUDEN)
    assert threshold == 1.0


def test_roc_curve_points_keep_endpoints_and_downsample():
    generator = np.random.default_rng(2)
    labels = generator.integers(0, 2, size=2000)
    probs = generator.uniform(size=2000)
    points = curves.roc_curve_points(labels, probs, max_points=50)
    assert 2 < len(points["fpr"]) <= 50
    assert len(points["fpr"]) == len(points["tpr"]) == len(points["thresholds"])
    assert (points["fpr"][0], points["tpr"][0]) == (0.0, 0.0)
    assert (points["fpr"][-1], points["tpr"][-1]) == (1.0, 1.0)
    assert all(0.0 <= value <= 1.0 for value in points["thresholds"])
    assert points["fpr"] == sorted(points["fpr"])
    assert points["auc"] == pytest.approx(roc_auc_score(labels, probs))
    _assert_plain_json(points)


def test_roc_curve_points_small_curve_is_not_downsampled():
    points = curves.roc_curve_points(KNOWN_LABELS, KNOWN_PROBS)
    expected_fpr, expected_tpr, _ = roc_curve(KNOWN_LABELS, KNOWN_PROBS)
    assert points["fpr"] == pytest.approx(expected_fpr.tolist())
    assert points["tpr"] == pytest.approx(expected_tpr.tolist())
    assert points["thresholds"][0] == 1.0


def test_roc_curves_one_vs_rest_handles_missing_class():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        per_class = curves.roc_curves_one_vs_rest(MISSING_LABELS, MISSING_PROBS, CLASS_NAMES)
    assert set(per_class) == set(CLASS_NAMES)
    assert per_class["BACTERIA"]["fpr"] == []
    assert math.isnan(per_class["BACTERIA"]["auc"])
    assert per_class["VIRUS"]["fpr"][0] == 0.0 and per_class["VIRUS"]["tpr"][-1] == 1.0


# ---------------------------------------------------------------------------
# summarize_folds
# ---------------------------------------------------------------------------


def test_summarize_folds_mean_std_and_nan():
    folds = [
        {"accuracy": 0.8, "roc_auc": 0.9, "confusion_matrix": [[1, 0], [0, 1]], "mode": "binary"},
        {"accuracy": 0.9, "roc_auc": float("nan"), "extra": 1.0},
        {"accuracy": 0.7, "roc_auc": None},
        {"accuracy": np.float32(0.8), "roc_auc": 0.8},
    ]
    summary = metrics.summarize_folds(folds)
    assert list(summary) == ["accuracy", "roc_auc"]
    assert summary["accuracy"]["mean"] == pytest.approx(0.8)
    # Deviations 0, 0.1, -0.1, 0: sum of squares 0.02 over 3 degrees of freedom.
    assert summary["accuracy"]["std"] == pytest.approx(math.sqrt(0.02 / 3))
    assert summary["accuracy"]["count"] == 4
    assert summary["roc_auc"]["mean"] == pytest.approx(0.85)
    assert summary["roc_auc"]["std"] == pytest.approx(np.std([0.9, 0.8], ddof=1))
    assert summary["roc_auc"]["count"] == 2
    assert len(summary["roc_auc"]["values"]) == 4
    json.dumps(metrics.to_jsonable(summary), allow_nan=False)


def test_summarize_folds_single_fold_and_explicit_keys():
    summary = metrics.summarize_folds([{"accuracy": 0.75, "f1": 0.5}], keys=["f1"])
    assert summary == {"f1": {"mean": 0.5, "std": 0.0, "count": 1, "values": [0.5]}}
    with pytest.raises(ValueError, match="roc_auc"):
        metrics.summarize_folds([{"accuracy": 0.75}], keys=["roc_auc"])
    with pytest.raises(ValueError):
        metrics.summarize_folds([])
    assert metrics.summarize is metrics.summarize_folds


# ---------------------------------------------------------------------------
# corrected_resampled_ttest and comparison_verdict
# ---------------------------------------------------------------------------


def test_corrected_ttest_hand_calculated():
    result = significance.corrected_resampled_ttest(SCORES_A, SCORES_B, n_train=800, n_test=200)
    # Differences are 0.10, 0.03, 0.09, 0.07, 0.06: mean 0.07, squared deviations sum 0.003.
    mean_difference = 0.07
    variance = 0.003 / 4
    corrected_variance = (1 / 5 + 200 / 800) * variance
    expected_t = mean_difference / math.sqrt(corrected_variance)
    assert result["t_statistic"] == pytest.approx(expected_t)
    assert result["t_statistic"] == pytest.approx(3.8103, abs=1e-4)
    assert result["mean_difference"] == pytest.approx(mean_difference)
    assert result["df"] == 4
    assert result["k"] == 5
    assert result["n_train"] == 800 and result["n_test"] == 200
    assert result["p_value"] == pytest.approx(2 * stats.t.sf(expected_t, 4))
    margin = stats.t.ppf(0.975, 4) * math.sqrt(corrected_variance)
    assert result["ci_low"] == pytest.approx(mean_difference - margin)
    assert result["ci_high"] == pytest.approx(mean_difference + margin)
    _assert_plain_json(result)


def test_corrected_ttest_is_more_conservative_than_naive_paired_t():
    result = significance.corrected_resampled_ttest(SCORES_A, SCORES_B, n_train=800, n_test=200)
    naive = stats.ttest_rel(SCORES_A, SCORES_B)
    assert abs(result["t_statistic"]) < abs(naive.statistic)
    assert result["p_value"] > naive.pvalue


def test_corrected_ttest_p_value_matches_scipy_with_swapped_sign():
    result = significance.corrected_resampled_ttest(SCORES_B, SCORES_A, n_train=900, n_test=100)
    assert result["t_statistic"] < 0
    assert result["p_value"] == pytest.approx(2 * stats.t.cdf(result["t_statistic"], result["df"]))


def test_corrected_ttest_identical_scores():
    result = significance.corrected_resampled_ttest(SCORES_A, SCORES_A, n_train=800, n_test=200)
    assert result["t_statistic"] == 0.0
    assert result["p_value"] == 1.0
    assert result["ci_low"] == result["ci_high"] == 0.0


def test_corrected_ttest_constant_nonzero_difference():
    result = significance.corrected_resampled_ttest([0.9, 0.85, 0.8], [0.8, 0.75, 0.7], 100, 50)
    assert result["t_statistic"] == math.inf
    assert result["p_value"] == 0.0
    assert metrics.to_jsonable(result)["t_statistic"] is None


@pytest.mark.parametrize(
    "scores_a, scores_b, n_train, n_test, message",
    [
        ([0.9, 0.8], [0.8], 100, 50, "same folds"),
        ([0.9], [0.8], 100, 50, "at least 2"),
        ([0.9, float("nan")], [0.8, 0.7], 100, 50, "NaN"),
        ([0.9, 0.8], [0.8, 0.7], 0, 50, "n_train"),
        ([0.9, 0.8], [0.8, 0.7], 100, -1, "n_test"),
    ],
)
def test_corrected_ttest_validation(scores_a, scores_b, n_train, n_test, message):
    with pytest.raises(ValueError, match=message):
        significance.corrected_resampled_ttest(scores_a, scores_b, n_train, n_test)


def test_verdict_significant():
    result = significance.corrected_resampled_ttest(SCORES_A, SCORES_B, n_train=800, n_test=200)
    text = significance.comparison_verdict(result, "roc_auc", "MobileNetV2", "CNN")
    assert text.startswith("MobileNetV2 has a higher mean AUC than CNN by 0.070 (95% CI 0.019 to 0.121)")
    assert "is statistically significant" in text
    assert "not statistically significant" not in text
    assert "p = 0.02" in text
    assert "5 folds" in text
    assert "overlap" in text


def test_verdict_not_significant_names_the_better_model_first():
    # Differences -0.02, 0.02, -0.03, -0.02, -0.01: B is ahead on average but noisily.
    scores_a = [0.88, 0.87, 0.85, 0.90, 0.86]
    scores_b = [0.90, 0.85, 0.88, 0.92, 0.87]
    result = significance.corrected_resampled_ttest(scores_a, scores_b, n_train=800, n_test=200)
    assert result["p_value"] > 0.05
    text = significance.comparison_verdict(result, "roc_auc", "MobileNetV2", "CNN")
    assert text.startswith("CNN has a higher mean AUC than MobileNetV2 by 0.012")
    # The interval is flipped to describe CNN minus MobileNetV2.
    low, high = -result["ci_high"], -result["ci_low"]
    assert f"(95% CI \u2212{abs(low):.3f} to {high:.3f})" in text
    assert "not statistically significant" in text
    assert "equivalent" in text
    assert "overlap" in text


def test_verdict_respects_alpha_and_identical_scores():
    result = significance.corrected_resampled_ttest(SCORES_A, SCORES_B, n_train=800, n_test=200)
    strict = significance.comparison_verdict(result, "accuracy", "A", "B", alpha=0.01)
    assert "not statistically significant" in strict
    assert "mean accuracy" in strict
    same = significance.corrected_resampled_ttest(SCORES_A, SCORES_A, n_train=800, n_test=200)
    text = significance.comparison_verdict(same, "F1", "A", "B")
    assert "same mean F1" in text
    assert "p = 1.00" in text


def test_verdict_p_value_rounding_never_contradicts_alpha():
    result = {"mean_difference": 0.01, "ci_low": -0.001, "ci_high": 0.021, "p_value": 0.0496, "k": 5}
    text = significance.comparison_verdict(result, "roc_auc", "A", "B")
    # Two or three decimals would print 0.05 or 0.050, which reads as not below alpha.
    assert "p = 0.0496 < 0.05" in text
    assert "is statistically significant" in text
    above = significance.comparison_verdict({**result, "p_value": 0.0504}, "roc_auc", "A", "B")
    assert "p = 0.05)" in above
    assert "not statistically significant" in above


# ---------------------------------------------------------------------------
# to_jsonable
# ---------------------------------------------------------------------------


def test_to_jsonable_converts_numpy_and_non_finite():
    value = {
        np.int64(1): np.float32(0.5),
        "array": np.array([1.0, np.nan]),
        "nested": ({"inf": -math.inf, "flag": np.bool_(True)}, np.int32(3)),
        "nan": float("nan"),
    }
    converted = metrics.to_jsonable(value)
    assert converted == {
        "1": 0.5,
        "array": [1.0, None],
        "nested": [{"inf": None, "flag": True}, 3],
        "nan": None,
    }
    assert type(converted["nested"][1]) is int
    assert type(converted["nested"][0]["flag"]) is bool
    json.dumps(converted, allow_nan=False)
