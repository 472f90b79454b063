"""One template message: its model, its wire form and WeChat's rules for its content.

This module owns `TemplateMessage` (the body of template/send, docs/wechat-protocol.md §2.1–2.2),
`parse` (every rule we can check before WeChat does, all problems at once, plus the
2023 warnings) and `typed_value_problem` (the category-template keyword rules of §2.3,
shared with the sandbox so that it answers 47003 exactly where our intake refuses).

Where WeChat's tables are vague we lean lenient: a value WeChat refuses still fails
visibly (47003), while a value we refuse wrongly could never be sent at all.
- `number`: an optional leading `-`, digits, an optional decimal part; ≤ 32 digits in all.
- `character_string`: printable ASCII (space included), ≤ 32; Chinese is named as such.
- `symbol`: ≤ 5 characters, none a letter, digit or whitespace.
- `time` / `date`: dates `2019-10-01`, `2019/10/1`, `2019.10.01`, `2019年10月1日`, `10月1日`;
  times `15:01` or `15:01:59` (24 h); date and time joined by an optional space; a range
  is two of those joined by `~` or `～`, with optional spaces around it.
- `amount`: an optional `-`, at most one currency mark (a Unicode currency sign such as
  ¥ $ € £ ￥, a prefixed dollar like `HK$`, or a 3-letter code like `CNY` and an optional
  space), ≤ 10 digits before the point, ≤ 4 after it, an optional trailing `元`.
- `phone_number`: ≤ 17 digits, spaces and ASCII symbols (`+86-0766-66888866`, `138****1234`).
- `name`: ≤ 10 characters when any is Chinese, else ≤ 20.
- Typed values must not be empty (47003 reads "可能为空或者不满足规则").
- `short_thing` and other prefixes outside §2.3 are untyped: ≤ 200 characters.
- Plain `keywordN`: ≤ 20 characters (the 2023 rule). Only `parse` applies it: WeChat is
  not known to answer 47003 for it, so `typed_value_problem` (the sandbox's) leaves it out.
- No value may hold control characters or line breaks; that is `parse`'s check too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, TypeGuard
from urllib.parse import urlsplit

Loc = tuple[str | int, ...]
Check = Callable[[str], str | None]

MAX_DATA_KEYS = 32
MAX_ID_CHARS = 128
MAX_URL_CHARS = 1024
MAX_PAGEPATH_CHARS = 512
MAX_CLIENT_MSG_ID_CHARS = 64
MAX_UNTYPED_CHARS = 200
MAX_KEYWORD_CHARS = 20  # the 2023 rule for plain keywordN values
NO_LONGER_SHOWN = frozenset(("first", "remark"))
RULES_CHANGED_ON = "2023-05-04"

_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
_PREFIXED_KEY = re.compile(r"([a-z_]+)[0-9]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")
_LINE_BREAKS = frozenset("\n\r\u2028\u2029")
_OPAQUE_ID = re.compile(r"[^\s\x00-\x1f\x7f]+")  # touser, template_id, url, miniprogram.appid
_CLIENT_MSG_ID = re.compile(r"[\x20-\x7e]+")
_COLOR = re.compile(r"#[0-9A-Fa-f]{6}")

_HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
_HAS_HAN = re.compile(f"[{_HAN}]")
_PHRASE = re.compile(f"[{_HAN}]+")
_CAR_NUMBER = re.compile(f"[{_HAN}A-Za-z0-9](?:[A-Za-z0-9]*[{_HAN}A-Za-z0-9])?")
_NUMBER = re.compile(r"-?([0-9]+)(?:\.([0-9]+))?")
_LETTER = re.compile(r"[A-Za-z]+")
_SYMBOL = re.compile(r"(?:[^\w\s]|_)+")
_ASCII_PRINTABLE = re.compile(r"[\x20-\x7e]+")
_PHONE = re.compile(r"[0-9 !-/:-@\[-`{-~]+")

_MONTH = "(?:0?[1-9]|1[0-2])"
_DAY = "(?:0?[1-9]|[12][0-9]|3[01])"
_DATE = "(?:{})".format(
    "|".join(
        [f"[0-9]{{4}}{sep}{_MONTH}{sep}{_DAY}" for sep in ("-", "/", r"\.")]
        + [f"(?:[0-9]{{4}}年)?{_MONTH}月{_DAY}日"]
    )
)
_CLOCK = "(?:[01]?[0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9])?"


def _range_of(one: str) -> re.Pattern[str]:
    return re.compile(f"{one}(?: ?[~～] ?{one})?")


_TIME = _range_of(f"(?:{_DATE} ?)?{_CLOCK}")
_DATE_VALUE = _range_of(f"{_DATE}(?: ?{_CLOCK})?")

_CURRENCY_SIGN = "[$\u00a2-\u00a5\u20a0-\u20c0\uff04\uffe0\uffe1\uffe5\uffe6]"  # ¥ € £ ￥ ...
_CURRENCY_MARK = f"(?:{_CURRENCY_SIGN}|[A-Z]{{2}}\\$|[A-Z]{{3}} ?)"  # ¥, HK$, CNY
_AMOUNT = re.compile(f"(?:-?{_CURRENCY_MARK}|{_CURRENCY_MARK}-|-)?([0-9]+)(?:\\.[0-9]{{1,4}})?元?")


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong (or, as a warning, questionable) at a field path of the message."""

    loc: Loc
    msg: str


