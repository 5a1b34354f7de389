"""The model runner: dynamic batching by model, bounded queue, timeouts, the byte-bounded model LRU."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from backend.runner import ModelLRU, QueueFull, RequestTimeout, Runner, RunnerStopped, default_loader
from tests.integration.test_api import TINY, models_env, tiny_models_cache, write_tiny_model

__all__ = ["models_env", "tiny_models_cache"]


def picture(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((70, 70, 3)) * 255).astype(np.uint8))


def batch_info(_loaded: Any, trace: Any, i: int) -> tuple[str, int, int]:
    return trace.model_id, trace.batch_size, i


async def test_batches_requests_of_one_model(models_env: Path) -> None:
    runner = Runner("cpu", max_batch=4, max_wait_s=0.2, queue_size=16)
    await runner.start()
    try:
        results = await asyncio.gather(*(runner.submit(TINY, picture(i), batch_info) for i in range(6)))
    finally:
        await runner.stop()
    assert [r[0] for r in results] == [TINY] * 6
    assert sorted(r[1] for r in results) == [2, 2, 4, 4, 4, 4]  # one batch of 4, one of 2
    assert [r[2] for r in results] == [0, 1, 2, 3, 0, 1]  # each request got its own slice, in order
    assert runner.stats.captures == 2 and runner.stats.images == 6


async def test_models_are_never_mixed_in_a_batch(models_env: Path) -> None:
    write_tiny_model(models_env, "tiny-vit-b", seed=1)
    runner = Runner("cpu", max_batch=8, max_wait_s=0.1, queue_size=16)
    await runner.start()
    try:
        wanted = [TINY, "tiny-vit-b"] * 3
        results = await asyncio.gather(
            *(runner.submit(m, picture(i), batch_info) for i, m in enumerate(wanted))
        )
    finally:
        await runner.stop()
    assert [r[0] for r in results] == wanted
    assert {r[1] for r in results} == {3}  # three of each model per batch
    assert runner.stats.captures == 2


async def test_the_work_of_each_request_is_its_own(models_env: Path) -> None:
    def work(_loaded: Any, trace: Any, i: int) -> float:
        if i == 1:
            raise ValueError("the second one fails")
        return float(trace.x_out[0][i].sum())

    runner = Runner("cpu", max_batch=3, max_wait_s=0.2)
    await runner.start()
    try:
        out = await asyncio.gather(
            *(runner.submit(TINY, picture(i), work) for i in range(3)), return_exceptions=True
        )
    finally:
        await runner.stop()
    assert isinstance(out[0], float) and isinstance(out[2], float)
    assert isinstance(out[1], ValueError)


async def test_full_queue_and_timeout(models_env: Path) -> None:
    gate = threading.Event()

    def gated(model_id: str, device: Any) -> Any:
        gate.wait(10)
        return default_loader(model_id, device)

    runner = Runner("cpu", max_batch=1, max_wait_s=0.0, queue_size=2, loader=gated)
    await runner.start()
    try:
        first = asyncio.create_task(runner.submit(TINY, picture(0), batch_info))  # holds the device
        await asyncio.sleep(0.1)
        waiting = [
            asyncio.create_task(runner.submit(TINY, picture(i), batch_info, timeout=0.3)) for i in (1, 2)
        ]
        await asyncio.sleep(0.05)
        assert runner.depth == 2
        with pytest.raises(QueueFull) as busy:
            await runner.submit(TINY, picture(3), batch_info)
        assert busy.value.retry_after >= 1 and "queue_size 2" in str(busy.value)
        for task in waiting:
            with pytest.raises(RequestTimeout):
                await task
        assert runner.depth == 0  # timed-out requests left the queue
        gate.set()
        assert (await first)[0] == TINY
        assert runner.stats.captures == 1  # the abandoned requests never ran
    finally:
        gate.set()
        await runner.stop()
    with pytest.raises(RunnerStopped):
        await runner.submit(TINY, picture(4), batch_info)


async def test_warmup_reports_each_model(models_env: Path) -> None:
    runner = Runner("cpu")
    await runner.start()
    try:
        report = await runner.warmup([TINY, "no-such-model"])
    finally:
        await runner.stop()
    assert report[TINY] == "ok"
    assert "no-such-model" in report["no-such-model"]
    assert runner.models.listing()[TINY]["pins"] == 0


@dataclass
class Fake:
    name: str
    nbytes: int


def test_model_lru_is_byte_bounded_and_pins() -> None:
    loads: list[str] = []

    def loader(model_id: str) -> Fake:
        loads.append(model_id)
        return Fake(model_id, 60)

    lru = ModelLRU(100, loader)
    with lru.pinned("a") as a:
        assert a.name == "a"
        with lru.pinned("b"):  # a is pinned: both stay, over the bound for now
            assert set(lru.listing()) == {"a", "b"}
    with lru.pinned("c"):  # a and b are free: the least recently used go first
        pass
    assert set(lru.listing()) == {"c"} and lru.evictions == 2
    with lru.pinned("c"):
        pass
    assert loads == ["a", "b", "c"]  # c was reused, not reloaded
    big = ModelLRU(10, lambda m: Fake(m, 500))
    with big.pinned("huge"):
        pass
    assert set(big.listing()) == {"huge"}  # the most recent model stays even alone over the bound


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
async def test_cuda_runner_matches_cpu(models_env: Path) -> None:
    """The same bundle on the GPU as on the CPU (run on a machine with CUDA)."""
    from backend.service.bundle import build_bundles, model_info_of

    async def bundle_on(device: str) -> Any:
        runner = Runner(device, max_batch=2, max_wait_s=0.05)
        await runner.start()
        try:
            info = await runner.with_model(TINY, model_info_of)
            return await asyncio.gather(
                *(runner.submit(TINY, picture(i), lambda _l, t, j: build_bundles(info, t)[j]) for i in (0, 1))
            )
        finally:
            await runner.stop()

    cpu, gpu = await bundle_on("cpu"), await bundle_on("cuda:0")
    for c, g in zip(cpu, gpu, strict=True):
        for a, b in zip(c.attention, g.attention, strict=True):
            np.testing.assert_allclose(a.astype(np.float32), b.astype(np.float32), atol=2e-3)
        np.testing.assert_allclose(c.spectrum["out"], g.spectrum["out"], rtol=1e-3, atol=1e-3)
        assert c.metrics["layers"] == g.metrics["layers"]
