"""The out-of-distribution gate: it refuses what is not a chest film, keeps the films, and every surface that predicts shows it."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from apptest_helpers import assert_no_exception, open_app, texts
from zoidberg.data.ood import BLANK_SCORE, OodGate, fit_gate, thumbnails


def _photographs() -> dict[str, np.ndarray]:
    """Non-X-ray images that scikit-image ships (no download): photographs and documents."""
    import skimage.data

    gray = lambda image: np.asarray(Image.fromarray(image).convert("L")) if image.ndim == 3 else image  # noqa: E731
    return {name: gray(getattr(skimage.data, name)()) for name in ("astronaut", "camera", "coffee", "page", "text", "coins")}


@pytest.fixture(scope="module")
def demo_films(tmp_path_factory):
    """Synthetic chest films at 64 px: a training set with patient-grouped folds, and films of other patients."""
    from zoidberg.data.dataset import load_dataset
    from zoidberg.data.demo import make_demo_dataset
    from zoidberg.data.folds import make_folds

    folder = make_demo_dataset(tmp_path_factory.mktemp("gate") / "demo", patients_per_class=30, images_per_patient=(1, 3), image_size=64)
    dataset = load_dataset(folder, image_size=64, cache_dir=tmp_path_factory.mktemp("gate-cache"))
    rows = dataset.training_indices()
    fold_of = make_folds(dataset.labels[rows], dataset.patients[rows], n_splits=3, random_state=0)
    return dataset.images[rows], fold_of, dataset.images[dataset.test_indices()]


def test_the_gate_refuses_photographs_documents_turned_inverted_and_blank_images_and_keeps_new_films(demo_films):
    images, fold_of, new_films = demo_films
    gate = fit_gate(images, fold_of)
    assert gate is not None and gate.n_fitted == len(images)
    kept = gate.verdicts(new_films)
    # The thresholds sit at the 99.5th percentile of out-of-fold training films: new films of
    # other patients pass (a few may not, but never most).
    assert np.mean([verdict.in_distribution for verdict in kept]) >= 0.9
    assert all(verdict.reason is None and verdict.ood_score <= 1.0 for verdict in kept if verdict.in_distribution)
    others = {**_photographs()}
    film = new_films[0]
    others.update(turned=np.rot90(film).copy(), upside_down=np.rot90(film, 2).copy(), inverted=255 - film)
    others.update(black=np.zeros((64, 64), np.uint8), noise=np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8))
    verdicts = dict(zip(others, gate.verdicts(list(others.values()))))
    refused = {name for name, verdict in verdicts.items() if not verdict.in_distribution}
    assert refused == set(others), f"not refused: {set(others) - refused}"
    assert verdicts["black"].ood_score == BLANK_SCORE and "blank" in verdicts["black"].reason
    assert "inverted, upside down or turned" in verdicts["upside_down"].reason or "far from" in verdicts["upside_down"].reason
    assert all(verdict.ood_score > 1.0 and "does not look like a frontal chest X-ray" in verdict.reason for verdict in verdicts.values())


def test_the_gate_reads_back_what_it_wrote_and_names_a_damaged_file(demo_films):
    images, fold_of, new_films = demo_films
    gate = fit_gate(images, fold_of)
    again = OodGate.from_bytes(gate.to_bytes())
    # The scores are float64 and the fitted gate is the stored one: a BLAS that orders its sums
    # otherwise on another CPU moves them by ~1e-12, far inside this tolerance (float32 scores
    # once moved 3e-5 between an Intel and an AMD machine).
    fitted = [verdict.ood_score for verdict in gate.verdicts(new_films[:5])]
    assert [verdict.ood_score for verdict in again.verdicts(new_films[:5])] == pytest.approx(fitted, rel=1e-9, abs=1e-12)
    for density, read in zip(gate.densities, again.densities):
        assert density.components.dtype == read.components.dtype == np.float64
        np.testing.assert_array_equal(density.components, read.components)
    with pytest.raises(ValueError, match="damaged"):
        OodGate.from_bytes(gate.to_bytes()[:100])
    # Too few films or one fold: no gate, rather than a threshold that means nothing.
    assert fit_gate(images[:10], fold_of[:10]) is None
    assert fit_gate(images, np.zeros(len(images), int)) is None


def test_thumbnails_ignore_exposure_and_read_memory_mapped_rows_one_by_one(tmp_path, demo_films):
    images = demo_films[0][:6]
    brighter = np.clip(images.astype(int) * 0.6 + 60, 0, 255).astype(np.uint8)
    np.testing.assert_allclose(thumbnails(images)[0], thumbnails(brighter)[0], atol=0.08)
    mapped_path = tmp_path / "images.npy"
    np.save(mapped_path, demo_films[0])
    mapped = np.load(mapped_path, mmap_mode="r")
    np.testing.assert_array_equal(thumbnails(mapped, np.array([4, 1]))[0], thumbnails(demo_films[0][[4, 1]])[0])


# ---------------------------------------------------------------------------------------
# Every surface that predicts: the run store, the CLI, evaluate and the Predict page.
# ---------------------------------------------------------------------------------------


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def gated_run(trained, tmp_path, monkeypatch):
    """A copy of the session's baseline run in a private store, so that tests may damage it."""
    from zoidberg.runs.store import RunStore

    runs_dir = tmp_path / "runs"
    shutil.copytree(trained.dir / trained.ids["baseline"], runs_dir / trained.ids["baseline"])
    monkeypatch.setenv("ZOIDBERG_RUNS_DIR", str(runs_dir))
    return RunStore(runs_dir).get(trained.ids["baseline"])


