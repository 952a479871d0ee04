"""Dataset discovery, label and patient parsing, skipping bad files, and the decode cache."""

import io
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zoidberg.data.dataset import DatasetError, load_dataset, parse_label, parse_patient_id, scan_dataset


def write_image(path: Path, value: int = 128, size: int = 40) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    pixels = np.clip(rng.normal(value, 20, (size, size)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)


def make_flat(root: Path, normal_folder="NORMAL", pneumonia_folder="PNEUMONIA") -> Path:
    for index in range(4):
        write_image(root / normal_folder / f"IM-{index:04d}-0001.jpeg", 60)
        write_image(root / pneumonia_folder / f"person{index}_bacteria_{index}.jpeg", 180)
        write_image(root / pneumonia_folder / f"person{index + 10}_virus_{index}.jpeg", 200)
    return root


@pytest.mark.parametrize(
    "filename, patient",
    [
        ("person1000_bacteria_2931.jpeg", "person1000"),
        ("person1000_virus_1681.jpeg", "person1000"),
        ("IM-0115-0001.jpeg", "IM-0115"),
        ("NORMAL2-IM-1427-0001.jpeg", "NORMAL2-IM-1427"),
        ("some scan.png", "some scan"),
        ("train/PNEUMONIA/person7_virus_12.jpeg", "person7"),
    ],
)
def test_parse_patient_id(filename, patient):
    assert parse_patient_id(filename) == patient


def test_parse_label_modes():
    assert parse_label("NORMAL", "IM-0001-0001.jpeg", "three-class") == "normal"
    assert parse_label("PNEUMONIA", "person1_bacteria_1.jpeg", "binary") == "pneumonia"
    assert parse_label("PNEUMONIA", "person1_bacteria_1.jpeg", "three-class") == "bacterial"
    assert parse_label("PNEUMONIA", "person1_virus_1.jpeg", "three-class") == "viral"
    assert parse_label("PNEUMONIA", "scan.jpeg", "three-class") is None


def test_flat_layout_with_lowercase_class_folders(tmp_path):
    root = make_flat(tmp_path / "flat", "normal", "Pneumonia")
    dataset = load_dataset(root, image_size=32)
    assert len(dataset) == 12
    assert set(dataset.splits) == {"all"}
    assert dataset.images.dtype == np.uint8 and dataset.images.shape == (12, 32, 32)
    assert dataset.class_counts() == {"normal": 4, "pneumonia": 8}


def test_kaggle_layout_splits_and_three_class(demo_dir):
    dataset = load_dataset(demo_dir, label_mode="three-class", image_size=32)
    assert set(dataset.splits) >= {"train", "test"}
    assert dataset.class_names == ("normal", "bacterial", "viral")
    assert set(np.unique(dataset.labels)) == {0, 1, 2}
    # The test split is held out of the pooled training indices.
    assert not set(dataset.training_indices()) & set(dataset.test_indices())
    assert dataset.synthetic


def test_unknown_layout_shows_expected_layouts(tmp_path):
    (tmp_path / "cats").mkdir()
    with pytest.raises(DatasetError, match="Kaggle"):
        load_dataset(tmp_path)


def test_missing_folder(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(tmp_path / "nope")


def test_no_images_and_one_class(tmp_path):
    (tmp_path / "empty" / "NORMAL").mkdir(parents=True)
    (tmp_path / "empty" / "PNEUMONIA").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no image files"):
        load_dataset(tmp_path / "empty")
    write_image(tmp_path / "one" / "NORMAL" / "IM-0001-0001.jpeg")
    with pytest.raises(DatasetError, match="one class only") as error:
        load_dataset(tmp_path / "one")
    assert "Ignored folder" not in str(error.value)
    write_image(tmp_path / "one" / "COVID" / "person1_virus_1.jpeg")
    with pytest.raises(DatasetError, match=r"one class only \(NORMAL\).*Ignored folder\(s\), not named as a class: COVID/"):
        load_dataset(tmp_path / "one")


def test_three_class_needs_pathogen_names(tmp_path):
    root = tmp_path / "plain"
    for index in range(3):
        write_image(root / "NORMAL" / f"IM-{index:04d}-0001.jpeg")
        write_image(root / "PNEUMONIA" / f"scan{index}.jpeg")
    with pytest.raises(DatasetError, match="binary label mode"):
        load_dataset(root, label_mode="three-class")


def test_bad_files_are_skipped_and_reported(tmp_path):
    root = make_flat(tmp_path / "bad")
    (root / "NORMAL" / "empty.jpeg").write_bytes(b"")
    (root / "NORMAL" / "notes.txt").write_text("radiology notes, not an image")
    good = io.BytesIO()
    Image.fromarray(np.full((64, 64), 90, np.uint8)).save(good, format="JPEG")
    (root / "PNEUMONIA" / "person99_virus_1.jpeg").write_bytes(good.getvalue()[: len(good.getvalue()) // 3])
    (root / "NORMAL" / ".DS_Store").write_bytes(b"\0\0")
    dataset = load_dataset(root, image_size=32)
    assert len(dataset) == 12
    reasons = {item.path: item.reason for item in dataset.skipped}
    assert set(reasons) == {"NORMAL/empty.jpeg", "NORMAL/notes.txt", "PNEUMONIA/person99_virus_1.jpeg"}
    assert all(reason and "\n" not in reason for reason in reasons.values())
    assert "empty" in reasons["NORMAL/empty.jpeg"].lower()


def test_cache_hit_is_fast_and_identical(demo_dir, tmp_path):
    first_start = time.perf_counter()
    first = load_dataset(demo_dir, image_size=48, cache_dir=tmp_path)
    first_seconds = time.perf_counter() - first_start
    second_start = time.perf_counter()
    second = load_dataset(demo_dir, image_size=48, cache_dir=tmp_path)
    second_seconds = time.perf_counter() - second_start
    assert not first.from_cache and second.from_cache
    np.testing.assert_array_equal(first.images, second.images)
    assert first.paths == second.paths
    # Not a timing assertion on a noisy machine: only a sanity check of the order.
    assert second_seconds < first_seconds * 2


def test_cache_key_changes_with_size_and_files(demo_dir, tmp_path):
    load_dataset(demo_dir, image_size=32, cache_dir=tmp_path)
    assert not load_dataset(demo_dir, image_size=40, cache_dir=tmp_path).from_cache
    assert load_dataset(demo_dir, image_size=32, cache_dir=tmp_path).from_cache


def test_corrupted_cache_is_rebuilt(demo_dir, tmp_path):
    reference = load_dataset(demo_dir, image_size=32, cache_dir=tmp_path)
    cache_file = next(tmp_path.glob("images-*"))
    data = bytearray(cache_file.read_bytes())
    data[-100] ^= 0xFF
    cache_file.write_bytes(bytes(data))
    rebuilt = load_dataset(demo_dir, image_size=32, cache_dir=tmp_path)
    assert not rebuilt.from_cache
    np.testing.assert_array_equal(rebuilt.images, reference.images)
    cache_file.write_bytes(b"garbage")
    assert not load_dataset(demo_dir, image_size=32, cache_dir=tmp_path).from_cache


def test_scan_ignores_hidden_files(tmp_path):
    root = make_flat(tmp_path / "d")
    (root / "NORMAL" / ".hidden.jpeg").write_bytes(b"x")
    assert all(not Path(record.path).name.startswith(".") for record in scan_dataset(root))


def _corpus_dataset(root: Path, cases: dict) -> dict[str, str]:
    """Writes a flat dataset of good images plus every corpus case under PNEUMONIA/."""
    make_flat(root)
    relative = {}
    for index, (name, case) in enumerate(cases.items()):
        # Each case gets its own prefix so that repeated corpus file names stay distinct.
        filename = f"case{index:02d}-{case.filename}"
        (root / "PNEUMONIA" / filename).write_bytes(case.make())
        relative[name] = f"PNEUMONIA/{filename}"
    return relative


def test_loader_skips_the_whole_bad_corpus_with_its_reasons(tmp_path):
    from imagegen import BAD_CASES

    relative = _corpus_dataset(tmp_path / "bad-corpus", BAD_CASES)
    dataset = load_dataset(tmp_path / "bad-corpus", image_size=32)
    reasons = {item.path: item.reason for item in dataset.skipped}
    assert len(dataset) == 12
    for name, case in BAD_CASES.items():
        assert case.reason in reasons[relative[name]], (name, reasons.get(relative[name]))
        assert "\n" not in reasons[relative[name]]


def test_loader_accepts_the_odd_but_valid_corpus(tmp_path):
    from imagegen import ODD_VALID_CASES

    relative = _corpus_dataset(tmp_path / "odd-corpus", ODD_VALID_CASES)
    dataset = load_dataset(tmp_path / "odd-corpus", image_size=32)
    assert dataset.skipped == []
    assert set(relative.values()) <= set(dataset.paths)
    assert len(dataset) == 12 + len(ODD_VALID_CASES)


def test_unknown_folders_are_reported_not_silently_dropped(tmp_path):
    root = make_flat(tmp_path / "flat")
    write_image(root / "COVID" / "IM-9000-0001.jpeg", 90)
    dataset = load_dataset(root, image_size=32)
    assert len(dataset) == 12
    assert ("COVID/", "folder ignored: class folders must be named NORMAL or PNEUMONIA") in [
        (skipped.path, skipped.reason) for skipped in dataset.skipped
    ]
    kaggle = tmp_path / "kaggle"
    make_flat(kaggle / "train")
    (kaggle / "__MACOSX").mkdir()
    (kaggle / "train" / "Covid-19").mkdir()
    reasons = {skipped.path: skipped.reason for skipped in load_dataset(kaggle, image_size=32).skipped}
    assert reasons == {
        "__MACOSX/": "folder ignored: not a split folder (train, val or test)",
        "train/Covid-19/": "folder ignored: class folders must be named NORMAL or PNEUMONIA",
    }


def test_file_names_with_spaces_unicode_and_markup_load(tmp_path):
    root = make_flat(tmp_path / "flat")
    name = "röntgen 肺 #1 [copy] *v2* $x$.jpeg"
    write_image(root / "PNEUMONIA" / name, 150)
    dataset = load_dataset(root, image_size=32)
    assert f"PNEUMONIA/{name}" in dataset.paths and not dataset.skipped
    assert load_dataset(root, image_size=32).from_cache


def test_a_file_name_that_is_not_utf8_loads_and_caches(tmp_path):
    import os

    root = make_flat(tmp_path / "flat")
    buffer = io.BytesIO()
    Image.fromarray(np.full((40, 40), 77, dtype=np.uint8)).save(buffer, format="JPEG")
    with open(os.fsencode(root / "NORMAL") + b"/IM-0777-\xff\xfe.jpeg", "wb") as handle:
        handle.write(buffer.getvalue())
    first = load_dataset(root, image_size=32)
    assert len(first) == 13 and not first.skipped
    assert load_dataset(root, image_size=32).from_cache


def test_a_set_larger_than_the_stream_limit_is_decoded_block_by_block_into_the_same_cache(demo_dir, tmp_path, monkeypatch):
    from zoidberg.data import decoding_cache

    in_memory = load_dataset(demo_dir, image_size=32, cache_dir=tmp_path / "a")
    # Every set counts as large, and blocks are small, so the demo set spans several.
    monkeypatch.setenv("ZOIDBERG_STREAM_BYTES", "1")
    monkeypatch.setattr(decoding_cache, "STREAM_BLOCK_IMAGES", 7)
    streamed = load_dataset(demo_dir, image_size=32, cache_dir=tmp_path / "b")
    assert not streamed.from_cache
    np.testing.assert_array_equal(streamed.images, in_memory.images)
    assert streamed.paths == in_memory.paths and [item.path for item in streamed.skipped] == [item.path for item in in_memory.skipped]
    again = load_dataset(demo_dir, image_size=32, cache_dir=tmp_path / "b")
    assert again.from_cache
    np.testing.assert_array_equal(again.images, in_memory.images)
    (cache_a,) = (tmp_path / "a").glob("images-*")
    (cache_b,) = (tmp_path / "b").glob("images-*")
    assert cache_a.read_bytes() == cache_b.read_bytes()
