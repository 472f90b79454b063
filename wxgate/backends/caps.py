"""Per-recipient send caps: the slots a recipient's sends hold, shared by every worker.

A `CapStore` answers one question atomically: may this message be sent to this
recipient now, under these limits (e.g. 5 per hour for the app, 1 a day for one
template)? A yes takes a slot in each limit, held until `period_s` after the take;
a message that already holds its slots (a retry) is let through without new ones.
Both engines implement it (sqlite_caps.py, redis_caps.py); the worker's
frequency-cap check (delivery/frequency_cap.py) is its one user.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class CapLimit:
    """At most `count` sends to one recipient within `period_s`; `scope` names the limit
    ("" for the app's per-user limit, a template id for that template's)."""

    scope: str
    count: int
    period_s: float


class CapStore(Protocol):
    async def take(
        self,
        app: str,
        touser: str,
        message_id: str,
        limits: Sequence[CapLimit],
        now: float,
    ) -> float | None:
        """None: a slot of every limit is now held by `message_id` (or already was).
        Otherwise nothing is taken, and the answer is when the fullest limit frees a
        slot (epoch seconds)."""
        ...
