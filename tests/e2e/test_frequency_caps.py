"""Frequency caps over real HTTP, against the sandbox, on both engines: the sixth message
to one recipient in an hour is throttled with the reason (or waits for a free slot),
and the throttled ones are counted in the metrics."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.e2e.conftest import TEMPLATE, Stack, eventually, order_data
from tests.e2e.engines import engine_stack  # noqa: F401  # `stack`, on both engines

SENT = frozenset({"sent", "delivered"})
HOUR = 3600.0


async def capped(stack: Stack, **app: Any) -> None:
    await stack.stop_gateway()
    await stack.start_gateway(app={"per_user_limit": "5/1h", **app})


async def send(stack: Stack, touser: str, template_id: str = TEMPLATE, n: int = 1) -> str:
    body = {"touser": touser, "template_id": template_id, "data": order_data(n)}
    status, answer = await stack.call("POST", "/v1/messages", json=body)
    assert status == 202, answer
    return str(answer["data"]["id"])


async def test_the_sixth_message_in_an_hour_is_throttled_with_the_reason(stack: Stack) -> None:
    await capped(stack)
    first = [await send(stack, "oCapped_e2e", n=n) for n in range(5)]
    await stack.settled(first, SENT)

    sixth = await send(stack, "oCapped_e2e", n=6)
    [record] = await stack.settled([sixth], {"throttled"})

    assert record["last_errmsg"] == "per_user_limit 5/1h reached for this recipient"
    assert record["events"][-1]["kind"] == "throttled"
    assert await stack.inbox(client_msg_id=sixth) == []
    other = await send(stack, "oOther_e2e")  # another recipient is not capped
    await stack.settled([other], SENT)
    status, metrics = await stack.call("GET", "/metrics")
    assert status == 200
    assert 'wxgate_messages_total{app="shop",outcome="throttled"} 1.0' in metrics

    stack.clock.shift(HOUR)  # an hour on, the recipient has slots again
    await stack.settled([await send(stack, "oCapped_e2e", n=7)], SENT)


async def test_with_delay_the_message_past_the_cap_waits_for_a_free_slot(stack: Stack) -> None:
    await capped(stack, per_user_overflow="delay")
    first = [await send(stack, "oPatient_e2e", n=n) for n in range(5)]
    await stack.settled(first, SENT)

    sixth = await send(stack, "oPatient_e2e", n=6)

    async def waiting() -> bool:
        record = await stack.record(sixth)
        return any("reached for this recipient" in e["note"] for e in record["events"])

    await eventually(waiting, what="the sixth held back")
    await asyncio.sleep(0.3)
    assert (await stack.record(sixth))["status"] == "queued"
    assert await stack.inbox(client_msg_id=sixth) == []
    stack.clock.shift(HOUR)
    await stack.settled([sixth], SENT)


async def test_a_template_limit_caps_that_template_only(stack: Stack) -> None:
    await capped(stack, per_user_limit=None, per_template_limit={TEMPLATE: "1/1d"})
    first = await send(stack, "oDaily_e2e")
    await stack.settled([first], SENT)

    [record] = await stack.settled([await send(stack, "oDaily_e2e", n=2)], {"throttled"})

    assert record["last_errmsg"] == f"per_template_limit {TEMPLATE} 1/1d reached for this recipient"
