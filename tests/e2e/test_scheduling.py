"""Scheduled sends and cancellation over real HTTP, against the sandbox, on both engines:
a message with `send_at` waits (its clock shifted past the time, it is sent), and a
cancel before the send keeps it from ever reaching WeChat."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.e2e.conftest import TEMPLATE, Stack, order_data
from tests.e2e.engines import engine_stack  # noqa: F401  # `stack`, on both engines
from wxgate.clock import rfc3339

HOUR = 3600.0
SENT = frozenset({"sent", "delivered"})


def at(stack: Stack, seconds_from_now: float) -> str:
    return rfc3339(stack.clock.now() + seconds_from_now)  # type: ignore[return-value]


async def schedule(stack: Stack, touser: str, send_at: str, **fields: Any) -> dict[str, Any]:
    body = {"touser": touser, "template_id": TEMPLATE, "data": order_data(), "send_at": send_at}
    status, answer = await stack.call("POST", "/v1/messages", json={**body, **fields})
    assert status == 202, answer
    return dict(answer["data"])


async def quiet_spell(seconds: float = 0.5) -> None:
    """Real time in which a worker polling every 20 ms would have sent anything due."""
    await asyncio.sleep(seconds)


async def test_a_scheduled_message_is_not_sent_before_send_at_and_is_sent_after(
    stack: Stack,
) -> None:
    answer = await schedule(stack, "oSched_e2e", at(stack, HOUR))
    assert answer["status"] == "scheduled"

    await quiet_spell()
    assert await stack.inbox(client_msg_id=answer["id"]) == []
    record = await stack.record(answer["id"])
    assert record["status"] == "scheduled"
    assert [e["kind"] for e in record["events"]] == ["accepted", "scheduled"]

    stack.clock.shift(HOUR)
    [record] = await stack.settled([answer["id"]], SENT)
    assert len(await stack.inbox(client_msg_id=answer["id"])) == 1
    assert record["send_at"] == answer_send_at(record)


def answer_send_at(record: dict[str, Any]) -> str:
    """send_at as the record shows it: RFC 3339 in UTC, like every time in the API."""
    [scheduled] = [e for e in record["events"] if e["kind"] == "scheduled"]
    return str(scheduled["note"]).removeprefix("due at ")


async def test_a_send_at_in_the_past_is_sent_at_once(stack: Stack) -> None:
    answer = await schedule(stack, "oLate_e2e", at(stack, -60))
    await stack.settled([answer["id"]], SENT)


async def test_cancel_before_due_ends_cancelled_and_never_reaches_the_sandbox(
    stack: Stack,
) -> None:
    answer = await schedule(stack, "oCancel_e2e", at(stack, HOUR))

    status, cancelled = await stack.call("DELETE", f"/v1/messages/{answer['id']}")

    assert status == 200, cancelled
    assert cancelled["data"] == {"id": answer["id"], "status": "cancelled", "cancelled": True}
    stack.clock.shift(2 * HOUR)
    await quiet_spell()
    record = await stack.record(answer["id"])
    assert record["status"] == "cancelled"
    assert record["events"][-1]["kind"] == "cancelled"
    assert await stack.inbox(client_msg_id=answer["id"]) == []
    again_status, again = await stack.call("DELETE", f"/v1/messages/{answer['id']}")
    assert (again_status, again["data"]["cancelled"]) == (200, False)


async def test_a_cancel_after_the_send_loses_and_says_what_won(stack: Stack) -> None:
    message_id = await stack.send("oSentFirst_e2e")
    await stack.settled([message_id], {"delivered"})

    status, answer = await stack.call("DELETE", f"/v1/messages/{message_id}")

    assert status == 409, answer
    assert answer["data"] == {"id": message_id, "status": "delivered", "cancelled": False}
    assert (await stack.record(message_id))["status"] == "delivered"


async def test_cancels_racing_the_worker_each_end_one_way_and_the_answer_says_which(
    stack: Stack,
) -> None:
    await stack.stop_gateway()
    await stack.start_gateway(app={"rate_limit_per_s": 40.0})  # 80 sends take 2 s
    body = {
        "template_id": TEMPLATE,
        "data": order_data(),
        "recipients": [f"oRace{n:03d}_e2e" for n in range(80)],
    }
    status, batch = await stack.call("POST", "/v1/messages/batch", json=body)
    assert status == 202, batch
    ids = batch["data"]["ids"]
    await asyncio.sleep(0.3)  # the worker is sending the first ones
    answers = await asyncio.gather(
        *(stack.call("DELETE", f"/v1/messages/{message_id}") for message_id in ids)
    )
    records = await stack.settled(ids, {"cancelled", "delivered"})
    won = {"cancel": 0, "send": 0}
    for message_id, (status, answer), record in zip(ids, answers, records, strict=True):
        at_sandbox = await stack.inbox(client_msg_id=message_id)
        if status == 200:
            won["cancel"] += 1
            assert record["status"] == "cancelled" and at_sandbox == []
        else:
            won["send"] += 1
            assert status == 409 and answer["data"]["status"] in {"sending", "sent", "delivered"}
            assert record["status"] == "delivered" and len(at_sandbox) == 1
    assert won["cancel"] > 0 and won["send"] > 0, won


async def test_a_batch_scheduled_then_cancelled_sends_nothing(stack: Stack) -> None:
    body = {
        "template_id": TEMPLATE,
        "data": order_data(),
        "recipients": ["oB1_e2e", "oB2_e2e", "oB3_e2e"],
        "send_at": at(stack, HOUR),
    }
    status, answer = await stack.call("POST", "/v1/messages/batch", json=body)
    assert status == 202, answer
    batch_id, ids = answer["data"]["batch_id"], answer["data"]["ids"]
    assert {(await stack.record(i))["status"] for i in ids} == {"scheduled"}

    status, cancelled = await stack.call("DELETE", f"/v1/batches/{batch_id}")

    assert status == 200, cancelled
    assert cancelled["data"]["cancelled"] == 3
    assert cancelled["data"]["counts"]["cancelled"] == 3
    stack.clock.shift(2 * HOUR)
    await quiet_spell()
    assert {(await stack.record(i))["status"] for i in ids} == {"cancelled"}
    assert await stack.inbox(template_id=TEMPLATE) == []


async def test_unknown_message_or_batch_is_404_on_cancel(stack: Stack) -> None:
    assert (await stack.call("DELETE", "/v1/messages/NOPE"))[0] == 404
    assert (await stack.call("DELETE", "/v1/batches/nope"))[0] == 404


@pytest.mark.parametrize(
    "send_at",
    ["tomorrow", "2026-12-07T10:00:00", "2026-12-07", "2026-13-07T10:00:00Z", "2030-99"],
)
async def test_a_send_at_that_is_not_rfc3339_with_an_offset_is_refused(
    stack: Stack, send_at: str
) -> None:
    body = {"touser": "oBad_e2e", "template_id": TEMPLATE, "data": order_data()}
    status, answer = await stack.call("POST", "/v1/messages", json={**body, "send_at": send_at})
    assert status == 400, answer
    assert answer["data"]["errors"][0]["loc"] == ["body", "send_at"]


async def test_a_send_at_more_than_a_year_ahead_is_refused(stack: Stack) -> None:
    body = {"touser": "oFar_e2e", "template_id": TEMPLATE, "data": order_data()}
    far = at(stack, 400 * 24 * HOUR)
    status, answer = await stack.call("POST", "/v1/messages", json={**body, "send_at": far})
    assert status == 400, answer
    assert answer["data"]["errors"][0]["loc"] == ["body", "send_at"]


async def test_a_batch_due_in_one_second_is_released_at_the_rate_limit(stack: Stack) -> None:
    rate = 50.0
    await stack.stop_gateway()
    await stack.start_gateway(app={"rate_limit_per_s": rate})
    body = {
        "template_id": TEMPLATE,
        "data": order_data(),
        "recipients": [f"oDue{n:03d}_e2e" for n in range(200)],
        "send_at": at(stack, HOUR),
    }
    status, answer = await stack.call("POST", "/v1/messages/batch", json=body)
    assert status == 202, answer

    stack.clock.shift(HOUR)  # all 200 fall due in the same second
    await stack.settled(answer["data"]["ids"], SENT, timeout_s=30)

    [account] = (await stack.control.send_rate(1.0))["accounts"].values()
    assert rate * 0.9 <= account["busiest"]["sends"] <= rate * 1.1, account
