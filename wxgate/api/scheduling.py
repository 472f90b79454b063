"""Scheduled sends at the HTTP edge: a request's `send_at` and `priority`, on its messages.

`send_at` is an RFC 3339 time with an offset ("2026-12-07T10:00:00+08:00", "...Z"); a
message that carries one is stored `scheduled` and a worker takes it once due (a time
already past is due at once). `"priority": "urgent"` marks a message that quiet hours
do not hold back. Storage keeps both on the message (NewMessage.send_at, .urgent).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Literal

from wxgate.api.errors import InvalidRequest
from wxgate.backends.base import NewMessage
from wxgate.clock import Clock

# How far ahead a message may be scheduled: a year (and a day), so a typo in the year
# is refused rather than kept for a decade.
MAX_AHEAD_S = 366 * 24 * 3600
RFC3339_RULE = "an RFC 3339 time with an offset, e.g. 2026-12-07T10:00:00+08:00"
_RFC3339 = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})$"
)

Priority = Literal["normal", "urgent"]


def parse_rfc3339(value: str) -> float:
    """Epoch seconds of an RFC 3339 date-time; ValueError for anything else (a time
    without an offset names no instant, so it is refused rather than guessed)."""
    match = _RFC3339.match(value)
    if match is None:
        raise ValueError(RFC3339_RULE)
    date, time, fraction, offset = match.groups()
    micros = (fraction or "").ljust(6, "0")[:6]
    offset = "+00:00" if offset in ("Z", "z") else offset
    try:
        moment = datetime.fromisoformat(f"{date}T{time}.{micros}{offset}")
    except ValueError:
        raise ValueError(RFC3339_RULE) from None
    return moment.timestamp()


def rfc3339_text(value: str) -> str:
    """The pydantic check of a `send_at` field: the text, once it parses."""
    parse_rfc3339(value)
    return value


def scheduled(
    messages: list[NewMessage], send_at: str | None, priority: Priority | None
) -> list[NewMessage]:
    """The messages with the request's schedule and priority on them (the same list
    when the request has neither)."""
    urgent = priority == "urgent"
    if send_at is None and not urgent:
        return messages
    due = None if send_at is None else parse_rfc3339(send_at)
    return [replace(message, send_at=due, urgent=urgent) for message in messages]


class ScheduleHorizon:
    """The intake check that refuses a `send_at` more than MAX_AHEAD_S ahead (the
    request's field: single and batch messages carry it at the top level)."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    async def check(self, app: str, messages: Sequence[NewMessage]) -> Sequence[NewMessage]:
        horizon = self._clock.now() + MAX_AHEAD_S
        if any(m.send_at is not None and m.send_at > horizon for m in messages):
            raise InvalidRequest.at(
                ["body", "send_at"], f"more than {MAX_AHEAD_S // 86400} days ahead"
            )
        return messages
