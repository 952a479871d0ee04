"""Faults found by probing: each ends with a clear message, nothing lost and nothing half-written."""

from __future__ import annotations

import pytest

from zoidberg.runs.store import RunStore


def test_stop_on_a_finished_run_says_so_and_leaves_no_stop_file(runs_dir, capsys):
    from zoidberg.cli.main import main

    run = RunStore(runs_dir).create_run("cv", {"data": {}}, name="done")
    run.set_status("completed")
    assert main(["stop", run.id, "--runs-dir", str(runs_dir)]) == 0
    printed = capsys.readouterr().out
    assert "has already finished (completed): there is nothing to stop" in printed and "Stop requested" not in printed
    assert not run.stop_requested, "a stop file would stop the run's next resume at once"


def test_a_bad_max_runs_is_refused_before_any_run_is_created(runs_dir, monkeypatch):
    from zoidberg.runs.jobs import start_run

    monkeypatch.setenv("ZOIDBERG_MAX_RUNS", "abc")
    with pytest.raises(ValueError, match="ZOIDBERG_MAX_RUNS must be a whole number of runs, not 'abc'"):
        start_run("cv", {"data": {}}, runs_dir=runs_dir)
    assert not list(RunStore(runs_dir).list_runs())


def test_a_run_that_cannot_be_written_leaves_no_staging_folder(runs_dir, monkeypatch):
    from zoidberg.runs import store as store_module

    store = RunStore(runs_dir)
    store.ensure_writable()

    def full_disk(path, payload):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store_module, "write_json_atomic", full_disk)
    with pytest.raises(OSError, match="No space left"):
        store.create_run("cv", {"data": {}})
    assert [path.name for path in runs_dir.iterdir()] == [], "an empty .RUNID.* folder was left behind"


def _killed_fold(run, task):
    """A fold whose child dies as under the out-of-memory killer."""
    import os
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


def test_a_killed_fold_child_names_the_fold_and_suggests_resume(runs_dir):
    import numpy as np

    from zoidberg.training.executors import FoldChildDied, FoldTask, run_folds_in_children

    run = RunStore(runs_dir).create_run("cv", {"data": {}})
    task = FoldTask(fold_number=2, train_part=np.arange(3), validation_part=np.arange(3, 5), indices=np.arange(5))
    with pytest.raises(FoldChildDied, match=rf"fold 2 ended abruptly .*python -m zoidberg resume {run.id}"):
        run_folds_in_children(run, [task], _killed_fold, parallel=1, cores=1)


@pytest.mark.parametrize("finished", [True, False])
def test_a_damaged_status_file_is_named_and_never_turns_a_finished_run_into_a_queued_one(runs_dir, finished):
    from zoidberg.runs.store import STATUS_FILE, SUMMARY_FILE

    run = RunStore(runs_dir).create_run("cv", {"data": {}})
    if finished:
        run.write_json(SUMMARY_FILE, {"folds": []})
    (run.path / STATUS_FILE).write_text('{"state": "compl')
    status = run.status()
    if finished:
        assert run.state == "completed" and "status.json is damaged" in status["warning"]
    else:
        assert run.state == "interrupted" and "status.json is damaged" in status["error"] and f"resume {run.id}" in status["error"]
