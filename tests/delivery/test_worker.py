"""The worker end to end: a real SQLite file, the real sandbox over HTTP, a FakeClock.

One behaviour per test; time moves only when a test advances the clock, and `drain()`
delivers everything due at the clock's now."""

from __future__ import annotations

import asyncio
import gc

from structlog.testing import capture_logs

from wxgate.backends.base import NewMessage, Status, send_burst
from wxgate.delivery.breaker import BreakerState
from wxgate.delivery.events import (
    AppPaused,
    AppResumed,
    BreakerChanged,
    MessageSettled,
    MetricsListener,
)
from wxgate.delivery.policy import next_quota_reset
from wxgate.delivery.worker import GC_MIDDLE_THRESHOLD, GC_YOUNG_THRESHOLD
from wxgate.observability import Metrics
from wxgate.tokenbucket import WHOLE_EPSILON

from .conftest import MakeRig, eventually, on_fake_time


async def test_all_messages_are_sent_with_their_id_as_client_msg_id(make_rig: MakeRig) -> None:
    rig = await make_rig()
    ids = await rig.enqueue("o_alice", "o_bob", "o_carol")
    assert await rig.worker.drain() == 3
    inbox = await rig.inbox()
    assert sorted(item["client_msg_id"] for item in inbox) == sorted(ids)
    for item in inbox:
        record = await rig.record(item["client_msg_id"])
        assert record.status is Status.SENT
        assert record.msgid == item["msgid"]  # an int64 above 2**53, exact
        assert record.msgid > 2**53


async def test_a_token_storm_costs_one_refetch_and_no_message(make_rig: MakeRig) -> None:
    rig = await make_rig()
    store = rig.backend.token_store()
    first = await rig.enqueue(*(f"o_early_{n}" for n in range(5)))
    with capture_logs() as logs:
        await rig.worker.drain()
        old_token = await store.load("shop")
        await rig.control.set_faults(expire_tokens=True)
        later = await rig.enqueue(*(f"o_late_{n}" for n in range(30)))
        assert await rig.worker.drain() == 30
    new_token = await store.load("shop")
    assert old_token is not None and new_token is not None
    assert old_token.token != new_token.token
    for token in (old_token.token, new_token.token):
        assert all(token not in str(line) for line in logs)
    stats = await rig.control.stats()
    assert stats["token_fetches_total"] == 2
    assert stats["sends"].get("42001", 0) >= 1  # the storm did happen
    for message_id in first + later:
        assert (await rig.record(message_id)).status is Status.SENT
    assert len(await rig.inbox()) == 35


async def test_a_busy_wechat_is_retried_until_it_answers(make_rig: MakeRig) -> None:
    rig = await make_rig()
    (message_id,) = await rig.enqueue("busy_dave")
    for _ in range(3):
        await rig.worker.drain()
        rig.clock.advance(rig.delivery.backoff_cap_s)
    record = await rig.record(message_id)
    assert record.status is Status.SENT
    assert record.attempts == 3  # two retries and the send that worked
    retries = [event for event in record.events if event.kind == "retry"]
    assert [event.errcode for event in retries] == [-1, -1]


async def test_a_retry_waits_for_its_backoff(make_rig: MakeRig) -> None:
    rig = await make_rig(delivery={"backoff_base_s": 100.0, "backoff_cap_s": 100.0})
    (message_id,) = await rig.enqueue("busy_erin")
    await rig.worker.drain()
    record = await rig.record(message_id)
    assert record.status is Status.QUEUED
    assert rig.clock.now() <= record.next_attempt_at <= rig.clock.now() + 100.0
    rig.clock.advance(record.next_attempt_at - rig.clock.now() - 0.001)
    assert await rig.worker.drain() == 0
    rig.clock.advance(0.002)
    assert await rig.worker.drain() == 1


async def test_transient_until_the_last_attempt_is_dead_with_its_errcode(
    make_rig: MakeRig,
) -> None:
    rig = await make_rig(delivery={"max_attempts": 3, "breaker_failures": 100})
    await rig.control.set_faults(error_rate=1.0)
    (message_id,) = await rig.enqueue("o_frank")
    for _ in range(5):
        await rig.worker.drain()
        rig.clock.advance(rig.delivery.backoff_cap_s)
    record = await rig.record(message_id)
    assert record.status is Status.DEAD
    assert record.attempts == 3
    assert record.last_errcode == -1
    assert record.last_category == "TRANSIENT"
    assert await rig.sends() == 3


