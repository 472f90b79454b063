"""The storage contract of subscribe messages, run against every engine: the grant
ledger (`Backend.grant_store()`) and the settling of a message by its sent event
(`apply_sent_result`, matched by `sent_events.apply_sent_event`)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any, cast

from tests.backends.test_contract import T0, message, outbox
from wxgate.backends.base import Backend, EventKind, Outcome, Settlement, Status
from wxgate.backends.grants import GrantUse
from wxgate.backends.sent_events import SentResult, apply_kept_result, apply_sent_event
from wxgate.backends.sqlite import SqliteBackend
from wxgate.wechat.kinds import MessageKind

# -- the grant ledger ------------------------------------------------------------------


async def test_each_one_time_accept_allows_one_send(backend: Backend) -> None:
    grants = backend.grant_store()
    await grants.accept("shop", "o-a", "tpl-1", long_term=False, now=T0)
    grant = await grants.accept("shop", "o-a", "tpl-1", long_term=False, now=T0 + 1)
    assert (grant.one_time, grant.long_term, grant.updated_at) == (2, False, T0 + 1)

    assert await grants.use("shop", "o-a", "tpl-1", T0 + 2) is GrantUse.ONE_TIME
    left = await grants.get("shop", "o-a", "tpl-1")
    assert left is not None and left.one_time == 1
    assert await grants.use("shop", "o-a", "tpl-1", T0 + 3) is GrantUse.ONE_TIME
    assert await grants.get("shop", "o-a", "tpl-1") is None
    assert await grants.use("shop", "o-a", "tpl-1", T0 + 4) is GrantUse.NONE


async def test_a_long_term_grant_is_not_used_up(backend: Backend) -> None:
    grants = backend.grant_store()
    grant = await grants.accept("shop", "o-a", "tpl-1", long_term=True, now=T0)
    assert grant.long_term and grant.allows_a_send
    for n in range(3):
        assert await grants.use("shop", "o-a", "tpl-1", T0 + n) is GrantUse.LONG_TERM
    assert await grants.get("shop", "o-a", "tpl-1") == grant


async def test_a_reject_or_43101_clears_the_grant(backend: Backend) -> None:
    grants = backend.grant_store()
    await grants.accept("shop", "o-a", "tpl-1", long_term=True, now=T0)
    await grants.accept("shop", "o-a", "tpl-1", long_term=False, now=T0)
    assert await grants.clear("shop", "o-a", "tpl-1") is True
    assert await grants.get("shop", "o-a", "tpl-1") is None
    assert await grants.clear("shop", "o-a", "tpl-1") is False


async def test_grants_belong_to_one_app_and_user_and_list_by_template(backend: Backend) -> None:
    grants = backend.grant_store()
    await grants.accept("shop", "o-a", "tpl-2", long_term=False, now=T0)
    await grants.accept("shop", "o-a", "tpl-1", long_term=True, now=T0)
    await grants.accept("shop", "o-b", "tpl-1", long_term=False, now=T0)
    await grants.accept("bank", "o-a", "tpl-1", long_term=False, now=T0)
    listed = await grants.list("shop", "o-a")
    assert [(g.template_id, g.one_time, g.long_term) for g in listed] == [
        ("tpl-1", 0, True),
        ("tpl-2", 1, False),
    ]
    assert await grants.list("shop", "o-nobody") == []


async def test_concurrent_sends_use_the_last_one_time_grant_once(backend: Backend) -> None:
    grants = backend.grant_store()
    await grants.accept("shop", "o-a", "tpl-1", long_term=False, now=T0)
    uses = await asyncio.gather(*(grants.use("shop", "o-a", "tpl-1", T0) for _ in range(5)))
    assert sorted(uses) == sorted([GrantUse.ONE_TIME] + [GrantUse.NONE] * 4)


# -- settled by the sent event ---------------------------------------------------------


async def subscribe_sent(
    backend: Backend, outcome: Outcome, now: float, touser: str = "o-a", **settle: object
) -> str:
    new = replace(message(touser=touser, template_id="tpl-sub"), kind=MessageKind.SUBSCRIBE)
    await backend.enqueue([new], now)
    [lease] = [lease for lease in await backend.lease_batch("w", 10, 30, now) if lease.id == new.id]
    [stored] = await backend.settle([Settlement(lease, outcome, **settle)], now)  # type: ignore[arg-type]
    assert stored
    return new.id


def result(status: Status = Status.DELIVERED, **fields: object) -> SentResult:
    base = {"app": "shop", "touser": "o-a", "template_id": "tpl-sub", "status": status}
    base["text"] = "success" if status is Status.DELIVERED else "failed:user block"
    return SentResult(**{**base, **fields})  # type: ignore[arg-type]


async def test_a_sent_event_settles_an_unknown_message_delivered(backend: Backend) -> None:
    message_id = await subscribe_sent(backend, Outcome.UNKNOWN, T0)
    applied = await apply_sent_event(backend, result(), T0 + 30)
    assert (applied.message_id, applied.status, applied.changed) == (
        message_id,
        Status.DELIVERED,
        True,
    )
    record = await backend.get(message_id)
    assert record is not None
    assert (record.status, record.report_status, record.delivered_at) == (
        Status.DELIVERED,
        "success",
        T0 + 30,
    )
    assert record.events[-1].kind is EventKind.REPORT


async def test_an_unknown_message_delivered_by_its_event_uses_a_grant(backend: Backend) -> None:
    grants = backend.grant_store()
    await grants.accept("shop", "o-a", "tpl-sub", long_term=False, now=T0)
    await grants.accept("shop", "o-a", "tpl-sub", long_term=False, now=T0)
    await subscribe_sent(backend, Outcome.UNKNOWN, T0)
    await apply_sent_event(backend, result(), T0 + 1)
    left = await grants.get("shop", "o-a", "tpl-sub")
    assert left is not None and left.one_time == 1


async def test_a_failed_sent_event_settles_a_sent_message_failed(backend: Backend) -> None:
    message_id = await subscribe_sent(backend, Outcome.SENT, T0)
    applied = await apply_sent_event(backend, result(Status.FAILED), T0 + 5)
    assert (applied.message_id, applied.status) == (message_id, Status.FAILED)
    again = await apply_sent_event(backend, result(Status.FAILED), T0 + 6)
    assert again.message_id is None and not again.changed


async def test_sent_events_settle_the_oldest_matching_message_first(backend: Backend) -> None:
    first = await subscribe_sent(backend, Outcome.SENT, T0)
    second = await subscribe_sent(backend, Outcome.UNKNOWN, T0 + 1)
    assert (await apply_sent_event(backend, result(), T0 + 2)).message_id == first
    assert (await apply_sent_event(backend, result(), T0 + 3)).message_id == second


async def test_a_sent_event_outside_the_window_or_for_another_template_settles_nothing(
    backend: Backend,
) -> None:
    message_id = await subscribe_sent(backend, Outcome.UNKNOWN, T0)
    assert (await apply_sent_event(backend, result(template_id="tpl-x"), T0 + 1)).message_id is None
    late = await apply_sent_event(backend, result(), T0 + 601, window_s=600)
    assert late.message_id is None
    assert (await backend.get(message_id)).status is Status.UNKNOWN  # type: ignore[union-attr]


async def test_a_sent_event_with_another_msgid_is_not_about_the_message(backend: Backend) -> None:
    await subscribe_sent(backend, Outcome.SENT, T0, msgid=111)
    assert (await apply_sent_event(backend, result(msgid=222), T0 + 1)).message_id is None
    assert (await apply_sent_event(backend, result(msgid=111), T0 + 1)).changed


async def test_a_template_message_is_never_settled_by_a_sent_event(backend: Backend) -> None:
    new = message(touser="o-a", template_id="tpl-sub")
    await backend.enqueue([new], T0)
    [lease] = await backend.lease_batch("w", 10, 30, T0)
    await backend.settle([Settlement(lease, Outcome.SENT, msgid=5)], T0)
    assert (await apply_sent_event(backend, result(), T0 + 1)).message_id is None


async def test_a_notify_message_settled_by_its_sent_event_reaches_the_outbox(
    backend: Backend,
) -> None:
    new = replace(
        message(touser="o-a", template_id="tpl-sub"), kind=MessageKind.SUBSCRIBE, notify=True
    )
    await backend.enqueue([new], T0)
    [lease] = await backend.lease_batch("w", 10, 30, T0)
    await backend.settle([Settlement(lease, Outcome.UNKNOWN)], T0)
    await apply_sent_event(backend, result(), T0 + 1)
    assert [(entry[0], entry[1]) for entry in await outbox(backend)] == [
        (new.id, "unknown"),
        (new.id, "delivered"),
    ]


async def test_a_sent_event_that_beat_its_settle_is_kept_and_taken_once(backend: Backend) -> None:
    kept = await apply_sent_event(backend, result(), T0, keep_s=30)
    assert kept.message_id is None
    message_id = await subscribe_sent(backend, Outcome.UNKNOWN, T0 + 1)
    record = await backend.get(message_id)
    assert record is not None
    applied = await apply_kept_result(backend, record, T0 + 2)
    assert applied is not None and (applied.message_id, applied.status) == (
        message_id,
        Status.DELIVERED,
    )
    assert await backend.take_sent_result("shop", "o-a", "tpl-sub", T0 + 3) is None


async def test_a_kept_event_whose_message_another_event_settled_goes_to_the_other_message(
    backend: Backend,
) -> None:
    # Two sends to one user with one template; event 1 beats both settles and is kept;
    # both settles are written; event 2 arrives and settles the first message (the
    # oldest match) before the worker takes the kept event for it.
    kept = await apply_sent_event(backend, result(), T0, keep_s=30)
    assert kept.message_id is None
    first = await subscribe_sent(backend, Outcome.SENT, T0 + 1)
    second = await subscribe_sent(backend, Outcome.SENT, T0 + 1)
    assert (await apply_sent_event(backend, result(), T0 + 2, keep_s=30)).message_id == first
    record = await backend.get(first)
    assert record is not None
    applied = await apply_kept_result(backend, record, T0 + 3, keep_s=30)
    assert applied is not None and (applied.message_id, applied.changed) == (second, True)
    for message_id in (first, second):
        settled = await backend.get(message_id)
        assert settled is not None and settled.status is Status.DELIVERED


async def test_a_kept_event_for_a_message_not_yet_settled_is_kept_again_for_it(
    backend: Backend,
) -> None:
    # As above, but the second send's settle is not written when the kept event is taken.
    await apply_sent_event(backend, result(), T0, keep_s=30)
    first = await subscribe_sent(backend, Outcome.SENT, T0 + 1)
    assert (await apply_sent_event(backend, result(), T0 + 2, keep_s=30)).message_id == first
    record = await backend.get(first)
    assert record is not None
    applied = await apply_kept_result(backend, record, T0 + 3, keep_s=30)
    assert applied is not None and applied.message_id is None  # kept again
    second = await subscribe_sent(backend, Outcome.SENT, T0 + 4)
    later = await backend.get(second)
    assert later is not None
    taken = await apply_kept_result(backend, later, T0 + 5, keep_s=30)
    assert taken is not None and (taken.message_id, taken.status) == (second, Status.DELIVERED)


class _SettledBeforeTheKeep:
    """The backend, with the worker's steps run just before the event's keep: a settle
    written and its kept events looked for, between the event's look and its keep."""

    def __init__(self, backend: Backend, outcome: Outcome = Outcome.SENT) -> None:
        self._backend = backend
        self.outcome = outcome
        self.settled: str | None = None
        self.worker_took: object = "not run"

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    async def keep_sent_result(self, *args: Any, **kwargs: Any) -> None:
        if self.settled is None:
            self.settled = await subscribe_sent(self._backend, self.outcome, T0 + 1)
            record = await self._backend.get(self.settled)
            assert record is not None
            self.worker_took = await apply_kept_result(self._backend, record, T0 + 1)
        await self._backend.keep_sent_result(*args, **kwargs)


