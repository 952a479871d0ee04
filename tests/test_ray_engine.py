"""The Ray engine on a real local Ray cluster: same results as the local engine, a killed worker retried, stop and resume."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from zoidberg.config import DataConfig, RunConfig, TrainConfig
from zoidberg.runs.store import RunStore
from zoidberg.runs.worker import reopen
from zoidberg.training.cv import run_cross_validation
from zoidberg.training.run_setup import config_payload

from conftest import REPO_ROOT
from test_cv import tiny_config as cv_tiny_config

def tiny_config(demo_dir, **changes) -> RunConfig:
    """test_cv's tiny run, with three folds, two epochs and no TensorBoard logs unless changed."""
    values = dict(n_splits=3, train=TrainConfig(epochs=2, batch_size=16, early_stopping_patience=0), tensorboard=False)
    return cv_tiny_config(demo_dir, **{**values, **changes})


@pytest.fixture(scope="module")
def ray_cluster():
    """One real local Ray cluster (2 CPUs, no dashboard) for the module's tests, as the engine starts it."""
    ray = pytest.importorskip("ray")
    from zoidberg.training.ray_engine import connect

    # Ray >= 2.59 turns token authentication on for local clusters and writes the token
    # under $HOME/.ray; the engine's own connect() is used so the package travels the same way.
    assert connect(None, num_cpus=2)
    yield ray
    ray.shutdown()


