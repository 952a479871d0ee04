"""Tuning engine: search space, patient-grouped split, every algorithm, stop and resume, CV from the best trial."""

from __future__ import annotations

import json

import numpy as np
import pytest

from zoidberg.config import DataConfig, RunConfig
from zoidberg.runs.store import RunStore
from zoidberg.tuning.config import ALGORITHMS, TuneConfig, tune_payload
from zoidberg.tuning.results import best_model_and_train_config, cv_config_from_tuning
from zoidberg.tuning.search import run_search as run_tuning
from zoidberg.tuning.space import grid_size, resolve_search_space
from zoidberg.tuning.split import tuning_split

# A tiny CNN with only the learning rate searched: each trial takes a second or two.
TINY_SPACE = {
    "conv_blocks": 2,
    "base_filters": 8,
    "dense_units": 16,
    "dropout_rate": 0.0,
    "batch_size": 16,
    "augmentation": False,
    "learning_rate": {"min_value": 1e-3, "max_value": 1e-2, "log": True},
}


def tiny_tune_config(demo_dir, **changes) -> TuneConfig:
    values = dict(
        data=DataConfig(str(demo_dir), "binary", 32),
        architecture="cnn",
        search_space=TINY_SPACE,
        algorithm="random",
        max_trials=2,
        epochs_per_trial=1,
        seed=7,
    )
    values.update(changes)
    return TuneConfig(**values)


# ---------------------------------------------------------------------------------------
# Search space and configuration (no training).
# ---------------------------------------------------------------------------------------


def test_default_space_comes_from_the_registry_and_fits_the_image_size():
    dimensions = {dimension.name: dimension for dimension in resolve_search_space("cnn", {}, 32)}
    assert set(dimensions) == {
        "conv_blocks", "base_filters", "kernel_size", "dense_units", "dropout_rate", "batch_norm",
        "learning_rate", "batch_size", "augmentation", "augmentation_policy", "lr_schedule", "label_smoothing",
    }
    # Four blocks of 3x3 need 46 px, so 32 px stops at three.
    assert dimensions["conv_blocks"].tuned and dimensions["conv_blocks"].max_value == 3
    assert dimensions["learning_rate"].log and dimensions["learning_rate"].step is None
    assert not dimensions["kernel_size"].tuned and dimensions["kernel_size"].value == 3
    assert dimensions["augmentation"].choices == (False, True)
    assert not dimensions["label_smoothing"].tuned and dimensions["label_smoothing"].value == 0.0
    assert not dimensions["augmentation_policy"].tuned and dimensions["augmentation_policy"].value == "light"
    assert dimensions["lr_schedule"].choices == ("constant", "cosine")
    mobilenet = {dimension.name: dimension for dimension in resolve_search_space("mobilenetv2", {}, 64)}
    assert mobilenet["alpha"].tuned and 0.35 in mobilenet["alpha"].choices
    assert not mobilenet["weights"].tuned and mobilenet["weights"].value is None


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"conv_blockz": {}}, "'conv_blockz' is not a hyperparameter of cnn"),
        ({"conv_blocks": {"min_value": 4, "max_value": 2}}, "conv_blocks min_value 4 must be below max_value 2"),
        ({"conv_blocks": {"max_value": 5}}, "conv_blocks up to 5 cannot be built at 32 px"),
        ({"conv_blocks": 5}, "smallest model cannot be built"),
        ({"learning_rate": {"min_value": 0.0, "max_value": 0.1}}, "learning_rate on a log scale needs min_value above 0"),
        ({"dropout_rate": {"max_value": 1.5}}, "dropout_rate"),
        ({"kernel_size": {"choices": [3, 4]}}, "kernel_size"),
        ({"batch_size": {"choices": []}}, "non-empty list of choices"),
        ({"conv_blocks": {"min": 1}}, "unknown key(s) min"),
        ({"base_filters": 2.5}, "whole number"),
    ],
)
def test_bad_search_spaces_are_refused_with_a_helpful_message(demo_dir, space, message):
    with pytest.raises(ValueError) as error:
        tiny_tune_config(demo_dir, search_space=space)
    assert message in str(error.value)


