"""The subscribe template library at the sandbox (/wxaapi/newtmpl/, docs/wechat-protocol.md §4.1):
what each call answers for an official account and a mini program alike."""

from __future__ import annotations

import pytest

from tests.sandbox.helpers import NEWTMPL, WeChatCalls
from wxgate.wechat.template_content import subscribe_template_keys


@pytest.fixture(params=["official_account", "miniprogram"])
async def token(request: pytest.FixtureRequest, wechat: WeChatCalls) -> str:
    if request.param == "miniprogram":
        return await wechat.mini_token()
    return await wechat.token()


async def test_categories_are_listed_with_id_and_name(wechat: WeChatCalls, token: str):
    answer = await wechat.get(NEWTMPL + "getcategory", access_token=token)
    assert answer["errcode"] == 0
    assert {"id": 616, "name": "电商平台"} in answer["data"]


async def test_titles_of_the_asked_categories_are_paged(wechat: WeChatCalls, token: str):
    first = await wechat.get(
        NEWTMPL + "getpubtemplatetitles", access_token=token, ids="616,426", start="0", limit="2"
    )
    assert first["errcode"] == 0
    assert first["count"] == 3
    assert [t["title"] for t in first["data"]] == ["订单发货通知", "付款成功通知"]
    shipped = {"tid": 1001, "title": "订单发货通知", "type": 2, "categoryId": "616"}
    assert first["data"][0] == shipped
    rest = await wechat.get(
        NEWTMPL + "getpubtemplatetitles", access_token=token, ids="616,426", start="2", limit="2"
    )
    assert [(t["title"], t["type"]) for t in rest["data"]] == [("预约提醒", 3)]


async def test_titles_without_ids_are_200018(wechat: WeChatCalls, token: str):
    answer = await wechat.get(
        NEWTMPL + "getpubtemplatetitles", access_token=token, start="0", limit="30"
    )
    assert answer["errcode"] == 200018


@pytest.mark.parametrize(
    ("params", "errcode"),
    [
        ({"ids": "616,x"}, 200019),
        ({"ids": "616", "start": "-1"}, 200016),
        ({"ids": "616", "limit": "31"}, 200017),
        ({"ids": "616", "limit": "0"}, 200017),
    ],
)
async def test_titles_with_bad_paging_or_ids_name_the_parameter(
    wechat: WeChatCalls, token: str, params: dict[str, str], errcode: int
):
    answer = await wechat.get(NEWTMPL + "getpubtemplatetitles", access_token=token, **params)
    assert answer["errcode"] == errcode


async def test_keywords_come_with_their_rule(wechat: WeChatCalls, token: str):
    answer = await wechat.get(NEWTMPL + "getpubtemplatekeywords", access_token=token, tid="1002")
    assert answer["errcode"] == 0
    assert answer["count"] == 4
    amount = {"kid": 2, "name": "支付金额", "example": "¥128.00", "rule": "amount"}
    assert answer["data"][1] == amount


async def test_keywords_of_an_unknown_tid_are_200014(wechat: WeChatCalls, token: str):
    answer = await wechat.get(NEWTMPL + "getpubtemplatekeywords", access_token=token, tid="9")
    assert answer["errcode"] == 200014


async def test_added_template_is_listed_with_placeholders_and_its_enum_values(
    wechat: WeChatCalls, token: str
):
    body = {"tid": "1001", "kidList": [1, 6], "sceneDesc": "发货提醒"}
    added = await wechat.post(NEWTMPL + "addtemplate", body, access_token=token)
    assert added["errcode"] == 0
    listed = await wechat.get(NEWTMPL + "gettemplate", access_token=token)
    assert listed["data"] == [
        {
            "priTmplId": added["priTmplId"],
            "title": "订单发货通知",
            "content": "订单号:{{character_string1.DATA}}\n订单状态:{{enum_string6.DATA}}\n",
            "example": "订单号:XN2024050100123\n订单状态:已发货\n",
            "type": 2,
            "keywordEnumValueList": [
                {
                    "keywordCode": "enum_string6.DATA",
                    "enumValueList": ["待发货", "已发货", "已签收"],
                }
            ],
        }
    ]


