"""The clinician's report: every section in the PDF read back, a self-contained HTML, bad input refused in one line."""

from __future__ import annotations

import re
import shutil

import pytest

from zoidberg.cli.main import main
from zoidberg.runs.store import REPORTS_DIR, RunStore


@pytest.fixture(scope="module")
def runs(trained, tmp_path_factory):
    """A private copy of the tiny runs, so reports written into them stay out of the shared ones."""
    root = tmp_path_factory.mktemp("report") / "runs"
    shutil.copytree(trained.dir, root)
    return RunStore(root), trained.ids


def test_the_pdf_holds_every_section_and_reads_back(runs, tmp_path, capsys):
    from pypdf import PdfReader

    store, ids = runs
    out = tmp_path / "report.pdf"
    assert main(["--runs-dir", str(store.root), "report", "--run", ids["baseline"], "--out", str(out)]) == 0
    printed = capsys.readouterr().out.split()
    assert str(store.root / ids["baseline"] / REPORTS_DIR / "report.pdf") in printed and str(out.resolve()) in printed
    text = " ".join(page.extract_text() for page in PdfReader(out).pages)
    text = re.sub(r"\s+", " ", text)
    for expected in ("Intended use and limits", "Not a medical device", "The data", "patients", "Skipped files",
                     "Duplicates found", "grouped by patient", "Results", "mean ± std", "AUC [95 % CI]", "test",
                     "ROC curves", "Calibration (reliability diagram)", "Decision curves", "The operating point",
                     "PPV", "NPV", "Confusion matrices", "Misclassified X-rays", "(Grad-CAM)", "SYNTHETIC"):
        assert expected in text, f"{expected!r} missing from the PDF"


def test_the_html_is_self_contained_with_figures_and_grad_cam(runs):
    from zoidberg.reporting.content import build_report
    from zoidberg.reporting.html import render_html

    store, ids = runs
    report = build_report(store.get(ids["baseline"]), examples=4)
    html = render_html(report)
    assert "<script" not in html
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", html), "the report must open offline"
    sources = re.findall(r'<img alt="[^"]*" src="([^"]{0,30})', html)
    charts = sum(len(section.charts) for section in report.sections)
    examples = [example for section in report.sections for example in section.examples]
    assert charts == 3 and 0 < len(examples) <= 4
    assert len(sources) == charts + len(examples) and all(source.startswith("data:image/png;base64,") for source in sources)
    assert any(example.gradcam for example in examples)
    # Table cells are escaped, never markup.
    assert "<td>true \\ predicted</td>" in html or "<th>true \\ predicted</th>" in html


def test_a_three_class_run_reports_without_grad_cam(runs, tmp_path):
    from zoidberg.reporting.report_files import write_report

    store, ids = runs
    paths = write_report(store.get(ids["three_class"]), ("html",), gradcam=False)
    html = paths[0].read_text(encoding="utf-8")
    assert "Misclassified X-rays" in html and "(Grad-CAM)" not in html and "bacteria" in html


def test_bad_requests_get_one_line(runs, tmp_path, capsys):
    store, ids = runs
    assert main(["--runs-dir", str(store.root), "report", "--run", ids["stopped"]]) == 2
    assert "no results yet" in capsys.readouterr().err
    assert main(["--runs-dir", str(store.root), "report", "--run", ids["baseline"], "--out", str(tmp_path / "report.docx")]) == 2
    assert ".html or .pdf" in capsys.readouterr().err
    assert main(["--runs-dir", str(store.root), "report", "--run", "no-such-run"]) == 2
    assert "no-such-run" in capsys.readouterr().err


