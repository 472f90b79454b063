"""One subscribe message: an official account's subscribe notification (bizsend) or a
mini program's subscribe message (subscribe/send), its model, wire form and rules.

This module owns `SubscribeMessage` and `parse_subscribe` (docs/wechat-protocol.md
§4.1–4.2; protocol review part (c)). Unlike template messages, WeChat folds nothing
here: a typed value that breaks its rule is answered 47003, so every rule is an
error; there is no colour, first or remark, no link and no client_msg_id, and every
key must carry a value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from wxgate.wechat.fields import (
    MAX_UNTYPED_CHARS,
    MISSING,
    BodyReader,
    DataItem,
    Loc,
    MiniProgram,
    Problem,
    control_problem,
    is_object,
    not_an_object,
    opaque_id_problem,
    pagepath_problem,
    type_problem,
    url_problem,
)
from wxgate.wechat.kinds import MessageKind
from wxgate.wechat.value_rules import key_type, value_problem

MINIPROGRAM_STATES = ("developer", "trial", "formal")
LANGS = ("zh_CN", "en_US", "zh_HK", "zh_TW")
SUBSCRIBE_KINDS = frozenset((MessageKind.SUBSCRIBE, MessageKind.MINIPROGRAM))

# Fields a body of one kind may carry, and those of another kind that are named as
# errors when they turn up (anything else at the top level is ignored, as it is in
# template messages: the intake envelope sits beside the message).
_OWN_FIELDS: dict[MessageKind, frozenset[str]] = {
    MessageKind.SUBSCRIBE: frozenset(("touser", "template_id", "page", "miniprogram", "data")),
    MessageKind.MINIPROGRAM: frozenset(
        ("touser", "template_id", "page", "miniprogram_state", "lang", "data")
    ),
}
_FOREIGN_FIELDS: dict[str, str] = {
    "url": "template messages (use page)",
    "client_msg_id": "template messages (subscribe sends have no de-duplication id)",
    "miniprogram": "subscribe notifications (bizsend)",
    "miniprogram_state": "mini-program subscribe messages (subscribe/send)",
    "lang": "mini-program subscribe messages (subscribe/send)",
}
_NO_LONGER_KEYS = frozenset(("first", "remark"))


@dataclass(frozen=True, slots=True)
class SubscribeMessage:
    """The body of one bizsend or subscribe/send call; `miniprogram` is bizsend's only,
    `miniprogram_state` and `lang` subscribe/send's only."""

    touser: str
    template_id: str
    data: Mapping[str, DataItem]
    page: str | None = None
    miniprogram: MiniProgram | None = None
    miniprogram_state: str | None = None
    lang: str | None = None

    def to_wechat(self) -> dict[str, Any]:
        """The exact JSON body; absent optionals are left out."""
        body: dict[str, Any] = {"touser": self.touser, "template_id": self.template_id}
        if self.page is not None:
            body["page"] = self.page
        if self.miniprogram is not None:
            body["miniprogram"] = self.miniprogram.to_wechat()
        if self.miniprogram_state is not None:
            body["miniprogram_state"] = self.miniprogram_state
        if self.lang is not None:
            body["lang"] = self.lang
        body["data"] = {key: item.to_wechat() for key, item in self.data.items()}
        return body

    @classmethod
    def from_wechat(cls, body: Mapping[str, Any], kind: MessageKind) -> SubscribeMessage:
        """The message a stored body of `kind` describes (the inverse of `to_wechat`);
        only its shape is checked, WeChat judges the content at send time."""
        message, _ = _read(body, kind, None, check_content=False)
        return message


def parse_subscribe(
    body: Mapping[str, Any],
    kind: MessageKind,
    *,
    enum_values: Mapping[str, Sequence[str]] | None = None,
) -> tuple[SubscribeMessage, list[Problem]]:
    """The message of `kind` in a JSON body and its warnings, or TemplateValidationError
    with every problem. `enum_values` (key -> the values the template allows, from
    gettemplate's keywordEnumValueList) makes those keys take only those values."""
    return _read(body, kind, enum_values, check_content=True)


