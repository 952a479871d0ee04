"""Decisions of the fold ensemble as engine code: thresholds, spreads, the binary and three-class rules."""

from __future__ import annotations

import numpy as np
import pytest

from zoidberg.inference.decisions import DEFAULT_THRESHOLD, Prediction, decide

BINARY = ("normal", "pneumonia")
THREE = ("normal", "bacterial", "viral")


def binary_prediction(*pneumonia: float) -> Prediction:
    return Prediction(BINARY, np.array([[1 - value, value] for value in pneumonia]))


def test_binary_decision_applies_the_threshold_to_the_mean_over_folds():
    prediction = binary_prediction(0.6, 0.8)
    decision = decide(prediction, 0.75)
    assert decision.label == "normal" and decision.class_index == 0
    assert decision.probability == pytest.approx(0.7) and decision.spread == pytest.approx(0.1)
    assert decision.per_fold == pytest.approx((0.6, 0.8)) and decision.threshold == 0.75
    assert decision.class_probabilities == pytest.approx({"normal": 0.3, "pneumonia": 0.7})
    # At exactly the threshold the call is pneumonia; without one the default applies.
    assert decide(prediction, 0.7).label == "pneumonia"
    assert decide(prediction).label == "pneumonia" and decide(prediction).threshold == DEFAULT_THRESHOLD


def test_three_class_decision_takes_the_most_probable_class_and_ignores_thresholds():
    prediction = Prediction(THREE, np.array([[0.2, 0.5, 0.3], [0.2, 0.6, 0.2]]))
    decision = decide(prediction, 0.9)
    assert decision.label == "bacterial" and decision.threshold is None
    assert decision.probability == pytest.approx(0.55) and decision.per_fold == pytest.approx((0.5, 0.6))


def test_the_cli_json_of_a_decision_keeps_its_keys():
    payload = decide(binary_prediction(0.9), 0.5).to_dict()
    assert set(payload) == {
        "label", "class_index", "probability", "spread", "per_fold", "class_probabilities", "threshold",
        "scale", "probability_raw", "probability_calibrated", "unit",
    }
    assert payload["label"] == "pneumonia" and payload["per_fold"] == pytest.approx([0.9])


def test_calibrated_decisions_use_the_calibrated_probabilities_and_report_both():
    raw = np.array([[0.4, 0.6], [0.2, 0.8]])
    calibrated = np.array([[0.55, 0.45], [0.45, 0.55]])
    prediction = Prediction(BINARY, raw, calibrated)
    on_raw, on_calibrated = decide(prediction, 0.6, "raw"), decide(prediction, 0.6, "calibrated")
    assert on_raw.label == "pneumonia" and on_calibrated.label == "normal"
    assert on_calibrated.probability == pytest.approx(0.5) and on_calibrated.raw_probability == pytest.approx(0.7)
    # Without a calibration, "calibrated" falls back to raw and says so.
    assert decide(binary_prediction(0.9), 0.5, "calibrated").scale == "raw"


# ---------------------------------------------------------------------------------------
# Test-time augmentation and preprocessing, on a tiny real run.
# ---------------------------------------------------------------------------------------


def test_tta_averages_every_variant_and_never_flips(trained, demo_dir):
    from zoidberg.data.imaging import decode_grayscale
    from zoidberg.inference.loading import load_ensemble
    from zoidberg.training.pipeline import make_probability_function, predict_probabilities
    from zoidberg.inference.tta import TTA_VARIANTS, tta_variants

    ensemble = load_ensemble(trained.ids["baseline"], runs_dir=trained.dir)
    gray = decode_grayscale(next(demo_dir.glob("test/PNEUMONIA/*.jpeg")), draft_size=ensemble.image_size)
    batch = ensemble.prepare(gray)
    variants = [np.asarray(variant) for variant in tta_variants(batch)]
    assert len(variants) == len(TTA_VARIANTS) == 4 and np.array_equal(variants[0], batch)
    assert all(not np.allclose(variant, batch) for variant in variants[1:])
    # No variant mirrors the film (the heart sits on the left): a dark-to-bright ramp stays one.
    ramp = np.tile(np.linspace(0.05, 0.95, 32, dtype=np.float32), (1, 32, 1))[..., None]
    for variant in tta_variants(ramp):
        variant = np.asarray(variant)
        assert variant[0, :, :16].mean() < variant[0, :, 16:].mean()
    model = ensemble.models[0]
    infer = make_probability_function(model)
    manual = np.mean([np.asarray(infer(variant))[0, 0] for variant in variants])
    image = ensemble.model_input(gray)[None]
    assert predict_probabilities(model, image, np.array([0]), tta=True)[0, 1] == pytest.approx(manual, abs=1e-5)
    per_fold = ensemble.probabilities(gray, tta=True).per_fold[:, 1]
    assert per_fold[0] == pytest.approx(manual, abs=1e-5)
    assert not np.allclose(per_fold, ensemble.probabilities(gray, tta=False).per_fold[:, 1])


