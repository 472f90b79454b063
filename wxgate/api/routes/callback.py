"""WeChat's server URL for one app: the echostr check and pushed events (wechat-api.md §5).

No API key here: WeChat signs its requests with the app's callback token instead.
A POST is believed only after its signature (and, in safe mode, msg_signature)
holds and its timestamp is within `server.callback_max_age_s` of now. Its nonce
is then claimed: WeChat's retries of one push reuse the whole request, nonce
included, so a nonce seen before is answered `success` and changes nothing.
The nonce is claimed before the report is applied because in plaintext mode the
signature does not cover the body: a captured query must not carry a second,
forged body. A TEMPLATESENDJOBFINISH moves the message to delivered or rejected;
other events are acknowledged and ignored. The answer is the literal `success`
(text/plain), well within WeChat's 5 s.
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from wxgate.api.errors import Forbidden, InvalidRequest, NotFound
from wxgate.api.routing import JsonRoute
from wxgate.api.state import ApiState, api_state
from wxgate.wechat.callback import (
    CallbackCodec,
    CallbackMessage,
    TemplateSendJobFinish,
    callback_timestamp,
)
from wxgate.wechat.errors import CallbackMalformedError, CallbackRejected

router = APIRouter(prefix="/wechat/callback", tags=["wechat callback"], route_class=JsonRoute)

SUCCESS = "success"  # WeChat's "received, do not retry"


def _codec(state: ApiState, app: str) -> CallbackCodec:
    if app not in state.settings.apps:
        raise NotFound(f"no app {app!r}")
    codec = state.codecs.get(app)
    if codec is None:
        raise Forbidden(f"app {app!r} has no callback_token configured")
    return codec


def _count(state: ApiState, app: str, result: str) -> None:
    state.metrics.callbacks.labels(app=app, result=result).inc()


def _open(state: ApiState, app: str, request: Request, body: bytes) -> CallbackMessage:
    codec = _codec(state, app)
    query = request.query_params
    try:
        message = codec.open(query, body)
        sent_at = callback_timestamp(query)
    except CallbackMalformedError as exc:
        _count(state, app, "malformed")
        raise InvalidRequest.at(["body"], exc.detail) from None
    except CallbackRejected as exc:
        _count(state, app, "forbidden")
        raise Forbidden(f"callback rejected: {exc.reason}") from None
    max_age = state.settings.server.callback_max_age_s
    if abs(state.clock.now() - sent_at) > max_age:
        _count(state, app, "replayed")
        raise Forbidden(f"callback timestamp is more than {max_age:.0f} s from now")
    return message


@router.get("/{app}", response_class=PlainTextResponse, summary="WeChat's URL check")
async def verify_url(request: Request, app: str) -> Response:
    """Answers the raw `echostr` when the signature holds (403 otherwise)."""
    state = api_state(request)
    codec = _codec(state, app)
    try:
        echostr = codec.verify_echo(request.query_params)
    except CallbackRejected as exc:
        _count(state, app, "forbidden")
        raise Forbidden(f"callback rejected: {exc.reason}") from None
    return PlainTextResponse(echostr)


@router.post("/{app}", response_class=PlainTextResponse, summary="Events pushed by WeChat")
async def receive_push(request: Request, app: str) -> Response:
    """Plaintext or safe mode. 403 (nothing changed) for a bad signature or a stale
    timestamp, 400 for a malformed document, `success` otherwise."""
    state = api_state(request)
    message = _open(state, app, request, await request.body())
    now = state.clock.now()
    nonce = request.query_params.get("nonce", "")
    # A timestamp may be max_age old or ahead, so its nonce is remembered for both spans.
    ttl = 2 * state.settings.server.callback_max_age_s
    if not await state.backend.remember_nonce(app, nonce, ttl, now):
        _count(state, app, "duplicate")
        return PlainTextResponse(SUCCESS)
    if isinstance(message, TemplateSendJobFinish):
        applied = await state.backend.apply_report(app, message.msgid, message.status, now)
        _count(state, app, "applied" if applied.message_id is not None else "unknown_msgid")
    else:
        _count(state, app, "ignored")
    return PlainTextResponse(SUCCESS)
