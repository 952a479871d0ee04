"""Console progress: a rich bar on a terminal, a plain line every few seconds in a log, nothing with --json."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator

# A log file gets one line per this many seconds at most, so that it stays readable.
PLAIN_INTERVAL_S = 5.0

ProgressCallback = Callable[[int, int], None]


@contextlib.contextmanager
def progress_bar(description: str, *, enabled: bool = True, stream=None) -> Iterator[ProgressCallback]:
    """Yields a `progress(done, total)` callback that draws one task's progress on standard error.

    Args:
        description: What is counted, e.g. "Predicting".
        enabled: False (with --json) draws nothing.
        stream: Where to draw (default: standard error).

    Yields:
        The callback; call it with the units done and the total.
    """
    stream = stream or sys.stderr
    if not enabled:
        yield lambda done, total: None
        return
    if stream.isatty():
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
        with Progress(*columns, console=Console(file=stream), transient=False) as bar:
            task = bar.add_task(description, total=None)

            def update(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            yield update
        return
    last = [0.0]

    def plain(done: int, total: int) -> None:
        now = time.monotonic()
        if done >= total or now - last[0] >= PLAIN_INTERVAL_S:
            last[0] = now
            print(f"{description}: {done}/{total}", file=stream, flush=True)

    yield plain
