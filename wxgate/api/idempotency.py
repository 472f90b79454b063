"""Idempotency at intake: which key a request carries, and what identifies the request.

A key repeated with the same request answers the first message (200, nothing new
stored); with a different request it is refused (422, 42200), as the IETF draft
"The Idempotency-Key HTTP Header Field" advises, instead of answering the first id
and silently dropping the new request. Two requests are the same when their
canonical digests are: the app and the template/send body after WeChat's rules
normalised it (keys sorted), so spacing, key order or a bare openid against
{"touser": ...} do not matter, and any other change does. Storage compares the
digests when it meets a stored key (Backend.enqueue). There is no "in progress"
state to answer 409 for: a message is stored in one atomic write, so a second
request with its key sees it stored or not at all.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from wxgate.api.errors import InvalidRequest, KeyReused
from wxgate.api.schemas import IDEMPOTENCY_KEY_RULE, MAX_IDEMPOTENCY_KEY, control_character_in
from wxgate.backends.base import IdempotencyConflict, NewMessage
from wxgate.wechat.kinds import MessageKind

DIGEST_CHARS = 32  # 128 bits of SHA-256


def idempotency_key(in_body: str | None, in_header: str | None) -> str | None:
    """The request's key, from the body or the Idempotency-Key header (not two different)."""
    loc = ["header", "Idempotency-Key"]
    if in_header is not None and not 0 < len(in_header) <= MAX_IDEMPOTENCY_KEY:
        raise InvalidRequest.at(loc, f"1 to {MAX_IDEMPOTENCY_KEY} characters")
    if in_header is not None and control_character_in(in_header):
        raise InvalidRequest.at(loc, IDEMPOTENCY_KEY_RULE)
    if in_body is not None and in_header is not None and in_body != in_header:
        raise InvalidRequest.at(loc, "differs from body.idempotency_key; send one of them")
    return in_body if in_body is not None else in_header


def request_digest(
    app: str, payload: Mapping[str, Any], kind: MessageKind = MessageKind.TEMPLATE
) -> str:
    """The canonical digest of one message's request: its app, its wire body and, for a
    kind other than template (whose digests predate kinds), its kind."""
    request: dict[str, Any] = {"app": app, "payload": payload}
    if kind is not MessageKind.TEMPLATE:
        request["kind"] = kind.value
    canonical = orjson.dumps(request, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()[:DIGEST_CHARS]


def batch_digest(messages: Sequence[NewMessage]) -> str:
    """The canonical digest of a whole batch: its members in order, each by its own key
    (if any) and digest; another recipient, more recipients or other data change it."""
    canonical = orjson.dumps([[m.idempotency_key, m.digest] for m in messages])
    return hashlib.sha256(canonical).hexdigest()[:DIGEST_CHARS]


def repeated_keys(keys: Sequence[str | None]) -> list[dict[str, Any]]:
    """Problems for recipients of one batch that share a key: the later one names both
    positions (a batch is stored whole, so neither could be stored as asked)."""
    first_at: dict[str, int] = {}
    problems = []
    for index, key in enumerate(keys):
        if key is None:
            continue
        if key in first_at:
            first = first_at[key]
            msg = f"recipients {first} and {index} have the same idempotency_key"
            problems.append({"loc": ["body", "recipients", index, "idempotency_key"], "msg": msg})
        else:
            first_at[key] = index
    return problems


def refused(conflict: IdempotencyConflict) -> KeyReused:
    """The API's answer to a key stored for another request."""
    return KeyReused(
        f"idempotency key {conflict.key!r} was already used for a different request; "
        "send this one with a new key, or the first request again to get its answer",
        data={"idempotency_key": conflict.key},
    )
