"""The template message model and WeChat's content rules (docs/wechat-protocol.md §2.1–2.3)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wxgate.wechat.kinds import MessageKind
from wxgate.wechat.template import (
    DataItem,
    MiniProgram,
    Problem,
    TemplateMessage,
    TemplateValidationError,
    parse,
    typed_value_problem,
)


def body_with(**fields: Any) -> dict[str, Any]:
    """A valid body with `fields` replaced (a value of None removes the field)."""
    body: dict[str, Any] = {
        "touser": "oUSER_OPENID_0001",
        "template_id": "Doclyl5uP7Aciu-qZ7mJNPtWkbkYnWBWVja26EGbNyk",
        "data": {"thing1": {"value": "订单已发货"}},
    }
    body.update(fields)
    return {name: value for name, value in body.items() if value is not None}


def body_with_value(key: str, value: object) -> dict[str, Any]:
    return body_with(data={key: {"value": value}})


def problems_of(body: object) -> list[Problem]:
    with pytest.raises(TemplateValidationError) as caught:
        parse(body)  # type: ignore[arg-type]
    return caught.value.problems


def locs_of(body: object) -> set[tuple[str | int, ...]]:
    return {problem.loc for problem in problems_of(body)}


# ---------------------------------------------------------------------------
# Typed keyword prefixes (§2.3): a valid example, and a value that breaks the rule.

TYPED_CASES = [
    # key, a value WeChat accepts, a value it refuses, words the error must contain
    ("thing3", "您的订单已发货，请注意查收", "一" * 21, "at most 20 characters (got 21)"),
    ("number2", "-1234.56", "1" * 33, "at most 32 digits (got 33)"),
    ("number2", "42", "1e5", "only digits"),
    ("letter1", "ABCdef", "abc1", "only ASCII letters"),
    ("letter1", "a" * 32, "a" * 33, "at most 32 characters (got 33)"),
    ("symbol4", "+-*/", "+-*/%^", "at most 5 characters (got 6)"),
    ("symbol4", "!", "a!", "only symbols"),
    ("character_string12", "ORD-2024/0001 #7", "订单2024", "no Chinese"),
    ("character_string12", "A" * 32, "A" * 33, "at most 32 characters (got 33)"),
    ("time4", "15:01", "25:01", "24-hour time"),
    ("time4", "2019年10月1日 15:01", "2019年10月1日", "24-hour time"),
    ("time4", "2019-10-01 15:01", "下午三点", "24-hour time"),
    ("time4", "15:01~16:00", "15:01~", "24-hour time"),
    ("date5", "2019年10月1日", "15:01", "a date"),
    ("date5", "2019-10-01 15:01~2019-10-02 16:00", "2019-13-01", "a date"),
    ("date5", "2018-01", "2018-1-", "a date"),
    ("date5", "01-01", "13-01", "a date"),
    ("date5", "2018年1月", "2018年", "a date"),
    ("date5", "1月1日", "1月32日", "a date"),
    ("date5", "2018-01 15:01", "2018-01 25:01", "a date"),
    ("date5", "2019年10月1日 15:01~16:00", "2019年10月1日~", "a date"),
    ("time4", "2018-01 15:01", "2018-01", "24-hour time"),
    ("time4", "1月1日 08:00:59", "8点", "24-hour time"),
    (
        "amount6",
        "¥123456789012.5",
        "¥1234567890123",
        "at most 12 digits before the decimal point (got 13)",
    ),
    ("amount6", "100元", "¥1,000", "currency"),
    ("amount6", "USD 9.99", "¥¥5", "currency"),
    ("phone_number7", "+86-0766-66888866", "+86-0766-668888661", "at most 17 characters (got 18)"),
    ("phone_number7", "(0755) 8888 8888", "call 8888", "only digits"),
    ("car_number8", "粤B12345", "粤B1234567", "at most 8 characters (got 9)"),
    ("car_number8", "粤B1234学", "粤学B1234", "only the first and last may be Chinese"),
    (
        "name9",
        "欧阳娜娜",
        "欧阳" * 5 + "a",
        "at most 10 characters when it contains Chinese (got 11)",
    ),
    ("name9", "Alexander-Hamilton", "A" * 21, "at most 20 characters (got 21)"),
    ("phrase10", "已发货", "已经发货了吧", "at most 5 characters (got 6)"),
    ("phrase10", "进行中", "done", "only Chinese characters"),
    ("const11", "已支付", "x" * 21, "at most 20 characters (got 21)"),
]


@pytest.mark.parametrize(("key", "good", "bad", "words"), TYPED_CASES)
def test_typed_key_accepts_a_valid_value(key: str, good: str, bad: str, words: str) -> None:
    message, warnings = parse(body_with_value(key, good))
    assert message.data[key].value == good
    assert warnings == []
    assert typed_value_problem(key, good) is None


@pytest.mark.parametrize(("key", "good", "bad", "words"), TYPED_CASES)
def test_typed_key_rejects_a_value_that_breaks_its_rule_naming_the_field(
    key: str, good: str, bad: str, words: str
) -> None:
    [problem] = problems_of(body_with_value(key, bad))
    assert problem.loc == ("data", key, "value")
    assert problem.msg.startswith(f"{key}: ")
    assert words in problem.msg


def test_typed_value_problem_names_the_key_rule_and_limit() -> None:
    assert typed_value_problem("thing3", "一" * 23) == "thing3: at most 20 characters (got 23)"


def test_typed_values_must_not_be_empty() -> None:
    assert typed_value_problem("thing1", "") == "thing1: must not be empty"
    [problem] = problems_of(body_with_value("amount2", ""))
    assert problem.loc == ("data", "amount2", "value")


def test_an_empty_const_is_allowed_as_wechat_sends_the_empty_string() -> None:
    # "只能下发审核通过的字符串和空串" (protocol review row 6)
    assert typed_value_problem("const1", "") is None
    message, warnings = parse(body_with_value("const1", ""))
    assert message.data["const1"].value == "" and warnings == []


def test_amount_has_12_digits_in_a_template_message_and_10_in_subscribe_kinds() -> None:
    twelve = "¥123456789012"
    assert typed_value_problem("amount1", twelve) is None
    for kind in (MessageKind.SUBSCRIBE, MessageKind.MINIPROGRAM):
        assert typed_value_problem("amount1", twelve, kind=kind) == (
            "amount1: at most 10 digits before the decimal point (got 12)"
        )
        assert typed_value_problem("amount1", "¥1234567890元", kind=kind) is None


@pytest.mark.parametrize("line_break", ["\n", "\u2028"])
def test_a_line_break_in_a_typed_value_breaks_its_rule(line_break: str) -> None:
    # Typed keys are strict: "不能带有换行等控制字符" (docs/wechat-protocol.md §2.3).
    assert typed_value_problem("thing1", f"a{line_break}b") == "thing1: no line breaks allowed"
    [problem] = problems_of(body_with_value("thing1", f"a{line_break}b"))
    assert problem.msg == "thing1: no line breaks allowed"


def test_enum_values_are_checked_only_against_the_values_given() -> None:
    assert typed_value_problem("enum_string2", "客厅") is None
    allowed = ["客厅", "保姆房"]
    assert typed_value_problem("enum_string2", "客厅,保姆房", allowed=allowed) is None
    problem = typed_value_problem("enum_string2", "厨房", allowed=allowed)
    assert problem == "enum_string2: must be one of the template's values (客厅, 保姆房)"


@pytest.mark.parametrize("key", ["short_thing1", "detail3", "Thing3", "thing", "keyword1"])
def test_keys_without_a_typed_prefix_have_no_typed_rule(key: str) -> None:
    assert typed_value_problem(key, "x" * 100) is None


def test_typed_prefix_is_matched_whole_so_short_thing_is_not_thing() -> None:
    parse(body_with_value("short_thing1", "x" * 30))
    assert problems_of(body_with_value("thing1", "x" * 30))


# ---------------------------------------------------------------------------
# Untyped values, plain keywordN, control characters. WeChat folds or cuts a legacy
# keyword over 20 characters or with line breaks, and the send succeeds (protocol
# review rows 2-3), so these are warnings, never errors.


def test_plain_keyword_value_over_20_characters_is_a_warning_not_an_error() -> None:
    assert parse(body_with_value("keyword1", "x" * 20))[1] == []
    message, warnings = parse(body_with_value("keyword1", "x" * 21))
    assert message.data["keyword1"].value == "x" * 21
    assert warnings == [
        Problem(
            ("data", "keyword1", "value"),
            "keyword1: WeChat shows at most 20 characters of a keyword and cuts the rest (got 21)",
        )
    ]


@pytest.mark.parametrize("line_break", ["\n", "\r\n", "\u2028", "\u2029"])
@pytest.mark.parametrize("key", ["keyword2", "detail1", "first"])
def test_a_line_break_in_an_untyped_value_is_a_warning_not_an_error(
    line_break: str, key: str
) -> None:
    message, warnings = parse(body_with_value(key, f"第一行{line_break}第二行"))
    assert message.data[key].value == f"第一行{line_break}第二行"
    folded = Problem(
        ("data", key, "value"), f"{key}: WeChat does not show line breaks; it folds them"
    )
    assert folded in warnings


def test_typed_values_get_no_folding_warning_only_errors() -> None:
    [problem] = problems_of(body_with_value("thing1", "x" * 21))
    assert problem.msg == "thing1: at most 20 characters (got 21)"


def test_untyped_value_may_be_200_characters_but_not_more() -> None:
    parse(body_with_value("detail1", "x" * 200))
    [problem] = problems_of(body_with_value("detail1", "x" * 201))
    assert problem.msg == "detail1: at most 200 characters (got 201)"


@pytest.mark.parametrize(
    "char", ["\x00", "\x07", "\t", "\x1b", "\x1f", "\x7f", "\x80", "\x9b", "\x9f"]
)
def test_control_character_in_any_value_is_rejected(char: str) -> None:
    [problem] = problems_of(body_with_value("detail1", f"a{char}b"))
    assert problem.loc == ("data", "detail1", "value")
    assert f"U+{ord(char):04X}" in problem.msg


def test_c1_next_line_is_a_line_break_like_newline() -> None:
    # U+0085 (NEL) breaks a line as "\n" does: refused in a typed key, as a line break.
    problems = problems_of(body_with_value("thing1", "a\x85b"))
    assert [p.msg for p in problems] == ["thing1: no line breaks allowed"]


def test_c1_characters_are_refused_in_an_openid() -> None:
    problems = problems_of({**body_with_value("thing1", "ok"), "touser": "o\x9bX"})
    assert [p.loc for p in problems] == [("touser",)]


def test_control_character_and_length_are_both_reported() -> None:
    problems = problems_of(body_with_value("thing1", "\x07" * 21))
    assert [p.msg for p in problems] == [
        "thing1: no control characters allowed (found U+0007)",
        "thing1: at most 20 characters (got 21)",
    ]


# ---------------------------------------------------------------------------
# Required fields, JSON types, data shape.


def test_missing_required_fields_are_all_reported_at_once() -> None:
    problems = problems_of({})
    assert [(p.loc, p.msg) for p in problems] == [
        (("touser",), "touser: required"),
        (("template_id",), "template_id: required"),
        (("data",), "data: required"),
    ]


def test_problems_in_different_fields_are_all_reported_at_once() -> None:
    body = body_with(
        touser="has space",
        template_id="",
        data={"thing1": {"value": "x" * 21}, "letter2": {"value": "12"}},
        url="ftp://example.com/",
    )
    assert locs_of(body) == {
        ("touser",),
        ("template_id",),
        ("data", "thing1", "value"),
        ("data", "letter2", "value"),
        ("url",),
    }


@pytest.mark.parametrize(
    ("fields", "loc", "msg"),
    [
        ({"touser": 123}, ("touser",), "touser: must be a string (got number)"),
        ({"template_id": ["t"]}, ("template_id",), "template_id: must be a string (got array)"),
        ({"data": ["thing1"]}, ("data",), "data: must be an object (got array)"),
        ({"data": "x"}, ("data",), "data: must be an object (got string)"),
        ({"url": 5}, ("url",), "url: must be a string (got number)"),
        ({"miniprogram": "wx1"}, ("miniprogram",), "miniprogram: must be an object (got string)"),
        ({"client_msg_id": 7}, ("client_msg_id",), "client_msg_id: must be a string (got number)"),
    ],
)
def test_wrong_json_type_of_a_field_is_named(
    fields: dict[str, Any], loc: tuple[str, ...], msg: str
) -> None:
    [problem] = problems_of(body_with(**fields))
    assert (problem.loc, problem.msg) == (loc, msg)


@pytest.mark.parametrize(
    ("value", "json_type"),
    [(12, "number"), (1.5, "number"), (True, "boolean"), (None, "null"), ({}, "object")],
)
def test_data_value_that_is_not_a_string_is_rejected_naming_its_type(
    value: object, json_type: str
) -> None:
    [problem] = problems_of(body_with_value("thing1", value))
    assert problem.loc == ("data", "thing1", "value")
    assert problem.msg == f"thing1.value: must be a string (got {json_type})"


def test_data_item_without_value_is_rejected() -> None:
    [problem] = problems_of(body_with(data={"thing1": {"color": "#FF0000"}}))
    assert (problem.loc, problem.msg) == (("data", "thing1", "value"), "thing1.value: required")


def test_data_item_that_is_a_bare_string_is_rejected() -> None:
    [problem] = problems_of(body_with(data={"thing1": "订单已发货"}))
    assert problem.loc == ("data", "thing1")
    assert "must be an object" in problem.msg


def test_unknown_data_item_field_is_rejected() -> None:
    [problem] = problems_of(body_with(data={"thing1": {"value": "x", "colour": "#FF0000"}}))
    assert problem.loc == ("data", "thing1", "colour")
    assert "unknown field 'colour'" in problem.msg


def test_empty_data_is_rejected() -> None:
    [problem] = problems_of(body_with(data={}))
    assert problem.loc == ("data",)


def test_data_may_have_32_keys_but_not_33() -> None:
    parse(body_with(data={f"keyword{i}": {"value": "x"} for i in range(32)}))
    [problem] = problems_of(body_with(data={f"keyword{i}": {"value": "x"} for i in range(33)}))
    assert problem.msg == "data: at most 32 keys (got 33)"


@pytest.mark.parametrize("key", ["1thing", "thing-1", "thing 1", "_x", "", "k" * 65])
def test_malformed_data_key_is_rejected(key: str) -> None:
    assert ("data", key) in locs_of(body_with(data={key: {"value": "x"}}))


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("touser", "", "must not be empty"),
        ("touser", "o" * 129, "at most 128 characters (got 129)"),
        ("touser", "oUSER\tOPENID", "no whitespace"),
        ("touser", "oUSER\u3000OPENID", "no whitespace"),
        ("template_id", "tpl id", "no whitespace"),
        ("template_id", "t" * 129, "at most 128 characters (got 129)"),
    ],
)
def test_recipient_and_template_ids_are_checked(field: str, value: str, words: str) -> None:
    [problem] = problems_of(body_with(**{field: value}))
    assert problem.loc == (field,)
    assert words in problem.msg


def test_body_that_is_not_an_object_is_one_problem() -> None:
    assert problems_of([1, 2]) == [Problem((), "the body must be a JSON object (got array)")]


def test_top_level_fields_template_send_does_not_know_are_ignored() -> None:
    message, warnings = parse(body_with(app="shop", idempotency_key="k-1"))
    assert "app" not in message.to_wechat()
    assert warnings == []


def test_validation_error_is_a_value_error_listing_every_message() -> None:
    with pytest.raises(ValueError, match=r"touser: required; template_id: required"):
        parse({"data": {"thing1": {"value": "x"}}})


# ---------------------------------------------------------------------------
# url, miniprogram, client_msg_id.


@pytest.mark.parametrize(
    "url",
    ["https://example.com/orders/1?from=wx#top", "http://example.com", "HTTPS://Example.COM/"],
)
def test_absolute_http_url_is_accepted(url: str) -> None:
    message, _ = parse(body_with(url=url))
    assert message.to_wechat()["url"] == url


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/file",
        "/orders/1",
        "example.com/orders",
        "https://",
        "https://exa mple.com/",
        "http://[::1",
        "javascript:alert(1)",
    ],
)
def test_url_that_is_not_an_absolute_http_url_is_rejected(url: str) -> None:
    assert locs_of(body_with(url=url)) == {("url",)}


def test_url_may_be_1024_characters_but_not_more() -> None:
    base = "https://example.com/"
    parse(body_with(url=base + "a" * (1024 - len(base))))
    [problem] = problems_of(body_with(url=base + "a" * (1025 - len(base))))
    assert problem.msg == "url: at most 1024 characters (got 1025)"


def test_empty_url_means_no_link() -> None:
    message, _ = parse(body_with(url=""))
    assert message.url is None
    assert "url" not in message.to_wechat()


def test_miniprogram_with_appid_and_pagepath_is_accepted() -> None:
    mini = {"appid": "wx1234567890abcdef", "pagepath": "pages/order/detail?id=1"}
    message, _ = parse(body_with(miniprogram=mini))
    assert message.miniprogram == MiniProgram("wx1234567890abcdef", "pages/order/detail?id=1")


@pytest.mark.parametrize("pagepath", [None, ""])
def test_miniprogram_pagepath_is_optional(pagepath: str | None) -> None:
    # The current template/send doc marks pagepath "否" (protocol review row 7).
    mini: dict[str, Any] = {"appid": "wx1234567890abcdef"}
    if pagepath is not None:
        mini["pagepath"] = pagepath
    message, _ = parse(body_with(miniprogram=mini))
    assert message.miniprogram == MiniProgram("wx1234567890abcdef")
    assert message.to_wechat()["miniprogram"] == {"appid": "wx1234567890abcdef"}


def test_miniprogram_appid_of_an_unusual_shape_is_accepted() -> None:
    parse(body_with(miniprogram={"appid": "wxOLDSTYLE", "pagepath": "index"}))


@pytest.mark.parametrize(
    ("mini", "loc", "words"),
    [
        ({"pagepath": "index"}, ("miniprogram", "appid"), "required"),
        ({"appid": "", "pagepath": "index"}, ("miniprogram", "appid"), "must not be empty"),
        ({"appid": "wx1", "pagepath": "p" * 513}, ("miniprogram", "pagepath"), "at most 512"),
        ({"appid": "wx1", "pagepath": "a\nb"}, ("miniprogram", "pagepath"), "no line breaks"),
        ({"appid": "wx1", "pagepath": 3}, ("miniprogram", "pagepath"), "must be a string"),
        ({"appid": "wx1", "pagepath": "i", "path": "i"}, ("miniprogram", "path"), "unknown"),
    ],
)
def test_miniprogram_rules(mini: dict[str, Any], loc: tuple[str, ...], words: str) -> None:
    [problem] = problems_of(body_with(miniprogram=mini))
    assert problem.loc == loc
    assert words in problem.msg


@pytest.mark.parametrize("value", ["", "x" * 65, "订单-1", "a\nb"])
def test_client_msg_id_must_be_1_to_64_printable_ascii(value: str) -> None:
    assert locs_of(body_with(client_msg_id=value)) == {("client_msg_id",)}


def test_client_msg_id_of_64_printable_ascii_is_kept() -> None:
    value = "01J0ABCDEF-" + "x" * 53
    message, _ = parse(body_with(client_msg_id=value))
    assert message.client_msg_id == value


# ---------------------------------------------------------------------------
# Warnings (2023-05-04): reported, never errors.


@pytest.mark.parametrize("key", ["first", "remark"])
def test_first_and_remark_are_warnings_not_errors(key: str) -> None:
    message, warnings = parse(
        body_with(data={key: {"value": "尊敬的用户"}, "thing1": {"value": "x"}})
    )
    assert key in message.data
    assert warnings == [
        Problem(("data", key), f"{key}: WeChat no longer shows first/remark since 2023-05-04")
    ]


def test_colour_is_a_warning_not_an_error() -> None:
    message, warnings = parse(body_with(data={"thing1": {"value": "x", "color": "#173177"}}))
    assert message.data["thing1"].color == "#173177"
    assert warnings == [
        Problem(("data", "thing1", "color"), "thing1.color: colours are ignored since 2023-05-04")
    ]


@pytest.mark.parametrize("color", ["red", "#12345", "#GGGGGG", "173177"])
def test_colour_that_is_not_rrggbb_is_an_error_naming_the_color_field(color: str) -> None:
    [problem] = problems_of(body_with(data={"thing1": {"value": "x", "color": color}}))
    assert problem.loc == ("data", "thing1", "color")
    assert problem.msg == "thing1.color: must look like #RRGGBB"


def test_colour_that_is_not_a_string_is_an_error() -> None:
    [problem] = problems_of(body_with(data={"thing1": {"value": "x", "color": 0x173177}}))
    assert problem.loc == ("data", "thing1", "color")


def test_null_or_empty_colour_means_the_default_and_is_not_sent() -> None:
    data = {"thing1": {"value": "x", "color": None}, "thing2": {"value": "y", "color": ""}}
    message, warnings = parse(body_with(data=data))
    assert message.to_wechat()["data"] == {"thing1": {"value": "x"}, "thing2": {"value": "y"}}
    assert warnings == []


# ---------------------------------------------------------------------------
# The wire form.


def test_to_wechat_leaves_absent_optionals_out() -> None:
    message = TemplateMessage("oUSER", "TPL", {"thing1": DataItem("x")})
    assert message.to_wechat() == {
        "touser": "oUSER",
        "template_id": "TPL",
        "data": {"thing1": {"value": "x"}},
    }


def test_to_wechat_includes_every_optional_that_is_set() -> None:
    message = TemplateMessage(
        "oUSER",
        "TPL",
        {"thing1": DataItem("x", "#FF0000")},
        url="https://example.com/",
        miniprogram=MiniProgram("wx1", "index"),
        client_msg_id="m-1",
    )
    assert message.to_wechat() == {
        "touser": "oUSER",
        "template_id": "TPL",
        "url": "https://example.com/",
        "miniprogram": {"appid": "wx1", "pagepath": "index"},
        "client_msg_id": "m-1",
        "data": {"thing1": {"value": "x", "color": "#FF0000"}},
    }


def test_with_client_msg_id_returns_a_copy_that_sends_it() -> None:
    message, _ = parse(body_with())
    stamped = message.with_client_msg_id("01J0MSGID")
    assert stamped.to_wechat()["client_msg_id"] == "01J0MSGID"
    assert "client_msg_id" not in message.to_wechat()


def test_with_client_msg_id_refuses_an_id_wechat_would_not_take() -> None:
    message, _ = parse(body_with())
    with pytest.raises(TemplateValidationError) as caught:
        message.with_client_msg_id("x" * 65)
    assert caught.value.problems[0].loc == ("client_msg_id",)


def test_from_wechat_reads_back_what_to_wechat_wrote() -> None:
    message, _ = parse(
        body_with(
            url="https://example.com/",
            miniprogram={"appid": "wx1", "pagepath": "index"},
            data={"thing1": {"value": "x", "color": "#FF0000"}, "amount2": {"value": "¥1"}},
        )
    )
    stored = orjson.loads(orjson.dumps(message.with_client_msg_id("m-1").to_wechat()))
    assert TemplateMessage.from_wechat(stored) == message.with_client_msg_id("m-1")


def test_from_wechat_does_not_reapply_content_rules_to_a_stored_body() -> None:
    stored = body_with_value("thing1", "x" * 30)
    assert TemplateMessage.from_wechat(stored).data["thing1"].value == "x" * 30


def test_from_wechat_refuses_a_body_of_the_wrong_shape() -> None:
    with pytest.raises(TemplateValidationError) as caught:
        TemplateMessage.from_wechat({"template_id": "TPL", "data": {"thing1": {"value": 5}}})
    assert {p.loc for p in caught.value.problems} == {("touser",), ("data", "thing1", "value")}


# ---------------------------------------------------------------------------
# Properties.

_printable = st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"))
_TYPED_EXAMPLES = {key.rstrip("0123456789"): good for key, good, _, _ in TYPED_CASES}


@st.composite
def valid_bodies(draw: st.DrawFn) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for index in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from([*_TYPED_EXAMPLES, "keyword", "detail"]))
        if kind in _TYPED_EXAMPLES:
            value = _TYPED_EXAMPLES[kind]
        else:
            value = draw(st.text(_printable, max_size=20 if kind == "keyword" else 200))
        item = {"value": value}
        color = draw(st.none() | st.from_regex(r"#[0-9A-Fa-f]{6}", fullmatch=True))
        if color is not None:
            item["color"] = color
        data[f"{kind}{index}"] = item
    body: dict[str, Any] = {
        "touser": draw(st.from_regex(r"[A-Za-z0-9_-]{1,128}", fullmatch=True)),
        "template_id": draw(st.from_regex(r"[A-Za-z0-9_-]{1,128}", fullmatch=True)),
    }
    if draw(st.booleans()):
        body["url"] = "https://example.com/" + draw(
            st.from_regex(r"[a-z0-9/?=&]{0,40}", fullmatch=True)
        )
    if draw(st.booleans()):
        pagepath = draw(st.text(_printable, min_size=1, max_size=512))
        body["miniprogram"] = {"appid": "wx1234567890abcdef", "pagepath": pagepath}
    if draw(st.booleans()):
        body["client_msg_id"] = draw(st.from_regex(r"[ -~]{1,64}", fullmatch=True))
    body["data"] = data
    return body


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_bodies())
def test_valid_messages_survive_the_round_trip(body: dict[str, Any]) -> None:
    message, _ = parse(body)
    assert message.to_wechat() == body
    wire = orjson.loads(orjson.dumps(message.to_wechat()))
    assert TemplateMessage.from_wechat(wire) == message
    assert parse(wire)[0] == message


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
_FIELDS = ["touser", "template_id", "data", "url", "miniprogram", "client_msg_id"]
_ITEMS = st.dictionaries(
    st.sampled_from(["value", "color", "other"]) | st.text(max_size=5), _json, max_size=3
)
_near_bodies = st.dictionaries(
    st.sampled_from(_FIELDS),
    _json | st.dictionaries(st.sampled_from([*_TYPED_EXAMPLES, "thing1", "first"]), _ITEMS),
)


@settings(max_examples=300, deadline=None)
@given(_json | _near_bodies)
def test_arbitrary_json_raises_nothing_but_template_validation_error(body: Any) -> None:
    for read in (parse, TemplateMessage.from_wechat):
        try:
            read(body)
        except TemplateValidationError as exc:
            assert exc.problems
            assert all(isinstance(problem.msg, str) and problem.msg for problem in exc.problems)
