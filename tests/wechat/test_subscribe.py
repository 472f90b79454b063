"""Subscribe notifications (bizsend) and mini-program subscribe messages (subscribe/send):
the model, the wire form and the strict rules of docs/wechat-protocol.md §4 and the
protocol review's part (c)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wxgate.wechat.fields import DataItem, MiniProgram, Problem, TemplateValidationError
from wxgate.wechat.kinds import MessageKind
from wxgate.wechat.subscribe import SubscribeMessage, parse_subscribe

BIZSEND = MessageKind.SUBSCRIBE
MINI = MessageKind.MINIPROGRAM


def body_with(**fields: Any) -> dict[str, Any]:
    """A valid body of either kind with `fields` replaced (None removes a field)."""
    body: dict[str, Any] = {
        "touser": "oUSER_OPENID_0001",
        "template_id": "bDmywsp2oEHjwAadTGKkUHpC0RgBVPvfAOOkK4ZCQ8Y",
        "data": {"thing1": {"value": "订单已发货"}, "time2": {"value": "2024-06-01 10:00"}},
    }
    body.update(fields)
    return {name: value for name, value in body.items() if value is not None}


def problems_of(body: object, kind: MessageKind, **options: Any) -> list[Problem]:
    with pytest.raises(TemplateValidationError) as caught:
        parse_subscribe(body, kind, **options)  # type: ignore[arg-type]
    return caught.value.problems


@pytest.mark.parametrize("kind", [BIZSEND, MINI])
def test_a_minimal_body_parses_for_both_kinds(kind: MessageKind) -> None:
    message, warnings = parse_subscribe(body_with(), kind)
    assert message.data == {
        "thing1": DataItem("订单已发货"),
        "time2": DataItem("2024-06-01 10:00"),
    }
    assert warnings == []


def test_a_bizsend_body_with_page_and_miniprogram_goes_to_the_wire_whole() -> None:
    body = body_with(
        page="https://example.com/orders/1",
        miniprogram={"appid": "wx1234567890abcdef", "pagepath": "pages/order?id=1"},
    )
    message, _ = parse_subscribe(body, BIZSEND)
    assert message.miniprogram == MiniProgram("wx1234567890abcdef", "pages/order?id=1")
    assert message.to_wechat() == body


def test_a_subscribe_send_body_with_page_state_and_lang_goes_to_the_wire_whole() -> None:
    body = body_with(page="index?foo=bar", miniprogram_state="trial", lang="en_US")
    message, _ = parse_subscribe(body, MINI)
    assert (message.page, message.miniprogram_state, message.lang) == (
        "index?foo=bar",
        "trial",
        "en_US",
    )
    assert message.to_wechat() == body


@pytest.mark.parametrize(
    ("kind", "field", "value"),
    [
        (BIZSEND, "miniprogram_state", "formal"),
        (BIZSEND, "lang", "zh_CN"),
        (MINI, "miniprogram", {"appid": "wx1", "pagepath": "index"}),
        (BIZSEND, "url", "https://example.com/"),
        (MINI, "url", "https://example.com/"),
        (BIZSEND, "client_msg_id", "m-1"),
        (MINI, "client_msg_id", "m-1"),
    ],
)
def test_a_field_of_another_kind_is_an_error_naming_the_field(
    kind: MessageKind, field: str, value: object
) -> None:
    [problem] = problems_of(body_with(**{field: value}), kind)
    assert problem.loc == (field,)
    assert problem.msg.startswith(f"{field}: not a field of {kind} messages")


def test_fields_no_kind_knows_are_ignored_like_the_intake_envelope() -> None:
    message, _ = parse_subscribe(body_with(app="shop", idempotency_key="k-1"), MINI)
    assert "app" not in message.to_wechat()


@pytest.mark.parametrize("key", ["first", "remark"])
def test_first_and_remark_are_errors_not_warnings(key: str) -> None:
    data = {key: {"value": "尊敬的用户"}, "thing1": {"value": "x"}}
    [problem] = problems_of(body_with(data=data), BIZSEND)
    assert problem.loc == ("data", key)
    assert "no first or remark" in problem.msg


def test_a_colour_is_an_error_naming_the_color_field() -> None:
    data = {"thing1": {"value": "x", "color": "#173177"}}
    [problem] = problems_of(body_with(data=data), MINI)
    assert problem.loc == ("data", "thing1", "color")
    assert "no colour" in problem.msg


@pytest.mark.parametrize("item", [{}, {"value": None}, {"value": 3}, "bare"])
def test_every_key_must_carry_a_string_value(item: object) -> None:
    [problem] = problems_of(body_with(data={"thing1": item}), BIZSEND)
    assert problem.loc[:2] == ("data", "thing1")


@pytest.mark.parametrize("key", ["thing1", "short_thing2", "number3"])
def test_an_empty_value_is_an_error_for_every_key_but_const(key: str) -> None:
    [problem] = problems_of(body_with(data={key: {"value": ""}}), MINI)
    assert problem == Problem(("data", key, "value"), f"{key}: must not be empty")
    parse_subscribe(body_with(data={"const1": {"value": ""}}), MINI)


# ---------------------------------------------------------------------------
# The strict typed rules: WeChat answers 47003, it does not truncate.

STRICT_CASES = [
    ("thing1", "一" * 20, "一" * 21, "at most 20 characters (got 21)"),
    ("number2", "1" * 32, "1" * 33, "at most 32 digits (got 33)"),
    ("letter3", "a" * 32, "a" * 33, "at most 32 characters (got 33)"),
    ("symbol4", "%%%%%", "%%%%%%", "at most 5 characters (got 6)"),
    ("character_string5", "A" * 32, "A" * 33, "at most 32 characters (got 33)"),
    ("phrase6", "配送中", "配送中了吗啊", "at most 5 characters (got 6)"),
    ("name7", "欧阳娜娜", "欧阳" * 5 + "a", "at most 10 characters when it contains Chinese"),
    ("name7", "A" * 20, "A" * 21, "at most 20 characters (got 21)"),
    ("amount8", "¥1234567890.5元", "¥12345678901", "at most 10 digits before the decimal point"),
    ("phone_number9", "+86-0766-66888866", "1" * 18, "at most 17 characters (got 18)"),
    ("car_number10", "粤A8Z888挂", "粤A8Z8888挂", "at most 8 characters (got 9)"),
    ("date11", "2018-01", "2018-13", "a date"),
    ("date11", "2019年10月1日 15:01", "昨天", "a date"),
    ("time12", "15:01~16:00", "3pm", "24-hour time"),
    ("const13", "已支付", "x" * 21, "at most 20 characters (got 21)"),
    ("thing14", "第一行", "第一行\n第二行", "no line breaks allowed"),
]


@pytest.mark.parametrize(("key", "good", "bad", "words"), STRICT_CASES)
@pytest.mark.parametrize("kind", [BIZSEND, MINI])
def test_a_typed_value_within_its_rule_is_accepted(
    kind: MessageKind, key: str, good: str, bad: str, words: str
) -> None:
    message, _ = parse_subscribe(body_with(data={key: {"value": good}}), kind)
    assert message.data[key].value == good


@pytest.mark.parametrize(("key", "good", "bad", "words"), STRICT_CASES)
@pytest.mark.parametrize("kind", [BIZSEND, MINI])
def test_a_typed_value_breaking_its_rule_is_an_error_naming_field_and_rule(
    kind: MessageKind, key: str, good: str, bad: str, words: str
) -> None:
    [problem] = problems_of(body_with(data={key: {"value": bad}}), kind)
    assert problem.loc == ("data", key, "value")
    assert problem.msg.startswith(f"{key}: ") and words in problem.msg


def test_an_enum_takes_only_a_value_the_template_allows_when_the_values_are_known() -> None:
    allowed = {"enum_string2": ["客厅", "保姆房"], "enum3": ["A", "B"]}
    data = {"enum_string2": {"value": "厨房"}, "enum3": {"value": "A"}}
    [problem] = problems_of(body_with(data=data), MINI, enum_values=allowed)
    assert problem.loc == ("data", "enum_string2", "value")
    assert problem.msg == "enum_string2: must be one of the template's values (客厅, 保姆房)"


def test_an_enum_without_known_values_is_left_to_wechat() -> None:
    message, _ = parse_subscribe(body_with(data={"enum1": {"value": "任意"}}), BIZSEND)
    assert message.data["enum1"].value == "任意"


def test_a_key_of_an_unknown_type_is_a_warning_that_wechat_will_judge_it() -> None:
    _, warnings = parse_subscribe(body_with(data={"short_thing1": {"value": "x"}}), MINI)
    assert warnings == [
        Problem(
            ("data", "short_thing1"),
            "short_thing1: no rule is known for this key's type; WeChat will judge it",
        )
    ]


@pytest.mark.parametrize(
    ("kind", "fields", "loc", "words"),
    [
        (MINI, {"miniprogram_state": "beta"}, ("miniprogram_state",), "developer, trial"),
        (MINI, {"lang": "fr_FR"}, ("lang",), "zh_CN, en_US, zh_HK, zh_TW"),
        (MINI, {"page": "a\nb"}, ("page",), "no line breaks"),
        (BIZSEND, {"page": "/orders/1"}, ("page",), "absolute http(s) URL"),
        (BIZSEND, {"miniprogram": {"pagepath": "i"}}, ("miniprogram", "appid"), "required"),
        (BIZSEND, {"touser": ""}, ("touser",), "must not be empty"),
        (MINI, {"template_id": None}, ("template_id",), "required"),
    ],
)
def test_field_rules_name_the_field(
    kind: MessageKind, fields: dict[str, Any], loc: tuple[str, ...], words: str
) -> None:
    [problem] = problems_of(body_with(**fields), kind)
    assert problem.loc == loc and words in problem.msg


def test_all_problems_are_reported_at_once() -> None:
    body = body_with(
        touser="",
        lang="xx",
        url="https://example.com",
        data={"thing1": {"value": "x" * 21}, "remark": {"value": "r"}},
    )
    assert {p.loc for p in problems_of(body, MINI)} == {
        ("touser",),
        ("lang",),
        ("url",),
        ("data", "thing1", "value"),
        ("data", "remark"),
    }


def test_template_is_not_a_subscribe_kind() -> None:
    with pytest.raises(ValueError, match="not a subscribe kind"):
        parse_subscribe(body_with(), MessageKind.TEMPLATE)


def test_from_wechat_reads_back_what_to_wechat_wrote_for_each_kind() -> None:
    for kind, extra in (
        (BIZSEND, {"miniprogram": {"appid": "wx1"}, "page": "https://example.com/"}),
        (MINI, {"miniprogram_state": "developer", "lang": "zh_TW", "page": "index"}),
    ):
        message, _ = parse_subscribe(body_with(**extra), kind)
        wire = orjson.loads(orjson.dumps(message.to_wechat()))
        assert SubscribeMessage.from_wechat(wire, kind) == message


def test_from_wechat_does_not_reapply_content_rules() -> None:
    stored = body_with(data={"thing1": {"value": "x" * 30}})
    assert SubscribeMessage.from_wechat(stored, MINI).data["thing1"].value == "x" * 30


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=25),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3)
    ),
    max_leaves=10,
)
_FIELDS = ["touser", "template_id", "data", "page", "miniprogram", "miniprogram_state", "lang"]


@settings(max_examples=200, deadline=None)
@given(body=_json | st.dictionaries(st.sampled_from(_FIELDS), _json), mini=st.booleans())
def test_arbitrary_json_raises_nothing_but_template_validation_error(body: Any, mini: bool) -> None:
    kind = MINI if mini else BIZSEND
    for read in (parse_subscribe, SubscribeMessage.from_wechat):
        try:
            read(body, kind)
        except TemplateValidationError as exc:
            assert exc.problems and all(problem.msg for problem in exc.problems)
