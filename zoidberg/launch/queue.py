"""The run queue of the local engines: a worker waits its turn, first come first served, while the machine is full."""

from __future__ import annotations

import os
import time

from zoidberg.runs import progress as events
from zoidberg.runs.store import Run, RunStore

MAX_RUNS_ENV = "ZOIDBERG_MAX_RUNS"
POLL_S = 1.0


def run_capacity() -> int:
    """How many runs may train at once: $ZOIDBERG_MAX_RUNS, or one per two CPU cores (at least one)."""
    value = os.environ.get(MAX_RUNS_ENV, "").strip()
    if value:
        try:
            count = int(value)
        except ValueError:
            raise ValueError(f"{MAX_RUNS_ENV} must be a whole number of runs, not {value!r}.") from None
        if count < 1:
            raise ValueError(f"{MAX_RUNS_ENV} must be at least 1 (how many runs may train at once), not {count}: unset it for one per two cores.")
        return count
    return max(1, (os.cpu_count() or 1) // 2)


def _place(run: Run) -> tuple[float, str]:
    """Where a queued run stands in line: when it was queued, then its id (run ids share a second)."""
    return float(run.status().get("queued_at") or float("inf")), run.id


def runs_ahead(run: Run, store: RunStore) -> tuple[int, int]:
    """(runs training now, queued runs that came before this one) in the run's store."""
    running = queued_before = 0
    place = _place(run)
    for other in store.list_runs():
        if other.id == run.id:
            continue
        state = other.state
        if state == "running":
            running += 1
        elif state == "queued" and other.status().get("waiting") and _place(other) < place:
            queued_before += 1
    return running, queued_before


def wait_for_slot(run: Run, store: RunStore, *, capacity: int | None = None, poll_s: float = POLL_S) -> bool:
    """Keeps a started run queued until the machine has room for it.

    Args:
        run: The run whose worker is starting.
        store: Its store (the queue is the store's runs).
        capacity: Runs at once (default: run_capacity()).
        poll_s: Seconds between two looks.

    Returns:
        True when the run may start; False when it was cancelled (stopped) while queued,
        in which case it is recorded as stopped.
    """
    capacity = run_capacity() if capacity is None else capacity
    # Waiting is recorded before the first look, so that two workers started together see
    # each other; the one created first goes first. It stays set until the worker marks the
    # run running, so a later run never slips in between.
    queued_at = run.status().get("queued_at") or time.time()
    run.set_status("queued", waiting=True, queued_at=queued_at, pid=os.getpid(), host=os.uname().nodename)
    shown = None
    while True:
        if run.stop_requested:
            run.set_status("stopped", error=None, waiting=False, position=None, folds_finished=0)
            run.append_event(events.RUN_FINISHED, state="stopped", folds_finished=0)
            return False
        running, before = runs_ahead(run, store)
        if running + before < capacity:
            return True
        position = before + 1
        if position != shown:
            run.set_status("queued", waiting=True, position=position)
            shown = position
        time.sleep(poll_s)
