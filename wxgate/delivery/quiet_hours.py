"""Quiet hours: an app's daily window ("22:00-08:00" in its time zone) in which only
urgent messages go out.

A send check: a message that falls due inside the window goes back to the queue,
uncounted, until the window's end; there the backlog is leased again and paced by the
app's send budget like any other, so it drains at the rate limit. Each message is
released to the end plus a microsecond per second it fell due after the window began,
so both engines (which order equal due times by insertion) lease it in due order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from wxgate.backends.base import Lease, Outcome, Settlement
from wxgate.clock import Clock, rfc3339
from wxgate.config import AppSettings

# A 10-hour window spreads its backlog over 36 ms past its end: never reordered by the
# engines, and still far below float resolution trouble (2.4e-7 s at today's epoch).
DUE_ORDER_SCALE = 1e-6


def _clock_time(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


@dataclass(frozen=True, slots=True)
class QuietWindow:
    """One app's daily window, local to `zone`; it may wrap midnight."""

    start: time
    end: time
    zone: ZoneInfo

    @classmethod
    def parse(cls, spec: str, zone: str) -> QuietWindow:
        """From config's "HH:MM-HH:MM" (already checked by its pattern)."""
        start, end = spec.split("-")
        return cls(_clock_time(start), _clock_time(end), ZoneInfo(zone))

    def around(self, now: float) -> tuple[float, float] | None:
        """(start, end) in epoch seconds of the window `now` falls in, or None."""
        local = datetime.fromtimestamp(now, self.zone)
        today = local.date()
        for start_day in (today - timedelta(days=1), today):
            start = datetime.combine(start_day, self.start, self.zone)
            end_day = start_day if self.end > self.start else start_day + timedelta(days=1)
            end = datetime.combine(end_day, self.end, self.zone)
            if start.timestamp() <= now < end.timestamp():
                return start.timestamp(), end.timestamp()
        return None


class QuietHours:
    """The send check: holds non-urgent messages of apps with quiet hours."""

    def __init__(self, windows: Mapping[str, QuietWindow], clock: Clock) -> None:
        self._windows = dict(windows)
        self._clock = clock

    @classmethod
    def for_apps(cls, apps: Mapping[str, AppSettings], clock: Clock) -> QuietHours | None:
        """The check for the apps that have quiet hours, or None when none has."""
        windows = {
            name: QuietWindow.parse(app.quiet_hours, app.timezone)
            for name, app in apps.items()
            if app.quiet_hours is not None
        }
        return cls(windows, clock) if windows else None

    async def before_send(self, lease: Lease) -> Settlement | None:
        record = lease.record
        window = self._windows.get(record.app)
        if window is None or record.urgent:
            return None
        inside = window.around(self._clock.now())
        if inside is None:
            return None
        start, end = inside
        due = record.send_at if record.send_at is not None else record.created_at
        later = end + DUE_ORDER_SCALE * max(0.0, due - start)
        note = f"quiet hours until {rfc3339(end)}"
        return Settlement(lease, Outcome.RELEASE, next_attempt_at=later, note=note)
