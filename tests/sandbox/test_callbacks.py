"""TEMPLATESENDJOBFINISH reports from the sandbox: signed, plain or safe mode, retried
as WeChat does (docs/wechat-protocol.md §5.2-§5.5), checked by a real receiver with
CallbackCodec."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web

from tests.sandbox.helpers import WeChatCalls, message
from wxgate.sandbox.config import (
    DEFAULT_APPID,
    DEFAULT_CALLBACK_TOKEN,
    DEFAULT_ENCODING_AES_KEY,
    DEFAULT_ORIGINAL_ID,
    SandboxAccount,
)
from wxgate.sandbox.control import SandboxControl
from wxgate.sandbox.server import SandboxServer
from wxgate.wechat.callback import CallbackCodec, TemplateSendJobFinish


@dataclass
class Receiver:
    """A gateway's callback URL: opens every report with the account's codec."""

    codec: CallbackCodec
    failures_first: int = 0  # answer HTTP 500 this many times before "success"
    answer: bytes = b"success"
    requests: list[dict[str, str]] = field(default_factory=list)
    events: list[TemplateSendJobFinish] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        self.requests.append(query)
        event = self.codec.open(query, await request.read())
        assert isinstance(event, TemplateSendJobFinish)
        if len(self.requests) <= self.failures_first:
            return web.Response(status=500, text="busy")
        self.events.append(event)
        return web.Response(body=self.answer)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    codec = CallbackCodec(
        DEFAULT_CALLBACK_TOKEN, DEFAULT_APPID, DEFAULT_ENCODING_AES_KEY, require_encryption=False
    )
    recv = Receiver(codec)
    app = web.Application()
    app.router.add_post("/wechat/callback/default", recv.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    recv.url = f"http://127.0.0.1:{port}/wechat/callback/default"
    try:
        yield recv
    finally:
        await runner.cleanup()


async def _sandbox_with_callbacks(
    receiver: Receiver, mode: str = "plain", **options: object
) -> SandboxServer:
    server = SandboxServer(callback_url=receiver.url, callback_mode=mode, **options)  # type: ignore[arg-type]
    await server.start()
    return server


async def _send_and_settle(
    server: SandboxServer, *bodies: dict
) -> tuple[list[dict], dict[str, int]]:
    async with aiohttp.ClientSession() as session, SandboxControl(server.base_url) as control:
        wechat = WeChatCalls(session, server.base_url)
        token = await wechat.token()
        answers = [await wechat.send(token, body) for body in bodies]
        return answers, await control.wait_for_callbacks()


async def test_plain_report_is_signed_and_carries_the_msgid(receiver: Receiver):
    server = await _sandbox_with_callbacks(receiver)
    try:
        [answer], counters = await _send_and_settle(server, message(touser="oAlice"))
    finally:
        await server.stop()
    [event] = receiver.events
    assert event.msgid == answer["msgid"]
    assert event.from_user == "oAlice"
    assert event.to_user == DEFAULT_ORIGINAL_ID
    assert event.status == "success"
    [query] = receiver.requests
    assert query["openid"] == "oAlice"
    assert "encrypt_type" not in query
    assert counters["sent"] == 1
    assert counters["acknowledged"] == 1


async def test_safe_mode_report_is_encrypted_and_opens_with_the_aes_key(receiver: Receiver):
    server = await _sandbox_with_callbacks(receiver, mode="safe")
    try:
        [answer], _ = await _send_and_settle(server, message(touser="oBob"))
    finally:
        await server.stop()
    [query] = receiver.requests
    assert query["encrypt_type"] == "aes"
    assert "msg_signature" in query
    [event] = receiver.events
    assert event.msgid == answer["msgid"]


async def test_reports_of_test_openids_carry_their_failure_status(receiver: Receiver):
    server = await _sandbox_with_callbacks(receiver)
    try:
        await _send_and_settle(server, message(touser="blocked_1"), message(touser="sysfail_1"))
    finally:
        await server.stop()
    statuses = sorted(event.status for event in receiver.events)
    assert statuses == ["failed: system failed", "failed:user block"]


async def test_report_is_retried_until_the_receiver_acknowledges(receiver: Receiver):
    receiver.failures_first = 2
    server = await _sandbox_with_callbacks(receiver)
    try:
        _, counters = await _send_and_settle(server, message())
    finally:
        await server.stop()
    assert len(receiver.requests) == 3
    assert len(receiver.events) == 1
    assert counters == {"sent": 1, "acknowledged": 1, "failed": 0, "retries": 2, "pending": 0}


async def test_report_is_given_up_after_three_retries(receiver: Receiver):
    receiver.failures_first = 100
    server = await _sandbox_with_callbacks(receiver)
    try:
        _, counters = await _send_and_settle(server, message())
    finally:
        await server.stop()
    assert len(receiver.requests) == 4
    assert counters["failed"] == 1
    assert counters["retries"] == 3


async def test_an_answer_other_than_success_or_empty_is_retried(receiver: Receiver):
    receiver.answer = b"<xml>reply</xml>"
    server = await _sandbox_with_callbacks(receiver)
    try:
        _, counters = await _send_and_settle(server, message())
    finally:
        await server.stop()
    assert len(receiver.requests) == 4
    assert counters["failed"] == 1


async def test_empty_answer_acknowledges(receiver: Receiver):
    receiver.answer = b""
    server = await _sandbox_with_callbacks(receiver)
    try:
        _, counters = await _send_and_settle(server, message())
    finally:
        await server.stop()
    assert len(receiver.requests) == 1
    assert counters["acknowledged"] == 1


async def test_duplicate_send_triggers_no_second_report(receiver: Receiver):
    server = await _sandbox_with_callbacks(receiver)
    body = message(client_msg_id="once")
    try:
        answers, counters = await _send_and_settle(server, body, body)
    finally:
        await server.stop()
    assert answers[0]["msgid"] == answers[1]["msgid"]
    assert len(receiver.events) == 1
    assert counters["sent"] == 1


async def test_refused_send_triggers_no_report(receiver: Receiver):
    server = await _sandbox_with_callbacks(receiver)
    try:
        _, counters = await _send_and_settle(server, message(touser="invalid_1"))
    finally:
        await server.stop()
    assert receiver.requests == []
    assert counters["sent"] == 0


async def test_callback_delay_holds_the_report_back(receiver: Receiver):
    server = await _sandbox_with_callbacks(receiver, callback_delay_s=0.3)
    try:
        async with aiohttp.ClientSession() as session, SandboxControl(server.base_url) as c:
            wechat = WeChatCalls(session, server.base_url)
            token = await wechat.token()
            sent_at = time.monotonic()
            await wechat.send(token)
            await asyncio.sleep(0.1)
            assert receiver.requests == []
            await c.wait_for_callbacks()
            assert time.monotonic() - sent_at >= 0.3
            assert len(receiver.events) == 1
    finally:
        await server.stop()


async def test_an_account_from_config_reports_to_its_own_url_in_its_own_mode(
    receiver: Receiver,
):
    account = SandboxAccount(
        appid="wxsecond0000000002",
        secret="second-secret",
        callback_token="second-token",
        original_id="gh_second",
        callback_url=receiver.url,
        callback_mode="safe",
    )
    receiver.codec = CallbackCodec("second-token", "wxsecond0000000002", DEFAULT_ENCODING_AES_KEY)
    async with SandboxServer(accounts=[account]) as server, aiohttp.ClientSession() as session:
        wechat = WeChatCalls(session, server.base_url)
        token = (await wechat.stable(appid="wxsecond0000000002", secret="second-secret"))[
            "access_token"
        ]
        assert (await wechat.send(token))["errcode"] == 0
        assert (await wechat.send(await wechat.token()))["errcode"] == 0  # default: no URL
        async with SandboxControl(server.base_url) as control:
            await control.wait_for_callbacks()
    [event] = receiver.events
    assert event.to_user == "gh_second"
    assert receiver.requests[0]["encrypt_type"] == "aes"


async def test_report_timestamp_is_real_time_even_after_the_sandbox_clock_moved(
    receiver: Receiver,
):
    server = await _sandbox_with_callbacks(receiver)
    try:
        async with SandboxControl(server.base_url) as control:
            await control.advance_clock(3600)
        await _send_and_settle(server, message())
    finally:
        await server.stop()
    [query] = receiver.requests
    assert abs(int(query["timestamp"]) - time.time()) < 30


async def test_zero_msgid_mode_reports_msgid_0_for_sends_with_a_client_msg_id(
    receiver: Receiver,
):
    server = await _sandbox_with_callbacks(receiver)
    try:
        async with SandboxControl(server.base_url) as control:
            await control.set_faults(report_zero_msgid=True)
        answers, _ = await _send_and_settle(
            server, message(touser="oWith", client_msg_id="c-1"), message(touser="oWithout")
        )
    finally:
        await server.stop()
    msgids = {event.from_user: event.msgid for event in receiver.events}
    assert msgids == {"oWith": 0, "oWithout": answers[1]["msgid"]}
    assert answers[0]["msgid"] > 0  # the send itself still answers its msgid


async def test_a_push_that_fails_unexpectedly_does_not_stop_the_later_ones(receiver: Receiver):
    """An error no receiver answer explains (here: raised by the first post) is counted
    as a failed push; the pusher goes on with the next reports."""
    server = await _sandbox_with_callbacks(receiver)
    post = server.callbacks._post
    calls = 0

    async def first_raises(*args: object, **kwargs: object) -> bool:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("connection state nobody wrapped")
        return await post(*args, **kwargs)  # type: ignore[arg-type]

    server.callbacks._post = first_raises  # type: ignore[method-assign]
    try:
        _, counters = await _send_and_settle(server, message(), message(touser="o_second"))
    finally:
        await server.stop()
    assert counters["failed"] == 1
    assert counters["acknowledged"] == 1
    assert len(receiver.events) == 1