async def test_daily_quota_pauses_the_app_until_the_reset_then_resumes(
    make_rig: MakeRig,
) -> None:
    rig = await make_rig()
    await rig.control.set_faults(daily_quota=2)
    ids = await rig.enqueue(*(f"o_quota_{n}" for n in range(5)))
    await rig.worker.drain()
    reset = next_quota_reset(rig.clock.now())
    records = [await rig.record(message_id) for message_id in ids]
    waiting = [r for r in records if r.status is Status.QUEUED]
    assert len(waiting) == 3
    assert all(r.attempts == 0 and r.next_attempt_at == reset for r in waiting)
    assert all(r.last_errcode == 45009 for r in waiting)
    pause = (await rig.backend.pauses(rig.clock.now()))["shop"]
    assert (pause.reason, pause.until, pause.errcode) == ("QUOTA", reset, 45009)
    more = await rig.enqueue("o_quota_late")
    assert await rig.worker.drain() == 0  # paused: nothing leased, nothing sent
    assert (await rig.record(more[0])).status is Status.QUEUED

    await rig.control.set_faults(daily_quota=None)
    rig.clock.advance(reset - rig.clock.now() + 1.0)
    assert await rig.worker.drain() == 4
    assert [(await rig.record(i)).status for i in ids + more] == [Status.SENT] * 6
    assert [e.reason for e in rig.recorder.of(AppPaused)] == ["QUOTA"]
    assert [e.reason for e in rig.recorder.of(AppResumed)] == ["QUOTA"]


async def test_recipients_that_cannot_receive_fail_with_their_errcodes(
    make_rig: MakeRig,
) -> None:
    rig = await make_rig()
    ids = await rig.enqueue("invalid_gina", "unfollowed_hank", "refused_ivy")
    await rig.worker.drain()
    records = [await rig.record(message_id) for message_id in ids]
    assert [(r.status, r.last_errcode, r.last_category) for r in records] == [
        (Status.FAILED, 40003, "RECIPIENT"),
        (Status.FAILED, 43004, "RECIPIENT"),
        (Status.FAILED, 43101, "RECIPIENT"),
    ]
    assert await rig.sends() == 3  # tried once each, never again


async def test_a_template_of_another_account_fails_with_40037(make_rig: MakeRig) -> None:
    rig = await make_rig()
    (message_id,) = await rig.enqueue("o_jack", template_id="bad_template")
    await rig.worker.drain()
    record = await rig.record(message_id)
    assert (record.status, record.last_errcode, record.last_category) == (
        Status.FAILED,
        40037,
        "REQUEST",
    )


async def test_a_wrong_secret_is_dead_pauses_the_app_and_says_so_loudly(
    make_rig: MakeRig,
) -> None:
    rig = await make_rig(app={"secret": "definitely-not-the-secret"})
    ids = await rig.enqueue("o_kate", "o_liam")
    with capture_logs() as logs:
        await rig.worker.drain()
    for message_id in ids:
        record = await rig.record(message_id)
        assert (record.status, record.last_errcode, record.last_category) == (
            Status.DEAD,
            40125,
            "CONFIG",
        )
    pause = (await rig.backend.pauses(rig.clock.now()))["shop"]
    assert (pause.reason, pause.until, pause.errcode) == ("CONFIG", None, 40125)
    loud = [line for line in logs if line["log_level"] == "error"]
    assert len(loud) == 1
    assert loud[0]["app"] == "shop"
    assert loud[0]["errcode"] == 40125
    assert "replay its dead letters" in loud[0]["action"]
    assert all("definitely-not-the-secret" not in str(line) for line in logs)


async def test_messages_of_a_misconfigured_app_stay_queued(make_rig: MakeRig) -> None:
    rig = await make_rig(app={"secret": "definitely-not-the-secret"})
    await rig.enqueue("o_mia")
    await rig.worker.drain()
    (later,) = await rig.enqueue("o_noah")
    rig.clock.advance(3600.0)
    assert await rig.worker.drain() == 0
    record = await rig.record(later)
    assert (record.status, record.attempts) == (Status.QUEUED, 0)


async def test_a_duplicate_40241_is_sent_without_a_msgid(make_rig: MakeRig) -> None:
    rig = await make_rig()
    await rig.control.set_faults(errcode_rates={"40241": 1.0})
    (message_id,) = await rig.enqueue("o_olga")
    await rig.worker.drain()
    record = await rig.record(message_id)
    assert record.status is Status.SENT
    assert record.msgid is None
    assert record.attempts == 1