def test_an_evaluation_records_tta_and_is_reused_only_with_the_same_setting(trained, demo_dir, tmp_path):
    import shutil

    from zoidberg.inference.evaluate import evaluate_run
    from zoidberg.runs.store import RunStore

    store = RunStore(tmp_path / "runs")
    shutil.copytree(trained.store.get(trained.ids["baseline"]).path, store.root / trained.ids["baseline"])
    run = store.get(trained.ids["baseline"])
    lines = []
    plain = evaluate_run(run, demo_dir, split="test", name="demo", report=lines.append)
    augmented = evaluate_run(run, demo_dir, split="test", name="demo", tta=True, report=lines.append)
    assert plain["tta"] is False and augmented["tta"] is True and not any("reused" in line for line in lines)
    assert any("test-time augmentation (4 variants" in line for line in lines) and augmented["scoring_seconds"] > 0
    assert plain["metrics"]["roc_auc"] != augmented["metrics"]["roc_auc"] or plain["calibration"] != augmented["calibration"]
    evaluate_run(run, demo_dir, split="test", name="demo", tta=True, report=lines.append)
    assert "reused" in lines[-1]


def test_preprocessing_is_identical_in_training_and_predict(demo_dir, runs_dir):
    import dataclasses

    from conftest import _config
    from zoidberg.config import DataConfig
    from zoidberg.data.dataset import load_dataset
    from zoidberg.data.imaging import decode_grayscale
    from zoidberg.inference.loading import load_ensemble
    from zoidberg.runs.store import RunStore
    from zoidberg.training.cv import run_cross_validation
    from zoidberg.training.run_setup import prepare_run

    data = DataConfig(str(demo_dir), "binary", 40, resize="pad", enhance="clahe")
    run = RunStore(runs_dir).create_run("cv", prepare_run(dataclasses.replace(_config(demo_dir), data=data)), "pad+clahe")
    run_cross_validation(run)
    ensemble = load_ensemble(run.id, runs_dir=runs_dir)
    dataset = load_dataset(demo_dir, **data.loader_options())
    for row in (0, len(dataset) // 2, len(dataset) - 1):
        # What predict and evaluate feed the models is what the folds trained on, pixel for pixel.
        gray = decode_grayscale(demo_dir / dataset.paths[row], draft_size=ensemble.image_size)
        assert np.array_equal(ensemble.model_input(gray), dataset.images[row])
    assert run.config["data"]["resize"] == "pad" and run.config["data"]["enhance"] == "clahe"


def test_the_cli_and_the_dashboard_feed_the_network_the_same_pixels_and_get_the_same_answers(trained, demo_dir, tmp_path):
    # One prediction path: predict_files (CLI) and the Predict page's decode and score give the
    # same probabilities and gate verdicts for the same files, a large JPEG (drafted at the
    # run's size) and a PNG among them.
    from PIL import Image

    from zoidberg.inference.scoring import predict_files
    from zoidberg.inference.loading import load_ensemble
    from zoidberg.ui import predict_inputs, predict_results

    ensemble = load_ensemble(trained.ids["baseline"], runs_dir=trained.dir)
    films = sorted(demo_dir.glob("test/*/*.jpeg"))[:3]
    large = Image.open(films[0]).convert("L").resize((900, 760), Image.Resampling.BICUBIC)
    large.save(tmp_path / "large.jpeg", quality=92)
    large.save(tmp_path / "large.png")
    (tmp_path / "broken.jpeg").write_bytes(b"\xff\xd8\xff\xe0 not a whole jpeg")
    paths = [*films, tmp_path / "large.jpeg", tmp_path / "large.png", tmp_path / "broken.jpeg"]
    rows = predict_files(ensemble, paths)
    results = [predict_results.process_image(ensemble, predict_inputs.ImageInput(path.name, path.read_bytes())) for path in paths]
    for row, result in zip(rows, results):
        if "error" in row:
            assert result.error and not result.ok
            continue
        assert row["in_distribution"] == (result.verdict.in_distribution if result.verdict is not None else None)
        if row["in_distribution"] is False:
            # Refused: no probability in either, the model's answer only under not_a_diagnosis.
            assert row["probability_raw"] is None and result.record(ensemble, None)["probability_raw"] is None
            assert row["not_a_diagnosis"]["probability"] == pytest.approx(ensemble.decide(result.prediction).probability, abs=1e-6)
            continue
        assert row["probability_raw"] == pytest.approx(float(result.prediction.on("raw")[1]), abs=1e-6), row["file"]
    assert [("error" in row) for row in rows] == [False] * 5 + [True]
    # The large JPEG is drafted at the run's size in both; the page still shows it whole.
    assert results[3].original_shape == (760, 900)
