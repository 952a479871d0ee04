"""Faults found by probing: each ends with a clear message, nothing lost and nothing half-written."""

from __future__ import annotations

from pathlib import Path

import pytest

from zoidberg.runs.store import RunStore


def test_stop_on_a_finished_run_says_so_and_leaves_no_stop_file(runs_dir, capsys):
    from zoidberg.cli.main import main

    run = RunStore(runs_dir).create_run("cv", {"data": {}}, name="done")
    run.set_status("completed")
    assert main(["stop", run.id, "--runs-dir", str(runs_dir)]) == 0
    printed = capsys.readouterr().out
    assert "has already finished (completed): there is nothing to stop" in printed and "Stop requested" not in printed
    assert not run.stop_requested, "a stop file would stop the run's next resume at once"


def test_a_bad_max_runs_is_refused_before_any_run_is_created(runs_dir, monkeypatch):
    from zoidberg.launch.jobs import start_run

    monkeypatch.setenv("ZOIDBERG_MAX_RUNS", "abc")
    with pytest.raises(ValueError, match="ZOIDBERG_MAX_RUNS must be a whole number of runs, not 'abc'"):
        start_run("cv", {"data": {}}, runs_dir=runs_dir)
    assert not list(RunStore(runs_dir).list_runs())


def test_a_run_that_cannot_be_written_leaves_no_staging_folder(runs_dir, monkeypatch):
    from zoidberg.runs import store as store_module

    store = RunStore(runs_dir)
    store.ensure_writable()

    def full_disk(path, payload):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store_module, "write_json_atomic", full_disk)
    with pytest.raises(OSError, match="No space left"):
        store.create_run("cv", {"data": {}})
    assert [path.name for path in runs_dir.iterdir()] == [], "an empty .RUNID.* folder was left behind"


def _killed_fold(run, task):
    """A fold whose child dies as under the out-of-memory killer."""
    import os
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


def test_a_killed_fold_child_names_the_fold_and_suggests_resume(runs_dir):
    import numpy as np

    from zoidberg.training.executors import FoldChildDied, FoldTask, run_folds_in_children

    run = RunStore(runs_dir).create_run("cv", {"data": {}})
    task = FoldTask(fold_number=2, train_part=np.arange(3), validation_part=np.arange(3, 5), indices=np.arange(5))
    with pytest.raises(FoldChildDied, match=rf"fold 2 ended abruptly .*python -m zoidberg resume {run.id}"):
        run_folds_in_children(run, [task], _killed_fold, parallel=1, cores=1)


@pytest.mark.parametrize("finished", [True, False])
def test_a_damaged_status_file_is_named_and_never_turns_a_finished_run_into_a_queued_one(runs_dir, finished):
    from zoidberg.runs.store import STATUS_FILE, SUMMARY_FILE

    run = RunStore(runs_dir).create_run("cv", {"data": {}})
    if finished:
        run.write_json(SUMMARY_FILE, {"folds": []})
    (run.path / STATUS_FILE).write_text('{"state": "compl')
    status = run.status()
    if finished:
        assert run.state == "completed" and "status.json is damaged" in status["warning"]
    else:
        assert run.state == "interrupted" and "status.json is damaged" in status["error"] and f"resume {run.id}" in status["error"]


@pytest.fixture
def private_baseline(trained, tmp_path):
    """A private copy of the tiny baseline run, to damage at will."""
    import shutil

    store = RunStore(tmp_path / "runs")
    source = trained.store.get(trained.ids["baseline"])
    shutil.copytree(source.path, store.root / source.id)
    return store.get(source.id)


def _full_disk_after(size: int):
    """A stand-in for keras.Model.save that writes `size` bytes, then fails as a full disk does."""
    import errno

    def save(model, path, *args, **kwargs):
        with open(path, "wb") as handle:
            handle.write(b"\0" * size)
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    return save


