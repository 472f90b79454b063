"""Idempotency that never drops a message silently (issue 11), over real HTTP on both
engines: the same key with another request is refused, batches are checked whole, and
no key a caller sends can reach a batch's member."""

from __future__ import annotations

import pytest

from wxgate.backends.base import Status

from .conftest import Gateway, GatewayFactory, message_body

ENGINES = ["sqlite", "redis"]


@pytest.fixture(params=ENGINES)
async def engine_gateway(
    request: pytest.FixtureRequest, gateway_factory: GatewayFactory
) -> Gateway:
    return await gateway_factory(engine=request.param)


def batch_body(key: str, *recipients: object, **shared: object) -> dict[str, object]:
    body: dict[str, object] = {
        "template_id": "TPL_campaign",
        "data": {"thing1": {"value": "Sale at 10:00"}},
        "recipients": list(recipients),
        "idempotency_key": key,
    }
    body.update(shared)
    return body


async def queued(gateway: Gateway) -> int:
    return (await gateway.backend.counts())[Status.QUEUED]


async def test_the_same_key_and_request_again_answers_200_with_the_first_id(
    engine_gateway: Gateway,
) -> None:
    first_status, first, _ = await engine_gateway.post(
        "/v1/messages", message_body(idempotency_key="k1")
    )
    again_status, again, _ = await engine_gateway.post(
        "/v1/messages", message_body(idempotency_key="k1")
    )
    assert (first_status, again_status) == (202, 200)
    assert again["data"]["id"] == first["data"]["id"]


@pytest.mark.parametrize(
    "change",
    [
        {"touser": "oSOMEONE_ELSE"},
        {"template_id": "TPL_other"},
        {"data": {"thing1": {"value": "another cup"}}},
        {"url": "https://shop.example.com/orders/2"},
    ],
    ids=["touser", "template", "data", "url"],
)
async def test_the_same_key_with_another_request_is_422_naming_the_key(
    engine_gateway: Gateway, change: dict[str, object]
) -> None:
    await engine_gateway.post("/v1/messages", message_body(idempotency_key="order-10086"))
    status, body, _ = await engine_gateway.post(
        "/v1/messages", message_body(idempotency_key="order-10086", **change)
    )
    assert (status, body["code"]) == (422, 42200)
    assert "order-10086" in body["msg"] and body["data"]["idempotency_key"] == "order-10086"
    assert await queued(engine_gateway) == 1


async def test_the_same_key_for_another_app_is_refused_too(gateway_factory: GatewayFactory) -> None:
    from .conftest import app_config, make_settings

    settings = make_settings(apps={"shop": app_config(), "crm": app_config()})
    gateway = await gateway_factory(settings)
    await gateway.post("/v1/messages", message_body(app="shop", idempotency_key="k"))
    # Another app is another key space: stored, not a conflict.
    status, _, _ = await gateway.post("/v1/messages", message_body(app="crm", idempotency_key="k"))
    assert status == 202


async def test_a_single_keyed_like_a_batch_member_is_its_own_message(
    engine_gateway: Gateway,
) -> None:
    _, batch, _ = await engine_gateway.post(
        "/v1/messages/batch", batch_body("camp", "oUSER_A", "oUSER_B")
    )
    status, single, _ = await engine_gateway.post(
        "/v1/messages", message_body(idempotency_key="camp:1")
    )
    assert status == 202
    assert single["data"]["id"] not in batch["data"]["ids"]
    assert await queued(engine_gateway) == 3


async def test_a_retried_batch_answers_200_with_the_same_batch_and_ids(
    engine_gateway: Gateway,
) -> None:
    recipients = ("oUSER_A", {"touser": "oUSER_B", "data": {"thing1": {"value": "VIP"}}})
    first_status, first, _ = await engine_gateway.post(
        "/v1/messages/batch", batch_body("c1", *recipients)
    )
    again_status, again, _ = await engine_gateway.post(
        "/v1/messages/batch", batch_body("c1", *recipients)
    )
    assert (first_status, again_status) == (202, 200)
    assert again["data"] == first["data"]


