"""/v1/messages: intake of one message, reading messages back, replaying one."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from starlette.requests import Request
from starlette.responses import Response

from wxgate.api import intake
from wxgate.api.audit import audited
from wxgate.api.auth import app_for_listing, require_app
from wxgate.api.errors import Conflict, NotFound
from wxgate.api.middleware import trace_id_of
from wxgate.api.routing import JsonRoute
from wxgate.api.schemas import (
    IDEMPOTENCY_KEY_PATTERN,
    MAX_IDEMPOTENCY_KEY,
    Accepted,
    Envelope,
    MessageIn,
    MessageOut,
    MessagePage,
    ok,
    page_json,
    record_json,
)
from wxgate.api.state import api_state
from wxgate.backends.base import REPLAYABLE, ListFilter, Status
from wxgate.operations import replay_messages

router = APIRouter(prefix="/messages", tags=["messages"], route_class=JsonRoute)

MAX_PAGE = 500
IDEMPOTENCY_KEY_HEADER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "the same as body.idempotency_key (send one, or the same in both)",
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_IDEMPOTENCY_KEY,
        "pattern": IDEMPOTENCY_KEY_PATTERN,
    },
}


@router.post(
    "",
    status_code=202,
    response_model=Envelope[Accepted],
    responses={
        200: {
            "model": Envelope[Accepted],
            "description": "the idempotency key was "
            "seen before: the first message's id, nothing new stored",
        }
    },
    summary="Accept one template message",
    # Documented here and read by hand: a declared Header parameter cost ~25 us of
    # FastAPI's parameter machinery per request (measured) on the hottest route.
    openapi_extra={"parameters": [IDEMPOTENCY_KEY_HEADER]},
)
async def send_message(request: Request, body: MessageIn) -> Response:
    """Stored durably before the answer; a worker delivers it. WeChat's content rules
    apply here, so what WeChat would refuse is refused now (400, field by field)."""
    raw: dict[str, Any] = await request.json()  # parsed once already, cached by Starlette
    header_key = request.headers.get("idempotency-key")
    message = intake.SingleIntake(body, raw, header_key)
    return await intake.accept(api_state(request), message, trace_id_of(request.scope))


@router.get("", response_model=Envelope[MessagePage], summary="List messages, newest first")
async def list_messages(
    request: Request,
    status: Status | None = None,
    app: str | None = None,
    touser: str | None = None,
    batch_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    cursor: str | None = None,
) -> Response:
    """`data.next_cursor` is the `cursor` of the next page (null on the last one)."""
    state = api_state(request)
    app = app_for_listing(app)
    flt = ListFilter(status=status, app=app, touser=touser, batch_id=batch_id)
    page = await state.backend.list(flt, limit, cursor)
    return ok(page_json(page))


@router.get("/{message_id}", response_model=Envelope[MessageOut], summary="One message")
async def get_message(request: Request, message_id: str) -> Response:
    """The record with its events. `msgid` is a string: it exceeds 2^53."""
    record = await api_state(request).backend.get(message_id)
    if record is None:
        raise NotFound(f"no message {message_id!r}")
    require_app(record.app)
    return ok(record_json(record))


@router.post(
    "/{message_id}/replay",
    response_model=Envelope[Accepted],
    summary="Queue a dead or failed message again",
)
async def replay_message(request: Request, message_id: str) -> Response:
    state = api_state(request)
    record = await state.backend.get(message_id)
    if record is None:
        raise NotFound(f"no message {message_id!r}")
    require_app(record.app)
    if record.status not in REPLAYABLE:
        raise Conflict(f"a {record.status} message cannot be replayed (only dead or failed)")
    if (await replay_messages(state.backend, [message_id], state.clock.now())).replayed == 0:
        raise Conflict("the message changed status meanwhile; look at it again")
    await audited(state, "replay", message_id, "1 replayed")
    return ok({"id": message_id, "status": str(Status.QUEUED), "warnings": []})
