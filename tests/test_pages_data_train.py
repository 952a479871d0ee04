"""AppTest checks of the Data and Train pages, including real worker runs that complete and stop."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from apptest_helpers import APP, SCRIPT_TIMEOUT_S, assert_no_exception, metric_values, open_app, texts, wait_for
from streamlit.testing.v1 import AppTest

from zoidberg.options.registry import TRAINING_OPTIONS
from zoidberg.runs.store import ACTIVE_STATES, RunStore

START_LABEL = "Start cross-validation"


def start_button(app: AppTest):
    """Returns the form's Start button."""
    return next(button for button in app.button if START_LABEL in button.label)


def fill_train_form(app: AppTest, **values) -> None:
    """Sets Train form widgets by key suffix (image_size, k, epochs, patience)."""
    for name, value in values.items():
        app.number_input(key=f"train_{name}").set_value(value)


# ---------------------------------------------------------------------------------------
# Data page.
# ---------------------------------------------------------------------------------------


def test_data_page_shows_counts_synthetic_label_and_grouped_folds(demo_dir):
    app = open_app(demo_dir)
    metrics = metric_values(app)
    image_count = sum(1 for _ in demo_dir.glob("*/*/*.jpeg"))
    assert metrics["Images"] == str(image_count)
    assert int(metrics["Patients"]) > 0
    assert metrics["Skipped files"] == "0"
    assert "Synthetic demo data — not real X-rays" in texts(app.warning)
    assert "No patient is shared between folds ✓" in texts(app.success)
    # The counts table and the fold overview are drawn.
    assert len(app.dataframe) >= 3

    app.number_input(key="data_fold_k").set_value(3).run()
    assert_no_exception(app)
    fold_table = next(frame.value for frame in app.dataframe if "fold" in frame.value.columns)
    assert len(fold_table) == 3


def test_data_page_defaults_to_the_generated_demo_data():
    from zoidberg.data.demo import default_demo_dir, is_synthetic_dataset

    app = AppTest.from_file(str(APP), default_timeout=SCRIPT_TIMEOUT_S).run()
    assert_no_exception(app)
    assert is_synthetic_dataset(default_demo_dir())
    assert app.text_input(key="data_dir_input").value == str(default_demo_dir())
    assert "Synthetic demo data — not real X-rays" in texts(app.warning)
    # The Train page uses the folder chosen here.
    app.switch_page("pages/train.py").run()
    assert_no_exception(app)
    assert str(default_demo_dir()) in texts(app.caption)


def test_data_page_lists_skipped_files_and_rejects_bad_folders(demo_dir, tmp_path):
    data = tmp_path / "with-corrupt"
    shutil.copytree(demo_dir, data)
    corrupt = data / "train" / "NORMAL" / "IM-9999-0001.jpeg"
    corrupt.write_bytes(b"this is not a JPEG")
    app = open_app(data)
    assert metric_values(app)["Skipped files"] == "1"
    assert "1 file(s) were skipped" in texts(app.warning)
    skipped = next(frame.value for frame in app.dataframe if "reason" in frame.value.columns)
    assert skipped["file"].tolist() == ["train/NORMAL/IM-9999-0001.jpeg"]
    assert skipped["reason"].iloc[0]

    app.text_input(key="data_dir_input").set_value(str(tmp_path / "missing")).run()
    assert_no_exception(app)
    assert "does not exist" in texts(app.error)


# ---------------------------------------------------------------------------------------
# Train page: validation.
# ---------------------------------------------------------------------------------------


def test_train_page_lists_every_architecture_and_its_hyperparameters(demo_dir):
    from zoidberg.options.registry import ARCHITECTURES

    app = open_app(demo_dir, "pages/train.py")
    assert app.selectbox(key="train_architecture").options == [
        f"{spec.label} ({name})" for name, spec in ARCHITECTURES.items()
    ]
    for name, spec in ARCHITECTURES.items():
        app.selectbox(key="train_architecture").set_value(name).run()
        assert_no_exception(app)
        keys = {widget.key for widget in app.main if getattr(widget, "key", None)}
        for parameter in spec.hyperparameters:
            assert f"hp_{name}_{parameter.name}" in keys, (name, parameter.name)
        # The training options come from the registry's one table too.
        for option in TRAINING_OPTIONS:
            assert f"train_{option.short_name}" in keys, option.name


