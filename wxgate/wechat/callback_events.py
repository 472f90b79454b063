"""The events WeChat pushes to a callback URL (docs/wechat-protocol.md §5.5): typed
models, reading them from XML or JSON, and writing them back for the sandbox.

Official accounts push XML; mini programs may push JSON, where an event's `List` is
an object for one item and an array for several, and `CreateTime` an integer or a
string (WxJava PR #2477; community threads). An event's items are read from `List`
elements under whatever wrapper holds them: the official examples disagree on the
wrapper (protocol review row 9). No I/O, no clock.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as SafeElementTree
import orjson
from defusedxml import DefusedXmlException

from wxgate.wechat.errors import CallbackMalformedError
from wxgate.wechat.report import ReportOutcome, report_outcome

EVENT_TEMPLATE_FINISH = "TEMPLATESENDJOBFINISH"
EVENT_SUBSCRIBE_POPUP = "subscribe_msg_popup_event"
EVENT_SUBSCRIBE_CHANGE = "subscribe_msg_change_event"
EVENT_SUBSCRIBE_SENT = "subscribe_msg_sent_event"
EVENT_FOLLOW = "subscribe"  # a user followed the account (not a subscribe message)
EVENT_UNFOLLOW = "unsubscribe"

# Twenty digits hold any int64 or uint64 msgid, and bound the work int() is asked to do.
INTEGER = re.compile(r"-?[0-9]{1,20}")

# One node of a document, XML element or JSON object, as its fields' texts.
Fields: TypeAlias = Mapping[str, str]


# ---------------------------------------------------------------------------
# The models


@dataclass(frozen=True, slots=True)
class CallbackEvent:
    """What every event pushed by WeChat starts with."""

    to_user: str  # the account's original id, gh_...
    from_user: str  # the openid of the user concerned
    create_time: int  # epoch seconds


@dataclass(frozen=True, slots=True)
class TemplateSendJobFinish(CallbackEvent):
    """TEMPLATESENDJOBFINISH: WeChat's final word on one template message."""

    msgid: int  # the msgid template/send answered; exact even above 2**53
    status: str  # kept raw: "success", "failed:user block", "failed: system failed", ...

    @property
    def outcome(self) -> ReportOutcome:
        return report_outcome(self.status)

    @property
    def delivered(self) -> bool:
        return self.outcome.delivered


@dataclass(frozen=True, slots=True)
class SubscribePopupItem:
    """One template in a subscribe pop-up the user answered."""

    template_id: str
    status: str  # "accept" or "reject", raw
    popup_scene: int  # 1 an H5 page, 2 an article, 0 a mini program

    @property
    def accepted(self) -> bool:
        return self.status == "accept"


@dataclass(frozen=True, slots=True)
class SubscribeChangeItem:
    """One template whose subscription the user changed in the settings."""

    template_id: str
    status: str  # "reject" (unsubscribed), raw; WeChat pushes only rejections

    @property
    def accepted(self) -> bool:
        return self.status == "accept"


@dataclass(frozen=True, slots=True)
class SubscribeSentItem:
    """The delivery result of one subscribe message."""

    template_id: str
    msgid: int
    error_code: int  # an errcode of the catalogue; 0 when delivered
    error_status: str  # "success" when error_code is 0

    @property
    def delivered(self) -> bool:
        return self.error_code == 0


@dataclass(frozen=True, slots=True)
class SubscribePopupEvent(CallbackEvent):
    """subscribe_msg_popup_event: the user answered a subscribe pop-up."""

    items: tuple[SubscribePopupItem, ...]


@dataclass(frozen=True, slots=True)
class SubscribeChangeEvent(CallbackEvent):
    """subscribe_msg_change_event: the user changed subscriptions in the settings."""

    items: tuple[SubscribeChangeItem, ...]


@dataclass(frozen=True, slots=True)
class SubscribeSentEvent(CallbackEvent):
    """subscribe_msg_sent_event: delivery results of subscribe messages."""

    items: tuple[SubscribeSentItem, ...]


