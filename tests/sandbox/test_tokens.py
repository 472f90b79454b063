"""Access tokens at the sandbox behave as docs/wechat-protocol.md §1 and §9 items 1-3 say."""

from __future__ import annotations

import re

import aiohttp
import pytest

from tests.sandbox.helpers import WeChatCalls, to_next_beijing_day
from wxgate.sandbox.config import DEFAULT_APPID
from wxgate.sandbox.control import SandboxControl
from wxgate.sandbox.server import SandboxServer

RID = re.compile(r" rid: [0-9a-f]{8}-[0-9a-f]{8}-[0-9a-f]{8}$")


async def test_classic_fetch_answers_a_token_and_expires_in_without_errcode(wechat: WeChatCalls):
    answer = await wechat.classic()
    assert set(answer) == {"access_token", "expires_in"}
    assert answer["expires_in"] == 7200
    assert len(answer["access_token"]) > 100


async def test_classic_fetch_mints_a_new_token_every_call(wechat: WeChatCalls):
    first, second = await wechat.classic(), await wechat.classic()
    assert first["access_token"] != second["access_token"]


async def test_replaced_classic_token_works_during_the_five_minute_overlap(
    wechat: WeChatCalls, sandbox_control: SandboxControl
):
    old = (await wechat.classic())["access_token"]
    await wechat.classic()
    await sandbox_control.advance_clock(299)
    assert (await wechat.send(old))["errcode"] == 0


async def test_replaced_classic_token_is_not_latest_after_the_overlap(
    wechat: WeChatCalls, sandbox_control: SandboxControl
):
    old = (await wechat.classic())["access_token"]
    new = (await wechat.classic())["access_token"]
    await sandbox_control.advance_clock(301)
    answer = await wechat.send(old)
    assert answer["errcode"] == 40001
    assert "getStableAccessToken" in answer["errmsg"]
    assert RID.search(answer["errmsg"])
    assert (await wechat.send(new))["errcode"] == 0


async def test_token_past_its_lifetime_is_expired(
    wechat: WeChatCalls, sandbox_control: SandboxControl
):
    token = (await wechat.classic())["access_token"]
    await sandbox_control.advance_clock(7200)
    assert (await wechat.send(token))["errcode"] == 42001


async def test_token_ttl_is_configurable():
    async with (
        SandboxServer(token_ttl_s=120) as server,
        SandboxControl(server.base_url) as control,
        aiohttp.ClientSession() as session,
    ):
        wechat = WeChatCalls(session, server.base_url)
        answer = await wechat.classic()
        assert answer["expires_in"] == 120
        await control.advance_clock(121)
        assert (await wechat.send(answer["access_token"]))["errcode"] == 42001


async def test_missing_token_is_41001(wechat: WeChatCalls):
    answer = await wechat.post("/cgi-bin/message/template/send", {"touser": "o"})
    assert answer["errcode"] == 41001


async def test_garbage_token_is_40014(wechat: WeChatCalls):
    assert (await wechat.send("90_not-a-token-we-issued"))["errcode"] == 40014


@pytest.mark.parametrize(
    ("params", "errcode"),
    [
        ({"grant_type": "password", "appid": DEFAULT_APPID, "secret": "sandbox-secret"}, 40002),
        ({"grant_type": "client_credential", "secret": "sandbox-secret"}, 41002),
        ({"grant_type": "client_credential", "appid": DEFAULT_APPID}, 41004),
        ({"grant_type": "client_credential", "appid": "wxnobody", "secret": "x"}, 40013),
        ({"grant_type": "client_credential", "appid": DEFAULT_APPID, "secret": "wrong"}, 40001),
    ],
)
async def test_classic_fetch_validates_its_parameters(
    wechat: WeChatCalls, params: dict[str, str], errcode: int
):
    answer = await wechat.get("/cgi-bin/token", **params)
    assert answer["errcode"] == errcode
    assert RID.search(answer["errmsg"])


async def test_stable_fetch_with_a_wrong_secret_is_40125(wechat: WeChatCalls):
    assert (await wechat.stable(secret="wrong"))["errcode"] == 40125


@pytest.mark.parametrize("body", [b"", b"appid=wx&secret=s", b"[]"])
async def test_stable_fetch_with_a_body_that_is_not_a_json_object_is_41002(
    wechat: WeChatCalls, body: bytes
):
    assert (await wechat.post("/cgi-bin/stable_token", body))["errcode"] == 41002


