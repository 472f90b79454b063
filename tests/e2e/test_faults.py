"""WeChat misbehaving, end to end: expired tokens, outages, a used-up daily quota and a
misconfigured account, each driven through the sandbox's fault injection while
messages go in over the API; and the operator's way back (replay, resume)."""

from __future__ import annotations

import asyncio

from tests.e2e.conftest import APP, MakeStack, eventually
from wxgate.clock import rfc3339
from wxgate.delivery.policy import next_quota_reset
from wxgate.sandbox.config import DEFAULT_SECRET


async def test_token_storm_costs_exactly_one_fetch(make_stack: MakeStack) -> None:
    stack = await make_stack()
    first = [await stack.send(f"oEarly_{n}") for n in range(3)]
    await stack.settled(first, {"delivered"})
    fetches_before = (await stack.stats())["token_fetches_total"]

    await stack.control.set_faults(expire_tokens=True)
    later = await asyncio.gather(*(stack.send(f"oLate_{n:02d}") for n in range(40)))

    await stack.settled(later, {"delivered"})
    stats = await stack.stats()
    assert stats["token_fetches_total"] == fetches_before + 1
    assert stats["sends"]["0"] == 43
    assert sum(n for code, n in stats["sends"].items() if code != "0") >= 1  # some saw 42001


async def test_outage_kills_after_max_attempts_and_replay_delivers(
    make_stack: MakeStack,
) -> None:
    stack = await make_stack(delivery={"max_attempts": 3})
    await stack.control.set_faults(error_rate=1.0)
    message_id = await stack.send("oOutage_e2e")

    [dead] = await stack.settled([message_id])

    assert dead["status"] == "dead"
    assert dead["last_errcode"] == -1
    assert dead["attempts"] == 3
    assert (await stack.stats())["sends"] == {"-1": 3}

    await stack.control.set_faults(error_rate=0.0)
    status, answer = await stack.call(
        "POST", "/v1/dead-letters/replay", json={"app": APP, "errcode": -1}
    )
    assert status == 200 and answer["data"]["replayed"] == 1
    [record] = await stack.settled([message_id], {"delivered"})
    assert "replayed" in [event["kind"] for event in record["events"]]
    assert len(await stack.inbox(client_msg_id=message_id)) == 1


async def test_daily_quota_pauses_the_app_until_midnight_beijing(make_stack: MakeStack) -> None:
    stack = await make_stack()
    await stack.control.set_faults(daily_quota=2)
    within = [await stack.send(f"oQuota_{n}") for n in range(2)]
    await stack.settled(within, {"delivered"})

    over = [await stack.send(f"oOver_{n}") for n in range(4)]

    async def paused() -> bool:
        return await stack.pause_of() is not None

    await eventually(paused, what="a QUOTA pause")
    pause = await stack.pause_of()
    assert pause is not None
    assert pause["reason"] == "QUOTA" and pause["errcode"] == 45009
    reset = next_quota_reset(stack.clock.now())
    assert pause["until"] == rfc3339(reset)
    await asyncio.sleep(0.3)  # workers keep polling; nothing may be spent meanwhile
    waiting = [await stack.record(message_id) for message_id in over]
    assert {rec["status"] for rec in waiting} == {"queued"}
    assert {rec["attempts"] for rec in waiting} == {0}

    # The same quota still holds tomorrow: only the day changes, for WeChat and us.
    stack.clock.shift(reset - stack.clock.now() + 1.0)

    # Two fit in the new day's quota of 2; the others pause the app again until the next.
    async def two_delivered() -> bool:
        records = [await stack.record(message_id) for message_id in over]
        return sum(rec["status"] == "delivered" for rec in records) == 2

    await eventually(two_delivered, what="two delivered after midnight")
    await asyncio.sleep(0.3)
    records = [await stack.record(message_id) for message_id in over]
    assert sorted(rec["status"] for rec in records) == ["delivered"] * 2 + ["queued"] * 2
    assert all(rec["attempts"] <= 1 for rec in records)
    again = await stack.pause_of()
    assert again is not None and again["until"] == rfc3339(reset + 86_400)
    assert (await stack.stats())["sends"]["0"] == 4


async def test_resume_after_the_quota_is_lifted_delivers_the_rest(make_stack: MakeStack) -> None:
    stack = await make_stack()
    await stack.control.set_faults(daily_quota=0)
    ids = [await stack.send(f"oResume_{n}") for n in range(3)]

    async def paused() -> bool:
        return await stack.pause_of() is not None

    await eventually(paused, what="a QUOTA pause")
    await stack.control.set_faults(daily_quota=None)
    status, answer = await stack.call("POST", f"/v1/apps/{APP}/resume")

    assert status == 200 and answer["data"]["resumed"] is True
    records = await stack.settled(ids, {"delivered"})  # not at the next quota reset
    assert {rec["attempts"] for rec in records} == {1}  # the refused sends were not counted
    assert await stack.pause_of() is None


async def test_wrong_secret_kills_one_message_and_pauses_the_app(make_stack: MakeStack) -> None:
    stack = await make_stack(app={"secret": "not-the-sandbox-secret"})
    first = await stack.send("oConfig_1")

    [dead] = await stack.settled([first])

    assert dead["status"] == "dead"
    assert dead["last_errcode"] == 40125  # stable_token's answer to a wrong AppSecret
    assert dead["last_category"].upper() == "CONFIG"
    pause = await stack.pause_of()
    assert pause is not None and pause["reason"] == "CONFIG" and pause["until"] is None
    held = [await stack.send(f"oConfig_{n}") for n in (2, 3)]
    await asyncio.sleep(0.3)
    assert {(await stack.record(i))["status"] for i in held} == {"queued"}
    assert (await stack.stats())["sends_total"] == 0

    # The operator fixes the secret, restarts on the same file, and replays.
    await stack.stop_gateway()
    await stack.start_gateway(app={"secret": DEFAULT_SECRET})
    await asyncio.sleep(0.3)
    assert {(await stack.record(i))["status"] for i in held} == {"queued"}  # still paused
    status, answer = await stack.call("POST", "/v1/dead-letters/replay", json={"app": APP})

    assert status == 200, answer
    assert answer["data"] == {"replayed": 1, "resumed": [APP]}
    await stack.settled([first, *held], {"delivered"})
    assert await stack.pause_of() is None
