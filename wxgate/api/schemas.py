"""What crosses the HTTP edge: request models, the answer envelope, and records as JSON.

Request models check the shape of a request (types, required fields, unknown
fields); WeChat's own rules for a template message are applied afterwards by
`wxgate.wechat.template.parse`. Every JSON answer is the envelope
`{"code": int, "msg": str, "data": ...}`, rendered with orjson. A WeChat msgid
is rendered as a decimal STRING: it exceeds 2^53, so a JavaScript client would
silently round it as a number.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Generic, Literal, TypeVar, get_type_hints

import orjson
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, create_model
from starlette.responses import Response

from wxgate.api.scheduling import Priority, rfc3339_text
from wxgate.backends.base import RECORD_FIELDS, Event, EventKind, MessageRecord, Page, Status
from wxgate.clock import rfc3339

MAX_RECIPIENTS = 10_000
MAX_IDEMPOTENCY_KEY = 128
# A key is echoed in records, log lines and (on Redis) key names: printable text only.
IDEMPOTENCY_KEY_PATTERN = "^[^\\x00-\\x1f\\x7f-\\x9f]+$"
IDEMPOTENCY_KEY_RULE = "no control characters allowed"
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1
# A data map bigger than this is refused by its shape alone, before any rule runs
# (WeChat templates have at most a few dozen keys; template.parse applies the real limit).
MAX_DATA_KEYS_SHAPE = 64

T = TypeVar("T")


class JsonResponse(Response):
    """JSON rendered by orjson (several times faster than the standard library)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def ok(data: Any, status_code: int = 200) -> JsonResponse:
    return JsonResponse({"code": 0, "msg": "ok", "data": data}, status_code=status_code)


def failure(
    status_code: int,
    code: int,
    msg: str,
    data: Any = None,
    headers: dict[str, str] | None = None,
) -> JsonResponse:
    return JsonResponse(
        {"code": code, "msg": msg, "data": data}, status_code=status_code, headers=headers
    )


# -- requests ------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class DataItemIn(_Model):
    value: str
    color: str | None = Field(None, description="#RRGGBB; ignored by WeChat since 2023-05-04")


class MiniProgramIn(_Model):
    appid: str
    pagepath: str


def control_character_in(value: str) -> bool:
    return _CONTROL_CHARACTER.search(value) is not None


def _printable_key(value: str) -> str:
    if control_character_in(value):
        raise ValueError(IDEMPOTENCY_KEY_RULE)
    return value


IdempotencyKey = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_IDEMPOTENCY_KEY,
        json_schema_extra={"pattern": IDEMPOTENCY_KEY_PATTERN},
    ),
    AfterValidator(_printable_key),
]
DataMap = Annotated[dict[str, DataItemIn], Field(max_length=MAX_DATA_KEYS_SHAPE)]
SendAt = Annotated[
    str,
    Field(
        description="RFC 3339 with an offset: stored `scheduled`, not sent before it",
        json_schema_extra={"format": "date-time"},
    ),
    AfterValidator(rfc3339_text),
]


# The kinds of message intake takes (wechat/kinds.py MessageKind), and the fields that
# belong to subscribe kinds only; api/message_kinds.py refuses a field of another kind.
KindIn = Literal["template", "subscribe", "miniprogram"]
KIND_DESCRIPTION = (
    "template (default): a template message; subscribe: an official account's subscribe "
    "notification (bizsend); miniprogram: a mini program's subscribe message"
)
PAGE_DESCRIPTION = "subscribe: a web page to open; miniprogram: a page path of the mini program"
MiniProgramState = Literal["developer", "trial", "formal"]
Lang = Literal["zh_CN", "en_US", "zh_HK", "zh_TW"]


CallbackUrl = Annotated[
    str,
    Field(
        min_length=1,
        max_length=2048,
        description="status webhooks of this message go here instead of the app's "
        "webhook_url; its host must be on [server] webhook_allowed_hosts",
    ),
]


class MessageIn(_Model):
    """One message (a template message unless `kind` says otherwise). `app` may be left
    out when exactly one app is configured."""

    app: str | None = None
    kind: KindIn = Field("template", description=KIND_DESCRIPTION)
    touser: str = Field(description="the recipient's openid")
    template_id: str
    data: DataMap
    url: str | None = None
    miniprogram: MiniProgramIn | None = None
    page: str | None = Field(None, description=PAGE_DESCRIPTION)
    miniprogram_state: MiniProgramState | None = Field(None, description="miniprogram only")
    lang: Lang | None = Field(None, description="miniprogram only")
    idempotency_key: IdempotencyKey | None = Field(
        None, description="or the Idempotency-Key header; the same key again answers the first id"
    )
    send_at: SendAt | None = None
    priority: Priority | None = Field(None, description="urgent: sent even in quiet hours")
    callback_url: CallbackUrl | None = None


class RecipientIn(_Model):
    """One recipient of a batch; its `data` is merged over the batch's shared data."""

    touser: str
    data: DataMap | None = None
    url: str | None = None
    miniprogram: MiniProgramIn | None = None
    page: str | None = None
    idempotency_key: IdempotencyKey | None = None


def _openid_as_recipient(items: Any) -> Any:
    # A bare openid is the common case; turning it into an object here keeps one
    # model per item, so error locations read ["body", "recipients", i, "touser"].
    if isinstance(items, list):
        return [{"touser": item} if isinstance(item, str) else item for item in items]
    return items


