"""One template message: its model, its wire form and WeChat's rules for its content.

This module owns `TemplateMessage` (the body of template/send, docs/wechat-protocol.md
§2.1–2.2), `parse` (every rule we can check before WeChat does, all problems at once,
plus warnings where WeChat folds or drops what it is given) and `typed_value_problem`
(the typed-key rules of value_rules.py, shared with the sandbox so that it answers
47003 exactly where our intake refuses).

- Typed keys (`thing3`, `amount1`, ...) are strict: WeChat answers 47003 (§2.3).
- Plain `keywordN` values over 20 characters or with line breaks are warnings: since
  2023 WeChat folds or truncates them and the send succeeds (§2.3; the official
  community answer https://developers.weixin.qq.com/community/develop/doc/0002888d8801e897a561dfe6e61800).
  WeChat also counts a run of ASCII letters or digits as one character, so the 20 is
  an upper bound of what it shows (kejiweixun.com/note/202303241915).
- Other untyped keys (`short_thing1`, `first`, `detail`): ≤ 200 characters; line
  breaks are a warning, like a keyword's (same sources).
- No value may hold other control characters.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

from wxgate.wechat.fields import (
    CONTROL,
    KEY,
    LINE_BREAKS,
    MAX_UNTYPED_CHARS,
    MISSING,
    BodyReader,
    Check,
    DataItem,
    Loc,
    MiniProgram,
    Problem,
    TemplateValidationError,
    control_other_than_line_break,
    control_problem,
    is_object,
    not_an_object,
    opaque_id_problem,
    type_problem,
    url_problem,
)
from wxgate.wechat.kinds import MessageKind
from wxgate.wechat.value_rules import RULES, key_type, value_problem

MAX_CLIENT_MSG_ID_CHARS = 64
MAX_KEYWORD_CHARS = 20  # what WeChat shows of a plain keywordN value since 2023
NO_LONGER_SHOWN = frozenset(("first", "remark"))
RULES_CHANGED_ON = "2023-05-04"

_KEYWORD = re.compile(r"keyword[0-9]+")
_CLIENT_MSG_ID = re.compile(r"[\x20-\x7e]+")
_COLOR = re.compile(r"#[0-9A-Fa-f]{6}")


@dataclass(frozen=True, slots=True)
class TemplateMessage:
    """The body of one template/send call."""

    touser: str
    template_id: str
    data: Mapping[str, DataItem]
    url: str | None = None
    miniprogram: MiniProgram | None = None
    client_msg_id: str | None = None

    def to_wechat(self) -> dict[str, Any]:
        """The exact JSON body for template/send; absent optionals are left out."""
        body: dict[str, Any] = {"touser": self.touser, "template_id": self.template_id}
        if self.url is not None:
            body["url"] = self.url
        if self.miniprogram is not None:
            body["miniprogram"] = self.miniprogram.to_wechat()
        if self.client_msg_id is not None:
            body["client_msg_id"] = self.client_msg_id
        body["data"] = {key: item.to_wechat() for key, item in self.data.items()}
        return body

    def with_client_msg_id(self, client_msg_id: str) -> TemplateMessage:
        """The same message carrying WeChat's 10-minute de-duplication id."""
        problem = _client_msg_id_problem(client_msg_id)
        if problem is not None:
            raise TemplateValidationError(
                [Problem(("client_msg_id",), f"client_msg_id: {problem}")]
            )
        return replace(self, client_msg_id=client_msg_id)

    @classmethod
    def from_wechat(cls, body: Mapping[str, Any]) -> TemplateMessage:
        """The message a stored template/send body describes (the inverse of `to_wechat`).

        Only the shape is checked: the content rules ran when the body was accepted, and
        at send time WeChat, not a later version of our rules, is the judge.
        """
        message, _ = _read(body, check_content=False)
        return message


def parse(body: Mapping[str, Any]) -> tuple[TemplateMessage, list[Problem]]:
    """The message in a JSON body and its warnings, or TemplateValidationError with every
    problem found. Top-level fields that template/send does not know are ignored."""
    return _read(body, check_content=True)


def typed_value_problem(
    key: str,
    value: str,
    *,
    kind: MessageKind = MessageKind.TEMPLATE,
    allowed: Sequence[str] | None = None,
) -> str | None:
    """What breaks the rule of a typed key (`thing3`, `amount1`, ...) for `kind`, as
    `"<key>: <rule and limit>"`; None when the value is fine or the key is untyped.
    `allowed` is the template's enum values for the key, when known."""
    problem = value_problem(key, value, kind, allowed)
    return None if problem is None else f"{key}: {problem}"


# ---------------------------------------------------------------------------
# Keys: typed, a plain keywordN, or untyped; worked out once per key.


def _typed_check(type_: str) -> Check:
    rule = RULES[type_]

    def check(value: str) -> str | None:
        return rule.problem(value, MessageKind.TEMPLATE)

    return check


def _untyped_check(value: str) -> str | None:
    if len(value) > MAX_UNTYPED_CHARS:
        return f"at most {MAX_UNTYPED_CHARS} characters (got {len(value)})"
    return control_other_than_line_break(value)


@dataclass(frozen=True, slots=True)
class _KeyRule:
    """What parse needs to know about one data key."""

    well_formed: bool
    check: Check  # errors: the typed rule, or the untyped cap and control characters
    lenient: bool  # untyped: line breaks (and, for keywordN, length) are only warnings
    keyword: bool  # a plain keywordN, whose value WeChat shows up to 20 characters of
    no_longer_shown: bool


