"""Reading a template's keys from its content, and checking a message's data against them
(docs/wechat-protocol.md §2.1, §4.1)."""

from __future__ import annotations

import pytest

from wxgate.wechat.fields import Problem, TemplateValidationError
from wxgate.wechat.kinds import MessageKind
from wxgate.wechat.subscribe import parse_subscribe
from wxgate.wechat.template_content import (
    TemplateKey,
    data_key_problems,
    enum_values_of,
    subscribe_template_keys,
    template_keys,
)

# get_all_private_template content: a legacy template and a category template.
LEGACY = "{{first.DATA}}\n订单号：{{keyword1.DATA}}\n金额：{{keyword2.DATA}}\n{{remark.DATA}}"
CATEGORY = "商品名称:{{thing3.DATA}}\n支付金额:{{amount1.DATA}}\n下单时间:{{time4.DATA}}"
# gettemplate content and its keywordEnumValueList.
SUBSCRIBE = "房间:{{enum_string2.DATA}}\n预约时间:{{date1.DATA}}\n备注:{{thing3.DATA}}"
ENUMS = [{"keywordCode": "enum_string2.DATA", "enumValueList": ["客厅", "保姆房", "其他房间"]}]


def test_a_legacy_template_has_untyped_keys_in_order() -> None:
    keys = template_keys(LEGACY)
    assert keys == [
        TemplateKey("first", None),
        TemplateKey("keyword1", None),
        TemplateKey("keyword2", None),
        TemplateKey("remark", None),
    ]
    assert [key.legacy_keyword for key in keys] == [False, True, True, False]


def test_a_category_template_has_typed_keys() -> None:
    assert template_keys(CATEGORY) == [
        TemplateKey("thing3", "thing"),
        TemplateKey("amount1", "amount"),
        TemplateKey("time4", "time"),
    ]


def test_a_key_named_twice_is_listed_once_and_odd_braces_are_not_keys() -> None:
    content = "{{thing1.DATA}} {{ thing1.DATA }} {{thing2}} {thing3.DATA} {{4x.DATA}}"
    assert template_keys(content) == [TemplateKey("thing1", "thing")]


def test_a_subscribe_template_takes_its_enum_values_from_keyword_enum_value_list() -> None:
    keys = subscribe_template_keys(SUBSCRIBE, ENUMS)
    assert keys[0] == TemplateKey("enum_string2", "enum_string", ("客厅", "保姆房", "其他房间"))
    assert keys[1:] == [TemplateKey("date1", "date"), TemplateKey("thing3", "thing")]
    assert enum_values_of(keys) == {"enum_string2": ("客厅", "保姆房", "其他房间")}


def test_a_malformed_keyword_enum_value_list_is_skipped_not_fatal() -> None:
    odd = [5, {"keywordCode": 3}, {"keywordCode": "enum_string2.DATA", "enumValueList": "x"}]
    for junk in (None, "x", {"a": 1}, odd):
        assert enum_values_of(subscribe_template_keys(SUBSCRIBE, junk)) == {}


def test_enum_values_from_the_template_reach_the_subscribe_rules() -> None:
    keys = subscribe_template_keys(SUBSCRIBE, ENUMS)
    body = {
        "touser": "oU",
        "template_id": "T",
        "data": {
            "enum_string2": {"value": "厨房"},
            "date1": {"value": "2024-06-01"},
            "thing3": {"value": "x"},
        },
    }
    with pytest.raises(TemplateValidationError, match="enum_string2: must be one of the"):
        parse_subscribe(body, MessageKind.MINIPROGRAM, enum_values=enum_values_of(keys))


def test_data_that_fits_its_template_has_no_problems() -> None:
    keys = template_keys(CATEGORY)
    assert data_key_problems(["time4", "thing3", "amount1"], keys, MessageKind.TEMPLATE) == []


def test_a_missing_key_and_an_unknown_key_are_named_at_their_data_path() -> None:
    keys = template_keys(CATEGORY)
    problems = data_key_problems(["thing3", "time4", "thing9"], keys, MessageKind.SUBSCRIBE)
    assert problems == [
        Problem(("data", "amount1"), "amount1: the template has this key; give it a value"),
        Problem(
            ("data", "thing9"),
            "thing9: the template has no such key (its keys: thing3, amount1, time4)",
        ),
    ]


def test_a_template_message_may_leave_out_first_and_remark_but_not_a_keyword() -> None:
    keys = template_keys(LEGACY)
    assert data_key_problems(["keyword1", "keyword2"], keys, MessageKind.TEMPLATE) == []
    [problem] = data_key_problems(["keyword1"], keys, MessageKind.TEMPLATE)
    assert problem.loc == ("data", "keyword2")


def test_a_subscribe_message_must_fill_every_key_of_its_template() -> None:
    keys = template_keys("{{first.DATA}}{{thing1.DATA}}")
    [problem] = data_key_problems(["thing1"], keys, MessageKind.MINIPROGRAM)
    assert problem.loc == ("data", "first")