async def test_stable_token_endpoint_requires_post(wechat: WeChatCalls):
    answer = await wechat.get(
        "/cgi-bin/stable_token", grant_type="client_credential", appid=DEFAULT_APPID
    )
    assert answer["errcode"] == 43002


async def test_stable_fetch_returns_the_same_token_with_its_remaining_lifetime(
    wechat: WeChatCalls, sandbox_control: SandboxControl
):
    first = await wechat.stable()
    await sandbox_control.advance_clock(1000)
    second = await wechat.stable()
    assert second["access_token"] == first["access_token"]
    assert first["expires_in"] == 7200
    assert 6199 <= second["expires_in"] <= 6200


async def test_stable_fetch_rotates_in_the_last_five_minutes_and_keeps_the_old_one_working(
    wechat: WeChatCalls, sandbox_control: SandboxControl
):
    old = (await wechat.stable())["access_token"]
    await sandbox_control.advance_clock(7200 - 299)
    rotated = await wechat.stable()
    assert rotated["access_token"] != old
    assert rotated["expires_in"] == 7200
    assert (await wechat.send(old))["errcode"] == 0
    await sandbox_control.advance_clock(300)
    assert (await wechat.send(old))["errcode"] in (40001, 42001)
    assert (await wechat.send(rotated["access_token"]))["errcode"] == 0


async def test_stable_fetch_never_answers_less_than_five_minutes(
    wechat: WeChatCalls, sandbox_control: SandboxControl
):
    await wechat.stable()
    for _ in range(30):
        await sandbox_control.advance_clock(250)
        assert (await wechat.stable())["expires_in"] >= 300


async def test_force_refresh_replaces_the_stable_token_at_once(wechat: WeChatCalls):
    old = (await wechat.stable())["access_token"]
    forced = await wechat.stable(force=True)
    assert forced["access_token"] != old
    assert (await wechat.send(old))["errcode"] == 40001
    assert (await wechat.send(forced["access_token"]))["errcode"] == 0


async def test_force_refresh_within_30_seconds_returns_the_current_token(
    wechat: WeChatCalls, sandbox_control: SandboxControl
):
    first = (await wechat.stable(force=True))["access_token"]
    await sandbox_control.advance_clock(29)
    assert (await wechat.stable(force=True))["access_token"] == first
    await sandbox_control.advance_clock(2)
    assert (await wechat.stable(force=True))["access_token"] != first


async def test_force_refresh_rotates_at_most_20_times_a_day(
    wechat: WeChatCalls, sandbox_control: SandboxControl
):
    await to_next_beijing_day(sandbox_control)
    tokens = set()
    for _ in range(22):
        tokens.add((await wechat.stable(force=True))["access_token"])
        await sandbox_control.advance_clock(31)
    assert len(tokens) == 20


async def test_classic_fetches_leave_the_stable_token_working(
    wechat: WeChatCalls, sandbox_control: SandboxControl
):
    stable = (await wechat.stable())["access_token"]
    await wechat.classic()
    await wechat.classic()
    await sandbox_control.advance_clock(301)
    assert (await wechat.send(stable))["errcode"] == 0
    assert (await wechat.stable())["access_token"] == stable


async def test_forced_stable_refresh_leaves_the_classic_token_working(
    wechat: WeChatCalls, sandbox_control: SandboxControl
):
    classic = (await wechat.classic())["access_token"]
    await wechat.stable()
    await wechat.stable(force=True)
    await sandbox_control.advance_clock(301)
    assert (await wechat.send(classic))["errcode"] == 0


async def test_classic_fetches_are_limited_to_2000_a_day(
    wechat: WeChatCalls, sandbox_control: SandboxControl
):
    await to_next_beijing_day(sandbox_control)
    for _ in range(2000):
        assert "access_token" in await wechat.classic()
    assert (await wechat.classic())["errcode"] == 45009
    await sandbox_control.advance_clock(86_400)
    assert "access_token" in await wechat.classic()


async def test_token_fetches_are_counted_by_endpoint(
    wechat: WeChatCalls, sandbox_control: SandboxControl
):
    await wechat.classic()
    await wechat.stable()
    await wechat.stable()
    await wechat.stable(force=True)
    stats = await sandbox_control.stats()
    assert stats["token_fetches"] == {"token": 1, "stable_token": 2, "stable_token_force": 1}
    assert stats["token_fetches_total"] == 4
