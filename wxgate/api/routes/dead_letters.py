"""Dead letters: replaying every dead message that matches a filter (and lifting the
CONFIG pauses the replay covers: `wxgate.operations`)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from wxgate import operations
from wxgate.api.audit import audited, dead_letter_target
from wxgate.api.auth import app_for_listing
from wxgate.api.errors import InvalidRequest
from wxgate.api.routing import JsonRoute
from wxgate.api.schemas import DeadLetterReplayIn, Envelope, Replayed, ok
from wxgate.api.state import api_state
from wxgate.backends.base import DeadLetterFilter

router = APIRouter(prefix="/dead-letters", tags=["dead letters"], route_class=JsonRoute)


@router.post("/replay", response_model=Envelope[Replayed], summary="Replay dead letters")
async def replay_dead_letters(request: Request, body: DeadLetterReplayIn) -> Response:
    """Every dead message matching all given filters back to `queued`."""
    state = api_state(request)
    if body.app is not None and body.app not in state.settings.apps:
        raise InvalidRequest.at(["body", "app"], f"unknown app {body.app!r}")
    app = app_for_listing(body.app)  # a key limited to some apps covers only them
    now = state.clock.now()
    flt = DeadLetterFilter(app=app, errcode=body.errcode, since=body.since, until=body.until)
    result = await operations.replay_dead_letters(state.backend, flt, now)
    await audited(state, "replay", dead_letter_target(flt), f"{result.replayed} replayed")
    return ok({"replayed": result.replayed, "resumed": result.resumed})