def test_a_training_option_set_on_the_form_reaches_the_run_config(demo_dir, runs_dir, stop_workers_after):
    app = open_app(demo_dir, "pages/train.py")
    fill_train_form(app, image_size=32, k=2, epochs=1)
    app.slider(key="train_label_smoothing").set_value(0.1)
    start_button(app).click().run()
    assert_no_exception(app)
    (run,) = RunStore(runs_dir).list_runs(kind="cv")
    assert run.config["train"]["label_smoothing"] == 0.1


def test_the_engine_chosen_on_the_form_is_recorded_in_the_run(demo_dir, runs_dir, stop_workers_after):
    app = open_app(demo_dir, "pages/train.py")
    fill_train_form(app, image_size=32, k=2, epochs=1)
    app.selectbox(key="train_engine").set_value("local")
    app.selectbox(key="train_parallel").set_value("2")
    start_button(app).click().run()
    assert_no_exception(app)
    (run,) = RunStore(runs_dir).list_runs(kind="cv")
    assert (run.config["engine"], run.config["parallel"]) == ("local", 2)
    run.request_stop()


def test_train_refuses_k_larger_than_the_smallest_class(demo_dir, runs_dir):
    app = open_app(demo_dir, "pages/train.py")
    fill_train_form(app, image_size=32, k=20, epochs=1)
    start_button(app).click().run()
    assert_no_exception(app)
    assert "Not started" in texts(app.error)
    assert "k = 20" in texts(app.error)
    assert RunStore(runs_dir).list_runs() == []


def test_train_refuses_mobilenet_below_32_pixels(demo_dir, runs_dir):
    app = open_app(demo_dir, "pages/train.py")
    app.selectbox(key="train_architecture").set_value("mobilenetv2").run()
    fill_train_form(app, image_size=16, k=2, epochs=1)
    start_button(app).click().run()
    assert_no_exception(app)
    assert "32 px" in texts(app.error)
    assert RunStore(runs_dir).list_runs() == []


