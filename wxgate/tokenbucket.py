"""The token bucket: how many sends (or requests) may go out now, as pure arithmetic.

Time is passed in and nothing sleeps, so any layer can use it: the SQLite engine
keeps one per app for `take_send_budget`, the API one per key, and the Redis
engine runs the same arithmetic in a Lua script so that every worker shares one.
"""

from __future__ import annotations

from dataclasses import dataclass

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
