"""Operator queries and actions (wxgate/operations.py) on a real SQLite file: listing
dead letters by errcode and time, and that the list is what a replay would move."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from wxgate.backends.base import DeadLetterFilter, NewMessage, Outcome, Settlement, Status
from wxgate.backends.sqlite import SqliteBackend
from wxgate.operations import list_dead_letters, replay_dead_letters

T0 = 1_800_000_000.0
APP = "shop"


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[SqliteBackend]:
    store = SqliteBackend(tmp_path / "operations.db")
    await store.start()
    yield store
    await store.close()


async def dead_at(backend: SqliteBackend, when: float, errcode: int, app: str = APP) -> str:
    """One message that went dead with `errcode` at `when`."""
    payload = {"touser": "oOps", "template_id": "tpl", "data": {}}
    [enqueued] = await backend.enqueue([NewMessage(app, payload)], when - 1)
    [lease] = await backend.lease_batch("operations-test", 1, 60.0, when)
    dead = Settlement(lease, Outcome.DEAD, errcode=errcode, errmsg="dead", category="CONFIG")
    assert await backend.settle([dead], when) == [True]
    return enqueued.id


async def test_dead_letters_since_a_time_are_those_that_went_dead_then_or_later(
    backend: SqliteBackend,
) -> None:
    old = await dead_at(backend, T0, 40125)
    middle = await dead_at(backend, T0 + 100, 40125)
    new = await dead_at(backend, T0 + 200, 40125)

    listed = await list_dead_letters(backend, DeadLetterFilter(since=T0 + 100), 10)
    until = await list_dead_letters(backend, DeadLetterFilter(until=T0 + 100), 10)

    assert [record.id for record in listed] == [new, middle]
    assert [record.id for record in until] == [middle, old]
    assert all(record.status is Status.DEAD for record in listed + until)


async def test_dead_letters_by_app_and_errcode_skip_the_others(backend: SqliteBackend) -> None:
    wanted = await dead_at(backend, T0, 40125)
    await dead_at(backend, T0 + 1, -1)
    await dead_at(backend, T0 + 2, 40125, app="club")

    listed = await list_dead_letters(backend, DeadLetterFilter(app=APP, errcode=40125), 10)

    assert [record.id for record in listed] == [wanted]


async def test_the_dead_letters_listed_are_the_ones_the_same_filter_replays(
    backend: SqliteBackend,
) -> None:
    for n in range(6):
        await dead_at(backend, T0 + n * 10, 40125 if n % 2 else -1)
    flt = DeadLetterFilter(errcode=40125, since=T0 + 5, until=T0 + 35)

    listed = {record.id for record in await list_dead_letters(backend, flt, 100)}
    replayed = await replay_dead_letters(backend, flt, T0 + 100)
    still_dead = {record.id for record in await list_dead_letters(backend, DeadLetterFilter(), 100)}

    assert replayed.replayed == len(listed) == 2
    assert listed.isdisjoint(still_dead)
    assert len(still_dead) == 4


async def test_dead_letters_stop_at_the_limit_newest_first(backend: SqliteBackend) -> None:
    ids = [await dead_at(backend, T0 + n, 40125) for n in range(5)]

    listed = await list_dead_letters(backend, DeadLetterFilter(errcode=40125), 3)

    assert [record.id for record in listed] == ids[::-1][:3]
