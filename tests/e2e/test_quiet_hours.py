"""Quiet hours over real HTTP, against the sandbox, on both engines: a message that falls
due in the app's window waits for its end (urgent ones do not), and the backlog then
drains at the app's rate limit, in due order. The gateway's clock is shifted to the
Beijing times each test needs."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tests.e2e.conftest import TEMPLATE, Stack, eventually, order_data
from tests.e2e.engines import engine_stack  # noqa: F401  # `stack`, on both engines
from wxgate.clock import rfc3339
from wxgate.delivery.quiet_hours import QuietWindow

BEIJING = ZoneInfo("Asia/Shanghai")
SENT = frozenset({"sent", "delivered"})
RATE = 10.0


async def quiet(stack: Stack, rate: float = RATE) -> None:
    await stack.stop_gateway()
    await stack.start_gateway(app={"quiet_hours": "22:00-08:00", "rate_limit_per_s": rate})


def shift_to(stack: Stack, hour: int, minute: int = 0) -> None:
    """Move the gateway's clock forward to the next hour:minute in Beijing."""
    now = datetime.fromtimestamp(stack.clock.now(), BEIJING)
    target = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if target <= now:
        target += timedelta(days=1)
    stack.clock.shift(target.timestamp() - stack.clock.now())


async def send(stack: Stack, touser: str, **fields: object) -> str:
    body = {"touser": touser, "template_id": TEMPLATE, "data": order_data(), **fields}
    status, answer = await stack.call("POST", "/v1/messages", json=body)
    assert status == 202, answer
    return str(answer["data"]["id"])


async def released(stack: Stack, ids: list[str]) -> None:
    """Wait until a worker has held back every one of `ids` for the quiet window."""

    async def held() -> bool:
        for message_id in ids:
            record = await stack.record(message_id)
            if not any(e["kind"] == "released" for e in record["events"]):
                return False
        return True

    await eventually(held, what="held back for quiet hours")


async def test_a_message_in_quiet_hours_waits_for_the_window_end(stack: Stack) -> None:
    await quiet(stack)
    shift_to(stack, 23, 0)
    message_id = await send(stack, "oNight_e2e")

    await released(stack, [message_id])
    await asyncio.sleep(0.3)
    record = await stack.record(message_id)
    assert record["status"] == "queued"
    local = datetime.fromtimestamp(stack.clock.now(), BEIJING)
    window_end = (local + timedelta(days=1)).replace(hour=8, minute=0, second=0, microsecond=0)
    assert record["events"][-1]["note"] == f"quiet hours until {rfc3339(window_end.timestamp())}"
    assert await stack.inbox(client_msg_id=message_id) == []

    shift_to(stack, 8, 0)
    await stack.settled([message_id], SENT)
    assert len(await stack.inbox(client_msg_id=message_id)) == 1


async def test_an_urgent_message_is_sent_inside_quiet_hours(stack: Stack) -> None:
    await quiet(stack)
    shift_to(stack, 3, 0)
    message_id = await send(stack, "oUrgent_e2e", priority="urgent")

    [record] = await stack.settled([message_id], SENT)

    assert record["urgent"] is True
    assert not any(e["kind"] == "released" for e in record["events"])


async def test_outside_the_window_messages_go_out_at_once(stack: Stack) -> None:
    await quiet(stack)
    shift_to(stack, 12, 0)
    await stack.settled([await send(stack, "oNoon_e2e")], SENT)


async def test_the_backlog_drains_at_the_rate_limit_in_due_order(stack: Stack) -> None:
    await quiet(stack)
    shift_to(stack, 22, 0)
    start = stack.clock.now()
    # Scheduled inside the window, created in the reverse of their due order.
    count = 20
    ids = []
    for n in range(count):
        due = rfc3339(start + 60 * (count - n))
        ids.append(await send(stack, f"oBacklog{n:02d}_e2e", send_at=due))
    shift_to(stack, 7, 0)
    await released(stack, ids)
    assert await stack.inbox(template_id=TEMPLATE) == []

    shift_to(stack, 8, 0)
    await stack.settled(ids, SENT, timeout_s=20)

    arrived = [item["client_msg_id"] for item in await stack.inbox(template_id=TEMPLATE)]
    assert arrived == list(reversed(ids))  # due order: the last created was due first
    rate = await stack.control.send_rate(1.0)
    [account] = rate["accounts"].values()
    assert account["busiest"]["sends"] <= RATE * 1.1


@pytest.mark.parametrize(
    ("spec", "local", "inside"),
    [
        ("22:00-08:00", "2026-12-07 21:59", False),
        ("22:00-08:00", "2026-12-07 22:00", True),
        ("22:00-08:00", "2026-12-08 03:00", True),
        ("22:00-08:00", "2026-12-08 08:00", False),
        ("12:00-14:00", "2026-12-07 13:00", True),
        ("12:00-14:00", "2026-12-07 14:30", False),
    ],
)
def test_a_window_knows_whether_a_time_is_inside_it(spec: str, local: str, inside: bool) -> None:
    window = QuietWindow.parse(spec, "Asia/Shanghai")
    moment = datetime.strptime(local, "%Y-%m-%d %H:%M").replace(tzinfo=BEIJING).timestamp()
    assert (window.around(moment) is not None) is inside
