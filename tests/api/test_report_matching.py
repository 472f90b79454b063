"""Delivery reports whose MsgID finds no message (0, or unknown), matched by recipient;
and what reports and follow events do to the suppression list. Both engines."""

from __future__ import annotations

import time

import pytest

from wxgate.backends.base import Outcome, Status
from wxgate.wechat.callback import CallbackCodec, template_finish_xml
from wxgate.wechat.callback_events import FollowEvent, event_xml

from .conftest import APPID, CALLBACK_TOKEN, Gateway, GatewayFactory, message_body
from .test_callback import callbacks, push, status_of

CODEC = CallbackCodec(CALLBACK_TOKEN, APPID)


@pytest.fixture(params=["sqlite", "redis"])
async def gateway(request: pytest.FixtureRequest, gateway_factory: GatewayFactory) -> Gateway:
    return await gateway_factory(engine=request.param)


async def _sent(gateway: Gateway, touser: str, msgid: int) -> str:
    status, body, _ = await gateway.post("/v1/messages", message_body(touser=touser))
    assert status == 202, body
    message_id: str = body["data"]["id"]
    await gateway.settle(message_id, Outcome.SENT, msgid=msgid)
    return message_id


async def _report(gateway: Gateway, touser: str, msgid: int, status: str = "success") -> None:
    document = template_finish_xml("gh_0123456789ab", touser, int(time.time()), msgid, status)
    query, body = CODEC.seal(document, str(int(time.time())), f"n{time.time_ns()}")
    assert await push(gateway, "default", query, body) == (200, "success")


async def test_a_msgid_0_report_settles_the_one_message_sent_to_its_recipient(
    gateway: Gateway,
) -> None:
    message_id = await _sent(gateway, "oONE", 1001)
    await _sent(gateway, "oOTHER", 1002)
    await _report(gateway, "oONE", 0)
    assert await status_of(gateway, message_id) is Status.DELIVERED
    assert callbacks(gateway, "default", "matched_by_recipient") == 1


async def test_an_unknown_msgid_report_matches_by_recipient_too(gateway: Gateway) -> None:
    message_id = await _sent(gateway, "oONE", 1001)
    await _report(gateway, "oONE", 999_999, "failed: system failed")
    assert await status_of(gateway, message_id) is Status.REJECTED


async def test_two_messages_to_the_recipient_leave_the_report_unmatched(gateway: Gateway) -> None:
    first = await _sent(gateway, "oTWICE", 1001)
    second = await _sent(gateway, "oTWICE", 1002)
    await _report(gateway, "oTWICE", 0)
    assert [await status_of(gateway, m) for m in (first, second)] == [Status.SENT, Status.SENT]
    assert callbacks(gateway, "default", "unknown_msgid") == 1


async def test_a_user_block_report_suppresses_its_recipient(gateway: Gateway) -> None:
    await _sent(gateway, "oBLOCK", 1001)
    await _report(gateway, "oBLOCK", 1001, "failed:user block")
    found = await gateway.backend.suppression_store().find("default", ["oBLOCK"])
    assert found["oBLOCK"].reason.value == "user_block"


async def test_follow_events_add_and_lift(gateway: Gateway) -> None:
    for followed, result in ((False, "suppressed"), (True, "lifted")):
        event = FollowEvent("gh_0123456789ab", "oFAN", int(time.time()), followed=followed)
        query, body = CODEC.seal(event_xml(event), str(int(time.time())), f"n{time.time_ns()}")
        assert await push(gateway, "default", query, body) == (200, "success")
        assert callbacks(gateway, "default", result) == 1
    assert await gateway.backend.suppression_store().find("default", ["oFAN"]) == {}