async def test_the_gateway_reads_listed_keys_with_their_enum_values(
    wechat: WeChatCalls, token: str
):
    await wechat.add_subscribe_template(token, "1001", [2, 6])
    [template] = (await wechat.get(NEWTMPL + "gettemplate", access_token=token))["data"]
    keys = subscribe_template_keys(template["content"], template["keywordEnumValueList"])
    assert [(key.name, key.type, key.enum_values) for key in keys] == [
        ("thing2", "thing", None),
        ("enum_string6", "enum_string", ("待发货", "已发货", "已签收")),
    ]


async def test_a_template_without_enum_keys_lists_none(wechat: WeChatCalls, token: str):
    await wechat.add_subscribe_template(token, "1003", [1, 2])
    [template] = (await wechat.get(NEWTMPL + "gettemplate", access_token=token))["data"]
    assert template["type"] == 3
    assert "keywordEnumValueList" not in template


async def test_addtemplate_takes_a_form_body_too(wechat: WeChatCalls, token: str):
    form = b"tid=1002&kidList=1&kidList=2&sceneDesc=%E4%BB%98%E6%AC%BE"
    added = await wechat.post(NEWTMPL + "addtemplate", form, access_token=token)
    assert added["errcode"] == 0
    [template] = (await wechat.get(NEWTMPL + "gettemplate", access_token=token))["data"]
    assert template["content"] == "订单号:{{character_string1.DATA}}\n支付金额:{{amount2.DATA}}\n"


@pytest.mark.parametrize(
    ("body", "errcode"),
    [
        ({"tid": "9999", "kidList": [1, 2]}, 200014),
        ({"kidList": [1, 2]}, 200014),
        ({"tid": "1001", "kidList": [1]}, 200020),
        ({"tid": "1001", "kidList": [1, 2, 3, 4, 5, 6]}, 200020),
        ({"tid": "1001", "kidList": [1, 1]}, 200020),
        ({"tid": "1001", "kidList": [1, 99]}, 200020),
        ({"tid": "1001", "kidList": [1, 2], "sceneDesc": "场" * 16}, 200021),
    ],
    ids=["unknown-tid", "no-tid", "one-kid", "six-kids", "repeated-kid", "unknown-kid", "scene"],
)
async def test_addtemplate_refuses_what_the_library_does_not_allow(
    wechat: WeChatCalls, token: str, body: dict, errcode: int
):
    answer = await wechat.post(NEWTMPL + "addtemplate", body, access_token=token)
    assert answer["errcode"] == errcode
    assert (await wechat.get(NEWTMPL + "gettemplate", access_token=token))["data"] == []


async def test_the_51st_template_is_200012(wechat: WeChatCalls, token: str):
    body = {"tid": "1002", "kidList": [1, 2]}
    answers = [
        (await wechat.post(NEWTMPL + "addtemplate", body, access_token=token))["errcode"]
        for _ in range(51)
    ]
    assert answers == [0] * 50 + [200012]


async def test_deleted_template_is_gone(wechat: WeChatCalls, token: str):
    template_id = await wechat.add_subscribe_template(token)
    body = {"priTmplId": template_id}
    assert (await wechat.post(NEWTMPL + "deltemplate", body, access_token=token))["errcode"] == 0
    assert (await wechat.get(NEWTMPL + "gettemplate", access_token=token))["data"] == []
    again = await wechat.post(NEWTMPL + "deltemplate", body, access_token=token)
    assert again["errcode"] == 40037


async def test_addtemplate_must_be_posted(wechat: WeChatCalls, token: str):
    answer = await wechat.get(NEWTMPL + "addtemplate", access_token=token, tid="1001")
    assert answer["errcode"] == 43002


async def test_the_library_checks_the_token(wechat: WeChatCalls):
    answer = await wechat.get(NEWTMPL + "gettemplate", access_token="garbage")
    assert answer["errcode"] == 40014


async def test_each_account_has_its_own_templates(wechat: WeChatCalls):
    official, mini = await wechat.token(), await wechat.mini_token()
    template_id = await wechat.add_subscribe_template(official)
    assert (await wechat.get(NEWTMPL + "gettemplate", access_token=mini))["data"] == []
    listed = await wechat.get(NEWTMPL + "gettemplate", access_token=official)
    assert [t["priTmplId"] for t in listed["data"]] == [template_id]
