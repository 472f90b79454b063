"""WeChat's server URL for one app: the echostr check, pushed events (docs/wechat-protocol.md §5).

No API key here: WeChat signs its requests with the app's callback token instead.
A GET (the URL check) is answered, and a POST believed, only after its signature
(and, in safe mode, msg_signature) holds and its timestamp is within
`server.callback_max_age_s` of now. A POST's nonce
is then claimed twice, alone and with a digest of the body, before the report is
applied. In plaintext mode the signature does not cover the body, so a used nonce
with another body is a captured query carrying a forged one: answered `success`,
nothing changed. The same nonce with the same body is the same push again (WeChat's
retry, or ours of a claim whose answer storage lost as it failed) and is applied
again, which changes nothing twice (applying a report is idempotent) but means a
crash between claiming and applying never loses the report. A TEMPLATESENDJOBFINISH
moves the message to delivered or rejected; the subscribe events change the grant
ledger and settle the messages they are about (subscribe_events.py); other events
are acknowledged and ignored. The answer is the literal `success` (text/plain), well
within WeChat's 5 s.

A refused callback is usually a console and a config that disagree, which nothing
else would show: each one logs a WARNING naming the app, the reason and the fix,
and counts in `wxgate_callbacks_refused_total{app,reason}`.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from wxgate.api.errors import Forbidden, InvalidRequest, NotFound
from wxgate.api.routing import JsonRoute
from wxgate.api.state import ApiState, api_state
from wxgate.api.subscribe_events import SUBSCRIBE_EVENTS, apply_subscribe_event
from wxgate.backends.base import Report, Status, StorageUnavailable
from wxgate.backends.suppressions import Suppression
from wxgate.delivery.report_matching import MatchedBy, apply_report
from wxgate.delivery.suppression import follow_changed, reason_for_report
from wxgate.observability import get_logger
from wxgate.wechat.callback import (
    CallbackCodec,
    CallbackMessage,
    FollowEvent,
    TemplateSendJobFinish,
    callback_timestamp,
)
from wxgate.wechat.errors import CallbackMalformedError, CallbackRejected, UnparseableEvent

router = APIRouter(prefix="/wechat/callback", tags=["wechat callback"], route_class=JsonRoute)

log = get_logger(__name__)

SUCCESS = "success"  # WeChat's "received, do not retry"
# WeChat waits 5 s for an answer, and retries a refusal at once. Storage away for a
# moment (a Redis restart or failover) is waited for inside that window rather than
# answered 503 at once, which would spend every retry in the same outage and lose
# the report; once the nonce is claimed, a retry would even be taken for a duplicate.
STORAGE_WAITS_S = (0.1, 0.2, 0.4, 0.8, 1.5)  # 3 s in all
_T = TypeVar("_T")


# The reasons a callback is refused (a bounded metric label; those of the protocol
# module's exceptions, and the route's own), each with the fix an operator makes.
REFUSAL_FIXES = {
    "unknown_app": "the URL names no [apps.<name>] section: set the console's server URL "
    "to https://<host>/wechat/callback/<name> of a configured app",
    "no_callback_token": "set apps.{app}.callback_token to the Token of the console's "
    "server configuration (服务器配置)",
    "signature": "the signature does not match apps.{app}.callback_token: set it to the "
    "console's Token (or the request is forged)",
    "msg_signature": "the safe-mode msg_signature does not match apps.{app}.callback_token: "
    "set it to the console's Token (or the request is forged)",
    "encryption_required": "the app has an encoding_aes_key, so it requires safe mode: set "
    "the console's message encryption to 安全模式 or clear apps.{app}.encoding_aes_key",
    "decrypt": "the AES envelope does not open: set apps.{app}.encoding_aes_key to the "
    "console's EncodingAESKey",
    "appid": "the envelope was sealed for another account: set apps.{app}.appid to the "
    "AppID of the account whose console points here",
    "xml": "the body is not a WeChat event document: only WeChat should post to this URL",
    "field": "a field WeChat always sends is missing or garbled: only WeChat should post "
    "to this URL",
    "timestamp": "the timestamp is more than server.callback_max_age_s from this host's "
    "clock: check the clock (NTP), or the request is an old one replayed",
}
REFUSED_OTHER = "other"  # a reason missing above
UNKNOWN_APP = "_unknown"  # the app label for a URL naming no configured app


def _refuse(state: ApiState, app: str, reason: str, detail: str = "") -> None:
    """Log and count one refused callback."""
    known = app in state.settings.apps
    label = reason if reason in REFUSAL_FIXES else REFUSED_OTHER
    state.metrics.callbacks_refused.labels(app=app if known else UNKNOWN_APP, reason=label).inc()
    fix = REFUSAL_FIXES.get(label, "see the detail").format(app=app)
    # An unknown name is the caller's text: cut short, and only in the log line.
    log.warning("callback refused", app=app[:64], reason=label, fix=fix, detail=detail)


def _codec(state: ApiState, app: str) -> CallbackCodec:
    if app not in state.settings.apps:
        _refuse(state, app, "unknown_app")
        raise NotFound(f"no app {app!r}")
    codec = state.codecs.get(app)
    if codec is None:
        _refuse(state, app, "no_callback_token")
        raise Forbidden(f"app {app!r} has no callback_token configured")
    return codec


def _count(state: ApiState, app: str, result: str) -> None:
    state.metrics.callbacks.labels(app=app, result=result).inc()


def _open(state: ApiState, app: str, request: Request, body: bytes) -> CallbackMessage | None:
    """The event of a genuine, fresh push; None for a genuine one that cannot be read."""
    codec = _codec(state, app)
    query = request.query_params
    try:
        message: CallbackMessage | None = codec.open(query, body)
        sent_at = callback_timestamp(query)
    except UnparseableEvent as exc:
        # Signed by WeChat, so refusing it would only make WeChat retry it and alarm the
        # account's owner ("回应不合法"): taken, logged and counted instead.
        _count(state, app, "unparseable")
        log.warning("callback_unparseable", app=app, reason=exc.reason, detail=exc.detail)
        message, sent_at = None, callback_timestamp(query)
    except CallbackMalformedError as exc:
        _refuse(state, app, exc.reason, exc.detail)
        _count(state, app, "malformed")
        raise InvalidRequest.at(["body"], exc.detail) from None
    except CallbackRejected as exc:
        _refuse(state, app, exc.reason, exc.detail)
        _count(state, app, "forbidden")
        raise Forbidden(f"callback rejected: {exc.reason}") from None
    _check_fresh(state, app, sent_at)
    return message


def _check_fresh(state: ApiState, app: str, sent_at: int) -> None:
    """Forbidden unless `sent_at` is within `server.callback_max_age_s` of now: a signed
    query stays validly signed for ever, so only its age tells a replay."""
    max_age = state.settings.server.callback_max_age_s
    skew = state.clock.now() - sent_at
    if abs(skew) > max_age:
        ahead_or_behind = "behind" if skew > 0 else "ahead of"
        _refuse(state, app, "timestamp", f"{abs(skew):.0f} s {ahead_or_behind} this host's clock")
        _count(state, app, "replayed")
        raise Forbidden(f"callback timestamp is more than {max_age:.0f} s from now")


async def _stored(write: Callable[[], Awaitable[_T]]) -> _T:
    """`write()`, tried again while storage is unavailable, for up to 3 s."""
    for wait_s in STORAGE_WAITS_S:
        try:
            return await write()
        except StorageUnavailable:
            await asyncio.sleep(wait_s)
    return await write()  # still unavailable: the API's 503, and WeChat's own retry


def push_key(nonce: str, body: bytes) -> str:
    """What remembers one push: its nonce and a digest of its body."""
    return f"{nonce}:{hashlib.sha256(body).hexdigest()[:32]}"


async def _new_or_repeated(state: ApiState, app: str, nonce: str, body: bytes) -> bool:
    """False for a used nonce with another body (a forgery), True otherwise.

    The push is claimed first, then its nonce, and a retry (of a claim whose outcome
    storage left unknown as it failed) starts again from the push: a claim that was
    made then reads as "seen", so the push counts as a repeat, never as a forgery."""
    now = state.clock.now()
    # A timestamp may be max_age old or ahead, so a nonce is remembered for both spans.
    ttl = 2 * state.settings.server.callback_max_age_s
    push_new = await state.backend.remember_nonce(app, push_key(nonce, body), ttl, now)
    nonce_new = await state.backend.remember_nonce(app, nonce, ttl, now)
    return nonce_new or not push_new


def _report(app: str, event: TemplateSendJobFinish) -> Report:
    """The report as storage takes it: the WeChat layer has said what its Status means."""
    status = Status.DELIVERED if event.delivered else Status.REJECTED
    return Report(app, event.msgid, status, event.status)


@router.get("/{app}", response_class=PlainTextResponse, summary="WeChat's URL check")
async def verify_url(request: Request, app: str) -> Response:
    """Answers the raw `echostr` when the signature holds and the timestamp is within
    `server.callback_max_age_s` of now, as for a push (403 otherwise)."""
    state = api_state(request)
    codec = _codec(state, app)
    try:
        echostr = codec.verify_echo(request.query_params)
        sent_at = callback_timestamp(request.query_params)
    except CallbackRejected as exc:
        _refuse(state, app, exc.reason, exc.detail)
        _count(state, app, "forbidden")
        raise Forbidden(f"callback rejected: {exc.reason}") from None
    _check_fresh(state, app, sent_at)
    return PlainTextResponse(echostr)


@router.post("/{app}", response_class=PlainTextResponse, summary="Events pushed by WeChat")
async def receive_push(request: Request, app: str) -> Response:
    """Plaintext or safe mode. 403 (nothing changed) for a bad signature or a stale
    timestamp, 400 for a document that is not WeChat's envelope at all, `success`
    otherwise (a signed event that cannot be read is logged, counted and taken)."""
    state = api_state(request)
    body = await request.body()
    message = _open(state, app, request, body)
    now = state.clock.now()
    nonce = request.query_params.get("nonce", "")
    if not await _stored(lambda: _new_or_repeated(state, app, nonce, body)):
        _count(state, app, "duplicate")
        return PlainTextResponse(SUCCESS)
    if isinstance(message, TemplateSendJobFinish):
        report = _report(app, message)
        match = await _stored(lambda: apply_report(state.backend, report, message.from_user, now))
        _count(state, app, _MATCH_RESULT[match.matched_by])
        await _stored(lambda: _suppress_blocked(state, app, message, now))
    elif isinstance(message, FollowEvent):
        store = state.backend.suppression_store()
        followed, openid = message.followed, message.from_user
        changed = await _stored(lambda: follow_changed(store, app, openid, followed, now))
        _count(state, app, ("lifted" if followed else "suppressed") if changed else "ignored")
    elif isinstance(message, SUBSCRIBE_EVENTS):
        event = message
        _count(state, app, await _stored(lambda: apply_subscribe_event(state, app, event, now)))
    else:
        _count(state, app, "ignored")
    return PlainTextResponse(SUCCESS)


# How a report was matched -> its wxgate_callbacks result.
_MATCH_RESULT = {
    MatchedBy.MSGID: "applied",
    MatchedBy.RECIPIENT: "matched_by_recipient",
    MatchedBy.UNMATCHED: "unknown_msgid",  # the name this result had before matching
}


async def _suppress_blocked(
    state: ApiState, app: str, event: TemplateSendJobFinish, now: float
) -> None:
    """A `failed:user block` report puts its recipient on the suppression list."""
    reason = reason_for_report(event.outcome)
    if reason is not None:
        entry = Suppression(event.from_user, reason, now)
        await state.backend.suppression_store().add(app, [entry])
