"""Tests of the synthetic demo data set: determinism, Kaggle layout and naming, patient splits."""

from __future__ import annotations

import re
import threading
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zoidberg.data import demo
from zoidberg.data.imaging import load_image

NAME_PATTERNS = {
    "NORMAL": re.compile(r"^(?P<patient>(NORMAL2-)?IM-\d{4})-\d{4}\.jpeg$"),
    "PNEUMONIA": re.compile(r"^(?P<patient>person\d+)_(?P<pathogen>bacteria|virus)_\d+\.jpeg$"),
}

SMALL = {"patients_per_class": 6, "images_per_patient": (1, 3), "image_size": 48}


@pytest.fixture(scope="module")
def default_dataset(tmp_path_factory) -> Path:
    """The demo data set with default arguments, generated once for this module."""
    return demo.make_demo_dataset(tmp_path_factory.mktemp("demo") / "data")


def _files(root: Path) -> list[Path]:
    """Returns every image of a data set, sorted by relative path."""
    return sorted(root.glob("*/*/*.jpeg"))


def _patient(path: Path) -> str:
    """Returns the patient key encoded in an image's file name."""
    return NAME_PATTERNS[path.parent.name].match(path.name).group("patient")


def _file_bytes(root: Path) -> dict[str, bytes]:
    """Returns {relative path: content} of every file under root."""
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def test_same_arguments_give_byte_identical_files(default_dataset, tmp_path):
    again = demo.make_demo_dataset(tmp_path / "again")
    assert _file_bytes(again) == _file_bytes(default_dataset)


def test_other_seed_gives_other_images(tmp_path):
    first = _file_bytes(demo.make_demo_dataset(tmp_path / "a", random_state=1, **SMALL))
    second = _file_bytes(demo.make_demo_dataset(tmp_path / "b", random_state=2, **SMALL))
    assert first != second


def test_layout_and_real_naming_scheme(default_dataset):
    files = _files(default_dataset)
    assert 150 <= len(files) <= 250
    assert {path.relative_to(default_dataset).parts[:2] for path in files} == {
        (split, class_dir) for split in demo.SPLITS for class_dir in demo.CLASS_DIRS
    }
    for path in files:
        assert NAME_PATTERNS[path.parent.name].match(path.name), path.name
    names = [path.name for path in files]
    assert any(name.startswith("NORMAL2-IM-") for name in names)
    assert any(name.startswith("IM-") for name in names)
    assert len(set(names)) == len(names)


def test_images_are_grayscale_jpegs_of_the_requested_size(default_dataset):
    for path in _files(default_dataset)[::10]:
        with Image.open(path) as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "L", (128, 128))


def test_each_patient_is_in_one_split_with_several_images_for_some(default_dataset):
    splits_of = defaultdict(set)
    images_of = Counter()
    for path in _files(default_dataset):
        patient = _patient(path)
        splits_of[patient].add(path.relative_to(default_dataset).parts[0])
        images_of[patient] += 1
    assert all(len(splits) == 1 for splits in splits_of.values())
    assert len(splits_of) == 3 * 24
    assert max(images_of.values()) >= 3 and min(images_of.values()) >= 1
    assert sum(count > 1 for count in images_of.values()) > len(images_of) / 2


def test_split_sizes_and_pathogen_balance(default_dataset):
    patients = defaultdict(set)
    pathogen_of = {}
    for path in _files(default_dataset):
        patients[path.relative_to(default_dataset).parts[0]].add(_patient(path))
        match = NAME_PATTERNS["PNEUMONIA"].match(path.name)
        if match:
            pathogen_of.setdefault(match.group("patient"), set()).add(match.group("pathogen"))
    total = sum(len(group) for group in patients.values())
    assert len(patients["train"]) > total * 0.7
    assert 3 <= len(patients["val"]) <= 6
    assert 0.15 <= len(patients["test"]) / total <= 0.20
    assert all(len(pathogens) == 1 for pathogens in pathogen_of.values())
    per_pathogen = Counter(next(iter(pathogens)) for pathogens in pathogen_of.values())
    assert per_pathogen["bacteria"] == per_pathogen["virus"] == 24


def test_marker_file_says_synthetic(default_dataset, tmp_path):
    marker = default_dataset / demo.MARKER_NAME
    assert "NOT real chest X-rays" in marker.read_text(encoding="utf-8")
    assert demo.is_synthetic_dataset(default_dataset)
    assert not demo.is_synthetic_dataset(tmp_path)


def _ridge_test_auc(files: list[Path], positive, image_size: int = 32) -> float:
    """Fits ridge regression on train thumbnails and returns the test split's AUC.

    A linear model is a cheap stand-in for the small CNN, without importing Keras.
    """
    features = np.stack([load_image(path, image_size).ravel() / 255.0 for path in files])
    labels = np.array([positive(path) for path in files], dtype=float)
    is_test = np.array([path.parts[-3] == "test" for path in files])
    mean = features[~is_test].mean(axis=0)
    centered = features[~is_test] - mean
    gram = centered.T @ centered + np.eye(features.shape[1])
    weights = np.linalg.solve(gram, centered.T @ (labels[~is_test] - labels[~is_test].mean()))
    scores = (features[is_test] - mean) @ weights
    positives, negatives = scores[labels[is_test] == 1], scores[labels[is_test] == 0]
    wins = (positives[:, None] > negatives[None, :]) + 0.5 * (positives[:, None] == negatives[None, :])
    return float(wins.mean())


