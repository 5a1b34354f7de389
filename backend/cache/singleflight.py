"""Single-flight: concurrent callers with the same key share one computation (``SharedLocks``: across
processes too).

The computation runs in its own task, so a caller that is cancelled (a client that hangs up) does
not cancel it for the others. Everyone gets the same result or the same exception; once it is done
the key is forgotten, so later calls compute again (the cache is what remembers results).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar, cast

from backend.cache.keys import lock_key
from backend.cache.store import Store

T = TypeVar("T")


class SingleFlight:
    def __init__(self) -> None:
        self._inflight: dict[Hashable, asyncio.Task[Any]] = {}
        self.started = 0  # computations run
        self.joined = 0  # callers that shared a computation already in flight

    def __len__(self) -> int:
        return len(self._inflight)

    async def run(self, key: Hashable, factory: Callable[[], Awaitable[T]]) -> T:
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(factory())
            self._inflight[key] = task
            self.started += 1
            task.add_done_callback(lambda t: self._forget(key, t))
        else:
            self.joined += 1
        # shield: cancelling this caller must not cancel the shared computation.
        return cast(T, await asyncio.shield(task))

    def _forget(self, key: Hashable, task: asyncio.Task[Any]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # mark retrieved: no "exception never retrieved" noise if all callers left


class SharedLocks:
    """Single flight across the processes sharing a store: a lock per key (SET NX with a TTL in Redis).

    ``acquire`` returns a token when this process may do the work (it took the lock, or the store cannot
    tell: a Redis outage must never stop the work), None when another process holds it; ``wait`` then polls
    until that process reports the work done (``done()``) or its lock goes away (it failed or died: the TTL
    bounds how long a dead holder blocks anyone).
    """

    def __init__(self, store: Store, ttl_s: int, poll_s: float = 0.05) -> None:
        self.store = store
        self.ttl_s = max(1, int(ttl_s))
        self.poll_s = poll_s
        self.waited = 0  # waits for another process (tests, /metrics)

    async def acquire(self, key: str) -> bytes | None:
        token = uuid.uuid4().hex.encode()
        taken = await self.store.add(lock_key(key), token, self.ttl_s)
        return None if taken is False else token

    async def release(self, key: str, token: bytes) -> None:
        await self.store.delete_if(lock_key(key), token)

    async def wait(self, key: str, done: Callable[[], Awaitable[bool]]) -> bool:
        """True once ``done()``; False when the holder's lock is gone (or expired) without it."""
        self.waited += 1
        deadline = time.monotonic() + self.ttl_s
        while time.monotonic() < deadline:
            await asyncio.sleep(self.poll_s)
            if await done():
                return True
            if await self.store.get(lock_key(key)) is None:
                return await done()
        return False
