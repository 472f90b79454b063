"""The kind of message a request asks for (`kind`: template, subscribe or miniprogram):
whether the app can send it, which fields belong to it, and which of WeChat's rules
read its body.

A template message and a subscribe notification go out from an official account, a
mini-program subscribe message from a mini program (wechat/kinds.py). Each kind has
fields of its own; one of another kind in a request is refused naming the field,
rather than dropped, since a caller who sends `url` with a subscribe notification
expects a link that would never be shown.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from wxgate.api.errors import InvalidRequest
from wxgate.config import AppSettings
from wxgate.wechat.fields import Problem, TemplateValidationError
from wxgate.wechat.kinds import MessageKind
from wxgate.wechat.subscribe import parse_subscribe
from wxgate.wechat.template import parse

KIND_FIELD = "kind"
# Fields a template message does not take, and whose they are.
_NOT_TEMPLATE_FIELDS = {
    "page": "subscribe and miniprogram messages (a template message links with url)",
    "miniprogram_state": "miniprogram messages",
    "lang": "miniprogram messages",
}
# What a recipient of a batch may set for itself, over the batch's shared fields.
RECIPIENT_OVERRIDES = ("data", "url", "miniprogram", "page")


class WireMessage(Protocol):
    def to_wechat(self) -> dict[str, Any]: ...


Parser = Callable[[Mapping[str, Any]], tuple[WireMessage, list[Problem]]]


@dataclass(frozen=True, slots=True)
class KindRules:
    """How intake reads a message of one kind."""

    kind: MessageKind
    parse: Parser
    # A body that passes every rule but its touser's, to check a batch recipient's
    # openid alone (no warning of its own).
    probe_data: Mapping[str, Any]


def _template_rules(body: Mapping[str, Any]) -> tuple[WireMessage, list[Problem]]:
    foreign = [
        Problem((name,), f"not a field of template messages, but of {owner}")
        for name, owner in _NOT_TEMPLATE_FIELDS.items()
        if body.get(name) is not None
    ]
    try:
        message, warnings = parse(body)
    except TemplateValidationError as exc:
        raise TemplateValidationError([*foreign, *exc.problems]) from None
    if foreign:
        raise TemplateValidationError(foreign)
    return message, warnings


def _subscribe_parser(kind: MessageKind) -> Parser:
    def read(body: Mapping[str, Any]) -> tuple[WireMessage, list[Problem]]:
        return parse_subscribe(body, kind)

    return read


RULES: dict[MessageKind, KindRules] = {
    MessageKind.TEMPLATE: KindRules(
        MessageKind.TEMPLATE, _template_rules, {"probe": {"value": ""}}
    ),
    MessageKind.SUBSCRIBE: KindRules(
        MessageKind.SUBSCRIBE, _subscribe_parser(MessageKind.SUBSCRIBE), {"thing1": {"value": "x"}}
    ),
    MessageKind.MINIPROGRAM: KindRules(
        MessageKind.MINIPROGRAM,
        _subscribe_parser(MessageKind.MINIPROGRAM),
        {"thing1": {"value": "x"}},
    ),
}


def rules_for(kind: str, app: str, settings: AppSettings) -> KindRules:
    """The rules of `kind`, or InvalidRequest at body.kind when the app cannot send it."""
    message_kind = MessageKind(kind)
    account = message_kind.account
    if settings.kind is not account:
        raise InvalidRequest.at(
            ["body", KIND_FIELD],
            f"app {app!r} is a {settings.kind.value} and cannot send {message_kind.value} "
            f"messages (they need a {account.value} app)",
        )
    return RULES[message_kind]
