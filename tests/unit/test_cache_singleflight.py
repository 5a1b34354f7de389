from __future__ import annotations

import asyncio

import pytest

from backend.cache.singleflight import SingleFlight


async def test_fifty_callers_one_computation() -> None:
    sf = SingleFlight()
    calls = 0

    async def compute() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.02)
        return 42

    results = await asyncio.gather(*(sf.run("k", compute) for _ in range(50)))
    assert results == [42] * 50 and calls == 1
    assert (sf.started, sf.joined, len(sf)) == (1, 49, 0)
    assert await sf.run("k", compute) == 42 and calls == 2  # forgotten once done


async def test_exception_shared_then_forgotten() -> None:
    sf = SingleFlight()
    calls = 0

    async def boom() -> None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        raise RuntimeError("model exploded")

    results = await asyncio.gather(*(sf.run("k", boom) for _ in range(10)), return_exceptions=True)
    assert calls == 1 and all(isinstance(r, RuntimeError) for r in results)
    assert len(sf) == 0
    with pytest.raises(RuntimeError):
        await sf.run("k", boom)
    assert calls == 2


async def test_different_keys_run_separately() -> None:
    sf = SingleFlight()

    async def value(v: str) -> str:
        await asyncio.sleep(0.01)
        return v

    assert await asyncio.gather(sf.run("a", lambda: value("a")), sf.run("b", lambda: value("b"))) == [
        "a",
        "b",
    ]
    assert sf.started == 2


async def test_cancelled_caller_does_not_cancel_the_others() -> None:
    sf = SingleFlight()
    gate = asyncio.Event()

    async def compute() -> str:
        await gate.wait()
        return "done"

    first = asyncio.ensure_future(sf.run("k", compute))
    second = asyncio.ensure_future(sf.run("k", compute))
    await asyncio.sleep(0)
    first.cancel()
    gate.set()
    assert await second == "done"
    with pytest.raises(asyncio.CancelledError):
        await first
