"""The runner under pressure (issue 10, items 1 and 8): Retry-After from the queue's own models and depth,
and a model LRU that makes room before a model is built."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from backend.runner import ModelLRU, Runner
from tests.integration.test_api import TINY, models_env, tiny_models_cache, write_tiny_model
from tests.integration.test_runner import picture

pytestmark = pytest.mark.integration
__all__ = ["models_env", "tiny_models_cache"]

SLOW = "tiny-vit-slow"
SLOW_WORK_S = 0.3  # the analyses of one image of SLOW (the work below sleeps this long)


async def test_retry_after_counts_each_waiting_model_at_its_own_pace(models_env: Path) -> None:
    write_tiny_model(models_env, SLOW, seed=3)
    gate = threading.Event()

    def work(_loaded: Any, trace: Any, _i: int) -> str:
        if trace.model_id == SLOW:
            time.sleep(SLOW_WORK_S)
        elif not gate.is_set():
            gate.wait(10)  # holds the device while the queue fills
        return str(trace.model_id)

    runner = Runner("cpu", max_batch=4, max_wait_s=0.05, queue_size=64)
    await runner.start()
    try:
        # Measure both models: one SLOW batch of 4 (about 1.2 s), then many fast batches of TINY, so that
        # a mean over all batches would call the device fast.
        gate.set()
        await asyncio.gather(*(runner.submit(SLOW, picture(i), work) for i in range(4)))
        for i in range(12):
            await runner.submit(TINY, picture(10 + i), work)
        slow_batch = runner.batch_seconds(SLOW)
        assert slow_batch >= 4 * SLOW_WORK_S
        assert runner.batch_seconds(TINY) < slow_batch / 4
        gate.clear()
        busy = asyncio.create_task(runner.submit(TINY, picture(30), work))  # on the device, gated
        await asyncio.sleep(0.2)
        waiting = [asyncio.create_task(runner.submit(SLOW, picture(40 + i), work)) for i in range(12)]
        await asyncio.sleep(0.05)
        assert runner.depth == 12
        # 12 SLOW requests are 3 batches of 4 at SLOW's pace, behind the batch on the device.
        assert runner.drain_seconds() >= 3 * slow_batch
        assert runner.retry_after() >= 3 * 4 * SLOW_WORK_S
        gate.set()
        started = time.perf_counter()
        await asyncio.gather(busy, *waiting)
        drained = time.perf_counter() - started
        assert drained >= 3 * 4 * SLOW_WORK_S  # the sleeps alone: the estimate was not an overstatement
    finally:
        gate.set()
        await runner.stop()


@dataclass
class Fake:
    name: str
    nbytes: int


def test_the_lru_makes_room_before_a_model_is_built() -> None:
    held: list[int] = []  # bytes held by the LRU when each load starts

    lru: ModelLRU

    def loader(model_id: str) -> Fake:
        held.append(lru.total_bytes)
        return Fake(model_id, 60)

    def sizer(model_id: str) -> int:
        if model_id == "huge":
            raise ValueError("huge is over the bound")  # the real sizer raises ModelTooLarge
        return 60

    lru = ModelLRU(100, loader, sizer)
    with lru.pinned("a"):
        pass
    with lru.pinned("b"):  # a (60) + b (60) > 100: a leaves before b is built
        pass
    assert held == [0, 0] and set(lru.listing()) == {"b"}
    with pytest.raises(ValueError, match="over the bound"), lru.pinned("huge"):
        pass
    assert set(lru.listing()) == {"b"} and held == [0, 0]  # refused before any load