def test_a_cross_validation_stores_its_gate_and_predict_refuses_a_photograph(gated_run, demo_dir, tmp_path, capsys):
    from zoidberg.cli.main import main
    from zoidberg.runs.store import OOD_GATE_FILE

    assert (gated_run.path / OOD_GATE_FILE).is_file(), "the run fitted its gate when it ended"
    photo = tmp_path / "astronaut.png"
    photo.write_bytes(_png(_photographs()["astronaut"]))
    film = sorted(demo_dir.glob("train/NORMAL/*.jpeg"))[0]
    assert main(["predict", "--run", gated_run.id, "--json", str(photo), str(film)]) == 0
    rows = {row["file"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows[str(photo)]["in_distribution"] is False and rows[str(photo)]["ood_score"] > 1.0
    # No diagnosis stands beside REFUSED: a script reading label and probability reads nothing.
    assert rows[str(photo)]["prediction"] == "REFUSED" and rows[str(photo)]["label"] is None and rows[str(photo)]["probability"] is None
    assert set(rows[str(photo)]["not_a_diagnosis"]) == {"label", "probability"}
    assert "does not look like a frontal chest X-ray" in rows[str(photo)]["ood_reason"]
    assert rows[str(film)]["in_distribution"] is True and rows[str(film)]["ood_reason"] is None
    csv_path = tmp_path / "out.csv"
    assert main(["predict", "--run", gated_run.id, "--csv", str(csv_path), str(photo), str(film)]) == 0
    printed = capsys.readouterr().out
    assert f"{photo}: REFUSED, no diagnosis." in printed and "1 refused as unlike the training films" in printed
    import csv

    with open(csv_path, newline="", encoding="utf-8") as handle:
        table = {row["file"]: row for row in csv.DictReader(handle)}
    assert table[str(photo)]["in_distribution"] == "False" and float(table[str(photo)]["ood_score"]) > 1.0


def test_a_run_from_before_the_gate_gets_it_on_first_use_or_says_it_is_unchecked(gated_run, demo_dir, tmp_path, capsys):
    from zoidberg.cli.main import main
    from zoidberg.runs.store import CONFIG_FILE, OOD_GATE_FILE

    (gated_run.path / OOD_GATE_FILE).unlink()
    film = sorted(demo_dir.glob("train/NORMAL/*.jpeg"))[0]
    assert main(["predict", "--run", gated_run.id, "--json", str(film)]) == 0
    assert json.loads(capsys.readouterr().out)[0]["in_distribution"] is True
    assert (gated_run.path / OOD_GATE_FILE).is_file(), "fitted from the training folder and stored"
    # Without its training folder, an older run predicts unchecked and says so.
    (gated_run.path / OOD_GATE_FILE).unlink()
    config = json.loads((gated_run.path / CONFIG_FILE).read_text())
    config["data"]["data_dir"] = str(tmp_path / "gone")
    (gated_run.path / CONFIG_FILE).write_text(json.dumps(config))
    copy = tmp_path / "film.jpeg"
    shutil.copy(film, copy)
    assert main(["predict", "--run", gated_run.id, str(copy)]) == 0
    printed = capsys.readouterr().out
    assert "Unchecked:" in printed and "cannot be loaded to fit one" in printed
    assert main(["predict", "--run", gated_run.id, "--json", str(copy)]) == 0
    assert json.loads(capsys.readouterr().out)[0]["in_distribution"] is None


def test_evaluate_counts_and_lists_the_refused_films(gated_run, demo_dir, tmp_path, capsys):
    from zoidberg.cli.main import main
    from zoidberg.runs.store import PREDICTIONS_FILE

    folder = tmp_path / "site"
    for label in ("NORMAL", "PNEUMONIA"):
        (folder / label).mkdir(parents=True)
        for path in sorted(demo_dir.glob(f"test/{label}/*.jpeg"))[:4]:
            shutil.copy(path, folder / label / path.name)
    upside_down = folder / "NORMAL" / "IM-9001-0001.jpeg"
    first = np.asarray(Image.open(sorted(demo_dir.glob("test/NORMAL/*.jpeg"))[0]).convert("L"))
    Image.fromarray(np.rot90(first, 2).copy()).save(upside_down)
    assert main(["evaluate", "--run", gated_run.id, "--data", str(folder), "--name", "site"]) == 0
    printed = capsys.readouterr().out
    evaluation = json.loads((gated_run.evaluation_path("site") / "evaluation.json").read_text())
    gate = evaluation["out_of_distribution"]
    # A gate fitted on some thirty 32-px films is strict and may refuse a real one too; the
    # upside-down film is always among the refused, and every surface counts the same.
    flagged = [item["path"] for item in gate["flagged"]]
    assert gate["checked"] and "NORMAL/IM-9001-0001.jpeg" in flagged and gate["n_flagged"] == len(flagged) < 9
    assert f"Out-of-distribution gate: {len(flagged)} of 9 images refused: " in printed and "NORMAL/IM-9001-0001.jpeg" in printed
    assert "expect it to refuse some real X-rays too" in gate["note"]
    import pandas as pd

    table = pd.read_csv(gated_run.evaluation_path("site") / PREDICTIONS_FILE).set_index("path")
    assert table.loc["NORMAL/IM-9001-0001.jpeg", "in_distribution"] == 0
    assert sorted(table.index[table["in_distribution"] == 0]) == sorted(flagged)


def test_the_predict_page_shows_a_refusal_card_instead_of_a_diagnosis(use_runs, demo_dir):
    app = open_app(page="pages/predict.py")
    app.selectbox(key="predict_run").set_value(use_runs.ids["baseline"]).run()
    # A training film: the strict gate of this tiny run accepts it for sure.
    film = sorted(demo_dir.glob("train/PNEUMONIA/*.jpeg"))[0]
    app.file_uploader(key="predict_uploads").set_value(
        [("astronaut.png", _png(_photographs()["astronaut"]), "image/png"), (film.name, film.read_bytes(), "image/jpeg")]
    )
    app.run()
    assert_no_exception(app)
    assert "No diagnosis" in texts(app.markdown)
    assert "does not look like a frontal chest X-ray like those the model learned from" in texts(app.error)
    assert "1 of 2 image(s) do not look like the frontal chest X-rays" in texts(app.warning)
    rows = {row["file"]: row for row in app.dataframe[0].value.to_dict("records")}
    assert rows["astronaut.png"]["prediction"] == "refused" and rows["astronaut.png"]["in_distribution"] is False
    assert rows["astronaut.png"]["probability"] is None or rows["astronaut.png"]["probability"] != rows["astronaut.png"]["probability"]
    assert rows[film.name]["prediction"] in ("normal", "pneumonia") and rows[film.name]["in_distribution"] is True


def test_a_file_name_that_is_not_utf8_is_predicted_and_written_whole(gated_run, demo_dir, tmp_path, capsys):
    import csv
    import os

    from zoidberg.cli.main import main

    folder = tmp_path / "odd"
    folder.mkdir()
    films = sorted(demo_dir.glob("train/NORMAL/*.jpeg"))[:3]
    for film in films:
        shutil.copy(film, folder / film.name)
    odd = os.path.join(os.fsencode(folder), b"IM-9009-\xff\xfe.jpeg")
    shutil.copy(films[0], odd)
    csv_path = tmp_path / "out.csv"
    assert main(["predict", "--run", gated_run.id, "--csv", str(csv_path), str(folder)]) == 0
    printed = capsys.readouterr().out
    assert "IM-9009-\\udcff\\udcfe.jpeg" in printed and "Wrote 4 rows" in printed
    # The CSV keeps the name's own bytes: read back as README says, it is the file's path.
    with open(csv_path, newline="", encoding="utf-8", errors="surrogateescape") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 and any(row["file"] == os.fsdecode(odd) for row in rows)
    assert all(row["prediction"] in ("normal", "pneumonia") for row in rows)


def test_a_large_set_fits_the_gate_on_a_seeded_sample(demo_films, monkeypatch):
    from zoidberg.data import ood

    images, fold_of, new_films = demo_films
    monkeypatch.setattr(ood, "MAX_FIT_IMAGES", 40)
    gate = ood.fit_gate(images, fold_of)
    assert gate.n_fitted == 40 < len(images)
    assert [verdict.ood_score for verdict in gate.verdicts(new_films[:3])] == [
        verdict.ood_score for verdict in ood.fit_gate(images, fold_of).verdicts(new_films[:3])
    ]


def test_the_feature_stage_refuses_far_films_names_side_views_and_reads_back_exactly():
    from zoidberg.data.feature_gate import NOT_A_FILM, OTHER_POPULATION, SIDE_VIEW, FeatureGate, fit_feature_gate, mirror_symmetry

    rng = np.random.default_rng(0)
    features = np.abs(rng.normal(1.0, 0.3, size=(300, 24)))
    fold_of = np.arange(300) % 3
    # Symmetric films (a frontal chest) and one without a mirror image (a side view).
    symmetric = np.tile(np.r_[np.arange(32), np.arange(32)[::-1]].astype(np.uint8) * 4, (64, 1))
    lopsided = np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1))
    assert mirror_symmetry([symmetric])[0] > 0.9 > -0.5 > mirror_symmetry([lopsided])[0]
    gate = fit_feature_gate(features, fold_of, [symmetric] * 50)
    again = FeatureGate.from_bytes(gate.to_bytes())
    assert again.units(features[:5]) == pytest.approx(gate.units(features[:5]), rel=1e-12)
    assert again.symmetry_floor == gate.symmetry_floor
    inside = gate.verdicts(features[:20], [symmetric] * 20)
    assert sum(verdict is None for verdict in inside) >= 18
    units = gate.units(features)
    scale = gate.threshold - gate.median
    # Move films out along every feature until they score about 1.5 and about 6 units.
    step = np.ones(24)
    near = next(features[0] + step * delta for delta in np.linspace(0, 3, 301) if gate.units((features[0] + step * delta)[None])[0] > 1.5)
    far = features[0] + step * 5.0
    verdicts = gate.verdicts(np.stack([near, far, far]), [symmetric, symmetric, lopsided])
    assert verdicts[0].reason.startswith(OTHER_POPULATION) and not verdicts[0].in_distribution
    assert verdicts[1].reason.startswith(NOT_A_FILM) and verdicts[1].ood_score >= 2.0
    assert verdicts[2].reason.startswith(SIDE_VIEW)
    assert scale > 0 and units.max() < 100
    with pytest.raises(ValueError, match="damaged"):
        FeatureGate.from_bytes(gate.to_bytes()[:50])
    assert fit_feature_gate(features[:10], fold_of[:10]) is None


