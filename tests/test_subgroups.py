"""Figures by subgroup: the Kermany file names' bacterial and viral pneumonia, and a DICOM header's view, sex and age."""

import numpy as np
import pytest

from tests import imagegen
from zoidberg.evaluation.subgroups import bootstrap_rate, pneumonia_kind, subgroup_figures


def test_the_kermany_names_say_bacterial_or_viral():
    assert pneumonia_kind("PNEUMONIA/person1_bacteria_1.jpeg") == "bacterial"
    assert pneumonia_kind("person12_virus_44.jpeg") == "viral" and pneumonia_kind("NORMAL/IM-0003-0001.jpeg") is None


def test_each_subgroup_gets_its_rate_with_a_patient_bootstrap_interval(tmp_path):
    paths, labels, decided, patients = [], [], [], []
    for index in range(30):
        paths.append(f"person{index}_bacteria_{index}.jpeg"), labels.append(1), decided.append(int(index % 10 != 0)), patients.append(f"b{index // 2}")
        paths.append(f"person{100 + index}_virus_{index}.jpeg"), labels.append(1), decided.append(int(index % 3 != 0)), patients.append(f"v{index}")
        name = f"film{index}.dcm"
        (tmp_path / name).write_bytes(imagegen.dicom_bytes(imagegen.xray_like(32, 32), tags={
            "ViewPosition": "AP" if index % 2 else "PA", "PatientSex": "F", "PatientAge": "003Y"}))
        paths.append(name), labels.append(0), decided.append(0), patients.append(f"n{index}")
    rows = {row["subgroup"]: row for row in subgroup_figures(paths, np.array(labels), np.array(decided), np.array(patients), root=tmp_path)}
    assert rows["bacterial pneumonia"]["measure"] == "sensitivity" and rows["bacterial pneumonia"]["estimate"] == 0.9
    assert abs(rows["viral pneumonia"]["estimate"] - 2 / 3) < 1e-9 and rows["bacterial pneumonia"]["patients"] == 15
    assert rows["normal films"]["measure"] == "specificity" and rows["normal films"]["estimate"] == 1.0
    assert rows["AP view"]["films"] == 15 and rows["female"]["films"] == 30 and rows["aged 1 to 5 years"]["films"] == 30
    viral = rows["viral pneumonia"]
    assert viral["low"] < 2 / 3 < viral["high"] and viral["high"] - viral["low"] < 0.5


def test_the_interval_resamples_patients_not_films():
    # One patient's twenty films count as one draw: the interval is wider than twenty independent films would give.
    correct = np.array([1] * 20 + [0] * 20 + [1] * 20)
    clustered = bootstrap_rate(correct, np.repeat(["a", "b", "c"], 20))
    independent = bootstrap_rate(correct, np.arange(60).astype(str))
    assert clustered["high"] - clustered["low"] > 2 * (independent["high"] - independent["low"])


def test_an_evaluation_on_dicom_films_gets_its_figures_by_view_and_sex(trained, demo_dir, tmp_path):
    import shutil

    from PIL import Image

    from zoidberg.cli import main
    from zoidberg.inference.model_facts import model_facts
    from zoidberg.runs.store import RunStore

    runs = tmp_path / "runs"
    shutil.copytree(trained.dir / trained.ids["baseline"], runs / trained.ids["baseline"])
    folder = tmp_path / "clinic"
    for label in ("NORMAL", "PNEUMONIA"):
        (folder / label).mkdir(parents=True)
        for index, path in enumerate(sorted((demo_dir / "train" / label).glob("*.jpeg"))[:12]):
            pixels = np.asarray(Image.open(path).convert("L"))
            tags = {"ViewPosition": "AP" if index % 2 else "PA", "PatientSex": "F" if index < 6 else "M", "PatientAge": "002Y",
                    "PatientID": f"{label}-{index}"}
            (folder / label / f"{label}-{index}.dcm").write_bytes(imagegen.dicom_bytes(pixels, tags=tags))
    assert main(["--runs-dir", str(runs), "evaluate", "--run", trained.ids["baseline"], "--data", str(folder)]) == 0
    evaluation = next(item for item in model_facts(RunStore(runs).get(trained.ids["baseline"]))["evaluations"] if item["name"] == "clinic")
    groups = {row["subgroup"]: row for row in evaluation["subgroups"]}
    assert groups["AP view"]["films"] == 12 and groups["PA view"]["films"] == 12
    assert groups["female"]["films"] == 12 and groups["aged 1 to 5 years"]["films"] == 24
    assert all(row["measure"] == "accuracy" and 0 <= row["estimate"] <= 1 for row in groups.values())
    # Every headline figure of the evaluation carries its patient-bootstrap interval, the estimate as stored.
    for name in ("accuracy", "sensitivity", "specificity"):
        figure = evaluation["intervals"][name]
        assert figure["estimate"] == pytest.approx(evaluation[name]) and figure["low"] <= figure["estimate"] <= figure["high"]
