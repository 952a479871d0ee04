"""The command line end to end, as a user runs it."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT, needs_shared_data

from zoidberg.cli import build_parser, main


def zoidberg(*args, check=True, env_extra=None):
    env = {**os.environ, **(env_extra or {})}
    result = subprocess.run([sys.executable, "-m", "zoidberg", *map(str, args)], capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}")
    return result


def run_in_process(capsys, *args):
    """Runs the CLI in this process (no TensorFlow start-up per call); returns (code, out, err)."""
    try:
        code = main([str(arg) for arg in args])
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("command", [[], ["cv"], ["folds"], ["predict"], ["runs"], ["demo-data"], ["resume"], ["stop"], ["tune"]])
def test_help_at_every_level(command, capsys):
    code, out, _ = run_in_process(capsys, *command, "--help")
    assert code == 0 and "usage:" in out
    if command == ["cv"]:
        for option in ("--arch", "--folds", "--conv-blocks", "--alpha", "--augment", "--patience", "--json", "--runs-dir"):
            assert option in out


def test_demo_folds_cv_runs_predict(tmp_path):
    demo = tmp_path / "demo"
    assert "synthetic" in zoidberg("demo-data", demo).stdout.lower()
    assert (demo / "SYNTHETIC.md").exists()

    folds_csv = tmp_path / "folds.csv"
    zoidberg("folds", "--data", demo, "--folds", 3, "--seed", 1, "--out", folds_csv)
    rows = list(csv.DictReader(folds_csv.open()))
    folds_of_patient = {}
    for row in rows:
        folds_of_patient.setdefault(row["patient"], set()).add(row["fold"])
    assert all(len(folds) == 1 for folds in folds_of_patient.values())
    assert {row["fold"] for row in rows} == {"1", "2", "3"}

    result = zoidberg(
        "cv", "--data", demo, "--arch", "cnn", "--folds", 2, "--epochs", 1, "--image-size", 32,
        "--base-filters", 8, "--dense-units", 16, "--conv-blocks", 2, "--name", "cli test", "--json",
    )
    summary = json.loads(result.stdout)
    run_id = summary["run_id"]
    assert len(summary["folds"]) == 2 and "roc_auc" in summary["mean_std"]

    listing = zoidberg("runs").stdout
    assert run_id in listing and "completed" in listing
    runs_json = json.loads(zoidberg("runs", "--json").stdout)
    assert runs_json[0]["id"] == run_id and runs_json[0]["roc_auc"] is not None

    image = next((demo / "test" / "PNEUMONIA").iterdir())
    predictions = json.loads(zoidberg("predict", "--run", run_id, image, "--json").stdout)
    assert 0.0 <= predictions[0]["probability"] <= 1.0
    assert predictions[0]["label"] in ("normal", "pneumonia")
    assert len(predictions[0]["per_fold"]) == 2

    junk = tmp_path / "notes.jpg"
    junk.write_text("not an image")
    mixed = zoidberg("predict", "--run", run_id, image, junk, check=False)
    assert mixed.returncode == 1
    assert "ERROR" in mixed.stdout and "Traceback" not in mixed.stderr
    assert str(image) in mixed.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["cv", "--data", "/nonexistent/folder"], "does not exist"),
        (["predict", "--run", "../etc", "x.png"], "not a run id"),
        (["predict", "--run", "20990101-000000-cv-000000", "x.png"], "No run"),
        (["resume", "/abs/path"], "not a run id"),
    ],
)
def test_user_errors_are_one_line_without_traceback(args, message, capsys):
    code, _, err = run_in_process(capsys, *args)
    assert code == 2
    assert message in err
    assert "Traceback" not in err and err.startswith("error: ")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--arch", "mobilenetv2", "--image-size", 16], "at least 32"),
        (["--epochs", 0], "epochs"),
        (["--learning-rate", -1], "learning_rate"),
        (["--folds", 40], "k (n_splits)"),
        # Checked against the data before any run folder exists.
        (["--folds", 9], "is more than the 8 patients"),
        (["--folds", 9, "--background"], "is more than the 8 patients"),
        (["--arch", "mobilenetv2", "--weights", "imagenet", "--alpha", 0.35], "not found"),
    ],
)
def test_cv_config_errors(args, message, demo_dir, capsys, runs_dir, monkeypatch, tmp_path):
    monkeypatch.delenv("ZOIDBERG_WEIGHTS_DIR", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty-keras-home"))
    code, _, err = run_in_process(capsys, "cv", "--data", demo_dir, *args)
    assert code == 2 and message in err
    assert not runs_dir.exists() or not any(runs_dir.iterdir())


def test_real_data_folds_share_no_patient(tmp_path):
    data = needs_shared_data("chest_xray_224")
    out = tmp_path / "folds.csv"
    zoidberg("folds", "--data", data, "--folds", 5, "--seed", 42, "--out", out)
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 5232
    folds_of_patient = {}
    for row in rows:
        folds_of_patient.setdefault(row["patient"], set()).add(row["fold"])
    assert all(len(folds) == 1 for folds in folds_of_patient.values())


def test_tune_then_cross_validate_the_best_from_the_command_line(demo_dir, runs_dir, capsys):
    space = '{"conv_blocks": 2, "base_filters": 8, "dense_units": 16, "batch_size": 16, "augmentation": false}'
    code, out, _ = run_in_process(
        capsys, "tune", "--data", demo_dir, "--arch", "cnn", "--algorithm", "bayesian", "--max-trials", 2,
        "--epochs", 1, "--image-size", 32, "--space", space,
    )
    assert code == 0, out
    assert "SYNTHETIC demo data" in out
    assert "Best hyperparameters:" in out
    run_id = next(line.split()[-1] for line in out.splitlines() if line.startswith("Run id:"))
    assert f"cv --from-tuning {run_id}" in out

    code, out, err = run_in_process(capsys, "cv", "--from-tuning", run_id, "--data", demo_dir, "--folds", 2, "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert len(summary["folds"]) == 2
    config = json.loads((runs_dir / summary["run_id"] / "config.json").read_text())
    assert config["source_tuning_run"] == run_id and config["model"]["base_filters"] == 8
    assert config["data_fingerprint"] and config["versions"]["tensorflow"]

    code, out, _ = run_in_process(capsys, "runs")
    tune_line = next(line for line in out.splitlines() if line.startswith(run_id))
    assert "best val_auc" in tune_line and "(synthetic data)" in tune_line


def _real_subset(root: Path, per_class: int) -> Path:
    """Links the first images of patients of each class of chest_xray_224 into a Kaggle layout."""
    source = needs_shared_data("chest_xray_224")
    for class_name in ("NORMAL", "PNEUMONIA"):
        target = root / "train" / class_name
        target.mkdir(parents=True)
        for path in sorted((source / "train" / class_name).iterdir())[:per_class]:
            (target / path.name).symlink_to(path)
    return root


def test_short_cross_validation_on_real_xrays_then_predict_a_full_resolution_file(tmp_path, capsys):
    data = _real_subset(tmp_path / "real", per_class=120)
    code, out, err = run_in_process(
        capsys, "cv", "--data", data, "--arch", "cnn", "--folds", 2, "--epochs", 1, "--image-size", 32,
        "--conv-blocks", 2, "--base-filters", 8, "--dense-units", 16, "--json",
    )
    assert code == 0, err
    summary = json.loads(out)
    assert "SYNTHETIC" not in err
    assert len(summary["folds"]) == 2 and 0.0 <= summary["mean_std"]["roc_auc"]["mean"] <= 1.0
    assert "Fold 2/2" in err

    original = sorted((needs_shared_data("chest_xray_fullres") / "train" / "PNEUMONIA").iterdir())[0]
    code, out, _ = run_in_process(capsys, "predict", "--run", summary["run_id"], original)
    assert code == 0
    assert f"{original}:" in out and "p_pneumonia=" in out


def test_three_class_cross_validation_prints_per_class_metrics(demo_dir, runs_dir, capsys):
    code, out, err = run_in_process(
        capsys, "cv", "--data", demo_dir, "--label-mode", "three-class", "--arch", "cnn", "--folds", 2,
        "--epochs", 1, "--image-size", 32, "--base-filters", 8, "--dense-units", 16,
    )
    assert code == 0, err
    table = out.split("Per class, out-of-fold predictions of all folds:")[1].splitlines()
    assert table[1].split()[:2] == ["class", "precision"]
    rows = {line.split()[0]: line.split() for line in table[2:5]}
    assert set(rows) == {"normal", "bacterial", "viral"}
    assert all(len(row) == 7 for row in rows.values())
    run_id = out.split("Run id: ")[1].split()[0]
    n_pooled = len((runs_dir / run_id / "folds.csv").read_text().strip().splitlines()) - 1
    assert sum(int(row[-1]) for row in rows.values()) == n_pooled


def test_every_training_option_of_the_registry_has_a_flag_a_field_and_a_search_dimension(capsys):
    """One table: each TRAINING_OPTIONS entry reaches cv --help, TrainConfig and (when tunable) the search space."""
    from zoidberg.config import TrainConfig
    from zoidberg.options.registry import TRAINING_OPTIONS
    from zoidberg.tuning.space import resolve_search_space

    _, help_text, _ = run_in_process(capsys, "cv", "--help")
    dimensions = {dimension.name: dimension for dimension in resolve_search_space("cnn", {}, 64)}
    for option in TRAINING_OPTIONS:
        assert option.cli_flag in help_text, option.name
        assert getattr(TrainConfig(), option.name) == option.default
        assert (option.name in dimensions) == option.tunable, option.name
    parser = build_parser()
    args = parser.parse_args(["cv", "--data", "x", "--label-smoothing", "0.1", "--augment", "--patience", "0"])
    assert (args.label_smoothing, args.augmentation, args.early_stopping_patience) == (0.1, True, 0)
    assert parser.parse_args(["cv", "--data", "x", "--augment", "false"]).augmentation is False


def test_a_folder_is_predicted_in_batches_to_csv_with_labels_and_skipped_files(trained, demo_dir, tmp_path, capsys):
    import shutil

    folder = tmp_path / "clinic"
    shutil.copytree(demo_dir / "test", folder)
    (folder / "NORMAL" / "readme.txt").write_text("not an X-ray")
    (folder / "PNEUMONIA" / "broken.jpeg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    out = tmp_path / "predictions.csv"
    run_id = trained.ids["baseline"]
    code, stdout, _ = run_in_process(capsys, "--runs-dir", trained.dir, "predict", "--run", run_id, folder, "--csv", out)
    assert code == 1  # Some files could not be used; the others were predicted.
    rows = list(csv.DictReader(out.open()))
    images = sorted(folder.rglob("*.jpeg"))
    assert len(rows) == len(images) + 1
    by_file = {row["file"]: row for row in rows}
    assert "not an image (text)" in by_file[str(folder / "NORMAL" / "readme.txt")]["error"]
    assert by_file[str(folder / "PNEUMONIA" / "broken.jpeg")]["error"]
    good = [row for row in rows if not row["error"]]
    assert {row["true_label"] for row in good} == {"normal", "pneumonia"}
    # A refused film has no diagnosis, so neither a probability nor a correct/incorrect.
    assert all(row["correct"] == ("" if row["prediction"] == "REFUSED" else str(row["true_label"] == row["prediction"])) for row in good)
    assert all(row["probability"] == "" for row in good if row["prediction"] == "REFUSED")
    assert "correct where the folder names the class" in stdout
    # Batched scoring gives what one file at a time gives.
    from zoidberg.inference.loading import load_ensemble

    ensemble = load_ensemble(run_id, runs_dir=trained.dir)
    diagnosed = next(row for row in good if row["prediction"] != "REFUSED")
    from zoidberg.inference.scoring import FilmSource, predict_sources

    (single,) = predict_sources(ensemble, [FilmSource(diagnosed["file"], Path(diagnosed["file"]))], door="cli")
    assert float(diagnosed["probability"]) == pytest.approx(single["probability"], abs=1e-5)


def test_a_full_disk_is_one_sentence_without_a_traceback(demo_dir, runs_dir, capsys, monkeypatch):
    import errno

    from zoidberg.training import fold_training

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(runs_dir / "fold_1" / "model.keras"))

    monkeypatch.setattr(fold_training, "train_fold", full)
    code, out, err = run_in_process(capsys, "cv", "--data", demo_dir, "--image-size", 32, "--epochs", 1, "--folds", 2)
    assert code == 1 and "Traceback" not in out + err
    assert "error: The disk is full" in err and "fold_1" in err and "resume" in err
    from zoidberg.runs.store import RunStore

    (run,) = RunStore(runs_dir).list_runs()
    assert run.state == "failed" and "Traceback" in run.status().get("traceback", "")


def test_weights_lists_what_is_present_and_an_offline_download_says_so(imagenet_weights_dir, monkeypatch, capsys, tmp_path):
    import keras

    monkeypatch.setenv("ZOIDBERG_WEIGHTS_DIR", str(imagenet_weights_dir))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    code, out, _ = run_in_process(capsys, "weights")
    assert code == 0 and f"present {imagenet_weights_dir}" in out and "missing (densenet121" in out

    def offline(*args, **kwargs):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    code, _, err = run_in_process(capsys, "weights", "--download", "densenet121")
    assert code == 2 and "may be offline" in err and "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5" in err
    assert "Traceback" not in err
