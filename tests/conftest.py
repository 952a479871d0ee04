"""Shared fixtures: seeded randomness, a tiny generated demo dataset, private runs and cache dirs."""

from __future__ import annotations

import os
import random
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
SHARED_WEIGHTS = REPO_ROOT.parent / "shared" / "weights"


@pytest.fixture(autouse=True)
def seeded():
    """Seeds Python, NumPy (and Keras when loaded) so every test is repeatable."""
    random.seed(1234)
    np.random.seed(1234)
    import sys

    if "keras" in sys.modules:
        sys.modules["keras"].utils.set_random_seed(1234)
    yield


@pytest.fixture(autouse=True)
def private_dirs(tmp_path_factory, monkeypatch):
    """Points the runs, cache and demo folders at temporary ones for every test."""
    base = tmp_path_factory.mktemp("zoidberg-home")
    monkeypatch.setenv("ZOIDBERG_RUNS_DIR", str(base / "runs"))
    monkeypatch.setenv("ZOIDBERG_CACHE_DIR", str(base / "cache"))
    monkeypatch.setenv("ZOIDBERG_DEMO_DIR", str(DEMO_CACHE))
    yield base


DEMO_CACHE = Path(os.environ.get("PYTEST_DEMO_DIR", "/tmp/zoidberg-test-demo"))


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    """A small synthetic demo dataset in the Kaggle layout (generated once per session)."""
    from zoidberg.demo import make_demo_dataset

    return make_demo_dataset(tmp_path_factory.mktemp("demo") / "demo", patients_per_class=10, images_per_patient=(1, 3), image_size=64)


@pytest.fixture
def runs_dir(private_dirs) -> Path:
    """The private runs directory of this test."""
    return Path(os.environ["ZOIDBERG_RUNS_DIR"])


def needs_shared_data(*parts: str) -> Path:
    """Returns a path in ../shared/data or skips the test when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (real data lives beside the repo, in ../shared)")
    return path
