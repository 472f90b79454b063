"""The template registry's intake check: what it refuses, and when it holds back."""

from __future__ import annotations

import pytest

from wxgate.backends.templates import RegisteredTemplate
from wxgate.clock import FakeClock
from wxgate.wechat.kinds import MessageKind
from wxgate.wechat.template_content import TemplateKey, template_keys

from .conftest import GatewayFactory, app_config, make_settings, message_body

CONTENT = "商品：{{thing1.DATA}}\n单号：{{character_string2.DATA}}\n时间：{{time3.DATA}}"
TEMPLATE_ID = "TPL_order_shipped"  # message_body's


def _template(template_id: str = TEMPLATE_ID) -> RegisteredTemplate:
    return RegisteredTemplate(
        template_id, MessageKind.TEMPLATE, "发货", CONTENT, tuple(template_keys(CONTENT))
    )


def _settings(**app: object) -> object:
    return make_settings(apps={"default": app_config(**app)})


@pytest.fixture(params=["sqlite", "redis"])
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def _gateway(gateway_factory: GatewayFactory, engine: str, **app: object):
    clock = FakeClock(1_800_000_000.0)
    gateway = await gateway_factory(_settings(**app), clock=clock, engine=engine)
    return gateway, clock


async def test_a_key_the_template_lacks_is_refused_by_name(
    gateway_factory: GatewayFactory, engine: str
) -> None:
    gateway, clock = await _gateway(gateway_factory, engine)
    await gateway.backend.template_store().replace(
        "default", MessageKind.TEMPLATE, [_template()], clock.now()
    )
    body = message_body()
    body["data"]["thing9"] = {"value": "x"}
    status, answer, _ = await gateway.post("/v1/messages", body)
    assert status == 400
    [error] = answer["data"]["errors"]
    assert error["loc"] == ["body", "data", "thing9"]
    assert "the template has no such key" in error["msg"]


async def test_a_stale_sync_lets_an_unknown_template_through(
    gateway_factory: GatewayFactory, engine: str
) -> None:
    gateway, clock = await _gateway(gateway_factory, engine, template_sync_s=60)
    store = gateway.backend.template_store()
    await store.replace("default", MessageKind.TEMPLATE, [_template("TPL_other")], clock.now())
    status, _, _ = await gateway.post("/v1/messages", message_body())
    assert status == 400
    clock.advance(121.0)  # past two intervals (and the process's cache)
    status, answer, _ = await gateway.post("/v1/messages", message_body())
    assert status == 202, answer


async def test_a_failed_last_sync_lets_an_unknown_template_through(
    gateway_factory: GatewayFactory, engine: str
) -> None:
    gateway, clock = await _gateway(gateway_factory, engine)
    store = gateway.backend.template_store()
    await store.replace("default", MessageKind.TEMPLATE, [_template("TPL_other")], clock.now())
    await store.sync_failed("default", MessageKind.TEMPLATE, "timeout", clock.now())
    status, answer, _ = await gateway.post("/v1/messages", message_body())
    assert status == 202, answer


async def test_warn_sends_what_enforce_would_refuse(
    gateway_factory: GatewayFactory, engine: str
) -> None:
    gateway, clock = await _gateway(gateway_factory, engine, template_check="warn")
    await gateway.backend.template_store().replace(
        "default", MessageKind.TEMPLATE, [_template()], clock.now()
    )
    body = message_body()
    del body["data"]["time3"]
    status, answer, _ = await gateway.post("/v1/messages", body)
    assert status == 202, answer


async def test_an_enum_value_the_template_does_not_list_is_refused(
    gateway_factory: GatewayFactory, engine: str
) -> None:
    gateway, _ = await _gateway(gateway_factory, engine)
    keys = (
        *template_keys(CONTENT),
        TemplateKey("enum_string4", "enum_string", ("已发货", "已签收")),
    )
    template = RegisteredTemplate(TEMPLATE_ID, MessageKind.TEMPLATE, "t", CONTENT, tuple(keys))
    await gateway.backend.template_store().replace("default", MessageKind.TEMPLATE, [template], 0.0)
    body = message_body()
    body["data"]["enum_string4"] = {"value": "丢了"}
    status, answer, _ = await gateway.post("/v1/messages", body)
    assert status == 400
    assert [e["loc"] for e in answer["data"]["errors"]] == [
        ["body", "data", "enum_string4", "value"]
    ]


async def test_a_batch_missing_a_shared_key_is_refused_once(
    gateway_factory: GatewayFactory, engine: str
) -> None:
    gateway, clock = await _gateway(gateway_factory, engine)
    await gateway.backend.template_store().replace(
        "default", MessageKind.TEMPLATE, [_template()], clock.now()
    )
    body = message_body()
    del body["touser"]
    del body["data"]["time3"]
    body["recipients"] = ["oA", "oB", "oC"]
    status, answer, _ = await gateway.post("/v1/messages/batch", body)
    assert status == 400
    [error] = answer["data"]["errors"]
    assert error["loc"] == ["body", "recipients", 0, "data", "time3"]
