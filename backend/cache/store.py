"""Byte stores behind one async interface: Redis (shared) or an in-process LRU (the embedded default).

A store is a cache, never a source of truth: `RedisStore` never raises to its caller. When Redis is
down or slow (short socket timeouts), `get` answers None and `set` does nothing, both counted as
errors; a circuit breaker stops even trying for a cool-down after a run of failures, then probes,
so the service computes without the cache and comes back to it by itself once Redis answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from backend.cache.breaker import CircuitBreaker

log = logging.getLogger(__name__)

# Compare-and-delete in one step, so a lock that expired and was taken by another process is left alone.
_DELETE_IF = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
# Counters every store reports from stats(); all values are ints (ready for Prometheus).
STAT_NAMES = ("hits", "misses", "errors", "sets", "bytes_read", "bytes_written")


@runtime_checkable
class Store(Protocol):
    backend: str  # "memory" | "redis"

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl: int | None = None) -> None: ...

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]: ...

    async def add(self, key: str, value: bytes, ttl: int) -> bool | None:
        """Set ``key`` only if it is absent (a lock): True when set, False when present, None on failure."""
        ...

    async def delete_if(self, key: str, value: bytes) -> None:
        """Delete ``key`` if it still holds ``value`` (release a lock this process took)."""
        ...

    async def ping(self) -> bool: ...

    def stats(self) -> dict[str, int]: ...

    async def close(self) -> None: ...


class MemoryStore:
    """A byte-bounded LRU in this process. Size counts key and value bytes; a value larger than the
    whole budget is not stored. Optional per-key TTL (seconds), expired lazily."""

    backend = "memory"

    def __init__(self, max_bytes: int = 256 * 1024 * 1024, clock: Callable[[], float] = time.monotonic):
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self._clock = clock
        self._data: OrderedDict[str, tuple[bytes, float | None]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()  # cheap, and safe if a sync thread ever shares the store
        self._stats = dict.fromkeys(STAT_NAMES, 0) | {"evictions": 0}

    def _get_locked(self, key: str) -> bytes | None:
        entry = self._data.get(key)
        if entry is not None and entry[1] is not None and entry[1] <= self._clock():
            self._drop(key)
            entry = None
        if entry is None:
            self._stats["misses"] += 1
            return None
        self._data.move_to_end(key)
        self._stats["hits"] += 1
        self._stats["bytes_read"] += len(entry[0])
        return entry[0]

    async def get(self, key: str) -> bytes | None:
        with self._lock:
            return self._get_locked(key)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        with self._lock:
            return [self._get_locked(k) for k in keys]

    async def set(self, key: str, value: bytes, ttl: int | None = None) -> None:
        value = bytes(value)
        size = len(key) + len(value)
        with self._lock:
            if key in self._data:
                self._drop(key)
            if size > self.max_bytes:
                return
            expires = self._clock() + ttl if ttl is not None else None
            self._data[key] = (value, expires)
            self._bytes += size
            self._stats["sets"] += 1
            self._stats["bytes_written"] += len(value)
            while self._bytes > self.max_bytes:
                self._drop(next(iter(self._data)))
                self._stats["evictions"] += 1

    def _drop(self, key: str) -> None:
        value, _ = self._data.pop(key)
        self._bytes -= len(key) + len(value)

    async def add(self, key: str, value: bytes, ttl: int) -> bool | None:
        with self._lock:
            entry = self._data.get(key)
            if entry is not None and (entry[1] is None or entry[1] > self._clock()):
                return False
        await self.set(key, value, ttl)
        return True

    async def delete_if(self, key: str, value: bytes) -> None:
        with self._lock:
            entry = self._data.get(key)
            if entry is not None and entry[0] == value:
                self._drop(key)

    async def ping(self) -> bool:
        return True

    def stats(self) -> dict[str, int]:
        with self._lock:
            return self._stats | {"bytes": self._bytes, "items": len(self._data)}

    async def close(self) -> None:
        with self._lock:
            self._data.clear()
            self._bytes = 0


class RedisStore:
    """Redis through redis-py asyncio (hiredis parser when installed), guarded so it never raises.

    `timeout` bounds every call (connect, read, and the whole command); there are no retries, so a
    call costs at most about `timeout`. After `failure_threshold` consecutive failures the breaker
    opens for `cooldown` seconds, during which calls return at once without touching the network.
    """

    backend = "redis"

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 0.1,
        failure_threshold: int = 3,
        cooldown: float = 2.0,
        max_connections: int = 64,
    ) -> None:
        if not 0 < timeout <= 5:
            raise ValueError(f"redis timeout must be in (0, 5] seconds, got {timeout}")
        self.url = url
        self.timeout = timeout
        self._client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            retry_on_timeout=False,
            health_check_interval=0,
            max_connections=max_connections,
        )
        self.breaker = CircuitBreaker(failure_threshold, cooldown)
        self._stats = dict.fromkeys(STAT_NAMES, 0)

    async def _guard(self, call: Callable[[], Awaitable[Any]]) -> tuple[bool, Any]:
        """Run one Redis call under the breaker and a deadline; (ok, result), never an exception."""
        if not self.breaker.allow():
            return False, None
        was = self.breaker.state
        try:
            async with asyncio.timeout(self.timeout * 2):  # socket timeouts cover I/O; this the rest
                result = await call()
        except Exception as exc:  # any failure of a cache is a miss, never the caller's problem
            self.breaker.failure()
            if self.breaker.state == "open" and was == "closed":
                log.warning("redis cache unavailable (%s: %s); computing without it", type(exc).__name__, exc)
            return False, None
        if was != "closed":
            log.info("redis cache is back")
        self.breaker.success()
        return True, result

    async def get(self, key: str) -> bytes | None:
        ok, value = await self._guard(lambda: self._client.get(key))
        return self._count_read(ok, [value])[0]

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        ok, values = await self._guard(lambda: self._client.mget(list(keys)))
        return self._count_read(ok, values if ok and values is not None else [None] * len(keys))

    def _count_read(self, ok: bool, values: list[bytes | None]) -> list[bytes | None]:
        if not ok:
            self._stats["errors"] += 1
            return [None] * len(values)
        for v in values:
            if v is None:
                self._stats["misses"] += 1
            else:
                self._stats["hits"] += 1
                self._stats["bytes_read"] += len(v)
        return values

    async def set(self, key: str, value: bytes, ttl: int | None = None) -> None:
        ok, _ = await self._guard(lambda: self._client.set(key, value, ex=ttl))
        if ok:
            self._stats["sets"] += 1
            self._stats["bytes_written"] += len(value)
        else:
            self._stats["errors"] += 1

    async def add(self, key: str, value: bytes, ttl: int) -> bool | None:
        ok, done = await self._guard(lambda: self._client.set(key, value, nx=True, ex=ttl))
        if not ok:
            self._stats["errors"] += 1
            return None
        return bool(done)

    async def delete_if(self, key: str, value: bytes) -> None:
        ok, _ = await self._guard(lambda: self._client.eval(_DELETE_IF, 1, key, value))
        if not ok:
            self._stats["errors"] += 1

    async def ping(self) -> bool:
        ok, pong = await self._guard(self._client.ping)
        return ok and bool(pong)

    def stats(self) -> dict[str, int]:
        return self._stats | {
            "breaker_open": int(self.breaker.state != "closed"),
            "breaker_trips": self.breaker.trips,
        }

    async def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a dead connection may fail; nothing to do
            await self._client.aclose()


def make_store(redis_url: str | None, memory_bytes: int, *, redis_timeout: float = 0.1) -> Store:
    """Redis when a URL is configured, else the in-process LRU of `memory_bytes`."""
    if redis_url:
        return RedisStore(redis_url, timeout=redis_timeout)
    return MemoryStore(memory_bytes)
