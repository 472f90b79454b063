"""The last hour per minute, read from storage: what the console's overview charts.

Storage, not this process's metrics, because an API process of a split deployment
sends nothing itself: the records say what every worker did. The newest messages are
read (newest first, as `Backend.list` pages them) until one was accepted before the
hour began, or `MAX_SCAN` records were read; each record adds to the minute of its
own timestamps: accepted (created_at), sent (sent_at), delivered (delivered_at), failed
(updated_at of a failed, dead or rejected one). So a message accepted before the hour
and delivered within it is not counted, and past MAX_SCAN messages an hour only the
newest are (`truncated` says so, with the time the scan reached).

The scan costs ~80 ms per 1,000 records on SQLite and ~0.5 s on Redis (measured on a
busy 2-core host, docs/console.md), so `ActivityCache` lets every page and viewer
within `CACHE_S` share one.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from wxgate.backends.base import Backend, ListFilter, MessageRecord, Status

WINDOW_S = 3600
MINUTE_S = 60
MINUTES = WINDOW_S // MINUTE_S
MAX_SCAN = 2000
CACHE_S = 5.0
_PAGE = 500
SERIES = ("accepted", "sent", "delivered", "failed")
FAILED_STATUSES = frozenset({Status.FAILED, Status.DEAD, Status.REJECTED})
RECENT_BATCHES = 20


@dataclass(slots=True)
class Activity:
    """Per-minute counts, oldest minute first (index MINUTES-1 is the current minute)."""

    now: float
    minutes: dict[str, list[int]] = field(
        default_factory=lambda: {name: [0] * MINUTES for name in SERIES}
    )
    sent_last_minute: dict[str, int] = field(default_factory=dict)  # per app
    batch_ids: list[str] = field(default_factory=list)  # newest first
    scanned: int = 0
    truncated: bool = False
    reached: float | None = None  # created_at of the oldest record read

    def total(self, name: str) -> int:
        return sum(self.minutes[name])

    def _add(self, name: str, at: float | None) -> None:
        if at is None:
            return
        ago = self.now - at
        if 0 <= ago < WINDOW_S:
            self.minutes[name][MINUTES - 1 - int(ago // MINUTE_S)] += 1

    def count(self, record: MessageRecord) -> None:
        self._add("accepted", record.created_at)
        self._add("sent", record.sent_at)
        if record.status is Status.DELIVERED:
            self._add("delivered", record.delivered_at)
        if record.status in FAILED_STATUSES:
            self._add("failed", record.updated_at)
        if record.sent_at is not None and 0 <= self.now - record.sent_at < MINUTE_S:
            self.sent_last_minute[record.app] = self.sent_last_minute.get(record.app, 0) + 1
        if (
            record.batch_id is not None
            and record.batch_id not in self.batch_ids
            and len(self.batch_ids) < RECENT_BATCHES
        ):
            self.batch_ids.append(record.batch_id)


async def last_hour(backend: Backend, now: float) -> Activity:
    activity = Activity(now)
    cursor: str | None = None
    while activity.scanned < MAX_SCAN:
        page = await backend.list(ListFilter(), _PAGE, cursor)
        for record in page.items:
            activity.count(record)
            activity.reached = record.created_at
        activity.scanned += len(page.items)
        cursor = page.next_cursor
        if cursor is None or (activity.reached is not None and activity.reached < now - WINDOW_S):
            return activity
    activity.truncated = True
    return activity


class ActivityCache:
    """The last scan, reused for CACHE_S; concurrent callers wait for one scan."""

    def __init__(self) -> None:
        self._last: Activity | None = None
        self._lock = asyncio.Lock()

    async def last_hour(self, backend: Backend, now: float) -> Activity:
        async with self._lock:
            last = self._last
            if last is None or not 0 <= now - last.now < CACHE_S:
                last = self._last = await last_hour(backend, now)
            return last
