"""AppTest checks of the Tune page: editor, validation, a real tiny search, finished views, cross-validation of the best."""

from __future__ import annotations

from pathlib import Path

import pytest
from apptest_helpers import assert_no_exception, button, open_app, texts, wait_for
from streamlit.testing.v1 import AppTest

from zoidberg.options.registry import tunable_training_options
from zoidberg.runs.store import ACTIVE_STATES, RunStore

PAGE = "pages/tune.py"
CROSS_VALIDATE_LABEL = "Cross-validate the best configuration"


def trials_table(app: AppTest):
    """Returns the trial table's data frame."""
    frame = next(element.value for element in app.dataframe if "trial" in element.value.columns)
    return getattr(frame, "data", frame)


def fabricate_stopped_search(runs_dir: Path, data_dir: Path) -> str:
    """Writes a stopped tuning run with two finished trials and one failed one (no training)."""
    from zoidberg.config import DataConfig
    from zoidberg.tuning.config import TuneConfig

    config = TuneConfig(
        data=DataConfig(str(data_dir), "binary", 32),
        search_space={"conv_blocks": 2, "base_filters": 8, "dense_units": 16, "kernel_size": 3},
        algorithm="random",
        max_trials=4,
        epochs_per_trial=1,
    )
    run = RunStore(runs_dir).create_run("tune", config.to_dict(), name="fabricated search")
    rows = [
        {"trial": 1, "trial_id": "0", "status": "completed", "objective": 0.71, "epochs": 1, "seconds": 2.0,
         "hyperparameters": {"dropout_rate": 0.1, "learning_rate": 0.002, "batch_size": 16, "augmentation": False}},
        {"trial": 2, "trial_id": "1", "status": "completed", "objective": 0.83, "epochs": 1, "seconds": 2.5,
         "hyperparameters": {"dropout_rate": 0.3, "learning_rate": 0.004, "batch_size": 32, "augmentation": True}},
        {"trial": 3, "trial_id": "2", "status": "failed", "objective": None, "epochs": 1, "seconds": 0.1, "message": "boom",
         "hyperparameters": {"dropout_rate": 0.2, "learning_rate": 0.009, "batch_size": 16, "augmentation": True}},
    ]
    run.write_json("trials.json", rows)
    run.set_status("stopped")
    return run.id


# ---------------------------------------------------------------------------------------
# Editor and validation.
# ---------------------------------------------------------------------------------------


def test_tune_page_renders_every_architecture_and_its_space(demo_dir):
    from zoidberg.options.registry import ARCHITECTURES

    app = open_app(demo_dir, PAGE)
    assert "neural architecture search" in texts(app.info)
    assert app.selectbox(key="tune_architecture").options == [f"{spec.label} ({name})" for name, spec in ARCHITECTURES.items()]
    for name, spec in ARCHITECTURES.items():
        app.selectbox(key="tune_architecture").set_value(name).run()
        assert_no_exception(app)
        keys = {widget.key for widget in app.main if getattr(widget, "key", None)}
        for parameter in (*spec.hyperparameters, *tunable_training_options()):
            assert f"tune_{name}_{parameter.name}_tuned" in keys, (name, parameter.name)
        assert "Searching" in texts(app.caption)
    app.selectbox(key="tune_architecture").set_value("mobilenetv2").run()
    assert app.multiselect(key="tune_mobilenetv2_alpha_choices").value
    # Unticking a hyperparameter fixes it and shows its value widget instead of a range.
    app.checkbox(key="tune_mobilenetv2_alpha_tuned").uncheck().run()
    assert_no_exception(app)
    assert app.selectbox(key="tune_mobilenetv2_alpha_value").value == 1.0
    assert "`alpha`" not in texts(app.caption).split("Searching")[-1]