def test_a_full_disk_during_export_keeps_the_previous_export_whole(private_baseline, monkeypatch, capsys):
    import keras

    from zoidberg.cli.main import main
    from zoidberg.inference.export import ARTIFACT_NAMES, export_problem
    from zoidberg.runs.store import EXPORTS_DIR

    run = private_baseline
    folder = run.path / EXPORTS_DIR / "keras"
    assert main(["--runs-dir", str(run.path.parent), "export", "--run", run.id, "--format", "keras"]) == 0
    capsys.readouterr()
    before = (folder / ARTIFACT_NAMES["keras"]).read_bytes()
    assert export_problem(folder, "keras") is None
    monkeypatch.setattr(keras.Model, "save", _full_disk_after(100))
    assert main(["--runs-dir", str(run.path.parent), "export", "--run", run.id, "--format", "keras"]) == 1
    err = capsys.readouterr().err
    assert "The disk is full" in err and "run the command again" in err and "resume" not in err
    assert (folder / ARTIFACT_NAMES["keras"]).read_bytes() == before, "the whole export was replaced by a cut one"
    assert sorted(path.name for path in folder.parent.iterdir()) == ["keras"], "a staging folder was left behind"


def test_a_damaged_export_is_not_reused_but_written_again(private_baseline):
    import keras

    from zoidberg.inference.export import ARTIFACT_NAMES, export_problem, export_run
    from zoidberg.inference.loading import load_ensemble
    from zoidberg.runs.store import EXPORTS_DIR
    from zoidberg.integrations.mlflow_tracking import ensure_keras_export

    run = private_baseline
    folder = run.path / EXPORTS_DIR / "keras"
    assert export_problem(folder, "keras").endswith("is missing")
    export_run(run, load_ensemble(run.id, runs_dir=run.path.parent), "keras", folder)
    artifact = folder / ARTIFACT_NAMES["keras"]
    whole = artifact.read_bytes()
    artifact.write_bytes(whole[: len(whole) // 3])
    assert "differs from the checksum" in export_problem(folder, "keras")
    # An export in another format is no reason to skip the keras one (it used to be).
    (run.path / EXPORTS_DIR / "onnx").mkdir()
    (run.path / EXPORTS_DIR / "onnx" / "model.onnx").write_bytes(b"x")
    ensure_keras_export(run)
    assert export_problem(folder, "keras") is None
    keras.models.load_model(artifact, safe_mode=True, compile=False)


def test_a_full_disk_during_report_out_names_the_target_and_leaves_no_empty_file(private_baseline, tmp_path, monkeypatch, capsys):
    import errno
    import shutil

    from zoidberg.cli.main import main

    run = private_baseline
    target = tmp_path / "elsewhere" / "report.html"
    target.parent.mkdir()
    target.write_text("the report from last week")
    real_copyfile = shutil.copyfile

    def copy_to_full_disk(source, destination, *args, **kwargs):
        if str(destination).startswith(str(target.parent)):
            open(destination, "wb").close()
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_copyfile(source, destination, *args, **kwargs)

    monkeypatch.setattr(shutil, "copyfile", copy_to_full_disk)
    code = main(["--runs-dir", str(run.path.parent), "report", "--run", run.id, "--out", str(target), "--examples", "0"])
    err = capsys.readouterr().err
    assert code == 1 and "The disk is full" in err and str(target) in err and "run the command again" in err
    assert "resume" not in err
    assert target.read_text() == "the report from last week"
    assert [path.name for path in target.parent.iterdir()] == ["report.html"], "a 0-byte or temporary file was left"


def test_a_report_says_when_it_leaves_grad_cam_out(private_baseline, tmp_path, capsys):
    from zoidberg.cli.main import main

    run = private_baseline
    for model in run.path.glob("fold_*/model.keras"):
        model.unlink()
    out = tmp_path / "report.html"
    assert main(["--runs-dir", str(run.path.parent), "report", "--run", run.id, "--out", str(out), "--examples", "2"]) == 0
    err = capsys.readouterr().err
    assert "warning: Grad-CAM is left out of this report: the run's models could not be loaded" in err
    assert "Grad-CAM is left out of this report" in out.read_text(encoding="utf-8")


def test_folds_out_writes_every_row_when_a_file_name_is_not_utf8(demo_dir, tmp_path, capsys):
    import csv
    import os
    import shutil

    from zoidberg.cli.main import main

    data = tmp_path / "data"
    shutil.copytree(demo_dir, data)
    film = sorted((data / "train" / "NORMAL").glob("*.jpeg"))[0]
    shutil.copy(film, os.path.join(os.fsencode(data / "train" / "NORMAL"), b"IM-9009-\xff\xfe.jpeg"))
    out = tmp_path / "folds.csv"
    out.write_text("the folds of last week\n")
    assert main(["folds", "--data", str(data), "--folds", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    with open(out, newline="", encoding="utf-8", errors="surrogateescape") as handle:
        rows = list(csv.DictReader(handle))
    assert f"Wrote {len(rows)} rows" in printed
    # The odd name reads back, opened as README says, as the file's own path.
    odd = [row["path"] for row in rows if os.fsencode(row["path"]).endswith(b"IM-9009-\xff\xfe.jpeg")]
    assert len(odd) == 1 and os.path.isfile(os.path.join(data, odd[0]))
    assert len(rows) == len(list(data.glob("train/*/*"))) + len(list(data.glob("val/*/*"))), "rows were cut"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["data", "folds.csv"], "a temporary file was left"


def test_predict_csv_round_trips_a_name_that_is_not_utf8(private_baseline, demo_dir, tmp_path, capsys):
    import csv
    import os
    import shutil

    from zoidberg.cli.main import main

    folder = tmp_path / "films"
    folder.mkdir()
    film = sorted((demo_dir / "test" / "NORMAL").glob("*.jpeg"))[0]
    shutil.copy(film, os.path.join(os.fsencode(folder), b"IM-77-\xff.jpeg"))
    shutil.copy(film, folder / "plain.jpeg")
    out = tmp_path / "predictions.csv"
    assert main(["--runs-dir", str(private_baseline.path.parent), "predict", "--run", private_baseline.id, str(folder), "--csv", str(out)]) == 0
    with open(out, newline="", encoding="utf-8", errors="surrogateescape") as handle:
        files = [row["file"] for row in csv.DictReader(handle)]
    assert len(files) == 2 and all(os.path.isfile(file) for file in files), files


@pytest.mark.parametrize("where, message", [("missing/predictions.csv", "does not exist: create it"), ("a-folder", "A folder stands where the file")])
def test_predict_csv_to_a_missing_folder_or_onto_a_folder_names_the_path(private_baseline, demo_dir, tmp_path, capsys, where, message):
    from zoidberg.cli.main import main

    base = tmp_path / "out"
    (base / "a-folder").mkdir(parents=True)
    target = base / where
    film = sorted((demo_dir / "test" / "NORMAL").glob("*.jpeg"))[0]
    code = main(["--runs-dir", str(private_baseline.path.parent), "predict", "--run", private_baseline.id, str(film), "--csv", str(target)])
    err = capsys.readouterr().err
    assert code != 0 and message in err and str(target.parent if "missing" in where else target) in err
    assert ".tmp" not in err and "Traceback" not in err
    assert sorted(path.name for path in base.iterdir()) == ["a-folder"] and not list((base / "a-folder").iterdir()), "something was written"


def test_a_full_output_disk_is_named_by_the_output_path_not_the_runs_folder(private_baseline, demo_dir, tmp_path, monkeypatch, capsys):
    import errno

    from zoidberg.cli.main import main
    from zoidberg.runs import store as store_module

    def full(staged):
        staged.write_bytes(b"file,prediction\n")
        raise OSError(errno.ENOSPC, "No space left on device")

    original = store_module.write_atomically
    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / "predictions.csv"
    out.write_text("yesterday's predictions\n")
    monkeypatch.setattr(store_module, "write_atomically", lambda path, write: original(path, full))
    film = sorted((demo_dir / "test" / "NORMAL").glob("*.jpeg"))[0]
    code = main(["--runs-dir", str(private_baseline.path.parent), "predict", "--run", private_baseline.id, str(film), "--csv", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and f"The disk is full ({out})" in err and "runs folder" not in err
    assert out.read_text() == "yesterday's predictions\n" and sorted(path.name for path in out.parent.iterdir()) == ["predictions.csv"]


def test_a_full_disk_inside_tensorflow_during_export_is_one_sentence(private_baseline, monkeypatch, capsys):
    import keras
    import tensorflow as tf

    from zoidberg.cli.main import main
    from zoidberg.runs.store import EXPORTS_DIR

    def export(model, path, *args, **kwargs):
        raise tf.errors.ResourceExhaustedError(None, None, f"{path}/variables/variables_temp; No space left on device [Op:SaveV2]")

    monkeypatch.setattr(keras.Model, "export", export)
    run = private_baseline
    assert main(["--runs-dir", str(run.path.parent), "export", "--run", run.id, "--format", "savedmodel"]) == 1
    err = capsys.readouterr().err
    folder = run.path / EXPORTS_DIR / "savedmodel"
    assert f"The disk is full ({folder})" in err and "run the command again" in err and "Traceback" not in err and "staging" not in err
    assert not folder.exists() and list((run.path / EXPORTS_DIR).iterdir()) == []


def test_a_link_loop_in_a_data_folder_skips_that_file_with_a_reason(private_baseline, demo_dir, tmp_path, capsys):
    import csv
    import os
    import shutil

    from zoidberg.cli.main import main

    data = tmp_path / "data"
    shutil.copytree(demo_dir, data)
    normal = data / "train" / "NORMAL"
    os.symlink("loop-b.jpeg", normal / "loop-a.jpeg")
    os.symlink("loop-a.jpeg", normal / "loop-b.jpeg")
    assert main(["folds", "--data", str(data), "--folds", "2", "--out", str(tmp_path / "folds.csv")]) == 0
    said = capsys.readouterr()
    assert "train/NORMAL/loop-a.jpeg: unreadable: Too many levels of symbolic links" in said.err and "Wrote" in said.out
    # predict gives the loop its row and reason, the other films their predictions (exit 1: some files failed).
    out = tmp_path / "predictions.csv"
    assert main(["--runs-dir", str(private_baseline.path.parent), "predict", "--run", private_baseline.id, str(normal), "--csv", str(out)]) == 1
    with open(out, newline="", encoding="utf-8") as handle:
        rows = {Path(row["file"]).name: row for row in csv.DictReader(handle)}
    assert "link loop" in rows["loop-a.jpeg"]["error"] and "link loop" in rows["loop-b.jpeg"]["error"]
    assert sum(1 for row in rows.values() if row["prediction"]) == len(rows) - 2


def test_a_worker_that_could_not_write_its_status_shows_its_reason_from_the_events(runs_dir, capsys):
    import os
    import subprocess
    import sys

    from zoidberg.cli.main import main
    from zoidberg.runs.progress import FAILED

    store = RunStore(runs_dir)
    run = store.create_run("cv", {"data": {"data_dir": "x", "image_size": 32}, "model": {"architecture": "cnn"}})
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    run.set_status("running", pid=int(gone), host=os.uname().nodename)
    # A full disk let the worker append its failure, but not write status.json again.
    run.append_event(FAILED, error="The disk is full (/data/runs): free some space, then resume the run.")
    assert run.state == "interrupted" and "The disk is full" in run.status()["error"]
    assert main(["--runs-dir", str(runs_dir), "runs"]) == 0
    listing = capsys.readouterr().out
    assert "interrupted" in listing and "could not record it in status.json: The disk is full (/data/runs)" in listing


def lying_zip(entries: dict[str, tuple[int, int]]) -> bytes:
    """A zip of deflated zero-filled entries, each {name: (true size, size its headers declare)}."""
    import struct
    import zlib

    local_part, central_part = b"", b""
    block = bytes(1 << 20)
    for name, (true_size, declared_size) in entries.items():
        compressor, crc, parts = zlib.compressobj(9, zlib.DEFLATED, -15), 0, []
        for start in range(0, true_size, len(block)):
            piece = block[: min(len(block), true_size - start)]
            crc = zlib.crc32(piece, crc)
            parts.append(compressor.compress(piece))
        body = b"".join(parts) + compressor.flush()
        encoded = name.encode()
        offset = len(local_part)
        local_part += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 8, 0, 0, crc, len(body), declared_size, len(encoded), 0) + encoded + body
        central_part += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 8, 0, 0, crc, len(body), declared_size, len(encoded), 0, 0, 0, 0, 0, offset) + encoded
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(central_part), len(local_part), 0)
    return local_part + central_part + end


def test_a_zip_whose_header_understates_an_entry_is_refused_without_inflating_it(demo_dir):
    import io
    import tracemalloc
    import zipfile

    from zoidberg.data.archives import read_zip

    # 256 MiB of zeros whose headers say 1 MB, beside an honest X-ray.
    bomb = lying_zip({"bomb.png": (256 << 20, 1 << 20)})
    film = next(demo_dir.glob("test/NORMAL/*.jpeg")).read_bytes()
    buffer = io.BytesIO(bomb)
    with zipfile.ZipFile(buffer, "a") as archive:
        archive.writestr("NORMAL/film.jpeg", film)
    tracemalloc.start()
    entries = {entry.name: entry for entry in read_zip(buffer.getvalue())}
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert "possible zip bomb" in entries["bomb.png"].reason and entries["bomb.png"].data == b""
    assert entries["NORMAL/film.jpeg"].data == film and entries["NORMAL/film.jpeg"].reason is None
    assert peak < 16 << 20, f"{peak / 2**20:.0f} MiB held while reading a 1 MB entry"


def test_a_zip_of_many_large_entries_is_refused_by_its_total_before_inflating():
    from zoidberg.data.archives import MAX_ARCHIVE_BYTES, read_zip

    # Eleven honest entries of 50 MiB: each within the per-file limit, 550 MiB in all.
    size = 50 << 20
    archive = lying_zip({f"zero{index}.png": (size, size) for index in range(11)})
    assert 11 * size > MAX_ARCHIVE_BYTES and len(archive) < 1 << 20
    with pytest.raises(ValueError, match="refused as a possible zip bomb"):
        read_zip(archive)


def test_an_uploaded_zip_is_unpacked_once_not_on_every_rerun(demo_dir, monkeypatch):
    import io
    import zipfile
    from types import SimpleNamespace

    import streamlit as st

    from zoidberg.ui import predict_inputs

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("NORMAL/film.jpeg", next(demo_dir.glob("test/NORMAL/*.jpeg")).read_bytes())
    upload = SimpleNamespace(name="batch.zip", file_id="upload-1", getvalue=buffer.getvalue)
    calls = []
    real = predict_inputs.archive_inputs
    monkeypatch.setattr(predict_inputs, "archive_inputs", lambda name, data: calls.append(name) or real(name, data))
    monkeypatch.setattr(st, "session_state", {})
    first = predict_inputs.uploads_to_inputs([upload])
    again = predict_inputs.uploads_to_inputs([upload])
    assert [item.name for item in first] == [item.name for item in again] == ["batch.zip/NORMAL/film.jpeg"]
    assert calls == ["batch.zip"], "the archive was inflated again on a rerun"
    predict_inputs.uploads_to_inputs([])
    assert st.session_state[predict_inputs.UNPACKED_ARCHIVES_KEY] == {}, "a removed upload's files were kept"


def test_the_archives_one_session_holds_are_capped_together(demo_dir, monkeypatch):
    from types import SimpleNamespace

    import streamlit as st

    from zoidberg.ui import predict_inputs

    # Three archives of 200 MiB each (zero-filled, a few hundred kB compressed): each within
    # the per-archive cap, 600 MiB together.
    monkeypatch.setattr(st, "session_state", {})
    size = 20 << 20
    uploads = [SimpleNamespace(name=f"batch{index}.zip", file_id=f"upload-{index}", getvalue=lambda: archive)
               for index, archive in enumerate([lying_zip({f"zero{entry}.png": (size, size) for entry in range(10)})] * 3)]
    inputs = predict_inputs.uploads_to_inputs(uploads)
    held = sum(len(item.data) for item in inputs)
    assert held <= predict_inputs.SESSION_ARCHIVE_BYTES and held == 2 * 10 * size
    refused = [item for item in inputs if item.name == "batch2.zip"]
    assert len(refused) == 1 and "this session's other archives hold 400 MB" in refused[0].reason and "Remove an archive" in refused[0].reason
    # Removing one makes room for the third.
    inputs = predict_inputs.uploads_to_inputs(uploads[1:])
    assert sum(len(item.data) for item in inputs) == 2 * 10 * size and not any(item.reason for item in inputs if item.name.endswith(".zip"))


def test_two_resumes_of_one_run_at_once_let_only_one_through(runs_dir, monkeypatch):
    import threading
    import time

    from zoidberg.runs import progress as events
    from zoidberg.runs.store import Run
    from zoidberg.runs.worker import reopen

    store = RunStore(runs_dir)
    run = store.create_run("cv", {"data": {}})
    run.set_status("failed", error="disk full")
    real_clear_stop = Run.clear_stop

    def slow_clear_stop(self):
        # Widens the window between the state check and the state change, as a busy machine does.
        time.sleep(0.3)
        real_clear_stop(self)

    monkeypatch.setattr(Run, "clear_stop", slow_clear_stop)
    barrier, outcomes = threading.Barrier(2), []

    def resume():
        barrier.wait()
        try:
            reopen(store.get(run.id))
            outcomes.append("resumed")
        except ValueError as error:
            outcomes.append(str(error))

    threads = [threading.Thread(target=resume) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes)[-1] == "resumed" and "is queued; only interrupted" in sorted(outcomes)[0], outcomes
    assert [event["type"] for event in run.read_events()[0]].count(events.RESUMED) == 1


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_a_damaged_config_is_named_by_predict_and_evaluate(private_baseline, demo_dir, command, capsys):
    from zoidberg.cli.main import main
    from zoidberg.runs.store import CONFIG_FILE

    run = private_baseline
    (run.path / CONFIG_FILE).write_text('{"data": {"image_si')
    target = [str(next(demo_dir.glob("test/NORMAL/*.jpeg")))] if command == "predict" else ["--data", str(demo_dir / "test")]
    args = ["--runs-dir", str(run.path.parent), command, "--run", run.id, *target]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{run.path / CONFIG_FILE} is damaged" in err and "Traceback" not in err and "'data'" not in err


def test_a_truncated_fold_model_is_named_as_damaged_not_missing(private_baseline, capsys):
    from zoidberg.cli.main import main

    run = private_baseline
    model = run.model_path(1)
    model.write_bytes(model.read_bytes()[:2000])
    assert main(["--runs-dir", str(run.path.parent), "export", "--run", run.id, "--format", "keras"]) == 2
    err = capsys.readouterr().err
    assert f"fold 1: {model} is damaged (2,000 bytes" in err and "File not found" not in err


def test_a_ray_address_where_nothing_listens_fails_at_once_in_one_sentence(demo_dir, runs_dir, capsys, monkeypatch):
    pytest.importorskip("ray")
    import ray

    from zoidberg.cli.main import main

    def hang(*args, **kwargs):
        raise AssertionError("ray.init was called: it retries for minutes when nothing listens")

    monkeypatch.setattr(ray, "init", hang)
    code = main(["cv", "--data", str(demo_dir), "--image-size", "32", "--epochs", "1", "--folds", "2",
                 "--engine", "ray", "--ray-address", "127.0.0.1:1", "--runs-dir", str(runs_dir)])
    err = capsys.readouterr().err
    assert code != 0 and "Could not reach the Ray cluster at 127.0.0.1:1 (Connection refused)" in err and "Traceback" not in err
    (run,) = RunStore(runs_dir).list_runs()
    assert run.state == "failed", "the run was left running"


def test_the_data_page_refuses_a_folder_whose_link_leads_outside_the_roots(demo_dir, tmp_path, monkeypatch):
    import shutil

    from apptest_helpers import assert_no_exception, open_app, texts

    from zoidberg.data.roots import ROOTS_ENV, check_folder_allowed

    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    shutil.copytree(demo_dir / "train" / "NORMAL", outside / "NORMAL")
    data = allowed / "site"
    shutil.copytree(demo_dir / "train" / "PNEUMONIA", data / "PNEUMONIA")
    (data / "NORMAL").symlink_to(outside / "NORMAL", target_is_directory=True)
    monkeypatch.setenv(ROOTS_ENV, str(allowed))
    with pytest.raises(ValueError, match=rf"{data / 'NORMAL'} is a link to {outside / 'NORMAL'}, outside the folders"):
        check_folder_allowed(data)
    # A link that stays inside the roots is fine, and so is a loop back up the tree.
    (data / "NORMAL").unlink()
    shutil.copytree(outside / "NORMAL", allowed / "normal-films")
    (data / "NORMAL").symlink_to(allowed / "normal-films", target_is_directory=True)
    (data / "PNEUMONIA" / "loop").symlink_to(data, target_is_directory=True)
    assert check_folder_allowed(data) == data.resolve()
    (data / "NORMAL").unlink()
    (data / "NORMAL").symlink_to(outside / "NORMAL", target_is_directory=True)
    app = open_app(data)
    assert_no_exception(app)
    shown = texts(app.error).replace("\\", "")
    assert "is a link to" in shown and ROOTS_ENV in shown and "outside the folders this server may read" in shown


def test_resume_trains_again_a_finished_fold_whose_model_is_damaged(private_baseline, capsys):
    from zoidberg.runs.worker import reopen
    from zoidberg.training.cv import run_cross_validation
    from zoidberg.training.fold_check import fold_problem

    run = private_baseline
    model = run.model_path(1)
    model.write_bytes(model.read_bytes()[:2000])
    assert "is damaged" in fold_problem(run, 1) and fold_problem(run, 2) is None
    run.set_status("failed", error="the disk filled during test scoring")
    reopen(run)
    said = []
    run_cross_validation(run, report=said.append)
    assert run.state == "completed", run.status()
    assert f"Fold 1/2: {model} is damaged (cut short or changed); it is trained again." in said
    assert "Fold 2/2: already done, kept." in said
    assert fold_problem(run, 1) is None


@pytest.mark.parametrize("value", ["0", "-1"])
def test_a_max_runs_below_one_is_refused(runs_dir, monkeypatch, value):
    from zoidberg.launch.jobs import start_run

    monkeypatch.setenv("ZOIDBERG_MAX_RUNS", value)
    with pytest.raises(ValueError, match=f"ZOIDBERG_MAX_RUNS must be at least 1.*not {value}"):
        start_run("cv", {"data": {}}, runs_dir=runs_dir)
    assert not list(RunStore(runs_dir).list_runs())


def test_a_negative_seed_is_refused_before_a_run_exists(demo_dir, runs_dir, capsys):
    from zoidberg.cli.main import main

    assert main(["cv", "--data", str(demo_dir), "--seed", "-1", "--folds", "2", "--epochs", "1", "--image-size", "32", "--runs-dir", str(runs_dir)]) == 2
    assert "seed must be a whole number from 0 to 4294967295, not -1" in capsys.readouterr().err
    assert not list(RunStore(runs_dir).list_runs())


def test_the_resume_hint_names_the_runs_folder_when_it_is_not_the_default(tmp_path, monkeypatch, capsys):
    from zoidberg.cli.main import main

    monkeypatch.setenv("ZOIDBERG_RUNS_DIR", str(tmp_path / "default"))
    elsewhere = RunStore(tmp_path / "elsewhere runs")
    run = elsewhere.create_run("cv", {"data": {}}, name="killed")
    run.set_status("failed", error="a fold child died")
    hint = run.resume_command()
    assert hint == f"python -m zoidberg resume {run.id} --runs-dir '{tmp_path / 'elsewhere runs'}'"
    # The printed command, pasted as it is, finds the run (it is refused for its empty config, not as unknown).
    import shlex

    main(["resume", run.id])
    assert "No run" in capsys.readouterr().err, "the hint without --runs-dir would not find the run"
    main(shlex.split(hint)[3:])
    assert "No run" not in capsys.readouterr().err
    home = RunStore(tmp_path / "default").create_run("cv", {"data": {}}, name="here")
    assert home.resume_command() == f"python -m zoidberg resume {home.id}"


def test_resume_of_a_run_with_a_damaged_config_names_the_file_and_changes_nothing(demo_dir, runs_dir, capsys):
    from zoidberg.cli.main import main

    run = RunStore(runs_dir).create_run("cv", {"data": {"label_mode": "binary"}}, name="damaged")
    run.set_status("failed", error="it failed")
    assert main(["resume", run.id, "--runs-dir", str(runs_dir)]) == 2
    err = capsys.readouterr().err
    assert f"{run.path / 'config.json'} is damaged" in err and "TypeError" in err and "Traceback" not in err
    assert run.state == "failed", "a refused resume must leave the run as it was"


def test_report_of_a_run_with_a_damaged_config_names_the_file(runs_dir, tmp_path, capsys):
    from zoidberg.cli.main import main

    run = RunStore(runs_dir).create_run("cv", {"data": {"label_mode": "binary"}}, name="damaged")
    run.write_json("summary.json", {"mean_std": {"accuracy": {"mean": 0.9, "std": 0.01}}, "class_names": ["normal", "pneumonia"], "folds": []})
    run.set_status("completed")
    out = tmp_path / "report.html"
    assert main(["report", "--run", run.id, "--runs-dir", str(runs_dir), "--out", str(out)]) == 2
    assert f"{run.path / 'config.json'} is damaged" in capsys.readouterr().err
    assert not out.exists()


def test_a_model_with_a_lambda_layer_is_refused_by_name(runs_dir):
    import keras

    from zoidberg.inference.loading import load_fold_model

    run = RunStore(runs_dir).create_run("cv", {"data": {}}, name="lambda")
    inputs = keras.Input((4,))
    outputs = keras.layers.Lambda(lambda values: values * 2, name="times_two")(inputs)
    run.model_path(1).parent.mkdir(parents=True, exist_ok=True)
    keras.Model(inputs, outputs).save(run.model_path(1))
    with pytest.raises(ValueError, match="Lambda layer\\(s\\) times_two, which run arbitrary Python code"):
        load_fold_model(run, 1)


def test_resume_trains_again_a_fold_whose_out_of_fold_file_was_deleted(private_baseline):
    from zoidberg.runs.store import OOF_FILE
    from zoidberg.runs.worker import reopen
    from zoidberg.training.cv import run_cross_validation
    from zoidberg.training.fold_check import fold_problem

    run = private_baseline
    oof = run.fold_path(2, OOF_FILE)
    oof.unlink()
    assert fold_problem(run, 2) == f"{oof} is missing"
    run.set_status("failed", error="calibration failed")
    reopen(run)
    said = []
    run_cross_validation(run, report=said.append)
    assert run.state == "completed", run.status()
    assert f"Fold 2/2: {oof} is missing; it is trained again." in said and oof.is_file()


def test_resume_never_keeps_a_fold_whose_model_holds_a_lambda_layer(private_baseline):
    import keras

    from zoidberg.training.fold_check import fold_problem

    run = private_baseline
    inputs = keras.Input((4,))
    keras.Model(inputs, keras.layers.Lambda(lambda values: values * 2, name="times_two")(inputs)).save(run.model_path(1))
    assert fold_problem(run, 1) == f"{run.model_path(1)} holds Lambda layer(s) times_two, which safe loading refuses"


def test_a_link_loop_inside_an_allowed_folder_is_not_an_error(tmp_path, monkeypatch):
    import os

    from zoidberg.data.roots import check_folder_allowed

    folder = tmp_path / "data" / "NORMAL"
    folder.mkdir(parents=True)
    os.symlink(folder / "a.jpeg", folder / "b.jpeg")
    os.symlink(folder / "b.jpeg", folder / "a.jpeg")
    monkeypatch.setenv("ZOIDBERG_DATA_ROOTS", str(tmp_path))
    assert check_folder_allowed(tmp_path / "data") == (tmp_path / "data").resolve()
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    os.symlink(outside, tmp_path / "data" / "PNEUMONIA")
    with pytest.raises(ValueError, match="outside the folders this server may read"):
        check_folder_allowed(tmp_path / "data")


def test_cv_trains_on_a_file_whose_name_is_not_utf8(demo_dir, runs_dir, tmp_path):
    import os
    import shutil

    from zoidberg.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from zoidberg.evaluation.out_of_fold import read_out_of_fold
    from zoidberg.training.cv import run_cross_validation
    from zoidberg.training.run_setup import config_payload

    data = tmp_path / "data"
    shutil.copytree(demo_dir / "train", data)
    source = sorted((data / "NORMAL").iterdir())[0]
    odd = os.path.join(os.fsencode(data / "NORMAL"), b"IM-9999-\xff\xfe.jpeg")
    os.rename(source, odd)
    config = RunConfig(data=DataConfig(str(data), "binary", 32),
                       model=ModelConfig(architecture="cnn", conv_blocks=1, base_filters=4, dense_units=8),
                       train=TrainConfig(epochs=1, batch_size=16, early_stopping_patience=0), n_splits=2)
    run = RunStore(runs_dir).create_run("cv", config_payload(config), name="odd name")
    run_cross_validation(run)
    assert run.state == "completed", run.status().get("error")
    # The path read back from folds.csv is the file's own name, byte for byte.
    paths = read_out_of_fold(run).paths
    assert any(os.fsencode(path).endswith(b"IM-9999-\xff\xfe.jpeg") for path in paths)
