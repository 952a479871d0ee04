"""Batch inputs: folders walked by content, zip uploads without zip slip or bombs, and the folders a server may read."""

from __future__ import annotations

import io
import os
import zipfile

import pytest

from zoidberg.data.archives import read_zip, safe_entry_name
from zoidberg.data.files import collect_images, label_from_path
from zoidberg.data.roots import ROOTS_ENV, check_allowed, is_allowed


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_folders_are_walked_and_files_told_apart_by_content(demo_dir, tmp_path):
    folder = tmp_path / "in"
    (folder / "NORMAL").mkdir(parents=True)
    image = next(demo_dir.glob("test/NORMAL/*.jpeg"))
    (folder / "NORMAL" / "scan.bin").write_bytes(image.read_bytes())  # An image whatever its extension.
    (folder / "NORMAL" / "notes.jpeg").write_text("not an image")
    files, skipped = collect_images([folder, tmp_path / "missing"])
    assert files == [folder / "NORMAL" / "scan.bin"]
    reasons = {item.path: item.reason for item in skipped}
    assert reasons[str(folder / "NORMAL" / "notes.jpeg")] == "not an image (text)"
    assert reasons[str(tmp_path / "missing")] == "no such file or folder"
    assert label_from_path(folder / "NORMAL" / "scan.bin") == "normal"
    assert label_from_path("x/PNEUMONIA/person1_virus_2.jpeg", "three-class") == "viral"
    assert label_from_path("elsewhere/scan.png") is None


def test_a_zip_is_read_in_memory_and_entries_that_leave_it_are_refused(demo_dir):
    image = next(demo_dir.glob("test/NORMAL/*.jpeg")).read_bytes()
    data = zip_bytes({"batch/NORMAL/a.jpeg": image, "../../etc/evil.jpeg": image, "/abs.jpeg": image, "__MACOSX/._a.jpeg": b"x", ".DS_Store": b"x"})
    entries = {entry.name: entry for entry in read_zip(data)}
    assert entries["batch/NORMAL/a.jpeg"].data == image and entries["batch/NORMAL/a.jpeg"].reason is None
    assert "leaves the archive" in entries["../../etc/evil.jpeg"].reason and "leaves the archive" in entries["/abs.jpeg"].reason
    assert not any("MACOSX" in name or "DS_Store" in name for name in entries)
    assert safe_entry_name("a/../b.png") == "b.png" and safe_entry_name("a/../../b.png") is None


def test_a_zip_bomb_is_refused_by_its_declared_size_before_inflating():
    bomb = zip_bytes({f"zero{index}.png": bytes(2_000_000) for index in range(3)})  # 6 MB of zeros, a few KB zipped.
    assert len(bomb) < 100_000
    with pytest.raises(ValueError, match="zip bomb"):
        read_zip(bomb, max_total_bytes=5_000_000)
    with pytest.raises(ValueError, match="not a readable .zip"):
        read_zip(b"PK\x03\x04 not really")


def test_only_folders_under_the_configured_roots_are_read(tmp_path, monkeypatch):
    allowed, other = tmp_path / "data", tmp_path / "private"
    (allowed / "cases").mkdir(parents=True)
    other.mkdir()
    (allowed / "link").symlink_to(other)
    monkeypatch.delenv(ROOTS_ENV, raising=False)
    assert is_allowed(other)  # Unset: anything readable, as on a laptop.
    monkeypatch.setenv(ROOTS_ENV, os.pathsep.join([str(allowed), str(tmp_path / "also")]))
    assert check_allowed(allowed / "cases") == (allowed / "cases").resolve()
    for refused in (other, allowed / ".." / "private", allowed / "link"):
        with pytest.raises(ValueError, match=ROOTS_ENV):
            check_allowed(refused)


def test_the_predict_page_reads_a_server_folder_and_refuses_one_outside_the_roots(use_runs, demo_dir, monkeypatch, tmp_path):
    from apptest_helpers import open_app

    monkeypatch.setenv(ROOTS_ENV, str(demo_dir))
    app = open_app(page="pages/predict.py")
    app.text_input(key="predict_folder").input(str(demo_dir / "test")).run()
    assert not app.exception, [item.value for item in app.exception]
    table = app.dataframe[0].value
    images = sorted(demo_dir.glob("test/*/*.jpeg"))
    assert len(table) == len(images) and set(table["source"]) == {"server folder"}
    assert set(table["true class"]) <= {"normal", "pneumonia"} and "correct" in table
    app.text_input(key="predict_folder").input(str(tmp_path)).run()
    assert any("outside the folders this server may read" in item.value for item in app.error)


def test_the_error_gallery_shows_the_most_wrong_images_with_grad_cam_on_demand(use_runs, demo_dir):
    from apptest_helpers import open_app

    from zoidberg.evaluation.errors import out_of_fold_images

    run = use_runs.store.get(use_runs.ids["baseline"])
    scored = out_of_fold_images(run)
    wrong = scored.select("all errors")
    assert wrong and all(image.predicted != image.label for image in wrong)
    assert [image.loss for image in wrong] == sorted((image.loss for image in wrong), reverse=True)
    positives = scored.select("false positives")
    assert all(image.label == "normal" and image.predicted == "pneumonia" for image in positives)
    assert scored.select(cell=("pneumonia", "normal")) == scored.select("false negatives")
    from zoidberg.ui.state import SELECTED_RUN_KEY

    app = open_app(page="pages/train.py")
    app.session_state[f"{SELECTED_RUN_KEY}_cv"] = run.id
    app.run()
    app.selectbox(key=f"gallery_kind_{run.id}").set_value("all errors").run()
    toggles = [toggle for toggle in app.toggle if toggle.key and toggle.key.startswith(f"gallery_cam_{run.id}")]
    assert toggles, "the gallery shows no image"
    images_before = len(app.get("imgs"))
    toggles[0].set_value(True).run()
    assert not app.exception, [item.value for item in app.exception]
    assert len(app.get("imgs")) == images_before and not any("unavailable" in item.value for item in app.caption)