@lru_cache(maxsize=4096)
def _key_rule(key: str) -> _KeyRule:
    type_ = key_type(key)
    return _KeyRule(
        well_formed=KEY.fullmatch(key) is not None,
        check=_untyped_check if type_ is None else _typed_check(type_),
        lenient=type_ is None,
        keyword=_KEYWORD.fullmatch(key) is not None,
        no_longer_shown=key in NO_LONGER_SHOWN,
    )


def _folding_warnings(key: str, value: str, rule: _KeyRule) -> list[str]:
    """What WeChat will fold or cut in an untyped value, which it still sends."""
    found: list[str] = []
    if any(char in LINE_BREAKS for char in value):
        found.append(f"{key}: WeChat does not show line breaks; it folds them")
    if rule.keyword and len(value) > MAX_KEYWORD_CHARS:
        found.append(
            f"{key}: WeChat shows at most {MAX_KEYWORD_CHARS} characters of a keyword "
            f"and cuts the rest (got {len(value)})"
        )
    return found


# ---------------------------------------------------------------------------
# Reading a body: one pass, every problem collected.


def _client_msg_id_problem(value: object) -> str | None:
    if not isinstance(value, str):
        return type_problem(value)
    if not value or len(value) > MAX_CLIENT_MSG_ID_CHARS:
        return f"1 to {MAX_CLIENT_MSG_ID_CHARS} characters (got {len(value)})"
    if _CLIENT_MSG_ID.fullmatch(value) is None:
        return "only printable ASCII characters"
    return None


def _read(body: object, *, check_content: bool) -> tuple[TemplateMessage, list[Problem]]:
    error = not_an_object(body)
    if error is not None:
        raise error
    assert isinstance(body, Mapping)
    reader = _Reader(check_content)
    message = reader.message(body)
    reader.raise_if_any()
    return message, reader.warnings


_ITEM_FIELDS = frozenset(("value", "color"))


class _Reader(BodyReader):
    """Builds a TemplateMessage from a body, collecting problems instead of stopping."""

    def message(self, body: Mapping[str, Any]) -> TemplateMessage:
        return TemplateMessage(
            touser=self.field(body, ("touser",), opaque_id_problem),
            template_id=self.field(body, ("template_id",), opaque_id_problem),
            data=self._data(body.get("data", MISSING)),
            url=self._url(body.get("url")),
            miniprogram=self.miniprogram(body.get("miniprogram")),
            client_msg_id=self._client_msg_id(body.get("client_msg_id")),
        )

    def _data(self, raw: object) -> dict[str, DataItem]:
        items: dict[str, DataItem] = {}
        for key, item in self.data_object(raw).items():
            read = self._data_item(str(key), item)
            if read is not None:
                items[str(key)] = read
        return items

    def _data_item(self, key: str, raw: object) -> DataItem | None:
        rule = _key_rule(key) if self.check_content else None
        if rule is not None:
            self._check_key(key, rule)
        if not is_object(raw):
            self.problem(("data", key), key, 'must be an object like {"value": "..."}')
            return None
        for field in raw.keys() - _ITEM_FIELDS:
            self.problem(("data", key, str(field)), key, f"unknown field {str(field)!r}")
        value = raw.get("value", MISSING)
        if not isinstance(value, str):
            self.problem(("data", key, "value"), f"{key}.value", type_problem(value))
            value = ""
        elif rule is not None:
            self._check_value(key, value, rule)
        color = raw.get("color")
        return DataItem(value, None if color is None else self._color(key, color))

    def _check_value(self, key: str, value: str, rule: _KeyRule) -> None:
        loc: Loc = ("data", key, "value")
        if rule.lenient:
            self.problem(loc, key, rule.check(value))
            for warning in _folding_warnings(key, value, rule):
                self.warning(loc, warning)
        elif CONTROL.search(value) is not None or rule.check(value) is not None:
            self.problem(loc, key, control_problem(value))
            self.problem(loc, key, rule.check(value))

    def _check_key(self, key: str, rule: _KeyRule) -> None:
        if not rule.well_formed:
            self.problem(("data", key), key, "a key is a letter then ≤ 63 letters, digits or _")
        if rule.no_longer_shown:
            msg = f"{key}: WeChat no longer shows first/remark since {RULES_CHANGED_ON}"
            self.warning(("data", key), msg)

    def _color(self, key: str, raw: object) -> str | None:
        loc: Loc = ("data", key, "color")
        if not isinstance(raw, str):
            self.problem(loc, f"{key}.color", type_problem(raw))
            return None
        if not raw:  # what SDKs send for "the default colour"
            return None
        if self.check_content and _COLOR.fullmatch(raw) is None:
            self.problem(loc, f"{key}.color", "must look like #RRGGBB")
        elif self.check_content:
            self.warning(loc, f"{key}.color: colours are ignored since {RULES_CHANGED_ON}")
        return raw

    def _url(self, raw: object) -> str | None:
        if raw is None or raw == "":  # both are what SDKs send for "no link"
            return None
        if not isinstance(raw, str):
            self.problem(("url",), "url", type_problem(raw))
            return None
        if self.check_content:
            self.problem(("url",), "url", url_problem(raw))
        return raw

    def _client_msg_id(self, raw: object) -> str | None:
        if raw is None:
            return None
        self.problem(("client_msg_id",), "client_msg_id", _client_msg_id_problem(raw))
        return raw if isinstance(raw, str) else None
