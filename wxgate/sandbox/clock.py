"""The sandbox's notion of "now": a base clock plus an offset tests can move forward.

Every expiry the sandbox keeps (tokens, the 5-minute overlap, the 10-minute
de-dupe window, daily and per-minute counters) reads this clock, so a test
can pass them with `POST /sandbox/clock` instead of sleeping.
"""

from __future__ import annotations

from wxgate.clock import Clock, SystemClock


class OffsetClock:
    """Wall time of `base` plus an offset that only moves forward until `reset`."""

    __slots__ = ("_base", "offset")

    def __init__(self, base: Clock | None = None) -> None:
        self._base = base if base is not None else SystemClock()
        self.offset = 0.0

    def now(self) -> float:
        return self._base.now() + self.offset

    def base_now(self) -> float:
        """The base clock's time, without the offset."""
        return self._base.now()

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("the sandbox clock only moves forward")
        self.offset += seconds
        return self.now()

    def reset(self) -> None:
        self.offset = 0.0
