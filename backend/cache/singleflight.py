"""Single-flight: concurrent callers with the same key share one computation.

The computation runs in its own task, so a caller that is cancelled (a client that hangs up) does
not cancel it for the others. Everyone gets the same result or the same exception; once it is done
the key is forgotten, so later calls compute again (the cache is what remembers results).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar, cast

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
