"""Template management at the sandbox (docs/wechat-protocol.md §3)."""

from __future__ import annotations

import pytest

from tests.sandbox.helpers import WeChatCalls, message

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


async def test_added_template_is_listed_with_a_new_id(wechat: WeChatCalls, token: str):
    body = {"template_id_short": "TM00015", "keyword_name_list": ["订单号", "金额"]}
    added = await wechat.post(BASE + "api_add_template", body, access_token=token)
    assert added["errcode"] == 0
    template_id = added["template_id"]
    listed = await wechat.get(BASE + "get_all_private_template", access_token=token)
    [template] = listed["template_list"]
    assert template["template_id"] == template_id
    assert "{{keyword2.DATA}}" in template["content"]


async def test_deleted_template_is_gone_and_refused_on_send(wechat: WeChatCalls, token: str):
    body = {"template_id_short": "TM00015"}
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
