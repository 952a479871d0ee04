"""The site's labels file: append-only and whole-or-nothing, CSV from other tools, one label per film, loaded as a data set."""

from __future__ import annotations

import json
import multiprocessing
import os

import numpy as np
import pytest

from zoidberg.data.dataset import DatasetError
from zoidberg.data.labeled_films import load_labeled_films
from zoidberg.data.site_labels import LabelEntry, LabelsFileError, append_label, read_labels


def _write_film(path, value: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((24, 24), value, dtype=np.uint8)).save(path)


def test_labels_are_appended_one_json_line_each_and_read_back(tmp_path):
    labels_file = tmp_path / "labels.jsonl"
    append_label(labels_file, LabelEntry("films/a.png", "normal", reader="ana", chosen_by="random", reason="a random film"))
    append_label(labels_file, LabelEntry("films/b.png", "pneumonia", reader="ana", chosen_by="uncertain"))
    lines = labels_file.read_text().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first["format"] == "zoidberg-labels" and first["version"] == 1
    assert first["labeled_at"].endswith("+00:00") and first["reader"] == "ana" and first["chosen_by"] == "random"
    labels = read_labels(labels_file)
    assert [entry.file for entry in labels.usable()] == ["films/a.png", "films/b.png"]
    assert labels.resolve(labels.usable()[0]) == tmp_path / "films" / "a.png"
    assert len(labels.digest) == 64


def _append_forever(path: str) -> None:
    number = 0
    while True:
        append_label(path, LabelEntry(f"films/{number:06d}-{'x' * 200}.png", "normal", reader="crash"))
        number += 1


def test_a_crash_mid_write_loses_at_most_the_label_being_written(tmp_path):
    labels_file = tmp_path / "labels.jsonl"
    # A real process killed while it appends: every line before the kill reads back whole.
    process = multiprocessing.get_context("spawn").Process(target=_append_forever, args=(str(labels_file),))
    process.start()
    while not labels_file.exists() or labels_file.stat().st_size < 20_000:
        pass
    os.kill(process.pid, 9)
    process.join()
    written = labels_file.read_bytes().count(b"\n")
    labels = read_labels(labels_file)
    assert len(labels.films) >= written >= 1
    # A torn last line (what a crash inside the one write leaves) is skipped, and the next label starts a line of its own.
    whole = labels_file.read_bytes()
    labels_file.write_bytes(whole + b'{"format": "zoidberg-labels", "version": 1, "file": "films/torn.png", "lab')
    torn = read_labels(labels_file)
    assert len(torn.films) == len(labels.films) and "films/torn.png" not in torn.films
    assert torn.ignored_lines and "interrupted write" in torn.ignored_lines[0]
    append_label(labels_file, LabelEntry("films/after.png", "pneumonia", reader="crash"))
    after = read_labels(labels_file)
    assert "films/after.png" in after.films and len(after.films) == len(labels.films) + 1


def test_a_csv_with_only_file_and_label_is_valid(tmp_path):
    csv_file = tmp_path / "from_another_tool.csv"
    csv_file.write_text("file,label\nx/a.png,normal\nx/b.png,PNEUMONIA\nx/c.png,not usable\n\n")
    labels = read_labels(csv_file)
    assert {film: entry.label for film, entry in labels.films.items()} == {"x/a.png": "normal", "x/b.png": "pneumonia", "x/c.png": "not_usable"}
    assert labels.count("not_usable") == 1 and len(labels.usable()) == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("path,diagnosis\na.png,normal\n", "header row with the columns file and label"),
        ("file,label\na.png,normal\nb.png,maybe\n", "line 3: label 'maybe' is not one of normal, pneumonia, not_usable"),
        ("file,label\n,normal\n", "line 2: A label needs its film"),
    ],
)
def test_a_bad_csv_is_one_sentence_naming_its_line(tmp_path, text, message):
    csv_file = tmp_path / "bad.csv"
    csv_file.write_text(text)
    with pytest.raises(LabelsFileError, match=message.replace("(", r"\(")):
        read_labels(csv_file)


def test_a_newer_version_and_a_missing_file_are_refused(tmp_path):
    with pytest.raises(LabelsFileError, match="does not exist"):
        read_labels(tmp_path / "none.jsonl")
    newer = tmp_path / "newer.jsonl"
    newer.write_text(json.dumps({"format": "zoidberg-labels", "version": 9, "file": "a.png", "label": "normal"}) + "\n")
    with pytest.raises(LabelsFileError, match="version 9"):
        read_labels(newer)
    with pytest.raises(LabelsFileError, match="is a CSV"):
        append_label(tmp_path / "labels.csv", LabelEntry("a.png", "normal"))


