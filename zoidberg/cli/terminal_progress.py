"""Console progress: rich bars on a terminal, a plain line every few seconds in a log, nothing with --json."""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator

from zoidberg.runs.progress import Progress, ProgressFolder, eta_seconds, format_duration

# A log file gets one line per this many seconds at most, so that it stays readable.
PLAIN_INTERVAL_S = 5.0
# How often a followed run's events are read.
FOLLOW_POLL_S = 0.5

ProgressCallback = Callable[[int, int], None]
TaskCallback = Callable[..., None]


@contextlib.contextmanager
def progress_tasks(*, enabled: bool = True, stream=None) -> Iterator[TaskCallback]:
    """Yields `update(key, done, total, description=None, detail="")`, which draws one bar per key on standard error.

    Args:
        enabled: False (with --json) draws nothing.
        stream: Where to draw (default: standard error).

    Yields:
        The callback; a key seen for the first time gets a new bar; the description (default:
        the key) may change as the task goes.
    """
    stream = stream or sys.stderr
    if not enabled:
        yield lambda key, done, total, description=None, detail="": None
        return
    if stream.isatty():
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.progress import Progress as Bars

        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
        with Bars(*columns, console=Console(file=stream), transient=False) as bars:
            tasks: dict[str, int] = {}

            def update(key: str, done: int, total: int | None, description: str | None = None, detail: str = "") -> None:
                text = f"{description or key}{detail}"
                if key not in tasks:
                    tasks[key] = bars.add_task(text, total=total)
                bars.update(tasks[key], completed=done, total=total, description=text)

            yield update
        return
    last: dict[str, tuple[str, str, float]] = {}

    def plain(key: str, done: int, total: int | None, description: str | None = None, detail: str = "") -> None:
        # A line when a task starts, finishes or changes what it counts (the next fold), and
        # otherwise at most every PLAIN_INTERVAL_S, so that a log stays readable; the detail
        # (time left) changes all the time and is shown, never a reason for a line.
        now = time.monotonic()
        label = description or key
        count = f"{done}/{total if total is not None else '?'}"
        line = f"{label}{detail}: {count}"
        previous_line, previous_label, previous_time = last.get(key, (None, None, 0.0))
        if previous_line is not None and previous_line.endswith(f": {count}") and label == previous_label:
            return
        finished = total is not None and done >= total
        if label != previous_label or finished or now - previous_time >= PLAIN_INTERVAL_S:
            last[key] = (line, label, now)
            print(line, file=stream, flush=True)

    yield plain


@contextlib.contextmanager
def progress_bar(description: str, *, enabled: bool = True, stream=None) -> Iterator[ProgressCallback]:
    """Yields a `progress(done, total)` callback for one task (see progress_tasks)."""
    with progress_tasks(enabled=enabled, stream=stream) as update:
        yield lambda done, total: update(description, done, total)


def draw_run_progress(progress: Progress, update: TaskCallback) -> None:
    """Turns a run's progress into bars: images decoded, backbone features, folds (or trials), the epoch's batches."""
    if progress.loading:
        update("Loading images", *progress.loading)
    if progress.features:
        update("Backbone features", *progress.features)
    unit = progress.unit.capitalize()
    if progress.total and progress.phase in ("training", "evaluating", "done"):
        eta = eta_seconds(progress) if progress.phase == "training" else None
        left = f" (at most {format_duration(eta)} left)" if eta is not None else ""
        update("units", len(progress.finished), progress.total, f"{unit}s finished", detail=left)
    if progress.current and not progress.in_current and progress.epochs_done:
        # The unit ended (early stopping may end it before its planned epochs): its bar is full.
        update("epochs", progress.epochs_done, progress.epochs_done, f"{unit} {progress.current}: epochs")
    if progress.in_current and progress.epochs:
        update("epochs", progress.epochs_done, progress.epochs, f"{unit} {progress.current}: epochs")
        if progress.steps and progress.epoch > progress.epochs_done:
            update("batches", progress.batch, int(progress.steps), f"{unit} {progress.current}, epoch {progress.epoch}: batches")
        elif progress.steps and progress.epochs_done:
            update("batches", int(progress.steps), int(progress.steps), f"{unit} {progress.current}, epoch {progress.epochs_done}: batches")


@contextlib.contextmanager
def follow_run(run, *, enabled: bool = True, stream=None) -> Iterator[None]:
    """Draws a run's progress from its events while the body trains it in this process.

    The bars read the same events.jsonl as the dashboard, on a thread, so training code
    needs no console of its own.

    Args:
        run: The run being trained.
        enabled: False (with --json) draws nothing.
        stream: Where to draw (default: standard error).
    """
    if not enabled:
        yield
        return
    with progress_tasks(stream=stream) as update:
        stop = threading.Event()
        folder = ProgressFolder()
        offset = [0]

        def poll() -> None:
            events, offset[0] = run.read_events(offset[0])
            if events:
                draw_run_progress(folder.add(events), update)

        def loop() -> None:
            while not stop.wait(FOLLOW_POLL_S):
                poll()

        thread = threading.Thread(target=loop, name="zoidberg-progress", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=5)
            poll()
