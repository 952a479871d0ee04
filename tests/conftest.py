"""Shared fixtures: seeded randomness, a tiny generated demo dataset, private runs and cache dirs."""

from __future__ import annotations

import os
import random
import shutil
import signal
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port on localhost that nothing listens on now (for servers the tests start)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
# ../shared holds the real data and weights. ZOIDBERG_TEST_SHARED points elsewhere: CI sets it
# to a missing folder for a second pass that sees what a bare clone sees (.ci/run).
SHARED_ROOT = Path(os.environ.get("ZOIDBERG_TEST_SHARED") or REPO_ROOT.parent / "shared")
SHARED_DATA = SHARED_ROOT / "data"
SHARED_WEIGHTS = SHARED_ROOT / "weights"


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
    # No warm worker (a process importing TensorFlow) behind every page test; test_warm.py turns it on.
    monkeypatch.setenv("ZOIDBERG_WARM_WORKER", "0")
    yield base


DEMO_CACHE = Path(os.environ.get("PYTEST_DEMO_DIR", "/tmp/zoidberg-test-demo"))


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    """A small synthetic demo dataset in the Kaggle layout (generated once per session)."""
    from zoidberg.data.demo import make_demo_dataset

    return make_demo_dataset(tmp_path_factory.mktemp("demo") / "demo", patients_per_class=10, images_per_patient=(1, 3), image_size=64)


@pytest.fixture
def runs_dir(private_dirs) -> Path:
    """The private runs directory of this test."""
    return Path(os.environ["ZOIDBERG_RUNS_DIR"])


def write_legacy_weights(model, path: Path) -> Path:
    """Writes a model's weights in the legacy .h5 layout of the official Keras files."""
    h5py = pytest.importorskip("h5py")
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(path, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, model)
    return path


@pytest.fixture(scope="session")
def imagenet_weights_dir(tmp_path_factory) -> Path:
    """A folder with random MobileNetV2 0.35 and 0.5 no-top files under the official ImageNet names."""
    import keras

    folder = tmp_path_factory.mktemp("imagenet-weights")
    for alpha in ("0.35", "0.5"):
        keras.utils.set_random_seed(5)
        model = keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=float(alpha), include_top=False, weights=None)
        write_legacy_weights(model, folder / f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_224_no_top.h5")
    return folder


def needs_shared_data(*parts: str) -> Path:
    """Returns a path in ../shared/data or skips the test when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (real data lives beside the repo, in ../shared)")
    return path


@pytest.fixture
def stop_workers_after(runs_dir):
    """Stops any worker a test left running, so no process outlives the test."""
    from zoidberg.runs.store import ACTIVE_STATES, RunStore

    yield
    for run in RunStore(runs_dir).list_runs():
        status = run.status()
        if status.get("state") in ACTIVE_STATES and status.get("pid"):
            run.request_stop()
            try:
                os.kill(int(status["pid"]), signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass


def _config(demo_dir: Path, *, seed: int = 1, label_mode: str = "binary", **model):
    """A tiny cross-validation config: 32 px, k=2, one epoch."""
    from zoidberg.config import DataConfig, ModelConfig, RunConfig, TrainConfig

    model_config = ModelConfig(
        **{"architecture": "cnn", "conv_blocks": 2, "base_filters": 8, "dense_units": 16, **model}
    )
    return RunConfig(
        data=DataConfig(str(demo_dir), label_mode, 32),
        model=model_config,
        train=TrainConfig(epochs=1, batch_size=16, early_stopping_patience=0),
        n_splits=2,
        random_state=seed,
    )


def _stopped_copy(store, source) -> str:
    """Copies a finished run as one stopped after its first fold (no summary, one model)."""
    run_id = source.id.replace("-cv-", "-cv-stop")[:80]
    target = store.root / run_id
    shutil.copytree(source.path, target)
    shutil.rmtree(target / "fold_2")
    (target / "summary.json").unlink()
    stopped = store.get(run_id)
    stopped.write_json("meta.json", {**stopped.meta, "id": run_id, "name": "stopped run"})
    stopped.set_status("stopped", folds_finished=1)
    return run_id


@pytest.fixture(scope="session")
def trained(tmp_path_factory, demo_dir):
    """Four tiny real runs (two comparable, one other seed, one three-class) and a stopped copy, once per session."""
    from zoidberg.runs.store import RunStore
    from zoidberg.training.cv import run_cross_validation
    from zoidberg.training.run_setup import config_payload

    base = tmp_path_factory.mktemp("compare-predict")
    runs_dir = base / "runs"
    # Session fixtures start before the autouse private_dirs one, so they set their own folders.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ZOIDBERG_RUNS_DIR", str(runs_dir))
        patch.setenv("ZOIDBERG_CACHE_DIR", str(base / "cache"))
        store = RunStore(runs_dir)
        configs = {
            "baseline": _config(demo_dir),
            "variant": _config(demo_dir, conv_blocks=1, base_filters=4, dense_units=8),
            "other_seed": _config(demo_dir, seed=2),
            "three_class": _config(demo_dir, label_mode="three-class"),
        }
        ids = {}
        for name, config in configs.items():
            run = store.create_run("cv", config_payload(config), name=name)
            run_cross_validation(run)
            assert run.state == "completed", run.status()
            ids[name] = run.id
        ids["stopped"] = _stopped_copy(store, store.get(ids["baseline"]))
    return SimpleNamespace(dir=runs_dir, ids=ids, store=store)


@pytest.fixture
def use_runs(trained, monkeypatch):
    """Points the app at the module's runs for one test."""
    monkeypatch.setenv("ZOIDBERG_RUNS_DIR", str(trained.dir))
    return trained


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory, demo_dir):
    """A real Orthanc on localhost holding one child's chest study (frontal, MONOCHROME1, side view) and a CT study."""
    from PIL import Image

    from tests.orthanc import clinic_study, orthanc_missing, start_orthanc

    missing = orthanc_missing()
    if missing:
        pytest.skip(missing)
    server = start_orthanc(tmp_path_factory.mktemp("orthanc"))
    films = [np.asarray(Image.open(path).convert("L")) for path in sorted((demo_dir / "test" / "PNEUMONIA").glob("*.jpeg"))[:2]]
    for data in clinic_study(films).values():
        server.upload(data)
    yield server
    server.stop()
