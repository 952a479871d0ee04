"""Background jobs: start, attach to, stop and resume runs in worker processes behind one small interface."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from abc import ABC, abstractmethod
from pathlib import Path

from zoidberg.launch.kinds import get_kind
from zoidberg.launch.processes import start_detached_worker
from zoidberg.runs.store import (
    ACTIVE_STATES,
    EVALUATION_FILE,
    EVALUATIONS_DIR,
    FINAL_STATES,
    MEMBERS_FILE,
    STATUS_FILE,
    WORKER_LOG,
    Run,
    RunStore,
    now_iso,
    read_json,
    validate_evaluation_name,
    write_json_atomic,
)
from zoidberg.runs.liveness import pid_is_alive
from zoidberg.runs.worker import reopen

# config.json facts that are not part of what the user configured.
REPRODUCIBILITY_FACTS = ("versions", "data_fingerprint")


class WorkerLauncher(ABC):
    """Runs a prepared run somewhere and reports whether it is alive.

    The run store is the only contract: a launcher receives a run whose folder holds
    config.json and must get `python -m zoidberg worker RUN_ID` (or an equivalent that
    writes the same files) executed. A cluster launcher (e.g. Ray) only adds a subclass.
    """

    @abstractmethod
    def submit(self, run: Run, store: RunStore) -> None:
        """Starts the run's worker and returns at once."""

    def is_alive(self, run: Run) -> bool:
        """Tells whether the run's worker is still running."""
        return run.state in ACTIVE_STATES


class LocalProcessLauncher(WorkerLauncher):
    """Runs each job as `python -m zoidberg worker` in its own process session.

    The worker is in a new session, so closing the browser tab, reloading the page or
    stopping the Streamlit server does not kill it.
    """

    def submit(self, run: Run, store: RunStore) -> None:
        from zoidberg.launch.warm import claim_warm_worker

        warm_pid = claim_warm_worker(store, run.id)
        if warm_pid is not None:
            # A warm worker (TensorFlow already imported) takes the run: no process start, no import.
            run.set_status("queued", pid=warm_pid, host=os.uname().nodename, queued_at=time.time(), waiting=False, warm=True)
            return
        pid = start_detached_worker(store.root, [run.id], run.path / WORKER_LOG)
        # queued_at is the run's place in the queue (zoidberg.launch.queue): first come, first served.
        run.set_status("queued", pid=pid, host=os.uname().nodename, queued_at=time.time(), waiting=False)


_DEFAULT_LAUNCHER: WorkerLauncher = LocalProcessLauncher()


def describe_engine(config: dict) -> str:
    """Where a run's folds or trials train, in words: its engine, and a Ray run's cluster."""
    engine = config.get("engine", "inprocess")
    if engine != "ray":
        return engine
    address = config.get("ray_address")
    return f"ray at {address}" if address and address != "local" else "ray (private local)"


def get_launcher() -> WorkerLauncher:
    """Returns the launcher used by start_run and resume_run."""
    return _DEFAULT_LAUNCHER


def start_run(kind: str, config: dict, *, name: str = "", runs_dir=None, launcher: WorkerLauncher | None = None) -> str:
    """Creates a run and starts its worker in the background.

    Args:
        kind: "cv" or "tune".
        config: The prepared config.json payload (RunKind.prepare).
        name: A readable run name.
        runs_dir: The run store folder.
        launcher: Where to run it (default: a local worker process).

    Returns:
        The new run id, at once.
    """
    get_kind(kind)
    # A bad ZOIDBERG_MAX_RUNS would fail only inside the worker, leaving a run queued forever.
    from zoidberg.launch.queue import run_capacity

    run_capacity()
    store = RunStore(runs_dir)
    run = store.create_run(kind, config, name)
    (launcher or get_launcher()).submit(run, store)
    return run.id


