"""The suppression list's storage: recipients of an app that cannot receive.

An entry is (app, openid) with the reason it was added, the errcode that told us
(if one did) and when. Intake answers a message to a suppressed recipient without
sending it. Both engines keep one list every process shares
(sqlite_suppressions.py, redis_suppressions.py), behind `SuppressionStore`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


class SuppressionReason(StrEnum):
    """Why a recipient is suppressed, and so what lifts it."""

    NOT_FOLLOWING = "not_following"  # 43004: lifted by a `subscribe` event
    REFUSED_TEMPLATES = "refused_templates"  # 43101 on a template message
    USER_BLOCK = "user_block"  # a `failed:user block` delivery report
    UNFOLLOWED = "unfollowed"  # an `unsubscribe` event
    INVALID_OPENID = "invalid_openid"  # 40003: permanent, only an operator lifts it
    OPERATOR = "operator"  # imported by an operator

    @property
    def permanent(self) -> bool:
        """Nothing the user does lifts it (a follow event does not)."""
        return self is SuppressionReason.INVALID_OPENID


# What a `subscribe` (follow) event lifts: everything the user can undo by following.
LIFTED_BY_FOLLOW: frozenset[SuppressionReason] = frozenset(
    reason for reason in SuppressionReason if not reason.permanent
)


@dataclass(frozen=True, slots=True)
class Suppression:
    openid: str
    reason: SuppressionReason
    since: float
    errcode: int | None = None

    def encode(self) -> str:
        """The compact value both engines can keep: "reason|errcode|since"."""
        code = "" if self.errcode is None else str(self.errcode)
        return f"{self.reason.value}|{code}|{self.since:.0f}"

    @classmethod
    def decode(cls, openid: str, value: str) -> Suppression:
        reason, code, since = value.split("|")
        return cls(openid, SuppressionReason(reason), float(since), int(code) if code else None)


@dataclass(frozen=True, slots=True)
class SuppressionPage:
    items: list[Suppression]
    next_cursor: str | None


class SuppressionStore(Protocol):
    """Each app's suppressed recipients, shared by every process of an engine."""

    async def add(self, app: str, entries: Sequence[Suppression]) -> int:
        """Suppress each entry's openid (one atomic write); an entry already there takes
        the new reason, except a permanent one, which stays. The count newly added."""
        ...

    async def lift(
        self, app: str, openid: str, reasons: Collection[SuppressionReason] | None = None
    ) -> bool:
        """Remove the entry if its reason is one of `reasons` (None: any); True if removed."""
        ...

    async def find(self, app: str, openids: Sequence[str]) -> dict[str, Suppression]:
        """The entries of those openids that are suppressed."""
        ...

    async def page(self, app: str, limit: int, cursor: str | None = None) -> SuppressionPage:
        """Up to `limit` entries of `app`; `cursor` is the previous page's next_cursor."""
        ...
