"""Token buckets: how many sends (or requests) may go out now.

`TokenBucket` is the pure in-process bucket: time is passed in, nothing sleeps.
The SQLite engine keeps one per app for `take_send_budget`, and the API keeps
one per key; the Redis engine runs the same arithmetic in a Lua script so that
every worker shares one budget. `SendBudget` is the worker's waiting side: it asks
such a shared budget for permits and sleeps on the injected clock while none are left.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from wxgate.clock import Clock

# Whole tokens are granted with this much slack: epoch timestamps near 1.7e9 carry
# ~2e-7 s of float error, so 0.05 s x 200/s can refill 9.99995. The Redis engine's
# Lua bucket uses the same value.
WHOLE_EPSILON = 1e-3


@dataclass(slots=True)
class TokenBucket:
    """`rate` tokens per second, at most `capacity` stored; starts full."""

    rate: float
    capacity: float
    tokens: float = -1.0
    updated: float | None = None

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.capacity <= 0:
            raise ValueError("rate and capacity must be positive")
        if self.tokens < 0:
            self.tokens = self.capacity

    def _refill(self, now: float) -> None:
        if self.updated is not None and now > self.updated:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        if self.updated is None or now > self.updated:
            self.updated = now

    def take(self, want: int, now: float) -> int:
        """Take up to `want` whole tokens; return how many were granted."""
        self._refill(now)
        # The epsilon forgives float error in the refill (0.05 s x 200/s = 9.999...).
        granted = min(want, int(self.tokens + WHOLE_EPSILON))
        self.tokens -= granted
        return granted

    def wait_time(self, now: float, want: int = 1) -> float:
        """Seconds until `want` tokens will be available (0 if they are now)."""
        self._refill(now)
        missing = want - self.tokens
        return 0.0 if missing <= 0 else missing / self.rate

    def reconfigure(self, rate: float, capacity: float) -> None:
        """Change the rate (config reload) without refunding or losing tokens."""
        self.rate = rate
        self.capacity = capacity
        self.tokens = min(self.tokens, capacity)


# take(want, now) -> granted: a shared budget such as Backend.take_send_budget bound to one app.
TakeBudget = Callable[[int, float], Awaitable[int]]


class SendBudget:
    """Waits for send permits of one app, asking the shared budget once for every waiter.

    Waiters queue on one lock; the one at the head asks for as many permits as there
    are waiters, so N concurrent senders cost one budget call per grant, not N.
    """

    def __init__(self, take: TakeBudget, rate_per_s: float, clock: Clock) -> None:
        if rate_per_s <= 0:
            raise ValueError("rate_per_s must be positive")
        self._take = take
        # When the budget is empty, one more permit appears after 1/rate seconds.
        self._retry_s = 1.0 / rate_per_s
        self._clock = clock
        self._lock = asyncio.Lock()
        self._spare = 0
        self._waiting = 0

    async def acquire(self, until: float = math.inf) -> bool:
        """Take one send permit; False when none can be had by `until` (clock time)."""
        self._waiting += 1
        try:
            async with self._lock:
                while self._spare == 0:
                    now = self._clock.now()
                    self._spare = await self._take(self._waiting, now)
                    if self._spare == 0:
                        if now + self._retry_s > until:
                            return False
                        await self._clock.sleep(self._retry_s)
                self._spare -= 1
                return True
        finally:
            self._waiting -= 1