def test_classes_differ_learnably(default_dataset):
    files = _files(default_dataset)
    assert _ridge_test_auc(files, lambda path: path.parent.name == "PNEUMONIA") > 0.95
    pneumonia = [path for path in files if path.parent.name == "PNEUMONIA"]
    assert _ridge_test_auc(pneumonia, lambda path: "_virus_" in path.name) > 0.8


def test_render_demo_image_is_deterministic():
    first = demo.render_demo_image("virus", 64, random_state=5)
    assert first.shape == (64, 64) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, demo.render_demo_image("virus", 64, random_state=5))
    with pytest.raises(ValueError):
        demo.render_demo_image("fungus")


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError):
        demo.make_demo_dataset(tmp_path / "a", patients_per_class=2)
    with pytest.raises(ValueError):
        demo.make_demo_dataset(tmp_path / "b", images_per_patient=(3, 1))
    with pytest.raises(ValueError):
        demo.make_demo_dataset(tmp_path / "c", image_size=8)


def test_refuses_to_write_into_a_folder_of_other_files(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        demo.make_demo_dataset(tmp_path, **SMALL)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_regenerating_replaces_an_earlier_synthetic_set(tmp_path):
    demo.make_demo_dataset(tmp_path, random_state=1, **SMALL)
    demo.make_demo_dataset(tmp_path, random_state=2, **SMALL)
    assert _file_bytes(tmp_path) == _file_bytes(demo.make_demo_dataset(tmp_path / "fresh", random_state=2, **SMALL))


def test_default_demo_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("ZOIDBERG_DEMO_DIR", str(tmp_path / "here"))
    assert demo.default_demo_dir() == tmp_path / "here"
    monkeypatch.delenv("ZOIDBERG_DEMO_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert demo.default_demo_dir() == tmp_path / ".cache" / "zoidberg" / "demo-data"


def test_ensure_generates_the_default_data_set(tmp_path, default_dataset):
    root = demo.ensure_demo_dataset(tmp_path / "cache" / "demo-data")
    assert _file_bytes(root) == _file_bytes(default_dataset)
    assert sorted(path.name for path in root.parent.iterdir()) == ["demo-data"]


def test_ensure_keeps_a_complete_copy_and_repairs_an_incomplete_one(monkeypatch, tmp_path):
    monkeypatch.setattr(demo, "make_demo_dataset", _fake_generation)
    root = demo.ensure_demo_dataset(tmp_path / "demo-data")
    marker_time = (root / demo.MARKER_NAME).stat().st_mtime_ns
    assert demo.ensure_demo_dataset(root) == root
    assert (root / demo.MARKER_NAME).stat().st_mtime_ns == marker_time
    _files(root)[0].unlink()
    demo.ensure_demo_dataset(root)
    assert len(_files(root)) == 1 and demo._is_complete(root)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["demo-data"]


def test_ensure_never_replaces_a_folder_of_other_files(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mine.jpeg").write_bytes(b"user data")
    with pytest.raises(FileExistsError):
        demo.ensure_demo_dataset(tmp_path / "data")
    assert (tmp_path / "data" / "mine.jpeg").read_bytes() == b"user data"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["data"]


def test_ensure_uses_the_default_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("ZOIDBERG_DEMO_DIR", str(tmp_path / "env-demo"))
    monkeypatch.setattr(demo, "make_demo_dataset", _fake_generation)
    assert demo.ensure_demo_dataset() == tmp_path / "env-demo"
    assert demo.is_synthetic_dataset(tmp_path / "env-demo")


def _fake_generation(out_dir: Path) -> Path:
    """Writes a one-image stand-in of the demo data set, for tests of the folder logic."""
    (out_dir / "train" / "NORMAL").mkdir(parents=True)
    Image.new("L", (8, 8)).save(out_dir / "train" / "NORMAL" / "IM-0001-0001.jpeg")
    demo._write_marker(out_dir, 1, {})
    return out_dir


def test_concurrent_ensure_calls_leave_one_complete_copy(monkeypatch, tmp_path):
    monkeypatch.setattr(demo, "make_demo_dataset", _fake_generation)
    root = tmp_path / "demo-data"
    start = threading.Barrier(4)
    results, errors = [], []

    def ensure() -> None:
        start.wait()
        try:
            results.append(demo.ensure_demo_dataset(root))
        except Exception as error:  # Collected so that the assertion below shows it.
            errors.append(error)

    threads = [threading.Thread(target=ensure) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and results == [root] * 4
    assert demo._is_complete(root)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["demo-data"]