def comparable_config(config: dict) -> str:
    """Returns a canonical JSON text of a run config without its reproducibility facts.

    config.json adds package versions and the data's fingerprint to what the form sets;
    two starts of the same form compare equal without them.

    Args:
        config: A config dict (a config class's to_dict() or a run's config.json).

    Returns:
        Sorted-key JSON, equal for equal configurations.
    """
    kept = {key: value for key, value in config.items() if key not in REPRODUCIBILITY_FACTS}
    return json.dumps(kept, sort_keys=True, default=str)


def find_identical_active_run(kind: str, config: dict, *, runs_dir=None) -> Run | None:
    """Returns a queued or running run of a kind with exactly this configuration, if any.

    Starting the same configuration twice (a double click, a second tab) then attaches to
    the run in progress instead of training it twice.

    Args:
        kind: "cv" or "tune".
        config: The configuration as a dict.
        runs_dir: The run store folder.

    Returns:
        The newest such run, or None.
    """
    wanted = comparable_config(config)
    try:
        runs = RunStore(runs_dir).list_runs(kind=kind)
    except OSError:
        return None
    for run in runs:
        if run.state in ACTIVE_STATES and comparable_config(run.config) == wanted:
            return run
    return None


def start_or_attach(kind: str, payload: dict, *, name: str = "", runs_dir=None) -> tuple[str, bool]:
    """Starts a worker for a prepared payload, or attaches to an identical active run.

    Args:
        kind: "cv" or "tune".
        payload: The prepared config.json payload (RunKind.prepare, done once).
        name: A readable run name.
        runs_dir: The run store folder.

    Returns:
        (run id, attached): attached is True when no new run was started.

    Raises:
        ValueError: When the runs folder is not writable.
    """
    existing = find_identical_active_run(kind, payload, runs_dir=runs_dir)
    if existing is not None:
        return existing.id, True
    return start_run(kind, payload, name=name, runs_dir=runs_dir), False


def stop_run(run_id: str, *, runs_dir=None) -> Run:
    """Asks a run's worker to stop after its current batch; finished folds are kept.

    An ensemble that is training a member run stops that member too (the same worker runs both).
    """
    store = RunStore(runs_dir)
    run = store.get(run_id)
    if run.state in FINAL_STATES:
        # A stop file left in a finished run would stop its next resume at once.
        return run
    run.request_stop()
    for member_id in (run.read_json(MEMBERS_FILE) or {}).values():
        if (store.root / member_id).is_dir() and store.get(member_id).state in ACTIVE_STATES:
            store.get(member_id).request_stop()
    status = run.read_json(STATUS_FILE, {}) or {}
    if status.get("state") == "queued" and not pid_is_alive(status.get("pid")):
        run.set_status("stopped")
    return run


def reopen_run(run_id: str, *, runs_dir=None) -> Run:
    """Marks an interrupted, stopped or failed run queued again, for a new worker to continue.

    Raises:
        ValueError: When the run is still active or already completed, or its config.json
            cannot be read back (named, and nothing changed).
    """
    run = RunStore(runs_dir).get(run_id)
    check_config_readable(run)
    return reopen(run)


def check_config_readable(run: Run) -> None:
    """Refuses a run whose config.json its kind cannot read back, naming the file, before anything changes.

    Raises:
        ValueError: With the file and what to do.
    """
    from zoidberg.runs.store import CONFIG_FILE

    path = run.path / CONFIG_FILE
    try:
        get_kind(run.kind).load_config(run.config)
    except (TypeError, ValueError, KeyError, AttributeError) as error:
        state = "missing" if not path.exists() else "damaged (not the JSON the run wrote)"
        raise ValueError(
            f"Run {run.id}'s {path} is {state} ({type(error).__name__}: {str(error)[:200]}): restore it from a copy of "
            "the run, or start the run again."
        ) from None


def resume_run(run_id: str, *, runs_dir=None, launcher: WorkerLauncher | None = None) -> Run:
    """Restarts an interrupted, stopped or failed run in the background from its first unfinished fold.

    Raises:
        ValueError: When the run is still active or already completed.
    """
    from zoidberg.launch.queue import run_capacity

    run_capacity()
    run = reopen_run(run_id, runs_dir=runs_dir)
    (launcher or get_launcher()).submit(run, RunStore(runs_dir))
    return run


