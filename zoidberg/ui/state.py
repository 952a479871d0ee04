"""Session state, cached loaders and the dashboard's one doorway into starting runs."""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from zoidberg.data.dataset import Dataset, DatasetError, fingerprint_records, load_dataset, scan_dataset
from zoidberg.launch import jobs
from zoidberg.launch.kinds import prepare_within_roots
from zoidberg.runs.store import ACTIVE_STATES, Run, RunStore, default_runs_dir

# Session-state keys read by more than one page; the run selection has one key per run kind.
DATA_DIR_KEY = "zoidberg_data_dir"
# The address parameter that keeps the chosen folder across a reload (?data=/path/to/folder).
DATA_DIR_PARAM = "data"
SELECTED_RUN_KEY = "zoidberg_selected_run"
KNOWN_RUNS_KEY = "zoidberg_known_runs"
EVENTS_CACHE_KEY = "zoidberg_event_cache"

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


def keep_warm_worker() -> None:
    """Makes sure a warm worker waits for the next Start (at most one; see zoidberg.launch.warm).

    A runs folder that cannot be written only costs the head start, never the page.
    """
    from zoidberg.launch.warm import ensure_warm_worker

    try:
        ensure_warm_worker(run_store())
    except OSError:
        pass


@st.cache_resource(show_spinner=False)
def _ensure_demo_dataset(demo_dir: str) -> str:
    """Generates the demo dataset once per process and folder."""
    from zoidberg.data.demo import ensure_demo_dataset

    return str(ensure_demo_dataset(demo_dir))


def demo_data_dir() -> str:
    """Returns the synthetic demo dataset folder, generating it on first use.

    Returns:
        The demo dataset root as a string.
    """
    from zoidberg.data.demo import default_demo_dir

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
    from zoidberg.data.demo import is_synthetic_dataset

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
    if not (value and str(value).strip()):
        # A reloaded tab starts a new session: the folder comes back from its address.
        value = st.query_params.get(DATA_DIR_PARAM)
        if value and str(value).strip():
            st.session_state[DATA_DIR_KEY] = str(value).strip()
    if value and str(value).strip():
        folder = str(value).strip()
        # Every page keeps the folder in its own address, so that a reload there finds it too.
        if st.query_params.get(DATA_DIR_PARAM) != folder:
            st.query_params[DATA_DIR_PARAM] = folder
        return folder
    return demo_data_dir()


def remember_data_dir(data_dir: str) -> None:
    """Stores the chosen data folder so other pages, and a reload of the tab, use it by default.

    Args:
        data_dir: Dataset root.
    """
    folder = str(data_dir).strip()
    st.session_state[DATA_DIR_KEY] = folder
    if folder:
        st.query_params[DATA_DIR_PARAM] = folder
    else:
        st.query_params.pop(DATA_DIR_PARAM, None)


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
def _load_dataset_resource(data_dir: str, label_mode: str, image_size: int, fingerprint: str, resize: str, enhance: str) -> Dataset:
    """Decodes a dataset once per (folder, label mode, size, file-list fingerprint, preprocessing).

    The fingerprint is part of the key so that adding, removing or editing files
    gives a fresh load instead of a stale cached one.
    """
    del fingerprint  # Only part of the cache key.
    return load_dataset(data_dir, label_mode=label_mode, image_size=image_size, resize=resize, enhance=enhance)


def load_dataset_cached(data_dir: str, label_mode: str = "binary", image_size: int = 128, resize: str = "stretch", enhance: str = "none") -> Dataset:
    """Loads a dataset through the process-wide resource cache, with a spinner.

    Args:
        data_dir: Dataset root (Kaggle or flat layout).
        label_mode: "binary" or "three-class".
        image_size: Side of the square images.
        resize: "stretch" or "pad".
        enhance: "none", "equalize" or "clahe".

    Returns:
        The shared Dataset; callers must not modify its arrays.

    Raises:
        DatasetError: With what to change when the folder cannot be read as a dataset.
        ValueError: The folder is outside $ZOIDBERG_DATA_ROOTS.
    """
    from zoidberg.data.roots import check_folder_allowed

    folder = str(check_folder_allowed(str(data_dir).strip()))
    fingerprint = dataset_fingerprint(folder)
    with st.spinner(f"Reading images from {folder} at {image_size} px ..."):
        return _load_dataset_resource(folder, label_mode, int(image_size), fingerprint, resize, enhance)


