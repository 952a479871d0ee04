"""Run store: round trip, atomic JSON, events, ids, liveness."""

import json
import os
import subprocess
import sys

import pytest

from zoidberg.runs import liveness
from zoidberg.runs import store as runstore
from zoidberg.runs.store import RunNotFoundError, RunStore, validate_run_id, write_json_atomic


def test_round_trip(runs_dir):
    store = RunStore(runs_dir)
    run = store.create_run("cv", {"data": {"data_dir": "x"}, "n_splits": 3}, name="first")
    assert store.get(run.id).config["n_splits"] == 3
    assert run.name == "first" and run.kind == "cv" and run.state == "queued"
    run.set_status("running", pid=os.getpid(), host=os.uname().nodename)
    run.append_event("epoch", fold=1, logs={"loss": 0.5})
    run.append_event("epoch", fold=1, logs={"loss": 0.4})
    events, offset = run.read_events()
    assert [event["logs"]["loss"] for event in events] == [0.5, 0.4]
    more, offset2 = run.read_events(offset)
    assert more == [] and offset2 == offset
    run.fold_dir(1)
    run.write_json("fold_1/metrics.json", {"fold": 1})
    assert run.fold_metrics() == [{"fold": 1}]
    assert [r.id for r in store.list_runs()] == [run.id]


def test_partial_event_line_is_not_read(runs_dir):
    run = RunStore(runs_dir).create_run("cv", {})
    run.append_event("a")
    with open(run.path / "events.jsonl", "a") as handle:
        handle.write('{"type": "half')
    events, offset = run.read_events()
    assert [event["type"] for event in events] == ["a"]
    with open(run.path / "events.jsonl", "a") as handle:
        handle.write('", "time": 1}\n')
    rest, _ = run.read_events(offset)
    assert [event["type"] for event in rest] == ["half"]


def test_atomic_write_keeps_old_version_on_crash(tmp_path, monkeypatch):
    target = tmp_path / "status.json"
    write_json_atomic(target, {"state": "old"})

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(runstore.os, "replace", crash)
    with pytest.raises(OSError):
        write_json_atomic(target, {"state": "new" * 1000})
    assert json.loads(target.read_text()) == {"state": "old"}
    assert list(tmp_path.glob("*.tmp")) == []


def test_concurrent_reader_never_sees_half_a_file(runs_dir):
    run = RunStore(runs_dir).create_run("cv", {})
    writer = subprocess.Popen(
        [sys.executable, "-c", (
            "import sys; from zoidberg.runs.store import Run; from pathlib import Path;"
            f"run = Run(Path({str(run.path)!r}));"
            "[run.write_json('summary.json', {'i': i, 'pad': 'x' * 20000}) for i in range(300)]"
        )],
    )
    seen = 0
    while writer.poll() is None:
        payload = run.read_json("summary.json")
        if payload is not None:
            assert len(payload["pad"]) == 20000
            seen += 1
    assert writer.returncode == 0


@pytest.mark.parametrize("bad", ["../x", "/etc/passwd", "a/b", "", ".hidden", "x" * 200, "..", "run id"])
def test_run_ids_must_be_plain(bad, runs_dir):
    with pytest.raises(ValueError, match="not a run id"):
        validate_run_id(bad)
    with pytest.raises(ValueError):
        RunStore(runs_dir).get(bad)


def test_unknown_run(runs_dir):
    with pytest.raises(RunNotFoundError):
        RunStore(runs_dir).get("20990101-000000-cv-abcdef")


def test_dead_worker_is_shown_interrupted(runs_dir):
    run = RunStore(runs_dir).create_run("cv", {})
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    run.set_status("running", pid=child.pid, host=os.uname().nodename)
    status = run.status()
    assert status["state"] == "interrupted"
    assert "Resume" in status["error"]


def test_stale_heartbeat_is_interrupted(runs_dir, monkeypatch):
    run = RunStore(runs_dir).create_run("cv", {})
    run.set_status("running", pid=os.getpid(), host="another-host")
    run.heartbeat()
    assert run.state == "running"
    monkeypatch.setattr(liveness, "HEARTBEAT_TIMEOUT_S", -1)
    assert run.state == "interrupted"


def test_unwritable_runs_dir_message(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="not writable"):
        RunStore(blocker / "runs").ensure_writable()


def test_stop_flag(runs_dir):
    run = RunStore(runs_dir).create_run("cv", {})
    assert not run.stop_requested
    run.request_stop()
    assert run.stop_requested
    run.clear_stop()
    assert not run.stop_requested


def test_write_atomically_keeps_the_old_file_when_the_writer_fails(tmp_path):
    from zoidberg.runs.store import write_atomically

    target = tmp_path / "model.keras"
    target.write_text("old model")

    def half_write(path):
        assert path.suffix == ".keras" and path.parent == tmp_path
        path.write_text("half a mod")
        raise OSError("disk full")

    with pytest.raises(OSError):
        write_atomically(target, half_write)
    assert target.read_text() == "old model"
    assert [path.name for path in tmp_path.iterdir()] == ["model.keras"], "the temporary file is removed"
    write_atomically(target, lambda path: path.write_text("new model"))
    assert target.read_text() == "new model"