@dataclass(frozen=True, slots=True)
class FollowEvent(CallbackEvent):
    """subscribe / unsubscribe: the user (`from_user`) followed or left the account."""

    followed: bool


@dataclass(frozen=True, slots=True)
class OtherMessage:
    """Anything else WeChat pushes (user messages, menu events, ...): acknowledged, not used."""

    msg_type: str
    event: str  # "" when the message is not an event
    fields: dict[str, str] = field(hash=False)  # every top-level field's text


CallbackMessage: TypeAlias = (
    TemplateSendJobFinish
    | SubscribePopupEvent
    | SubscribeChangeEvent
    | SubscribeSentEvent
    | FollowEvent
    | OtherMessage
)


# ---------------------------------------------------------------------------
# Reading


def parse_message(document: bytes) -> CallbackMessage:
    """The message in a plaintext callback document, XML or JSON;
    CallbackMalformedError names what is wrong."""
    top, items = read_json(document) if is_json(document) else _read_xml(document)
    msg_type = _text(top, "MsgType")
    event = top.get("Event", "")
    parse_event = _EVENT_PARSERS.get(event.lower()) if msg_type.lower() == "event" else None
    if parse_event is None:
        return OtherMessage(msg_type, event, dict(top))
    return parse_event(top, items)


def is_json(document: bytes) -> bool:
    return document.lstrip()[:1] == b"{"


def parse_xml(document: bytes) -> Element:
    try:
        return SafeElementTree.fromstring(document, forbid_dtd=True)
    except DefusedXmlException:
        raise CallbackMalformedError(
            "the XML declares a DTD or entities, which are refused"
        ) from None
    except (ParseError, LookupError, ValueError):  # LookupError: an unknown declared encoding
        raise CallbackMalformedError("the body is not well-formed XML") from None


def read_json(document: bytes) -> tuple[dict[str, str], list[Fields]]:
    """A JSON document's top-level texts and the items of its event's List."""
    try:
        root = orjson.loads(document)
    except orjson.JSONDecodeError:
        raise CallbackMalformedError("the body is not well-formed JSON", reason="json") from None
    if not isinstance(root, dict):
        raise CallbackMalformedError("the JSON body is not an object", reason="json")
    return _json_texts(root), [_json_texts(item) for item in _json_items(root)]


def field_error(name: str, problem: str) -> CallbackMalformedError:
    return CallbackMalformedError(f"{name} {problem}", reason="field")


def _read_xml(document: bytes) -> tuple[dict[str, str], list[Fields]]:
    root = parse_xml(document)
    items = [_xml_texts(item) for item in root.iter("List")]
    return _xml_texts(root), items


def _xml_texts(node: Element) -> dict[str, str]:
    return {child.tag: child.text or "" for child in node}


def _json_texts(node: Mapping[str, Any]) -> dict[str, str]:
    # Numbers may come as JSON numbers or strings (CreateTime, MsgID, PopupScene).
    texts: dict[str, str] = {}
    for key, value in node.items():
        if isinstance(value, str):
            texts[key] = value
        elif isinstance(value, int) and not isinstance(value, bool):
            texts[key] = str(value)
    return texts


