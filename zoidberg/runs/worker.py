"""What every run kind's worker shares: the heartbeat, the start, the dataset load and checks, stops and failures."""

from __future__ import annotations

import os
import platform
import threading
import traceback
from typing import Callable

from zoidberg.config import DataConfig
from zoidberg.data.dataset import Dataset, load_dataset
from zoidberg.runs import progress as events
from zoidberg.runs.store import Run, now_iso

Reporter = Callable[[str], None]


RESUMABLE_STATES = ("interrupted", "stopped", "failed")


class RunStopped(Exception):
    """Raised inside a worker when a stop was requested; the run ends `stopped`, its finished work kept."""


def quiet(message: str) -> None:
    """A reporter that says nothing (the default when no console listens)."""


def plain_error_message(error: BaseException, retry: str = "resume the run") -> str:
    """Turns an exception into one plain sentence for users.

    Args:
        error: What the worker caught.
        retry: What to do once the disk has room again ("resume the run" for training,
            "run the command again" for export, report and the rest).

    Returns:
        The message: the error's own text for the expected kinds (ValueError,
        FileNotFoundError, LookupError), a memory hint for out-of-memory errors, else the
        exception's class and text.
    """
    text = str(error).strip() or error.__class__.__name__
    if isinstance(error, MemoryError):
        return "Out of memory: lower the image size or the batch size."
    if error.__class__.__name__ == "ResourceExhaustedError" and "No space left on device" in text:
        return f"The disk is full: free some space, then {retry}."
    if error.__class__.__name__ == "ResourceExhaustedError":
        return "Out of memory while training: lower the batch size or the image size."
    if isinstance(error, OSError) and error.errno == 28:
        return f"The disk is full ({error.filename or 'the runs folder'}): free some space, then {retry}."
    if isinstance(error, PermissionError):
        return f"Permission denied: {error.filename or text}. Choose a folder you can write to (--runs-dir, $ZOIDBERG_RUNS_DIR) or fix its permissions."
    if isinstance(error, OSError) and error.filename:
        return f"{error.strerror or text}: {error.filename}"
    return text if isinstance(error, (ValueError, FileNotFoundError, LookupError)) else f"{error.__class__.__name__}: {text}"


class Heartbeat:
    """Writes the run's heartbeat from a daemon thread so readers can tell the worker lives.

    Args:
        run: The run.
        interval_s: Seconds between beats.
    """

    def __init__(self, run: Run, interval_s: float = 5.0):
        self.run = run
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="zoidberg-heartbeat", daemon=True)

    def _beat(self):
        while not self._stop.is_set():
            try:
                self.run.heartbeat()
            except OSError:
                pass
            self._stop.wait(self.interval_s)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=2)
        return False


def execute(
    run: Run,
    body: Callable[[], dict],
    finish_stopped: Callable[[], dict],
    *,
    say: Reporter,
    what: str,
) -> dict:
    """Runs a worker's job with a heartbeat; a stop request ends it stopped, any failure is recorded.

    Args:
        run: The run.
        body: Does the work and returns the summary.
        finish_stopped: Records the stopped state and returns what was kept.
        say: Console reporter.
        what: What failed, for the console line ("Run", "Tuning").

    Returns:
        The summary, or the partial state when stopped.

    Raises:
        Exception: Whatever `body` raised, after it was recorded in status.json and the events.
    """
    with Heartbeat(run):
        try:
            return body()
        except RunStopped:
            return finish_stopped()
        except Exception as error:  # The worker must record every failure for the UI.
            message = plain_error_message(error)
            run.append_event(events.FAILED, error=message)
            run.set_status("failed", error=message, traceback=traceback.format_exc(limit=20))
            say(f"{what} failed: {message}")
            raise


def mark_running(run: Run, **facts) -> None:
    """Records that the worker started (or restarted) the run: status running and a run_started event.

    Args:
        run: The run.
        **facts: What the run plans (n_folds and epochs, or n_trials ...), for the event.
    """
    started = run.status().get("started") or now_iso()
    run.set_status("running", pid=os.getpid(), host=platform.node(), started=started, error=None, waiting=False, position=None)
    run.append_event(events.RUN_STARTED, **facts)


def reopen(run: Run) -> Run:
    """Marks an interrupted, stopped or failed run queued again, for a worker to continue.

    Raises:
        ValueError: When the run is still active or already completed.
    """
    # The check and the change are one step under the run's lock: of two resumes started at
    # once, the second sees the run queued and is refused.
    with run.locked():
        state = run.state
        if state not in RESUMABLE_STATES:
            raise ValueError(f"Run {run.id} is {state}; only interrupted, stopped or failed runs can be resumed.")
        run.clear_stop()
        run.set_status("queued", error=None, resumed_from=state)
        run.append_event(events.RESUMED, previous_state=state)
    return run


def load_run_dataset(run: Run, data_config: DataConfig, say: Reporter) -> Dataset:
    """Loads a run's dataset, reporting decoding progress as "loading" events, and checks it is unchanged.

    Args:
        run: The run whose event log shows the progress.
        data_config: Which folder, label mode and image size.
        say: Progress reporter for the console.

    Returns:
        The dataset.

    Raises:
        ValueError: The data folder changed since the run was configured.
    """
    say(f"Loading {data_config.data_dir} at {data_config.image_size} px ...")
    dataset = load_dataset(
        data_config.data_dir,
        **data_config.loader_options(),
        progress=lambda done, total: run.append_event(events.LOADING, done=done, total=total),
    )
    check_same_data(run, dataset)
    return dataset


def check_same_data(run: Run, dataset: Dataset) -> None:
    """Refuses to go on with a run whose data folder changed since it was configured.

    Folds and splits depend on the file list, so resuming on changed data would mix them.

    Raises:
        ValueError: The fingerprint in config.json differs from the data's.
    """
    expected = run.config.get("data_fingerprint")
    if expected and expected != dataset.fingerprint:
        raise ValueError(
            f"The data folder {dataset.root} changed since this run was configured (files added, removed or "
            f"edited: fingerprint {expected}, now {dataset.fingerprint}), so its folds cannot be reproduced. "
            "Start a new run on the current data."
        )


# Set once by a warm worker (zoidberg.launch.warm) when it claims a run: TensorFlow is already
# loaded in this process, so cross-validation trains its first fold here rather than in a child.
_WARM_PROCESS = False


def is_warm_process() -> bool:
    """Whether this process is a warm worker (TensorFlow loaded before its run began)."""
    return _WARM_PROCESS


def mark_warm_process() -> None:
    """Records that this process is a warm worker that has claimed its run."""
    global _WARM_PROCESS
    _WARM_PROCESS = True