def read_folds(run) -> list[dict]:
    with open(run.path / "folds.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def oof_indices(run) -> list[int]:
    return sorted(np.concatenate([np.load(path)["indices"] for path in run.path.glob("fold_*/oof.npz")]).tolist())


def run_in_thread(run):
    """Runs the CV (this process is its driver) in a thread; returns the thread and where its outcome lands."""
    outcome = {}

    def body():
        try:
            outcome["summary"] = run_cross_validation(run)
        except Exception as error:  # The test reads it.
            outcome["error"] = error

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, outcome


def wait_for_event(run, predicate, timeout_s: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for event in run.events():
            if predicate(event):
                return event
        time.sleep(0.05)
    raise AssertionError(f"no such event within {timeout_s} s: {[event['type'] for event in run.events()]}")


def test_ray_cross_validation_matches_the_local_engine(ray_cluster, demo_dir, runs_dir):
    store = RunStore(runs_dir)
    local = store.create_run("cv", config_payload(tiny_config(demo_dir, engine="local")))
    on_ray = store.create_run("cv", config_payload(tiny_config(demo_dir, engine="ray")))
    local_summary = run_cross_validation(local)
    ray_summary = run_cross_validation(on_ray)
    assert on_ray.state == local.state == "completed"
    assert read_folds(on_ray) == read_folds(local)
    assert sorted(path.parent.name for path in on_ray.path.glob("fold_*/model.keras")) == ["fold_1", "fold_2", "fold_3"]
    assert oof_indices(on_ray) == oof_indices(local) == list(range(len(read_folds(local))))
    # Same seeds and data; only TensorFlow's thread pools differ between the two.
    np.testing.assert_allclose(
        [fold["roc_auc"] for fold in ray_summary["folds"]], [fold["roc_auc"] for fold in local_summary["folds"]], atol=0.05
    )
    started = [event for event in on_ray.events() if event["type"] == "fold_started"]
    assert len(started) == 3 and all(event["host"] and event["pid"] and event["attempt"] == 1 for event in started)
    # The driver alone wrote the events: one run_started and one run_finished, and every epoch.
    types = [event["type"] for event in on_ray.events()]
    assert types.count("run_started") == 1 and types[-1] == "run_finished" and types.count("epoch") == 6
    assert on_ray.status()["task_hosts"]


def test_a_killed_ray_worker_is_retried_and_nothing_is_lost(ray_cluster, demo_dir, runs_dir):
    # 64 px and 4 epochs: a fold lasts seconds after it starts, long enough to be killed mid-way.
    config = tiny_config(demo_dir, engine="ray", data=DataConfig(str(demo_dir), "binary", 64), train=TrainConfig(epochs=4, batch_size=8, early_stopping_patience=0))
    run = RunStore(runs_dir).create_run("cv", config_payload(config))
    thread, outcome = run_in_thread(run)
    first = wait_for_event(run, lambda event: event["type"] == "fold_started" and event.get("pid"))
    os.kill(first["pid"], signal.SIGKILL)
    thread.join(timeout=300)
    assert not thread.is_alive() and "error" not in outcome, outcome
    assert run.state == "completed"
    assert sorted(path.parent.name for path in run.path.glob("fold_*/metrics.json")) == ["fold_1", "fold_2", "fold_3"]
    retried = [event for event in run.events() if event["type"] == "fold_started" and event["fold"] == first["fold"]]
    assert [event["attempt"] for event in retried] == [1, 2]
    assert any("Ray runs it again" in event.get("message", "") for event in run.events() if event["type"] == "warning")
    assert len(outcome["summary"]["folds"]) == 3


def test_ray_run_stops_keeping_finished_folds_and_resumes(ray_cluster, demo_dir, runs_dir):
    config = tiny_config(demo_dir, engine="ray", data=DataConfig(str(demo_dir), "binary", 64), train=TrainConfig(epochs=3, batch_size=8, early_stopping_patience=0))
    run = RunStore(runs_dir).create_run("cv", config_payload(config))
    thread, outcome = run_in_thread(run)
    wait_for_event(run, lambda event: event["type"] == "fold_finished")
    run.request_stop()
    thread.join(timeout=300)
    assert not thread.is_alive() and "error" not in outcome, outcome
    assert run.state == "stopped"
    kept = sorted(path.parent.name for path in run.path.glob("fold_*/metrics.json"))
    assert 1 <= len(kept) < 3
    # Every kept fold is whole: its model and out-of-fold probabilities came back with it.
    assert all((run.path / name / "model.keras").exists() and (run.path / name / "oof.npz").exists() for name in kept)
    reopen(run)
    summary = run_cross_validation(run)
    assert run.state == "completed" and len(summary["folds"]) == 3
    assert len(oof_indices(run)) == len(read_folds(run))


def test_ray_address_refuses_an_unknown_form_and_a_local_engine(demo_dir):
    with pytest.raises(ValueError, match="ray_address must be auto, HOST:PORT"):
        tiny_config(demo_dir, engine="ray", ray_address="http://head:8265")
    with pytest.raises(ValueError, match="needs engine ray"):
        tiny_config(demo_dir, engine="local", ray_address="auto")
    assert tiny_config(demo_dir, engine="ray", ray_address="head.example.org:6379").ray_address == "head.example.org:6379"


def test_task_resources_share_the_cluster_and_never_ask_for_more_memory_than_it_has():
    from zoidberg.training.ray_engine import choose_task_resources

    cluster = {"CPU": 16.0, "GPU": 2.0, "memory": 64 * 1024**3}
    assert choose_task_resources(1, 5, 224, cluster).num_cpus == 16
    spread = choose_task_resources("auto", 5, 224, cluster)
    assert spread.num_cpus == 3 and spread.num_gpus == 0.4
    assert choose_task_resources(2, 5, 224, cluster).num_gpus == 1.0
    small = choose_task_resources("auto", 3, 224, {"CPU": 2.0, "memory": 1024**3})
    assert small.num_cpus == 1 and small.num_gpus == 0 and small.memory <= 1024**3 / 2


def test_engine_ray_without_ray_installed_says_what_to_install(demo_dir, tmp_path):
    # A `ray` module that fails to import stands in for a machine without the extra.
    (tmp_path / "ray.py").write_text("raise ImportError('No module named ray')\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO_ROOT)])}
    result = subprocess.run(
        [sys.executable, "-m", "zoidberg", "cv", "--data", str(demo_dir), "--engine", "ray", "--image-size", "32", "--epochs", "1"],
        capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "pip install -r requirements-ray.txt" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_joining_a_cluster_that_is_not_there_gives_a_plain_message(monkeypatch):
    pytest.importorskip("ray")
    import ray

    from zoidberg.training import ray_engine

    def refuse(*args, **kwargs):
        raise ConnectionError("Could not find any running Ray instance. Please specify the one to connect to.")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refuse)
    with pytest.raises(ValueError) as caught:
        ray_engine.connect("auto")
    message = str(caught.value)
    assert "ray start --head" in message and "RAY_AUTH_TOKEN" in message and "Could not find any running Ray instance" in message


def run_ray_search(demo_dir, runs_dir, **changes):
    """Runs a tiny search on Ray in this process (its driver) and checks what every search must show."""
    from test_tuning import tiny_tune_config

    from zoidberg.data.dataset import load_dataset
    from zoidberg.tuning.config import tune_payload
    from zoidberg.tuning.search import run_search

    config = tiny_tune_config(demo_dir, engine="ray", **changes)
    dataset = load_dataset(config.data.data_dir, **config.data.loader_options())
    run = RunStore(runs_dir).create_run("tune", tune_payload(config, dataset))
    summary = run_search(run)
    assert run.state == "completed", run.status()
    assert summary["n_completed"] == config.max_trials and summary["best_objective"] is not None
    rows = run.read_json("trials.json")
    assert all(row["status"] == "completed" and row["objective"] is not None for row in rows)
    types = [event["type"] for event in run.events()]
    assert types.count("trial_started") == types.count("trial_finished") == len(rows)
    # Every trial's epochs came back from its task, live, through the driver.
    assert types.count("epoch") >= len(rows)
    assert run.status()["task_hosts"]
    return run, types


def test_tuning_trials_run_as_ray_tasks_two_at_once_with_the_oracle_in_the_driver(ray_cluster, demo_dir, runs_dir):
    _, types = run_ray_search(demo_dir, runs_dir, algorithm="random", max_trials=3, epochs_per_trial=1, parallel=2)
    started = [index for index, kind in enumerate(types) if kind == "trial_started"]
    # The second trial started before the first finished.
    assert started[1] < types.index("trial_finished")


def test_a_hyperband_trial_on_ray_continues_from_the_weights_of_the_one_it_continues(ray_cluster, demo_dir, runs_dir):
    # Three epochs at most and factor 3: three one-epoch trials, then the best continued to
    # three epochs. One at a time, so that the continuation comes fourth (with several at
    # once Hyperband may open a new bracket first).
    run, _ = run_ray_search(demo_dir, runs_dir, algorithm="hyperband", max_trials=4, epochs_per_trial=3, parallel=1)
    # Its starting weights came back from the continued trial's task into keras-tuner's own checkpoint files.
    assert list((run.path / "tuner").rglob("checkpoint.weights.h5"))
    trials = [json.loads(path.read_text()) for path in (run.path / "tuner").glob("trial_*/trial.json")]
    continued = [trial for trial in trials if "tuner/trial_id" in trial["hyperparameters"]["values"]]
    assert len(continued) == 1 and continued[0]["status"] == "COMPLETED"
    assert continued[0]["hyperparameters"]["values"]["tuner/initial_epoch"] == 1
