"""Patient-grouped stratified folds."""

import numpy as np
import pytest

from zoidberg.data.folds import check_fold_count, fold_overview, make_folds, make_group_split, shared_patients


def make_samples(n_patients=40, seed=0):
    rng = np.random.default_rng(seed)
    patients, labels = [], []
    for patient in range(n_patients):
        label = int(patient % 3 == 0)
        for _ in range(rng.integers(1, 5)):
            patients.append(f"p{patient}")
            labels.append(label)
    return np.asarray(labels), np.asarray(patients, dtype=object)


@pytest.mark.parametrize("n_splits", [2, 3, 5])
def test_every_sample_in_exactly_one_fold_and_no_shared_patient(n_splits):
    labels, patients = make_samples()
    fold_of = make_folds(labels, patients, n_splits, random_state=7)
    assert fold_of.min() == 0 and fold_of.max() == n_splits - 1
    assert np.all(fold_of >= 0)
    assert shared_patients(patients, fold_of) == set()
    for row in fold_overview(labels, patients, fold_of, ("normal", "pneumonia")):
        assert row["normal"] > 0 and row["pneumonia"] > 0


def test_folds_are_deterministic_and_seeded():
    labels, patients = make_samples()
    np.testing.assert_array_equal(make_folds(labels, patients, 4, 1), make_folds(labels, patients, 4, 1))
    assert not np.array_equal(make_folds(labels, patients, 4, 1), make_folds(labels, patients, 4, 2))


def test_k_larger_than_smallest_class_patients_is_refused():
    labels = np.array([0, 0, 1, 1, 1, 1])
    patients = np.array(["a", "b", "c", "d", "e", "f"], dtype=object)
    with pytest.raises(ValueError, match=r"Choose k ≤ 2"):
        check_fold_count(labels, patients, 3, ("normal", "pneumonia"))


def test_group_split_is_patient_disjoint():
    labels, patients = make_samples()
    train, validation = make_group_split(labels, patients, 0.2, 3)
    assert not set(patients[train]) & set(patients[validation])
    assert len(train) + len(validation) == len(labels)