Recipients = Annotated[
    list[RecipientIn],
    BeforeValidator(_openid_as_recipient, json_schema_input_type=list[str | RecipientIn]),
    Field(min_length=1, max_length=MAX_RECIPIENTS),
]


class BatchIn(_Model):
    """One template to many recipients, all stored or none."""

    app: str | None = None
    kind: KindIn = Field("template", description=KIND_DESCRIPTION)
    template_id: str
    data: DataMap = Field(default_factory=dict)
    url: str | None = None
    miniprogram: MiniProgramIn | None = None
    page: str | None = Field(None, description=PAGE_DESCRIPTION)
    miniprogram_state: MiniProgramState | None = Field(None, description="miniprogram only")
    lang: Lang | None = Field(None, description="miniprogram only")
    recipients: Recipients = Field(description="openids, or objects with their own fields")
    idempotency_key: IdempotencyKey | None = Field(
        None,
        description="a retried batch with the same key answers the same batch_id and ids; "
        "the same key with other recipients or data is refused (422)",
    )
    send_at: SendAt | None = None
    priority: Priority | None = Field(None, description="urgent: sent even in quiet hours")
    callback_url: CallbackUrl | None = None


# WeChat's errcodes are small; the bound keeps a filter within what storage can compare
# (a number past 2^63 reached SQLite as an OverflowError: a 500, found by fuzzing).
ERRCODE_BOUND = 2**31


class DeadLetterReplayIn(_Model):
    app: str | None = None
    errcode: int | None = Field(None, ge=-ERRCODE_BOUND, lt=ERRCODE_BOUND)
    since: float | None = Field(None, description="epoch seconds, on the time it went dead")
    until: float | None = None


# -- answers (the OpenAPI description; handlers build the JSON directly) --------


class Envelope(BaseModel, Generic[T]):
    code: int = Field(description="0 on success; the HTTP status times 100 otherwise")
    msg: str
    data: T


class FieldNote(BaseModel):
    """A problem (in `data.errors`) or a warning (in `data.warnings`) at a field path."""

    loc: list[str | int]
    msg: str


class Accepted(BaseModel):
    id: str
    status: Status
    warnings: list[FieldNote] = Field(
        default_factory=list, description="accepted, but WeChat will not show everything"
    )


class BatchAccepted(BaseModel):
    batch_id: str
    ids: list[str] = Field(description="one per recipient, in the order given")
    warnings: list[FieldNote] = Field(default_factory=list)


class BatchCounts(BaseModel):
    batch_id: str
    total: int
    counts: dict[Status, int]


class Replayed(BaseModel):
    replayed: int
    resumed: list[str] = Field(description="apps whose CONFIG pause the replay lifted")


class EventOut(BaseModel):
    at: str = Field(description="RFC 3339, UTC")
    kind: EventKind
    note: str = ""
    errcode: int | None = None


# Statuses in which the record's next_attempt_at means something (a retry time, or the
# lease deadline while sending); in the others it is not shown.
ATTEMPT_PENDING = frozenset({Status.QUEUED, Status.SENDING})
_TIMES = frozenset(
    ("next_attempt_at", "created_at", "updated_at", "sent_at", "delivered_at", "send_at")
)
_AS_STRING = {
    "msgid": "WeChat's msgid as a decimal string: it exceeds 2^53, which a JavaScript "
    "number cannot hold exactly",
    "next_attempt_at": "RFC 3339, UTC: when the next attempt is due (or the lease ends); "
    "null unless the message is queued or sending",
}


def _out_field(name: str) -> tuple[Any, Any]:
    """How a record field reads in the API: times as RFC 3339 strings, msgid as a string,
    every other field as stored."""
    if name in _TIMES:
        required = name in ("created_at", "updated_at")
        kind: Any = str if required else (str | None)
        description = _AS_STRING.get(name, "RFC 3339, UTC")
        return (kind, Field(... if required else None, description=description))
    if name in _AS_STRING:
        return (str | None, Field(None, description=_AS_STRING[name]))
    return (_RECORD_HINTS[name], ...)


_RECORD_HINTS = get_type_hints(MessageRecord)
# The record as the API shows it, derived from base.MessageRecord's fields.
MessageOut = create_model(  # type: ignore[call-overload]
    "MessageOut",
    **{name: _out_field(name) for name in RECORD_FIELDS},
    events=(list[EventOut], ...),
)


class MessagePage(BaseModel):
    items: list[MessageOut]
    next_cursor: str | None


def event_json(event: Event) -> dict[str, Any]:
    return {
        "at": rfc3339(event.at),
        "kind": event.kind,
        "note": event.note,
        "errcode": event.errcode,
    }


def record_json(record: MessageRecord) -> dict[str, Any]:
    """The record as GET /v1/messages/{id} shows it (see MessageOut)."""
    out: dict[str, Any] = {name: getattr(record, name) for name in RECORD_FIELDS}
    for name in _TIMES:
        out[name] = rfc3339(out[name])
    if record.status not in ATTEMPT_PENDING:
        out["next_attempt_at"] = None
    out["msgid"] = None if record.msgid is None else str(record.msgid)
    out["events"] = [event_json(event) for event in record.events]
    return out


def page_json(page: Page) -> dict[str, Any]:
    return {"items": [record_json(r) for r in page.items], "next_cursor": page.next_cursor}