def test_config_round_trips_and_validates_its_options(demo_dir):
    config = tiny_tune_config(demo_dir, search_space={"kernel_size": {"choices": [3, 5]}, "base_filters": 16})
    again = TuneConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    assert [dimension.name for dimension in again.tuned_dimensions()] == [
        "conv_blocks", "kernel_size", "dense_units", "dropout_rate", "learning_rate", "batch_size", "augmentation",
    ]
    for changes, message in (
        ({"algorithm": "annealing"}, "algorithm must be one of"),
        ({"objective": "val_f1"}, "objective must be one of"),
        ({"max_trials": 0}, "max_trials"),
        ({"epochs_per_trial": 0}, "epochs per trial"),
        ({"algorithm": "grid", "search_space": {}}, "Grid search tries every combination"),
    ):
        with pytest.raises(ValueError, match=message):
            tiny_tune_config(demo_dir, **changes)
    grid = tiny_tune_config(demo_dir, algorithm="grid")
    assert grid_size(grid.dimensions()) == 10  # keras-tuner samples 10 values of a log range without a step.


def test_split_is_patient_disjoint_and_never_uses_the_test_split(demo_dir):
    from zoidberg.data.dataset import load_dataset

    dataset = load_dataset(demo_dir, image_size=32)
    train, validation = tuning_split(dataset, 0.2, seed=3)
    assert len(train) and len(validation)
    assert not set(train) & set(validation)
    assert set(dataset.patients[train]).isdisjoint(dataset.patients[validation])
    assert set(np.concatenate([train, validation])) == set(dataset.training_indices())
    assert set(np.concatenate([train, validation])).isdisjoint(dataset.test_indices())
    assert (dataset.splits[np.concatenate([train, validation])] != "test").all()
    for part in (train, validation):
        assert min(dataset.class_counts(part).values()) > 0


# ---------------------------------------------------------------------------------------
# Searches (tiny trials).
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_each_algorithm_runs_two_trials_into_the_run_store(demo_dir, runs_dir, algorithm):
    config = tiny_tune_config(demo_dir, algorithm=algorithm)
    run = RunStore(runs_dir).create_run("tune", tune_payload(config))
    lines = []
    summary = run_tuning(run, report=lines.append)
    assert run.state == "completed", run.status().get("error")
    trials = run.read_json("trials.json")
    assert [row["trial"] for row in trials] == [1, 2]
    assert all(row["status"] == "completed" and 0.0 <= row["objective"] <= 1.0 for row in trials)
    assert all(set(row["hyperparameters"]) == {"learning_rate"} for row in trials)
    assert summary["best_trial"] in (1, 2) and summary["best_hyperparameters"]["learning_rate"] > 0
    assert summary["best_model_config"]["base_filters"] == 8 and summary["best_train_config"]["batch_size"] == 16
    assert run.read_json("summary.json")["trials"] == trials
    # keras-tuner works inside the run folder.
    assert (run.path / "tuner" / "oracle.json").exists()
    types = [event["type"] for event in run.events()]
    assert types.count("trial_started") == 2 and types.count("trial_finished") == 2
    assert "best_so_far" in types and types[-1] == "run_finished"
    epochs = run.events("epoch")
    assert {event["trial"] for event in epochs} == {1, 2} and all("val_auc" in event["logs"] for event in epochs)
    started = run.events("trial_started")[0]
    assert set(started["hyperparameters"]) == {"learning_rate"}
    assert any("best so far" in line for line in lines)


def test_stop_during_trial_two_keeps_trial_one_and_resume_finishes(demo_dir, runs_dir):
    config = tiny_tune_config(demo_dir, algorithm="bayesian")
    run = RunStore(runs_dir).create_run("tune", tune_payload(config))

    def stop_when_trial_two_starts(line: str) -> None:
        if line.startswith("Trial 2/2:"):
            run.request_stop()

    result = run_tuning(run, report=stop_when_trial_two_starts)
    assert run.state == "stopped" and result["state"] == "stopped"
    kept = run.read_json("trials.json")
    assert [(row["trial"], row["status"]) for row in kept] == [(1, "completed")]
    # Trial two stopped within its first epoch, before keras-tuner recorded it.
    assert not [event for event in run.events("trial_finished") if event["trial"] == 2]

    run.clear_stop()
    run.set_status("queued")
    summary = run_tuning(run)
    assert run.state == "completed", run.status().get("error")
    trials = run.read_json("trials.json")
    assert [(row["trial"], row["status"]) for row in trials] == [(1, "completed"), (2, "completed")]
    assert trials[0]["hyperparameters"] == kept[0]["hyperparameters"]
    assert trials[0]["objective"] == pytest.approx(kept[0]["objective"])
    assert summary["n_completed"] == 2


