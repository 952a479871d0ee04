"""Concurrent requests gathered into one forward pass, behind a bounded queue."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any


class QueueFullError(RuntimeError):
    """More requests wait than the queue holds: the client should retry later."""


class MicroBatcher:
    """Gathers items submitted from concurrent requests and scores them together.

    One batch runs at a time, in a thread (a forward pass must not block the event loop);
    while it runs, new items queue and form the next batch. The queue is bounded, so a
    flood is refused at once (QueueFullError) instead of growing memory and latency.

    Args:
        score: Scores a list of items in one call and returns one result per item.
        max_batch: The most items in one call.
        max_wait_s: How long the first item of a batch waits for others to join it.
        max_queue: The most items waiting.
    """

    def __init__(self, score: Callable[[Sequence[Any]], list], *, max_batch: int = 16, max_wait_s: float = 0.004, max_queue: int = 64):
        if max_batch < 1 or max_queue < 1 or max_wait_s < 0:
            raise ValueError("max_batch and max_queue must be at least 1, and max_wait_s at least 0")
        self.score = score
        self.max_batch, self.max_wait_s, self.max_queue = max_batch, max_wait_s, max_queue
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        self.batches = 0
        self.items = 0

    @property
    def waiting(self) -> int:
        """Items queued and not yet scored."""
        return self._queue.qsize() if self._queue is not None else 0

    def _start(self) -> asyncio.Queue:
        # Started lazily, in the loop that serves requests (uvicorn's, or a Ray Serve replica's).
        if self._queue is None or self._worker is None or self._worker.done():
            self._queue = asyncio.Queue(maxsize=self.max_queue)
            self._worker = asyncio.get_running_loop().create_task(self._run())
        return self._queue

    async def submit(self, item: Any) -> Any:
        """Scores one item with whatever else is waiting; raises QueueFullError when the queue is full."""
        queue = self._start()
        future = asyncio.get_running_loop().create_future()
        try:
            queue.put_nowait((item, future))
        except asyncio.QueueFull:
            raise QueueFullError(f"{self.max_queue} images are already waiting") from None
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self.max_wait_s
            while len(batch) < self.max_batch:
                remaining = deadline - loop.time()
                try:
                    batch.append(self._queue.get_nowait() if remaining <= 0 else await asyncio.wait_for(self._queue.get(), remaining))
                except (asyncio.QueueEmpty, asyncio.TimeoutError):
                    break
            items, futures = [item for item, _ in batch], [future for _, future in batch]
            try:
                results = await asyncio.to_thread(self.score, items)
            except Exception as error:  # The batch's requests answer with the failure; the worker goes on.
                for future in futures:
                    if not future.done():
                        future.set_exception(error)
                continue
            self.batches += 1
            self.items += len(items)
            for future, result in zip(futures, results):
                if not future.done():  # A client that went away leaves a cancelled future.
                    future.set_result(result)
