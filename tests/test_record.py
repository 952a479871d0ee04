"""The prediction record: one documented, versioned row in predict --json, predict --csv, the Predict page and the service."""

import csv
import json
import re

import pytest

from conftest import REPO_ROOT

from zoidberg.cli import main
from zoidberg.inference.record import FIELD_NAMES, RECORD_SCHEMA_VERSION, REFUSED, csv_cells, csv_columns, make_record, read_record


def _predict(capsys, trained, *args):
    code = main(["--runs-dir", str(trained.dir), "predict", "--run", trained.ids["baseline"], *map(str, args)])
    return code, capsys.readouterr().out


def test_predict_json_rows_are_versioned_records_that_keep_the_old_name_image(trained, demo_dir, capsys):
    films = sorted((demo_dir / "test" / "NORMAL").glob("*.jpeg"))[:2]
    code, out = _predict(capsys, trained, *films, "--json")
    assert code == 0
    records = json.loads(out)
    assert len(records) == 2
    for record, film in zip(records, films):
        assert record["schema_version"] == RECORD_SCHEMA_VERSION and record["run_id"] == trained.ids["baseline"]
        # Scripts written against 1.x read `image`: it stays one release beside `file`.
        assert record["file"] == record["image"] == str(film)
        assert record["prediction"] in (record["label"], REFUSED)
        assert set(record) <= set(FIELD_NAMES), set(record) - set(FIELD_NAMES)


def test_predict_csv_has_the_documented_columns(trained, demo_dir, tmp_path, capsys):
    out = tmp_path / "predictions.csv"
    _predict(capsys, trained, demo_dir / "test" / "PNEUMONIA", "--csv", out)
    with out.open(encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    assert reader.fieldnames == csv_columns(["normal", "pneumonia"])
    assert rows and all(row["schema_version"] == RECORD_SCHEMA_VERSION and row["image"] == row["file"] for row in rows)


def test_a_refused_record_has_no_label_and_no_probability_and_keeps_the_answer_under_a_name_that_says_so():
    row = {"file": "lateral.png", "label": "pneumonia", "class_index": 1, "probability": 0.97, "probability_raw": 0.97,
           "class_probabilities": {"normal": 0.03, "pneumonia": 0.97}, "in_distribution": False, "ood_reason": "a side view"}
    record = make_record(row, run_id="r", predicted_at="2026-12-08T01:00:00.000Z", door="cli")
    assert record["prediction"] == REFUSED and record["label"] is None and record["probability"] is None
    assert record["probability_raw"] is None and record["class_probabilities"] is None
    assert record["not_a_diagnosis"] == {"label": "pneumonia", "probability": 0.97}
    assert record["predicted_at"] == "2026-12-08T01:00:00.000Z" and record["door"] == "cli"
    cells = csv_cells(record, ["normal", "pneumonia"])
    assert cells["probability"] is None and cells["p_pneumonia"] is None and cells["prediction"] == REFUSED
    assert "not_a_diagnosis" not in cells


def test_records_of_version_1_1_are_read_with_a_refused_film_s_diagnosis_withheld():
    old = {"schema_version": "1.1", "run_id": "r", "file": "lateral.png", "image": "lateral.png", "prediction": REFUSED,
           "label": "pneumonia", "probability": 0.97, "in_distribution": False, "ood_reason": "a side view"}
    record = read_record(old)
    assert record["schema_version"] == RECORD_SCHEMA_VERSION and record["label"] is None and record["probability"] is None
    assert record["not_a_diagnosis"] == {"label": "pneumonia", "probability": 0.97} and record["door"] is None
    kept = read_record({**old, "prediction": "normal", "label": "normal", "probability": 0.1, "in_distribution": True})
    assert kept["label"] == "normal" and kept["probability"] == 0.1
    with pytest.raises(ValueError, match="version 0.9: this release reads versions 1.1, 2.0"):
        read_record({**old, "schema_version": "0.9"})


def test_an_error_record_has_no_prediction():
    record = make_record({"file": "broken.jpeg", "error": "cannot read"}, run_id="r")
    assert "prediction" not in record and record["image"] == "broken.jpeg"


def test_the_readme_documents_every_field_and_the_version():
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### The prediction record"):]
    section = section[: section.index("\n## ")]
    documented = re.findall(r"^\| `([a-z_]+)` \|", section, flags=re.MULTILINE)
    assert documented == list(FIELD_NAMES)
    assert f"schema {RECORD_SCHEMA_VERSION}" in section
