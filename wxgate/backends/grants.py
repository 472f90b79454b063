"""The grant ledger: which user allowed which subscribe template of an app, as far as
this gateway has heard (docs/subscribe.md).

WeChat tells an app's server URL when a user accepts or rejects a subscribe template
(popup and change events) and answers 43101 to a send without a grant; the ledger
keeps one `Grant` per (app, touser, template_id) from those: each one-time accept
adds a send, each successful one-time send uses one, a long-term accept is marked,
and a reject or a 43101 clears it. Both engines implement `GrantStore` (sqlite_grants.py,
redis_grants.py), reached through `Backend.grant_store()`; every change is atomic.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol


class GrantUse(StrEnum):
    """What a send found in the ledger (the note of its `sent` event)."""

    ONE_TIME = "one-time"  # one one-time grant was used
    LONG_TERM = "long-term"  # a long-term grant: nothing used
    NONE = "none"  # the ledger knew no grant (it only knows what reached this gateway)


@dataclass(frozen=True, slots=True)
class Grant:
    """What one user allowed for one template of an app."""

    app: str
    touser: str
    template_id: str
    one_time: int = 0  # sends the user's one-time accepts still allow
    long_term: bool = False
    updated_at: float = 0.0

    @property
    def allows_a_send(self) -> bool:
        return self.long_term or self.one_time > 0

    def to_json(self) -> dict[str, Any]:
        return {
            "app": self.app,
            "touser": self.touser,
            "template_id": self.template_id,
            "one_time": self.one_time,
            "long_term": self.long_term,
            "updated_at": self.updated_at,
        }


class GrantStore(Protocol):
    """The ledger of every app of one storage engine."""

    async def accept(
        self, app: str, touser: str, template_id: str, *, long_term: bool, now: float
    ) -> Grant:
        """A user accepted the template: one more one-time send, or long-term marked."""
        ...

    async def clear(self, app: str, touser: str, template_id: str) -> bool:
        """A reject, or a 43101 answer: the user holds no grant; True if one was known."""
        ...

    async def use(self, app: str, touser: str, template_id: str, now: float) -> GrantUse:
        """A send WeChat accepted: one one-time grant used (the last one leaves no
        entry); a long-term grant stays."""
        ...

    async def get(self, app: str, touser: str, template_id: str) -> Grant | None: ...

    async def list(self, app: str, touser: str) -> list[Grant]:
        """Every template `touser` holds a grant for in `app`, by template_id."""
        ...
