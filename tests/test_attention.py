"""Where the model looks: the Grad-CAM share inside the lung fields, measured, stored, printed, reported and shown."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from apptest_helpers import assert_no_exception, open_app, texts

from zoidberg.cli.main import main
from zoidberg.inference.attention import LUNG_BOX, OUTSIDE_SHARE, describe_share, lung_share, stored_checks
from zoidberg.runs.store import ATTENTION_FILE, RunStore


def test_the_lung_share_is_the_mass_inside_the_box():
    heatmap = np.zeros((100, 100), dtype=np.float32)
    heatmap[40:60, 40:60] = 1.0  # the middle of the chest
    assert lung_share(heatmap) == pytest.approx(1.0)
    heatmap[:, :] = 0.0
    heatmap[0:10, 0:10] = 1.0  # a corner marker
    assert lung_share(heatmap) == 0.0
    heatmap[40:50, 40:50] = 1.0  # as much in the lungs as on the marker
    assert lung_share(heatmap) == pytest.approx(0.5)
    assert lung_share(np.zeros((10, 10))) is None
    x0, y0, x1, y1 = LUNG_BOX
    assert 0 < x0 < x1 < 1 and 0 < y0 < y1 < 1
    assert describe_share(OUTSIDE_SHARE - 0.01).startswith("Most of the evidence lies outside the lung fields")
    assert describe_share(OUTSIDE_SHARE) is None and describe_share(None) is None


@pytest.fixture
def private_runs(trained, tmp_path, monkeypatch):
    runs_dir = tmp_path / "runs"
    shutil.copytree(trained.dir, runs_dir)
    monkeypatch.setenv("ZOIDBERG_RUNS_DIR", str(runs_dir))
    return RunStore(runs_dir), trained.ids


def test_the_cli_measures_out_of_fold_films_and_an_evaluation_and_the_report_tells_it(private_runs, demo_dir, capsys):
    store, ids = private_runs
    run = store.get(ids["baseline"])
    assert main(["--runs-dir", str(store.root), "attention", "--run", run.id, "--sample", "12"]) == 0
    out = capsys.readouterr().out
    check = json.loads((run.path / ATTENTION_FILE).read_text())
    assert check["source"] == "out-of-fold" and check["n_measured"] == 12 and check["n_films"] > 12
    assert 0.0 <= check["median_share"] <= 1.0 and check["n_outside"] == sum(1 for item in check["outside"])
    assert re.search(r"out-of-fold: on 12 films \(a sample of 12 of \d+\), a median \d+% of the Grad-CAM evidence", out)
    # evaluate measures its films too (here 8 of them), and says so; 0 skips it.
    assert main(["--runs-dir", str(store.root), "evaluate", "--run", run.id, "--data", str(demo_dir), "--name", "demo-test", "--attention-sample", "8"]) == 0
    out = capsys.readouterr().out
    assert "Where it looks: demo-test: on 8 films" in out
    # The console leads the gap with the verdict, in children.
    assert re.search(r"Verdict: .*On these \d+ films, \d+ of \d+ healthy children would be called pneumonia", out)
    assert (run.evaluation_path("demo-test") / ATTENTION_FILE).is_file()
    assert main(["--runs-dir", str(store.root), "evaluate", "--run", run.id, "--data", str(demo_dir), "--name", "again", "--attention-sample", "0"]) == 0
    assert "Where it looks" not in capsys.readouterr().out and not (run.evaluation_path("again") / ATTENTION_FILE).exists()
    # An unknown evaluation is one line.
    assert main(["--runs-dir", str(store.root), "attention", "--run", run.id, "--evaluation", "nope"]) == 2
    assert "has no evaluation named 'nope'" in capsys.readouterr().err
    from zoidberg.evaluation.stored import current_evaluations
    from zoidberg.reporting.content import build_report
    from zoidberg.reporting.html import render_html

    assert [check["source"] for check in stored_checks(run, current_evaluations(run))] == ["out-of-fold", "demo-test"]
    html = render_html(build_report(run, examples=0, gradcam=False))
    assert "Where the model looks" in html and "out-of-fold: on 12 films" in html and "demo-test: on 8 films" in html


def test_the_run_view_measures_and_shows_where_it_looks(private_runs, demo_dir):
    store, ids = private_runs
    run_id = ids["baseline"]
    app = open_app(demo_dir, "pages/train.py")
    next(item for item in app.selectbox if item.label == "Run").set_value(run_id).run()
    assert_no_exception(app)
    assert "Where it looks" in {tab.label for tab in app.tabs}
    measure = next(button for button in app.button if button.label == "Measure where it looks on out-of-fold films")
    measure.click().run()
    assert_no_exception(app)
    assert (store.get(run_id).path / ATTENTION_FILE).is_file()
    assert "of the Grad-CAM evidence lies inside the lung fields" in texts(app.markdown)
    assert not any(button.label == "Measure where it looks on out-of-fold films" for button in app.button)
