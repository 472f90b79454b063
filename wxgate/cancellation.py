"""Cancelling messages before they are sent, shared by the HTTP API and the CLI.

Storage decides each message's race with a worker (`Backend.cancel`): a scheduled or
queued message ends `cancelled`; one a worker holds or has sent is left as it is and
the answer names the status that won. A batch is cancelled member by member, so the
members already sent stay sent and the rest end cancelled.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from wxgate.backends.base import CANCELLABLE, Backend, Cancelled, ListFilter, Status

_PAGE = 1000  # ids read and cancelled per storage call


@dataclass(frozen=True, slots=True)
class BatchCancelled:
    batch_id: str
    cancelled: int  # members this call cancelled
    counts: dict[Status, int]  # the batch per status afterwards


async def cancel_message(backend: Backend, message_id: str, now: float) -> Cancelled:
    [answer] = await backend.cancel([message_id], now)
    return answer


async def _cancellable_ids(backend: Backend, batch_id: str, status: Status) -> list[str]:
    ids: list[str] = []
    cursor = None
    while True:
        page = await backend.list(ListFilter(status=status, batch_id=batch_id), _PAGE, cursor)
        ids += [record.id for record in page.items]
        cursor = page.next_cursor
        if cursor is None:
            return ids


async def cancel_batch(backend: Backend, batch_id: str, now: float) -> BatchCancelled | None:
    """Every member of the batch still scheduled or queued, cancelled; None when no such
    batch exists."""
    if await backend.batch_counts(batch_id) is None:
        return None
    cancelled: Counter[bool] = Counter()
    for status in sorted(CANCELLABLE):
        ids = await _cancellable_ids(backend, batch_id, status)
        for start in range(0, len(ids), _PAGE):
            answers = await backend.cancel(ids[start : start + _PAGE], now)
            cancelled.update(answer.cancelled for answer in answers)
    counts = await backend.batch_counts(batch_id)
    return BatchCancelled(batch_id, cancelled[True], counts or {})