def test_train_refuses_missing_imagenet_weights(demo_dir, runs_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("ZOIDBERG_WEIGHTS_DIR", str(tmp_path / "no-weights"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "no-keras"))
    app = open_app(demo_dir, "pages/train.py")
    app.selectbox(key="train_architecture").set_value("mobilenetv2").run()
    app.selectbox(key="hp_mobilenetv2_weights").set_value("imagenet")
    fill_train_form(app, image_size=32, k=2, epochs=1)
    start_button(app).click().run()
    assert_no_exception(app)
    assert "ImageNet weights for MobileNetV2" in texts(app.error)
    assert RunStore(runs_dir).list_runs() == []


# ---------------------------------------------------------------------------------------
# Train page: real runs.
# ---------------------------------------------------------------------------------------


def test_start_runs_a_worker_to_completion_and_shows_the_summary(demo_dir, runs_dir, stop_workers_after):
    app = open_app(demo_dir, "pages/train.py")
    fill_train_form(app, image_size=32, k=2, epochs=1)
    start_button(app).click().run()
    assert_no_exception(app)
    runs = RunStore(runs_dir).list_runs()
    assert len(runs) == 1
    run = runs[0]
    assert run.config["model"]["architecture"] == "cnn"
    assert run.config["data"]["image_size"] == 32

    # A second click with the same config attaches instead of starting a duplicate.
    start_button(app).click().run()
    assert_no_exception(app)
    if run.state in ACTIVE_STATES:
        assert len(RunStore(runs_dir).list_runs()) == 1
        assert "already queued or running" in texts(app.info)

    def finished():
        return run.state not in ACTIVE_STATES

    wait_for(finished)
    assert run.state == "completed", run.status().get("error")
    # A fresh session (a reloaded browser tab) finds the run by itself.
    fresh = open_app(demo_dir, "pages/train.py")
    metrics = metric_values(fresh)
    for label in ("AUC", "Accuracy", "Sensitivity", "Specificity"):
        assert float(metrics[label]) >= 0.0
    assert "Cross-validation: mean ± std over 2 folds" in texts(fresh.markdown)
    assert "Held-out test split" in texts(fresh.markdown)
    labels = [button.label for button in fresh.get("download_button")]
    assert labels == ["⬇ keras export (.zip)", "⬇ config.json", "⬇ Fold models (.zip)"]

    # The report: made on demand into the run, then offered in both formats.
    next(button for button in fresh.button if button.label == "Make report").click().run(timeout=180)
    assert_no_exception(fresh)
    assert not fresh.error, [error.value for error in fresh.error]
    labels = [button.label for button in fresh.get("download_button")]
    assert "⬇ Report (.html)" in labels and "⬇ Report (.pdf)" in labels
    assert (run.path / "reports" / "report.pdf").read_bytes().startswith(b"%PDF")


def test_stop_ends_the_run_stopped_and_keeps_finished_folds(demo_dir, runs_dir, stop_workers_after):
    app = open_app(demo_dir, "pages/train.py")
    fill_train_form(app, image_size=32, k=2, epochs=30, patience=0)
    start_button(app).click().run()
    assert_no_exception(app)
    run = RunStore(runs_dir).list_runs()[0]
    # The started run shows at the top of the page, where the user clicked, with a link down to its live view.
    app.run()
    banner = texts(app.info)
    assert run.id in banner and "[Live view ↓](#runs)" in banner

    def first_fold_finished():
        return run.fold_metrics()

    wait_for(first_fold_finished)
    app.run()
    assert_no_exception(app)
    app.button(key=f"stop_{run.id}").click().run()
    assert_no_exception(app)

    def ended():
        return run.state not in ACTIVE_STATES

    wait_for(ended, timeout=60)
    assert run.state == "stopped"
    assert len(run.fold_metrics()) == 1
    app.run()
    assert_no_exception(app)
    assert "Stopped by request; 1 finished fold(s) kept" in texts(app.info)
    fold_one = (run.path / "fold_1" / "model.keras").read_bytes()

    # Resume from the button: a new worker trains fold 2 only and keeps fold 1 as it was.
    app.button(key=f"resume_{run.id}").click().run()
    assert_no_exception(app)
    wait_for(lambda: run.state == "completed")
    assert len(run.fold_metrics()) == 2
    assert (run.path / "fold_1" / "model.keras").read_bytes() == fold_one
    assert len(RunStore(runs_dir).list_runs()) == 1, "resuming must not start a second run"


# ---------------------------------------------------------------------------------------
# Finished views of fabricated runs (no training) and progress arithmetic.
# ---------------------------------------------------------------------------------------


def fabricate_completed_run(runs_dir: Path, class_names: tuple[str, ...], data_dir: Path) -> str:
    """Writes a completed two-fold run whose summary comes from the engine's metric functions."""
    import numpy as np

    from zoidberg.evaluation import metrics
    from zoidberg.evaluation.out_of_fold import roc_payload

    generator = np.random.default_rng(0)
    labels = np.arange(40) % len(class_names)
    probabilities = generator.dirichlet(np.ones(len(class_names)), size=len(labels))
    probabilities[np.arange(len(labels)), labels] += 0.5
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    folds = [np.arange(0, 20), np.arange(20, 40)]
    fold_results = [
        {
            **metrics.to_jsonable(metrics.evaluate_predictions(labels[part], probabilities[part], class_names, 0.5)),
            "train_seconds": 1.0,
        }
        for part in folds
    ]
    summary = {
        "class_names": list(class_names),
        "threshold": 0.5,
        "threshold_method": "youden" if len(class_names) == 2 else "argmax",
        "folds": fold_results,
        "mean_std": metrics.to_jsonable(metrics.summarize_folds(fold_results)),
        "out_of_fold": metrics.to_jsonable(metrics.evaluate_predictions(labels, probabilities, class_names, 0.5)),
        "roc": metrics.to_jsonable(roc_payload(labels, probabilities, class_names)),
        "test": None,
    }
    label_mode = "binary" if len(class_names) == 2 else "three-class"
    config = {
        "data": {"data_dir": str(data_dir), "label_mode": label_mode, "image_size": 32},
        "model": {"architecture": "cnn"},
        "n_splits": 2,
        "train": {"epochs": 1},
    }
    run = RunStore(runs_dir).create_run("cv", config, name=f"fabricated {label_mode}")
    for fold, part in enumerate(folds, start=1):
        run.fold_dir(fold)
        run.write_json(
            f"fold_{fold}/metrics.json",
            {
                "fold": fold,
                "metrics": fold_results[fold - 1],
                "n_validation": len(part),
                "epochs_trained": 1,
                "train_seconds": 1.0,
            },
        )
    run.write_json("summary.json", summary)
    run.set_status("completed")
    return run.id


@pytest.mark.parametrize("class_names", [("normal", "pneumonia"), ("normal", "bacterial", "viral")])
def test_finished_view_shows_summary_matrix_and_roc(demo_dir, runs_dir, class_names):
    fabricate_completed_run(runs_dir, class_names, demo_dir)
    app = open_app(demo_dir, "pages/train.py")
    metrics = metric_values(app)
    assert ("AUC" if len(class_names) == 2 else "Macro AUC") in metrics
    assert "Out-of-fold predictions" in texts(app.markdown)
    charts = app.get("plotly_chart")
    assert len(charts) >= 2  # Confusion matrix and ROC curve.
    if len(class_names) == 3:
        per_class = next(frame.value for frame in app.dataframe if "support" in frame.value.columns)
        assert per_class["class"].tolist() == list(class_names)


def fabricate_running_run(runs_dir: Path, data_dir: Path, name: str, fold: int, val_auc: float) -> str:
    """Writes a run that looks alive (this process's pid, a fresh heartbeat) in fold `fold` of 3."""
    config = {
        "data": {"data_dir": str(data_dir), "label_mode": "binary", "image_size": 32},
        "model": {"architecture": "cnn"},
        "n_splits": 3,
        "train": {"epochs": 4},
    }
    run = RunStore(runs_dir).create_run("cv", config, name=name)
    run.set_status("running", pid=os.getpid(), host=os.uname().nodename)
    run.heartbeat()
    run.append_event("run_started", n_folds=3, epochs=4)
    for done in range(1, fold):
        run.append_event("fold_started", fold=done, n_folds=3)
        run.append_event("fold_finished", fold=done)
    run.append_event("fold_started", fold=fold, n_folds=3)
    run.append_event("epoch", fold=fold, epoch=1, epochs=4, seconds=1.0, logs={"loss": 0.6, "val_auc": val_auc})
    return run.id


def test_two_active_runs_are_shown_live_side_by_side(demo_dir, runs_dir):
    first = fabricate_running_run(runs_dir, demo_dir, "cnn live", fold=1, val_auc=0.61)
    second = fabricate_running_run(runs_dir, demo_dir, "mobilenet live", fold=2, val_auc=0.72)
    app = open_app(demo_dir, "pages/train.py")
    assert "2 runs in progress" in texts(app.markdown)
    table = next(frame.value for frame in app.dataframe if "latest val AUC" in frame.value.columns)
    rows = table.set_index("id")
    assert set(rows.index) == {first, second}
    assert rows.loc[first, "fold"] == "1/3" and rows.loc[second, "fold"] == "2/3"
    assert rows.loc[second, "latest val AUC"] == pytest.approx(0.72)
    assert 0.0 < rows.loc[second, "progress"] < 1.0


def test_failed_run_shows_its_error_and_a_resume_button(demo_dir, runs_dir):
    run = RunStore(runs_dir).create_run("cv", {"data": {"data_dir": "/nowhere"}, "n_splits": 2}, name="broken")
    run.set_status("failed", error="Data folder /nowhere does not exist or is not a folder.")
    app = open_app(demo_dir, "pages/train.py")
    assert "Data folder /nowhere does not exist" in texts(app.error)
    assert app.button(key=f"resume_{run.id}")


def test_data_page_lists_duplicates_that_cross_patients(demo_dir, tmp_path):
    data = tmp_path / "with-copies"
    shutil.copytree(demo_dir, data)
    source = sorted((data / "train" / "NORMAL").glob("IM-*.jpeg"))[0]
    shutil.copy(source, data / "train" / "NORMAL" / "IM-9999-0001.jpeg")
    app = open_app(data)
    assert "1 group(s) of byte-identical files" in texts(app.warning) and "1 cross patients" in texts(app.warning)
    duplicates = next(frame.value for frame in app.dataframe if "across patients" in frame.value.columns)
    assert list(duplicates["across patients"]) == ["yes"]
    clean = open_app(demo_dir)
    assert "No duplicate images" in texts(clean.success)


# ---------------------------------------------------------------------------------------
# The login gate (Streamlit's own OIDC login, when secrets configure it).
# ---------------------------------------------------------------------------------------


def test_with_auth_configured_only_a_logged_in_user_sees_the_pages(demo_dir):
    app = AppTest.from_file(str(APP), default_timeout=SCRIPT_TIMEOUT_S)
    app.secrets["auth"] = {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "test-secret",
                           "client_id": "zoidberg", "client_secret": "x", "server_metadata_url": "https://idp.example/.well-known/openid-configuration"}
    app.run()
    assert_no_exception(app)
    assert [button.label for button in app.button] == ["Log in"]
    assert "log in to see its runs" in texts(app.markdown)
    assert not app.get("metric") and not app.tabs

    app.user["is_logged_in"] = True
    app.user["email"] = "clinician@example.org"
    app.run()
    assert_no_exception(app)
    assert "Logged in as clinician@example.org" in texts(app.sidebar.caption)
    assert "Log out" in [button.label for button in app.sidebar.button]


def test_messages_show_literally_and_their_web_addresses_stay_links():
    from zoidberg.ui.widgets import escape_markdown

    message = "Put mobilenet_v2_0.5.h5 in $ZOIDBERG_WEIGHTS_DIR or *here*. It is at https://example.org/a_b/c_0.5.h5."
    escaped = escape_markdown(message)
    assert "mobilenet\\_v2\\_0.5.h5" in escaped and "\\$ZOIDBERG" in escaped and "\\*here\\*" in escaped
    assert "https://example.org/a_b/c_0.5.h5." in escaped  # Whole, with the sentence's full stop after it.


def test_a_reloaded_tab_keeps_its_data_folder_and_the_cards_name_it(demo_dir, tmp_path):
    from zoidberg.ui.state import DATA_DIR_PARAM

    folder = tmp_path / "hospital"
    shutil.copytree(demo_dir, folder)
    (folder / "SYNTHETIC.md").unlink()
    app = open_app(folder, "pages/train.py")
    # The chosen folder is kept in the page's address...
    assert app.query_params[DATA_DIR_PARAM] == [str(folder)] or app.query_params[DATA_DIR_PARAM] == str(folder)
    # ...so a reload (a new session on that address) trains on it, not on the demo data.
    reloaded = AppTest.from_file(str(APP), default_timeout=120)
    reloaded.query_params[DATA_DIR_PARAM] = str(folder)
    reloaded.run()
    reloaded.switch_page("pages/train.py").run()
    assert_no_exception(reloaded)
    captions = texts(reloaded.caption)
    assert f"Data folder: `{folder}`" in captions
    assert f"📁 Trains on `{folder}`" in captions and "synthetic demo data, not X-rays" not in captions
    # On the demo folder the cards say so.
    demo = open_app(demo_dir, "pages/train.py")
    assert "the synthetic demo data, not X-rays" in texts(demo.caption)
