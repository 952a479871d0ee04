"""CLI progress: rich bars on a terminal, throttled plain lines in a log, silence with --json; cv and evaluate use them."""

from __future__ import annotations

import io

import pytest

from zoidberg.cli.main import main
from zoidberg.cli.terminal_progress import progress_tasks
from zoidberg.runs.store import RunStore


class Terminal(io.StringIO):
    """A stream that says it is a terminal, as a console is."""

    def isatty(self) -> bool:
        return True


def test_a_log_gets_one_line_per_change_at_most_every_few_seconds_and_the_last():
    stream = io.StringIO()
    with progress_tasks(stream=stream) as update:
        for done in range(1, 101):
            update("Scoring", done, 100)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "Scoring: 1/100" and lines[-1] == "Scoring: 100/100"
    assert len(lines) <= 3


def test_a_terminal_gets_rich_bars_with_their_counts():
    stream = Terminal()
    with progress_tasks(stream=stream) as update:
        update("images", 10, 10, "Loading images")
        update("units", 2, 3, "Folds finished")
    drawn = stream.getvalue()
    assert "Loading images" in drawn and "10/10" in drawn and "Folds finished" in drawn and "2/3" in drawn


def test_json_mode_draws_nothing():
    stream = Terminal()
    with progress_tasks(enabled=False, stream=stream) as update:
        update("Scoring", 1, 2)
    assert stream.getvalue() == ""


def test_cv_and_evaluate_show_progress_in_a_log_and_none_with_json(demo_dir, tmp_path, capsys):
    runs_dir = str(tmp_path / "runs")
    tiny = ["--image-size", "32", "--folds", "2", "--epochs", "2", "--conv-blocks", "1", "--base-filters", "4", "--dense-units", "8"]
    assert main(["--runs-dir", runs_dir, "cv", "--data", str(demo_dir), *tiny]) == 0
    err = capsys.readouterr().err
    for expected in ("Folds finished: 0/2", "Fold 1: epochs: ", "Fold 2: epochs: 2/2", "Folds finished: 2/2"):
        assert expected in err, f"{expected!r} missing from:\n{err}"
    [run] = RunStore(runs_dir).list_runs()
    assert main(["--runs-dir", runs_dir, "evaluate", "--run", run.id, "--data", str(demo_dir), "--split", "all", "--name", "everything"]) == 0
    err = capsys.readouterr().err
    assert "Scoring: " in err
    assert main(["--runs-dir", runs_dir, "evaluate", "--run", run.id, "--data", str(demo_dir), "--split", "all", "--name", "again", "--json"]) == 0
    assert "Scoring" not in capsys.readouterr().err


def test_a_run_that_fails_in_the_foreground_prints_one_line_and_keeps_the_traceback_in_the_run(demo_dir, tmp_path, capsys, monkeypatch):
    from zoidberg.training import fold_training

    def broken(*args, **kwargs):
        raise RuntimeError("the fold exploded")

    monkeypatch.setattr(fold_training, "train_fold", broken)
    runs_dir = str(tmp_path / "runs")
    tiny = ["--image-size", "32", "--folds", "2", "--epochs", "1", "--conv-blocks", "1", "--base-filters", "4", "--dense-units", "8"]
    assert main(["--runs-dir", runs_dir, "cv", "--data", str(demo_dir), *tiny]) == 1
    err = capsys.readouterr().err
    assert "failed: RuntimeError: the fold exploded" in err and "Traceback" not in err
    [run] = RunStore(runs_dir).list_runs()
    assert run.state == "failed" and "Traceback" in run.status()["traceback"]


@pytest.mark.parametrize("engine", ["auto", "local"])
def test_a_training_command_imports_tensorflow_quietly(demo_dir, tmp_path, engine):
    import subprocess
    import sys

    # A fresh process trains in itself (auto at 32 px), or its folds in children (local): TensorFlow's absl and
    # oneDNN start-up lines are held back wherever TensorFlow is first imported.
    tiny = ["--image-size", "32", "--folds", "2", "--epochs", "1", "--conv-blocks", "1", "--base-filters", "4", "--dense-units", "8",
            "--engine", engine]
    result = subprocess.run([sys.executable, "-m", "zoidberg", "--runs-dir", str(tmp_path / "runs"), "cv", "--data", str(demo_dir), *tiny],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    console = result.stdout + result.stderr
    assert "Cross-validation done" in console
    assert "absl::InitializeLog" not in console and "oneDNN custom operations" not in console


def test_the_quiet_import_waits_for_tensorflow_to_be_imported():
    import subprocess
    import sys

    code = ("import sys; from zoidberg.training.executors import quiet_tensorflow_when_imported as quiet; quiet(); "
            "assert 'tensorflow' not in sys.modules, 'imported early'; import keras; assert 'tensorflow' in sys.modules; print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.stdout.strip() == "ok", result.stderr[-2000:]
    assert "absl::InitializeLog" not in result.stderr and "oneDNN custom operations" not in result.stderr