def test_the_report_carries_the_pages_leakage_sentence(runs, demo_dir, tmp_path):
    import csv
    import html as html_module

    from zoidberg.evaluation.leakage import evaluation_notes
    from zoidberg.inference.evaluate import evaluate_run
    from zoidberg.reporting.content import build_report
    from zoidberg.reporting.html import render_html

    store, ids = runs
    run = store.get(ids["baseline"])
    with run.open_text("folds.csv") as handle:
        number = sorted(row["patient"] for row in csv.DictReader(handle) if row["patient"].startswith("person"))[0]
    folder = tmp_path / "elsewhere" / "PNEUMONIA"
    folder.mkdir(parents=True)
    for index, path in enumerate(sorted(demo_dir.glob("test/PNEUMONIA/*.jpeg"))[:3]):
        shutil.copy(path, folder / f"{number}_bacteria_{800 + index}.jpeg")
    evaluation = evaluate_run(run, folder.parent, name="elsewhere")
    (sentence,) = [note for note in evaluation_notes(evaluation) if "patient number" in note]
    text = html_module.unescape(re.sub(r"<[^>]+>", " ", render_html(build_report(run, examples=0, gradcam=False))))
    text = re.sub(r"\s+", " ", text)
    assert f"Evaluation elsewhere: {sentence}" in text and "weak evidence" in text
    shutil.rmtree(run.evaluation_path("elsewhere"))


def test_the_operating_point_section_leads_with_measured_rates_and_names_its_assumption(runs, tmp_path):
    import html as html_module
    import json

    from zoidberg.evaluation.operating import SAME_FILMS_ASSUMPTION
    from zoidberg.reporting.content import build_report
    from zoidberg.reporting.html import render_html

    store, ids = runs
    run = store.get(ids["baseline"])
    text = html_module.unescape(re.sub(r"<[^>]+>", " ", render_html(build_report(run, examples=0, gradcam=False))))
    text = re.sub(r"\s+", " ", text)
    section = text[text.index("The operating point"):]
    assert "measured on test" in section and SAME_FILMS_ASSUMPTION in section
    assert section.index("measured on test") < section.index("cross-validation, out of fold") < section.index("cross-validation carried to test")
    assert "images in a test split, scored once" in text
    # A run without a test split says nothing about one.
    copy = RunStore(tmp_path / "runs")
    shutil.copytree(run.path, copy.root / run.id)
    copied = copy.get(run.id)
    data = json.loads((copied.path / "data.json").read_text())
    (copied.path / "data.json").write_text(json.dumps({**data, "n_test": 0}))
    text = html_module.unescape(re.sub(r"<[^>]+>", " ", render_html(build_report(copied, examples=0, gradcam=False))))
    assert "in a test split" not in text


def test_the_first_page_holds_the_model_facts_each_from_the_run_s_own_files(runs):
    from zoidberg.inference.model_facts import model_facts
    from zoidberg.reporting.content import build_report

    store, ids = runs
    run = store.get(ids["baseline"])
    facts = model_facts(run)
    data, point, calibration = run.read_json("data.json"), run.read_json("operating_point.json"), run.read_json("calibration.json")
    assert facts["training_data"]["images"] == data["n_images"] and facts["training_data"]["patients"] == data["n_patients"]
    assert facts["training_data"]["class_counts"] == data["class_counts"] and facts["training_data"]["synthetic"] is True
    assert facts["population"].startswith("Synthetic demo films")
    assert facts["threshold_rule"]["threshold"] == point["threshold"]
    assert facts["calibration"]["ece_raw"] == calibration["out_of_fold"]["raw"]["ece"]
    assert facts["adaptation"] is None and facts["versions"] == (run.config.get("versions") or {})
    assert "monitor" in facts["monitoring_plan"] and any("Adults" in item for item in facts["out_of_scope"])
    first = build_report(run, examples=0, gradcam=False).sections[0]
    assert first.heading == "Model facts"
    labels = [row[0] for row in first.tables[0].rows]
    assert labels[:8] == ["Intended use", "Intended users", "Population", "Out of scope", "Known risks", "Training data",
                          "Model selection", "Threshold rule"]
    assert {"Gate", "Calibration", "Monitoring plan", "Versions"} <= set(labels)
