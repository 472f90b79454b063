"""The dedupe window: the first message of one (app, digest) within a window.

A `DedupeStore` remembers, for `window_s`, the id of the first message stored with a
digest (the API's hash of recipient, template and data), so the same message again
inside the window is answered with that id instead of being stored and sent twice.
Both engines implement it (sqlite_dedupe.py, redis_dedupe.py); intake's dedupe
(api/dedupe.py) is its one user.
"""

from __future__ import annotations

from typing import Protocol


class DedupeStore(Protocol):
    async def claim(
        self, app: str, digest: str, message_id: str, window_s: float, now: float
    ) -> str | None:
        """None: `message_id` is now the first of `digest` until now + window_s.
        Otherwise the id of the first one, still inside its window (nothing changes)."""
        ...

    async def forget(self, app: str, digest: str, message_id: str) -> None:
        """Drop the claim of `message_id` (its message was never stored); a claim of
        another id is left alone."""
        ...
