"""Operator actions and queries shared by the HTTP API and the CLI.

Listing dead letters by errcode or time reads storage's pages until enough match,
since storage filters by status and app only. Replaying is more than moving
records: docs/design.md, "Pauses", says a CONFIG answer kills an app's messages and pauses the
app "until an operator fixes it and replays", so a replay that covers a
CONFIG-paused app also lifts that pause (otherwise the replayed messages would
sit behind it, unsent).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from wxgate.backends.base import (
    Backend,
    DeadLetterFilter,
    ListFilter,
    MessageRecord,
    PauseReason,
    Status,
)

_SCAN_PAGE = 1000  # records read per page while filtering beyond what storage can


@dataclass(frozen=True, slots=True)
class Replayed:
    replayed: int
    resumed: list[str]  # apps whose CONFIG pause the replay lifted


def _dead_letter_matches(record: MessageRecord, flt: DeadLetterFilter) -> bool:
    """What `replay_dead` filters on besides the app: errcode, and when it went dead."""
    return (
        (flt.errcode is None or record.last_errcode == flt.errcode)
        and (flt.since is None or record.updated_at >= flt.since)
        and (flt.until is None or record.updated_at <= flt.until)
    )


async def list_dead_letters(
    backend: Backend, flt: DeadLetterFilter, limit: int
) -> list[MessageRecord]:
    """Up to `limit` dead letters matching `flt`, newest first: the ones `replay_dead`
    with the same filter would replay. Pages are read until `limit` match or none are
    left, so an old match is found behind many newer dead letters that do not match."""
    by_app = ListFilter(status=Status.DEAD, app=flt.app)
    scanning = (flt.errcode, flt.since, flt.until) != (None, None, None)
    found: list[MessageRecord] = []
    cursor = None
    while len(found) < limit:
        page = await backend.list(by_app, _SCAN_PAGE if scanning else limit, cursor)
        found += [record for record in page.items if _dead_letter_matches(record, flt)]
        cursor = page.next_cursor
        if cursor is None or not scanning:
            break
    return found[:limit]


async def _resume_config_pauses(
    backend: Backend, now: float, apps: set[str] | None, errcode: int | None = None
) -> list[str]:
    resumed = []
    for app, pause in (await backend.pauses(now)).items():
        covered = (apps is None or app in apps) and errcode in (None, pause.errcode)
        if pause.reason == PauseReason.CONFIG and covered and await backend.resume_app(app, now):
            resumed.append(app)
    return sorted(resumed)


async def replay_dead_letters(backend: Backend, flt: DeadLetterFilter, now: float) -> Replayed:
    """Every dead message matching `flt` back to queued; CONFIG pauses it covers lifted."""
    count = await backend.replay_dead(flt, now)
    apps = None if flt.app is None else {flt.app}
    return Replayed(count, await _resume_config_pauses(backend, now, apps, flt.errcode))


async def replay_messages(backend: Backend, ids: Sequence[str], now: float) -> Replayed:
    """These dead or failed messages back to queued; their apps' CONFIG pauses lifted."""
    records = [await backend.get(message_id) for message_id in ids]
    count = await backend.replay(ids, now)
    apps = {record.app for record in records if record is not None}
    resumed = await _resume_config_pauses(backend, now, apps) if count else []
    return Replayed(count, resumed)
