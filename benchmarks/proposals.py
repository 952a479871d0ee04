"""An engine fix that BENCHMARKS.md proposes, as a measured prototype (not used by the engine).

    python benchmarks/proposals.py [--data ../shared/data/chest_xray_224] [--repeats 3]

`fast_make_folds`: zoidberg.data.folds.make_folds calls sklearn's StratifiedGroupKFold, whose
greedy loop evaluates every fold for every patient with a dozen tiny NumPy calls (2,861
patients x 5 folds on chest_xray_224: seconds, inside every run's start-up). This evaluates
the k candidate folds of a patient in one array expression and compares in plain floats;
the assignment is bit-for-bit sklearn's (checked below).

It is timed against the engine's make_folds, alternating, median of repeats.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402


def fast_make_folds(labels, patients, n_splits: int, random_state: int) -> np.ndarray:
    """zoidberg.data.folds.make_folds's result (sklearn StratifiedGroupKFold, shuffle=True), faster."""
    from sklearn.utils import check_random_state

    labels, patients = np.asarray(labels), np.asarray(patients)
    rng = check_random_state(random_state)
    _, y_inv, y_cnt = np.unique(labels, return_inverse=True, return_counts=True)
    _, groups_inv, groups_cnt = np.unique(patients, return_inverse=True, return_counts=True)
    counts_per_group = np.zeros((len(groups_cnt), len(y_cnt)))
    np.add.at(counts_per_group, (groups_inv, y_inv), 1)
    permutation = np.arange(len(groups_cnt))
    rng.shuffle(permutation)  # The same draw as sklearn's, so the same order.
    counts_per_group = counts_per_group[permutation]
    inverse = np.empty_like(permutation)
    inverse[permutation] = np.arange(permutation.size)
    groups_inv = inverse[groups_inv]
    order = np.argsort(-np.std(counts_per_group, axis=1), kind="stable")
    counts_per_fold = np.zeros((n_splits, len(y_cnt)))
    fold_of_group = np.empty(len(groups_cnt), dtype=np.int64)
    one_hot = np.eye(n_splits)[:, :, None]
    scale = y_cnt.reshape(1, 1, -1)
    for group in order:
        group_counts = counts_per_group[group]
        # Candidate i = the fold counts with this patient added to fold i: (k, k, classes).
        candidates = (counts_per_fold[None] + one_hot * group_counts) / scale
        evaluations = np.mean(np.std(candidates, axis=1), axis=1).tolist()
        samples = counts_per_fold.sum(axis=1).tolist()
        best, min_eval, min_samples = 0, float("inf"), float("inf")
        for fold in range(n_splits):
            value = evaluations[fold]
            # sklearn's test: value < min or (np.isclose(value, min) and fewer samples).
            if value < min_eval or (abs(value - min_eval) <= 1e-8 + 1e-5 * abs(min_eval) and samples[fold] < min_samples):
                best, min_eval, min_samples = fold, value, samples[fold]
        counts_per_fold[best] += group_counts
        fold_of_group[group] = best
    return fold_of_group[groups_inv]


def _median_alternating(functions: dict, repeats: int) -> dict[str, float]:
    times = {name: [] for name in functions}
    items = list(functions.items())
    for index in range(repeats):
        for name, function in items if index % 2 == 0 else reversed(items):
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "data" / "chest_xray_224")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import tempfile

    from zoidberg.data.dataset import load_dataset
    from zoidberg.data.folds import make_folds

    root = args.data.resolve()
    with tempfile.TemporaryDirectory() as cache:
        dataset = load_dataset(root, image_size=128, cache_dir=cache)
    indices = dataset.training_indices()
    labels, patients = dataset.labels[indices], dataset.patients[indices]
    for n_splits, seed in ((5, 42), (3, 1), (10, 7)):
        same = np.array_equal(make_folds(labels, patients, n_splits, seed), fast_make_folds(labels, patients, n_splits, seed))
        print(f"folds k={n_splits} seed={seed}: identical to make_folds: {same}")
    times = _median_alternating(
        {"make_folds": lambda: make_folds(labels, patients, 5, 42), "fast_make_folds": lambda: fast_make_folds(labels, patients, 5, 42)},
        args.repeats,
    )
    print(f"folds k=5 on {len(labels)} images / {len(set(patients))} patients: make_folds {times['make_folds']:.2f} s, "
          f"fast_make_folds {times['fast_make_folds']:.2f} s ({times['make_folds'] / times['fast_make_folds']:.1f}x)")

    return 0


if __name__ == "__main__":
    sys.exit(main())