def test_a_readers_last_word_stands_an_undo_takes_it_back_and_readers_who_disagree_are_left_out(tmp_path):
    labels_file = tmp_path / "labels.jsonl"
    for entry in (
        LabelEntry("a.png", "normal", reader="ana"),
        LabelEntry("a.png", "pneumonia", reader="ana"),  # changed her mind
        LabelEntry("b.png", "normal", reader="ana"),
        LabelEntry("b.png", "retracted", reader="ana"),  # undo
        LabelEntry("c.png", "normal", reader="ana"),
        LabelEntry("c.png", "pneumonia", reader="bo"),  # a second reader disagrees
        LabelEntry("d.png", "normal", reader="ana"),
        LabelEntry("d.png", "normal", reader="bo"),  # and agrees here
    ):
        append_label(labels_file, entry)
    labels = read_labels(labels_file)
    assert {film: entry.label for film, entry in labels.films.items()} == {"a.png": "pneumonia", "d.png": "normal"}
    assert labels.disagreements == {"c.png": {"ana": "normal", "bo": "pneumonia"}}


def test_labeled_films_load_as_a_data_set_with_patients_and_what_was_left_out(tmp_path):
    for name, value in (("IM-0001-0001.png", 20), ("IM-0001-0002.png", 30), ("person5_virus_9.png", 200), ("person6_bacteria_1.png", 220)):
        _write_film(tmp_path / "site" / name, value)
    labels_file = tmp_path / "labels" / "labels.csv"
    labels_file.parent.mkdir()
    labels_file.write_text(
        "file,label,patient\n"
        "../site/IM-0001-0001.png,normal,\n"
        "../site/IM-0001-0002.png,normal,\n"
        f"{tmp_path / 'site' / 'person5_virus_9.png'},pneumonia,\n"
        "../site/person6_bacteria_1.png,pneumonia,P-77\n"
        "../site/missing.png,normal,\n"
        "../site/blurred.png,not_usable,\n"
    )
    site = load_labeled_films(read_labels(labels_file), image_size=16, cache_dir=tmp_path / "cache")
    assert len(site) == 4 and site.class_counts() == {"normal": 2, "pneumonia": 2}
    patients = dict(zip(site.paths, site.patients))
    assert patients["IM-0001-0001.png"] == patients["IM-0001-0002.png"] == "IM-0001"
    assert patients["person6_bacteria_1.png"] == "P-77" and patients["person5_virus_9.png"] == "person5"
    assert {item.path: item.reason for item in site.skipped}["../site/missing.png"] == "no such file"
    assert site.images.shape == (4, 16, 16) and site.images[site.paths.index("person5_virus_9.png")].mean() > 150
    # The fingerprint moves with a label.
    before = site.fingerprint
    labels_file.write_text(labels_file.read_text().replace("P-77", "P-78"))
    assert load_labeled_films(read_labels(labels_file), image_size=16, use_cache=False).fingerprint != before


def test_labeled_films_of_one_class_are_refused(tmp_path):
    _write_film(tmp_path / "a.png", 10)
    labels_file = tmp_path / "labels.csv"
    labels_file.write_text("file,label\na.png,normal\n")
    with pytest.raises(DatasetError, match="no usable pneumonia film"):
        load_labeled_films(read_labels(labels_file), image_size=16, use_cache=False)


def test_labeled_films_load_again_at_another_size_from_their_labels_not_their_folder(tmp_path):
    # An ensemble's members (and a frozen member's features) read the same films at their own size: a labels file's
    # films live in a plain folder, which is no data set of its own.
    from zoidberg.data.labeled_films import load_again

    for name, value in (("a.png", 20), ("b.png", 220), ("c.png", 30), ("d.png", 200)):
        _write_film(tmp_path / "flat" / name, value)
    labels_file = tmp_path / "labels.csv"
    labels_file.write_text("file,label\nflat/a.png,normal\nflat/b.png,pneumonia\nflat/c.png,normal\nflat/d.png,pneumonia\n")
    site = load_labeled_films(read_labels(labels_file), image_size=16, use_cache=False)
    again = load_again(site, label_mode="binary", image_size=8, resize="pad", enhance="none")
    assert again.paths == site.paths and again.labels.tolist() == site.labels.tolist() and again.images.shape == (4, 8, 8)
    assert again.resize == "pad" and again.patients.tolist() == site.patients.tolist()


def test_streamlit_s_after_run_clean_up_no_longer_collects_garbage(monkeypatch):
    """The Label page's next film waited on full collections after every run (Keras' clear_session, postScriptGC)."""
    import gc
    import tomllib

    from conftest import REPO_ROOT
    from streamlit.runtime.scriptrunner import script_runner

    from zoidberg.ui.script_runs import lighten_script_runs

    monkeypatch.setattr(script_runner, "_clean_problem_modules", script_runner._clean_problem_modules)
    lighten_script_runs()
    lighten_script_runs()
    collections = []
    monkeypatch.setattr(gc, "collect", lambda *args: collections.append(args) or 0)
    import keras

    cleared = []
    monkeypatch.setattr(keras.backend, "clear_session", lambda **kwargs: cleared.append(kwargs))
    script_runner._clean_problem_modules()
    assert cleared == [{"free_memory": False}] and collections == []
    config = tomllib.loads((REPO_ROOT / ".streamlit" / "config.toml").read_text())
    assert config["runner"]["postScriptGC"] is False and config["server"]["fileWatcherType"] == "none"