@pytest.mark.parametrize(
    "tags, reason",
    [
        ({"ViewPosition": "LL"}, "side view (ViewPosition LL)"),
        ({"Modality": "CT"}, "modality is CT"),
        ({"BodyPartExamined": "HAND"}, "body part is HAND, not the chest"),
        ({"PatientAge": "045Y"}, "patient is 45 years old"),
        ({"PatientBirthDate": "19700101", "StudyDate": "20200101"}, "patient is 50 years old"),
        ({"ViewPosition": "PA", "BodyPartExamined": "CHEST", "PatientAge": "003Y"}, None),
        ({}, None),
    ],
)
def test_what_a_dicom_header_says_settles_a_refusal(tags, reason):
    from tests import imagegen
    from zoidberg.data.dicom_facts import facts_verdict, read_dicom_facts

    data = imagegen.dicom_bytes(np.full((64, 64), 100, dtype=np.uint8), tags=tags)
    verdict = facts_verdict(read_dicom_facts(data))
    if reason is None:
        assert verdict is None
    else:
        assert not verdict.in_distribution and reason in verdict.reason
    assert read_dicom_facts(_png(np.zeros((8, 8), dtype=np.uint8))) is None


def test_predict_refuses_a_dicom_side_view_by_its_header(trained, tmp_path):
    from tests import imagegen
    from zoidberg.inference.loading import load_ensemble
    from zoidberg.inference.scoring import FilmSource, predict_files, predict_sources

    film = tmp_path / "lateral.dcm"
    film.write_bytes(imagegen.dicom_bytes(np.full((64, 64), 100, dtype=np.uint8), tags={"ViewPosition": "LL", "BodyPartExamined": "CHEST"}))
    ensemble = load_ensemble(trained.ids["baseline"], runs_dir=trained.dir)
    (row,) = predict_files(ensemble, [film])
    assert row["in_distribution"] is False and "side view (ViewPosition LL)" in row["ood_reason"]
    (record,) = predict_sources(ensemble, [FilmSource("lateral.dcm", film.read_bytes())], door="http")
    assert "side view" in record["ood_reason"] and record["label"] is None and record["probability"] is None


