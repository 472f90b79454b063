"""Operator actions shared by the HTTP API and the CLI.

Replaying is more than moving records: docs/design.md, "Pauses", says a CONFIG answer kills an
app's messages and pauses the app "until an operator fixes it and replays", so
a replay that covers a CONFIG-paused app also lifts that pause (otherwise the
replayed messages would sit behind it, unsent).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from wxgate.backends.base import Backend, DeadLetterFilter, PauseReason


@dataclass(frozen=True, slots=True)
class Replayed:
    replayed: int
    resumed: list[str]  # apps whose CONFIG pause the replay lifted


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
