"""Smoke test of the benchmark script: `benchmarks/run.py --quick` runs and writes its table and JSON.

Benchmarks are not tests: nothing here asserts a time, a ratio or a target. This only keeps
the script from rotting (every quick section must run and produce well-formed rows).
"""

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

QUICK_SECTIONS = ("data", "train", "predict", "memory", "startup")
ROW_KEYS = {"section", "measure", "unit", "reference", "zoidberg", "ratio", "target", "met", "note", "samples"}


@pytest.mark.timeout(900)
def test_quick_benchmark_runs_and_writes_table_and_json(tmp_path):
    out = tmp_path / "quick.json"
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--quick", "--out", str(out)],
        capture_output=True, text=True, cwd=REPO_ROOT, env=environment, timeout=880,
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-5000:]}"

    payload = json.loads(out.read_text())
    assert payload["quick"] is True
    assert {"cpu", "cores", "ram_gb", "python", "numpy"} <= set(payload["machine"])
    assert set(payload["sections"]) == set(QUICK_SECTIONS)
    assert not any("error" in info for info in payload["sections"].values())
    rows = payload["rows"]
    assert {row["section"] for row in rows} == set(QUICK_SECTIONS)
    for row in rows:
        assert ROW_KEYS <= set(row), row["measure"]
        assert row["unit"] in ("s", "ms", "img/s", "MB")
        assert isinstance(row["zoidberg"], (int, float)) and row["zoidberg"] > 0, row["measure"]
        assert row["reference"] is None or row["reference"] > 0
        assert row["met"] in (True, False, None)
        assert (row["ratio"] is None) == (row["reference"] is None)

    # The markdown table on stdout: a header and one line per row with six cells.
    table = [line for line in result.stdout.splitlines() if line.startswith("|")]
    assert table[0] == "| measure | reference | Zoidberg | ratio | target | met? |"
    assert len(table) == 2 + len(rows)
    assert all(line.count("|") == 7 for line in table)


@pytest.mark.timeout(600)
def test_quality_benchmark_runs_on_generated_data(tmp_path):
    out = tmp_path / "quality.json"
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [sys.executable, "benchmarks/quality.py", "--quick", "--presets", "scratch,notes-cnn", "--out", str(out), "--work", str(tmp_path / "work")],
        capture_output=True, text=True, cwd=REPO_ROOT, env=environment, timeout=580,
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-5000:]}"
    payload = json.loads(out.read_text())
    assert [item["recipe"] for item in payload["results"]] == ["scratch", "notes-cnn"]
    for item in payload["results"]:
        assert set(item["holdouts"]) == {"patients", "shifted"} and item["seconds"] > 0
        assert all(figures["leakage_clean"] for figures in item["holdouts"].values())
    header = [line for line in result.stdout.splitlines() if line.startswith("| recipe |")]
    assert len(header) == 2 and "AUC gap to CV" in header[0]


@pytest.mark.timeout(600)
def test_site_benchmark_appends_each_candidate_and_skips_it_when_run_again(tmp_path):
    results = tmp_path / "site.jsonl"
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [sys.executable, "benchmarks/site.py", "--quick", "--candidates", "scratch", "--work", str(tmp_path / "work"), "--results", str(results)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, env=environment, timeout=580)
    assert result.returncode == 0, f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-5000:]}"
    (row,) = [json.loads(line) for line in results.read_text().splitlines()]
    assert row["candidate"] == "scratch" and row["train_seconds"] > 0 and len(row["load_average"]) == 2
    for block in (row["zero_shot"], row["adapted"]["head"] if "skipped" not in row["adapted"]["head"] else row["adapted"]["recalibrate"]):
        assert block["roc_auc"]["low"] is not None and block["n"] == row["zero_shot"]["n"]
    # A scratch CNN has no frozen features: the head method says why it was skipped.
    assert "no frozen-backbone member" in row["adapted"]["head"]["skipped"]
    assert [line for line in result.stdout.splitlines() if line.startswith("| scratch |")]
    again = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, env=environment, timeout=120)
    assert again.returncode == 0 and "already measured" in again.stderr
    assert len(results.read_text().splitlines()) == 1


def test_the_service_benchmark_runs_on_a_tiny_run(tmp_path):
    result = subprocess.run([sys.executable, "benchmarks/service.py", "--quick"], capture_output=True, text=True, timeout=600,
                            cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [line["step"] for line in lines] == ["latency", "throughput", "soak"]
    assert all(line["errors"] == 0 for line in lines) and lines[0]["p50_ms"] > 0 and lines[1]["images_per_s"] > 0


def test_the_label_order_simulation_appends_each_point_and_goes_on_where_it_stopped(tmp_path):
    results = tmp_path / "label_order.jsonl"
    command = [sys.executable, "benchmarks/label_order.py", "--quick", "--orders", "stratified,random", "--seeds", "0", "--most", "40",
               "--results", str(results)]
    first = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    # Per ordering: the zero-shot start, then a point every 20 labels, both curves with intervals.
    assert [(row["order"], row["n_labels"]) for row in rows] == [(order, n) for order in ("stratified", "random") for n in (0, 20, 40)]
    for row in rows[1:3]:
        assert row["crossfit"]["accuracy"][1] <= row["crossfit"]["accuracy"][0] <= row["crossfit"]["accuracy"][2]
        assert row["unlabeled"]["n"] == 90 - row["n_labels"] and row["adapt_seconds"] >= 0
    again = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert again.returncode == 0 and len(results.read_text().splitlines()) == len(rows)
