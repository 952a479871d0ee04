"""Exports: the fold ensemble as one model in every format, reloaded by its own runtime, matching the run; the model card."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from zoidberg.config import EXPORT_FORMATS
from zoidberg.runs.store import EXPORTS_DIR, RunStore


@pytest.fixture(scope="module")
def baseline(trained, tmp_path_factory):
    """A private copy of the tiny baseline run and its loaded ensemble."""
    from zoidberg.inference.loading import load_ensemble

    store = RunStore(tmp_path_factory.mktemp("export") / "runs")
    source = trained.store.get(trained.ids["baseline"])
    shutil.copytree(source.path, store.root / source.id)
    run = store.get(source.id)
    return run, load_ensemble(run.id, runs_dir=store.root)


@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
def test_each_format_reloads_with_its_runtime_and_matches_the_run(baseline, fmt, demo_dir, tmp_path):
    from zoidberg.data.imaging import decode_grayscale
    from zoidberg.inference.export import MODEL_CARD_FILE, export_run, load_exported, parity_check

    run, ensemble = baseline
    path = export_run(run, ensemble, fmt, tmp_path / fmt)
    assert parity_check(ensemble, path, fmt) < 1e-4
    # Real X-ray-like inputs too: the demo test images at the run's size.
    grays = [decode_grayscale(file, draft_size=ensemble.image_size) for file in sorted(demo_dir.glob("test/*/*.jpeg"))[:5]]
    images = np.stack([ensemble.model_input(gray) for gray in grays])[..., None]
    outputs = load_exported(path, fmt)(images)
    predictions = ensemble.predictions_of(grays)
    assert np.allclose(outputs["probability"][:, 0], [p.on("raw")[1] for p in predictions], atol=1e-4)
    assert np.allclose(outputs["probability_calibrated"][:, 0], [p.on("calibrated")[1] for p in predictions], atol=1e-4)
    card = json.loads((tmp_path / fmt / MODEL_CARD_FILE).read_text())
    assert card["input"]["dtype"] == "uint8" and card["input"]["shape"][1:] == [32, 32, 1]
    assert card["class_names"] == ["normal", "pneumonia"] and card["not_a_medical_device"] is True
    assert card["operating_point"]["threshold"] == pytest.approx(ensemble.threshold)
    assert card["training_data"]["data_dir"] and "roc_auc" in card["cross_validation"]["mean_std"]


def test_the_cli_exports_inside_the_run_and_checks_every_format(baseline, capsys):
    from zoidberg.cli import main

    run, _ = baseline
    assert main(["--runs-dir", str(run.path.parent), "export", "--run", run.id, "--format", "keras", "--format", "onnx"]) == 0
    out = capsys.readouterr().out
    assert "largest difference from the run" in out
    assert (run.path / EXPORTS_DIR / "keras" / "model.keras").is_file() and (run.path / EXPORTS_DIR / "onnx" / "model.onnx").is_file()


@pytest.fixture(scope="module")
def stacked(trained, demo_dir, tmp_path_factory):
    """A stacking ensemble of the 32 px baseline and a 40 px CNN: two inputs, the members' log-odds combined."""
    from tests.conftest import _config
    from zoidberg.config import DataConfig, EnsembleConfig
    from zoidberg.inference.loading import load_ensemble
    from zoidberg.training.cv import run_cross_validation
    from zoidberg.training.run_setup import config_payload
    from zoidberg.training.ensemble import prepare_ensemble, run_ensemble

    store = RunStore(tmp_path_factory.mktemp("export-ensemble") / "runs")
    shutil.copytree(trained.store.get(trained.ids["baseline"]).path, store.root / trained.ids["baseline"])
    config = _config(demo_dir)
    wider = store.create_run("cv", config_payload(config.__class__(**{**config.__dict__, "data": DataConfig(str(demo_dir), "binary", 40)})), name="wider")
    run_cross_validation(wider)
    assert wider.state == "completed", wider.status()
    run = store.create_run("ensemble", prepare_ensemble(EnsembleConfig(members=(trained.ids["baseline"], wider.id), method="stacking"), store))
    run_ensemble(run)
    return run, load_ensemble(run.id, runs_dir=store.root)


@pytest.mark.parametrize("fmt", ["keras", "savedmodel", "onnx"])
def test_an_ensemble_of_runs_exports_whole_with_an_input_per_size(stacked, fmt, demo_dir, tmp_path):
    from zoidberg.data.imaging import decode_grayscale
    from zoidberg.inference.export import MODEL_CARD_FILE, export_feed, export_run, load_exported

    run, ensemble = stacked
    assert ensemble.combiner.method == "stacking"
    path = export_run(run, ensemble, fmt, tmp_path / fmt, check=True)
    grays = [decode_grayscale(file) for file in sorted(demo_dir.glob("test/*/*.jpeg"))[:6]]
    feed = export_feed(ensemble, grays)
    assert {name: images.shape[1] for name, images in feed.items()} == {"image_40": 40, "image_32": 32}
    outputs = load_exported(path, fmt)(feed)
    predictions = ensemble.predictions_of(grays)
    assert np.allclose(outputs["probability"][:, 0], [p.on("raw")[1] for p in predictions], atol=1e-4)
    assert np.allclose(outputs["probability_calibrated"][:, 0], [p.on("calibrated")[1] for p in predictions], atol=1e-4)
    card = json.loads((tmp_path / fmt / MODEL_CARD_FILE).read_text())
    assert [item["name"] for item in card["inputs"]] == ["image_40", "image_32"] and card["input"]["shape"][1:] == [40, 40, 1]
    assert card["scoring"]["combination"]["method"] == "stacking" and len(card["scoring"]["members"]) == 2
    assert card["parity_max_difference"] < 1e-4 and card["training_data"]["data_dir"]
    with pytest.raises(ValueError, match="2 inputs"):
        load_exported(path, fmt)(feed["image_40"])
