"""Comparing runs as engine code: run records, folds.csv comparability, paired tests, summary tables, curves."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from zoidberg.evaluation import compare, paired


def test_comparability_trusts_folds_csv(trained):
    records = {
        name: compare.load_run_record(trained.store.get(run_id)) for name, run_id in trained.ids.items() if name != "stopped"
    }
    baseline, variant = records["baseline"], records["variant"]
    assert paired.check_comparability(baseline, variant).comparable
    moved = dataclasses.replace(variant, data={**variant.data, "fingerprint": "0000", "root": "/elsewhere"})
    verdict = paired.check_comparability(baseline, moved)
    assert verdict.comparable and "same fold" in verdict.notes[0]
    rows = list(variant.folds_csv)
    rows[1] = rows[1][:-1] + ("2" if rows[1][-1] == "1" else "1",)
    shuffled = dataclasses.replace(variant, folds_csv=tuple(rows))
    verdict = paired.check_comparability(baseline, shuffled)
    assert not verdict.comparable and "folds.csv differ" in verdict.reasons[0]
    assert not paired.check_comparability(baseline, dataclasses.replace(variant, folds_csv=None)).comparable
    tests = paired.paired_tests(baseline, variant)
    assert [test.metric for test in tests] == ["roc_auc", "accuracy"]
    assert all(test.verdict for test in tests)


def test_aggregate_history_aligns_folds_of_different_lengths():
    histories = [{"val_loss": [1.0, 0.8, 0.6]}, {"val_loss": [0.9, 0.7]}, {"loss": [1.0]}]
    curve = compare.aggregate_history(histories, "val_loss")
    assert curve["epoch"] == [1, 2, 3]
    assert curve["count"] == [2, 2, 1]
    assert curve["mean"] == pytest.approx([0.95, 0.75, 0.6])
    assert curve["low"][0] == 0.9 and curve["high"][0] == 1.0
    assert compare.aggregate_history(histories, "val_auc")["epoch"] == []


def test_summary_table_highlights_highest_score_and_lowest_cost(trained):
    records = compare.with_unique_names(
        [compare.load_run_record(trained.store.get(trained.ids[name])) for name in ("baseline", "variant")]
    )
    text, best = compare.summary_table(records)
    assert text.shape == best.shape
    parameters = [compare.parameter_count(record) for record in records]
    smaller = records[int(np.argmin(parameters))].label
    assert best.loc[compare.PARAMETERS_ROW, smaller]
    assert best.loc[compare.PARAMETERS_ROW].sum() == 1
    assert not best.loc[compare.EPOCHS_ROW].any()


def _with_fold_scores(record, auc: list[float], accuracy: list[float]):
    folds = [{**fold, "roc_auc": a, "accuracy": b} for fold, a, b in zip(record.summary["folds"], auc, accuracy)]
    return dataclasses.replace(record, summary={**record.summary, "folds": folds})


def test_a_metric_winner_is_marked_only_where_the_paired_test_supports_it(trained):
    records = compare.with_unique_names(
        [compare.load_run_record(trained.store.get(trained.ids[name])) for name in ("baseline", "variant")]
    )
    k = len(records[0].summary["folds"])
    auc_row, accuracy_row = compare.METRIC_LABELS["roc_auc"], compare.METRIC_LABELS["accuracy"]
    # Same folds, AUC clearly higher for the variant in every fold, accuracy the same.
    first = _with_fold_scores(records[0], [0.80 + 0.01 * fold for fold in range(k)], [0.8] * k)
    second = _with_fold_scores(records[1], [0.90 + 0.01 * fold + 0.001 * (fold % 2) for fold in range(k)], [0.8] * k)
    text, best = compare.summary_table([first, second])
    marks, meaning = paired.supported_best([first, second], best)
    assert marks.loc[auc_row, second.label] and not marks.loc[auc_row, first.label]
    assert not marks.loc[accuracy_row].any() and "finds a difference" in meaning and "AUC" in meaning
    untested = [row for row in marks.index if row not in (auc_row, accuracy_row, compare.PARAMETERS_ROW, compare.TIME_ROW)]
    assert untested and not marks.loc[untested].to_numpy().any()
    assert marks.loc[compare.PARAMETERS_ROW].sum() == best.loc[compare.PARAMETERS_ROW].sum() == 1
    # Different folds (k differs): no test, so no winner on any metric, and the sentence says why.
    shuffled = list(second.folds_csv)
    shuffled[0] = shuffled[0][:-1] + ("2" if shuffled[0][-1] == "1" else "1",)
    other = dataclasses.replace(second, folds_csv=tuple(shuffled))
    marks, meaning = paired.supported_best([first, other], compare.summary_table([first, other])[1])
    assert not marks.loc[[auc_row, accuracy_row]].to_numpy().any() and "no paired test is possible" in meaning
    # Within fold noise: nothing marked.
    noisy = _with_fold_scores(records[1], [0.80 + 0.01 * ((fold + 1) % k) for fold in range(k)], [0.8] * k)
    marks, meaning = paired.supported_best([first, noisy], compare.summary_table([first, noisy])[1])
    assert not marks.loc[[auc_row, accuracy_row]].to_numpy().any() and "no difference beyond fold noise" in meaning
    # Three runs: the table marks no metric winner.
    marks, meaning = paired.supported_best([first, second, noisy], compare.summary_table(compare.with_unique_names([first, second, noisy]))[1])
    assert "choose two" in meaning
