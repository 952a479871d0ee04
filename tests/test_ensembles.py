"""Ensembles of runs: thresholds from the members' out-of-fold predictions, stacking, prediction, evaluation, refusals."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from zoidberg.config import EnsembleConfig, OperatingPointChoice
from zoidberg.evaluation.operating import operating_point
from zoidberg.evaluation.out_of_fold import read_out_of_fold
from zoidberg.runs.store import MEMBERS_FILE, OPERATING_POINT_FILE, RunStore
from zoidberg.training.ensemble import align_members, prepare_ensemble, run_ensemble

SENSITIVE = OperatingPointChoice("target-sensitivity", target=0.9)


@pytest.fixture
def store(trained, tmp_path):
    """A private store holding copies of the shared trained runs."""
    store = RunStore(tmp_path / "runs")
    for run_id in trained.ids.values():
        shutil.copytree(trained.store.get(run_id).path, store.root / run_id)
    return store


def make_ensemble(store, config: EnsembleConfig):
    """Prepares and builds an ensemble run in this process, as its worker would."""
    run = store.create_run("ensemble", prepare_ensemble(config, store), config.run_name)
    run_ensemble(run)
    assert run.state == "completed", run.status()
    return run


def members_mean(store, ids):
    """The members' out-of-fold probabilities aligned by path, their mean, labels and the first member's folds."""
    members = [store.get(run_id) for run_id in ids]
    rows, stacked = align_members(members)
    reference = read_out_of_fold(members[0])
    position = {path: index for index, path in enumerate(reference.paths)}
    order = np.array([position[row["path"]] for row in rows])
    return stacked, stacked.mean(axis=0), reference.labels[order], reference.fold_of[order]


def test_the_threshold_comes_from_the_members_out_of_fold_predictions(store, trained):
    ids = (trained.ids["baseline"], trained.ids["variant"])
    run = make_ensemble(store, EnsembleConfig(members=ids, operating_point=SENSITIVE, run_name="pair"))
    _, combined, labels, fold_of = members_mean(store, ids)
    expected = operating_point(labels, combined[:, 1], fold_of, SENSITIVE)
    stored = run.read_json(OPERATING_POINT_FILE)
    assert stored["threshold"] == pytest.approx(expected["threshold"])
    assert run.summary()["threshold"] == pytest.approx(expected["threshold"])
    # The ensemble's own out-of-fold predictions are the members' mean, fold by fold.
    out_of_fold = read_out_of_fold(run)
    assert np.allclose(out_of_fold.raw, combined) and np.array_equal(out_of_fold.fold_of, fold_of)
    assert [member["run_id"] for member in run.summary()["members"]] == list(ids)


def test_stacking_is_cross_fitted_on_the_folds_and_weighs_the_members(store, trained):
    from zoidberg.evaluation.combination import fit_combiner, out_of_fold_combination

    ids = (trained.ids["baseline"], trained.ids["variant"])
    run = make_ensemble(store, EnsembleConfig(members=ids, method="stacking", operating_point=SENSITIVE))
    stacked, mean, labels, fold_of = members_mean(store, ids)
    crossed = out_of_fold_combination("stacking", stacked, labels, fold_of)
    # Each fold is combined by a regression that never saw it, so it differs from a fit on all rows.
    assert not np.allclose(crossed, fit_combiner("stacking", stacked, labels).apply(stacked))
    assert np.allclose(read_out_of_fold(run).raw, crossed)
    assert len(run.summary()["combiner"]["coefficients"]) == 2
    expected = operating_point(labels, crossed[:, 1], fold_of, SENSITIVE)
    assert run.read_json(OPERATING_POINT_FILE)["threshold"] == pytest.approx(expected["threshold"])


@pytest.mark.parametrize(
    "members, message",
    [
        (("baseline", "three_class"), "label modes"),
        (("baseline", "stopped"), "only completed runs"),
        (("baseline", "missing"), "is not in"),
    ],
)
def test_members_that_cannot_combine_are_refused_with_a_reason(store, trained, members, message):
    ids = tuple(trained.ids.get(name, "20260101-000000-cv-000000") for name in members)
    with pytest.raises(ValueError, match=message):
        prepare_ensemble(EnsembleConfig(members=ids), store)


def test_an_ensemble_needs_two_distinct_runs():
    with pytest.raises(ValueError, match="at least two"):
        EnsembleConfig(members=("a",))
    with pytest.raises(ValueError, match="once"):
        EnsembleConfig(members=("a", "a"))


def test_an_ensemble_predicts_explains_and_evaluates_like_any_run(store, trained, demo_dir):
    from zoidberg.data.imaging import decode_grayscale
    from zoidberg.inference.evaluate import evaluate_run
    from zoidberg.inference.ensemble_of_runs import EnsembleOfRuns
    from zoidberg.inference.loading import load_ensemble

    ids = (trained.ids["baseline"], trained.ids["variant"])
    run = make_ensemble(store, EnsembleConfig(members=ids, run_name="pair"))
    ensemble = load_ensemble(run.id, runs_dir=store.root)
    assert isinstance(ensemble, EnsembleOfRuns) and ensemble.threshold == run.summary()["threshold"]
    image = next(demo_dir.glob("test/PNEUMONIA/*.jpeg"))
    from zoidberg.inference.scoring import FilmSource, score_films

    (film,) = score_films(ensemble, [FilmSource(str(image), image)])
    decision = ensemble.decide(film.prediction).to_dict()
    members = [load_ensemble(run_id, runs_dir=store.root) for run_id in ids]
    # Decoded as score_films decodes (JPEG draft at the largest member's size).
    gray = decode_grayscale(image, draft_size=ensemble.image_size)
    expected = np.mean([member.probabilities(gray).mean[1] for member in members])
    assert decision["unit"] == "member" and len(decision["per_fold"]) == 2
    assert decision["probability_raw"] == pytest.approx(expected, abs=1e-5)
    heatmap = ensemble.gradcam(decode_grayscale(image))
    assert heatmap.shape == (32, 32) and 0.0 <= heatmap.min() and heatmap.max() <= 1.0
    lines = []
    evaluation = evaluate_run(run, demo_dir, split="test", name="demo-test", report=lines.append)
    assert evaluation["models"].startswith("2 member runs") and evaluation["n_images"] > 0
    assert evaluation["leakage"]["clean"]
    again = evaluate_run(run, demo_dir, split="test", name="demo-test", report=lines.append)
    assert again["created"] == evaluation["created"]
    # The ensemble's test split was scored once when it was made, like a run's.
    assert any(item["name"] == "test" for item in run.evaluations())


def test_the_run_view_offers_an_ensembles_report_export_and_models(store, trained, demo_dir, monkeypatch):
    import io
    import zipfile

    from tests.apptest_helpers import open_app
    from zoidberg.inference.loading import models_archive

    ids = (trained.ids["baseline"], trained.ids["variant"])
    run = make_ensemble(store, EnsembleConfig(members=ids, run_name="pair"))
    monkeypatch.setenv("ZOIDBERG_RUNS_DIR", str(store.root))
    app = open_app(demo_dir, "pages/train.py")
    assert not app.exception
    assert any(item.label == "Make report" for item in app.button)
    downloads = {item.label: item for item in app.get("download_button")}
    assert "⬇ keras export (.zip)" in downloads and not downloads["⬇ Fold models (.zip)"].proto.disabled
    names = zipfile.ZipFile(io.BytesIO(models_archive(run, store))).namelist()
    assert "ensemble.json" in names and {f"members/{member}/fold_1/model.keras" for member in ids} <= set(names)


def test_an_ensemble_trains_its_recipes_as_runs_then_combines_them(tmp_path, demo_dir):
    from conftest import _config

    store = RunStore(tmp_path / "runs")
    recipes = (_config(demo_dir, seed=3), _config(demo_dir, seed=4, conv_blocks=1, base_filters=4))
    run = make_ensemble(store, EnsembleConfig(recipes=recipes, operating_point=SENSITIVE, run_name="trained pair"))
    trained = run.read_json(MEMBERS_FILE)
    members = [store.get(trained[key]) for key in ("0", "1")]
    assert all(member.kind == "cv" and member.state == "completed" for member in members)
    assert [member.config["random_state"] for member in members] == [3, 4]
    _, combined, labels, fold_of = members_mean(store, [member.id for member in members])
    expected = operating_point(labels, combined[:, 1], fold_of, SENSITIVE)
    assert run.read_json(OPERATING_POINT_FILE)["threshold"] == pytest.approx(expected["threshold"])
    # A resumed ensemble keeps its completed members instead of training them again.
    from zoidberg.runs.worker import reopen

    run.set_status("interrupted")
    reopen(run)
    lines = []
    run_ensemble(run, report=lines.append)
    assert run.read_json(MEMBERS_FILE) == trained and not any("Member 1/2" in line for line in lines)


def test_members_of_other_sizes_each_read_the_folder_at_their_own(store, trained, demo_dir, tmp_path):
    from conftest import _config
    from zoidberg.inference.evaluate import evaluate_run
    from zoidberg.training.cv import run_cross_validation
    from zoidberg.training.run_setup import config_payload

    import dataclasses

    from zoidberg.config import DataConfig

    config = dataclasses.replace(_config(demo_dir, seed=1), data=DataConfig(str(demo_dir), "binary", 48, resize="pad", enhance="clahe"))
    bigger = config_payload(config)
    member = store.create_run("cv", bigger, "48 px, pad, CLAHE")
    run_cross_validation(member)
    run = make_ensemble(store, EnsembleConfig(members=(trained.ids["baseline"], member.id)))
    evaluation = evaluate_run(run, demo_dir, split="test", name="sizes")
    assert evaluation["n_images"] == len(list(demo_dir.glob("test/*/*.jpeg")))


def test_the_cli_makes_an_ensemble_then_predicts_and_evaluates_with_it(store, trained, demo_dir, capsys):
    from zoidberg.cli import main

    root = ["--runs-dir", str(store.root)]
    members = [trained.ids["baseline"], trained.ids["variant"]]
    assert main([*root, "ensemble", *members, "--method", "stacking", "--target-sensitivity", "0.9", "--name", "cli pair"]) == 0
    out = capsys.readouterr().out
    assert "Stacking weights" in out and "Decision threshold" in out
    run_id = next(line.split()[-1] for line in out.splitlines() if line.startswith("Run id:"))
    image = str(next(demo_dir.glob("test/NORMAL/*.jpeg")))
    assert main([*root, "predict", "--run", run_id, image, "--tta"]) == 0
    out = capsys.readouterr().out
    assert "across members" in out and "with test-time augmentation: 4 variants per image" in out
    assert main([*root, "evaluate", "--run", run_id, "--data", str(demo_dir), "--name", "cli"]) == 0
    assert "2 member runs" in capsys.readouterr().out
    assert main([*root, "runs"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(run_id))
    # Its members by name, with their own folds; no fold count of its own.
    assert "ensemble" in line and all(f"{member} (folds " in line for member in members)
    assert main([*root, "runs", "--json"]) == 0
    row = next(row for row in json.loads(capsys.readouterr().out) if row["id"] == run_id)
    assert row["folds_done"] is None and len(row["members"]) == 2
    assert main([*root, "ensemble", members[0]]) == 2
    assert "at least two" in capsys.readouterr().err