async def test_the_breaker_opens_on_an_outage_and_a_probe_closes_it(make_rig: MakeRig) -> None:
    rig = await make_rig(
        delivery={
            "breaker_failures": 3,
            "breaker_cooldown_s": 30.0,
            "backoff_cap_s": 2.0,
            "max_attempts": 10,
        }
    )
    await rig.control.set_faults(error_rate=1.0)
    ids = await rig.enqueue("o_pat", "o_quinn", "o_rose")
    await rig.worker.drain()
    assert rig.worker.breaker_state("shop") is BreakerState.OPEN

    rig.clock.advance(5.0)  # the retries are due, the cool-down is not over
    assert await rig.worker.drain() == 0
    assert await rig.sends() == 3  # an open breaker leases nothing: no attempt burnt

    await rig.control.set_faults(error_rate=0.0)
    rig.clock.advance(30.0)
    await rig.worker.drain()
    assert rig.worker.breaker_state("shop") is BreakerState.CLOSED
    assert [e.state for e in rig.recorder.of(BreakerChanged)] == [
        BreakerState.OPEN,
        BreakerState.HALF_OPEN,
        BreakerState.CLOSED,
    ]
    records = [await rig.record(message_id) for message_id in ids]
    assert all(r.status is Status.SENT for r in records)
    assert sorted(r.attempts for r in records) == [2, 2, 2]  # held back behind the probe: free
    assert await rig.sends() == 6


async def test_a_probe_that_meets_rotated_tokens_refreshes_resends_and_closes_the_breaker(
    make_rig: MakeRig,
) -> None:
    # The token refresh and the resend belong to the probe: recovery within the one
    # cool-down, not a second one (61 s instead of 31 s after the outage ended).
    rig = await make_rig(
        delivery={
            "breaker_failures": 3,
            "breaker_cooldown_s": 30.0,
            "backoff_cap_s": 2.0,
            "max_attempts": 10,
        }
    )
    await rig.control.set_faults(error_rate=1.0)
    ids = await rig.enqueue("o_pat", "o_quinn", "o_rose")
    await rig.worker.drain()
    assert rig.worker.breaker_state("shop") is BreakerState.OPEN

    await rig.control.set_faults(error_rate=0.0, expire_tokens=True)  # rotated meanwhile
    rig.clock.advance(30.0)
    await rig.worker.drain()

    assert rig.worker.breaker_state("shop") is BreakerState.CLOSED
    records = [await rig.record(message_id) for message_id in ids]
    assert all(r.status is Status.SENT for r in records)
    stats = await rig.control.stats()
    assert stats["sends"].get("42001", 0) == 1  # the probe's first request, once


async def test_sends_keep_to_the_apps_rate_limit(make_rig: MakeRig) -> None:
    rate, count = 10, 40
    rig = await make_rig(app={"rate_limit_per_s": rate})
    await rig.enqueue(*(f"o_rate_{n}" for n in range(count)))
    started = rig.clock.now()
    assert await on_fake_time(rig.clock, rig.worker.drain()) == count
    elapsed = rig.clock.now() - started
    assert elapsed >= (count - rate) / rate - 1e-6
    assert elapsed < (count - rate) / rate + 1.0  # waits no longer than the budget needs
    assert len(await rig.inbox()) == count


async def test_the_resend_after_a_token_error_takes_a_send_permit_of_its_own(
    make_rig: MakeRig,
) -> None:
    rate = 10
    rig = await make_rig(app={"rate_limit_per_s": rate})
    await rig.enqueue("o_warm")
    await on_fake_time(rig.clock, rig.worker.drain())  # the token is fetched
    await rig.control.set_faults(expire_tokens=True)
    await rig.enqueue(*(f"o_storm_{n}" for n in range(20)))
    before = (await rig.control.stats())["sends_total"]
    started = rig.clock.now()

    assert await on_fake_time(rig.clock, rig.worker.drain()) == 20

    requests = (await rig.control.stats())["sends_total"] - before
    elapsed = rig.clock.now() - started
    assert requests == 21  # one answered 42001, then resent with the new token
    # every request WeChat saw, the resend included, came out of the budget
    assert requests <= send_burst(rate) + rate * elapsed + WHOLE_EPSILON


async def test_no_permit_is_spent_on_a_message_that_cannot_be_sent(make_rig: MakeRig) -> None:
    rig = await make_rig(app={"rate_limit_per_s": 1})
    await rig.backend.enqueue([NewMessage("shop", {"touser": "o_x"})], rig.clock.now())
    (good,) = await rig.enqueue("o_after_a_bad_payload")
    started = rig.clock.now()
    assert await on_fake_time(rig.clock, rig.worker.drain()) == 2
    assert (await rig.record(good)).status is Status.SENT
    assert rig.clock.now() == started  # the one permit there was went to the good message