class TemplateValidationError(ValueError):
    """The body is not a template message WeChat would accept; `problems` lists every reason."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(problem.msg for problem in problems))


@dataclass(frozen=True, slots=True)
class DataItem:
    """The value of one template placeholder (`{{thing3.DATA}}`)."""

    value: str
    color: str | None = None

    def to_wechat(self) -> dict[str, str]:
        if self.color is None:
            return {"value": self.value}
        return {"value": self.value, "color": self.color}


@dataclass(frozen=True, slots=True)
class MiniProgram:
    """The mini program page a click opens (it wins over `url` where the client can)."""

    appid: str
    pagepath: str


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
            body["miniprogram"] = {
                "appid": self.miniprogram.appid,
                "pagepath": self.miniprogram.pagepath,
            }
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


def typed_value_problem(key: str, value: str) -> str | None:
    """What breaks the §2.3 rule of a typed key (`thing3`, `amount1`, ...), as
    `"<key>: <rule and limit>"`; None when the value is fine or the key is untyped."""
    check = _typed_check(key)
    problem = None if check is None else check(value)
    return None if problem is None else f"{key}: {problem}"


# ---------------------------------------------------------------------------
# The §2.3 checks: each takes a value and names the rule it breaks, or None.


def _at_most(limit: int) -> Check:
    def check(value: str) -> str | None:
        if len(value) > limit:
            return f"at most {limit} characters (got {len(value)})"
        return None

    return check


def _shaped(pattern: re.Pattern[str], shape: str, limit: int | None = None) -> Check:
    too_long = None if limit is None else _at_most(limit)

    def check(value: str) -> str | None:
        problem = None if too_long is None else too_long(value)
        if problem is None and pattern.fullmatch(value) is None:
            return shape
        return problem

    return check


def _number(value: str) -> str | None:
    match = _NUMBER.fullmatch(value)
    if match is None:
        return "only digits, with an optional leading - and decimal part"
    digits = len(match[1]) + len(match[2] or "")
    return f"at most 32 digits (got {digits})" if digits > 32 else None


def _character_string(value: str) -> str | None:
    if _HAS_HAN.search(value) is not None:
        return "no Chinese characters allowed"
    if _ASCII_PRINTABLE.fullmatch(value) is None:
        return "only ASCII letters, digits and symbols"
    return _at_most_32(value)


def _amount(value: str) -> str | None:
    match = _AMOUNT.fullmatch(value)
    if match is None:
        return (
            "one currency mark (¥, $, €, £, ￥ or a 3-letter code), digits, "
            "at most 4 decimals and an optional trailing 元"
        )
    digits = len(match[1])
    return f"at most 10 digits before the decimal point (got {digits})" if digits > 10 else None


def _name(value: str) -> str | None:
    if len(value) > 10 and _HAS_HAN.search(value) is not None:
        return f"at most 10 characters when it contains Chinese (got {len(value)})"
    return _at_most_20(value)


def _not_empty(check: Check) -> Check:
    def checked(value: str) -> str | None:
        return check(value) if value else "must not be empty"

    return checked


_at_most_20 = _at_most(20)
_at_most_32 = _at_most(32)

# One table: key prefix -> the check of its values (docs/wechat-protocol.md §2.3).
_TYPED_CHECKS: dict[str, Check] = {
    prefix: _not_empty(check)
    for prefix, check in {
        "thing": _at_most_20,
        "number": _number,
        "letter": _shaped(_LETTER, "only ASCII letters", 32),
        "symbol": _shaped(_SYMBOL, "only symbols (no letters, digits or spaces)", 5),
        "character_string": _character_string,
        "time": _shaped(_TIME, "a 24-hour time with an optional date, ranges with ~"),
        "date": _shaped(_DATE_VALUE, "a date with an optional 24-hour time, ranges with ~"),
        "amount": _amount,
        "phone_number": _shaped(_PHONE, "only digits, spaces and symbols such as + - ( )", 17),
        "car_number": _shaped(
            _CAR_NUMBER, "letters and digits; only the first and last may be Chinese", 8
        ),
        "name": _name,
        "phrase": _shaped(_PHRASE, "only Chinese characters", 5),
        "const": _at_most_20,
    }.items()
}
_KEYWORD_CHECK = _at_most(MAX_KEYWORD_CHARS)
_UNTYPED_CHECK = _at_most(MAX_UNTYPED_CHARS)


@lru_cache(maxsize=4096)
def _typed_check(key: str) -> Check | None:
    match = _PREFIXED_KEY.fullmatch(key)
    return None if match is None else _TYPED_CHECKS.get(match[1])


@dataclass(frozen=True, slots=True)
class _KeyRule:
    """What parse needs to know about one data key, worked out once per key."""

    well_formed: bool
    check: Check  # typed, plain keywordN, or untyped
    no_longer_shown: bool


@lru_cache(maxsize=4096)
def _key_rule(key: str) -> _KeyRule:
    check = _typed_check(key)
    if check is None:
        match = _PREFIXED_KEY.fullmatch(key)
        keyword = match is not None and match[1] == "keyword"
        check = _KEYWORD_CHECK if keyword else _UNTYPED_CHECK
    return _KeyRule(_KEY.fullmatch(key) is not None, check, key in NO_LONGER_SHOWN)


# ---------------------------------------------------------------------------
# Reading a body: one pass, every problem collected.


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    return "array" if isinstance(value, list | tuple) else type(value).__name__


def _control_problem(value: str) -> str | None:
    found = _CONTROL.search(value)
    if found is None:
        return None
    if found[0] in _LINE_BREAKS:
        return "no line breaks allowed"
    return f"no control characters allowed (found U+{ord(found[0]):04X})"


def _opaque_id_problem(value: str) -> str | None:
    if not value:
        return "must not be empty"
    if len(value) > MAX_ID_CHARS:
        return f"at most {MAX_ID_CHARS} characters (got {len(value)})"
    if _OPAQUE_ID.fullmatch(value) is None:
        return "no whitespace or control characters allowed"
    return None


def _client_msg_id_problem(value: object) -> str | None:
    if not isinstance(value, str):
        return f"must be a string (got {_json_type(value)})"
    if not value or len(value) > MAX_CLIENT_MSG_ID_CHARS:
        return f"1 to {MAX_CLIENT_MSG_ID_CHARS} characters (got {len(value)})"
    if _CLIENT_MSG_ID.fullmatch(value) is None:
        return "only printable ASCII characters"
    return None


def _url_problem(value: str) -> str | None:
    if len(value) > MAX_URL_CHARS:
        return f"at most {MAX_URL_CHARS} characters (got {len(value)})"
    if _OPAQUE_ID.fullmatch(value) is None:
        return "no whitespace or control characters allowed"
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return "not a valid URL"
    if parts.scheme.lower() not in ("http", "https") or not host:
        return "must be an absolute http(s) URL"
    return None


def _pagepath_problem(value: str) -> str | None:
    if not value:
        return "must not be empty"
    if len(value) > MAX_PAGEPATH_CHARS:
        return f"at most {MAX_PAGEPATH_CHARS} characters (got {len(value)})"
    return _control_problem(value)


def _read(body: object, *, check_content: bool) -> tuple[TemplateMessage, list[Problem]]:
    if not isinstance(body, Mapping):
        problem = Problem((), f"the body must be a JSON object (got {_json_type(body)})")
        raise TemplateValidationError([problem])
    reader = _Reader(check_content)
    message = reader.message(body)
    if reader.problems:
        raise TemplateValidationError(reader.problems)
    return message, reader.warnings


_MISSING: Any = object()
_ITEM_FIELDS = frozenset(("value", "color"))
_MINIPROGRAM_FIELDS = frozenset(("appid", "pagepath"))


def _type_problem(value: object, expected: str = "a string") -> str:
    return "required" if value is _MISSING else f"must be {expected} (got {_json_type(value)})"


def _is_object(value: object) -> TypeGuard[Mapping[str, Any]]:
    return type(value) is dict or isinstance(value, Mapping)  # dict first: the ABC check is slow


class _Reader:
    """Builds a TemplateMessage from a body, collecting problems instead of stopping.

    Without `check_content` only the shape is read (`from_wechat`); with it the
    content rules apply and the 2023 warnings are collected. Labels and locs are
    built only when there is a problem: this runs once per recipient of a batch.
    """

    def __init__(self, check_content: bool) -> None:
        self.check_content = check_content
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []

    def message(self, body: Mapping[str, Any]) -> TemplateMessage:
        return TemplateMessage(
            touser=self._field(body, ("touser",), _opaque_id_problem),
            template_id=self._field(body, ("template_id",), _opaque_id_problem),
            data=self._data(body.get("data", _MISSING)),
            url=self._url(body.get("url")),
            miniprogram=self._miniprogram(body.get("miniprogram")),
            client_msg_id=self._client_msg_id(body.get("client_msg_id")),
        )

    def _problem(self, loc: Loc, label: str, msg: str | None) -> None:
        if msg is not None:
            self.problems.append(Problem(loc, f"{label}: {msg}"))

    def _field(self, parent: Mapping[str, Any], loc: Loc, check: Check) -> str:
        """A required string field of `parent` (at `loc`), its content checked by `check`."""
        raw = parent.get(str(loc[-1]), _MISSING)
        if not isinstance(raw, str):
            self._problem(loc, ".".join(map(str, loc)), _type_problem(raw))
            return ""
        if self.check_content:
            self._problem(loc, ".".join(map(str, loc)), check(raw))
        return raw

    def _data(self, data: object) -> dict[str, DataItem]:
        if not _is_object(data):
            self._problem(("data",), "data", _type_problem(data, "an object"))
            return {}
        if not data:
            self._problem(("data",), "data", "must have at least one key")
        elif self.check_content and len(data) > MAX_DATA_KEYS:
            self._problem(("data",), "data", f"at most {MAX_DATA_KEYS} keys (got {len(data)})")
        items: dict[str, DataItem] = {}
        for key, raw in data.items():
            item = self._data_item(str(key), raw)
            if item is not None:
                items[str(key)] = item
        return items

    def _data_item(self, key: str, raw: object) -> DataItem | None:
        rule = _key_rule(key) if self.check_content else None
        if rule is not None:
            self._check_key(key, rule)
        if not _is_object(raw):
            self._problem(("data", key), key, 'must be an object like {"value": "..."}')
            return None
        if not raw.keys() <= _ITEM_FIELDS:
            for field in raw.keys() - _ITEM_FIELDS:
                self._problem(("data", key, str(field)), key, f"unknown field {str(field)!r}")
        value = raw.get("value", _MISSING)
        if not isinstance(value, str):
            self._problem(("data", key, "value"), f"{key}.value", _type_problem(value))
            value = ""
        elif rule is not None and (_CONTROL.search(value) or rule.check(value)) is not None:
            self._problem(("data", key, "value"), key, _control_problem(value))
            self._problem(("data", key, "value"), key, rule.check(value))
        color = raw.get("color")
        return DataItem(value, None if color is None else self._color(key, color))

    def _check_key(self, key: str, rule: _KeyRule) -> None:
        if not rule.well_formed:
            self._problem(("data", key), key, "a key is a letter then ≤ 63 letters, digits or _")
        if rule.no_longer_shown:
            msg = f"{key}: WeChat no longer shows first/remark since {RULES_CHANGED_ON}"
            self.warnings.append(Problem(("data", key), msg))

    def _color(self, key: str, raw: object) -> str | None:
        loc: Loc = ("data", key, "color")
        if not isinstance(raw, str):
            self._problem(loc, f"{key}.color", _type_problem(raw))
            return None
        if not raw:  # what SDKs send for "the default colour"
            return None
        if self.check_content and _COLOR.fullmatch(raw) is None:
            self._problem(loc, f"{key}.color", "must look like #RRGGBB")
        elif self.check_content:
            msg = f"{key}.color: colours are ignored since {RULES_CHANGED_ON}"
            self.warnings.append(Problem(loc, msg))
        return raw

    def _url(self, raw: object) -> str | None:
        if raw is None or raw == "":  # both are what SDKs send for "no link"
            return None
        if not isinstance(raw, str):
            self._problem(("url",), "url", _type_problem(raw))
            return None
        if self.check_content:
            self._problem(("url",), "url", _url_problem(raw))
        return raw

    def _miniprogram(self, raw: object) -> MiniProgram | None:
        if raw is None:
            return None
        if not _is_object(raw):
            self._problem(("miniprogram",), "miniprogram", _type_problem(raw, "an object"))
            return None
        for field in raw.keys() - _MINIPROGRAM_FIELDS:
            loc = ("miniprogram", str(field))
            self._problem(loc, "miniprogram", f"unknown field {str(field)!r}")
        appid = self._field(raw, ("miniprogram", "appid"), _opaque_id_problem)
        pagepath = self._field(raw, ("miniprogram", "pagepath"), _pagepath_problem)
        return MiniProgram(appid, pagepath)

    def _client_msg_id(self, raw: object) -> str | None:
        if raw is None:
            return None
        self._problem(("client_msg_id",), "client_msg_id", _client_msg_id_problem(raw))
        return raw if isinstance(raw, str) else None
