"""Fold executors: each fold in a fresh child process (one or several at a time) gives what the in-process loop gives."""

from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np
import pytest

from zoidberg.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from zoidberg.runs.store import FOLDS_FILE, RunStore
from zoidberg.training.executors import choose_engine, choose_parallel, threads_per_child


def _tiny(demo_dir, **options) -> RunConfig:
    return RunConfig(
        data=DataConfig(str(demo_dir), "binary", 32),
        model=ModelConfig(architecture="cnn", conv_blocks=1, base_filters=4, dense_units=8),
        train=TrainConfig(epochs=2, batch_size=16, early_stopping_patience=0),
        n_splits=3, random_state=3, **options,
    )


def _train(store: RunStore, config: RunConfig):
    from zoidberg.training.cv import run_cross_validation
    from zoidberg.training.run_setup import config_payload

    run = store.create_run("cv", config_payload(config), name=config.engine)
    run_cross_validation(run)
    return run


def _out_of_fold(run) -> np.ndarray:
    parts = [np.load(run.fold_dir(fold) / "oof.npz") for fold in (1, 2, 3)]
    order = np.concatenate([part["indices"] for part in parts])
    return np.concatenate([part["probabilities"] for part in parts])[np.argsort(order)]


def test_three_folds_in_child_processes_match_the_in_process_loop(demo_dir, tmp_path, capfd):
    store = RunStore(tmp_path / "runs")
    here = _train(store, _tiny(demo_dir, engine="inprocess"))
    capfd.readouterr()  # This process's own TensorFlow start-up is not the children's.
    children = _train(store, _tiny(demo_dir, engine="local", parallel=2))
    # The children's TensorFlow start-up lines (absl, oneDNN) stay out of the console.
    err = capfd.readouterr().err
    assert "absl::InitializeLog" not in err and "oneDNN custom operations" not in err
    assert here.state == children.state == "completed", children.status()
    assert (here.path / FOLDS_FILE).read_text() == (children.path / FOLDS_FILE).read_text()
    assert all((children.fold_dir(fold) / "model.keras").is_file() for fold in (1, 2, 3))
    assert np.allclose(_out_of_fold(here), _out_of_fold(children), atol=1e-4)
    for name in ("roc_auc", "accuracy"):
        assert children.summary()["mean_std"][name]["mean"] == pytest.approx(here.summary()["mean_std"][name]["mean"], abs=1e-3)
    # The children's events reached the driver's one events.jsonl, fold by fold.
    assert sorted(event["fold"] for event in children.events("fold_finished")) == [1, 2, 3]
    assert len(children.events("epoch")) == len(here.events("epoch")) == 6


def test_a_stop_request_reaches_the_fold_children_and_keeps_finished_folds(demo_dir, tmp_path):
    from zoidberg.training.cv import run_cross_validation
    from zoidberg.training.run_setup import config_payload

    store = RunStore(tmp_path / "runs")
    config = dataclasses.replace(_tiny(demo_dir, engine="local"), train=TrainConfig(epochs=200, batch_size=16, early_stopping_patience=0))
    run = store.create_run("cv", config_payload(config), name="stop me")
    worker = threading.Thread(target=run_cross_validation, args=(run,))
    worker.start()
    deadline = time.monotonic() + 240
    while not run.events("epoch") and time.monotonic() < deadline:
        time.sleep(0.5)
    run.request_stop()
    worker.join(timeout=240)
    assert not worker.is_alive()
    assert run.state == "stopped", run.status()
    assert run.events("run_finished")[-1]["state"] == "stopped"


def test_auto_trains_tiny_runs_here_and_real_ones_in_children():
    assert choose_engine("auto", 1_300, 32) == "inprocess"
    assert choose_engine("auto", 5_232, 224) == "local"
    assert choose_engine("inprocess", 5_232, 224) == "inprocess"
    # A frozen backbone trains only heads on cached features: here, whatever the pixels.
    assert choose_engine("auto", 5_232, 224, heads_only=True) == "inprocess"
    assert choose_engine("local", 5_232, 224, heads_only=True) == "local"


def test_parallel_auto_is_bounded_by_cores_memory_and_folds():
    gigabyte = 1024**3
    assert choose_parallel("auto", 5, 128, cores=16, memory_bytes=64 * gigabyte) == 5
    assert choose_parallel("auto", 5, 128, cores=2, memory_bytes=64 * gigabyte) == 1
    assert choose_parallel("auto", 5, 224, cores=16, memory_bytes=2 * gigabyte) == 1
    assert choose_parallel(3, 2, 128) == 2
    assert threads_per_child(2, cores=16) == 8 and threads_per_child(5, cores=2) == 1


def test_bad_engine_options_say_what_to_change(demo_dir, capsys):
    from zoidberg.cli.main import main

    with pytest.raises(ValueError, match="choose another engine to train several at once"):
        _tiny(demo_dir, engine="inprocess", parallel=2)
    with pytest.raises(ValueError, match="auto or from 1 to 64"):
        _tiny(demo_dir, engine="local", parallel=0)
    with pytest.raises(SystemExit):
        main(["cv", "--data", str(demo_dir), "--parallel", "zero"])
    assert "expected a number of folds or auto" in capsys.readouterr().err
