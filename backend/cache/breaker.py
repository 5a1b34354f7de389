"""A small circuit breaker: after `threshold` consecutive failures the circuit opens for `cooldown`
seconds (calls are refused at once), then one probe call is let through (half-open): success closes
the circuit, failure opens it again for another cool-down. Not thread-safe: one per event loop."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

State = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    def __init__(
        self, threshold: int = 3, cooldown: float = 2.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if threshold < 1 or cooldown < 0:
            raise ValueError(f"threshold must be >= 1 and cooldown >= 0, got {threshold}, {cooldown}")
        self.threshold = threshold
        self.cooldown = cooldown
        self._clock = clock
        self._state: State = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self.trips = 0  # how many times the circuit opened

    @property
    def state(self) -> State:
        return self._state

    def allow(self) -> bool:
        """May a call go out now? In half-open state only the single probe may."""
        if self._state == "closed":
            return True
        # Also re-probe when a half-open probe never reported back (e.g. its task was cancelled).
        if self._clock() - self._opened_at >= self.cooldown:
            self._state = "half_open"
            self._opened_at = self._clock()
            return True  # this caller is the probe
        return False

    def success(self) -> None:
        self._state = "closed"
        self._failures = 0

    def failure(self) -> None:
        self._failures += 1
        if self._state == "half_open" or self._failures >= self.threshold:
            if self._state != "open":
                self.trips += 1
            self._state = "open"
            self._opened_at = self._clock()
