"""Evaluating runs on labeled folders: stored in the run, reused, re-scored, checked for leakage; bad folders refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from zoidberg.config import OperatingPointChoice
from zoidberg.data.dataset import DatasetError
from zoidberg.inference.evaluate import evaluate_run
from zoidberg.evaluation.leakage import evaluation_notes
from zoidberg.evaluation.stored import current_evaluations, read_predictions
from zoidberg.evaluation.out_of_fold import read_out_of_fold, set_operating_point
from zoidberg.runs.store import EVALUATIONS_DIR, RunStore


@pytest.fixture
def copy_of(trained, tmp_path):
    """Returns a function that copies one of the shared trained runs into a private store."""

    def copy(name: str):
        store = RunStore(tmp_path / "runs")
        source = trained.store.get(trained.ids[name])
        shutil.copytree(source.path, store.root / source.id)
        return store.get(source.id)

    return copy


def test_an_evaluation_is_stored_in_the_run_and_reused(copy_of, demo_dir):
    run = copy_of("baseline")
    lines = []
    evaluation = evaluate_run(run, demo_dir, split="test", name="demo-test", report=lines.append)
    folder = run.path / EVALUATIONS_DIR / "demo-test"
    assert (folder / "evaluation.json").is_file() and (folder / "predictions.csv").is_file()
    assert evaluation["split"] == "test" and evaluation["n_images"] == len(list(demo_dir.glob("test/*/*.jpeg")))
    assert evaluation["folds_used"] == [1, 2] and 0.0 <= evaluation["metrics"]["accuracy"] <= 1.0
    interval = evaluation["auc_ci"]
    assert interval["low"] <= interval["estimate"] <= interval["high"]
    assert set(evaluation["calibration"]) == {"raw", "calibrated"} and evaluation["decision_curve"]["model"]
    # The demo test split holds other patients than train+val: no leakage.
    assert evaluation["leakage"]["clean"]
    stored = read_predictions(run, "demo-test")
    assert len(stored["paths"]) == evaluation["n_images"] and stored["calibrated"] is not None
    again = evaluate_run(run, demo_dir, split="test", name="demo-test", report=lines.append)
    assert again["created"] == evaluation["created"] and any("reused" in line for line in lines)
    forced = evaluate_run(run, demo_dir, split="test", name="demo-test", force=True)
    assert forced["metrics"] == evaluation["metrics"]


def test_a_new_operating_point_rescores_the_stored_probabilities_without_the_network(copy_of, demo_dir, monkeypatch):
    run = copy_of("baseline")
    evaluate_run(run, demo_dir, split="test", name="demo-test")
    point = set_operating_point(run, OperatingPointChoice("target-sensitivity", target=0.99, probabilities="calibrated"))
    assert (run.summary() or {})["threshold"] == point["threshold"] and run.summary()["probabilities"] == "calibrated"
    (shown,) = [item for item in current_evaluations(run) if item["name"] == "demo-test"]
    assert shown["threshold"] == point["threshold"] and shown["scale"] == "calibrated"
    from zoidberg.inference.ensemble import Ensemble

    monkeypatch.setattr(Ensemble, "score_dataset", lambda *args, **kwargs: pytest.fail("no network pass was needed"))
    rescored = evaluate_run(run, demo_dir, split="test", name="demo-test")
    assert rescored["threshold"] == point["threshold"] and "rescored" in rescored


def test_evaluating_the_training_folder_reports_the_leak(copy_of, demo_dir):
    run = copy_of("baseline")
    evaluation = evaluate_run(run, demo_dir, split="all", name="itself")
    leakage = evaluation["leakage"]
    assert not leakage["clean"] and leakage["n_shared_patients"] > 0 and leakage["n_identical_files"] > 0
    notes = evaluation_notes(evaluation)
    assert any("byte-identical to training films" in note and "optimistic" in note for note in notes)


def _training_patient_numbers(run) -> list[str]:
    import csv

    with run.open_text("folds.csv") as handle:
        return sorted({row["patient"] for row in csv.DictReader(handle) if row["patient"].startswith("person")})


def test_a_patient_number_match_alone_is_weak_evidence_and_another_site_sets_it_aside(copy_of, demo_dir, tmp_path, capsys):
    from zoidberg.cli import main

    run = copy_of("baseline")
    number = _training_patient_numbers(run)[0]
    folder = tmp_path / "other-hospital"
    # Films of other children (the demo's test split), named with a training patient's number.
    for index, path in enumerate(sorted(demo_dir.glob("test/PNEUMONIA/*.jpeg"))[:3] + sorted(demo_dir.glob("test/NORMAL/*.jpeg"))[:3]):
        (folder / path.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / path.parent.name / (f"{number}_bacteria_{900 + index}.jpeg" if index < 3 else path.name))
    evaluation = evaluate_run(run, folder, name="other-hospital")
    leakage = evaluation["leakage"]
    assert leakage["n_shared_patients"] == 1 and leakage["n_identical_files"] == 0 and leakage["n_near_duplicates"] == 0
    assert leakage["near_checked"] and leakage["clean"]
    (sentence,) = evaluation_notes(evaluation)
    assert "same file-name patient number" in sentence and "weak evidence" in sentence and number in sentence
    assert "not called optimistic" in sentence and "scores are optimistic" not in sentence
    # Stated to come from another site (the CLI's --other-site): the match is set aside, nothing is scored again.
    code = main(["--runs-dir", str(run.path.parent), "evaluate", "--run", run.id, "--data", str(folder), "--name", "other-hospital", "--other-site"])
    assert code == 0
    out = capsys.readouterr().out
    assert "another site" in out and "reused" in out
    stored = json.loads(run.evaluation_path("other-hospital", "evaluation.json").read_text())
    assert stored["leakage"]["other_site"] and stored["created"] == evaluation["created"]
    (sentence,) = evaluation_notes(stored)
    assert "stated to come from another site" in sentence and "optimistic" not in sentence


def test_a_training_film_saved_again_is_a_near_duplicate_and_called_optimistic(copy_of, demo_dir, tmp_path):
    from PIL import Image

    run = copy_of("baseline")
    folder = tmp_path / "resaved" / "PNEUMONIA"
    folder.mkdir(parents=True)
    (film,) = sorted(demo_dir.glob("train/PNEUMONIA/*.jpeg"))[:1]
    # The same film, shrunk a little and saved at another quality: not byte-identical, nearly the same picture.
    image = Image.open(film)
    image.resize((image.width - 3, image.height - 3)).save(folder / "resaved_1.jpeg", quality=70)
    shutil.copy(sorted(demo_dir.glob("test/PNEUMONIA/*.jpeg"))[0], folder / "other_1.jpeg")
    evaluation = evaluate_run(run, folder.parent, name="resaved")
    leakage = evaluation["leakage"]
    assert leakage["n_identical_files"] == 0 and leakage["n_near_duplicates"] == 1 and not leakage["clean"]
    assert leakage["near_duplicates"][0]["file"].endswith("resaved_1.jpeg") and film.name in leakage["near_duplicates"][0]["training_file"]
    assert any("near-duplicates of training films" in note and "optimistic" in note for note in evaluation_notes(evaluation))


def test_an_older_evaluation_is_shown_with_todays_leakage_wording():
    old = {
        "notes": ["3 patient(s) of this folder are in the run's training data (e.g. person1): their images were seen in training, so the scores are optimistic.", "Another note."],
        "leakage": {"shared_patients": ["person1"], "n_shared_patients": 3, "identical_files": [], "n_identical_files": 0},
    }
    notes = evaluation_notes(old)
    assert notes[0] == "Another note." and len(notes) == 2
    assert "weak evidence" in notes[1] and "near-duplicates not checked" in notes[1] and "scores are optimistic" not in notes[1]


def test_a_one_class_folder_is_evaluated_without_an_auc(copy_of, demo_dir, tmp_path):
    run = copy_of("baseline")
    folder = tmp_path / "only-normal" / "NORMAL"
    folder.mkdir(parents=True)
    for path in sorted(demo_dir.glob("test/NORMAL/*.jpeg"))[:4]:
        shutil.copy(path, folder / path.name)
    evaluation = evaluate_run(run, folder.parent, name="normals")
    assert evaluation["one_class"] and evaluation["auc_ci"] is None
    assert evaluation["metrics"]["roc_auc"] is None and evaluation["metrics"]["specificity"] is not None
    assert any("one class only" in note for note in evaluation["notes"])


def test_unusable_folders_are_refused_and_nothing_is_stored(copy_of, demo_dir, tmp_path):
    run = copy_of("baseline")
    broken = tmp_path / "broken" / "NORMAL"
    broken.mkdir(parents=True)
    (broken / "scan.jpeg").write_text("not an image")
    with pytest.raises(DatasetError, match="No readable image"):
        evaluate_run(run, broken.parent, name="broken")
    with pytest.raises(DatasetError, match="does not exist"):
        evaluate_run(run, tmp_path / "nowhere", name="nowhere")
    flat = tmp_path / "flat"
    shutil.copytree(demo_dir / "train", flat)
    with pytest.raises(ValueError, match="has no test/ folder"):
        evaluate_run(run, flat, split="test", name="flat")
    three_class = copy_of("three_class")
    no_pathogen = tmp_path / "no-pathogen"
    for kind in ("NORMAL", "PNEUMONIA"):
        (no_pathogen / kind).mkdir(parents=True)
        for index, path in enumerate(sorted(demo_dir.glob(f"test/{kind}/*.jpeg"))[:2]):
            shutil.copy(path, no_pathogen / kind / f"scan{index}.jpeg")
    with pytest.raises(DatasetError, match="cannot be labeled in its mode"):
        evaluate_run(three_class, no_pathogen, name="no-pathogen")
    assert not (run.path / EVALUATIONS_DIR / "broken").exists() and not (three_class.path / EVALUATIONS_DIR / "no-pathogen").exists()
    with pytest.raises(ValueError, match="cannot name an evaluation"):
        evaluate_run(run, demo_dir, name="../escape")


def test_a_stopped_run_evaluates_with_its_finished_folds_and_says_so(copy_of, demo_dir):
    run = copy_of("stopped")
    evaluation = evaluate_run(run, demo_dir, split="test", name="partial")
    assert evaluation["folds_used"] == [1] and evaluation["n_splits"] == 2
    assert any("after 1 of 2 folds" in note for note in evaluation["notes"])


def test_images_of_another_size_are_resized_as_in_training(copy_of, demo_dir, tmp_path):
    from PIL import Image

    run = copy_of("baseline")
    large = tmp_path / "large"
    for kind in ("NORMAL", "PNEUMONIA"):
        (large / kind).mkdir(parents=True)
        for path in sorted(demo_dir.glob(f"test/{kind}/*.jpeg"))[:3]:
            Image.open(path).resize((300, 220)).save(large / kind / path.name)
    evaluation = evaluate_run(run, large, name="large")
    assert evaluation["n_images"] == 6 and 0.0 <= evaluation["metrics"]["accuracy"] <= 1.0


def test_out_of_fold_predictions_read_back_match_the_summary(trained):
    run = trained.store.get(trained.ids["baseline"])
    out_of_fold = read_out_of_fold(run)
    summary = run.summary()
    assert len(out_of_fold.labels) == sum(summary["n_validation_per_fold"])
    assert out_of_fold.calibrated is not None and np.allclose(out_of_fold.raw.sum(axis=1), 1.0, atol=1e-5)
    stored = json.loads((run.path / "operating_point.json").read_text())
    assert stored["threshold"] == pytest.approx(summary["threshold"])
    with pytest.raises(ValueError, match="Three-class"):
        set_operating_point(trained.store.get(trained.ids["three_class"]), OperatingPointChoice())


def test_runs_cli_shows_the_latest_external_evaluation(copy_of, demo_dir, capsys):
    from zoidberg.cli import main

    run = copy_of("baseline")
    evaluate_run(run, demo_dir, split="test", name="demo-test")
    assert main(["--runs-dir", str(run.path.parent), "runs", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["external"] == "demo-test" and row["external_accuracy"] is not None


def test_evaluate_and_operating_point_commands(copy_of, demo_dir, capsys):
    from zoidberg.cli import main

    run = copy_of("baseline")
    runs_dir = str(run.path.parent)
    assert main(["--runs-dir", runs_dir, "evaluate", "--run", run.id, "--data", str(demo_dir), "--split", "test"]) == 0
    out = capsys.readouterr().out
    assert "AUC" in out and "95% CI" in out and "Cross-validation -> this folder" in out and f"{Path(demo_dir).name}-test" in out
    assert main(["--runs-dir", runs_dir, "operating-point", run.id, "--target-specificity", "0.9", "--prevalence", "0.3"]) == 0
    out = capsys.readouterr().out
    assert "specificity ≥ 90%" in out and "prevalence 30.0% (stated)" in out and "Youden" in out
    assert main(["--runs-dir", runs_dir, "operating-point", run.id, "--prevalence", "1.5"]) == 2
    assert "prevalence must be from 0.01 to 0.99" in capsys.readouterr().err
    assert main(["--runs-dir", runs_dir, "evaluate", "--run", run.id, "--data", "/nowhere"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_the_gap_verdict_judges_changes_by_harm_and_counts_children(copy_of, demo_dir):
    from zoidberg.evaluation.gap import gap_table, gap_verdict, harm_of

    assert harm_of("specificity", -0.329) == "worse" and harm_of("sensitivity", 0.036) == "better"
    assert harm_of("ece", 0.05) == "worse" and harm_of("brier", -0.05) == "better" and harm_of("accuracy", 0.01) == "same"
    run = copy_of("baseline")
    evaluation = evaluate_run(run, demo_dir, split="test", name="demo-test")
    # What the site sample showed `best`: specificity fell by a third, sensitivity rose a little.
    cv = {row["key"]: row for row in gap_table(run, [evaluation])}
    site = {**evaluation, "name": "site", "metrics": {**evaluation["metrics"],
            "specificity": cv["specificity"]["cross-validation"]["value"] - 0.329,
            "sensitivity": min(1.0, cv["sensitivity"]["cross-validation"]["value"] + 0.036),
            "confusion_matrix": [[77, 40], [11, 184]]}}
    verdict = gap_verdict(run, site)
    assert verdict["large"] and verdict["level"] in ("worse", "mixed") and "Specificity" in verdict["headline"]
    assert verdict["counts"] == ("On these 312 films, 40 of 117 healthy children would be called pneumonia, "
                                 "and 11 of 195 children with pneumonia would be missed.")
    harms = {item["key"]: item["harm"] for item in verdict["changes"]}
    assert harms["specificity"] == "worse" and harms["sensitivity"] in ("better", "same")
