"""Session state keys and cached loaders shared by the dashboard pages."""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from zoidberg.data import Dataset, DatasetError, fingerprint_records, load_dataset, scan_dataset
from zoidberg.runstore import ACTIVE_STATES, Run, RunStore, default_runs_dir

# Session-state keys read by more than one page.
DATA_DIR_KEY = "zoidberg_data_dir"
SELECTED_RUN_KEY = "zoidberg_selected_run"
STARTED_RUN_KEY = "zoidberg_started_run"
KNOWN_RUNS_KEY = "zoidberg_known_runs"

# Decoded datasets kept in memory at once: each holds N×S×S bytes, so a few sizes of the
# same data (preview at one size, training at another) fit without growing unbounded.
MAX_CACHED_DATASETS = 4


def runs_dir() -> Path:
    """Returns the run store folder ($ZOIDBERG_RUNS_DIR or ./runs), read on every call.

    Returns:
        The runs directory path.
    """
    return default_runs_dir()


def run_store() -> RunStore:
    """Returns a RunStore on runs_dir(); cheap, so it is not cached.

    Returns:
        The run store.
    """
    return RunStore(runs_dir())


@st.cache_resource(show_spinner=False)
def _ensure_demo_dataset(demo_dir: str) -> str:
    """Generates the demo dataset once per process and folder."""
    from zoidberg.demo import ensure_demo_dataset

    return str(ensure_demo_dataset(demo_dir))


def demo_data_dir() -> str:
    """Returns the synthetic demo dataset folder, generating it on first use.

    Returns:
        The demo dataset root as a string.
    """
    from zoidberg.demo import default_demo_dir

    target = str(default_demo_dir())
    with st.spinner("Generating the synthetic demo dataset (first use only) ..."):
        path = _ensure_demo_dataset(target)
        if not is_synthetic(path):
            # Someone deleted the folder after it was cached: generate it again.
            _ensure_demo_dataset.clear()
            path = _ensure_demo_dataset(target)
    return path


def is_synthetic(data_dir: str | os.PathLike) -> bool:
    """Tells whether a folder is the generated demo data.

    Args:
        data_dir: Dataset root.

    Returns:
        True when the folder holds the synthetic-data marker.
    """
    from zoidberg.demo import is_synthetic_dataset

    try:
        return is_synthetic_dataset(Path(data_dir).expanduser())
    except OSError:
        return False


def chosen_data_dir() -> str:
    """Returns the data folder chosen on the Data page, or the demo dataset.

    Returns:
        The folder path as typed by the user (or the demo folder).
    """
    value = st.session_state.get(DATA_DIR_KEY)
    if value and str(value).strip():
        return str(value).strip()
    return demo_data_dir()


def remember_data_dir(data_dir: str) -> None:
    """Stores the chosen data folder so other pages use it by default.

    Args:
        data_dir: Dataset root.
    """
    st.session_state[DATA_DIR_KEY] = str(data_dir).strip()


def dataset_fingerprint(data_dir: str) -> str:
    """Hashes a folder's file list (names, sizes, times) without decoding images.

    Args:
        data_dir: Dataset root.

    Returns:
        A short hex fingerprint.

    Raises:
        DatasetError: When the folder is missing or in no known layout.
    """
    try:
        return fingerprint_records(scan_dataset(data_dir))
    except (PermissionError, NotADirectoryError) as error:
        raise DatasetError(f"Cannot read {data_dir}: {error.strerror or error}.") from None


@st.cache_resource(show_spinner=False, max_entries=MAX_CACHED_DATASETS)
def _load_dataset_resource(data_dir: str, label_mode: str, image_size: int, fingerprint: str) -> Dataset:
    """Decodes a dataset once per (folder, label mode, size, file-list fingerprint).

    The fingerprint is part of the key so that adding, removing or editing files
    gives a fresh load instead of a stale cached one.
    """
    del fingerprint  # Only part of the cache key.
    return load_dataset(data_dir, label_mode=label_mode, image_size=image_size)


def load_dataset_cached(data_dir: str, label_mode: str = "binary", image_size: int = 128) -> Dataset:
    """Loads a dataset through the process-wide resource cache, with a spinner.

    Args:
        data_dir: Dataset root (Kaggle or flat layout).
        label_mode: "binary" or "three-class".
        image_size: Side of the square images.

    Returns:
        The shared Dataset; callers must not modify its arrays.

    Raises:
        DatasetError: With what to change when the folder cannot be read as a dataset.
    """
    folder = str(Path(str(data_dir).strip()).expanduser().resolve())
    fingerprint = dataset_fingerprint(folder)
    with st.spinner(f"Reading images from {folder} at {image_size} px ..."):
        return _load_dataset_resource(folder, label_mode, int(image_size), fingerprint)


def list_runs(kind: str) -> list[Run]:
    """Returns the runs of one kind in the store, newest first.

    Args:
        kind: "cv" or "tune".

    Returns:
        The runs (an empty list when the folder does not exist yet).
    """
    try:
        return run_store().list_runs(kind=kind)
    except OSError:
        return []


def newest_active_run(runs: list[Run]) -> Run | None:
    """Returns the newest queued or running run of a list, if any.

    Args:
        runs: Runs, newest first.

    Returns:
        The first active run, or None.
    """
    for run in runs:
        if run.state in ACTIVE_STATES:
            return run
    return None


