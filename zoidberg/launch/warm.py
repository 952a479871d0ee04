"""The warm worker: at most one process that has imported TensorFlow and waits for the next run, so that Start trains at once."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from zoidberg.launch.processes import start_detached_worker
from zoidberg.runs.liveness import pid_is_alive
from zoidberg.runs.store import WORKER_LOG, RunStore
from zoidberg.runs.worker import mark_warm_process

# runs/.warm/<pid>.json says a warm worker lives (and whether it is ready); <pid>.claim
# holds the id of the run it must take, written once (O_EXCL) by whoever claims it.
WARM_DIR = ".warm"
ENABLE_ENV = "ZOIDBERG_WARM_WORKER"
IDLE_ENV = "ZOIDBERG_WARM_IDLE_S"
DEFAULT_IDLE_S = 600.0
POLL_S = 0.05
# What the warm worker imports before it is ready: everything a fold needs up to its first batch.
WARM_MODULES = ("tensorflow", "keras", "zoidberg.training.cv", "zoidberg.training.pipeline", "zoidberg.training.callbacks", "zoidberg.models.build")
# A claimed warm worker waits this long for the run's status to name it before it goes on.
HANDOVER_S = 5.0

def warm_enabled() -> bool:
    """Whether the dashboard keeps a warm worker: on unless $ZOIDBERG_WARM_WORKER is 0, false or off."""
    return os.environ.get(ENABLE_ENV, "1").strip().lower() not in ("0", "false", "off", "no")


def idle_seconds() -> float:
    """How long an unclaimed warm worker waits before it exits ($ZOIDBERG_WARM_IDLE_S, default 600)."""
    try:
        return max(1.0, float(os.environ.get(IDLE_ENV, DEFAULT_IDLE_S)))
    except ValueError:
        return DEFAULT_IDLE_S


def _folder(store: RunStore) -> Path:
    return store.root / WARM_DIR


def live_warm_workers(store: RunStore) -> list[dict]:
    """The warm workers of a store that still live and are not claimed; stale files are removed."""
    folder = _folder(store)
    if not folder.is_dir():
        return []
    workers = []
    for path in sorted(folder.glob("*.json")):
        try:
            facts = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not pid_is_alive(facts.get("pid")):
            path.unlink(missing_ok=True)
            (folder / f"{path.stem}.claim").unlink(missing_ok=True)
            continue
        if not (folder / f"{path.stem}.claim").exists():
            workers.append(facts)
    return workers


def ensure_warm_worker(store: RunStore) -> bool:
    """Starts a warm worker for the store when none lives (at most one); returns whether one was started.

    Called when the Train or Tune page opens: by the time Start is pressed the worker has
    imported TensorFlow. It exits by itself after idle_seconds() unclaimed.
    """
    if not warm_enabled() or live_warm_workers(store):
        return False
    _folder(store).mkdir(parents=True, exist_ok=True)
    pid = start_detached_worker(store.root, ["--warm"], _folder(store) / "warm.log")
    # Written here too, so that a second page opened at once sees it starting.
    _write_facts(store, pid, ready=False)
    return True


def claim_warm_worker(store: RunStore, run_id: str) -> int | None:
    """Hands a run to a ready warm worker; returns its pid, or None when none is ready.

    Args:
        store: The run store.
        run_id: The run the worker must take.
    """
    for facts in live_warm_workers(store):
        if not facts.get("ready"):
            continue
        claim = _folder(store) / f"{facts['pid']}.claim"
        try:
            descriptor = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            continue
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(run_id)
        return int(facts["pid"])
    return None


def _write_facts(store: RunStore, pid: int, *, ready: bool) -> None:
    path = _folder(store) / f"{pid}.json"
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({"pid": pid, "ready": ready, "since": time.time()}), encoding="utf-8")
    os.replace(temporary, path)


def serve_warm(store: RunStore, run_worker, report=None) -> int:
    """The warm worker's body: imports TensorFlow and the training modules, then waits for a claim and runs it.

    Args:
        store: The run store it serves.
        run_worker: jobs.run_worker, which runs the claimed run (after its turn in the queue).
        report: Console reporter.

    Returns:
        The run's exit code, or 0 when it was never claimed (idle) or its store vanished.
    """
    import importlib

    pid = os.getpid()
    folder = _folder(store)
    folder.mkdir(parents=True, exist_ok=True)
    _write_facts(store, pid, ready=False)
    for name in WARM_MODULES:
        importlib.import_module(name)
    mark_warm_process()
    _write_facts(store, pid, ready=True)
    claim = folder / f"{pid}.claim"
    deadline = time.monotonic() + idle_seconds()
    try:
        while not claim.exists():
            if time.monotonic() > deadline or not folder.is_dir():
                # Retiring claims this worker for no run, so that nobody hands it one now.
                try:
                    os.close(os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
                    return 0
                except FileExistsError:
                    break  # Claimed at the last moment: serve it.
            time.sleep(POLL_S)
        run_id = claim.read_text(encoding="utf-8").strip()
    finally:
        (folder / f"{pid}.json").unlink(missing_ok=True)
    run = store.get(run_id)
    # From here on this process is the run's worker: its output goes to the run's log.
    with open(run.path / WORKER_LOG, "ab") as log:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    # The claimer records this process as the run's worker right after its claim.
    handover = time.monotonic() + HANDOVER_S
    while run.status().get("pid") != pid and time.monotonic() < handover:
        time.sleep(POLL_S)
    try:
        return run_worker(run_id, runs_dir=store.root, report=report)
    finally:
        claim.unlink(missing_ok=True)
