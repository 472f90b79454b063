"""GET /v1/grants, and `grant_check` at intake: warn (default) stores a subscribe message
without a known grant, enforce stores it failed with reason no_grant, off looks at
nothing; template messages are never checked."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import Gateway, GatewayFactory, app_config, make_settings
from tests.api.test_kinds import OA, OPENID, subscribe_body

TEMPLATE_ID = "PRI_order_shipped"


async def _gateway(factory: GatewayFactory, engine: str, grant_check: str | None) -> Gateway:
    extra: dict[str, Any] = {} if grant_check is None else {"grant_check": grant_check}
    apps = {OA: app_config("wx00000000000000a1", **extra)}
    return await factory(make_settings(apps), engine=engine)


@pytest.fixture(params=["sqlite", "redis"])
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_grants_lists_what_the_ledger_knows_of_a_user(
    gateway_factory: GatewayFactory, engine: str
):
    gateway = await _gateway(gateway_factory, engine, None)
    grants = gateway.backend.grant_store()
    await grants.accept(OA, OPENID, "tpl-b", long_term=False, now=1_800_000_000.0)
    await grants.accept(OA, OPENID, "tpl-a", long_term=True, now=1_800_000_000.0)
    status, body, _ = await gateway.get(f"/v1/grants?app={OA}&touser={OPENID}")
    assert status == 200, body
    items = body["data"]["items"]
    assert [(i["template_id"], i["one_time"], i["long_term"]) for i in items] == [
        ("tpl-a", 0, True),
        ("tpl-b", 1, False),
    ]
    assert items[0]["updated_at"].startswith("2027-")
    status, body, _ = await gateway.get("/v1/grants?touser=oNobody")  # the only app
    assert status == 200 and body["data"] == {"app": OA, "touser": "oNobody", "items": []}


async def test_grants_of_an_unknown_app_or_without_touser_is_a_400(
    gateway_factory: GatewayFactory,
):
    gateway = await _gateway(gateway_factory, "sqlite", None)
    status, body, _ = await gateway.get(f"/v1/grants?app=nope&touser={OPENID}")
    assert status == 400 and body["data"]["errors"][0]["loc"] == ["query", "app"]
    status, body, _ = await gateway.get(f"/v1/grants?app={OA}")
    assert status == 400 and body["data"]["errors"][0]["loc"][-1] == "touser"


async def test_enforce_stores_a_message_without_a_grant_failed_with_no_grant(
    gateway_factory: GatewayFactory, engine: str
):
    gateway = await _gateway(gateway_factory, engine, "enforce")
    status, body, _ = await gateway.post("/v1/messages", json=subscribe_body())
    assert status == 202 and body["data"]["status"] == "failed"
    record = await gateway.backend.get(body["data"]["id"])
    assert record is not None
    assert (record.status, record.last_errmsg) == ("failed", "no_grant")
    assert "no_grant" in record.events[-1].note
    assert await gateway.backend.lease_batch("w", 10, 30, gateway.clock.now()) == []


async def test_enforce_lets_a_granted_message_and_a_template_message_through(
    gateway_factory: GatewayFactory, engine: str
):
    gateway = await _gateway(gateway_factory, engine, "enforce")
    now = gateway.clock.now()
    await gateway.backend.grant_store().accept(OA, OPENID, TEMPLATE_ID, long_term=False, now=now)
    status, body, _ = await gateway.post("/v1/messages", json=subscribe_body())
    assert (status, body["data"]["status"]) == (202, "queued")
    template = subscribe_body(kind="template", page=None, touser="oSomeoneElse")
    status, body, _ = await gateway.post("/v1/messages", json=template)
    assert (status, body["data"]["status"]) == (202, "queued")


async def test_enforce_refuses_each_ungranted_recipient_of_a_batch(
    gateway_factory: GatewayFactory,
):
    gateway = await _gateway(gateway_factory, "sqlite", "enforce")
    now = gateway.clock.now()
    await gateway.backend.grant_store().accept(OA, "oGranted", TEMPLATE_ID, long_term=True, now=now)
    shared = subscribe_body()
    del shared["touser"]
    status, body, _ = await gateway.post(
        "/v1/messages/batch", json={**shared, "recipients": ["oGranted", "oNot"]}
    )
    assert status == 202, body
    records = [await gateway.backend.get(i) for i in body["data"]["ids"]]
    assert [r.status for r in records if r] == ["queued", "failed"]


@pytest.mark.parametrize("mode", [None, "warn", "off"])
async def test_warn_and_off_store_a_message_without_a_grant_to_be_sent(
    gateway_factory: GatewayFactory, mode: str | None
):
    gateway = await _gateway(gateway_factory, "sqlite", mode)
    status, body, _ = await gateway.post("/v1/messages", json=subscribe_body())
    assert (status, body["data"]["status"]) == (202, "queued")
