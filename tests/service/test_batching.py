"""The batchers: concurrent items answered together, errors kept with their item."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from market_nn_plus_ultra.service.batching import BatchQueue, LoopBatcher


class Recorder:
    """A batch function that squares numbers, fails on negatives, records batch sizes."""

    def __init__(self, delay: float = 0.0) -> None:
        self.sizes: list[int] = []
        self.delay = delay

    def __call__(self, items):
        self.sizes.append(len(items))
        time.sleep(self.delay)
        return [ValueError(f"negative {x}") if x < 0 else x * x for x in items]


def test_loop_batcher_answers_what_arrived_together_in_one_call():
    run = Recorder()
    batcher = LoopBatcher(run, max_batch=8)

    async def main():
        return await asyncio.gather(*(batcher(x) for x in range(20)), return_exceptions=True)

    assert asyncio.run(main()) == [x * x for x in range(20)]
    assert run.sizes == [8, 8, 4]  # 20 concurrent callers, at most 8 a batch
    assert (batcher.batches, batcher.items) == (3, 20)


def test_loop_batcher_keeps_errors_with_their_item():
    batcher = LoopBatcher(Recorder(), max_batch=32)

    async def main():
        return await asyncio.gather(*(batcher(x) for x in (1, -2, 3)), return_exceptions=True)

    one, two, three = asyncio.run(main())
    assert (one, three) == (1, 9)
    assert isinstance(two, ValueError) and "negative -2" in str(two)


def test_loop_batcher_a_failing_batch_fails_each_caller():
    def broken(items):
        raise RuntimeError("kernel fault")

    batcher = LoopBatcher(broken, max_batch=4)

    async def main():
        return await asyncio.gather(*(batcher(x) for x in range(3)), return_exceptions=True)

    assert all(isinstance(r, RuntimeError) for r in asyncio.run(main()))


def test_a_lone_item_runs_at_once():
    run = Recorder()
    batcher = LoopBatcher(run, max_batch=8)

    async def main():
        return [await batcher(x) for x in range(3)]  # one after another

    assert asyncio.run(main()) == [0, 1, 4]
    assert run.sizes == [1, 1, 1]


def test_batch_queue_batches_threads_and_its_worker_exits_when_idle():
    run = Recorder(delay=0.02)
    batches = BatchQueue(run, max_batch=16, idle_seconds=0.2)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(batches, range(40)))
    assert results == [x * x for x in range(40)]
    assert len(run.sizes) < 40 and max(run.sizes) > 1  # threads shared batches
    with pytest.raises(ValueError, match="negative -1"):
        batches(-1)
    deadline = time.monotonic() + 5
    while batches._worker is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert batches._worker is None  # no thread left behind
    assert not any(t.name == "batch" for t in threading.enumerate())
    assert batches(3) == 9  # and a new submission starts one again


def test_max_batch_must_be_positive():
    with pytest.raises(ValueError, match="max_batch"):
        LoopBatcher(Recorder(), max_batch=0)
    with pytest.raises(ValueError, match="max_batch"):
        BatchQueue(Recorder(), max_batch=0)
