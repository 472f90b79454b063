"""The inbox: every send the simulated WeChat accepted, in order, kept compactly.

One tuple per message, holding the raw request body; `data`, `url` and
`miniprogram` (and a subscribe message's `page`, `miniprogram_state` and `lang`)
are decoded only when someone asks (`GET /sandbox/messages`), so a benchmark's
millions of sends cost one small tuple each. Each message has its kind:
`template`, `subscribe` (bizsend) or `miniprogram` (subscribe/send).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson

from wxgate.wechat.kinds import MessageKind

DEFAULT_LIMIT = 1000
MAX_LIMIT = 1_000_000


class Received(NamedTuple):
    """One accepted send as stored."""

    appid: str
    touser: str
    template_id: str
    client_msg_id: str | None
    msgid: int
    body: bytes
    received_at: float
    report_status: str  # the Status (or ErrorStatus) its delivery report carries
    kind: MessageKind = MessageKind.TEMPLATE

    def to_json(self) -> dict[str, Any]:
        request = orjson.loads(self.body)
        item = {
            "kind": self.kind.value,
            "appid": self.appid,
            "touser": self.touser,
            "template_id": self.template_id,
            "client_msg_id": self.client_msg_id,
            "msgid": self.msgid,
            "data": request.get("data"),
            "url": request.get("url"),
            "miniprogram": request.get("miniprogram"),
            "received_at": self.received_at,
            "report_status": self.report_status,
        }
        if self.kind is not MessageKind.TEMPLATE:
            item |= {name: request.get(name) for name in _SUBSCRIBE_FIELDS}
        return item


_SUBSCRIBE_FIELDS = ("page", "miniprogram_state", "lang")


class Inbox:
    """Accepted sends, oldest first."""

    __slots__ = ("append", "items")

    def __init__(self) -> None:
        self.items: list[Received] = []
        self.append = self.items.append

    def __len__(self) -> int:
        return len(self.items)

    def clear(self) -> None:
        self.items.clear()

    def query(
        self,
        *,
        appid: str | None = None,
        touser: str | None = None,
        client_msg_id: str | None = None,
        kind: MessageKind | None = None,
        limit: int = DEFAULT_LIMIT,
        offset: int = 0,
    ) -> tuple[int, list[Received]]:
        """How many messages match, and the page `offset:offset+limit` of them."""
        matches = self.items
        if kind is not None:
            matches = [m for m in matches if m.kind is kind]
        if appid is not None:
            matches = [m for m in matches if m.appid == appid]
        if touser is not None:
            matches = [m for m in matches if m.touser == touser]
        if client_msg_id is not None:
            matches = [m for m in matches if m.client_msg_id == client_msg_id]
        return len(matches), matches[offset : offset + limit]
