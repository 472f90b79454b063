"""WeChat's call limits (docs/wechat-protocol.md §1, §2.2, §7) and the fixed-window counters
that enforce them.

Days are calendar days in Beijing time (UTC+8), the reset instant a gateway is
told to assume; minutes are calendar minutes ("retry next minute").
"""

from __future__ import annotations

CLASSIC_TOKEN_PER_DAY = 2000
STABLE_TOKEN_PER_DAY = 500_000
STABLE_TOKEN_PER_MINUTE = 10_000
FORCE_REFRESH_PER_DAY = 20
FORCE_REFRESH_MIN_INTERVAL_S = 30.0
TOKEN_GRACE_S = 300.0  # a replaced token keeps working this long
STABLE_ROTATE_BELOW_S = 300.0  # stable_token mints a new token when less than this remains
DEDUPE_WINDOW_S = 600.0  # client_msg_id guarantee
BUSY_FAILURES = 2  # `busy_` openids get -1 this many times, then succeed

DAY_S = 86_400.0
MINUTE_S = 60.0
BEIJING_OFFSET_S = 8 * 3600.0


class WindowCounter:
    """Calls counted in fixed windows of `width_s` (shifted by `shift_s`), limited per window."""

    __slots__ = ("_shift", "_width", "_window", "count")

    def __init__(self, width_s: float, shift_s: float = 0.0) -> None:
        self._width = width_s
        self._shift = shift_s
        self._window = -1
        self.count = 0

    def full(self, now: float, limit: int | None) -> bool:
        """Whether `limit` calls were already counted in the window of `now`."""
        window = int((now + self._shift) // self._width)
        if window != self._window:
            self._window = window
            self.count = 0
        return limit is not None and self.count >= limit

    def hit(self, now: float, limit: int | None) -> bool:
        """Count one call at `now` unless the window is full; False when it is."""
        if self.full(now, limit):
            return False
        self.count += 1
        return True


def per_day() -> WindowCounter:
    return WindowCounter(DAY_S, BEIJING_OFFSET_S)


def per_minute() -> WindowCounter:
    return WindowCounter(MINUTE_S)