# ---------------------------------------------------------------------------------------
# From the best trial to cross-validation (fabricated results, no training).
# ---------------------------------------------------------------------------------------


def fabricate_tuning_run(runs_dir, demo_dir, objective: str = "val_auc") -> str:
    config = tiny_tune_config(
        demo_dir, objective=objective, search_space={**TINY_SPACE, "batch_size": {"choices": [16, 32]}}
    )
    run = RunStore(runs_dir).create_run("tune", tune_payload(config), name="fabricated search")
    rows = [
        {"trial": 1, "trial_id": "0", "status": "completed", "objective": 0.71, "hyperparameters": {"learning_rate": 0.002, "batch_size": 16}, "epochs": 1},
        {"trial": 2, "trial_id": "1", "status": "completed", "objective": 0.83, "hyperparameters": {"learning_rate": 0.004, "batch_size": 32}, "epochs": 1},
        {"trial": 3, "trial_id": "2", "status": "failed", "objective": None, "hyperparameters": {"learning_rate": 0.009, "batch_size": 16}, "epochs": 1, "message": "boom"},
    ]
    run.write_json("trials.json", rows)
    run.set_status("stopped")
    return run.id


def test_best_configuration_feeds_cross_validation(demo_dir, runs_dir):
    run_id = fabricate_tuning_run(runs_dir, demo_dir)
    model, train, source = best_model_and_train_config(run_id)
    assert source == run_id
    assert (model.architecture, model.conv_blocks, model.base_filters, model.dense_units) == ("cnn", 2, 8, 16)
    assert (train.learning_rate, train.batch_size, train.epochs) == (0.004, 32, 1)

    config = cv_config_from_tuning(run_id, n_splits=3, epochs=2)
    assert isinstance(config, RunConfig)
    assert config.source_tuning_run == run_id and config.n_splits == 3 and config.train.epochs == 2
    assert config.data.image_size == 32 and config.data.data_dir == str(demo_dir)
    assert RunConfig.from_dict(config.to_dict()).source_tuning_run == run_id

    # val_loss is minimized, so the lower objective wins.
    loss_run = fabricate_tuning_run(runs_dir, demo_dir, objective="val_loss")
    assert best_model_and_train_config(loss_run)[1].learning_rate == 0.002


def test_cli_cv_from_tuning_takes_the_best_hyperparameters(demo_dir, runs_dir):
    from zoidberg.cli import build_parser, config_from_args

    run_id = fabricate_tuning_run(runs_dir, demo_dir)
    args = build_parser().parse_args(["cv", "--from-tuning", run_id, "--data", str(demo_dir), "--folds", "2"])
    args.runs_dir = None
    config = config_from_args(args)
    assert config.source_tuning_run == run_id
    assert (config.train.learning_rate, config.train.batch_size, config.train.epochs) == (0.004, 32, 1)
    assert (config.model.base_filters, config.data.image_size, config.n_splits) == (8, 32, 2)

    args = build_parser().parse_args(["cv", "--from-tuning", run_id, "--data", str(demo_dir), "--epochs", "4", "--image-size", "48"])
    args.runs_dir = None
    config = config_from_args(args)
    assert (config.train.epochs, config.data.image_size) == (4, 48)

    plain = build_parser().parse_args(["cv", "--data", str(demo_dir)])
    plain.runs_dir = None
    assert config_from_args(plain).source_tuning_run is None
    assert config_from_args(plain).data.image_size == 128


def test_best_configuration_needs_a_finished_trial(demo_dir, runs_dir):
    config = tiny_tune_config(demo_dir)
    run = RunStore(runs_dir).create_run("tune", tune_payload(config))
    with pytest.raises(ValueError, match="no finished trial"):
        best_model_and_train_config(run.id)
    cv_run = RunStore(runs_dir).create_run("cv", {"data": {"data_dir": str(demo_dir)}})
    with pytest.raises(ValueError, match="not a tuning run"):
        best_model_and_train_config(cv_run.id)