async def test_a_settle_written_between_an_events_look_and_its_keep_still_gets_it(
    backend: Backend,
) -> None:
    racing = _SettledBeforeTheKeep(backend)
    applied = await apply_sent_event(cast(Backend, racing), result(), T0 + 2, keep_s=30)
    assert racing.worker_took is None  # the worker looked before the event was kept
    assert (applied.message_id, applied.status, applied.changed) == (
        racing.settled,
        Status.DELIVERED,
        True,
    )
    assert await backend.take_sent_result("shop", "o-a", "tpl-sub", T0 + 3) is None


async def test_an_unknown_message_that_gets_its_event_on_the_second_look_uses_a_grant(
    backend: Backend,
) -> None:
    grants = backend.grant_store()
    for _ in range(2):
        await grants.accept("shop", "o-a", "tpl-sub", long_term=False, now=T0)
    racing = _SettledBeforeTheKeep(backend, Outcome.UNKNOWN)
    applied = await apply_sent_event(cast(Backend, racing), result(), T0 + 2, keep_s=30)
    assert (applied.message_id, applied.status) == (racing.settled, Status.DELIVERED)
    left = await grants.get("shop", "o-a", "tpl-sub")
    assert left is not None and left.one_time == 1


async def test_kept_sent_results_are_taken_oldest_first_until_they_expire(backend: Backend) -> None:
    for status, text in ((Status.FAILED, "failed:user block"), (Status.DELIVERED, "success")):
        await backend.keep_sent_result("shop", "o-a", "tpl-sub", (status, text), T0, 30)
    assert await backend.take_sent_result("shop", "o-b", "tpl-sub", T0) is None
    taken = await backend.take_sent_result("shop", "o-a", "tpl-sub", T0 + 1)
    assert taken == (Status.FAILED, "failed:user block")
    assert await backend.take_sent_result("shop", "o-a", "tpl-sub", T0 + 2) == (
        Status.DELIVERED,
        "success",
    )
    if isinstance(backend, SqliteBackend):  # Redis expires the key on its own clock
        await backend.keep_sent_result("shop", "o-a", "tpl-sub", (Status.DELIVERED, "ok"), T0, 30)
        assert await backend.take_sent_result("shop", "o-a", "tpl-sub", T0 + 31) is None
