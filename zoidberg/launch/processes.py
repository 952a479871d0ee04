"""Starting a detached `python -m zoidberg` worker process: its environment, its log, and reaping it when it exits."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path


def start_detached_worker(runs_dir: Path, arguments: list[str], log_path: Path) -> int:
    """Starts `python -m zoidberg --runs-dir RUNS_DIR worker ARGUMENTS` in its own session; returns its pid.

    The child is in a new session, so closing the browser tab, reloading the page or
    stopping the Streamlit server does not kill it; it is reaped when it exits, so it never
    lingers as a zombie of the process that started it.

    Args:
        runs_dir: The run store folder.
        arguments: What follows `worker` (a run id, or --warm).
        log_path: The file its output is appended to.
    """
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    # The package root must be importable by the child whatever its working directory.
    package_root = str(Path(__file__).resolve().parents[2])
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, environment.get("PYTHONPATH")]))
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "zoidberg", "--runs-dir", str(Path(runs_dir).resolve()), "worker", *arguments],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=environment, start_new_session=True, close_fds=True,
        )
    threading.Thread(target=process.wait, name=f"reap-{process.pid}", daemon=True).start()
    return process.pid
