"""Status webhooks at the API: which messages notify, which callback_url is refused (a 400
naming the field, nothing stored), and the /v1/webhooks routes. Both engines."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import (
    CALLBACK_TOKEN,
    GatewayFactory,
    app_config,
    make_settings,
    message_body,
)
from wxgate.backends.base import Outcome, Status
from wxgate.backends.webhook_outbox import HookOutcome, HookResult
from wxgate.delivery.webhook_signing import new_secret

ENGINES = ["sqlite", "redis"]
SECRET = new_secret()
ALLOWED = ["hooks.example.com", "*.partner.example.net"]


def settings(**app: Any) -> Any:
    config = app_config(callback_token=CALLBACK_TOKEN, webhook_secret=SECRET, **app)
    return make_settings({"default": config}, webhook_allowed_hosts=ALLOWED)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://10.0.0.5/hooks", "not on [server] webhook_allowed_hosts"),
        ("http://169.254.169.254/latest/meta-data", "not on [server] webhook_allowed_hosts"),
        ("https://hooks.example.com.evil.example/x", "not on [server] webhook_allowed_hosts"),
        ("https://partner.example.net/x", "not on [server] webhook_allowed_hosts"),
        ("https://user:pw@hooks.example.com/x", "user name or password"),
        ("ftp://hooks.example.com/x", "http(s) URL"),
        ("https://hooks.example.com:99999/x", "not a valid URL"),
    ],
)
async def test_a_forbidden_callback_url_is_a_400_naming_it_and_nothing_is_stored(
    gateway_factory: GatewayFactory, engine: str, url: str, why: str
) -> None:
    gateway = await gateway_factory(settings(), engine=engine)
    status, body, _ = await gateway.post("/v1/messages", message_body(callback_url=url))
    assert status == 400, body
    [error] = body["data"]["errors"]
    assert error["loc"] == ["body", "callback_url"] and why in error["msg"]
    assert sum((await gateway.backend.counts()).values()) == 0


@pytest.mark.parametrize("engine", ENGINES)
async def test_a_batch_with_a_forbidden_callback_url_stores_nothing(
    gateway_factory: GatewayFactory, engine: str
) -> None:
    gateway = await gateway_factory(settings(), engine=engine)
    body = {
        "template_id": "TPL_order_shipped",
        "data": {"thing1": {"value": "x"}},
        "recipients": ["oUSER_0000000000000000001", "oUSER_0000000000000000002"],
        "callback_url": "http://127.0.0.1:6379/",
    }
    status, answer, _ = await gateway.post("/v1/messages/batch", body)
    assert status == 400
    assert answer["data"]["errors"][0]["loc"] == ["body", "callback_url"]
    assert sum((await gateway.backend.counts()).values()) == 0


@pytest.mark.parametrize("engine", ENGINES)
async def test_an_allowed_callback_url_is_stored_and_the_message_notifies(
    gateway_factory: GatewayFactory, engine: str
) -> None:
    gateway = await gateway_factory(settings(), engine=engine)
    url = "https://eu.partner.example.net/wx/status"
    status, body, _ = await gateway.post("/v1/messages", message_body(callback_url=url))
    assert status == 202, body
    record = await gateway.backend.get(body["data"]["id"])
    assert record is not None and (record.notify, record.callback_url) == (True, url)
    assert "callback_url" not in record.payload  # not part of what WeChat is sent


@pytest.mark.parametrize("engine", ENGINES)
async def test_messages_notify_only_when_the_app_has_a_webhook_url_or_they_name_one(
    gateway_factory: GatewayFactory, engine: str
) -> None:
    quiet = await gateway_factory(settings(), engine=engine)
    _, body, _ = await quiet.post("/v1/messages", message_body())
    record = await quiet.backend.get(body["data"]["id"])
    assert record is not None and record.notify is False

    loud = await gateway_factory(
        settings(webhook_url="https://hooks.example.com/in"), engine=engine
    )
    _, body, _ = await loud.post("/v1/messages", message_body())
    record = await loud.backend.get(body["data"]["id"])
    assert record is not None and (record.notify, record.callback_url) == (True, None)


async def test_a_callback_url_needs_the_apps_webhook_secret(
    gateway_factory: GatewayFactory,
) -> None:
    bare = make_settings(
        {"default": app_config(callback_token=CALLBACK_TOKEN)},
        webhook_allowed_hosts=ALLOWED,
    )
    gateway = await gateway_factory(bare)
    body = message_body(callback_url="https://hooks.example.com/in")
    status, answer, _ = await gateway.post("/v1/messages", body)
    assert status == 400
    [error] = answer["data"]["errors"]
    assert error["loc"] == ["body", "callback_url"] and "webhook_secret" in error["msg"]


@pytest.mark.parametrize("engine", ENGINES)
async def test_the_webhook_routes_show_the_backlog_list_dead_events_and_replay_them(
    gateway_factory: GatewayFactory, engine: str
) -> None:
    gateway = await gateway_factory(
        settings(webhook_url="https://hooks.example.com/in"), engine=engine
    )
    _, body, _ = await gateway.post("/v1/messages", message_body())
    message_id = body["data"]["id"]
    await gateway.settle(message_id, Outcome.FAILED, errcode=40003, errmsg="invalid openid")
    outbox = gateway.backend.webhook_outbox()
    now = gateway.clock.now()
    [claim] = await outbox.claim(["default"], 10, 30, now)
    await outbox.finish([HookResult(claim, HookOutcome.DEAD, error="HTTP 410")], now)

    status, answer, _ = await gateway.get("/v1/webhooks")
    assert status == 200
    assert answer["data"]["items"] == [
        {"app": "default", "webhook_url_set": True, "pending": 0, "dead": 1, "oldest_age_s": 0.0}
    ]
    status, answer, _ = await gateway.get("/v1/webhooks/events?app=default&state=dead")
    [item] = answer["data"]["items"]
    assert (item["message_id"], item["status"], item["state"]) == (message_id, "failed", "dead")
    assert (item["attempts"], item["last_error"], item["webhook_id"]) == (
        1,
        "HTTP 410",
        claim.webhook_id,
    )
    assert str(SECRET) not in str(answer)

    status, answer, _ = await gateway.post(
        "/v1/webhooks/replay", {"app": "default", "seqs": [item["seq"]]}
    )
    assert (status, answer["data"]) == (200, {"replayed": 1})
    [audited] = await gateway.backend.audit_log().entries(1, action="webhook.replay")
    assert (audited.actor, audited.target, audited.detail) == (
        "config-1",
        "webhooks of default",
        "1 replayed",
    )
    [again] = await outbox.claim(["default"], 10, 30, gateway.clock.now())
    assert (again.webhook_id, again.event.status) == (claim.webhook_id, Status.FAILED)


async def test_the_webhook_routes_refuse_an_unknown_app_and_seqs_without_an_app(
    gateway_factory: GatewayFactory,
) -> None:
    gateway = await gateway_factory(settings())
    status, answer, _ = await gateway.get("/v1/webhooks/events?app=nope")
    assert status == 400 and answer["data"]["errors"][0]["loc"] == ["query", "app"]
    status, answer, _ = await gateway.post("/v1/webhooks/replay", {"seqs": ["1"]})
    assert status == 400 and answer["data"]["errors"][0]["loc"] == ["body", "app"]
