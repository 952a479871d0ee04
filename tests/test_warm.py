"""The warm worker: at most one, it imports TensorFlow ahead of Start, takes the next run, and leaves when idle."""

from __future__ import annotations

import time

import pytest

from zoidberg.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from zoidberg.launch import jobs
from zoidberg.runs.liveness import pid_is_alive
from zoidberg.runs.store import RunStore
from zoidberg.launch.warm import claim_warm_worker, ensure_warm_worker, live_warm_workers
from zoidberg.training.run_setup import config_payload


def wait_until(predicate, timeout_s: float = 120.0, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} not reached within {timeout_s} s")


@pytest.fixture
def warm_on(monkeypatch):
    monkeypatch.setenv("ZOIDBERG_WARM_WORKER", "1")


def test_the_warm_worker_takes_the_next_run_and_trains_its_first_fold_at_once(warm_on, demo_dir, runs_dir):
    store = RunStore(runs_dir)
    assert ensure_warm_worker(store)
    assert not ensure_warm_worker(store), "at most one warm worker"
    warm = wait_until(lambda: next((facts for facts in live_warm_workers(store) if facts["ready"]), None), what="a ready warm worker")
    config = RunConfig(
        data=DataConfig(str(demo_dir), "binary", 32),
        model=ModelConfig(architecture="cnn", conv_blocks=2, base_filters=8, dense_units=16, dropout_rate=0.0),
        train=TrainConfig(epochs=1, batch_size=16, early_stopping_patience=0),
        n_splits=2, engine="local", tensorboard=False,
    )
    run_id = jobs.start_run("cv", config_payload(config), runs_dir=runs_dir)
    run = store.get(run_id)
    assert run.status()["pid"] == warm["pid"] and run.status()["warm"] is True
    wait_until(lambda: run.state in ("completed", "failed"), what="the run's end")
    assert run.state == "completed", run.status().get("error")
    log = (run.path / "worker.log").read_text(encoding="utf-8")
    assert "Fold 1 trains in the warm worker" in log
    assert len(run.fold_metrics()) == 2
    # One run per warm worker: it exits afterwards, and is not offered again.
    wait_until(lambda: not pid_is_alive(warm["pid"]), 60, "the warm worker's exit")
    assert live_warm_workers(store) == [] and claim_warm_worker(store, "nobody") is None


def test_an_idle_warm_worker_leaves_and_none_starts_when_turned_off(warm_on, runs_dir, monkeypatch):
    monkeypatch.setenv("ZOIDBERG_WARM_IDLE_S", "1")
    store = RunStore(runs_dir)
    assert ensure_warm_worker(store)
    pid = live_warm_workers(store)[0]["pid"]
    wait_until(lambda: not pid_is_alive(pid), 120, "the idle warm worker's exit")
    assert live_warm_workers(store) == []
    monkeypatch.setenv("ZOIDBERG_WARM_WORKER", "0")
    assert not ensure_warm_worker(store)