def test_a_bad_space_gives_a_message_and_starts_nothing(demo_dir, runs_dir):
    app = open_app(demo_dir, PAGE)
    app.number_input(key="tune_cnn_conv_blocks_min").set_value(4)
    app.number_input(key="tune_cnn_conv_blocks_max").set_value(2).run()
    assert_no_exception(app)
    assert "Search space not valid" in texts(app.error)
    assert "conv_blocks min_value 4 must be below max_value 2" in texts(app.error)
    assert app.button(key="tune_start").disabled

    # The default range is narrowed to the image size; a maximum the user chose is not.
    app.number_input(key="tune_cnn_conv_blocks_min").set_value(2)
    app.number_input(key="tune_cnn_conv_blocks_max").set_value(5)
    app.number_input(key="tune_image_size").set_value(32).run()
    assert not app.error
    assert "searched 2 … 3 to fit 32 px" in texts(app.caption)
    app.number_input(key="tune_cnn_conv_blocks_max").set_value(4).run()
    assert "conv_blocks up to 4 cannot be built at 32 px" in texts(app.error)

    app.number_input(key="tune_cnn_conv_blocks_max").set_value(3)
    app.selectbox(key="tune_algorithm").set_value("grid").run()
    assert "Grid search tries every combination" in texts(app.error)
    assert RunStore(runs_dir).list_runs() == []


# ---------------------------------------------------------------------------------------
# A real search in a worker.
# ---------------------------------------------------------------------------------------


def test_tiny_search_shows_trials_and_cross_validates_the_best(demo_dir, runs_dir, stop_workers_after):
    app = open_app(demo_dir, PAGE)
    app.number_input(key="tune_image_size").set_value(32)
    app.selectbox(key="tune_algorithm").set_value("random")
    app.number_input(key="tune_max_trials").set_value(2)
    app.number_input(key="tune_epochs").set_value(1)
    # A fixed small CNN; the search varies dropout, learning rate, batch size and augmentation.
    for name in ("conv_blocks", "base_filters", "dense_units"):
        app.checkbox(key=f"tune_cnn_{name}_tuned").uncheck()
    app.run()
    assert_no_exception(app)
    app.button(key="tune_start").click().run()
    assert_no_exception(app)
    runs = RunStore(runs_dir).list_runs(kind="tune")
    assert len(runs) == 1
    run = runs[0]
    assert run.config["data"]["image_size"] == 32 and run.config["max_trials"] == 2
    assert run.config["search_space"]["conv_blocks"] == 3
    # While it searches, it shows at the top of the page with a link down to its live view.
    if run.state in ("queued", "running"):
        app.run()
        banner = "\n".join(str(item.value) for item in app.info)
        assert run.id in banner and "[Live view ↓](#tuning-runs)" in banner

    # A fresh session (the page reopened) reattaches to the running search.
    fresh = open_app(demo_dir, PAGE)
    assert next(item for item in fresh.selectbox if item.label == "Tuning run").value == run.id

    def finished():
        return run.state not in ACTIVE_STATES

    wait_for(finished)
    assert run.state == "completed", run.status().get("error")
    app.run()
    assert_no_exception(app)
    table = trials_table(app)
    assert table["trial"].tolist() == [1, 2]
    assert (table["best"] == "★").sum() == 1
    assert {"dropout_rate", "learning_rate", "batch_size", "augmentation"} <= set(table.columns)
    assert "Best so far: trial" in texts(app.markdown)
    assert len(app.get("plotly_chart")) >= 2  # Best-so-far and parallel coordinates.

    app.number_input(key=f"tune_cv_k_{run.id}").set_value(2)
    button(app, CROSS_VALIDATE_LABEL).click().run()
    assert_no_exception(app)
    cv_runs = RunStore(runs_dir).list_runs(kind="cv")
    assert len(cv_runs) == 1
    cv_config = cv_runs[0].config
    assert cv_config["source_tuning_run"] == run.id
    assert cv_config["n_splits"] == 2 and cv_config["data"]["image_size"] == 32
    assert cv_config["model"]["conv_blocks"] == 3
    assert "on its way" in texts(app.success)


