"""subscribe/bizsend (official account) and subscribe/send (mini program) at the sandbox:
grants, strict values, the other kind's token, concurrency (docs/wechat-protocol.md §4)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from tests.sandbox.helpers import (
    BIZSEND,
    SEND,
    SUBSCRIBE_SEND,
    WeChatCalls,
    message,
    subscribe_message,
)
from wxgate.sandbox.config import DEFAULT_APPID, DEFAULT_MINI_APPID
from wxgate.sandbox.control import SandboxControl
from wxgate.sandbox.errors import ControlError


@dataclass
class Account:
    """One sandbox account as a sender of subscribe messages."""

    kind: str
    appid: str
    path: str
    token: str
    template_id: str  # library template 1001 (one-time), keywords 1, 2, 3, 6
    wechat: WeChatCalls

    async def send(self, body: dict) -> dict:
        return await self.wechat.post(self.path, body, access_token=self.token)


async def _account(wechat: WeChatCalls, kind: str) -> Account:
    if kind == "miniprogram":
        token = await wechat.mini_token()
        appid, path = DEFAULT_MINI_APPID, SUBSCRIBE_SEND
    else:
        token = await wechat.token()
        appid, path = DEFAULT_APPID, BIZSEND
    template_id = await wechat.add_subscribe_template(token)
    return Account(kind, appid, path, token, template_id, wechat)


@pytest.fixture(params=["subscribe", "miniprogram"])
async def account(request: pytest.FixtureRequest, wechat: WeChatCalls) -> Account:
    return await _account(wechat, request.param)


@pytest.fixture
async def official(wechat: WeChatCalls) -> Account:
    return await _account(wechat, "subscribe")


@pytest.fixture
async def mini(wechat: WeChatCalls) -> Account:
    return await _account(wechat, "miniprogram")


async def test_bizsend_after_an_accept_answers_ok_without_a_msgid(
    official: Account, sandbox_control: SandboxControl
):
    await sandbox_control.popup(official.appid, "oAnn", official.template_id)
    answer = await official.send(subscribe_message("oAnn", official.template_id))
    assert answer == {"errcode": 0, "errmsg": "ok"}


async def test_subscribe_send_after_an_accept_answers_an_int64_msgid(
    mini: Account, sandbox_control: SandboxControl
):
    await sandbox_control.popup(mini.appid, "oAnn", mini.template_id)
    answer = await mini.send(subscribe_message("oAnn", mini.template_id))
    assert answer["errcode"] == 0
    assert 2**53 < answer["msgid"] < 2**63
    [item] = await sandbox_control.messages(kind="miniprogram")
    assert item["msgid"] == answer["msgid"]


async def test_a_send_without_a_grant_is_43101_and_not_delivered(
    account: Account, sandbox_control: SandboxControl
):
    answer = await account.send(subscribe_message("oNobody", account.template_id))
    assert answer["errcode"] == 43101
    assert await sandbox_control.messages(kind=account.kind) == []


async def test_a_one_time_grant_allows_exactly_one_send(
    account: Account, sandbox_control: SandboxControl
):
    await sandbox_control.popup(account.appid, "oAnn", account.template_id)
    body = subscribe_message("oAnn", account.template_id)
    assert [(await account.send(body))["errcode"] for _ in range(2)] == [0, 43101]
    assert await sandbox_control.grants(account.appid, "oAnn") == []


async def test_one_time_accepts_add_up(account: Account, sandbox_control: SandboxControl):
    for _ in range(2):
        await sandbox_control.popup(account.appid, "oAnn", account.template_id)
    [grant] = await sandbox_control.grants(account.appid, "oAnn")
    assert (grant["one_time"], grant["long_term"]) == (2, False)
    body = subscribe_message("oAnn", account.template_id)
    assert [(await account.send(body))["errcode"] for _ in range(3)] == [0, 0, 43101]


async def test_a_long_term_grant_is_not_spent(
    account: Account, wechat: WeChatCalls, sandbox_control: SandboxControl
):
    template_id = await wechat.add_subscribe_template(account.token, "1003", [1, 2])
    await sandbox_control.popup(account.appid, "oAnn", template_id, type="long_term")
    data = {"thing1": {"value": "口腔检查"}, "time2": {"value": "2024-05-02 09:30"}}
    body = {"touser": "oAnn", "template_id": template_id, "data": data}
    assert [(await account.send(body))["errcode"] for _ in range(3)] == [0, 0, 0]
    [grant] = await sandbox_control.grants(account.appid, "oAnn")
    assert grant["long_term"] is True


async def test_a_rejected_popup_clears_the_grant(account: Account, sandbox_control: SandboxControl):
    await sandbox_control.popup(account.appid, "oAnn", account.template_id)
    answer = await sandbox_control.popup(account.appid, "oAnn", account.template_id, "reject")
    assert answer["grants"] == [
        {"template_id": account.template_id, "one_time": 0, "long_term": False}
    ]
    body = subscribe_message("oAnn", account.template_id)
    assert (await account.send(body))["errcode"] == 43101


async def test_turning_a_template_off_clears_a_long_term_grant(
    account: Account, wechat: WeChatCalls, sandbox_control: SandboxControl
):
    template_id = await wechat.add_subscribe_template(account.token, "1003", [1, 2])
    await sandbox_control.popup(account.appid, "oAnn", template_id)
    await sandbox_control.unsubscribe(account.appid, "oAnn", template_id)
    assert await sandbox_control.grants(account.appid) == []
    data = {"thing1": {"value": "口腔检查"}, "time2": {"value": "2024-05-02 09:30"}}
    body = {"touser": "oAnn", "template_id": template_id, "data": data}
    assert (await account.send(body))["errcode"] == 43101


async def test_grants_are_per_openid_and_template(
    account: Account, wechat: WeChatCalls, sandbox_control: SandboxControl
):
    other = await wechat.add_subscribe_template(account.token)
    await sandbox_control.popup(account.appid, "oAnn", account.template_id)
    assert (await account.send(subscribe_message("oBen", account.template_id)))["errcode"] == 43101
    assert (await account.send(subscribe_message("oAnn", other)))["errcode"] == 43101
    assert (await account.send(subscribe_message("oAnn", account.template_id)))["errcode"] == 0


async def test_bizsend_refuses_a_mini_program_token_with_48001(
    mini: Account, wechat: WeChatCalls, sandbox_control: SandboxControl
):
    body = subscribe_message("oAnn", mini.template_id)
    assert (await wechat.post(BIZSEND, body, access_token=mini.token))["errcode"] == 48001
    assert (await sandbox_control.stats())["sends_by_kind"]["subscribe"] == {"48001": 1}


async def test_subscribe_send_refuses_an_official_account_token_with_45103(
    official: Account, wechat: WeChatCalls
):
    body = subscribe_message("oAnn", official.template_id)
    answer = await wechat.post(SUBSCRIBE_SEND, body, access_token=official.token)
    assert answer["errcode"] == 45103


async def test_template_send_refuses_a_mini_program_token_with_48001(
    mini: Account, wechat: WeChatCalls
):
    answer = await wechat.post(SEND, message(), access_token=mini.token)
    assert answer["errcode"] == 48001


async def test_a_template_the_account_did_not_add_is_40037(account: Account, wechat: WeChatCalls):
    other_token = await (wechat.token() if account.kind == "miniprogram" else wechat.mini_token())
    elsewhere = await wechat.add_subscribe_template(other_token)
    assert (await account.send(subscribe_message("oAnn", elsewhere)))["errcode"] == 40037
    assert (await account.send(subscribe_message("oAnn", "bad_template")))["errcode"] == 40037


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("thing2", "这是一个超过二十个字符的商品名称用来测试长度限制的"),
        ("time3", "明天下午"),
        ("character_string1", "订单XN2024"),
        ("enum_string6", "已退货"),  # not one of the template's values
        ("enum_string6", ""),
    ],
    ids=["thing-too-long", "time-shape", "chinese-in-character-string", "not-in-enum", "empty"],
)
async def test_a_value_breaking_its_rule_is_47003_naming_the_key(
    account: Account, sandbox_control: SandboxControl, key: str, value: str
):
    await sandbox_control.popup(account.appid, "oAnn", account.template_id)
    body = subscribe_message("oAnn", account.template_id)
    body["data"][key] = {"value": value}
    answer = await account.send(body)
    assert answer["errcode"] == 47003
    assert answer["errmsg"].startswith(f"argument invalid! data.{key}.value invalid rid: ")


async def test_a_key_of_the_template_missing_from_data_is_47003(
    account: Account, sandbox_control: SandboxControl
):
    await sandbox_control.popup(account.appid, "oAnn", account.template_id)
    body = subscribe_message("oAnn", account.template_id)
    del body["data"]["time3"]
    answer = await account.send(body)
    assert answer["errcode"] == 47003
    assert "data.time3.value" in answer["errmsg"]


async def test_a_refused_send_spends_no_grant(account: Account, sandbox_control: SandboxControl):
    await sandbox_control.popup(account.appid, "oAnn", account.template_id)
    bad = subscribe_message("oAnn", account.template_id)
    bad["data"]["enum_string6"] = {"value": "已退货"}
    assert (await account.send(bad))["errcode"] == 47003
    good = subscribe_message("oAnn", account.template_id)
    assert (await account.send(good))["errcode"] == 0


async def test_a_second_send_while_the_first_is_in_flight_is_43108(
    account: Account, sandbox_control: SandboxControl
):
    for openid in ("oAnn", "oAnn", "oBen"):
        await sandbox_control.popup(account.appid, openid, account.template_id)
    await sandbox_control.set_faults(latency_ms=300)
    same = subscribe_message("oAnn", account.template_id)
    other = subscribe_message("oBen", account.template_id)
    answers = await asyncio.gather(account.send(same), account.send(same), account.send(other))
    assert sorted(a["errcode"] for a in answers) == [0, 0, 43108]
    assert answers[2]["errcode"] == 0  # another openid is not held up
    assert (await account.send(same))["errcode"] == 0  # once answered, no longer in flight


@pytest.mark.parametrize(
    ("field", "value", "errcode"),
    [
        ("miniprogram_state", "beta", 47003),
        ("lang", "fr_FR", 47003),
        ("page", "bad_pages/index", 41030),
    ],
)
async def test_mini_program_fields_are_checked(
    mini: Account, sandbox_control: SandboxControl, field: str, value: str, errcode: int
):
    await sandbox_control.popup(mini.appid, "oAnn", mini.template_id)
    answer = await mini.send(subscribe_message("oAnn", mini.template_id, **{field: value}))
    assert answer["errcode"] == errcode
    ok = {"page": "pages/order?id=1", "miniprogram_state": "trial", "lang": "en_US"}
    assert (await mini.send(subscribe_message("oAnn", mini.template_id, **ok)))["errcode"] == 0


async def test_inbox_keeps_subscribe_sends_with_their_kind_and_fields(
    mini: Account, sandbox_control: SandboxControl
):
    await sandbox_control.popup(mini.appid, "oAnn", mini.template_id)
    body = subscribe_message("oAnn", mini.template_id, page="pages/o?id=1", lang="zh_TW")
    await mini.send(body)
    [item] = await sandbox_control.messages(kind="miniprogram")
    assert (item["kind"], item["appid"], item["touser"]) == ("miniprogram", mini.appid, "oAnn")
    assert (item["page"], item["lang"]) == ("pages/o?id=1", "zh_TW")
    assert item["miniprogram_state"] is None
    assert item["data"] == body["data"]
    assert item["client_msg_id"] is None
    assert await sandbox_control.messages(kind="template") == []


async def test_stats_count_sends_by_kind_and_errcode(
    official: Account, wechat: WeChatCalls, sandbox_control: SandboxControl
):
    await sandbox_control.popup(official.appid, "oAnn", official.template_id)
    await official.send(subscribe_message("oAnn", official.template_id))
    await official.send(subscribe_message("oAnn", official.template_id))
    await wechat.send(official.token)
    stats = await sandbox_control.stats()
    assert stats["sends_by_kind"] == {
        "template": {"0": 1},
        "subscribe": {"0": 1, "43101": 1},
        "miniprogram": {},
    }
    assert stats["sends"] == {"0": 1}


@pytest.mark.parametrize(("touser", "errcode"), [("invalid_1", 40003), ("refused_1", 43101)])
async def test_test_openids_are_refused_as_for_template_sends(
    account: Account, sandbox_control: SandboxControl, touser: str, errcode: int
):
    await sandbox_control.popup(account.appid, touser, account.template_id)
    answer = await account.send(subscribe_message(touser, account.template_id))
    assert answer["errcode"] == errcode


async def test_busy_openid_is_answered_minus_one_twice_without_spending_its_grant(
    account: Account, sandbox_control: SandboxControl
):
    await sandbox_control.popup(account.appid, "busy_1", account.template_id)
    body = subscribe_message("busy_1", account.template_id)
    assert [(await account.send(body))["errcode"] for _ in range(3)] == [-1, -1, 0]


async def test_daily_quota_applies_to_subscribe_sends(
    account: Account, sandbox_control: SandboxControl
):
    for _ in range(2):
        await sandbox_control.popup(account.appid, "oAnn", account.template_id)
    await sandbox_control.set_faults(daily_quota=1)
    body = subscribe_message("oAnn", account.template_id)
    assert [(await account.send(body))["errcode"] for _ in range(2)] == [0, 45009]


@pytest.mark.parametrize("template_id", ["no-such-template", ["a", "list"], 7])
async def test_a_popup_for_a_template_the_account_lacks_is_refused(
    account: Account, sandbox_control: SandboxControl, template_id: object
):
    with pytest.raises(ControlError) as refused:
        await sandbox_control.popup(account.appid, "oAnn", [template_id])  # type: ignore[list-item]
    assert refused.value.status == 400
    assert "template_id" in refused.value.message


async def test_a_long_term_popup_for_a_one_time_template_is_refused(
    account: Account, sandbox_control: SandboxControl
):
    with pytest.raises(ControlError) as refused:
        await sandbox_control.popup(account.appid, "oAnn", account.template_id, type="long_term")
    assert refused.value.status == 400
    assert "type" in refused.value.message
    assert await sandbox_control.grants(account.appid) == []


async def test_a_popup_for_an_unknown_appid_is_refused(sandbox_control: SandboxControl):
    with pytest.raises(ControlError) as refused:
        await sandbox_control.popup("wxnobody", "oAnn", "t")
    assert "appid" in refused.value.message


async def test_reset_forgets_grants_and_subscribe_templates(
    account: Account, wechat: WeChatCalls, sandbox_control: SandboxControl
):
    await sandbox_control.popup(account.appid, "oAnn", account.template_id)
    await sandbox_control.reset()
    assert await sandbox_control.grants(account.appid) == []
    token = await (wechat.mini_token() if account.kind == "miniprogram" else wechat.token())
    listed = await wechat.get("/wxaapi/newtmpl/gettemplate", access_token=token)
    assert listed["data"] == []
