"""AppTest checks of the Compare and Predict pages on tiny real runs, plus the Predict page's file handling."""

from __future__ import annotations

import io
import re
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from apptest_helpers import assert_no_exception, open_app, plotly_count, texts
from PIL import Image
from streamlit.testing.v1 import AppTest

from zoidberg.evaluation import compare
from zoidberg.data.imaging import MAX_UPLOAD_BYTES
from zoidberg.inference.decisions import decide
from zoidberg.runs.store import RunStore
from zoidberg.ui import predict_inputs, predict_results
from zoidberg.ui import predict_view as pv
from conftest import SHARED_DATA

try:
    import imagegen
except ImportError:  # The odd-file corpus is optional; its tests are then skipped.
    imagegen = None

FULLRES_DIR = SHARED_DATA / "chest_xray_fullres"

BAD_CASES = dict(imagegen.BAD_CASES) if imagegen else {}
ODD_VALID_CASES = dict(imagegen.ODD_VALID_CASES) if imagegen else {}


def _has_upload_extension(filename: str) -> bool:
    """Whether the browser's uploader would accept this name (it filters by extension)."""
    return Path(filename).suffix.lower().lstrip(".") in pv.UPLOAD_TYPES


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture
def use_runs(trained, monkeypatch):
    """Points the app at the module's runs for one test."""
    monkeypatch.setenv("ZOIDBERG_RUNS_DIR", str(trained.dir))
    return trained


# ----------------------------------------------------------------------------- Compare page


def test_compare_comparable_pair_shows_tables_plots_and_verdict(use_runs):
    app = open_app(page="pages/compare.py")
    selector = app.multiselect(key="compare_runs")
    selector.set_value([use_runs.ids["baseline"], use_runs.ids["variant"]]).run()
    assert_no_exception(app)
    summary = app.dataframe[0].value
    assert list(summary.columns) == ["baseline", "variant"]
    for row in ("Accuracy", "ROC AUC", "Sensitivity (recall)", compare.PARAMETERS_ROW, compare.TIME_ROW):
        assert row in summary.index
    assert "±" in summary.loc["Accuracy", "baseline"]
    success = texts(app.success)
    assert "Same folds" in success
    assert "corrected resampled t-test" in success + texts(app.info)
    tests = next(frame.value for frame in app.dataframe if "metric" in frame.value.columns)
    assert list(tests["metric"]) == ["ROC AUC", "Accuracy"]
    # Strips, three validation curves, ROC, two confusion matrices, time and size.
    assert plotly_count(app) >= 8
    explanation = texts(app.markdown)
    assert "Nadeau & Bengio" in explanation and "overlap" in explanation


def test_compare_other_seed_is_not_comparable_and_says_why(use_runs):
    app = open_app(page="pages/compare.py")
    app.multiselect(key="compare_runs").set_value([use_runs.ids["baseline"], use_runs.ids["other_seed"]]).run()
    assert_no_exception(app)
    warning = texts(app.warning)
    assert "not comparable" in warning
    assert "Different fold seeds: 1 vs 2" in warning
    assert "re-run" in warning
    assert "Same folds" not in texts(app.success)


def test_compare_mixed_label_modes_compares_what_is_shared(use_runs):
    app = open_app(page="pages/compare.py")
    ids = [use_runs.ids["baseline"], use_runs.ids["variant"], use_runs.ids["three_class"]]
    app.multiselect(key="compare_runs").set_value(ids).run()
    assert_no_exception(app)
    warning = texts(app.warning)
    assert "different label modes" in warning and "Shared metrics: Accuracy, Balanced accuracy" in warning
    summary = app.dataframe[0].value
    assert summary.loc["Sensitivity (recall)", "three_class"] == "—"
    assert summary.loc["Macro AUC (one-vs-rest)", "baseline"] == "—"
    # With three runs a pair is chosen for the test; the default pair is comparable.
    assert app.selectbox(key="compare_pair_a").value == "baseline"
    app.selectbox(key="compare_pair_b").set_value("three_class").run()
    assert_no_exception(app)
    assert "Different label modes" in texts(app.warning)


def test_compare_without_two_finished_runs_explains(runs_dir):
    app = open_app(page="pages/compare.py")
    assert "at least two completed" in texts(app.info)


# ----------------------------------------------------------------------------- Predict page


def _demo_image(demo_dir: Path, folder: str = "PNEUMONIA") -> Image.Image:
    """Returns one demo test image as a Pillow image."""
    return Image.open(sorted((demo_dir / "test" / folder).glob("*.jpeg"))[0]).convert("L")


