"""MLflow, the optional extra: a finished run logged to a local file:// store and read back with MLflow's client."""

from __future__ import annotations

import shutil

import pytest

from zoidberg.cli.main import main
from zoidberg.runs.store import RunStore


@pytest.fixture
def baseline(trained, tmp_path):
    """A private copy of the tiny baseline run (logging writes its keras export into it)."""
    store = RunStore(tmp_path / "runs")
    source = trained.store.get(trained.ids["baseline"])
    shutil.copytree(source.path, store.root / source.id)
    return store, store.get(source.id)


def test_a_run_logged_to_a_file_store_reads_back_whole(baseline, tmp_path, capsys):
    mlflow = pytest.importorskip("mlflow")
    store, run = baseline
    uri = (tmp_path / "mlruns").as_uri()
    assert main(["--runs-dir", str(store.root), "mlflow", "--run", run.id, "--uri", uri]) == 0
    assert "Logged MLflow run" in capsys.readouterr().out

    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("zoidberg")
    [logged] = client.search_runs([experiment.experiment_id], filter_string=f"tags.`zoidberg.run_id` = '{run.id}'")
    assert logged.data.params["model.architecture"] == run.config["model"]["architecture"]
    assert logged.data.params["n_splits"] == str(run.config["n_splits"])
    assert logged.data.metrics["cv/roc_auc_mean"] == pytest.approx(run.summary()["mean_std"]["roc_auc"]["mean"])
    assert "eval/test/roc_auc" in logged.data.metrics
    # Every epoch of every fold, as a metric history.
    history = client.get_metric_history(logged.info.run_id, "fold_1/loss")
    assert [point.step for point in history] == list(range(len(run.read_fold_json(1)["history"]["loss"])))
    artifacts = {item.path for item in client.list_artifacts(logged.info.run_id)}
    assert {"config.json", "summary.json", "folds.csv", "evaluations", "exports"} <= artifacts
    assert {item.path for item in client.list_artifacts(logged.info.run_id, "exports/keras")} >= {"exports/keras/model.keras", "exports/keras/model_card.json"}

    # Logging again updates the same MLflow run instead of making a second one.
    assert main(["--runs-dir", str(store.root), "mlflow", "--run", run.id, "--uri", uri]) == 0
    assert "Updated MLflow run" in capsys.readouterr().out
    assert len(client.search_runs([experiment.experiment_id])) == 1


def test_without_mlflow_installed_the_message_says_what_to_install(baseline, monkeypatch, capsys):
    import importlib.util

    from zoidberg.integrations import mlflow_tracking as tracking

    store, run = baseline
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *rest: None if name == "mlflow" else real(name, *rest))
    assert main(["--runs-dir", str(store.root), "mlflow", "--run", run.id, "--uri", "file:///tmp/nowhere"]) == 2
    assert tracking.INSTALL_HINT in capsys.readouterr().err
    assert main(["--runs-dir", str(store.root), "mlflow", "--run", run.id, "--uri", ""]) == 2
    assert "--uri" in capsys.readouterr().err


def test_cv_with_an_mlflow_uri_logs_the_run_when_it_finishes(demo_dir, tmp_path, capsys):
    mlflow = pytest.importorskip("mlflow")
    uri = (tmp_path / "mlruns").as_uri()
    code = main(["--runs-dir", str(tmp_path / "runs"), "cv", "--data", str(demo_dir), "--image-size", "32", "--folds", "2",
                 "--epochs", "1", "--conv-blocks", "1", "--base-filters", "4", "--dense-units", "8", "--mlflow-uri", uri, "--json"])
    assert code == 0, capsys.readouterr()
    [run] = RunStore(tmp_path / "runs").list_runs()
    assert run.summary()["mlflow"]["run_id"]
    client = mlflow.MlflowClient(tracking_uri=uri)
    assert client.get_run(run.summary()["mlflow"]["run_id"]).data.tags["zoidberg.run_id"] == run.id