def test_a_refused_row_shows_no_probability_in_the_csv(trained, tmp_path):
    import csv

    from tests import imagegen
    from zoidberg.cli.main import main

    film = tmp_path / "lateral.dcm"
    film.write_bytes(imagegen.dicom_bytes(np.full((64, 64), 100, dtype=np.uint8), tags={"ViewPosition": "LL"}))
    out = tmp_path / "predictions.csv"
    main(["predict", "--run", trained.ids["baseline"], str(film), "--csv", str(out), "--runs-dir", str(trained.dir)])
    (row,) = list(csv.DictReader(out.open(encoding="utf-8")))
    assert row["prediction"] == "REFUSED" and row["in_distribution"] == "False" and "side view" in row["ood_reason"]
    assert row["probability"] == row["p_pneumonia"] == row["probability_raw"] == ""


def test_the_jpeg_quality_films_were_stored_at_is_read_from_their_tables(tmp_path):
    from PIL import Image

    from zoidberg.data.jpeg_quality import jpeg_quality, jpeg_round_trip, stored_quality

    rng = np.random.default_rng(0)
    film = (np.add.outer(np.arange(64), np.arange(64)) + rng.integers(0, 20, (64, 64))).astype(np.uint8)
    for quality in (50, 75, 90):
        Image.fromarray(film).save(tmp_path / f"q{quality}.jpeg", quality=quality)
        assert jpeg_quality(tmp_path / f"q{quality}.jpeg") == quality
    Image.fromarray(film).save(tmp_path / "film.png")
    assert jpeg_quality(tmp_path / "film.png") is None and jpeg_quality(tmp_path / "missing.jpeg") is None
    assert stored_quality([tmp_path / "q75.jpeg"] * 3 + [tmp_path / "film.png"]) == 75
    assert stored_quality([tmp_path / "film.png"] * 3 + [tmp_path / "q75.jpeg"]) == 0 and stored_quality([]) == 0
    stored = jpeg_round_trip(film, 75)
    assert stored.shape == film.shape and stored.dtype == np.uint8 and not np.array_equal(stored, film)
    # The noise is what quality 75 loses (its standard deviation is 5.8); a smooth film keeps its values.
    assert np.abs(stored.astype(int) - film).mean() < 6
    smooth = np.add.outer(np.arange(64), np.arange(64)).astype(np.uint8)
    assert np.abs(jpeg_round_trip(smooth, 75).astype(int) - smooth).mean() < 1


def test_the_feature_stage_stores_films_as_the_training_films_were_and_reads_old_files():
    import io

    from zoidberg.data.feature_gate import FeatureGate, fit_feature_gate
    from zoidberg.data.jpeg_quality import jpeg_round_trip

    rng = np.random.default_rng(1)
    features = np.abs(rng.normal(1.0, 0.3, size=(120, 8)))
    gate = fit_feature_gate(features, np.arange(120) % 3, stored_quality=75)
    assert gate.stored_quality == 75 and FeatureGate.from_bytes(gate.to_bytes()).stored_quality == 75
    film = rng.integers(0, 255, (32, 32)).astype(np.uint8)
    assert np.array_equal(gate.prepare_films([film])[0], jpeg_round_trip(film, 75))
    # A gate file written before stored_quality existed reads films as they come.
    with np.load(io.BytesIO(gate.to_bytes())) as stored:
        arrays = {key: stored[key] for key in stored.files if key != "stored_quality"}
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    old = FeatureGate.from_bytes(buffer.getvalue())
    assert old.stored_quality == 0 and np.array_equal(old.prepare_films([film])[0], film)

