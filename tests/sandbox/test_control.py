"""The /sandbox/ control endpoints: inbox queries, stats, reset and the clock."""

from __future__ import annotations

import pytest

from tests.sandbox.helpers import WeChatCalls, message
from wxgate.sandbox.config import DEFAULT_APPID
from wxgate.sandbox.control import SandboxControl
from wxgate.sandbox.errors import ControlError


@pytest.fixture
async def token(wechat: WeChatCalls) -> str:
    return await wechat.token()


async def test_inbox_filters_by_touser_and_client_msg_id(
    wechat: WeChatCalls, sandbox_control: SandboxControl, token: str
):
    await wechat.send(token, message(touser="oA", client_msg_id="1"))
    await wechat.send(token, message(touser="oB", client_msg_id="2"))
    await wechat.send(token, message(touser="oA", client_msg_id="3"))
    assert [m["client_msg_id"] for m in await sandbox_control.messages(touser="oA")] == ["1", "3"]
    assert [m["touser"] for m in await sandbox_control.messages(client_msg_id="2")] == ["oB"]
    assert await sandbox_control.messages(appid="wxother") == []


async def test_inbox_pages_with_limit_and_offset_and_reports_the_total(
    wechat: WeChatCalls, sandbox_control: SandboxControl, token: str
):
    for i in range(5):
        await wechat.send(token, message(client_msg_id=str(i)))
    page = await sandbox_control.inbox(limit=2, offset=1)
    assert page["total"] == 5
    assert [m["client_msg_id"] for m in page["items"]] == ["1", "2"]


async def test_inbox_refuses_a_limit_beyond_the_maximum(sandbox_control: SandboxControl):
    with pytest.raises(ControlError) as refused:
        await sandbox_control.messages(limit=1_000_001)
    assert refused.value.status == 400
    assert "limit" in refused.value.message


async def test_stats_has_every_documented_counter(sandbox_control: SandboxControl):
    stats = await sandbox_control.stats()
    assert set(stats) >= {
        "token_fetches",
        "token_fetches_total",
        "sends",
        "sends_total",
        "duplicates_absorbed",
        "inbox",
        "callbacks",
        "faults_injected",
    }
    assert set(stats["callbacks"]) >= {"sent", "acknowledged", "failed", "retries"}
    assert set(stats["faults_injected"]) >= {"errcode_-1", "http_502", "hang", "reset", "latency"}


async def test_reset_forgets_inbox_stats_tokens_dedupe_and_clock(
    wechat: WeChatCalls, sandbox_control: SandboxControl, token: str
):
    before = await sandbox_control.now()
    await wechat.send(token, message(client_msg_id="x"))
    await sandbox_control.advance_clock(3600)
    await sandbox_control.reset()
    stats = await sandbox_control.stats()
    assert stats["inbox"] == 0
    assert stats["sends_total"] == 0
    assert stats["token_fetches_total"] == 0
    assert (await wechat.send(token))["errcode"] == 40014
    assert await sandbox_control.now() < before + 60
    fresh = await wechat.token()
    assert (await wechat.send(fresh, message(client_msg_id="x")))["errcode"] == 0
    assert len(await sandbox_control.messages(client_msg_id="x")) == 1


async def test_clock_moves_forward_by_the_amount_asked(sandbox_control: SandboxControl):
    before = await sandbox_control.now()
    after = await sandbox_control.advance_clock(90.5)
    assert 90.5 <= after - before < 95


@pytest.mark.parametrize("seconds", [-1, float("nan")])
async def test_clock_refuses_to_go_back_or_to_nowhere(
    sandbox_control: SandboxControl, seconds: float
):
    with pytest.raises(ControlError) as refused:
        await sandbox_control.advance_clock(seconds)
    assert refused.value.status == 400


async def test_send_rate_finds_the_busiest_window_of_an_accounts_sends(
    wechat: WeChatCalls, sandbox_control: SandboxControl, token: str
):
    started = await sandbox_control.now()
    for n in range(3):
        await wechat.send(token, message(client_msg_id=f"a{n}"))
    await sandbox_control.advance_clock(5)
    for n in range(4):  # four within a second, and a duplicate counts: WeChat saw it
        await wechat.send(token, message(client_msg_id="b" if n else "b0"))
    await wechat.send("not-a-token", message())  # refused before any account: not counted
    rate = await sandbox_control.send_rate(window_s=1)
    account = rate["accounts"][DEFAULT_APPID]
    assert account["sends"] == 7
    assert account["busiest"]["sends"] == 4
    assert account["busiest"]["from"] >= started + 5
    everything = await sandbox_control.send_rate(window_s=60, appid=DEFAULT_APPID)
    assert everything["accounts"][DEFAULT_APPID]["busiest"]["sends"] == 7
    nothing = await sandbox_control.send_rate(appid="wxother")
    assert nothing["accounts"]["wxother"] == {
        "sends": 0,
        "busiest": {"sends": 0, "from": None, "to": None},
    }


@pytest.mark.parametrize("window", ["0", "-1", "nan", "x", "86401"])
async def test_send_rate_refuses_a_window_that_is_not_a_positive_duration(
    sandbox_control: SandboxControl, window: str
):
    with pytest.raises(ControlError) as refused:
        await sandbox_control._call("GET", "/sandbox/send-rate", params={"window_s": window})
    assert refused.value.status == 400
    assert "window_s" in refused.value.message


async def test_reset_forgets_send_arrivals(
    wechat: WeChatCalls, sandbox_control: SandboxControl, token: str
):
    await wechat.send(token, message())
    await sandbox_control.reset()
    assert (await sandbox_control.send_rate())["accounts"] == {}
