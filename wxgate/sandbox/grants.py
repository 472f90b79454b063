"""The grant ledger of one account: which user allowed which subscribe template, and how
many sends that allows (docs/wechat-protocol.md §4.2).

Each accepted one-time popup allows one send, and accepts add up; a long-term accept
allows sends until the user rejects. A reject, in a popup or in the settings, clears
both. A send without a grant is answered 43101.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Grant:
    """What one user allowed for one template."""

    one_time: int = 0
    long_term: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"one_time": self.one_time, "long_term": self.long_term}


class GrantLedger:
    """Grants by (openid, template_id)."""

    __slots__ = ("_grants",)

    def __init__(self) -> None:
        self._grants: dict[tuple[str, str], Grant] = {}

    def accept(self, openid: str, template_id: str, *, long_term: bool) -> Grant:
        grant = self._grants.setdefault((openid, template_id), Grant())
        if long_term:
            grant.long_term = True
        else:
            grant.one_time += 1
        return grant

    def reject(self, openid: str, template_id: str) -> None:
        self._grants.pop((openid, template_id), None)

    def allows(self, openid: str, template_id: str) -> bool:
        grant = self._grants.get((openid, template_id))
        return grant is not None and (grant.long_term or grant.one_time > 0)

    def use(self, openid: str, template_id: str) -> None:
        """Spend what one accepted send costs: nothing under a long-term grant, else one
        one-time grant (the last one leaves no entry)."""
        key = (openid, template_id)
        grant = self._grants[key]
        if grant.long_term:
            return
        grant.one_time -= 1
        if grant.one_time == 0:
            del self._grants[key]

    def grant(self, openid: str, template_id: str) -> Grant:
        return self._grants.get((openid, template_id)) or Grant()

    def to_json(self, openid: str | None = None) -> list[dict[str, Any]]:
        return [
            {"openid": who, "template_id": template_id, **grant.to_json()}
            for (who, template_id), grant in self._grants.items()
            if openid is None or who == openid
        ]
