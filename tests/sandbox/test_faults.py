"""Fault injection through /sandbox/faults: each fault does what it says, and only that."""

from __future__ import annotations

import time

import aiohttp
import pytest

from tests.sandbox.helpers import SEND, WeChatCalls, message
from wxgate.sandbox.control import SandboxControl
from wxgate.sandbox.errors import ControlError


@pytest.fixture
async def token(wechat: WeChatCalls) -> str:
    return await wechat.token()


def _send_url(wechat: WeChatCalls, token: str) -> str:
    return f"{wechat.base_url}{SEND}?access_token={token}"


async def test_http_502_answers_bad_gateway_html_and_delivers_nothing(
    wechat: WeChatCalls, sandbox_control: SandboxControl, token: str
):
    await sandbox_control.set_faults(http_502_rate=1.0)
    async with wechat.session.post(_send_url(wechat, token), json=message()) as response:
        assert response.status == 502
        assert response.content_type == "text/html"
        assert b"502 Bad Gateway" in await response.read()
    stats = await sandbox_control.stats()
    assert stats["inbox"] == 0
    assert stats["faults_injected"]["http_502"] == 1


async def test_hang_holds_the_request_until_the_client_times_out(
    wechat: WeChatCalls, sandbox_control: SandboxControl, token: str
):
    await sandbox_control.set_faults(hang_rate=1.0)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        async with wechat.session.post(
            _send_url(wechat, token), json=message(), timeout=aiohttp.ClientTimeout(total=0.3)
        ) as response:
            await response.read()
    assert time.monotonic() - started >= 0.3
    stats = await sandbox_control.stats()
    assert stats["faults_injected"]["hang"] == 1
    assert stats["inbox"] == 0


async def test_reset_drops_the_connection_without_an_answer(
    wechat: WeChatCalls, sandbox_control: SandboxControl, token: str
):
    await sandbox_control.set_faults(reset_rate=1.0)
    with pytest.raises(aiohttp.ClientConnectionError):
        async with wechat.session.post(_send_url(wechat, token), json=message()) as response:
            await response.read()
    assert (await sandbox_control.stats())["faults_injected"]["reset"] == 1


async def test_error_rate_one_answers_system_error_every_time(
    wechat: WeChatCalls, sandbox_control: SandboxControl, token: str
):
    await sandbox_control.set_faults(error_rate=1.0)
    answers = [(await wechat.send(token))["errcode"] for _ in range(5)]
    assert answers == [-1] * 5
    stats = await sandbox_control.stats()
    assert stats["faults_injected"]["errcode_-1"] == 5
    assert stats["inbox"] == 0


async def test_error_rate_applies_to_a_fraction_of_sends(
    wechat: WeChatCalls, sandbox_control: SandboxControl, token: str
):
    await sandbox_control.set_faults(error_rate=0.5)
    answers = [(await wechat.send(token))["errcode"] for _ in range(200)]
    assert 50 < answers.count(-1) < 150
    assert answers.count(-1) + answers.count(0) == 200


async def test_latency_delays_the_answer_of_an_accepted_send(
    wechat: WeChatCalls, sandbox_control: SandboxControl, token: str
):
    await sandbox_control.set_faults(latency_ms=200)
    started = time.monotonic()
    answer = await wechat.send(token)
    assert time.monotonic() - started >= 0.2
    assert answer["errcode"] == 0
    assert (await sandbox_control.stats())["faults_injected"]["latency"] == 1


async def test_errcode_rates_inject_any_catalogue_code(
    wechat: WeChatCalls, sandbox_control: SandboxControl, token: str
):
    await sandbox_control.set_faults(errcode_rates={"45011": 1.0})
    answer = await wechat.send(token)
    assert answer["errcode"] == 45011
    assert (await sandbox_control.stats())["faults_injected"]["errcode_45011"] == 1


async def test_expire_tokens_makes_every_issued_token_expired_once(
    wechat: WeChatCalls, sandbox_control: SandboxControl, token: str
):
    classic = (await wechat.classic())["access_token"]
    await sandbox_control.set_faults(expire_tokens=True)
    assert (await wechat.send(token))["errcode"] == 42001
    assert (await wechat.send(classic))["errcode"] == 42001
    fresh = await wechat.token()
    assert fresh != token
    assert (await wechat.send(fresh))["errcode"] == 0
    assert "expire_tokens" not in await sandbox_control.faults()


async def test_token_error_rate_answers_system_error_on_token_endpoints(
    wechat: WeChatCalls, sandbox_control: SandboxControl
):
    await sandbox_control.set_faults(token_error_rate=1.0)
    assert (await wechat.classic())["errcode"] == -1
    assert (await wechat.stable())["errcode"] == -1


async def test_transport_faults_spare_the_token_endpoints(
    wechat: WeChatCalls, sandbox_control: SandboxControl
):
    await sandbox_control.set_faults(http_502_rate=1.0, error_rate=0.0)
    assert "access_token" in await wechat.stable()


async def test_fault_settings_merge_and_are_returned(sandbox_control: SandboxControl):
    await sandbox_control.set_faults(error_rate=0.25)
    current = await sandbox_control.set_faults(daily_quota=10, errcode_rates={"43117": 0.1})
    assert current["error_rate"] == 0.25
    assert current["daily_quota"] == 10
    assert current["errcode_rates"] == {"43117": 0.1}
    assert await sandbox_control.faults() == current


async def test_reset_clears_the_faults(wechat: WeChatCalls, sandbox_control: SandboxControl):
    await sandbox_control.set_faults(error_rate=1.0)
    await sandbox_control.reset()
    assert (await sandbox_control.faults())["error_rate"] == 0.0
    assert (await wechat.send(await wechat.token()))["errcode"] == 0


@pytest.mark.parametrize(
    ("faults", "named"),
    [
        ({"error_rate": 1.5}, "error_rate"),
        ({"hang_rate": "often"}, "hang_rate"),
        ({"latency_ms": -1}, "latency_ms"),
        ({"daily_quota": 2.5}, "daily_quota"),
        ({"errcode_rates": {"123456": 0.1}}, "errcode_rates"),
        ({"errcode_rates": {"0": 0.1}}, "errcode_rates"),
        ({"error_rate": 0.6, "errcode_rates": {"45011": 0.6}}, "error_rate + errcode_rates"),
        ({"http_502_rate": 0.7, "reset_rate": 0.7}, "http_502_rate"),
        ({"expire_tokens": "yes"}, "expire_tokens"),
        ({"chaos": 1}, "chaos"),
    ],
)
async def test_invalid_fault_settings_are_refused_with_a_message(
    sandbox_control: SandboxControl, faults: dict, named: str
):
    with pytest.raises(ControlError) as refused:
        await sandbox_control.set_faults(**faults)
    assert refused.value.status == 400
    assert named in refused.value.message
    assert (await sandbox_control.faults())["error_rate"] == 0.0
