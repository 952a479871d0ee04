"""AppTest checks of the Data and Train pages, including real worker runs that complete and stop."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from zoidberg.runstore import ACTIVE_STATES, RunStore
from zoidberg.ui.state import DATA_DIR_KEY

APP = Path(__file__).resolve().parent.parent / "streamlit_app.py"
# The first Start imports TensorFlow (package versions) in the test process.
SCRIPT_TIMEOUT_S = 90
RUN_TIMEOUT_S = 120
START_LABEL = "Start cross-validation"


@pytest.fixture
def stop_workers_after(runs_dir):
    """Stops any worker a test left running, so no process outlives the test."""
    yield
    for run in RunStore(runs_dir).list_runs():
        status = run.read_json("status.json", {}) or {}
        if status.get("state") in ACTIVE_STATES and status.get("pid"):
            run.request_stop()
            try:
                os.kill(int(status["pid"]), signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass


def open_app(data_dir: Path, page: str | None = None) -> AppTest:
    """Opens the app with a chosen data folder, optionally on another page."""
    app = AppTest.from_file(str(APP), default_timeout=SCRIPT_TIMEOUT_S)
    app.session_state[DATA_DIR_KEY] = str(data_dir)
    app.run()
    assert_no_exception(app)
    if page:
        app.switch_page(page).run()
        assert_no_exception(app)
    return app


def assert_no_exception(app: AppTest) -> None:
    """Fails with the exception texts when a page raised."""
    assert not app.exception, [element.value for element in app.exception]


def texts(elements) -> str:
    """Joins the values of alert or markdown elements."""
    return "\n".join(str(element.value) for element in elements)


def metric_values(app: AppTest) -> dict[str, str]:
    """Returns {label: value} of the metric cards."""
    return {metric.label: metric.value for metric in app.metric}


def start_button(app: AppTest):
    """Returns the form's Start button."""
    return next(button for button in app.button if START_LABEL in button.label)


def fill_train_form(app: AppTest, **values) -> None:
    """Sets Train form widgets by key suffix (image_size, k, epochs, patience)."""
    for name, value in values.items():
        app.number_input(key=f"train_{name}").set_value(value)


def wait_for(predicate, timeout: float = RUN_TIMEOUT_S, interval: float = 0.5):
    """Polls until predicate() is truthy; returns its value or fails on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"Timed out after {timeout} s waiting for {predicate.__name__}")


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
    from zoidberg.models import ARCHITECTURES

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
    assert len(fresh.get("download_button")) == 2


def test_stop_ends_the_run_stopped_and_keeps_finished_folds(demo_dir, runs_dir, stop_workers_after):
    app = open_app(demo_dir, "pages/train.py")
    fill_train_form(app, image_size=32, k=2, epochs=60, patience=0)
    start_button(app).click().run()
    assert_no_exception(app)
    run = RunStore(runs_dir).list_runs()[0]

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
    assert app.button(key=f"resume_{run.id}").label.endswith("Resume")
