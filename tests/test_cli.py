"""The command line end to end, as a user runs it."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT, needs_shared_data


def zoidberg(*args, check=True, env_extra=None):
    env = {**os.environ, **(env_extra or {})}
    result = subprocess.run([sys.executable, "-m", "zoidberg", *map(str, args)], capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}")
    return result


@pytest.mark.parametrize("command", [[], ["cv"], ["folds"], ["predict"], ["runs"], ["demo-data"], ["resume"], ["stop"]])
def test_help_at_every_level(command):
    result = zoidberg(*command, "--help")
    assert "usage:" in result.stdout
    if command == ["cv"]:
        for option in ("--arch", "--folds", "--conv-blocks", "--alpha", "--augment", "--patience", "--json", "--runs-dir"):
            assert option in result.stdout


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
def test_user_errors_are_one_line_without_traceback(args, message):
    result = zoidberg(*args, check=False)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_cv_config_errors(tmp_path, demo_dir):
    result = zoidberg("cv", "--data", demo_dir, "--arch", "mobilenetv2", "--image-size", 16, check=False)
    assert result.returncode == 2 and "at least 32" in result.stderr
    result = zoidberg("cv", "--data", demo_dir, "--epochs", 0, check=False)
    assert result.returncode == 2 and "epochs" in result.stderr
    result = zoidberg("cv", "--data", demo_dir, "--learning-rate", -1, check=False)
    assert result.returncode == 2 and "learning_rate" in result.stderr


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