def _json_items(root: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The List of a JSON event: at the top level, or inside a wrapper object, or the
    wrapper itself (`"SubscribeMsgChangeEvent": [...]` in one official example)."""
    found = root.get("List")
    for key, value in root.items() if found is None else ():
        if key != "Event" and key.endswith("Event") and isinstance(value, dict | list):
            found = value.get("List", value) if isinstance(value, dict) else value
            break
    listed = [found] if isinstance(found, dict) else found
    if not isinstance(listed, list):
        return []
    return [item for item in listed if isinstance(item, dict)]


def _text(fields: Fields, tag: str, where: str = "") -> str:
    text = fields.get(tag)
    if not text:
        raise field_error(where + tag, "is missing or empty")
    return text


def _integer(fields: Fields, tag: str, where: str = "") -> int:
    text = _text(fields, tag, where).strip()
    if not INTEGER.fullmatch(text):
        raise field_error(where + tag, "is not an integer")
    return int(text)


def _msgid(fields: Fields, where: str = "") -> int:
    # Official docs and dumps spell it MsgID; some SDKs read MsgId (review row 10).
    spelled = "MsgId" if "MsgId" in fields and "MsgID" not in fields else "MsgID"
    return _integer(fields, spelled, where)


def _header(top: Fields) -> tuple[str, str, int]:
    return _text(top, "ToUserName"), _text(top, "FromUserName"), _integer(top, "CreateTime")


def _listed(items: Sequence[Fields]) -> Sequence[Fields]:
    if not items:
        raise field_error("List", "is missing")
    return items


_ITEM = "List."


def _template_finish(top: Fields, _items: Sequence[Fields]) -> TemplateSendJobFinish:
    return TemplateSendJobFinish(*_header(top), msgid=_msgid(top), status=_text(top, "Status"))


def _subscribe_popup(top: Fields, items: Sequence[Fields]) -> SubscribePopupEvent:
    listed = tuple(
        SubscribePopupItem(
            template_id=_text(item, "TemplateId", _ITEM),
            status=_text(item, "SubscribeStatusString", _ITEM),
            popup_scene=_integer(item, "PopupScene", _ITEM),
        )
        for item in _listed(items)
    )
    return SubscribePopupEvent(*_header(top), items=listed)


def _subscribe_change(top: Fields, items: Sequence[Fields]) -> SubscribeChangeEvent:
    listed = tuple(
        SubscribeChangeItem(
            template_id=_text(item, "TemplateId", _ITEM),
            status=_text(item, "SubscribeStatusString", _ITEM),
        )
        for item in _listed(items)
    )
    return SubscribeChangeEvent(*_header(top), items=listed)


def _subscribe_sent(top: Fields, items: Sequence[Fields]) -> SubscribeSentEvent:
    listed = tuple(
        SubscribeSentItem(
            template_id=_text(item, "TemplateId", _ITEM),
            msgid=_msgid(item, _ITEM),
            error_code=_integer(item, "ErrorCode", _ITEM),
            error_status=_text(item, "ErrorStatus", _ITEM),
        )
        for item in _listed(items)
    )
    return SubscribeSentEvent(*_header(top), items=listed)


def _follow(followed: bool) -> Callable[[Fields, Sequence[Fields]], FollowEvent]:
    def parse(top: Fields, _items: Sequence[Fields]) -> FollowEvent:
        return FollowEvent(*_header(top), followed=followed)

    return parse


# Keyed in lower case: WeChat spells TEMPLATESENDJOBFINISH in capitals, the others not.
_EVENT_PARSERS: dict[str, Callable[[Fields, Sequence[Fields]], CallbackMessage]] = {
    EVENT_TEMPLATE_FINISH.lower(): _template_finish,
    EVENT_SUBSCRIBE_POPUP: _subscribe_popup,
    EVENT_SUBSCRIBE_CHANGE: _subscribe_change,
    EVENT_SUBSCRIBE_SENT: _subscribe_sent,
    EVENT_FOLLOW: _follow(True),
    EVENT_UNFOLLOW: _follow(False),
}


# ---------------------------------------------------------------------------
# Writing, as WeChat does (the sandbox pushes these)


def template_finish_xml(
    to_user: str, from_user: str, create_time: int, msgid: int, status: str
) -> str:
    """The TEMPLATESENDJOBFINISH document WeChat sends, byte for byte as in §5.3."""
    return (
        f"<xml><ToUserName>{cdata(to_user)}</ToUserName>"
        f"<FromUserName>{cdata(from_user)}</FromUserName>"
        f"<CreateTime>{int(create_time)}</CreateTime>"
        f"<MsgType>{cdata('event')}</MsgType>"
        f"<Event>{cdata(EVENT_TEMPLATE_FINISH)}</Event>"
        f"<MsgID>{int(msgid)}</MsgID>"
        f"<Status>{cdata(status)}</Status></xml>"
    )


def event_xml(event: CallbackEvent) -> str:
    """The XML document WeChat pushes for `event` (the subscribe events' List items
    inside their wrapper, as in the official push examples)."""
    if isinstance(event, TemplateSendJobFinish):
        return template_finish_xml(
            event.to_user, event.from_user, event.create_time, event.msgid, event.status
        )
    name, wrapper, items = _parts(event)
    lists = "".join(f"<List>{_xml_fields(item)}</List>" for item in items)
    body = f"<{wrapper}>{lists}</{wrapper}>" if wrapper else ""
    return (
        f"<xml><ToUserName>{cdata(event.to_user)}</ToUserName>"
        f"<FromUserName>{cdata(event.from_user)}</FromUserName>"
        f"<CreateTime>{int(event.create_time)}</CreateTime>"
        f"<MsgType>{cdata('event')}</MsgType><Event>{cdata(name)}</Event>{body}</xml>"
    )


def event_json(
    event: CallbackEvent, *, one_item_as_object: bool = True, create_time_as_text: bool = False
) -> str:
    """The JSON document a mini program's callback gets for `event`: `List` at the top
    level, an object when it holds one item (as observed) unless `one_item_as_object`
    is False, and `CreateTime` a number unless `create_time_as_text` (as documented)."""
    name, _, items = _parts(event)
    document: dict[str, Any] = {
        "ToUserName": event.to_user,
        "FromUserName": event.from_user,
        "CreateTime": str(event.create_time) if create_time_as_text else event.create_time,
        "MsgType": "event",
        "Event": name,
    }
    if isinstance(event, TemplateSendJobFinish):
        document |= {"MsgID": event.msgid, "Status": event.status}
    elif items:
        document["List"] = items[0] if len(items) == 1 and one_item_as_object else items
    return orjson.dumps(document).decode("utf-8")


def cdata(text: str) -> str:
    # "]]>" would end the section early, so it is split across two sections.
    return "<![CDATA[" + text.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def _xml_fields(item: Mapping[str, str]) -> str:
    return "".join(
        f"<{tag}>{value if INTEGER.fullmatch(value) else cdata(value)}</{tag}>"
        for tag, value in item.items()
    )


def _parts(event: CallbackEvent) -> tuple[str, str, list[dict[str, str]]]:
    """An event's name, the XML wrapper of its List, and its items as texts."""
    if isinstance(event, SubscribePopupEvent):
        items = [
            {
                "TemplateId": i.template_id,
                "SubscribeStatusString": i.status,
                "PopupScene": str(i.popup_scene),
            }
            for i in event.items
        ]
        return EVENT_SUBSCRIBE_POPUP, "SubscribeMsgPopupEvent", items
    if isinstance(event, SubscribeChangeEvent):
        items = [
            {"TemplateId": i.template_id, "SubscribeStatusString": i.status} for i in event.items
        ]
        return EVENT_SUBSCRIBE_CHANGE, "SubscribeMsgChangeEvent", items
    if isinstance(event, SubscribeSentEvent):
        items = [
            {
                "TemplateId": i.template_id,
                "MsgID": str(i.msgid),
                "ErrorCode": str(i.error_code),
                "ErrorStatus": i.error_status,
            }
            for i in event.items
        ]
        return EVENT_SUBSCRIBE_SENT, "SubscribeMsgSentEvent", items
    if isinstance(event, FollowEvent):
        return (EVENT_FOLLOW if event.followed else EVENT_UNFOLLOW), "", []
    if isinstance(event, TemplateSendJobFinish):
        return EVENT_TEMPLATE_FINISH, "", []
    raise TypeError(f"no document form for {type(event).__name__}")