def _encoded(image: Image.Image, format: str) -> bytes:
    """Encodes a Pillow image."""
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return buffer.getvalue()


def _dicom(image: Image.Image) -> bytes:
    """Encodes a grayscale image as a 12-bit MONOCHROME1 DICOM with a window."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    pixels = 4095 - np.asarray(image, dtype=np.uint16) * 16
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.10.1234.99"
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID, dataset.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    dataset.Rows, dataset.Columns = pixels.shape
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, "MONOCHROME1"
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 16, 12, 11, 0
    dataset.WindowCenter, dataset.WindowWidth = 2048, 4096
    dataset.PixelData = pixels.astype(np.uint16).tobytes()
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, dataset, enforce_file_format=True)
    return buffer.getvalue()


def _upload_all(app: AppTest, files: list[tuple[str, bytes]]) -> AppTest:
    """Uploads files to the Predict uploader and reruns."""
    uploader = app.file_uploader(key="predict_uploads")
    uploader.set_value([(name, data, "application/octet-stream") for name, data in files])
    return app.run()


def _rows(app: AppTest) -> dict:
    """The batch table as {file: row}."""
    return {row["file"]: row for row in app.dataframe[0].value.to_dict("records")}


def test_predict_uploads_good_and_bad_files(use_runs, demo_dir, monkeypatch):
    calls = []
    from zoidberg.inference.ensemble import Ensemble

    original = Ensemble.predictions_of
    monkeypatch.setattr(
        Ensemble, "predictions_of", lambda self, grays, *args, **kwargs: calls.append(len(grays)) or original(self, grays, *args, **kwargs)
    )
    app = open_app(page="pages/predict.py")
    app.selectbox(key="predict_run").set_value(use_runs.ids["baseline"]).run()
    assert "Research demo, not a medical device" in app.warning[0].value
    assert "Drop one or more chest X-rays" in texts(app.info)
    assert f"{MAX_UPLOAD_BYTES // 2**20} MB" in app.file_uploader(key="predict_uploads").label
    image = _demo_image(demo_dir)
    jpeg_bytes = _encoded(image, "JPEG")
    files = [
        ("chest.png", _encoded(image, "PNG")),
        ("chest.jpg", jpeg_bytes),
        ("chest.dcm", _dicom(image)),
        ("broken.jpeg", jpeg_bytes[: len(jpeg_bytes) // 2]),
        ("notes.jpg", b"Not an image, just a text file renamed.\n" * 10),
    ]
    _upload_all(app, files)
    assert_no_exception(app)
    rows = _rows(app)
    for name in ("chest.png", "chest.jpg", "chest.dcm"):
        assert 0.0 <= rows[name]["probability"] <= 1.0 and rows[name]["error"] == "", rows[name]
        assert rows[name]["prediction"] in ("normal", "pneumonia")
        assert rows[name]["folds"] == 2
    assert "truncated or corrupt JPEG" in rows["broken.jpeg"]["error"]
    assert "looks like a text file" in rows["notes.jpg"]["error"]
    errors = texts(app.error)
    assert "broken.jpeg:" in errors and "notes.jpg:" in errors
    assert "across 2 folds" in texts(app.markdown)
    # The three readable files went through the network in one batch.
    assert calls == [3]
    # Moving the threshold re-decides without running the network again.
    app.slider[0].set_value(0.0).run()
    assert_no_exception(app)
    assert {row["prediction"] for name, row in _rows(app).items() if row["error"] == ""} == {"pneumonia"}
    app.slider[0].set_value(1.0).run()
    assert calls == [3]
    assert app.get("download_button"), "the CSV download is missing"


def test_predict_demo_images_and_three_class_run(use_runs, demo_dir, monkeypatch):
    monkeypatch.setenv("ZOIDBERG_DEMO_DIR", str(demo_dir))
    app = open_app(page="pages/predict.py")
    app.selectbox(key="predict_run").set_value(use_runs.ids["three_class"]).run()
    assert_no_exception(app)
    assert not [slider for slider in app.slider if slider.label.startswith("Decision threshold")]
    app.toggle(key="predict_demo").set_value(True).run()
    assert_no_exception(app)
    table = app.dataframe[0].value
    assert len(table) == predict_inputs.DEMO_IMAGE_COUNT
    assert {"P(normal)", "P(bacterial)", "P(viral)"} <= set(table.columns)
    assert set(table["true class"]) <= {"normal", "bacterial", "viral"}
    # On screen probabilities read as three digits, or "> 0.999" / "< 0.001", never a bare 1.
    shown = table[["P(normal)", "P(bacterial)", "P(viral)"]]
    assert all(re.fullmatch(r"0\.\d{3}|> 0\.999|< 0\.001", value) for value in shown.to_numpy().ravel())
    numbers = shown.map(lambda value: {"> 0.999": 1.0, "< 0.001": 0.0}[value] if value[0] in "<>" else float(value))
    assert np.allclose(numbers.sum(axis=1), 1.0, atol=3e-3)
    assert "True class (synthetic)" in texts(app.caption)


def test_predict_stopped_run_says_which_folds(use_runs, demo_dir, monkeypatch):
    monkeypatch.setenv("ZOIDBERG_DEMO_DIR", str(demo_dir))
    app = open_app(page="pages/predict.py")
    app.selectbox(key="predict_run").set_value(use_runs.ids["stopped"]).run()
    assert_no_exception(app)
    assert "folds 1 only (the run stopped after 1 of 2 folds)" in texts(app.caption)
    app.toggle(key="predict_demo").set_value(True).run()
    assert_no_exception(app)
    assert set(app.dataframe[0].value["folds"]) == {1}


def test_predict_without_runs_points_to_train(runs_dir):
    app = open_app(page="pages/predict.py")
    assert "No finished run yet" in texts(app.info) and "Train" in texts(app.info)
    assert "not a medical device" in texts(app.warning)


@pytest.mark.skipif(not BAD_CASES, reason="tests/imagegen.py is absent")
def test_predict_page_survives_the_odd_file_corpus(use_runs):
    app = open_app(page="pages/predict.py")
    cases = {**BAD_CASES, **ODD_VALID_CASES}
    # Distinct names: the corpus reuses some file names across cases.
    files = [
        (f"{name}__{case.filename}", case.make())
        for name, case in sorted(cases.items())
        if _has_upload_extension(case.filename)
    ]
    files.append(("huge.jpg", b"\xff\xd8\xff" + bytes(MAX_UPLOAD_BYTES)))
    _upload_all(app, files)
    assert_no_exception(app)
    rows = _rows(app)
    for name, case in cases.items():
        if not _has_upload_extension(case.filename):
            continue
        row = rows.get(f"{name}__{case.filename}")
        assert row is not None, f"{name} never reached the table"
        if name in BAD_CASES:
            assert case.reason in row["error"], (name, row["error"])
        else:
            # A film the gate refuses shows no probability where a diagnosis would stand.
            refused = row["prediction"] == "refused"
            assert row["error"] == "" and (row["probability"] is None if refused else 0.0 <= row["probability"] <= 1.0), (name, row)
    assert "exceeds the 50 MB limit" in rows["huge.jpg"]["error"]


@pytest.mark.parametrize("case_name", sorted(BAD_CASES) or [pytest.param("none", marks=pytest.mark.skip("no corpus"))])
def test_process_image_refuses_bad_files_with_one_line(trained, case_name):
    ensemble = predict_results.load_ensemble_cached(trained.store, trained.store.get(trained.ids["baseline"]))
    case = BAD_CASES[case_name]
    result = predict_results.process_image(ensemble, predict_inputs.ImageInput(case.filename, case.make()))
    assert not result.ok
    assert case.reason in result.error and "\n" not in result.error


@pytest.mark.parametrize(
    "case_name", sorted(ODD_VALID_CASES) or [pytest.param("none", marks=pytest.mark.skip("no corpus"))]
)
def test_process_image_predicts_odd_valid_files(trained, case_name):
    ensemble = predict_results.load_ensemble_cached(trained.store, trained.store.get(trained.ids["baseline"]))
    case = ODD_VALID_CASES[case_name]
    result = predict_results.process_image(ensemble, predict_inputs.ImageInput(case.filename, case.make()))
    assert result.ok, result.error
    assert result.original_shape == case.shape
    decision = decide(result.prediction, 0.5)
    assert 0.0 <= decision.probability <= 1.0 and len(decision.per_fold) == 2
    heatmap = predict_results.gradcam_heatmap(ensemble, result, decision.class_index)
    assert heatmap.ndim == 2 and np.isfinite(heatmap).all()


def test_hostile_upload_names_are_shown_literally_and_nothing_is_written(use_runs, demo_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    app = open_app(page="pages/predict.py")
    app.selectbox(key="predict_run").set_value(use_runs.ids["baseline"]).run()
    image = _encoded(_demo_image(demo_dir), "PNG")
    names = ["../../etc/röntgen 肺 #1 *bold* [link](x).png", "..\\windows\\$x$ scan.png"]
    _upload_all(app, [(name, image) for name in names] + [("../broken <b>.png", b"not a png")])
    assert_no_exception(app)
    rows = _rows(app)
    for name in names:
        assert rows[name]["error"] == "" and 0.0 <= rows[name]["probability"] <= 1.0
    assert rows["../broken <b>.png"]["error"] and "\n" not in rows["../broken <b>.png"]["error"]
    assert "\\*bold\\*" in texts(app.markdown), "names must be escaped, not rendered as Markdown"
    assert not list(tmp_path.iterdir()), "uploads are processed in memory: nothing is written"


def test_empty_upload_lists_give_no_inputs_and_no_results():
    assert predict_inputs.uploads_to_inputs(None) == [] and predict_inputs.uploads_to_inputs([]) == []
    assert predict_results.process_all(None, ("run", ()), []) == []


def test_process_image_refuses_files_over_the_upload_limit():
    result = predict_results.process_image(None, predict_inputs.ImageInput("big.png", b"\x89PNG\r\n\x1a\n" + bytes(MAX_UPLOAD_BYTES)))
    assert result.error == "file too large: 50.0 MB exceeds the 50 MB limit"


def test_the_headline_names_the_class_whose_probability_it_shows():
    from zoidberg.inference.decisions import Prediction, decide

    decision = decide(Prediction(("normal", "pneumonia"), np.array([[0.4, 0.6], [0.2, 0.8]])), 0.75)
    # P(pneumonia) 0.70 under the threshold 0.75: the card says so in those terms, not "Normal 0.30".
    assert predict_results.headline(decision, ("normal", "pneumonia")) == (
        "P(pneumonia) 0.700 ± 0.100 across 2 folds, below the threshold 0.750: normal"
    )
    called = decide(Prediction(("normal", "pneumonia"), np.array([[0.0002, 0.9998], [0.0001, 0.9999]])), 0.75)
    assert predict_results.headline(called, ("normal", "pneumonia")).startswith("P(pneumonia) > 0.999 ± 0.000 across 2 folds, at or above")
    assert predict_results.format_probability(0.0004) == "< 0.001" and predict_results.format_probability(0.5) == "0.500"
    three = decide(Prediction(("normal", "bacteria", "virus"), np.array([[0.1, 0.7, 0.2], [0.1, 0.5, 0.4]])), None)
    assert predict_results.headline(three, ("normal", "bacteria", "virus")) == "P(bacteria) 0.600 ± 0.100 across 2 folds: the most probable class"


@pytest.mark.shared_data
@pytest.mark.skipif(not FULLRES_DIR.is_dir(), reason="../shared/data/chest_xray_fullres is absent")
def test_predict_real_full_resolution_xray(use_runs):
    path = max(FULLRES_DIR.glob("train/*/*.jpeg"), key=lambda candidate: candidate.stat().st_size)
    app = open_app(page="pages/predict.py")
    _upload_all(app, [(path.name, path.read_bytes())])
    assert_no_exception(app)
    row = _rows(app)[path.name]
    refused = row["prediction"] == "refused"
    assert "error" not in row and (row["probability"] is None if refused else 0.0 <= row["probability"] <= 1.0)
    width, height = Image.open(path).size
    (result,) = app.session_state[predict_results.RESULTS_KEY].values()
    assert result.original_shape == (height, width)
    assert max(result.display.shape) == min(predict_results.MAX_DISPLAY_SIDE, max(height, width))


def test_models_are_loaded_only_from_inside_the_runs_folder(trained, tmp_path):

    from zoidberg.inference.loading import load_ensemble

    source = trained.store.get(trained.ids["baseline"])
    copy = trained.store.create_run("cv", source.config, name="symlinked models")
    shutil.copy(source.path / "summary.json", copy.path / "summary.json")
    outside = tmp_path / "elsewhere.keras"
    shutil.copy(source.path / "fold_1" / "model.keras", outside)
    (copy.path / "fold_1").mkdir()
    (copy.path / "fold_1" / "model.keras").symlink_to(outside)
    with pytest.raises(ValueError, match="no trained fold model"):
        load_ensemble(copy.id, runs_dir=trained.dir)
    with pytest.raises(ValueError, match="not a run id"):
        load_ensemble("../" + source.id, runs_dir=trained.dir)


# ----------------------------------------------------------------------------- evaluations on new data


@pytest.fixture
def evaluated_runs(trained, demo_dir, tmp_path, monkeypatch):
    """A private copy of the trained runs; baseline and variant evaluated on the demo test split."""
    from zoidberg.inference.evaluate import evaluate_run

    runs_dir = tmp_path / "runs"
    shutil.copytree(trained.dir, runs_dir)
    store = RunStore(runs_dir)
    for name in ("baseline", "variant"):
        evaluate_run(store.get(trained.ids[name]), demo_dir, split="test", name="demo-test")
    monkeypatch.setenv("ZOIDBERG_RUNS_DIR", str(runs_dir))
    return SimpleNamespace(store=store, ids=trained.ids)


def test_run_view_shows_the_gap_and_changes_the_operating_point(evaluated_runs, demo_dir):
    run_id = evaluated_runs.ids["baseline"]
    app = open_app(demo_dir, "pages/train.py")
    next(item for item in app.selectbox if item.label == "Run").set_value(run_id).run()
    assert_no_exception(app)
    gap = next(frame.value for frame in app.dataframe if "cross-validation (mean ± std)" in frame.value.columns)
    assert "demo-test" in gap.columns and list(gap["metric"])[:4] == ["AUC", "Accuracy", "Sensitivity", "Specificity"]
    assert "Evaluation demo-test" in texts(app.markdown)
    assert {"Evaluations", "Operating point", "Calibration", "Decision curve", "Score distributions"} <= {tab.label for tab in app.tabs}
    # The run view leads with the verdict on new films, in children.
    verdict = texts(app.markdown)
    assert "new films**]" in verdict and "demo-test" in verdict and "healthy children would be called pneumonia" in verdict
    # The operating point leads with what the evaluations measured; carried rates name their assumption.
    assert "Measured on new films" in texts(app.markdown)
    measured = next(frame.value for frame in app.dataframe if "rates" in frame.value.columns)
    assert any(str(rates).startswith("measured on demo-test") for rates in measured["rates"])
    assert "assumes the site's films look like the training films" in texts(app.caption)
    app.selectbox(key=f"op_method_{run_id}").set_value("target-specificity")
    app.number_input(key=f"op_target_{run_id}").set_value(0.9)
    app.radio(key=f"op_scale_{run_id}").set_value("calibrated")
    next(button for button in app.button if button.label == "Use this operating point").click().run()
    assert_no_exception(app)
    point = evaluated_runs.store.get(run_id).read_json("operating_point.json")
    assert point["choice"]["method"] == "target-specificity" and point["choice"]["probabilities"] == "calibrated"
    assert "specificity ≥ 90%" in texts(app.caption)


def test_compare_on_a_shared_evaluation_runs_delong_and_mcnemar(evaluated_runs):
    app = open_app(page="pages/compare.py")
    app.multiselect(key="compare_runs").set_value([evaluated_runs.ids["baseline"], evaluated_runs.ids["variant"]]).run()
    app.radio(key="compare_basis").set_value("demo-test").run()
    assert_no_exception(app)
    verdicts = texts(app.info)
    assert "DeLong p =" in verdicts and "McNemar p =" in verdicts
    table = app.dataframe[0].value
    assert list(table.columns) == ["baseline", "variant"] and "AUC" in table.index
    assert plotly_count(app) >= 2
    # On the cross-validation folds, what the runs measured on the shared films leads, and no metric
    # winner is marked without a test that supports it.
    app.radio(key="compare_basis").set_value(None).run()
    assert_no_exception(app)
    measured = texts(app.info)
    assert "Measured on demo-test" in measured and "baseline" in measured and "Quote these before the cross-validation" in measured
    assert "the smallest is marked" in texts(app.caption) and ("No winner is marked" in texts(app.caption) or "Marked: where" in texts(app.caption))


def test_an_evaluation_started_from_the_page_runs_in_the_background(evaluated_runs, demo_dir):
    from zoidberg.launch import jobs

    run_id = evaluated_runs.ids["variant"]
    app = open_app(demo_dir, "pages/train.py")
    next(item for item in app.selectbox if item.label == "Run").set_value(run_id).run()
    app.text_input(key=f"evaluate_folder_{run_id}").set_value(str(demo_dir)).run()
    name_input = next(item for item in app.text_input if item.label == "Name")
    assert name_input.value == f"{demo_dir.name}-test"
    next(button for button in app.button if "Evaluate" in button.label).click().run()
    assert_no_exception(app)
    run = evaluated_runs.store.get(run_id)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and (jobs.evaluation_job_state(run, name_input.value) or {}).get("state") == "running":
        time.sleep(1)
    assert jobs.evaluation_job_state(run, name_input.value)["state"] == "completed"
    app.text_input(key=f"evaluate_folder_{run_id}").set_value("/no/such/folder").run()
    next(button for button in app.button if "Evaluate" in button.label).click().run()
    assert "does not exist" in texts(app.error)
