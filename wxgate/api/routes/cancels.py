"""DELETE /v1/messages/{id} and DELETE /v1/batches/{id}: cancel what is not sent yet.

A message still scheduled or queued ends `cancelled` (200). One a worker already holds
or has settled wins the race: 409, with the status that won in `data.status`, and the
record keeps that status. Cancelling a cancelled message again answers 200 with
`cancelled: false`.
"""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import Response

from wxgate.api.audit import audited
from wxgate.api.auth import require_app
from wxgate.api.errors import Conflict, NotFound
from wxgate.api.routing import JsonRoute
from wxgate.api.schemas import Envelope, ok
from wxgate.api.state import api_state
from wxgate.backends.base import ListFilter, Status
from wxgate.cancellation import cancel_batch, cancel_message

router = APIRouter(route_class=JsonRoute)


class CancelAnswer(BaseModel):
    id: str
    status: Status = Field(description="cancelled, or the status that won the race")
    cancelled: bool = Field(description="true when this request cancelled it")


class BatchCancelAnswer(BaseModel):
    batch_id: str
    cancelled: int = Field(description="members this request cancelled")
    counts: dict[Status, int] = Field(description="the batch per status afterwards")


@router.delete(
    "/messages/{message_id}",
    tags=["messages"],
    response_model=Envelope[CancelAnswer],
    responses={409: {"description": "a worker took or sent it first; data.status says"}},
    summary="Cancel a scheduled or queued message",
)
async def cancel_one(request: Request, message_id: str) -> Response:
    state = api_state(request)
    record = await state.backend.get(message_id)
    if record is None:
        raise NotFound(f"no message {message_id!r}")
    require_app(record.app)
    answer = await cancel_message(state.backend, message_id, state.clock.now())
    if answer.status is None:
        raise NotFound(f"no message {message_id!r}")
    data = {"id": message_id, "status": str(answer.status), "cancelled": answer.cancelled}
    outcome = "cancelled" if answer.cancelled else f"lost to {answer.status}"
    await audited(state, "cancel", message_id, outcome)
    if answer.status is not Status.CANCELLED:
        raise Conflict(f"too late to cancel: the message is {answer.status}", data=data)
    return ok(data)


@router.delete(
    "/batches/{batch_id}",
    tags=["batches"],
    response_model=Envelope[BatchCancelAnswer],
    summary="Cancel every member of a batch not sent yet",
)
async def cancel_all(request: Request, batch_id: str) -> Response:
    state = api_state(request)
    member = await state.backend.list(ListFilter(batch_id=batch_id), 1)
    for record in member.items:
        require_app(record.app)  # a batch is one app's
    answer = await cancel_batch(state.backend, batch_id, state.clock.now())
    if answer is None:
        raise NotFound(f"no batch {batch_id!r}")
    await audited(state, "cancel", f"batch {batch_id}", f"{answer.cancelled} cancelled")
    counts = {str(status): n for status, n in answer.counts.items()}
    return ok({"batch_id": batch_id, "cancelled": answer.cancelled, "counts": counts})
