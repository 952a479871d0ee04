"""Background jobs: start, stop and resume runs in worker processes behind one small interface."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from abc import ABC, abstractmethod
from pathlib import Path

from zoidberg.runstore import ACTIVE_STATES, Run, RunStore, pid_is_alive

RESUMABLE_STATES = ("interrupted", "stopped", "failed")


class Executor(ABC):
    """Runs a prepared run somewhere and reports whether it is alive.

    The run store is the only contract: an executor receives a run whose folder holds
    config.json and must get `python -m zoidberg worker RUN_ID` (or an equivalent that
    writes the same files) executed. A cluster executor (e.g. Ray) only adds a subclass.
    """

    @abstractmethod
    def submit(self, run: Run, store: RunStore) -> None:
        """Starts the run's worker and returns at once."""

    def is_alive(self, run: Run) -> bool:
        """Tells whether the run's worker is still running."""
        return run.state in ACTIVE_STATES


class LocalProcessExecutor(Executor):
    """Runs each job as `python -m zoidberg worker` in its own process session.

    The worker is in a new session, so closing the browser tab, reloading the page or
    stopping the Streamlit server does not kill it.
    """

    def submit(self, run: Run, store: RunStore) -> None:
        log = open(run.path / "worker.log", "ab")
        environment = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
        # The package root must be importable by the child whatever its working directory.
        package_root = str(Path(__file__).resolve().parent.parent)
        environment["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, environment.get("PYTHONPATH")]))
        process = subprocess.Popen(
            [sys.executable, "-m", "zoidberg", "--runs-dir", str(store.root.resolve()), "worker", run.id],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=environment,
            start_new_session=True,
            close_fds=True,
        )
        log.close()
        run.set_status("queued", pid=process.pid, host=os.uname().nodename)
        # Reap the child when it exits so it never lingers as a zombie.
        threading.Thread(target=process.wait, name=f"reap-{run.id}", daemon=True).start()


_DEFAULT_EXECUTOR: Executor = LocalProcessExecutor()


def get_executor() -> Executor:
    """Returns the executor used by start_run and resume_run."""
    return _DEFAULT_EXECUTOR


def start_run(kind: str, config: dict, *, name: str = "", runs_dir=None, executor: Executor | None = None) -> str:
    """Creates a run and starts its worker in the background.

    Args:
        kind: "cv" or "tune".
        config: The validated config as a dict (config.json).
        name: A readable run name.
        runs_dir: The run store folder.
        executor: Where to run it (default: a local worker process).

    Returns:
        The new run id, at once.
    """
    store = RunStore(runs_dir)
    run = store.create_run(kind, config, name)
    (executor or get_executor()).submit(run, store)
    return run.id


def stop_run(run_id: str, *, runs_dir=None) -> Run:
    """Asks a run's worker to stop after its current batch; finished folds are kept."""
    run = RunStore(runs_dir).get(run_id)
    run.request_stop()
    status = run.read_json("status.json", {}) or {}
    if status.get("state") == "queued" and not pid_is_alive(status.get("pid")):
        run.set_status("stopped")
    return run


def resume_run(run_id: str, *, runs_dir=None, executor: Executor | None = None) -> Run:
    """Restarts an interrupted, stopped or failed run from its first unfinished fold.

    Raises:
        ValueError: when the run is still active or already completed.
    """
    store = RunStore(runs_dir)
    run = store.get(run_id)
    state = run.state
    if state not in RESUMABLE_STATES:
        raise ValueError(f"Run {run_id} is {state}; only interrupted, stopped or failed runs can be resumed.")
    run.clear_stop()
    run.set_status("queued", error=None, resumed_from=state)
    run.append_event("resumed", previous_state=state)
    (executor or get_executor()).submit(run, store)
    return run


def run_worker(run_id: str, *, runs_dir=None, report=None) -> int:
    """Runs a run in this process (the worker's body). Returns an exit code."""
    run = RunStore(runs_dir).get(run_id)
    if run.kind == "tune":
        from zoidberg.tuning import run_tuning

        runner = run_tuning
    else:
        from zoidberg.cv import run_cross_validation

        runner = run_cross_validation
    try:
        runner(run, report=report)
    except Exception:
        return 1
    return 0
