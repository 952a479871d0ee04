"""Cross-validation end to end on tiny generated data: outputs, stop requests, resume, background jobs."""

import json
import time

import numpy as np
import pytest

from zoidberg.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from zoidberg.runs.store import RunStore
from zoidberg.training.cv import run_cross_validation
from zoidberg.training.run_setup import config_payload

TINY_MODEL = ModelConfig(architecture="cnn", conv_blocks=2, base_filters=8, dense_units=16, dropout_rate=0.0)


def tiny_config(demo_dir, **changes) -> RunConfig:
    values = dict(
        data=DataConfig(str(demo_dir), "binary", 32),
        model=TINY_MODEL,
        train=TrainConfig(epochs=1, batch_size=16, early_stopping_patience=0),
        n_splits=2,
        random_state=3,
    )
    values.update(changes)
    return RunConfig(**values)


def test_cross_validation_writes_every_output(demo_dir, runs_dir):
    run = RunStore(runs_dir).create_run("cv", config_payload(tiny_config(demo_dir)))
    summary = run_cross_validation(run)
    assert run.state == "completed"
    assert len(summary["folds"]) == 2
    for key in ("accuracy", "sensitivity", "specificity", "precision", "f1", "roc_auc", "pr_auc", "train_seconds"):
        assert key in summary["mean_std"], key
    assert 0.0 <= summary["threshold"] <= 1.0
    assert summary["test"] is not None and "accuracy" in summary["test"]
    for fold in (1, 2):
        assert run.model_path(fold).exists()
        stored = run.read_json(f"fold_{fold}/metrics.json")
        assert len(stored["history"]["loss"]) == 1 and "val_loss" in stored["history"]
    # Every pooled image has exactly one out-of-fold probability.
    oof_indices = np.concatenate([np.load(path)["indices"] for path in run.path.glob("fold_*/oof.npz")])
    assert len(oof_indices) == len(set(oof_indices.tolist())) == sum(summary["n_validation_per_fold"])
    types = [event["type"] for event in run.events()]
    assert types[0] == "run_started" and types[-1] == "run_finished"
    assert types.count("epoch") == 2 and types.count("fold_finished") == 2
    assert json.loads((run.path / "config.json").read_text())["data"]["image_size"] == 32


def test_three_class_run_has_per_class_metrics(demo_dir, runs_dir):
    config = tiny_config(demo_dir, data=DataConfig(str(demo_dir), "three-class", 32))
    run = RunStore(runs_dir).create_run("cv", config_payload(config))
    summary = run_cross_validation(run)
    assert summary["class_names"] == ["normal", "bacterial", "viral"]
    assert np.asarray(summary["out_of_fold"]["confusion_matrix"]).shape == (3, 3)
    assert set(summary["out_of_fold"]["per_class"]) == {"normal", "bacterial", "viral"}
    assert "macro_auc" in summary["mean_std"]


def test_stop_request_ends_run_stopped_and_keeps_finished_folds(demo_dir, runs_dir, monkeypatch):
    from zoidberg.training import callbacks

    config = tiny_config(demo_dir, n_splits=3, train=TrainConfig(epochs=3, batch_size=4, early_stopping_patience=0))
    run = RunStore(runs_dir).create_run("cv", config_payload(config))
    original = callbacks.RunStoreCallback.on_train_batch_end

    def stop_in_fold_two(self, batch, logs=None):
        if self.fold == 2 and batch == 1:
            self.run.request_stop()
        return original(self, batch, logs)

    monkeypatch.setattr(callbacks.RunStoreCallback, "on_train_batch_end", stop_in_fold_two)
    result = run_cross_validation(run)
    assert result["state"] == "stopped"
    assert run.state == "stopped"
    assert [m["fold"] for m in run.fold_metrics()] == [1]
    progress = [e for e in run.events("progress") if e["fold"] == 2]
    # Stopped within the batch after the request, not at the end of the epoch.
    epochs_seen = {e["epoch"] for e in run.events("epoch") if e["fold"] == 2}
    assert epochs_seen <= {1}
    assert not run.model_path(2).exists()
    del progress


def test_background_job_runs_in_worker_process(demo_dir, runs_dir):
    from zoidberg.launch.jobs import start_run

    run_id = start_run("cv", config_payload(tiny_config(demo_dir)), runs_dir=runs_dir)
    run = RunStore(runs_dir).get(run_id)
    deadline = time.time() + 240
    while run.state in ("queued", "running") and time.time() < deadline:
        time.sleep(0.5)
    assert run.state == "completed", (run.status(), (run.path / "worker.log").read_text()[-3000:])
    import os

    assert run.status()["pid"] != os.getpid()


def test_bad_config_fails_before_training(demo_dir, runs_dir):
    config = tiny_config(demo_dir, n_splits=20)
    run = RunStore(runs_dir).create_run("cv", config_payload(config))
    with pytest.raises(ValueError, match="Choose k"):
        run_cross_validation(run)
    status = run.status()
    assert status["state"] == "failed" and "Choose k" in status["error"]


def test_every_fold_logs_to_tensorboard_unless_asked_not_to(trained, demo_dir, runs_dir):
    import dataclasses

    from conftest import _config
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from zoidberg.runs.store import TENSORBOARD_DIR

    run = trained.store.get(trained.ids["baseline"])
    for fold in (1, 2):
        folder = run.path / TENSORBOARD_DIR / f"fold_{fold}"
        logs = {path.parent.name for path in folder.rglob("events.out.tfevents.*")}
        assert logs == {"train", "validation"}
        accumulator = EventAccumulator(str(folder / "validation")).Reload()
        # Keras 3 writes scalars as TensorFlow summary tensors.
        assert "epoch_loss" in accumulator.Tags()["tensors"]
    quiet = RunStore(runs_dir).create_run("cv", config_payload(dataclasses.replace(_config(demo_dir), tensorboard=False)))
    run_cross_validation(quiet)
    assert quiet.state == "completed" and not (quiet.path / TENSORBOARD_DIR).exists()


def test_a_large_data_set_trains_with_its_mapped_pages_given_back(demo_dir, runs_dir, monkeypatch):
    from zoidberg.training import callbacks

    # Every set counts as large here: the data set is streamed into its cache and read through the mapping.
    monkeypatch.setenv("ZOIDBERG_STREAM_BYTES", "1")
    monkeypatch.setenv("ZOIDBERG_CACHE_DIR", str(runs_dir.parent / "stream-cache"))
    releases = []
    original = callbacks.PageRelease._release
    monkeypatch.setattr(callbacks.PageRelease, "_release", lambda self: (releases.append(1), original(self)))
    run = RunStore(runs_dir).create_run("cv", config_payload(tiny_config(demo_dir, engine="inprocess")))
    summary = run_cross_validation(run)
    assert run.state == "completed" and len(summary["folds"]) == 2
    assert len(releases) >= 2  # At least after each fold's epoch.
