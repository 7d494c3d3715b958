"""Concurrent requests of one model, answered together.

Both batchers call ``run`` once on every item waiting (up to ``max_batch``): while one
batch runs, the next one gathers. Nothing waits for a batch to fill — a lone request
runs at once — so batching adds no latency at low load and, under load, turns many small
forward passes into one (16 one-window passes of the desktop model cost about 3 times
one 16-window pass on a CPU core). ``run`` returns one result per item, an exception in
the place of an item that failed: a bad request fails alone.

- :class:`LoopBatcher` (the HTTP path) runs batches on the event loop itself, as soon as
  the requests that arrived together have been parsed: no thread hand-offs, which on a
  GIL-bound interpreter cost about a quarter of a request's CPU time. The loop is busy for
  the length of one batch (about 10 ms for 16 requests of the desktop model).
- :class:`BatchQueue` (callers in threads: ``Predictor.from_bars``) hands items to one
  worker thread, which exits after ``idle_seconds`` without work and is started again by
  the next submission, so a model replaced by a reload leaves no thread behind.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

__all__ = ["BatchQueue", "LoopBatcher"]

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class BatchQueue(Generic[T, R]):
    """Items submitted from any thread, run in batches by one worker thread."""

    def __init__(
        self,
        run: Callable[[Sequence[T]], Sequence[R | BaseException]],
        max_batch: int,
        *,
        name: str = "batch",
        idle_seconds: float = 30.0,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.run = run
        self.max_batch = max_batch
        self.name = name
        self.idle_seconds = idle_seconds
        self._queue: queue.SimpleQueue[tuple[T, Future[R]]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self.batches = 0  # batches run so far
        self.items = 0  # items answered so far

    def submit(self, item: T) -> Future[R]:
        """Queue ``item``; the future holds its result (or raises its exception)."""
        future: Future[R] = Future()
        self._queue.put((item, future))
        with self._lock:
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._loop, name=self.name, daemon=True)
                self._worker.start()
        return future

    def __call__(self, item: T) -> R:
        """Submit ``item`` and wait for its result."""
        return self.submit(item).result()

    def _loop(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=self.idle_seconds)
            except queue.Empty:
                with self._lock:  # exit only if nothing arrived since the timeout
                    if self._queue.empty():
                        self._worker = None
                        return
                continue
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._answer(batch)

    def _answer(self, batch: list[tuple[T, Future[R]]]) -> None:
        live = [(item, f) for item, f in batch if f.set_running_or_notify_cancel()]
        if live:
            self.batches, self.items = self.batches + 1, self.items + len(live)
            _run_batch(self.run, live, self.name)


def _run_batch(
    run: Callable[[Sequence[T]], Sequence[R | BaseException]],
    live: list[tuple[T, Future[R] | asyncio.Future[R]]],
    name: str,
) -> None:
    """``run`` on the items of ``live``, each result (or exception) into its future; when
    ``run`` itself fails, every future gets that error."""
    try:
        results = run([item for item, _ in live])
        if len(results) != len(live):
            raise RuntimeError(
                f"{name}: the batch function returned {len(results)} results for {len(live)} items"
            )
    except Exception as err:  # the whole batch failed: every caller sees why
        log.exception("%s: a batch of %d failed", name, len(live))
        results = [err] * len(live)
    for (_, future), result in zip(live, results, strict=True):
        if future.done():  # an asyncio caller that went away meanwhile
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)


class LoopBatcher(Generic[T, R]):
    """Items submitted by coroutines, run in batches on their event loop."""

    def __init__(
        self, run: Callable[[Sequence[T]], Sequence[R | BaseException]], max_batch: int
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.run = run
        self.max_batch = max_batch
        # per event loop (one in a server; tests may drive an app from several)
        self._pending: dict[asyncio.AbstractEventLoop, list[tuple[T, asyncio.Future[R]]]] = {}
        self.batches = 0
        self.items = 0

    async def __call__(self, item: T) -> R:
        """``item``'s result, answered with whatever else is waiting."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        pending = self._pending.setdefault(loop, [])
        pending.append((item, future))
        if len(pending) == 1:  # the first of a batch schedules it, after the others arrive
            loop.call_soon(self._drain, loop)
        return await future

    def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        pending = self._pending.pop(loop, [])
        batch, rest = pending[: self.max_batch], pending[self.max_batch :]
        if rest:
            self._pending[loop] = rest
            loop.call_soon(self._drain, loop)
        live = [(item, f) for item, f in batch if not f.done()]  # not cancelled meanwhile
        if live:
            self.batches, self.items = self.batches + 1, self.items + len(live)
            _run_batch(self.run, live, "predict-batch")