def run_worker(run_id: str, *, runs_dir=None, report=None) -> int:
    """Runs a run in this process (the worker's body), after its turn in the queue. Returns an exit code."""
    from zoidberg.launch.queue import wait_for_slot

    store = RunStore(runs_dir)
    run = store.get(run_id)
    # A run on a Ray cluster is scheduled by the cluster; every other run trains on this machine.
    on_cluster = run.config.get("engine") == "ray" and run.config.get("ray_address") not in (None, "local")
    if run.state == "queued" and not on_cluster and not wait_for_slot(run, store):
        return 0
    try:
        get_kind(run.kind).run(run, report)
    except Exception:
        return 1
    return 0


# Evaluations started from the dashboard run as `python -m zoidberg evaluate` in their own
# process; their job files and logs sit beside the evaluations they make.
EVALUATION_JOBS_DIR = ".jobs"


def start_evaluation(
    run_id: str, data_dir: str, *, split: str = "auto", name: str, force: bool = False, tta: bool | None = None, other_site: bool = False,
    runs_dir=None,
) -> dict:
    """Starts `python -m zoidberg evaluate` for a run in a background process and returns its job.

    The evaluation process is the single writer of evaluations/<name>/; the job file only
    says where its log is and which process to watch.

    Args:
        run_id: The run.
        data_dir: The labeled folder.
        split: "auto", "test" or "all".
        name: The evaluation's name (decided before it starts, so the page can follow it).
        force: Score again even when a matching evaluation is stored.
        tta: Average test-time variants (None: the run's own setting).
        other_site: The folder comes from another site (evaluate --other-site).
        runs_dir: The run store folder.

    Returns:
        The job: {"name", "pid", "started", "data_dir", "split", "log"}.
    """
    store = RunStore(runs_dir)
    run = store.get(run_id)
    validate_evaluation_name(name)
    folder = run.path / EVALUATIONS_DIR / EVALUATION_JOBS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    log_path = folder / f"{name}.log"
    command = [sys.executable, "-m", "zoidberg", "--runs-dir", str(store.root.resolve()), "evaluate", "--run", run.id,
               "--data", str(data_dir), "--split", split, "--name", name] + (["--force"] if force else [])
    if tta is not None:
        command += ["--tta", str(bool(tta)).lower()]
    if other_site:
        command.append("--other-site")
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    package_root = str(Path(__file__).resolve().parents[2])
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, environment.get("PYTHONPATH")]))
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=environment,
                                   start_new_session=True, close_fds=True)
    threading.Thread(target=process.wait, name=f"reap-evaluate-{name}", daemon=True).start()
    job = {"name": name, "pid": process.pid, "started": now_iso(), "data_dir": str(data_dir), "split": split, "log": str(log_path)}
    write_json_atomic(folder / f"{name}.json", job)
    return job


def evaluation_job_state(run: Run, name: str) -> dict | None:
    """Where a dashboard-started evaluation is: running, completed or failed (with the log's last error), or None."""
    folder = run.path / EVALUATIONS_DIR / EVALUATION_JOBS_DIR
    job = read_json(folder / f"{name}.json")
    if not job:
        return None
    evaluation = read_json(run.path / EVALUATIONS_DIR / name / EVALUATION_FILE) or {}
    finished = bool(evaluation) and (evaluation.get("created", "") >= job["started"] or evaluation.get("rescored", "") >= job["started"])
    if pid_is_alive(job.get("pid")):
        return {**job, "state": "running"}
    if finished:
        return {**job, "state": "completed"}
    try:
        lines = [line for line in Path(job["log"]).read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    except OSError:
        lines = []
    errors = [line.removeprefix("error: ") for line in lines if line.startswith("error: ")]
    reason = errors[-1] if errors else (lines[-1] if lines else "the evaluation process ended without a result")
    if evaluation and not errors:
        # Reused without a new file: the stored evaluation is the answer.
        return {**job, "state": "completed"}
    return {**job, "state": "failed", "error": reason}
