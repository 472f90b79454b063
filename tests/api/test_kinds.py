"""`kind` at intake: template (default), subscribe and miniprogram messages, each with its
own fields and WeChat's rules for it, refused naming the field when the app cannot
send the kind or a field belongs to another kind."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import Gateway, GatewayFactory, app_config, make_settings

OA = "shop"
MINI = "mini"
OPENID = "oUSER_0000000000000000001"


def subscribe_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "app": OA,
        "kind": "subscribe",
        "touser": OPENID,
        "template_id": "PRI_order_shipped",
        "page": "https://shop.example.com/orders/1",
        "data": {
            "thing1": {"value": "蓝色保温杯"},
            "character_string2": {"value": "SO2024000123"},
            "time3": {"value": "2024-06-01 15:01"},
        },
    }
    body.update(overrides)
    return body


def mini_body(**overrides: Any) -> dict[str, Any]:
    body = subscribe_body(app=MINI, kind="miniprogram", page="pages/order?id=1")
    body.update(miniprogram_state="formal", lang="zh_CN")
    body.update(overrides)
    return body


@pytest.fixture(params=["sqlite", "redis"])
async def kinds_gateway(request: pytest.FixtureRequest, gateway_factory: GatewayFactory) -> Gateway:
    apps = {
        OA: app_config("wx00000000000000a1"),
        MINI: app_config("wx00000000000000c3", kind="miniprogram"),
    }
    return await gateway_factory(make_settings(apps), engine=request.param)


def locs(body: dict[str, Any]) -> list[list[Any]]:
    return [error["loc"] for error in body["data"]["errors"]]


async def test_a_subscribe_notification_is_stored_with_its_kind(kinds_gateway: Gateway):
    status, body, _ = await kinds_gateway.post("/v1/messages", json=subscribe_body())
    assert status == 202, body
    record = await kinds_gateway.backend.get(body["data"]["id"])
    assert record is not None
    assert record.kind == "subscribe"
    assert record.payload["page"] == "https://shop.example.com/orders/1"
    assert "kind" not in record.payload
    _, shown, _ = await kinds_gateway.get(f"/v1/messages/{record.id}")
    assert shown["data"]["kind"] == "subscribe"
    labels = {"app": OA, "kind": "subscribe", "outcome": "accepted"}
    registry = kinds_gateway.metrics.registry
    assert registry.get_sample_value("wxgate_messages_by_kind_total", labels) == 1


async def test_a_mini_program_message_is_stored_with_its_state_and_lang(kinds_gateway: Gateway):
    status, body, _ = await kinds_gateway.post("/v1/messages", json=mini_body())
    assert status == 202, body
    record = await kinds_gateway.backend.get(body["data"]["id"])
    assert record is not None
    assert record.kind == "miniprogram"
    assert (record.payload["miniprogram_state"], record.payload["lang"]) == ("formal", "zh_CN")
    _, listed, _ = await kinds_gateway.get(f"/v1/messages?app={MINI}")
    assert [item["kind"] for item in listed["data"]["items"]] == ["miniprogram"]


async def test_a_kind_the_app_cannot_send_is_refused_at_kind(kinds_gateway: Gateway):
    status, body, _ = await kinds_gateway.post("/v1/messages", json=mini_body(app=OA))
    assert status == 400
    assert locs(body) == [["body", "kind"]]
    assert "official_account" in body["data"]["errors"][0]["msg"]
    status, body, _ = await kinds_gateway.post("/v1/messages", json=subscribe_body(app=MINI))
    assert status == 400
    assert locs(body) == [["body", "kind"]]


async def test_a_template_message_to_a_mini_program_is_refused(kinds_gateway: Gateway):
    body = subscribe_body(app=MINI, kind="template")
    del body["page"]
    status, answer, _ = await kinds_gateway.post("/v1/messages", json=body)
    assert status == 400
    assert locs(answer) == [["body", "kind"]]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (subscribe_body(url="https://x.example.com"), "url"),
        (subscribe_body(lang="zh_CN"), "lang"),
        (subscribe_body(miniprogram_state="trial"), "miniprogram_state"),
        (mini_body(miniprogram={"appid": "wxabc", "pagepath": "pages/a"}), "miniprogram"),
        (subscribe_body(kind="template", page=None, lang="en_US"), "lang"),
        (subscribe_body(kind="template"), "page"),
    ],
)
async def test_a_field_of_another_kind_is_refused_naming_it(
    kinds_gateway: Gateway, body: dict[str, Any], field: str
):
    status, answer, _ = await kinds_gateway.post("/v1/messages", json=body)
    assert status == 400, answer
    assert ["body", field] in locs(answer)
    assert all(await _nothing_stored(kinds_gateway))


@pytest.mark.parametrize(
    ("key", "value", "rule"),
    [
        ("thing1", "这是一个超过二十个字符的很长很长很长的物品名称", "at most 20"),
        ("number4", "12a", "number"),
        ("amount5", "12345678901元", "10 digits"),
        ("phrase6", "十分非常特别好", "5"),
        ("phone_number7", "1" * 18, "17"),
        ("car_number8", "粤A1234567", "8"),
        ("date9", "tomorrow", "date"),
    ],
)
async def test_a_typed_value_breaking_its_rule_names_the_field_and_the_rule(
    kinds_gateway: Gateway, key: str, value: str, rule: str
):
    body = subscribe_body()
    body["data"][key] = {"value": value}
    status, answer, _ = await kinds_gateway.post("/v1/messages", json=body)
    assert status == 400, answer
    [error] = answer["data"]["errors"]
    assert error["loc"][:3] == ["body", "data", key]
    assert rule in error["msg"]


async def test_a_subscribe_value_takes_no_colour(kinds_gateway: Gateway):
    body = subscribe_body()
    body["data"]["thing1"] = {"value": "杯子", "color": "#173177"}
    status, answer, _ = await kinds_gateway.post("/v1/messages", json=body)
    assert status == 400
    assert locs(answer) == [["body", "data", "thing1", "color"]]


async def test_a_bad_mini_program_state_is_refused_at_its_field(kinds_gateway: Gateway):
    status, answer, _ = await kinds_gateway.post(
        "/v1/messages", json=mini_body(miniprogram_state="production")
    )
    assert status == 400
    assert ["body", "miniprogram_state"] in locs(answer)


async def test_a_subscribe_batch_stores_every_recipient_with_its_kind(kinds_gateway: Gateway):
    shared = subscribe_body()
    del shared["touser"]
    recipients = [f"oUSER_{n:020d}" for n in range(3)]
    recipients_in: list[Any] = [*recipients[:2], {"touser": recipients[2], "page": "https://b.cn"}]
    status, answer, _ = await kinds_gateway.post(
        "/v1/messages/batch", json={**shared, "recipients": recipients_in}
    )
    assert status == 202, answer
    records = [await kinds_gateway.backend.get(i) for i in answer["data"]["ids"]]
    assert [r.kind for r in records if r] == ["subscribe"] * 3
    assert [r.touser for r in records if r] == recipients
    assert records[2] is not None and records[2].payload["page"] == "https://b.cn"


async def test_a_subscribe_batch_names_the_bad_recipient(kinds_gateway: Gateway):
    shared = subscribe_body()
    del shared["touser"]
    status, answer, _ = await kinds_gateway.post(
        "/v1/messages/batch", json={**shared, "recipients": ["oGOOD_openid", "bad openid"]}
    )
    assert status == 400
    assert locs(answer) == [["body", "recipients", 1, "touser"]]


async def test_a_mini_program_batch_refuses_a_url(kinds_gateway: Gateway):
    shared = mini_body(url="https://x.example.com")
    del shared["touser"]
    status, answer, _ = await kinds_gateway.post(
        "/v1/messages/batch", json={**shared, "recipients": ["oGOOD_openid"]}
    )
    assert status == 400
    assert ["body", "url"] in locs(answer)


async def test_the_same_key_with_another_kind_is_another_request(kinds_gateway: Gateway):
    status, _, _ = await kinds_gateway.post(
        "/v1/messages", json=subscribe_body(idempotency_key="k1")
    )
    assert status == 202
    template = subscribe_body(kind="template", page=None, idempotency_key="k1")
    status, answer, _ = await kinds_gateway.post("/v1/messages", json=template)
    assert status == 422, answer


async def _nothing_stored(gateway: Gateway) -> list[bool]:
    counts = await gateway.backend.counts()
    return [count == 0 for count in counts.values()]