@st.cache_resource(show_spinner=False, max_entries=MAX_CACHED_DATASETS)
def _duplicates_resource(root: str, fingerprint: str, image_size: int, _dataset: Dataset):
    """The duplicate audit of a dataset, once per (folder, file list, size) and process."""
    from zoidberg.data.duplicates import load_or_find_duplicates

    del root, fingerprint, image_size  # Only the cache key.
    return load_or_find_duplicates(_dataset)


def duplicate_report_cached(dataset: Dataset):
    """The duplicate report of a loaded dataset (from the disk cache after the first audit)."""
    return _duplicates_resource(str(dataset.root), dataset.fingerprint, dataset.image_size, dataset)


def list_runs(kind: str | tuple[str, ...]) -> list[Run]:
    """Returns the runs of one kind (or several) in the store, newest first.

    Args:
        kind: "cv", "tune", "ensemble", or a tuple such as MODEL_KINDS.

    Returns:
        The runs (an empty list when the folder does not exist yet).
    """
    try:
        return run_store().list_runs(kind=kind)
    except OSError:
        return []


def read_events_incrementally(run: Run) -> list[dict]:
    """Returns all events of a run, reading only the bytes added since the last call.

    Args:
        run: The run.

    Returns:
        The events in order.
    """
    cache = st.session_state.setdefault(EVENTS_CACHE_KEY, {})
    offset, events = cache.get(run.id, (0, []))
    new_events, offset = run.read_events(offset)
    events = events + new_events
    cache[run.id] = (offset, events)
    return events


def forget_events(run_id: str) -> None:
    """Drops a run's cached events (a resumed run is read again from the start)."""
    st.session_state.get(EVENTS_CACHE_KEY, {}).pop(run_id, None)


def start_or_attach(kind: str, config) -> tuple[str, bool]:
    """Checks a configuration once, then starts its worker or attaches to an identical active run.

    Args:
        kind: "cv" or "tune".
        config: A validated RunConfig or TuneConfig.

    Returns:
        (run id, attached): attached is True when no new run was started.

    Raises:
        ValueError, FileNotFoundError: As kinds.prepare_within_roots, or an unwritable runs folder.
    """
    with st.spinner("Checking the configuration against the data ..."):
        payload = prepare_within_roots(kind, config, runs_dir(), load_dataset_cached)
    with st.spinner("Starting the worker ..."):
        return jobs.start_or_attach(kind, payload, name=config.run_name, runs_dir=runs_dir())


def select_run(run_id: str, kind: str = "cv") -> None:
    """Makes a run the one shown on its kind's page (Train or Tune).

    Args:
        run_id: The run's id.
        kind: "cv" or "tune".
    """
    st.session_state[f"{SELECTED_RUN_KEY}_{kind}"] = run_id


def selected_run_id(runs: list[Run], states: dict[str, str], kind: str = "cv") -> str | None:
    """Returns the run to show.

    A run that became active since this session last looked (started in another tab or
    from the command line) wins; then the session's own choice; then the newest active
    run; then the newest run. The member runs an ensemble trains never win over it.

    Args:
        runs: Runs of one kind, newest first.
        states: {run id: state}.
        kind: "cv" or "tune".

    Returns:
        A run id, or None when there are no runs.
    """
    ids = [run.id for run in runs]
    known_key = f"{KNOWN_RUNS_KEY}_{kind}"
    known = st.session_state.get(known_key)
    st.session_state[known_key] = set(ids)
    members = {run.id for run in runs if run.config.get("member_of") in ids}
    if known is not None:
        for run_id in ids:
            if run_id not in known and run_id not in members and states.get(run_id) in ACTIVE_STATES:
                return run_id
    chosen = st.session_state.get(f"{SELECTED_RUN_KEY}_{kind}")
    if chosen in ids:
        return chosen
    for run in runs:
        if states.get(run.id) in ACTIVE_STATES and run.id not in members:
            return run.id
    return ids[0] if ids else None
