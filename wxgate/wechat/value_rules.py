"""WeChat's rules for the value of a typed template key, one table for every kind.

Category templates (类目模板) of template messages, subscribe notifications and
mini-program subscribe messages all name a key by its type and a number (`thing3`,
`amount1`); WeChat answers 47003 when a value breaks its type's rule. This module owns
the table of those types: each type's check and, where the kinds differ, its limit
per kind. Where WeChat's tables are vague we lean lenient: a value WeChat refuses
still fails visibly (47003), while one we refuse wrongly could never be sent at all.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from wxgate.wechat.fields import control_problem
from wxgate.wechat.kinds import MessageKind

# A check gets the value and the limit that applies to the message's kind.
LimitedCheck = Callable[[str, int], str | None]

_TYPED_KEY = re.compile(r"([a-z_]+)[0-9]+")

_HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
_HAS_HAN = re.compile(f"[{_HAN}]")
_PHRASE = re.compile(f"[{_HAN}]+")
_CAR_NUMBER = re.compile(f"[{_HAN}A-Za-z0-9](?:[A-Za-z0-9]*[{_HAN}A-Za-z0-9])?")
_NUMBER = re.compile(r"-?([0-9]+)(?:\.([0-9]+))?")
_LETTER = re.compile(r"[A-Za-z]+")
_SYMBOL = re.compile(r"(?:[^\w\s]|_)+")
_ASCII_PRINTABLE = re.compile(r"[\x20-\x7e]+")
_PHONE = re.compile(r"[0-9 !-/:-@\[-`{-~]+")

# Dates and times (docs/wechat-protocol.md §2.3, and the note under the subscribe
# table, http://blog.bitefu.net/post/660.html): a date is y年m月d日, y年m月 or m月d日,
# or joined by -, / or . (2018-01-01, 2018/01/01, 2018.01.01, 2018-01, 01-01); a
# time is HH:MM or HH:MM:SS, 24 h. `time` is a time with an optional date before it,
# `date` a date with an optional time after it; a range joins two with ~.
_YEAR = "[0-9]{4}"
_MONTH = "(?:0?[1-9]|1[0-2])"
_DAY = "(?:0?[1-9]|[12][0-9]|3[01])"
_DATE = "(?:{})".format(
    "|".join(
        [f"{_YEAR}{sep}{_MONTH}(?:{sep}{_DAY})?|{_MONTH}{sep}{_DAY}" for sep in ("-", "/", r"\.")]
        + [f"{_YEAR}年{_MONTH}月(?:{_DAY}日)?|{_MONTH}月{_DAY}日"]
    )
)
_CLOCK = "(?:[01]?[0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9])?"
_TIME_POINT = f"(?:{_DATE} ?)?{_CLOCK}"
_DATE_POINT = f"{_DATE}(?: ?{_CLOCK})?"
_RANGE = " ?[~～] ?"
_TIME = re.compile(f"{_TIME_POINT}(?:{_RANGE}{_TIME_POINT})?")
# A date range may end on a bare time: "2019年10月1日 15:01~16:00".
_DATE_VALUE = re.compile(f"{_DATE_POINT}(?:{_RANGE}(?:{_DATE_POINT}|{_CLOCK}))?")

_CURRENCY_SIGN = "[$\u00a2-\u00a5\u20a0-\u20c0\uff04\uffe0\uffe1\uffe5\uffe6]"  # ¥ € £ ￥ ...
_CURRENCY_MARK = f"(?:{_CURRENCY_SIGN}|[A-Z]{{2}}\\$|[A-Z]{{3}} ?)"  # ¥, HK$, CNY
_AMOUNT = re.compile(f"(?:-?{_CURRENCY_MARK}|{_CURRENCY_MARK}-|-)?([0-9]+)(?:\\.[0-9]{{1,4}})?元?")

ENUM_TYPES = frozenset(("enum", "enum_string"))


# ---------------------------------------------------------------------------
# The checks: each takes a non-empty value and its kind's limit, and names the rule
# the value breaks, or answers None.


def _at_most(value: str, limit: int) -> str | None:
    return f"at most {limit} characters (got {len(value)})" if len(value) > limit else None


def _shaped(pattern: re.Pattern[str], shape: str) -> LimitedCheck:
    def check(value: str, limit: int) -> str | None:
        problem = _at_most(value, limit) if limit else None
        if problem is None and pattern.fullmatch(value) is None:
            return shape
        return problem

    return check


def _number(value: str, limit: int) -> str | None:
    match = _NUMBER.fullmatch(value)
    if match is None:
        return "only digits, with an optional leading - and decimal part"
    digits = len(match[1]) + len(match[2] or "")
    return f"at most {limit} digits (got {digits})" if digits > limit else None


def _character_string(value: str, limit: int) -> str | None:
    if _HAS_HAN.search(value) is not None:
        return "no Chinese characters allowed"
    if _ASCII_PRINTABLE.fullmatch(value) is None:
        return "only ASCII letters, digits and symbols"
    return _at_most(value, limit)


def _amount(value: str, limit: int) -> str | None:
    match = _AMOUNT.fullmatch(value)
    if match is None:
        return (
            "one currency mark (¥, $, €, £, ￥ or a 3-letter code), digits, "
            "at most 4 decimals and an optional trailing 元"
        )
    digits = len(match[1])
    if digits > limit:
        return f"at most {limit} digits before the decimal point (got {digits})"
    return None


def _name(value: str, limit: int) -> str | None:
    # ≤ 10 Chinese characters, or ≤ 20 letters and symbols; mixed counts as Chinese.
    if len(value) > limit // 2 and _HAS_HAN.search(value) is not None:
        return f"at most {limit // 2} characters when it contains Chinese (got {len(value)})"
    return _at_most(value, limit)


def _any(_value: str, _limit: int) -> str | None:
    return None


@dataclass(frozen=True, slots=True)
class TypeRule:
    """The rule of one key type: its check, the limit it is given (per kind where the
    kinds differ) and whether an empty value is allowed."""

    check: LimitedCheck
    limit: int = 0  # 0: the check has no length limit
    limit_by_kind: Mapping[MessageKind, int] = field(default_factory=dict)
    may_be_empty: bool = False

    def problem(self, value: str, kind: MessageKind) -> str | None:
        if not value:
            # 47003 reads "可能为空或者不满足规则": typed values must not be empty.
            return None if self.may_be_empty else "must not be empty"
        return self.check(value, self.limit_by_kind.get(kind, self.limit))


# One table: key type -> its rule (docs/wechat-protocol.md §2.3; the subscribe table,
# http://blog.bitefu.net/post/660.html, has the same types).
RULES: dict[str, TypeRule] = {
    "thing": TypeRule(lambda value, limit: _at_most(value, limit), 20),
    "number": TypeRule(_number, 32),
    "letter": TypeRule(_shaped(_LETTER, "only ASCII letters"), 32),
    "symbol": TypeRule(_shaped(_SYMBOL, "only symbols (no letters, digits or spaces)"), 5),
    "character_string": TypeRule(_character_string, 32),
    "time": TypeRule(_shaped(_TIME, "a 24-hour time with an optional date, ranges with ~")),
    "date": TypeRule(_shaped(_DATE_VALUE, "a date with an optional 24-hour time, ranges with ~")),
    # The template-message table allows 12 digits, the subscribe table 10
    # (docs/wechat-protocol.md §2.3; https://blog.csdn.net/YHLSunshine/article/details/133775086).
    "amount": TypeRule(
        _amount,
        12,
        {MessageKind.SUBSCRIBE: 10, MessageKind.MINIPROGRAM: 10},
    ),
    "phone_number": TypeRule(
        _shaped(_PHONE, "only digits, spaces and symbols such as + - ( )"), 17
    ),
    "car_number": TypeRule(
        _shaped(_CAR_NUMBER, "letters and digits; only the first and last may be Chinese"), 8
    ),
    "name": TypeRule(_name, 20),
    "phrase": TypeRule(_shaped(_PHRASE, "only Chinese characters"), 5),
    # "只能下发审核通过的字符串和空串": the approved strings, or an empty one (same source).
    "const": TypeRule(lambda value, limit: _at_most(value, limit), 20, may_be_empty=True),
    # Only values of the template's keywordEnumValueList; checked by `value_problem`
    # when the caller knows them (gettemplate), else left to WeChat.
    "enum": TypeRule(_any),
    "enum_string": TypeRule(_any),
}


@lru_cache(maxsize=4096)
def key_type(key: str) -> str | None:
    """The type a key names (`thing3` -> "thing", `enum_string2` -> "enum_string"), or
    None for an untyped key (`keyword1`, `first`, `short_thing1`)."""
    match = _TYPED_KEY.fullmatch(key)
    return match[1] if match is not None and match[1] in RULES else None


def enum_problem(value: str, allowed: Sequence[str]) -> str | None:
    """Whether `value` is one of the template's enum values; several may be sent joined
    by commas (an official community answer, 2023-03-15)."""
    if value in allowed or all(part in allowed for part in value.split(",")):
        return None
    shown = ", ".join(allowed[:10]) + (", ..." if len(allowed) > 10 else "")
    return f"must be one of the template's values ({shown})"


def value_problem(
    key: str,
    value: str,
    kind: MessageKind = MessageKind.TEMPLATE,
    allowed: Sequence[str] | None = None,
) -> str | None:
    """What breaks the rule of a typed key for `kind`, or None (untyped keys have none).
    `allowed`, when given, lists the only values the template takes for the key (its
    keywordEnumValueList), whatever the key's type.
    Control characters break every typed rule ("不能带有换行等控制字符")."""
    type_ = key_type(key)
    problem = None
    if type_ is not None:
        problem = control_problem(value) or RULES[type_].problem(value, kind)
    if problem is None and value and allowed is not None:
        problem = enum_problem(value, allowed)
    return problem
