"""Whether a run's worker is alive: its process on this host, its heartbeat, and the failure it last reported."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from zoidberg.runs.files import read_json

# A worker writes a heartbeat every few seconds; one silent for this long, or whose
# process is gone, is dead and its run is shown as interrupted.
HEARTBEAT_TIMEOUT_S = 60.0


def pid_is_alive(pid: int | None) -> bool:
    """Tells whether a process with `pid` exists and is not a zombie."""
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{int(pid)}/stat", encoding="utf-8") as handle:
            return handle.read().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return True


def worker_is_dead(status: dict, heartbeat_path: Path) -> bool:
    """Tells whether the worker of a queued or running run is gone.

    Args:
        status: The run's status.json.
        heartbeat_path: Its heartbeat.json, read only when the process alone cannot tell.
    """
    pid = status.get("pid")
    if status.get("state") == "queued":
        # A queued run has no worker yet; it is dead only if its launcher gave up.
        created = status.get("updated_unix", time.time())
        return time.time() - created > HEARTBEAT_TIMEOUT_S and not pid_is_alive(pid)
    if pid and status.get("host") == os.uname().nodename and not pid_is_alive(pid):
        return True
    heartbeat = read_json(heartbeat_path, default={}) or {}
    last = heartbeat.get("unix", status.get("updated_unix", time.time()))
    return time.time() - last > HEARTBEAT_TIMEOUT_S


def last_failure(events_path: Path) -> str | None:
    """The error of the last "failed" event (zoidberg.runs.progress.FAILED) in the tail of events.jsonl, if any."""
    try:
        with open(events_path, "rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - 65536))
            tail = handle.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    for line in reversed(tail):
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("type") == "failed":
            return str(event.get("error") or "") or None
    return None