# ---------------------------------------------------------------------------------------
# Finished views of fabricated searches (no training).
# ---------------------------------------------------------------------------------------


def test_stopped_search_shows_results_resume_and_cross_validation(demo_dir, runs_dir, stop_workers_after):
    run_id = fabricate_stopped_search(runs_dir, demo_dir)
    app = open_app(demo_dir, PAGE)
    assert "Stopped by request; 2 finished trial(s) kept" in texts(app.info)
    assert app.button(key=f"resume_{run_id}").label.endswith("Resume")
    table = trials_table(app)
    assert table["trial"].tolist() == [1, 2, 3]
    assert table.loc[table["best"] == "★", "trial"].tolist() == [2]
    assert table.loc[table["trial"] == 3, "note"].item() == "boom"
    assert len(app.get("plotly_chart")) == 2

    button(app, CROSS_VALIDATE_LABEL).click().run()
    assert_no_exception(app)
    cv_run = RunStore(runs_dir).list_runs(kind="cv")[0]
    assert cv_run.config["source_tuning_run"] == run_id
    assert cv_run.config["n_splits"] == 5
    assert (cv_run.config["train"]["learning_rate"], cv_run.config["train"]["batch_size"]) == (0.004, 32)
    assert cv_run.config["train"]["augmentation"] is True and cv_run.config["model"]["dropout_rate"] == 0.3


def test_failed_search_shows_its_error(demo_dir, runs_dir):
    run = RunStore(runs_dir).create_run("tune", {"data": {"data_dir": "/nowhere"}, "architecture": "cnn"}, name="broken")
    run.set_status("failed", error="Data folder /nowhere does not exist or is not a folder.")
    app = open_app(demo_dir, PAGE)
    assert "Data folder /nowhere does not exist" in texts(app.error)
    assert app.button(key=f"resume_{run.id}")


# ---------------------------------------------------------------------------------------
# Figures and progress (pure functions).
# ---------------------------------------------------------------------------------------


def test_figures_map_choices_to_numbers_and_track_the_best():
    from zoidberg.tuning.space import resolve_search_space
    from zoidberg.ui.figures import best_so_far_figure, parallel_coordinates_figure

    rows = [
        {"trial": 1, "status": "completed", "objective": 0.6, "hyperparameters": {"learning_rate": 0.001, "batch_size": 32, "augmentation": False}},
        {"trial": 2, "status": "failed", "objective": None, "hyperparameters": {"learning_rate": 0.01, "batch_size": 16, "augmentation": True}},
        {"trial": 3, "status": "completed", "objective": 0.8, "hyperparameters": {"learning_rate": 0.0001, "batch_size": 64, "augmentation": True}},
        {"trial": 4, "status": "completed", "objective": 0.7, "hyperparameters": {"learning_rate": 0.003, "batch_size": 16, "augmentation": False}},
    ]
    figure = best_so_far_figure(rows, "val_auc", "max")
    assert list(figure.data[1].y) == [0.6, 0.8, 0.8]
    assert list(best_so_far_figure(rows, "val_loss", "min").data[1].y) == [0.6, 0.6, 0.6]

    dimensions = resolve_search_space("cnn", {}, 32)
    parcoords = parallel_coordinates_figure(rows, "val_auc", "max", dimensions).data[0]
    axes = {axis.label: axis for axis in parcoords.dimensions}
    assert list(axes["batch size"].ticktext) == ["16", "32", "64"]
    assert list(axes["batch size"].values) == [1, 2, 0]
    assert list(axes["augmentation"].ticktext) == ["off", "on"] and list(axes["augmentation"].values) == [0, 1, 0]
    assert list(axes["learning rate (log)"].values) == pytest.approx([-3, -4, -2.5228787])
    assert list(axes["val_auc"].values) == [0.6, 0.8, 0.7]
    assert parallel_coordinates_figure(rows[1:2], "val_auc", "max", dimensions) is None