async def test_a_batch_key_sent_again_with_more_recipients_is_422_and_adds_nothing(
    engine_gateway: Gateway,
) -> None:
    await engine_gateway.post("/v1/messages/batch", batch_body("c2", "oUSER_A", "oUSER_B"))
    status, body, _ = await engine_gateway.post(
        "/v1/messages/batch", batch_body("c2", "oUSER_A", "oUSER_B", "oUSER_C")
    )
    assert (status, body["code"]) == (422, 42200)
    assert "c2" in body["msg"]
    assert await queued(engine_gateway) == 2


async def test_a_batch_key_sent_again_with_other_data_is_422(engine_gateway: Gateway) -> None:
    await engine_gateway.post("/v1/messages/batch", batch_body("c3", "oUSER_A"))
    changed = batch_body("c3", "oUSER_A", data={"thing1": {"value": "Sale at 11:00"}})
    status, body, _ = await engine_gateway.post("/v1/messages/batch", changed)
    assert (status, body["code"]) == (422, 42200)


async def test_two_recipients_with_one_key_are_refused_naming_both(
    engine_gateway: Gateway,
) -> None:
    body = batch_body(
        "c4",
        {"touser": "oUSER_A", "idempotency_key": "same"},
        "oUSER_B",
        {"touser": "oUSER_C", "idempotency_key": "same"},
    )
    status, answer, _ = await engine_gateway.post("/v1/messages/batch", body)
    assert (status, answer["code"]) == (400, 40000)
    [error] = answer["data"]["errors"]
    assert error["loc"] == ["body", "recipients", 2, "idempotency_key"]
    assert "0" in error["msg"] and "2" in error["msg"]
    assert await queued(engine_gateway) == 0


async def test_a_recipient_key_used_before_for_another_request_refuses_the_whole_batch(
    engine_gateway: Gateway,
) -> None:
    await engine_gateway.post("/v1/messages", message_body(idempotency_key="taken"))
    body = batch_body("c5", "oUSER_A", {"touser": "oUSER_B", "idempotency_key": "taken"})
    status, answer, _ = await engine_gateway.post("/v1/messages/batch", body)
    assert (status, answer["code"]) == (422, 42200)
    assert "taken" in answer["msg"]
    assert await queued(engine_gateway) == 1


@pytest.mark.parametrize(
    ("raw", "loc"),
    [
        (
            b'{"touser": "oA", "touser": "oB", "template_id": "T", "data": {}}',
            ["body", "touser"],
        ),
        (
            b'{"touser": "oA", "template_id": "T", "data": {"thing1": {"value": "a"},'
            b' "thing1": {"value": "b"}}}',
            ["body", "data", "thing1"],
        ),
    ],
    ids=["top-level", "nested"],
)
async def test_a_member_named_twice_in_a_json_object_is_400_at_its_path(
    gateway: Gateway, raw: bytes, loc: list[object]
) -> None:
    status, body, _ = await gateway.post(
        "/v1/messages", data=raw, headers={"Content-Type": "application/json"}
    )
    assert (status, body["code"]) == (400, 40000)
    assert body["data"]["errors"][0]["loc"] == loc
    assert await queued(gateway) == 0


async def test_a_recipient_named_twice_in_a_batch_body_is_400(gateway: Gateway) -> None:
    raw = (
        b'{"template_id": "T", "data": {"thing1": {"value": "a"}},'
        b' "recipients": ["oA", {"touser": "oB", "touser": "oC"}]}'
    )
    status, body, _ = await gateway.post(
        "/v1/messages/batch", data=raw, headers={"Content-Type": "application/json"}
    )
    assert (status, body["code"]) == (400, 40000)
    assert body["data"]["errors"][0]["loc"] == ["body", "recipients", 1, "touser"]