async def test_settled_messages_are_reported_to_listeners_after_the_write(
    make_rig: MakeRig,
) -> None:
    rig = await make_rig()
    await rig.enqueue("o_sam", "invalid_tom")
    await rig.worker.drain()
    settled = sorted(rig.recorder.of(MessageSettled), key=lambda e: e.outcome.value)
    assert [(e.outcome.value, e.category, e.errcode) for e in settled] == [
        ("failed", "RECIPIENT", 40003),
        ("sent", "OK", None),
    ]
    assert all(e.latency_s is not None and e.latency_s >= 0 for e in settled)


async def test_log_lines_of_a_message_carry_its_ids_but_never_its_data(
    make_rig: MakeRig,
) -> None:
    rig = await make_rig()
    (message_id,) = await rig.enqueue("invalid_uma")
    with capture_logs() as logs:
        await rig.worker.drain()
    mine = [line for line in logs if line.get("message_id") == message_id]
    assert mine
    assert all(line["trace_id"] == "trace-0" and line["app"] == "shop" for line in mine)
    assert any(line.get("errcode") == 40003 for line in mine)
    assert all("parcel 42" not in str(line) for line in logs)
    assert all("invalid_uma" not in str(line) for line in logs)


async def test_a_message_whose_leases_ran_out_too_often_is_dead_without_a_send(
    make_rig: MakeRig,
) -> None:
    rig = await make_rig(delivery={"max_attempts": 2, "lease_s": 10.0})
    (message_id,) = await rig.enqueue("o_vera")
    for _ in range(2):  # a worker takes it and dies, twice
        assert await rig.backend.lease_batch("dying", 10, 10.0, rig.clock.now())
        rig.clock.advance(11.0)
    await rig.worker.drain()
    record = await rig.record(message_id)
    assert record.status is Status.DEAD
    assert "lease expired too often" in [event.note for event in record.events]
    assert await rig.sends() == 0


async def test_graceful_stop_releases_leased_messages_without_counting(
    make_rig: MakeRig,
) -> None:
    rig = await make_rig(app={"rate_limit_per_s": 1})  # one send now, the rest wait on the clock
    ids = await rig.enqueue(*(f"o_stop_{n}" for n in range(5)))
    running = asyncio.create_task(rig.worker.run())

    async def one_sent_rest_leased() -> bool:
        counts = await rig.backend.counts()
        return counts[Status.SENT] == 1 and counts[Status.SENDING] == 4

    await eventually(one_sent_rest_leased)
    assert rig.worker.running
    await rig.worker.stop(grace_s=0.1)
    await asyncio.wait_for(running, 5.0)
    assert not rig.worker.running
    records = [await rig.record(message_id) for message_id in ids]
    released = [r for r in records if r.status is Status.QUEUED]
    assert len(released) == 4
    assert all(r.attempts == 0 for r in released)
    assert all(r.events[-1].kind == "released" for r in released)
    assert len(await rig.inbox()) == 1


async def test_graceful_stop_lets_a_send_in_flight_finish(make_rig: MakeRig) -> None:
    rig = await make_rig()
    await rig.control.set_faults(latency_ms=300)
    (message_id,) = await rig.enqueue("o_walt")
    running = asyncio.create_task(rig.worker.run())

    async def leased() -> bool:
        return (await rig.backend.counts())[Status.SENDING] == 1

    await eventually(leased)
    await rig.worker.stop(grace_s=5.0)
    await asyncio.wait_for(running, 5.0)
    assert (await rig.record(message_id)).status is Status.SENT


async def test_run_delivers_until_stopped(make_rig: MakeRig) -> None:
    rig = await make_rig()
    running = asyncio.create_task(rig.worker.run())
    ids = await rig.enqueue("o_xena", "o_yuri")

    async def delivered() -> bool:
        return (await rig.backend.counts())[Status.SENT] == 2

    rig.clock.advance(1.0)  # wake the idle poll
    await eventually(delivered)
    await rig.worker.stop()
    await asyncio.wait_for(running, 5.0)
    assert {item["client_msg_id"] for item in await rig.inbox()} == set(ids)


async def test_a_message_of_an_app_this_worker_does_not_know_waits(make_rig: MakeRig) -> None:
    rig = await make_rig()
    payload = {"touser": "o_abe", "template_id": "t", "data": {"k1": {"value": "v"}}}
    (answer,) = await rig.backend.enqueue([NewMessage("elsewhere", payload)], rig.clock.now())
    await rig.worker.drain()
    record = await rig.record(answer.id)
    assert (record.status, record.attempts) == (Status.QUEUED, 0)
    assert record.next_attempt_at > rig.clock.now()
    assert await rig.sends() == 0


