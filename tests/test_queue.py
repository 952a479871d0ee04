"""The run queue: a worker started while the machine is full waits its turn, shows its position, and can be cancelled."""

from __future__ import annotations

import os
import threading
import time

import pytest

from zoidberg.launch.queue import MAX_RUNS_ENV, run_capacity, wait_for_slot
from zoidberg.runs.store import RunStore


def _running(store: RunStore, name: str):
    run = store.create_run("cv", {"n_splits": 2}, name=name)
    run.set_status("running", pid=os.getpid(), host=os.uname().nodename)
    run.heartbeat()
    return run


def _wait_in_thread(run, store):
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("started", wait_for_slot(run, store, capacity=1, poll_s=0.05)))
    thread.start()
    return thread, result


def _until(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_run_waits_while_the_machine_is_full_then_starts_first_come_first_served(tmp_path):
    store = RunStore(tmp_path / "runs")
    busy = _running(store, "busy")
    first = store.create_run("cv", {"n_splits": 2}, name="first")
    second = store.create_run("cv", {"n_splits": 2}, name="second")
    waiting_first, first_result = _wait_in_thread(first, store)
    _until(lambda: first.status().get("position") == 1)
    waiting_second, second_result = _wait_in_thread(second, store)
    _until(lambda: second.status().get("position") == 2)
    assert first.state == second.state == "queued"

    busy.set_status("completed")
    waiting_first.join(timeout=60)
    assert first_result == {"started": True} and waiting_second.is_alive()
    first.set_status("running", pid=os.getpid(), host=os.uname().nodename, waiting=False)
    first.heartbeat()
    first.set_status("completed")
    waiting_second.join(timeout=60)
    assert second_result == {"started": True}


def test_a_queued_run_can_be_cancelled_and_ends_stopped_without_training(tmp_path):
    store = RunStore(tmp_path / "runs")
    _running(store, "busy")
    queued = store.create_run("cv", {"n_splits": 2}, name="queued")
    thread, result = _wait_in_thread(queued, store)
    _until(lambda: queued.status().get("position") == 1)
    queued.request_stop()
    thread.join(timeout=60)
    assert result == {"started": False}
    assert queued.state == "stopped" and queued.events("run_finished")[-1]["state"] == "stopped"


def test_capacity_comes_from_the_environment_or_the_cores(monkeypatch):
    monkeypatch.setenv(MAX_RUNS_ENV, "3")
    assert run_capacity() == 3
    monkeypatch.setenv(MAX_RUNS_ENV, "many")
    with pytest.raises(ValueError, match="whole number"):
        run_capacity()
    monkeypatch.delenv(MAX_RUNS_ENV)
    assert run_capacity() == max(1, (os.cpu_count() or 1) // 2)
