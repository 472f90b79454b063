"""Fault injection through /sandbox/faults, and another system refreshing the token
(/sandbox/tokens/foreign-refresh): each fault does what it says, and only that."""

from __future__ import annotations

import time

import aiohttp
import pytest

from tests.sandbox.helpers import (
    BIZSEND,
    SEND,
    SUBSCRIBE_SEND,
    WeChatCalls,
    message,
    subscribe_message,
)
from wxgate.sandbox.config import DEFAULT_MINI_APPID
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


async def test_hang_after_send_carries_the_send_out_but_never_answers(
    wechat: WeChatCalls, sandbox_control: SandboxControl, token: str
):
    await sandbox_control.set_faults(hang_after_send_rate=1.0)
    with pytest.raises(TimeoutError):
        async with wechat.session.post(
            _send_url(wechat, token),
            json=message(client_msg_id="lost-answer"),
            timeout=aiohttp.ClientTimeout(total=0.3),
        ) as response:
            await response.read()
    [item] = await sandbox_control.messages(client_msg_id="lost-answer")
    assert item["touser"] == message()["touser"]
    assert (await sandbox_control.stats())["faults_injected"]["hang_after_send"] == 1


async def test_a_foreign_classic_fetch_makes_our_classic_token_fail_after_its_grace(
    wechat: WeChatCalls, sandbox_control: SandboxControl
):
    ours = (await wechat.classic())["access_token"]
    refresh = await sandbox_control.foreign_refresh(endpoint="token")
    assert refresh["replaced"] is True
    assert (await wechat.send(ours))["errcode"] == 0  # WeChat keeps it 300 s more
    await sandbox_control.advance_clock(301)
    answer = await wechat.send(ours)
    assert answer["errcode"] == 40001
    stats = await sandbox_control.stats()
    assert stats["foreign_token_refreshes"] == 1
    assert stats["token_fetches"]["token"] == 1  # only ours is counted as a fetch


async def test_a_foreign_force_refresh_makes_our_stable_token_fail_at_once(
    wechat: WeChatCalls, sandbox_control: SandboxControl, token: str
):
    refresh = await sandbox_control.foreign_refresh(endpoint="stable_token")
    assert refresh["replaced"] is True
    assert (await wechat.send(token))["errcode"] == 40001
    fresh = await wechat.token()
    assert fresh != token
    assert (await wechat.send(fresh))["errcode"] == 0


async def test_a_foreign_force_refresh_within_30_s_of_the_last_replaces_nothing(
    wechat: WeChatCalls, sandbox_control: SandboxControl
):
    await wechat.stable(force=True)
    token = await wechat.token()
    refresh = await sandbox_control.foreign_refresh(endpoint="stable_token")
    assert refresh["replaced"] is False
    assert (await wechat.send(token))["errcode"] == 0


async def test_a_foreign_refresh_leaves_other_accounts_and_namespaces_alone(
    wechat: WeChatCalls, sandbox_control: SandboxControl, token: str
):
    mini = await wechat.mini_token()
    await sandbox_control.foreign_refresh(endpoint="token")
    await sandbox_control.advance_clock(301)
    assert (await wechat.send(token))["errcode"] == 0  # stable tokens are another namespace
    answer = await wechat.get("/wxaapi/newtmpl/gettemplate", access_token=mini)
    assert answer["errcode"] == 0


@pytest.mark.parametrize(
    ("body", "named"), [({"endpoint": "ticket"}, "endpoint"), ({"appid": "wxnobody"}, "appid")]
)
async def test_a_foreign_refresh_of_what_does_not_exist_is_refused(
    sandbox_control: SandboxControl, body: dict, named: str
):
    with pytest.raises(ControlError) as refused:
        await sandbox_control.foreign_refresh(**body)
    assert refused.value.status == 400
    assert named in refused.value.message


async def test_duplicate_client_msg_id_can_be_answered_40241(
    wechat: WeChatCalls, sandbox_control: SandboxControl, token: str
):
    await sandbox_control.set_faults(duplicate_answer="40241")
    body = message(client_msg_id="twice")
    assert (await wechat.send(token, body))["errcode"] == 0
    again = await wechat.send(token, body)
    assert again["errcode"] == 40241
    assert again["errmsg"].startswith("The message is duplicate in 60 seconds")
    assert len(await sandbox_control.messages(client_msg_id="twice")) == 1


async def test_duplicate_answer_is_the_original_msgid_by_default(
    sandbox_control: SandboxControl,
):
    faults = await sandbox_control.faults()
    assert faults["duplicate_answer"] == "original"
    assert faults["report_zero_msgid"] is False


@pytest.mark.parametrize("path", [BIZSEND, SUBSCRIBE_SEND])
async def test_error_rate_applies_to_the_subscribe_send_paths(
    wechat: WeChatCalls, sandbox_control: SandboxControl, path: str
):
    token = await (wechat.mini_token() if path == SUBSCRIBE_SEND else wechat.token())
    template_id = await wechat.add_subscribe_template(token)
    await sandbox_control.set_faults(error_rate=1.0)
    body = subscribe_message("oAnn", template_id)
    assert (await wechat.post(path, body, access_token=token))["errcode"] == -1


@pytest.mark.parametrize("path", [BIZSEND, SUBSCRIBE_SEND])
async def test_transport_faults_apply_to_the_subscribe_send_paths(
    wechat: WeChatCalls, sandbox_control: SandboxControl, path: str
):
    token = await (wechat.mini_token() if path == SUBSCRIBE_SEND else wechat.token())
    url = f"{wechat.base_url}{path}?access_token={token}"
    await sandbox_control.set_faults(http_502_rate=1.0)
    async with wechat.session.post(url, json=subscribe_message("oAnn", "t")) as response:
        assert response.status == 502
    await sandbox_control.set_faults(http_502_rate=0.0, reset_rate=1.0)
    with pytest.raises(aiohttp.ClientConnectionError):
        async with wechat.session.post(url, json=subscribe_message("oAnn", "t")) as response:
            await response.read()
    faults = (await sandbox_control.stats())["faults_injected"]
    assert (faults["http_502"], faults["reset"]) == (1, 1)


async def test_a_hung_subscribe_send_was_carried_out_and_spent_its_grant(
    wechat: WeChatCalls, sandbox_control: SandboxControl
):
    token = await wechat.mini_token()
    template_id = await wechat.add_subscribe_template(token)
    await sandbox_control.popup(DEFAULT_MINI_APPID, "oAnn", template_id)
    await sandbox_control.set_faults(hang_after_send_rate=1.0)
    url = f"{wechat.base_url}{SUBSCRIBE_SEND}?access_token={token}"
    with pytest.raises(TimeoutError):
        async with wechat.session.post(
            url,
            json=subscribe_message("oAnn", template_id),
            timeout=aiohttp.ClientTimeout(total=0.3),
        ) as response:
            await response.read()
    assert len(await sandbox_control.messages(kind="miniprogram")) == 1
    assert await sandbox_control.grants(DEFAULT_MINI_APPID) == []