async def test_a_slow_app_is_leased_no_faster_than_it_can_send(make_rig: MakeRig) -> None:
    # One send per second and a 10 s lease: at most 5 held at once, so no lease runs out
    # waiting for budget and no message is taken twice.
    rig = await make_rig(app={"rate_limit_per_s": 1}, delivery={"lease_s": 10.0})
    ids = await rig.enqueue(*(f"o_slow_{n}" for n in range(12)))
    assert await on_fake_time(rig.clock, rig.worker.drain()) == 12
    records = [await rig.record(message_id) for message_id in ids]
    assert [r.status for r in records] == [Status.SENT] * 12
    assert all(r.attempts == 1 for r in records)
    assert not [e for r in records for e in r.events if e.kind in ("released", "lease_expired")]


async def test_a_message_that_cannot_get_budget_in_time_goes_back_uncounted(
    make_rig: MakeRig,
) -> None:
    # Two workers share one send per second; each holds two messages (half a 4 s lease).
    # Three sends fit in the first half of the leases, the fourth message goes back.
    rig = await make_rig(app={"rate_limit_per_s": 1}, delivery={"lease_s": 4.0})
    ids = await rig.enqueue(*(f"o_budget_{n}" for n in range(4)))
    other = rig.new_worker(worker_id="other-worker")

    async def both() -> list[int]:
        return list(await asyncio.gather(rig.worker.drain(max_rounds=1), other.drain(max_rounds=1)))

    assert sum(await on_fake_time(rig.clock, both())) == 4
    records = [await rig.record(message_id) for message_id in ids]
    assert [r.status for r in records].count(Status.SENT) == 3
    (waited,) = [r for r in records if r.status is Status.QUEUED]
    assert waited.attempts == 0
    assert waited.events[-1].note == "no send budget within half the lease"
    assert len(await rig.inbox()) == 3


async def test_a_config_answer_shows_in_the_metrics(make_rig: MakeRig) -> None:
    rig = await make_rig(app={"secret": "definitely-not-the-secret"})
    metrics = Metrics()
    worker = rig.new_worker(listeners=[MetricsListener(metrics)])
    await rig.enqueue("o_cleo", "o_dan")
    await worker.drain()

    def value(name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(name, labels)

    assert value("wxgate_config_errors_total", app="shop", errcode="40125") == 2
    assert value("wxgate_messages_total", app="shop", outcome="dead") == 2
    assert value("wxgate_app_paused", app="shop", reason="CONFIG") == 1
    assert value("wxgate_send_seconds_count", app="shop") == 2


async def test_a_stored_body_goes_out_as_stored_with_client_msg_id_added(
    make_rig: MakeRig,
) -> None:
    """No model is rebuilt at send time: every stored field reaches WeChat as it is
    (subscribe kinds: tests/wechat/test_client_subscribe.py and tests/e2e/test_subscribe.py)."""
    rig = await make_rig()
    template = {
        "touser": "o_full",
        "template_id": "tpl_full",
        "url": "https://example.com/o/1",
        "miniprogram": {"appid": "wxmini0001", "pagepath": "pages/o?id=1"},
        "data": {"thing1": {"value": "parcel 42"}, "time2": {"value": "2024-03-01 15:01"}},
    }
    message = NewMessage("shop", template)
    await rig.backend.enqueue([message], rig.clock.now())
    assert await rig.worker.drain() == 1
    [sent] = await rig.inbox(touser="o_full")
    assert sent["client_msg_id"] == message.id
    for name in ("template_id", "url", "miniprogram", "data"):
        assert sent[name] == template[name]
    record = await rig.record(message.id)
    assert record.status is Status.SENT and record.msgid == sent["msgid"]
    assert "client_msg_id" not in record.payload  # added to the request, not stored


async def test_a_running_worker_widens_the_gc_young_generation_and_restores_it(
    make_rig: MakeRig,
) -> None:
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)  # CPython's defaults
    try:
        rig = await make_rig()
        [message_id] = await rig.enqueue("o_gc")
        running = asyncio.create_task(rig.worker.run())

        async def sent() -> bool:
            return (await rig.record(message_id)).status is Status.SENT

        await eventually(sent)
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, GC_MIDDLE_THRESHOLD, 10)
        await rig.worker.stop(grace_s=5.0)
        await asyncio.wait_for(running, 10.0)
        assert gc.get_threshold() == (700, 10, 10)
    finally:
        gc.set_threshold(*before)
