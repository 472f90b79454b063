"""Reading a JSON message body: what every kind of message shares.

This module owns `Problem` (one thing wrong at a field path) and
`TemplateValidationError` (every problem of a body at once), the parts and checks of
the fields several kinds have in common (`DataItem`, `MiniProgram`, ids, links, pages,
JSON types, control characters) and `BodyReader`, which collects problems and
warnings instead of stopping at the first.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard
from urllib.parse import urlsplit

Loc = tuple[str | int, ...]
Check = Callable[[str], str | None]

MAX_DATA_KEYS = 32
MAX_ID_CHARS = 128
MAX_URL_CHARS = 1024
MAX_PAGEPATH_CHARS = 512
MAX_UNTYPED_CHARS = 200  # our own cap on a value without a typed rule

KEY = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
# C0 and C1 control characters (U+0080-U+009F too: NEL, CSI, ...), DEL, and the
# Unicode line and paragraph separators. NEL (U+0085) is a line break.
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
LINE_BREAKS = frozenset("\n\r\x85\u2028\u2029")
_CONTROL_NOT_LINE_BREAK = re.compile(r"[\x00-\x09\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f]")
_OPAQUE_ID = re.compile(r"[^\s\x00-\x1f\x7f-\x9f]+")  # touser, template_id, url, mp appid

MISSING: Any = object()
_MINIPROGRAM_FIELDS = frozenset(("appid", "pagepath"))


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong (or, as a warning, questionable) at a field path of the message."""

    loc: Loc
    msg: str


class TemplateValidationError(ValueError):
    """The body is not a message WeChat would accept; `problems` lists every reason."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(problem.msg for problem in problems))


@dataclass(frozen=True, slots=True)
class DataItem:
    """The value of one template placeholder (`{{thing3.DATA}}`); subscribe kinds have
    no colour."""

    value: str
    color: str | None = None

    def to_wechat(self) -> dict[str, str]:
        if self.color is None:
            return {"value": self.value}
        return {"value": self.value, "color": self.color}


@dataclass(frozen=True, slots=True)
class MiniProgram:
    """The mini program a click opens (it wins over a link where the client can).
    Without a `pagepath` it opens on its home page: the current template/send doc
    marks pagepath optional (protocol review row 7)."""

    appid: str
    pagepath: str | None = None

    def to_wechat(self) -> dict[str, str]:
        if self.pagepath is None:
            return {"appid": self.appid}
        return {"appid": self.appid, "pagepath": self.pagepath}


def json_type(value: object) -> str:
    """The JSON name of a value's type, for "must be a string (got number)"."""
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


def type_problem(value: object, expected: str = "a string") -> str:
    return "required" if value is MISSING else f"must be {expected} (got {json_type(value)})"


def is_object(value: object) -> TypeGuard[Mapping[str, Any]]:
    return type(value) is dict or isinstance(value, Mapping)  # dict first: the ABC check is slow


def not_an_object(body: object) -> TemplateValidationError | None:
    """The error for a body that is not a JSON object, or None when it is one."""
    if is_object(body):
        return None
    problem = Problem((), f"the body must be a JSON object (got {json_type(body)})")
    return TemplateValidationError([problem])


def control_problem(value: str) -> str | None:
    found = CONTROL.search(value)
    if found is None:
        return None
    if found[0] in LINE_BREAKS:
        return "no line breaks allowed"
    return f"no control characters allowed (found U+{ord(found[0]):04X})"


def control_other_than_line_break(value: str) -> str | None:
    """`control_problem`, except that line breaks pass (where they are only a warning)."""
    found = _CONTROL_NOT_LINE_BREAK.search(value)
    return None if found is None else f"no control characters allowed (found U+{ord(found[0]):04X})"


def opaque_id_problem(value: str) -> str | None:
    if not value:
        return "must not be empty"
    if len(value) > MAX_ID_CHARS:
        return f"at most {MAX_ID_CHARS} characters (got {len(value)})"
    if _OPAQUE_ID.fullmatch(value) is None:
        return "no whitespace or control characters allowed"
    return None


def url_problem(value: str) -> str | None:
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


def pagepath_problem(value: str) -> str | None:
    if not value:
        return "must not be empty"
    if len(value) > MAX_PAGEPATH_CHARS:
        return f"at most {MAX_PAGEPATH_CHARS} characters (got {len(value)})"
    return control_problem(value)


def stored_body_problem(body: Mapping[str, Any]) -> str | None:
    """What a stored body (any kind) lacks to be sent at all, in a few dict lookups:
    the send path's only check, since the full rules ran when the body was accepted
    and WeChat judges the rest. None when it has a touser, a template_id and a data
    object."""
    missing = [name for name in ("touser", "template_id") if type(body.get(name)) is not str]
    if type(body.get("data")) is not dict:
        missing.append("data")
    return f"no {', '.join(missing)}" if missing else None


class BodyReader:
    """Collects the problems and warnings of one body while it is read in one pass.

    With `check_content` False only the shape is read (a stored body read back);
    labels and locs are built only when there is a problem, since this runs once per
    recipient of a batch."""

    def __init__(self, check_content: bool) -> None:
        self.check_content = check_content
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []

    def problem(self, loc: Loc, label: str, msg: str | None) -> None:
        if msg is not None:
            self.problems.append(Problem(loc, f"{label}: {msg}"))

    def warning(self, loc: Loc, msg: str) -> None:
        self.warnings.append(Problem(loc, msg))

    def field(self, parent: Mapping[str, Any], loc: Loc, check: Check) -> str:
        """A required string field of `parent` (at `loc`), its content checked by `check`."""
        raw = parent.get(str(loc[-1]), MISSING)
        if not isinstance(raw, str):
            self.problem(loc, ".".join(map(str, loc)), type_problem(raw))
            return ""
        if self.check_content:
            self.problem(loc, ".".join(map(str, loc)), check(raw))
        return raw

    def optional_field(self, parent: Mapping[str, Any], loc: Loc, check: Check) -> str | None:
        """An optional string field: absent, null and "" all mean not given."""
        raw = parent.get(str(loc[-1]))
        if raw is None or raw == "":
            return None
        return self.field(parent, loc, check)

    def miniprogram(self, raw: object) -> MiniProgram | None:
        """The optional `miniprogram` object: an appid and an optional pagepath."""
        if raw is None:
            return None
        if not is_object(raw):
            self.problem(("miniprogram",), "miniprogram", type_problem(raw, "an object"))
            return None
        for field in raw.keys() - _MINIPROGRAM_FIELDS:
            self.problem(("miniprogram", str(field)), "miniprogram", f"unknown field {field!r}")
        appid = self.field(raw, ("miniprogram", "appid"), opaque_id_problem)
        pagepath = self.optional_field(raw, ("miniprogram", "pagepath"), pagepath_problem)
        return MiniProgram(appid, pagepath)

    def data_object(self, data: object) -> Mapping[str, Any]:
        """`data` as an object of at most MAX_DATA_KEYS keys (empty, with a problem, if not)."""
        if not is_object(data):
            self.problem(("data",), "data", type_problem(data, "an object"))
            return {}
        if not data:
            self.problem(("data",), "data", "must have at least one key")
        elif self.check_content and len(data) > MAX_DATA_KEYS:
            self.problem(("data",), "data", f"at most {MAX_DATA_KEYS} keys (got {len(data)})")
        return data

    def raise_if_any(self) -> None:
        if self.problems:
            raise TemplateValidationError(self.problems)