def build_data_config(data_dir: str, options: dict):
    """Builds the DataConfig of a form: the folder as an absolute path, label mode, image size.

    Args:
        data_dir: The folder as typed (blank stays blank so validation can say so).
        options: The form's values with "label_mode" and "image_size".

    Returns:
        The DataConfig.

    Raises:
        ValueError: With what to change.
    """
    from zoidberg.config import DataConfig

    folder = str(Path(str(data_dir).strip()).expanduser().resolve()) if str(data_dir).strip() else ""
    return DataConfig(data_dir=folder, label_mode=options["label_mode"], image_size=options["image_size"])


def build_run_config(data_dir: str, architecture: str, model_values: dict, options: dict):
    """Builds the validated RunConfig from the Train form's values.

    Args:
        data_dir: Dataset root.
        architecture: Registry key.
        model_values: {ModelConfig field: value} of the architecture's hyperparameters.
        options: Values of widgets.training_options_ui.

    Returns:
        The RunConfig.

    Raises:
        ValueError: With what to change (the config classes' own messages).
    """
    from zoidberg.config import ModelConfig, RunConfig, TrainConfig

    try:
        return RunConfig(
            data=build_data_config(data_dir, options),
            model=ModelConfig(architecture=architecture, **model_values),
            train=TrainConfig(
                epochs=options["epochs"],
                batch_size=options["batch_size"],
                learning_rate=options["learning_rate"],
                optimizer=options["optimizer"],
                early_stopping_patience=options["early_stopping_patience"],
                class_weighting=options["class_weighting"],
                augmentation=options["augmentation"],
            ),
            n_splits=options["n_splits"],
            random_state=options["random_state"],
            run_name=options["run_name"],
        )
    except TypeError as error:
        # A registry field that ModelConfig lacks is a programming error, but the user
        # still deserves a sentence rather than a traceback.
        raise ValueError(f"Invalid configuration: {error}") from None


def validate_run_config(config) -> None:
    """Checks a config against the architecture, the weights files and the data.

    Args:
        config: A RunConfig.

    Raises:
        ValueError: The image is too small, k is too large for the data, or the folder
            cannot be read as a dataset (DatasetError is a ValueError).
        FileNotFoundError: Pretrained weights were asked for and no local file has them
            (WeightsNotFoundError).
    """
    prepare_payload(config)


def prepare_payload(config) -> dict:
    """Validates a config against the cached dataset and returns its config.json payload.

    Args:
        config: A RunConfig.

    Returns:
        The payload (config, data fingerprint, package versions).

    Raises:
        ValueError, FileNotFoundError: As validate_run_config.
    """
    from zoidberg.cv import prepare_run

    dataset = load_dataset_cached(config.data.data_dir, config.data.label_mode, config.data.image_size)
    return prepare_run(config, dataset)


def comparable_config(config: dict) -> str:
    """Returns a canonical JSON text of a run config without its reproducibility facts.

    config.json adds package versions and the data's fingerprint to what the form sets;
    two starts of the same form compare equal without them.

    Args:
        config: A config dict (RunConfig.to_dict() or a run's config.json).

    Returns:
        Sorted-key JSON, equal for equal configurations.
    """
    import json

    facts = ("versions", "data_fingerprint")
    return json.dumps({key: value for key, value in config.items() if key not in facts}, sort_keys=True, default=str)


def find_identical_active_run(kind: str, config: dict) -> Run | None:
    """Returns a queued or running run of a kind with exactly this configuration, if any.

    Starting the same configuration twice (a double click, a second tab) then attaches to
    the run in progress instead of training it twice.

    Args:
        kind: "cv" or "tune".
        config: The configuration as a dict (to_dict() of its config class).

    Returns:
        The newest such run, or None.
    """
    wanted = comparable_config(config)
    for run in list_runs(kind):
        if run.state in ACTIVE_STATES and comparable_config(run.config) == wanted:
            return run
    return None


def start_or_attach(config) -> tuple[str, bool]:
    """Starts a cross-validation worker, or attaches to an identical active run.

    Args:
        config: A validated RunConfig.

    Returns:
        (run id, attached): attached is True when no new run was started.

    Raises:
        ValueError: When the runs folder is not writable.
    """
    from zoidberg import jobs

    existing = find_identical_active_run("cv", config.to_dict())
    if existing is not None:
        return existing.id, True
    payload = prepare_payload(config)
    run_id = jobs.start_run("cv", payload, name=config.run_name, runs_dir=runs_dir())
    st.session_state[STARTED_RUN_KEY] = run_id
    return run_id, False


def select_run(run_id: str) -> None:
    """Makes a run the one shown on the Train page.

    Args:
        run_id: The run's id.
    """
    st.session_state[SELECTED_RUN_KEY] = run_id


def selected_run_id(runs: list[Run], states: dict[str, str]) -> str | None:
    """Returns the run to show.

    A run that became active since this session last looked (started in another tab or
    from the command line) wins; then the session's own choice; then the newest active
    run; then the newest run.

    Args:
        runs: Runs, newest first.
        states: {run id: state}.

    Returns:
        A run id, or None when there are no runs.
    """
    ids = [run.id for run in runs]
    known = st.session_state.get(KNOWN_RUNS_KEY)
    st.session_state[KNOWN_RUNS_KEY] = set(ids)
    if known is not None:
        for run_id in ids:
            if run_id not in known and states.get(run_id) in ACTIVE_STATES:
                return run_id
    chosen = st.session_state.get(SELECTED_RUN_KEY)
    if chosen in ids:
        return chosen
    for run in runs:
        if states.get(run.id) in ACTIVE_STATES:
            return run.id
    return ids[0] if ids else None
