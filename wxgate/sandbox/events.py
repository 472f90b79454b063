"""The subscribe events WeChat pushes to an account's callback URL
(docs/wechat-protocol.md §5.5), written as XML or, for a mini program that chose it, JSON.

XML: `<xml>` with the header fields and a container (`<SubscribeMsgSentEvent>`,
...) holding one `<List>` per item. JSON: the same header fields with `List` at the
top level, an object when there is one item and an array when there are several,
every value a string (WxJava PR #2477; SKIT.FlurlHttpClient.Wechat #58 on the
missing container; the mini-program doc's examples write CreateTime and MsgID as
strings).
"""

from __future__ import annotations

from typing import NamedTuple

import orjson

from wxgate.sandbox.config import SandboxAccount
from wxgate.wechat.callback import (
    EVENT_SUBSCRIBE_CHANGE,
    EVENT_SUBSCRIBE_POPUP,
    EVENT_SUBSCRIBE_SENT,
)

Item = tuple[tuple[str, str | int], ...]  # one <List>: (field, value) pairs in order

_CONTAINERS = {
    EVENT_SUBSCRIBE_POPUP: "SubscribeMsgPopupEvent",
    EVENT_SUBSCRIBE_CHANGE: "SubscribeMsgChangeEvent",
    EVENT_SUBSCRIBE_SENT: "SubscribeMsgSentEvent",
}


class SubscribeEvent(NamedTuple):
    """A subscribe event to deliver: popup answered, subscription changed, or sent."""

    account: SandboxAccount
    openid: str
    event: str
    items: tuple[Item, ...]
    create_time: int

    def document(self) -> str:
        """The body in the account's callback format."""
        if self.account.callback_format == "json":
            return self.json()
        return self.xml()

    def xml(self) -> str:
        items = "".join(
            "<List>" + "".join(f"<{k}>{_xml_value(v)}</{k}>" for k, v in item) + "</List>"
            for item in self.items
        )
        container = _CONTAINERS[self.event]
        return (
            f"<xml><ToUserName>{_cdata(self.account.original_id)}</ToUserName>"
            f"<FromUserName>{_cdata(self.openid)}</FromUserName>"
            f"<CreateTime>{self.create_time}</CreateTime>"
            f"<MsgType>{_cdata('event')}</MsgType>"
            f"<Event>{_cdata(self.event)}</Event>"
            f"<{container}>{items}</{container}></xml>"
        )

    def json(self) -> str:
        items = [{k: str(v) for k, v in item} for item in self.items]
        document = {
            "ToUserName": self.account.original_id,
            "FromUserName": self.openid,
            "CreateTime": str(self.create_time),
            "MsgType": "event",
            "Event": self.event,
            "List": items[0] if len(items) == 1 else items,
        }
        return orjson.dumps(document).decode("utf-8")


def _xml_value(value: str | int) -> str:
    return str(value) if isinstance(value, int) else _cdata(value)


def _cdata(text: str) -> str:
    # "]]>" would end the section early, so it is split across two sections.
    return "<![CDATA[" + text.replace("]]>", "]]]]><![CDATA[>") + "]]>"
