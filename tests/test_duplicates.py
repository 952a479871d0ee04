"""The duplicate audit: exact and near copies found, crossings named, folds kept honest, hold-outs patient-disjoint."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zoidberg.data.dataset import load_dataset
from zoidberg.data.duplicates import (
    apply_duplicate_policy,
    find_duplicates,
    groups_crossing_folds,
    load_or_find_duplicates,
)
from zoidberg.data.folds import make_folds
from zoidberg.data.holdout import carve_holdout


@pytest.fixture
def leaky_data(demo_dir, tmp_path) -> tuple[Path, str, str]:
    """The demo train split plus an exact copy and a re-encoded copy of images, filed under other patients."""
    root = tmp_path / "leaky"
    shutil.copytree(demo_dir / "train", root / "train")
    normals = sorted((root / "train" / "NORMAL").glob("IM-*.jpeg"))
    exact_source, near_source = normals[0], normals[-1]
    exact_copy = root / "train" / "NORMAL" / "IM-9001-0001.jpeg"
    shutil.copy(exact_source, exact_copy)
    buffer = io.BytesIO()
    Image.open(near_source).save(buffer, "JPEG", quality=60)
    near_copy = root / "train" / "NORMAL" / "IM-9002-0001.jpeg"
    near_copy.write_bytes(buffer.getvalue())
    return root, exact_copy.name, near_copy.name


def test_exact_and_near_copies_are_found_and_cross_patients(leaky_data):
    root, exact_name, near_name = leaky_data
    dataset = load_dataset(root, image_size=64)
    report = find_duplicates(dataset)
    (exact,) = report.exact
    assert exact_name in " ".join(exact.paths) and exact.crosses_patients and not exact.crosses_splits
    (near,) = report.near
    assert near_name in " ".join(near.paths) and near.crosses_patients and 0 < near.max_bits <= 16
    assert report.summary()["crossing_patients"] == 2
    # At a distance of 0 bits only the byte-identical copy is left.
    strict = find_duplicates(dataset, near_bits=0)
    assert len(strict.near) == 0 and len(strict.exact) == 1


def test_group_policy_keeps_copies_in_one_fold_and_drop_removes_them(leaky_data):
    root, exact_name, _ = leaky_data
    dataset = load_dataset(root, image_size=64)
    report = load_or_find_duplicates(dataset)
    indices = dataset.training_indices()
    rows, groups, dropped = apply_duplicate_policy(report, dataset.patients, indices, "group")
    assert dropped == [] and len(rows) == len(indices)
    fold_of = make_folds(dataset.labels[rows], groups[rows], 3, 0)
    assert groups_crossing_folds(report, rows, fold_of) == []
    kept, _, dropped = apply_duplicate_policy(report, dataset.patients, indices, "drop")
    assert len(kept) == len(indices) - 2 and len(dropped) == 2
    # The report is cached: a second call reads it back.
    assert load_or_find_duplicates(dataset).summary() == report.summary()


def test_cross_validation_records_the_policy_and_groups_the_copies(leaky_data, runs_dir):
    from zoidberg.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from zoidberg.runs.store import RunStore
    from zoidberg.training.cv import run_cross_validation
    from zoidberg.training.run_setup import config_payload

    root, exact_name, near_name = leaky_data
    config = RunConfig(
        data=DataConfig(str(root), "binary", 32),
        model=ModelConfig(conv_blocks=2, base_filters=4, dense_units=8),
        train=TrainConfig(epochs=1, batch_size=16, early_stopping_patience=0),
        n_splits=3,
        random_state=5,
        duplicates="group",
    )
    run = RunStore(runs_dir).create_run("cv", config_payload(config))
    run_cross_validation(run)
    data = run.read_json("data.json")
    assert data["duplicates"]["policy"] == "group" and data["duplicates"]["exact_groups"] == 1
    with open(run.path / "folds.csv", newline="") as handle:
        fold_of = {row["path"].rsplit("/", 1)[-1]: row["fold"] for row in csv.DictReader(handle)}
    dataset = load_dataset(root, image_size=32)
    report = load_or_find_duplicates(dataset)
    for group in report.groups:
        assert len({fold_of[path.rsplit("/", 1)[-1]] for path in group.paths}) == 1
    assert run.read_json("hashes.json") and run.config["duplicates"] == "group"


def test_audit_command_names_the_crossings(leaky_data, capsys):
    from zoidberg.cli import main

    root, exact_name, near_name = leaky_data
    assert main(["audit", "--data", str(root), "--folds", "3"]) == 0
    out = capsys.readouterr().out
    assert "1 groups of byte-identical files" in out and "ACROSS PATIENTS" in out and exact_name in out and near_name in out
    assert main(["audit", "--data", str(root), "--max-bits", "300"]) == 2
    assert "--max-bits must be from 0 to 128" in capsys.readouterr().err


def test_a_carved_holdout_is_patient_disjoint_and_linked(demo_dir, tmp_path):
    from zoidberg.data.dataset import parse_patient_id
    from zoidberg.data.demo import is_synthetic_dataset

    holdout = carve_holdout(demo_dir, tmp_path / "split", fraction=0.25, random_state=1)
    rest = {parse_patient_id(path.name) for path in holdout.rest.glob("*/*.jpeg")}
    held = {parse_patient_id(path.name) for path in holdout.holdout.glob("*/*.jpeg")}
    assert rest and held and not rest & held
    assert all(path.is_symlink() for path in holdout.holdout.glob("*/*.jpeg"))
    assert set(holdout.counts["holdout"]) == {"NORMAL", "PNEUMONIA"} and is_synthetic_dataset(holdout.holdout)
    # The demo test split is in neither half.
    test_names = {path.name for path in demo_dir.glob("test/*/*.jpeg")}
    assert not test_names & {path.name for path in holdout.rest.glob("*/*.jpeg")}
    with pytest.raises(ValueError, match="not empty"):
        carve_holdout(demo_dir, tmp_path / "split")
    with pytest.raises(ValueError, match="fraction"):
        carve_holdout(demo_dir, tmp_path / "other", fraction=1.5)
    shifted = carve_holdout(demo_dir, tmp_path / "acquisition", method="acquisition", fraction=0.3)
    assert not list(shifted.rest.glob("NORMAL/NORMAL2-*")) and list(shifted.holdout.glob("NORMAL/NORMAL2-*"))
    assert not list(shifted.holdout.glob("NORMAL/IM-*"))
    rest = {parse_patient_id(path.name) for path in shifted.rest.glob("*/*.jpeg")}
    assert not rest & {parse_patient_id(path.name) for path in shifted.holdout.glob("*/*.jpeg")}


def test_perceptual_hash_separates_distinct_films_from_copies(demo_dir):
    from zoidberg.data.duplicates import near_pairs, perceptual_hashes

    images = load_dataset(demo_dir, image_size=64).images[:20]
    copies = np.clip(images.astype(int) + 6, 0, 255).astype(np.uint8)
    hashes = perceptual_hashes(np.concatenate([images, copies]))
    pairs = {(i, j) for i, j, _ in near_pairs(hashes)}
    assert {(k, k + 20) for k in range(20)} <= pairs
    assert not any(j < 20 for _, j in pairs)


def test_multi_index_search_finds_exactly_the_pairs_of_the_full_comparison():
    from zoidberg.data.duplicates import _indexed_near_pairs, near_pairs

    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 256, (2000, 32), dtype=np.uint8)
    # Plant pairs from 0 to 24 bits apart, around the 16-bit limit.
    for flips in range(25):
        i, j = 2 * flips, 2 * flips + 1
        bits = np.unpackbits(hashes[i])
        bits[rng.choice(256, flips, replace=False)] ^= 1
        hashes[j] = np.packbits(bits)
    full = sorted(near_pairs(hashes, 16))
    assert len(full) == 17 and all(bits <= 16 for _, _, bits in full)
    assert sorted(_indexed_near_pairs(hashes, 16)) == full
