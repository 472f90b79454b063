"""The send window: how many sends a worker keeps in flight.

Fixed (`delivery.concurrency = N`), or sized by Little's law (`"auto"`, the default):
sends in flight = rate × time in flight. A worker's apps together may send at most
the sum of their rate limits, so it keeps about that sum × the measured round trip in
flight (with HEADROOM for its jitter), at least AUTO_MIN and at most
`delivery.max_concurrency`: the default configuration reaches the apps' rate whether
WeChat answers in 1 ms or in 200 ms, without holding a slot per permit it cannot use.

The time in flight is a send's, from the moment it took its slot to WeChat's answer
(the event loop's delay in starting it and the send budget's storage call included:
under load they are part of what a slot needs), less the wait of a send during which
the app's shared budget ran empty (SendBudget.empty_waits), and smoothed. A send
that got no answer is not counted (a timeout would say nothing about the round trip).
Time queued behind other sends for a permit does count: a worker that holds more
sends than its rate can use grows the window until it reaches the maximum (measured:
512 at 1, 30 and 200 ms, at 1,000/s). Counting that wait out sized the window by the
rate, but the ready leases are half the window (worker.py `_prefetch`), and lease calls
of ~7 then held a Redis worker to 0.39 of its rate at 1 and 30 ms.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

INITIAL_ROUND_TRIP_S = 0.05  # the guess until answers are measured
SMOOTHING = 0.05  # weight of each new round trip in the running estimate
HEADROOM = 1.5
AUTO_MIN = 8


class Window:
    """The number of send slots; `observe` each measured round trip."""

    def __init__(
        self, concurrency: int | Literal["auto"], max_size: int, rates: Iterable[float]
    ) -> None:
        self._auto = concurrency == "auto"
        self._max = max_size
        self._rate = sum(rates)
        self.round_trip_s = INITIAL_ROUND_TRIP_S
        self.size = self._sized() if self._auto else int(concurrency)

    @property
    def auto(self) -> bool:
        return self._auto

    def observe(self, round_trip_s: float) -> None:
        """A send's time in flight (see the module docstring)."""
        if not self._auto or round_trip_s < 0:
            return
        self.round_trip_s += SMOOTHING * (round_trip_s - self.round_trip_s)
        self.size = self._sized()

    def _sized(self) -> int:
        wanted = self._rate * self.round_trip_s * HEADROOM
        if not math.isfinite(wanted) or wanted >= self._max:
            return self._max
        return max(AUTO_MIN, min(self._max, math.ceil(wanted)))
