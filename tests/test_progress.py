"""The one fold of a run's event stream: where a cross-validation or a search is, its ETA and overall progress."""

from __future__ import annotations

import pytest

from zoidberg.runs.progress import eta_seconds, format_duration, overall_fraction, read_progress


def test_progress_and_eta_come_from_epoch_events():
    events = [
        {"type": "run_started", "time": 100.0, "n_folds": 2, "epochs": 4},
        {"type": "fold_started", "fold": 1, "n_folds": 2},
        *(
            {"type": "epoch", "fold": 1, "epoch": epoch, "seconds": 2.0, "logs": {"loss": 0.5, "val_loss": 0.6}}
            for epoch in (1, 2, 3, 4)
        ),
        {"type": "fold_finished", "fold": 1, "n_folds": 2},
        {"type": "fold_started", "fold": 2, "n_folds": 2},
        {"type": "epoch", "fold": 2, "epoch": 1, "seconds": 2.0, "logs": {"loss": 0.4}},
        {"type": "progress", "fold": 2, "epoch": 2, "batch": 5, "steps": 10},
    ]
    progress = read_progress(events)
    assert (progress.unit, progress.current, progress.epoch, progress.batch, progress.steps) == ("fold", 2, 2, 5, 10)
    assert progress.finished == {1}
    assert len(progress.epoch_rows) == 5
    # 2.5 epochs left at 2 s each.
    assert eta_seconds(progress) == pytest.approx(5.0)
    assert overall_fraction(progress) == pytest.approx(5.5 / 8)


def test_search_progress_follows_trials_and_their_hyperparameters():
    progress = read_progress([
        {"type": "run_started", "n_trials": 5, "time": 1.0},
        {"type": "trial_started", "trial": 1, "epochs": 3, "hyperparameters": {"learning_rate": 0.001}},
        {"type": "epoch", "trial": 1, "epoch": 1},
        {"type": "trial_finished", "trial": 1},
        {"type": "trial_started", "trial": 2, "epochs": 3, "hyperparameters": {"learning_rate": 0.01}},
        {"type": "progress", "trial": 2, "epoch": 1, "batch": 4, "steps": 9},
    ])
    assert (progress.unit, progress.current, progress.epoch, progress.batch, progress.steps, progress.finished) == ("trial", 2, 1, 4, 9, {1})
    assert progress.hyperparameters == {"learning_rate": 0.01}


def test_a_restarted_fold_starts_its_curves_over_and_the_run_ends_done():
    events = [
        {"type": "run_started", "time": 1.0, "n_folds": 2, "epochs": 3},
        {"type": "fold_started", "fold": 1},
        {"type": "epoch", "fold": 1, "epoch": 1, "seconds": 1.0, "logs": {"loss": 0.9}},
        {"type": "resumed", "previous_state": "interrupted"},
        {"type": "run_started", "time": 5.0, "n_folds": 2, "epochs": 3},
        {"type": "fold_started", "fold": 1},
        {"type": "epoch", "fold": 1, "epoch": 1, "seconds": 3.0, "logs": {"loss": 0.8}},
    ]
    progress = read_progress(events)
    assert [row["loss"] for row in progress.epoch_rows] == [0.8]
    assert progress.started_at == 5.0 and progress.epoch_seconds == [3.0]
    assert read_progress([*events, {"type": "run_finished", "state": "completed"}]).phase == "done"
    assert read_progress([]).phase == "starting" and eta_seconds(read_progress([])) is None


@pytest.mark.parametrize(("seconds", "text"), [(None, "—"), (12.4, "12 s"), (185, "3 min 05 s"), (3720, "1 h 02 min")])
def test_durations_read_naturally(seconds, text):
    assert format_duration(seconds) == text
