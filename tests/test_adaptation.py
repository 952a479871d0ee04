"""adapt: site heads cross-fitted by patient, lineage, the run as any run, and the refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from tests.conftest import write_legacy_weights
from zoidberg.adaptation import crossfit as crossfit_module
from zoidberg.adaptation.adapt import prepare_adaptation, run_adaptation
from zoidberg.adaptation.config import AdaptConfig
from zoidberg.adaptation.crossfit import crossfit_heads
from zoidberg.models.site_heads import make_inputs
from zoidberg.config import DataConfig, ModelConfig, OperatingPointChoice, RunConfig, TrainConfig
from zoidberg.runs.store import ADAPTATION_FILE, RunStore

SIZE = 32
SENSITIVE = OperatingPointChoice("target-sensitivity", target=0.9)


@pytest.fixture(scope="session")
def parent(tmp_path_factory, demo_dir):
    """A finished frozen-backbone run (random MobileNetV2 weights) and a tiny CNN run, and a site folder of other films."""
    import keras

    from zoidberg.data.demo import make_demo_dataset
    from zoidberg.training.cv import run_cross_validation
    from zoidberg.training.run_setup import config_payload

    base = tmp_path_factory.mktemp("adaptation")
    keras.utils.set_random_seed(5)
    source = keras.applications.MobileNetV2(input_shape=(SIZE, SIZE, 3), alpha=0.35, include_top=False, weights=None)
    weights = write_legacy_weights(source, base / "fake_mobilenet_v2_0.35.h5")
    # Another acquisition: other films, drawn with another seed, in a flat NORMAL/ PNEUMONIA/ folder.
    other = make_demo_dataset(base / "other", patients_per_class=8, images_per_patient=(1, 3), image_size=64, random_state=7)
    site = base / "site"
    shutil.copytree(other / "train", site)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ZOIDBERG_RUNS_DIR", str(base / "runs"))
        patch.setenv("ZOIDBERG_CACHE_DIR", str(base / "cache"))
        store = RunStore(base / "runs")
        ids = {}
        models = {
            "frozen": ModelConfig(architecture="mobilenetv2", alpha=0.35, weights=str(weights), transfer_mode="frozen", dropout_rate=0.2),
            "cnn": ModelConfig(architecture="cnn", conv_blocks=2, base_filters=8, dense_units=16),
        }
        for name, model in models.items():
            config = RunConfig(data=DataConfig(str(demo_dir), "binary", SIZE), model=model,
                               train=TrainConfig(epochs=1, batch_size=16, early_stopping_patience=0), n_splits=2, random_state=1,
                               operating_point=SENSITIVE)
            run = store.create_run("cv", config_payload(config), name=name)
            run_cross_validation(run)
            assert run.state == "completed", run.status()
            ids[name] = run.id
    return SimpleNamespace(dir=base / "runs", store=store, ids=ids, site=site, demo=demo_dir)


@pytest.fixture
def store(parent, tmp_path, monkeypatch):
    """A private copy of the parent runs (the adaptations write beside them)."""
    store = RunStore(tmp_path / "runs")
    for run_id in parent.ids.values():
        shutil.copytree(parent.store.get(run_id).path, store.root / run_id)
    monkeypatch.setenv("ZOIDBERG_RUNS_DIR", str(store.root))
    return store


def adapt(store, config: AdaptConfig):
    """Prepares and runs an adaptation in this process, as its worker would."""
    run = store.create_run("adapt", prepare_adaptation(config, store), config.run_name)
    run_adaptation(run)
    assert run.state == "completed", run.status()
    return run


def test_no_film_the_adaptation_saw_is_scored_in_its_figures(monkeypatch):
    # Every film carries its row number in a column the heads ignore in effect (a tiny scale),
    # and the fitting and scoring calls are recorded: each part is scored only by a head that
    # never saw any of its films, and its threshold is chosen without them too.
    rng = np.random.default_rng(0)
    n = 120
    labels = np.r_[np.zeros(50, int), np.ones(70, int)]
    groups = np.array([f"p{index // 2}" for index in range(n)])
    member = np.clip(0.3 + 0.4 * labels + rng.normal(0, 0.2, n), 0.01, 0.99)
    features = np.c_[rng.normal(size=(n, 6)) + labels[:, None] * 0.5, np.arange(n) * 1e-9]
    inputs = make_inputs(member[None, :], features)
    fitted, thresholds_on = [], []
    real_fit, real_choose = crossfit_module.fit_site_head, crossfit_module.choose_threshold

    def recording_fit(fit_inputs, fit_labels, fit_groups, **options):
        fitted.append(set(np.rint(fit_inputs[:, -1] / 1e-9).astype(int)))
        return real_fit(fit_inputs, fit_labels, fit_groups, **options)

    def recording_choose(choose_labels, positive, choice):
        thresholds_on.append(len(choose_labels))
        return real_choose(choose_labels, positive, choice)

    monkeypatch.setattr(crossfit_module, "fit_site_head", recording_fit)
    monkeypatch.setattr(crossfit_module, "choose_threshold", recording_choose)
    result = crossfit_heads(inputs, labels, groups, SENSITIVE, n_prior=1, n_parts=5)
    assert len(fitted) == 5
    for part in range(5):
        scored = set(result.scored_rows_of(part))
        assert scored and not scored & fitted[part]
        assert fitted[part] | scored == set(range(n))
        # The threshold of a part is chosen on the other parts' films only.
        assert thresholds_on[part] == n - len(scored)
        # The part's scores are those of its own head, fitted without it.
        expected = result.heads[part].positive(inputs[sorted(scored)])
        assert np.allclose(result.positive[sorted(scored)], expected)
    # No patient is in two parts.
    for patient in np.unique(groups):
        assert len(set(result.part_of[groups == patient])) == 1


def test_an_adapted_run_records_its_lineage_and_predicts_as_any_run(store, parent):
    from zoidberg.inference.loading import load_ensemble

    parent_run = store.get(parent.ids["frozen"])
    run = adapt(store, AdaptConfig(parent=parent_run.id, site_dir=str(parent.site), n_parts=3, run_name="adapted"))
    assert run.kind == "adapt"
    config = run.config
    assert config["parent"] == parent_run.id and config["method"] == "head"
    assert config["site_fingerprint"] and config["site_fingerprint"] != parent_run.read_json("data.json")["fingerprint"] == config["parent_fingerprint"]
    assert config["feature_member"] == parent_run.id
    # The parent's rule (sensitivity 90 %) was taken when none was given.
    assert config["operating_point"]["method"] == "target-sensitivity" and config["operating_point"]["target"] == 0.9
    summary = run.summary()
    adaptation = summary["adaptation"]
    assert adaptation["parent"] == parent_run.id and adaptation["n_parts"] == 3
    for block in ("zero_shot", "adapted"):
        for name in ("roc_auc", "accuracy", "sensitivity", "specificity"):
            assert "low" in adaptation[block][name] and "high" in adaptation[block][name]
    stored = run.read_json(ADAPTATION_FILE)
    assert len(stored["heads"]) == 3 and stored["parent"] == parent_run.id
    # It predicts as any run: the parent's models, then the site heads.
    ensemble = load_ensemble(run.id, runs_dir=store.root)
    gray = np.full((80, 80), 90, dtype=np.uint8)
    gray[20:60, 20:60] = 200
    result = ensemble.decide(ensemble.probabilities(gray)).to_dict()
    assert 0.0 <= result["probability"] <= 1.0 and result["label"] in ("normal", "pneumonia")
    assert result["threshold"] == pytest.approx(summary["threshold"]) and result["unit"] == "part"
    prediction = ensemble.probabilities(gray)
    assert prediction.per_fold.shape == (3, 2)
    # The adapted probability is the mean of the three site heads on the parent's output and features.
    inputs = ensemble._head_inputs(ensemble.member_positive_of_images([gray]), ensemble._features_of_images([gray]))
    heads = [head.positive(inputs)[0] for head in ensemble.heads]
    assert prediction.combined[1] == pytest.approx(np.mean(heads))
    # Its own folds and out-of-fold predictions are the site films, cross-fitted.
    from zoidberg.evaluation.out_of_fold import read_out_of_fold

    out_of_fold = read_out_of_fold(run)
    assert len(out_of_fold.labels) == adaptation["adapted"]["n"]


def test_an_ensemble_adapts_with_one_prior_per_member(store, parent):
    from zoidberg.training.ensemble import prepare_ensemble, run_ensemble
    from zoidberg.config import EnsembleConfig

    members = (parent.ids["frozen"], parent.ids["cnn"])
    ensemble = store.create_run("ensemble", prepare_ensemble(EnsembleConfig(members=members, operating_point=SENSITIVE), store), "pair")
    run_ensemble(ensemble)
    assert ensemble.state == "completed"
    run = adapt(store, AdaptConfig(parent=ensemble.id, site_dir=str(parent.site), n_parts=2))
    assert run.read_json(ADAPTATION_FILE)["n_prior"] == 2
    assert run.config["feature_member"] == parent.ids["frozen"]
    # Exported whole: both members, the frozen member's features and the site heads in one model.
    from zoidberg.cli import main

    assert main(["--runs-dir", str(store.root), "export", "--run", run.id, "--format", "keras", "--check"]) == 0
    card = json.loads((run.path / "exports" / "keras" / "model_card.json").read_text())
    assert card["scoring"]["parent"] == ensemble.id and card["scoring"]["site_heads"] == 2 and card["parity_max_difference"] < 1e-4
    # The card's model facts hold the lineage and the cross-fitted figures as the run's own files give them.
    facts = card["model_facts"]
    adapted = run.summary()["adaptation"]["adapted"]
    assert facts["adaptation"]["parent"] == ensemble.id and facts["adaptation"]["site_fingerprint"] == run.config["site_fingerprint"]
    for name in ("roc_auc", "accuracy", "sensitivity", "specificity"):
        assert facts["adaptation"]["cross_fitted"][name] == {key: adapted[name][key] for key in ("estimate", "low", "high")}
    assert facts["threshold_rule"]["threshold"] == pytest.approx(run.read_json("operating_point.json")["threshold"])
    assert facts["training_data"]["images"] == store.get(parent.ids["frozen"]).read_json("data.json")["n_images"]
    assert facts["versions"] == run.config["versions"]


def test_recalibrate_needs_no_frozen_member_and_head_refuses_without_one(store, parent):
    cnn = parent.ids["cnn"]
    with pytest.raises(ValueError, match="no frozen-backbone member"):
        prepare_adaptation(AdaptConfig(parent=cnn, site_dir=str(parent.site)), store)
    run = adapt(store, AdaptConfig(parent=cnn, site_dir=str(parent.site), method="recalibrate", n_parts=2))
    assert run.read_json(ADAPTATION_FILE)["heads"][0]["coef"].__len__() == 1


def test_evaluating_an_adapted_run_on_its_own_site_films_is_refused(store, parent, tmp_path):
    from zoidberg.inference.evaluate import evaluate_run

    run = adapt(store, AdaptConfig(parent=parent.ids["frozen"], site_dir=str(parent.site), n_parts=2))
    with pytest.raises(ValueError, match="leakage"):
        evaluate_run(run, parent.site, split="all")
    # A copy of one site film among other films is refused as well.
    mixed = tmp_path / "mixed"
    shutil.copytree(parent.demo / "test", mixed)
    film = next((parent.site / "NORMAL").iterdir())
    shutil.copy(film, mixed / "NORMAL" / "copied.jpeg")
    with pytest.raises(ValueError, match="1 of these"):
        evaluate_run(run, mixed, split="all")
    # Other films of the site are evaluated as for any run.
    evaluation = evaluate_run(run, parent.demo / "test", split="all")
    assert evaluation["leakage"]["n_identical_files"] == 0 and 0.0 <= evaluation["metrics"]["accuracy"] <= 1.0


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"parent": "nope"}, "not in"),
        ({"site_dir": "/nonexistent/site"}, "does not exist"),
        ({"n_parts": 40}, "parts must be"),
        ({"method": "magic"}, "method must be"),
    ],
)
def test_bad_adaptations_are_refused_before_a_run_exists(store, parent, changes, message):
    with pytest.raises(ValueError, match=message):
        prepare_adaptation(AdaptConfig(**{"parent": parent.ids["frozen"], "site_dir": str(parent.site), **changes}), store)
    assert not store.list_runs("adapt")


def test_adapting_on_the_training_data_or_an_adapted_run_is_refused(store, parent):
    with pytest.raises(ValueError, match="never saw"):
        prepare_adaptation(AdaptConfig(parent=parent.ids["frozen"], site_dir=str(parent.demo)), store)
    run = adapt(store, AdaptConfig(parent=parent.ids["frozen"], site_dir=str(parent.site), n_parts=2))
    with pytest.raises(ValueError, match="Adapt its parent"):
        prepare_adaptation(AdaptConfig(parent=run.id, site_dir=str(parent.site)), store)


def test_the_cli_prints_both_figures_and_the_run_id_last(store, parent, capsys):
    from zoidberg.cli import main

    code = main(["adapt", "--run", parent.ids["frozen"], "--data", str(parent.site), "--parts", "2", "--runs-dir", str(store.root)])
    out = capsys.readouterr().out
    assert code == 0
    lines = out.strip().splitlines()
    assert store.get(lines[-1]).kind == "adapt"
    assert "parent, zero-shot" in out and "adapted, cross-fitted" in out and "healthy children" in out
    code = main(["adapt", "--run", "missing", "--data", str(parent.site), "--runs-dir", str(store.root)])
    assert code != 0 and "not in" in capsys.readouterr().err
    code = main(["adapt", "--run", parent.ids["frozen"], "--data", str(parent.site), "--json", "--parts", "2", "--runs-dir", str(store.root)])
    out = capsys.readouterr().out
    assert code == 0
    payload, run_id = out.rsplit("\n", 2)[0], out.strip().splitlines()[-1]
    assert json.loads(payload)["run_id"] == run_id


def test_a_labels_file_adapts_as_its_folder_does_and_the_run_keeps_what_it_read(store, parent, tmp_path, capsys):
    from zoidberg.cli import main
    from zoidberg.data.site_labels import LabelEntry, append_label

    # The same films, named by a CSV another tool wrote (relative paths from the file's folder), in the folder's order.
    films = sorted((parent.site / "NORMAL").iterdir()) + sorted((parent.site / "PNEUMONIA").iterdir())
    labels_file = tmp_path / "labels.csv"
    labels_file.write_text("file,label\n" + "".join(
        f"{shutil.os.path.relpath(film, tmp_path)},{film.parent.name.lower()}\n" for film in films) + "elsewhere/blurred.png,not usable\n")
    by_folder = adapt(store, AdaptConfig(parent=parent.ids["frozen"], site_dir=str(parent.site), n_parts=2))
    by_labels = adapt(store, AdaptConfig(parent=parent.ids["frozen"], labels_file=str(labels_file), n_parts=2))
    folder_figures = by_folder.summary()["adaptation"]["adapted"]
    labels_figures = by_labels.summary()["adaptation"]["adapted"]
    assert labels_figures["n"] == folder_figures["n"] == len(films)
    assert labels_figures["roc_auc"]["estimate"] == pytest.approx(folder_figures["roc_auc"]["estimate"])
    stored = by_labels.read_json(ADAPTATION_FILE)
    assert stored["labels_file"] == str(labels_file.resolve()) and len(stored["labels_digest"]) == 64
    assert stored["labels_counts"] == {"normal": sum(film.parent.name == "NORMAL" for film in films),
                                       "pneumonia": sum(film.parent.name == "PNEUMONIA" for film in films), "not_usable": 1}
    # The run reads its own copy: labels added later change nothing it says.
    assert (by_labels.path / "site_labels.csv").read_bytes() == labels_file.read_bytes()
    # The CLI: --labels instead of --data, the labels' line printed; both at once, or a broken file, is one sentence.
    jsonl = tmp_path / "labels.jsonl"
    for film in films:
        append_label(jsonl, LabelEntry(str(film), film.parent.name.lower(), reader="ana", chosen_by="random"))
    code = main(["adapt", "--run", parent.ids["frozen"], "--labels", str(jsonl), "--parts", "2", "--runs-dir", str(store.root)])
    out = capsys.readouterr().out
    assert code == 0 and f"Labels: {jsonl}" in out and "0 not usable" in out
    with pytest.raises(SystemExit):
        main(["adapt", "--run", parent.ids["frozen"], "--labels", str(jsonl), "--data", str(parent.site), "--runs-dir", str(store.root)])
    assert "not allowed with" in capsys.readouterr().err
    broken = tmp_path / "broken.csv"
    broken.write_text("file,label\na.png,perhaps\n")
    code = main(["adapt", "--run", parent.ids["frozen"], "--labels", str(broken), "--runs-dir", str(store.root)])
    err = capsys.readouterr().err
    assert code != 0 and "line 2: label 'perhaps'" in err and "Traceback" not in err


def test_a_clinic_labels_what_label_next_names_then_adapts_on_its_labels(store, parent, tmp_path, capsys):
    from PIL import Image

    from zoidberg.cli import main
    from zoidberg.data.site_labels import read_labels

    # The clinic's films, unlabeled and mixed in one folder, and a photograph that is no X-ray at all.
    films = tmp_path / "clinic"
    films.mkdir()
    truth = {}
    for path in sorted(parent.site.rglob("*.jpeg")):
        shutil.copy(path, films / path.name)
        truth[path.name] = path.parent.name.lower()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(films / "holiday.png")
    labels_file = tmp_path / "labels.jsonl"
    rounds = []
    for _ in range(2):
        code = main(["label-next", "--run", parent.ids["frozen"], "--films", str(films), "--labels", str(labels_file), "--count", "8",
                     "--json", "--runs-dir", str(store.root)])
        picks = json.loads(capsys.readouterr().out)
        assert code == 0 and 0 < len(picks) <= 8
        rounds.append([pick["file"] for pick in picks])
        for pick in picks:
            name = pick["file"].rsplit("/", 1)[1]
            answer = "not_usable" if pick["ask"] == "not_usable?" or name not in truth else truth[name]
            assert main(["label", pick["file"], answer, "--labels", str(labels_file), "--reader", "script", "--chosen-by", pick["chosen_by"],
                         "--reason", pick["reason"]]) == 0
    # Nothing is named twice; the photograph is never offered as a diagnosis to confirm.
    assert not set(rounds[0]) & set(rounds[1])
    labels = read_labels(labels_file)
    holiday = [entry for entry in labels.films.values() if entry.file.endswith("holiday.png")]
    assert holiday and all(entry.label == "not_usable" and entry.chosen_by == "gate" for entry in holiday)
    assert all(entry.reader == "script" and entry.file.startswith("clinic/") for entry in labels.films.values())
    # Then the labels adapt the run (everything labeled, the rest as a clinic would label it).
    for name, label in truth.items():
        if not any(entry.file.endswith("/" + name) for entry in labels.films.values()):
            main(["label", str(films / name), label, "--labels", str(labels_file), "--reader", "script"])
    code = main(["adapt", "--run", parent.ids["frozen"], "--labels", str(labels_file), "--parts", "2", "--runs-dir", str(store.root)])
    out = capsys.readouterr().out
    assert code == 0 and "adapted, cross-fitted" in out
    # Bad input is one sentence.
    assert main(["label", str(films / "nope.png"), "normal", "--labels", str(labels_file)]) != 0
    assert "is not a file" in capsys.readouterr().err
    assert main(["label-next", "--run", parent.ids["frozen"], "--films", str(tmp_path / "empty"), "--runs-dir", str(store.root)]) != 0
    assert "No image file" in capsys.readouterr().err


def test_the_label_page_labels_one_film_at_a_time_resumes_after_a_reload_and_adapts(store, parent, tmp_path, monkeypatch):
    from tests.apptest_helpers import assert_no_exception, button, open_app, texts
    from zoidberg.adaptation.labeling import labels_path_for
    from zoidberg.data.site_labels import read_labels

    monkeypatch.setenv("ZOIDBERG_LABELS_DIR", str(tmp_path / "labels"))
    films = tmp_path / "clinic"
    shutil.copytree(parent.site, films)
    run_id = parent.ids["frozen"]

    def opened():
        app = open_app(parent.demo, "pages/label.py")
        app.selectbox(key="label_run").set_value(run_id).run()
        app.text_input(key="label_folder").input(str(films)).run()
        assert_no_exception(app)
        return app

    app = opened()
    assert "No label yet" in texts(app.caption)
    shown = [app.get("image")[0].proto.imgs[0].caption]
    button(app, "Normal (N)").click().run()
    shown.append(app.get("image")[0].proto.imgs[0].caption)
    button(app, "Pneumonia (P)").click().run()
    button(app, "Skip (S)").click().run()
    assert_no_exception(app)
    labels_file = labels_path_for(str(films.resolve()), run_id)
    labels = read_labels(labels_file)
    assert [Path(entry.file).name for entry in labels.films.values()] == shown
    assert [entry.label for entry in labels.films.values()] == ["normal", "pneumonia"]
    assert all(entry.chosen_by and entry.reader for entry in labels.films.values())
    # Undo takes back the last label, and that film comes back first.
    button(app, "Undo (Z)").click().run()
    assert app.get("image")[0].proto.imgs[0].caption == shown[1]
    assert [Path(entry.file).name for entry in read_labels(labels_file).films.values()] == shown[:1]
    # A reload (a new session) goes on from the file: the labeled film is never shown again.
    again = opened()
    assert "1 labeled of" in texts(again.caption)
    assert again.get("image")[0].proto.imgs[0].caption != shown[0]
    # Labeling everything (the truth as the reader) adapts in the background; the curve and its sentence follow.
    truth = {path.name: path.parent.name.lower() for path in films.rglob("*.jpeg")}
    for _ in range(len(truth)):
        caption = again.get("image")[0].proto.imgs[0].caption if again.get("image") else None
        if caption is None:
            break
        button(again, "Pneumonia (P)" if truth.get(caption) == "pneumonia" else "Normal (N)").click().run()
    assert "Every film here is labeled" in texts(again.success)
    from tests.apptest_helpers import wait_for

    wait_for(lambda: [run for run in store.list_runs("adapt") if run.state == "completed"])
    again.run()
    assert_no_exception(again)
    assert "adapted run" in texts(again.caption) or "Keep labeling" in texts(again.info)


def test_a_second_reader_reads_a_share_blind_and_the_page_gives_their_kappa(store, parent, tmp_path, monkeypatch):
    from tests.apptest_helpers import assert_no_exception, button, open_app, texts
    from zoidberg.adaptation.labeling import labels_path_for
    from zoidberg.data.site_labels import read_labels
    from zoidberg.ui.label_view import in_second_share

    monkeypatch.setenv("ZOIDBERG_LABELS_DIR", str(tmp_path / "labels"))
    films = tmp_path / "clinic"
    shutil.copytree(parent.site, films)
    run_id = parent.ids["frozen"]

    def opened(reader: str, share: int = 0):
        monkeypatch.setattr("getpass.getuser", lambda: reader)
        app = open_app(parent.demo, "pages/label.py")
        app.selectbox(key="label_run").set_value(run_id).run()
        app.text_input(key="label_folder").input(str(films)).run()
        app.slider(key="label_second").set_value(share).run()
        assert_no_exception(app)
        return app

    first = opened("ana")
    for _ in range(10):
        button(first, "Normal (N)").click().run()
    labels_file = labels_path_for(str(films.resolve()), run_id)
    twice = [film for film in read_labels(labels_file).films if in_second_share(film, 0.5)]
    assert twice  # 10 films, half of them read twice: never none in practice
    second = opened("bo", 50)
    for _ in twice:
        assert second.get("image")[0].proto.imgs[0].caption in {Path(film).name for film in twice}  # read again first, blind
        button(second, "Pneumonia (P)").click().run()
    labels = read_labels(labels_file)
    assert set(labels.disagreements) == set(twice) and not set(twice) & set(labels.films)
    assert f"{len(twice)} films read twice" in texts(second.markdown) and "kappa" in texts(second.markdown)


def test_the_run_view_leads_an_adapted_run_with_its_verdict(store, parent):
    from tests.apptest_helpers import open_app, texts

    run = adapt(store, AdaptConfig(parent=parent.ids["frozen"], site_dir=str(parent.site), n_parts=2))
    app = open_app(parent.demo, "pages/train.py")
    markdown = texts(app.markdown)
    assert "At the site" in markdown
    verdicts = texts([*app.success, *app.warning, *app.error])
    assert "healthy children would be called pneumonia" in verdicts and "zero-shot" in verdicts
    frame = next(frame.value for frame in app.dataframe if "healthy called pneumonia" in frame.value.columns)
    assert frame[""].tolist() == ["parent, zero-shot", "adapted, cross-fitted"]
    assert f"adapted from `{parent.ids['frozen']}`" in texts(app.caption)
    # Reported, exported and zipped as any run: the parent's fold models travel with the site heads.
    assert any(item.label == "Make report" for item in app.button)
    downloads = {item.label: item for item in app.get("download_button")}
    assert "⬇ keras export (.zip)" in downloads and not downloads["⬇ Fold models (.zip)"].proto.disabled
    import io
    import zipfile

    from zoidberg.inference.loading import models_archive

    names = zipfile.ZipFile(io.BytesIO(models_archive(run, store))).namelist()
    assert "adaptation.json" in names and f"parent/{parent.ids['frozen']}/fold_1/model.keras" in names


def test_adapt_to_a_site_from_the_run_view_starts_an_adapted_run(store, parent, stop_workers_after):
    from tests.apptest_helpers import button, open_app, wait_for
    from zoidberg.ui.state import SELECTED_RUN_KEY

    parent_id = parent.ids["frozen"]
    app = open_app(parent.demo)
    app.session_state[f"{SELECTED_RUN_KEY}_cv"] = parent_id
    app.switch_page("pages/train.py").run()
    app.text_input(key=f"adapt_folder_{parent_id}").input("/nonexistent/site").run()
    button(app, "Adapt").click().run()
    assert "does not exist" in " ".join(str(item.value) for item in app.error)
    assert not store.list_runs("adapt")
    app.text_input(key=f"adapt_folder_{parent_id}").input(str(parent.site)).run()
    button(app, "Adapt").click().run()
    adapted = wait_for(lambda: [run for run in store.list_runs("adapt") if run.state == "completed"])
    assert adapted[0].config["parent"] == parent_id


def test_domain_auc_tells_shifted_films_apart_and_not_alike_ones():
    from zoidberg.evaluation.shift import domain_auc, shift_verdict

    rng = np.random.default_rng(0)
    training = rng.normal(size=(200, 20))
    groups = np.array([f"t{index}" for index in range(200)])
    alike = rng.normal(size=(80, 20))
    shifted = rng.normal(size=(80, 20)) + 1.0
    folder_groups = np.array([f"f{index}" for index in range(80)])
    assert domain_auc(training, alike, groups, folder_groups) < 0.65
    assert domain_auc(training, shifted, groups, folder_groups) > 0.95
    assert shift_verdict(0.55, 0.70, 0.72)["level"] == "none"
    assert shift_verdict(0.70, 0.70, 0.72)["level"] == "some"
    strong = shift_verdict(0.70, 0.84, 0.62)
    assert strong["level"] == "strong" and "adapt the run to this site first" in strong["sentence"] and "84% pneumonia against 62%" in strong["sentence"]
    assert shift_verdict(None, None, None)["level"] == "unknown"


def test_the_shift_check_sees_inverted_films_and_is_in_evaluations_and_adaptations(store, parent, tmp_path):
    from PIL import Image, ImageOps

    from zoidberg.data.dataset import load_dataset
    from zoidberg.inference.evaluate import evaluate_run
    from zoidberg.evaluation.shift import measure_shift
    from zoidberg.inference.loading import load_ensemble

    inverted = tmp_path / "inverted"
    for path in (parent.demo / "train").rglob("*.jpeg"):
        target = inverted / path.relative_to(parent.demo / "train")
        target.parent.mkdir(parents=True, exist_ok=True)
        ImageOps.invert(Image.open(path).convert("L")).save(target)
    ensemble = load_ensemble(parent.ids["frozen"], runs_dir=store.root)
    same = load_dataset(parent.demo / "train", image_size=SIZE, purpose="evaluation")
    other = load_dataset(inverted, image_size=SIZE, purpose="evaluation")
    alike = measure_shift(ensemble, same, np.arange(len(same)))
    flipped = measure_shift(ensemble, other, np.arange(len(other)))
    assert alike["representation"] == flipped["representation"] == "frozen ImageNet features"
    assert flipped["domain_auc"] > 0.9 > alike["domain_auc"] and flipped["level"] == "strong"
    evaluation = evaluate_run(store.get(parent.ids["frozen"]), inverted, split="all")
    assert evaluation["shift"]["level"] == "strong" and evaluation["shift"]["sentence"]
    run = adapt(store, AdaptConfig(parent=parent.ids["frozen"], site_dir=str(parent.site), n_parts=2))
    assert run.summary()["adaptation"]["shift"]["sentence"].startswith("These films")


def test_the_data_page_checks_a_folder_against_a_model(store, parent):
    from tests.apptest_helpers import button, open_app

    app = open_app(parent.site, "pages/data.py")
    app.selectbox(key="shift_run").set_value(parent.ids["frozen"]).run()
    button(app, "Check the shift").click().run()
    boxes = " ".join(str(item.value) for item in [*app.success, *app.info, *app.warning])
    assert "Shift check." in boxes and "A classifier tells these films from the training films with AUC" in boxes
    assert not app.exception


@pytest.mark.parametrize("fmt", ["keras", "onnx"])
def test_export_and_report_of_an_adapted_run(store, parent, tmp_path, fmt):
    from zoidberg.data.imaging import decode_grayscale
    from zoidberg.inference.export import MODEL_CARD_FILE, export_feed, export_run, load_exported
    from zoidberg.inference.loading import load_ensemble

    run = adapt(store, AdaptConfig(parent=parent.ids["frozen"], site_dir=str(parent.site), n_parts=2))
    ensemble = load_ensemble(run.id, runs_dir=store.root)
    path = export_run(run, ensemble, fmt, tmp_path / "out", check=True)
    # Films the heads never saw, scored by the export as the run scores them: the heads' mean and its calibration.
    grays = [decode_grayscale(file) for file in sorted((parent.demo / "test").glob("*/*.jpeg"))[:6]]
    outputs = load_exported(path, fmt)(export_feed(ensemble, grays))
    predictions = ensemble.predictions_of(grays)
    assert np.allclose(outputs["probability"][:, 0], [p.on("raw")[1] for p in predictions], atol=1e-4)
    if ensemble.calibration is not None:
        assert np.allclose(outputs["probability_calibrated"][:, 0], [p.on("calibrated")[1] for p in predictions], atol=1e-4)
    card = json.loads((tmp_path / "out" / MODEL_CARD_FILE).read_text())
    assert card["run_kind"] == "adapt" and card["scoring"]["site_dir"] == str(parent.site)
    assert card["operating_point"]["threshold"] == pytest.approx(ensemble.threshold)
    from zoidberg.cli import main

    assert main(["report", "--run", run.id, "--runs-dir", str(store.root), "--out", str(tmp_path / "report.html")]) == 0
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "Adapted from" in html and str(parent.site) in html


def test_a_frozen_run_fits_the_gates_feature_stage_and_predicts_through_it(store, parent):
    from zoidberg.inference.loading import load_ensemble
    from zoidberg.runs.store import OOD_FEATURES_FILE

    frozen = store.get(parent.ids["frozen"])
    assert (frozen.path / OOD_FEATURES_FILE).is_file()
    assert not (store.get(parent.ids["cnn"]).path / OOD_FEATURES_FILE).exists()
    ensemble = load_ensemble(frozen.id, runs_dir=store.root)
    feature_gate, member = ensemble._feature_stage
    assert feature_gate is not None and member is ensemble
    # The demo's films are JPEGs: the gate reads every film as stored at their quality.
    from zoidberg.data.jpeg_quality import jpeg_quality

    assert feature_gate.stored_quality == jpeg_quality(next((parent.demo / "train" / "NORMAL").iterdir())) > 0
    from zoidberg.data.dataset import load_dataset

    training = load_dataset(parent.demo, image_size=SIZE, purpose="evaluation")
    verdicts = ensemble.gate_verdicts(list(training.images[:20]))
    assert sum(verdict.in_distribution for verdict in verdicts) >= 15
    # An adapted run reads its parent's feature stage.
    run = adapt(store, AdaptConfig(parent=frozen.id, site_dir=str(parent.site), n_parts=2))
    assert load_ensemble(run.id, runs_dir=store.root)._feature_stage[0] is not None


def test_unlabeled_site_films_join_the_standardization_only(store, parent, tmp_path):
    unlabeled = tmp_path / "unlabeled"
    unlabeled.mkdir()
    for index, path in enumerate(sorted((parent.site / "PNEUMONIA").iterdir())[:6]):
        shutil.copy(path, unlabeled / f"film{index}.jpeg")
    (unlabeled / "notes.txt").write_text("not an image")
    plain = adapt(store, AdaptConfig(parent=parent.ids["frozen"], site_dir=str(parent.site), n_parts=2))
    joined = adapt(store, AdaptConfig(parent=parent.ids["frozen"], site_dir=str(parent.site), n_parts=2, unlabeled_dir=str(unlabeled)))
    assert joined.config["unlabeled_dir"] == str(unlabeled)
    plain_head, joined_head = (run.read_json(ADAPTATION_FILE)["heads"][0] for run in (plain, joined))
    # The feature means moved with the unlabeled films; the parent's log-odds column stays uncentred.
    assert not np.allclose(plain_head["mean"][1:], joined_head["mean"][1:], rtol=1e-6, atol=0.0)
    assert plain_head["mean"][0] == joined_head["mean"][0] == 0.0
    # The labeled figures are still those of the labeled films alone.
    assert joined.summary()["adaptation"]["adapted"]["n"] == plain.summary()["adaptation"]["adapted"]["n"]
    with pytest.raises(ValueError, match="unlabeled folder .* does not exist"):
        prepare_adaptation(AdaptConfig(parent=parent.ids["frozen"], site_dir=str(parent.site), unlabeled_dir=str(tmp_path / "none")), store)


def test_an_adapted_run_is_watched_against_its_site_films_after_go_live(store, parent, tmp_path, capsys):
    """adapt keeps the gate's scores of its site films; predict --records-log writes what monitor reads, one window per file."""
    from tests import imagegen
    from zoidberg.cli import main
    from zoidberg.runs.store import MONITOR_REFERENCE_FILE

    run = adapt(store, AdaptConfig(parent=parent.ids["frozen"], site_dir=str(parent.site), n_parts=3, run_name="adapted"))
    reference = run.read_json(MONITOR_REFERENCE_FILE)
    films = sorted(parent.site.rglob("*.jpeg"))
    assert reference["films"] == len(films) and len(reference["ood_score"]) == len(films) and 0 <= reference["refused_share"] <= 1
    week_one, week_two = tmp_path / "week1.jsonl", tmp_path / "week2.jsonl"
    assert main(["predict", "--run", run.id, "--records-log", str(week_one), *map(str, films)]) in (0, 1)
    # The second week: half of the films are side views (refused by their header).
    side = tmp_path / "side"
    side.mkdir()
    for index in range(len(films)):
        (side / f"side{index}.dcm").write_bytes(imagegen.dicom_bytes(imagegen.xray_like(64, 64, seed=index), tags={"ViewPosition": "LL"}))
    assert main(["predict", "--run", run.id, "--records-log", str(week_two), *map(str, films), str(side)]) in (0, 1)
    capsys.readouterr()
    logged = week_one.read_text()
    assert films[0].name not in logged and '"door": "cli"' in logged
    assert main(["monitor", "--run", run.id, "--records", str(week_one), str(week_two), "--json"]) == 0
    first, second = json.loads(capsys.readouterr().out)
    assert first["window"] == str(week_one) and first["films"] == len(films)
    assert [shift["against"] for shift in first["shift"]] == ["site films", "training films"]
    assert second["refused"] >= len(films) and second["alert"] is True and "refused" in second["why"]
    assert {"window", "films", "refused", "pneumonia_share", "shift", "alert", "why"} <= set(second)
    assert main(["monitor", "--run", run.id, "--records", str(week_two)]) == 0
    assert "ALERT" in capsys.readouterr().out
    assert main(["monitor", "--run", run.id, "--records", str(tmp_path / "missing.jsonl")]) == 2
    assert "Cannot read" in capsys.readouterr().err
    # The report agrees with the run view, figure for figure: the site's pooled figures with their intervals, the same counts.
    from zoidberg.reporting.content import build_report
    from zoidberg.reporting.numbers import estimate

    report = build_report(run, examples=0, gradcam=False)
    results = next(section for section in report.sections if section.heading == "Results").tables[0]
    adapted = run.summary()["adaptation"]["adapted"]
    assert results.rows[1][1:] == [estimate(adapted[name]) for name in ("roc_auc", "accuracy", "sensitivity", "specificity")]
    confusion = next(section for section in report.sections if section.heading == "Confusion matrices").tables[0]
    assert f"{adapted['normal_called_pneumonia']} of {adapted['n_normal']} normal films called pneumonia" in confusion.caption
    assert report.sections[0].heading == "Model facts"
    # The Monitor page reads the same log and says the same.
    from tests.apptest_helpers import assert_no_exception, open_app, texts

    app = open_app(parent.demo, "pages/monitor.py")
    app.selectbox(key="monitor_run").set_value(run.id).run()
    app.text_input(key="monitor_log").set_value(str(week_two)).run()
    assert_no_exception(app)
    assert "refused" in texts(app.error) and "Re-check the model" in texts(app.error)
    assert len(app.dataframe) == 1 and app.dataframe[0].value["films"].sum() == second["films"]
