"""Crashed and concurrent runs: kill -9 then resume, two runs at once, a shared cache with two writers."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
from conftest import REPO_ROOT
from test_cv import tiny_config

from zoidberg.config import TrainConfig
from zoidberg.data.dataset import load_dataset
from zoidberg.launch.jobs import start_run
from zoidberg.runs.store import RunStore
from zoidberg.training.run_setup import config_payload


def wait_for(predicate, timeout, interval=0.2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def wait_until_final(run, timeout=300):
    assert wait_for(lambda: run.state not in ("queued", "running"), timeout), run.status()
    return run.state


def test_kill_during_fold_two_then_resume_matches_uninterrupted(demo_dir, runs_dir):
    config = tiny_config(demo_dir, n_splits=3, train=TrainConfig(epochs=2, batch_size=4, early_stopping_patience=0))
    run = RunStore(runs_dir).get(start_run("cv", config_payload(config), runs_dir=runs_dir))
    assert wait_for(lambda: any(e.get("fold") == 2 for e in run.events("progress")), 240), (run.path / "worker.log").read_text()[-2000:]
    os.kill(run.status()["pid"], signal.SIGKILL)
    assert wait_for(lambda: run.state == "interrupted", 30)
    assert "Resume" in run.status()["error"]
    assert [m["fold"] for m in run.fold_metrics()] == [1]
    fold_one_model = run.model_path(1).read_bytes()

    result = subprocess.run(
        [sys.executable, "-m", "zoidberg", "--runs-dir", str(runs_dir), "resume", run.id],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=400,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Fold 1/3: already done, kept." in result.stdout
    assert run.state == "completed"
    assert run.model_path(1).read_bytes() == fold_one_model
    assert [m["fold"] for m in run.fold_metrics()] == [1, 2, 3]

    # An uninterrupted run of the same config gets the same folds and config.
    reference = RunStore(runs_dir).create_run("cv", config_payload(config))
    from zoidberg.training.cv import run_cross_validation

    run_cross_validation(reference)
    assert (reference.path / "folds.csv").read_text() == (run.path / "folds.csv").read_text()
    assert {k: v for k, v in reference.config.items()} == run.config
    assert reference.summary()["n_validation_per_fold"] == run.summary()["n_validation_per_fold"]


def test_two_runs_at_once_on_a_cold_cache(demo_dir, runs_dir):
    config = tiny_config(demo_dir)
    first = start_run("cv", config_payload(config), runs_dir=runs_dir)
    second = start_run("cv", config_payload(tiny_config(demo_dir, random_state=9)), runs_dir=runs_dir)
    assert first != second
    store = RunStore(runs_dir)
    assert wait_until_final(store.get(first)) == "completed"
    assert wait_until_final(store.get(second)) == "completed"
    assert store.get(first).summary()["folds"] and store.get(second).summary()["folds"]
    assert (store.get(first).path / "folds.csv").exists() and (store.get(second).path / "folds.csv").exists()
    # The shared cache both workers wrote is whole and valid.
    cached = load_dataset(demo_dir, image_size=32)
    assert cached.from_cache
    fresh = load_dataset(demo_dir, image_size=32, use_cache=False)
    np.testing.assert_array_equal(cached.images, fresh.images)


def test_cache_writers_race(demo_dir, tmp_path):
    code = (
        "import sys; from zoidberg.data.dataset import load_dataset;"
        f"load_dataset({str(demo_dir)!r}, image_size=40, cache_dir={str(tmp_path)!r})"
    )
    writers = [subprocess.Popen([sys.executable, "-c", code], cwd=REPO_ROOT) for _ in range(3)]
    assert all(writer.wait(timeout=120) == 0 for writer in writers)
    assert [path.name for path in tmp_path.iterdir() if path.name.endswith(".tmp")] == []
    assert load_dataset(demo_dir, image_size=40, cache_dir=tmp_path).from_cache


def test_stop_from_another_process(demo_dir, runs_dir):
    config = tiny_config(demo_dir, n_splits=3, train=TrainConfig(epochs=30, batch_size=4, early_stopping_patience=0))
    run = RunStore(runs_dir).get(start_run("cv", config_payload(config), runs_dir=runs_dir))
    assert wait_for(lambda: len(run.events("epoch")) >= 1, 240)
    subprocess.run([sys.executable, "-m", "zoidberg", "--runs-dir", str(runs_dir), "stop", run.id], check=True, cwd=REPO_ROOT, capture_output=True)
    requested = time.time()
    assert wait_until_final(run, 60) == "stopped"
    # Ends within about a batch: far less than the remaining 29 epochs.
    assert time.time() - requested < 30