def _read(
    body: object,
    kind: MessageKind,
    enum_values: Mapping[str, Sequence[str]] | None,
    *,
    check_content: bool,
) -> tuple[SubscribeMessage, list[Problem]]:
    if kind not in SUBSCRIBE_KINDS:
        raise ValueError(f"{kind} is not a subscribe kind")
    error = not_an_object(body)
    if error is not None:
        raise error
    assert isinstance(body, Mapping)
    reader = _Reader(kind, enum_values or {}, check_content)
    message = reader.message(body)
    reader.raise_if_any()
    return message, reader.warnings


def _state_problem(value: str) -> str | None:
    return None if value in MINIPROGRAM_STATES else f"one of {', '.join(MINIPROGRAM_STATES)}"


def _lang_problem(value: str) -> str | None:
    return None if value in LANGS else f"one of {', '.join(LANGS)}"


def _untyped_problem(value: str) -> str | None:
    if not value:
        return "must not be empty"
    if len(value) > MAX_UNTYPED_CHARS:
        return f"at most {MAX_UNTYPED_CHARS} characters (got {len(value)})"
    return control_problem(value)


class _Reader(BodyReader):
    """Builds a SubscribeMessage of one kind, collecting problems instead of stopping."""

    def __init__(
        self, kind: MessageKind, enum_values: Mapping[str, Sequence[str]], check_content: bool
    ) -> None:
        super().__init__(check_content)
        self.kind = kind
        self.enum_values = enum_values

    def message(self, body: Mapping[str, Any]) -> SubscribeMessage:
        self._foreign_fields(body)
        message = SubscribeMessage(
            touser=self.field(body, ("touser",), opaque_id_problem),
            template_id=self.field(body, ("template_id",), opaque_id_problem),
            data=self._data(body.get("data", MISSING)),
        )
        if self.kind is MessageKind.SUBSCRIBE:
            # bizsend's page is a web page to open (docs/wechat-protocol.md §4.1).
            return replace(
                message,
                page=self.optional_field(body, ("page",), url_problem),
                miniprogram=self.miniprogram(body.get("miniprogram")),
            )
        return replace(
            message,
            page=self.optional_field(body, ("page",), pagepath_problem),
            miniprogram_state=self.optional_field(body, ("miniprogram_state",), _state_problem),
            lang=self.optional_field(body, ("lang",), _lang_problem),
        )

    def _foreign_fields(self, body: Mapping[str, Any]) -> None:
        own = _OWN_FIELDS[self.kind]
        for name, owner in _FOREIGN_FIELDS.items():
            if name not in own and body.get(name) is not None:
                self.problem((name,), name, f"not a field of {self.kind} messages, but of {owner}")

    def _data(self, raw: object) -> dict[str, DataItem]:
        items: dict[str, DataItem] = {}
        for key, item in self.data_object(raw).items():
            value = self._value(str(key), item)
            if value is not None:
                items[str(key)] = DataItem(value)
        return items

    def _value(self, key: str, raw: object) -> str | None:
        if self.check_content and key in _NO_LONGER_KEYS:
            self.problem(("data", key), key, "subscribe messages have no first or remark")
        if not is_object(raw):
            self.problem(("data", key), key, 'must be an object like {"value": "..."}')
            return None
        for field in raw.keys() - {"value"}:
            loc: Loc = ("data", key, str(field))
            what = "no colour in subscribe messages" if field == "color" else "unknown field"
            self.problem(loc, key, f"{what} {str(field)!r}")
        value = raw.get("value", MISSING)
        if not isinstance(value, str):
            self.problem(("data", key, "value"), f"{key}.value", type_problem(value))
            return None
        if self.check_content:
            self.problem(("data", key, "value"), key, self._value_problem(key, value))
        return value

    def _value_problem(self, key: str, value: str) -> str | None:
        allowed = self.enum_values.get(key)
        if key_type(key) is None:
            problem = _untyped_problem(value)
            if problem is None and allowed is None:
                msg = f"{key}: no rule is known for this key's type; WeChat will judge it"
                self.warning(("data", key), msg)
            return problem or value_problem(key, value, self.kind, allowed)
        return value_problem(key, value, self.kind, allowed)
