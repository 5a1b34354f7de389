"""MemoryStore (LRU by bytes), the circuit breaker, and make_store."""

from __future__ import annotations

import pytest

from backend.cache.breaker import CircuitBreaker
from backend.cache.store import MemoryStore, RedisStore, Store, make_store


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


async def test_memory_round_trip_and_stats() -> None:
    s = MemoryStore(1000)
    assert isinstance(s, Store)
    assert await s.get("k") is None
    await s.set("k", b"value")
    assert await s.get("k") == b"value"
    assert await s.get_many(["k", "nope"]) == [b"value", None]
    st = s.stats()
    assert (st["hits"], st["misses"], st["sets"], st["items"], st["bytes"]) == (2, 2, 1, 1, 6)
    assert await s.ping()


async def test_memory_lru_evicts_by_bytes() -> None:
    s = MemoryStore(max_bytes=3 * 101)  # three entries of 1-byte key + 100-byte value
    for k in "abc":
        await s.set(k, bytes(100))
    assert await s.get("a") is not None  # a is now most recent; b is the least
    await s.set("d", bytes(100))
    assert await s.get("b") is None
    assert all([await s.get(k) for k in "acd"])
    await s.set("e", bytes(201))  # 202 bytes: two entries must go
    assert s.stats()["bytes"] <= 303 and await s.get("e") is not None
    assert s.stats()["evictions"] == 3


async def test_memory_overwrite_and_too_large() -> None:
    s = MemoryStore(100)
    await s.set("k", bytes(10))
    await s.set("k", bytes(20))
    assert s.stats()["bytes"] == 21
    await s.set("big", bytes(200))  # larger than the budget: not stored, nothing evicted
    assert await s.get("big") is None and await s.get("k") == bytes(20)


async def test_memory_ttl() -> None:
    clock = Clock()
    s = MemoryStore(100, clock=clock)
    await s.set("k", b"v", ttl=10)
    clock.t = 9.9
    assert await s.get("k") == b"v"
    clock.t = 10.0
    assert await s.get("k") is None and s.stats()["bytes"] == 0


def test_breaker_opens_cools_down_and_probes() -> None:
    clock = Clock()
    b = CircuitBreaker(threshold=3, cooldown=5, clock=clock)
    for _ in range(2):
        assert b.allow()
        b.failure()
    assert b.state == "closed"
    b.failure()
    assert b.state == "open" and not b.allow() and b.trips == 1
    clock.t = 5
    assert b.allow() and b.state == "half_open"
    assert not b.allow()  # only one probe
    b.failure()
    assert b.state == "open" and not b.allow()
    clock.t = 10
    assert b.allow()
    b.success()
    assert b.state == "closed" and b.allow()


def test_breaker_reprobes_when_probe_is_lost() -> None:
    clock = Clock()
    b = CircuitBreaker(threshold=1, cooldown=1, clock=clock)
    b.failure()
    clock.t = 1
    assert b.allow()  # the probe never reports back (cancelled)
    clock.t = 1.5
    assert not b.allow()
    clock.t = 2
    assert b.allow()


async def test_make_store() -> None:
    assert isinstance(make_store(None, 1000), MemoryStore)
    assert isinstance(make_store("", 1000), MemoryStore)
    s = make_store("redis://127.0.0.1:1/0", 1000, redis_timeout=0.05)
    assert isinstance(s, RedisStore) and s.timeout == 0.05
    await s.close()
    with pytest.raises(ValueError):
        make_store("http://nope", 10)
