"""RedisStore against a real redis-server: round trips, then Redis stopped and restarted mid-run."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable
from typing import TypeVar

import numpy as np
import pytest
import redis

from backend.cache.codec import decode_array, encode_array
from backend.cache.store import RedisStore
from tests.conftest import RedisServer

pytestmark = pytest.mark.integration
T = TypeVar("T")


def _key(name: str) -> str:
    return f"vitscope-test:{uuid.uuid4().hex}:{name}"  # unique: other sessions share the test db


async def test_round_trip(redis_url: str) -> None:
    store = RedisStore(redis_url, timeout=0.2)
    try:
        assert await store.ping()
        a, b, missing = _key("a"), _key("b"), _key("missing")
        arr = np.random.default_rng(0).random((6, 50, 50), dtype=np.float32)
        await store.set(a, encode_array(arr))
        await store.set(b, b"{}", ttl=60)
        np.testing.assert_array_equal(decode_array(await store.get(a) or b""), arr.astype(np.float16))
        assert await store.get_many([a, missing, b]) == [await store.get(a), None, b"{}"]
        assert await store.get_many([]) == []
        assert 0 < redis.Redis.from_url(redis_url).ttl(b) <= 60
        st = store.stats()
        assert st["errors"] == 0 and st["sets"] == 2 and st["hits"] == 4 and st["misses"] == 1
    finally:
        await store.close()


async def _timed(coro: Awaitable[T]) -> tuple[T, float]:
    t = time.perf_counter()
    result = await coro
    return result, time.perf_counter() - t


async def test_redis_down_then_back(redis_server_control: RedisServer) -> None:
    server = redis_server_control
    store = RedisStore(server.url, timeout=0.1, failure_threshold=3, cooldown=0.3)
    k = _key("x")
    try:
        await store.set(k, b"cached")
        assert await store.get(k) == b"cached"

        server.stop()
        for i in range(20):  # every call answers promptly (no retries, no waiting), without raising
            value, took = await _timed(store.get(k))
            assert value is None and took < 1.0
            _, took = await _timed(store.set(_key(str(i)), b"v"))
            assert took < 1.0
        assert await store.get_many([k, _key("y")]) == [None, None]
        assert not await store.ping()
        st = store.stats()
        assert st["breaker_open"] == 1 and st["breaker_trips"] >= 1 and st["errors"] >= 40
        assert store.breaker.state == "open"

        server.start()  # empty again: nothing is persisted
        deadline = time.monotonic() + 5
        while await store.get(k) is None and store.breaker.state != "closed":
            assert time.monotonic() < deadline, "the store did not come back after Redis restarted"
            await asyncio.sleep(0.05)
        await store.set(k, b"again")
        assert await store.get(k) == b"again"
        assert store.stats()["breaker_open"] == 0
    finally:
        await store.close()


async def test_slow_redis_times_out(redis_server_control: RedisServer) -> None:
    server = redis_server_control
    store = RedisStore(server.url, timeout=0.05, failure_threshold=2, cooldown=0.2)
    k = _key("slow")
    admin = redis.Redis.from_url(server.url)
    try:
        await store.set(k, b"v")
        # Every client's commands now wait 2 s: a call that returns well before that did not wait for Redis
        # (the margin keeps this a check of the timeout, not of how busy the machine is).
        admin.execute_command("CLIENT", "PAUSE", 2000, "ALL")
        for _ in range(5):
            value, took = await _timed(store.get(k))
            assert value is None and took < 1.0
        assert store.breaker.state == "open"
        await asyncio.sleep(2.2)  # pause over, cool-down over
        assert await store.get(k) == b"v"
        assert store.breaker.state == "closed"
    finally:
        admin.close()
        await store.close()
