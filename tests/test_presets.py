"""Presets: each builds and trains a tiny epoch, records itself, says which weights it needs; best is an ensemble of presets."""

from __future__ import annotations

import pytest

from zoidberg.config import EnsembleConfig, RunConfig
from zoidberg.models.presets import PRESETS, make_preset_config, missing_weights, preset_changes

SINGLE = [name for name, preset in PRESETS.items() if not preset.is_ensemble]


def tiny(name: str, demo_dir, **changes):
    """A preset shrunk to k=2, 1-2 epochs and the smallest size its architecture takes."""
    preset = PRESETS[name]
    epochs = 2 if preset.model.get("transfer_mode") == "fine-tune" else 1
    size = 48 if preset.model.get("conv_blocks", 0) >= 4 else 32
    return make_preset_config(name, str(demo_dir), image_size=size, epochs=epochs, n_splits=2, batch_size=16, **changes)


@pytest.mark.parametrize("name", SINGLE)
def test_each_preset_builds_and_trains_a_tiny_epoch_and_is_recorded(name, demo_dir, runs_dir, imagenet_weights_dir, monkeypatch):
    from zoidberg.runs.store import RunStore
    from zoidberg.training.cv import run_cross_validation
    from zoidberg.training.run_setup import prepare_run

    # Random stand-ins under the official names: the recipe resolves "imagenet" as it would here.
    monkeypatch.setenv("ZOIDBERG_WEIGHTS_DIR", str(imagenet_weights_dir))
    config = tiny(name, demo_dir)
    assert config.preset == name and config.model.architecture == PRESETS[name].architecture
    run = RunStore(runs_dir).create_run("cv", prepare_run(config), name)
    run_cross_validation(run)
    assert run.state == "completed", run.status()
    assert run.config["preset"] == name
    # What was shrunk for the test is what the stored config says was changed.
    changed = set(preset_changes(run.config))
    assert "image_size" in changed and "architecture" not in changed


def test_the_preset_values_are_those_of_the_table(demo_dir):
    for name in SINGLE:
        preset = PRESETS[name]
        config = make_preset_config(name, str(demo_dir))
        assert isinstance(config, RunConfig) and preset_changes(config.to_dict()) == []
        for field, value in preset.train.items():
            assert getattr(config.train, field) == value
        for field, value in preset.model.items():
            assert getattr(config.model, field) == value
        assert config.data.image_size == preset.data["image_size"]
        assert preset.expected_time and "CPU" in preset.expected_time


def test_best_is_an_ensemble_of_the_other_presets(demo_dir):
    best = PRESETS["best"]
    config = make_preset_config("best", str(demo_dir), random_state=7)
    assert isinstance(config, EnsembleConfig) and config.preset == "best" and not config.members
    assert [recipe.preset for recipe in config.recipes] == list(best.members)
    assert all(recipe.random_state == 7 for recipe in config.recipes)
    with pytest.raises(ValueError, match="cannot be changed"):
        make_preset_config("best", str(demo_dir), epochs=1)


def test_missing_weights_name_the_file_and_an_alternative(tmp_path, monkeypatch, demo_dir, capsys):
    from zoidberg.cli import main

    monkeypatch.setenv("ZOIDBERG_WEIGHTS_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    messages = missing_weights("fast")
    assert messages and "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5" in messages[0]
    assert PRESETS["scratch"].weights_needed() == [] and missing_weights("scratch") == []
    assert main(["cv", "--data", str(demo_dir), "--preset", "best"]) == 2
    error = capsys.readouterr().err
    assert "_no_top.h5" in error and "--preset scratch" in error


def test_a_preset_fills_the_train_form_and_starts_with_one_click(demo_dir, stop_workers_after):
    from apptest_helpers import button, open_app
    from zoidberg.runs.store import RunStore

    app = open_app(demo_dir, page="pages/train.py")
    button(app, "Fill the form").click().run()
    fast = PRESETS["fast"]
    assert app.selectbox(key="train_architecture").value == fast.architecture
    assert app.number_input(key="train_image_size").value == fast.data["image_size"]
    assert not app.exception
    button(app, "Start from scratch").click().run()
    assert not app.exception, [item.value for item in app.exception]
    (run,) = RunStore().list_runs(kind="cv")
    assert run.config["preset"] == "scratch" and run.config["model"]["architecture"] == "cnn"
    run.request_stop()


def test_a_card_with_missing_weights_offers_a_download_that_fails_offline_in_one_message(demo_dir, tmp_path, monkeypatch):
    from apptest_helpers import assert_no_exception, open_app
    from zoidberg.models import weights

    monkeypatch.setenv("ZOIDBERG_WEIGHTS_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    asked = []

    def offline(architecture, alpha=1.0, **options):
        asked.append((architecture, alpha))
        raise weights.WeightsNotFoundError(f"Could not download MobileNetV2 {alpha:g}: the machine is offline.")

    monkeypatch.setattr(weights, "download_imagenet_weights", offline)
    app = open_app(demo_dir, page="pages/train.py")
    app.button(key="preset_download_fast").click().run()
    assert_no_exception(app)
    assert asked == [("mobilenetv2", 0.5)]
    assert any("the machine is offline" in error.value for error in app.error)


def test_every_preset_quotes_its_measured_site_figures_with_intervals():
    # The cards and --help quote what benchmarks/site.py measured on the site sample: the same
    # zero-shot AUC and interval as the newest line of that preset in benchmarks/results/site.jsonl.
    import json
    import re
    from pathlib import Path

    results = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "site.jsonl"
    measured = {}
    for line in results.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        measured[row["candidate"]] = row
    for name, preset in PRESETS.items():
        assert re.search(r"zero-shot AUC 0\.\d{3} \[0\.\d{3}, 0\.\d{3}\]", preset.site_figures), name
        auc = measured[name]["zero_shot"]["roc_auc"]
        assert f"zero-shot AUC {auc['estimate']:.3f} [{auc['low']:.3f}, {auc['high']:.3f}]" in preset.site_figures, name
        assert "adapt" in preset.site_figures


def test_a_preset_card_shows_the_last_runs_own_time(tmp_path, monkeypatch):
    from zoidberg.runs.store import RunStore
    from zoidberg.ui.preset_cards import last_preset_times

    monkeypatch.setenv("ZOIDBERG_RUNS_DIR", str(tmp_path / "runs"))
    store = RunStore()
    older = store.create_run("cv", {"preset": "fast"})
    older.set_status("completed", started="2026-12-01T10:00:00+00:00", ended="2026-12-01T10:05:00+00:00")
    newer = store.create_run("cv", {"preset": "fast"})
    newer.set_status("completed", started="2026-12-02T10:00:00+00:00", ended="2026-12-02T10:01:14+00:00")
    failed = store.create_run("cv", {"preset": "scratch"})
    failed.set_status("failed", started="2026-12-02T10:00:00+00:00", ended="2026-12-02T10:00:03+00:00")
    times = last_preset_times()
    assert set(times) == {"fast"}
    assert times["fast"].startswith("1 min 14 s") and newer.id in times["fast"]
    assert newer.wall_seconds() == 74 and store.create_run("cv", {}).wall_seconds() is None
