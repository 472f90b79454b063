"""Batches: one template to many recipients in one request, and their progress."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from wxgate.api import intake
from wxgate.api.errors import NotFound
from wxgate.api.middleware import trace_id_of
from wxgate.api.routing import JsonRoute
from wxgate.api.schemas import BatchAccepted, BatchCounts, BatchIn, Envelope, ok
from wxgate.api.state import api_state

router = APIRouter(tags=["batches"], route_class=JsonRoute)


@router.post(
    "/messages/batch",
    status_code=202,
    response_model=Envelope[BatchAccepted],
    responses={
        200: {
            "model": Envelope[BatchAccepted],
            "description": "a retried batch: "
            "every message was stored before, same batch_id and ids",
        }
    },
    summary="Accept one template for up to 10,000 recipients, all or nothing",
)
async def send_batch(request: Request, body: BatchIn) -> Response:
    """Any invalid recipient refuses the whole batch (400 naming
    `["body", "recipients", i, ...]`) and nothing is stored."""
    raw: dict[str, Any] = await request.json()  # parsed once already, cached by Starlette
    batch = intake.BatchIntake(body, raw)
    return await intake.accept(api_state(request), batch, trace_id_of(request.scope))


@router.get("/batches/{batch_id}", response_model=Envelope[BatchCounts], summary="Batch progress")
async def get_batch(request: Request, batch_id: str) -> Response:
    counts = await api_state(request).backend.batch_counts(batch_id)
    if counts is None:
        raise NotFound(f"no batch {batch_id!r}")
    return ok(
        {
            "batch_id": batch_id,
            "total": sum(counts.values()),
            "counts": {str(status): n for status, n in counts.items()},
        }
    )
