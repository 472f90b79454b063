"""Template management at the sandbox (docs/wechat-protocol.md §3): what a template registry syncs
and the rules of adding templates (docs/wechat-protocol.md §2.4 and §3)."""

from __future__ import annotations

import pytest

from tests.sandbox.helpers import WeChatCalls, message
from wxgate.wechat.template_content import template_keys

BASE = "/cgi-bin/template/"


@pytest.fixture
async def token(wechat: WeChatCalls) -> str:
    return await wechat.token()


async def test_industry_set_is_what_get_industry_answers(wechat: WeChatCalls, token: str):
    body = {"industry_id1": "1", "industry_id2": "4"}
    assert (await wechat.post(BASE + "api_set_industry", body, access_token=token)) == {
        "errcode": 0,
        "errmsg": "ok",
    }
    answer = await wechat.get(BASE + "get_industry", access_token=token)
    assert answer["primary_industry"] == {
        "first_class": "IT科技",
        "second_class": "互联网/电子商务",
    }
    assert answer["secondary_industry"] == {"first_class": "IT科技", "second_class": "电子技术"}


async def test_unknown_industry_is_refused(wechat: WeChatCalls, token: str):
    body = {"industry_id1": "1", "industry_id2": "999"}
    answer = await wechat.post(BASE + "api_set_industry", body, access_token=token)
    assert answer["errcode"] == 47003


async def test_industry_changes_at_most_once_a_month(wechat: WeChatCalls, token: str):
    first = {"industry_id1": "1", "industry_id2": "2"}
    await wechat.post(BASE + "api_set_industry", first, access_token=token)
    second = {"industry_id1": "10", "industry_id2": "2"}
    answer = await wechat.post(BASE + "api_set_industry", second, access_token=token)
    assert answer["errcode"] == 43100


async def test_added_template_is_listed_with_its_typed_placeholders(
    wechat: WeChatCalls, token: str
):
    body = {"template_id_short": "TM00015", "keyword_name_list": ["订单号", "金额"]}
    added = await wechat.post(BASE + "api_add_template", body, access_token=token)
    assert added["errcode"] == 0
    listed = await wechat.get(BASE + "get_all_private_template", access_token=token)
    [template] = listed["template_list"]
    assert template["template_id"] == added["template_id"]
    assert template["title"] == "订单支付成功"
    assert template["content"] == "订单号：{{character_string1.DATA}}\n金额：{{amount2.DATA}}\n"
    assert template["example"] == "订单号：XN2024050100123\n金额：¥128.00\n"


async def test_the_gateway_reads_listed_keys_and_types_a_send_is_accepted_with(
    wechat: WeChatCalls, token: str
):
    names = ["商品名称", "支付时间", "金额"]
    body = {"template_id_short": "TM00015", "keyword_name_list": names}
    template_id = (await wechat.post(BASE + "api_add_template", body, access_token=token))[
        "template_id"
    ]
    [template] = (await wechat.get(BASE + "get_all_private_template", access_token=token))[
        "template_list"
    ]
    read = template_keys(template["content"])
    assert [(key.name, key.type) for key in read] == [
        ("thing3", "thing"),
        ("time4", "time"),
        ("amount2", "amount"),
    ]
    keys = [key.name for key in read]
    examples = dict(line.split("：") for line in template["example"].splitlines())
    data = {key: {"value": examples[name]} for key, name in zip(keys, names, strict=True)}
    answer = await wechat.send(token, message(template_id=template_id, data=data))
    assert answer["errcode"] == 0


@pytest.mark.parametrize(
    "keywords",
    [None, [], ["订单号", "不存在的关键词"], ["订单号", "订单号"], ["订单号", 3], "订单号"],
    ids=["missing", "empty", "unknown", "repeated", "not-a-string", "not-a-list"],
)
async def test_add_template_without_a_valid_keyword_name_list_is_40246(
    wechat: WeChatCalls, token: str, keywords: object
):
    body: dict = {"template_id_short": "TM00015"}
    if keywords is not None:
        body["keyword_name_list"] = keywords
    answer = await wechat.post(BASE + "api_add_template", body, access_token=token)
    assert answer["errcode"] == 40246
    listed = await wechat.get(BASE + "get_all_private_template", access_token=token)
    assert listed["template_list"] == []


async def test_add_template_with_an_unknown_short_id_is_40037(wechat: WeChatCalls, token: str):
    body = {"template_id_short": "TM99999", "keyword_name_list": ["订单号"]}
    answer = await wechat.post(BASE + "api_add_template", body, access_token=token)
    assert answer["errcode"] == 40037


async def test_the_26th_template_is_refused_with_45026(wechat: WeChatCalls, token: str):
    body = {"template_id_short": "TM00303", "keyword_name_list": ["订单号", "快递单号"]}
    answers = [
        (await wechat.post(BASE + "api_add_template", body, access_token=token))["errcode"]
        for _ in range(26)
    ]
    assert answers == [0] * 25 + [45026]
    listed = await wechat.get(BASE + "get_all_private_template", access_token=token)
    assert len(listed["template_list"]) == 25


async def test_a_deleted_template_frees_its_place_under_the_limit(wechat: WeChatCalls, token: str):
    body = {"template_id_short": "TM00303", "keyword_name_list": ["订单号"]}
    ids = [
        (await wechat.post(BASE + "api_add_template", body, access_token=token))["template_id"]
        for _ in range(25)
    ]
    delete = {"template_id": ids[0]}
    await wechat.post(BASE + "del_private_template", delete, access_token=token)
    answer = await wechat.post(BASE + "api_add_template", body, access_token=token)
    assert answer["errcode"] == 0


async def test_deleted_template_is_gone_and_refused_on_send(wechat: WeChatCalls, token: str):
    body = {"template_id_short": "TM00015", "keyword_name_list": ["订单号"]}
    template_id = (await wechat.post(BASE + "api_add_template", body, access_token=token))[
        "template_id"
    ]
    delete = {"template_id": template_id}
    answer = await wechat.post(BASE + "del_private_template", delete, access_token=token)
    assert answer["errcode"] == 0
    listed = await wechat.get(BASE + "get_all_private_template", access_token=token)
    assert listed["template_list"] == []
    assert (await wechat.send(token, message(template_id=template_id)))["errcode"] == 40037


async def test_deleting_an_unknown_template_is_40037(wechat: WeChatCalls, token: str):
    answer = await wechat.post(
        BASE + "del_private_template", {"template_id": "nope"}, access_token=token
    )
    assert answer["errcode"] == 40037


async def test_template_management_checks_the_token(wechat: WeChatCalls):
    answer = await wechat.get(BASE + "get_all_private_template", access_token="garbage")
    assert answer["errcode"] == 40014


async def test_template_management_refuses_a_mini_program_token_with_48001(
    wechat: WeChatCalls,
):
    mini_token = await wechat.mini_token()
    answer = await wechat.get(BASE + "get_all_private_template", access_token=mini_token)
    assert answer["errcode"] == 48001
