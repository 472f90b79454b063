"""API keys on every /v1 route, the per-key rate limit, and what stays open."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from multidict import CIMultiDict

from wxgate.clock import FakeClock

from .conftest import API_KEY, OTHER_KEY, Gateway, GatewayFactory, make_settings, message_body


def v1_routes(app: FastAPI) -> Iterator[tuple[str, str]]:
    """(method, path with its parameters filled in) of every /v1 route the app has."""
    # Included routers are resolved lazily; iter_route_contexts yields their routes.
    for route in iter_route_contexts(app.routes):
        if route.path is not None and route.path.startswith("/v1"):
            path = re.sub(r"\{[^}]+\}", "x", route.path)
            for method in sorted(route.methods or ()):
                yield method, path


async def test_every_v1_route_is_enumerated(gateway: Gateway) -> None:
    # Guards the tests below against passing vacuously if routes moved.
    routes = set(v1_routes(gateway.app))
    assert {
        ("POST", "/v1/messages"),
        ("GET", "/v1/messages"),
        ("GET", "/v1/messages/x"),
        ("POST", "/v1/messages/x/replay"),
        ("POST", "/v1/messages/batch"),
        ("GET", "/v1/batches/x"),
        ("POST", "/v1/dead-letters/replay"),
        ("GET", "/v1/apps"),
        ("POST", "/v1/apps/x/resume"),
    } <= routes


async def test_every_v1_route_refuses_a_missing_key_with_401(gateway: Gateway) -> None:
    for method, path in v1_routes(gateway.app):
        status, body, reply = await gateway.request(method, path, key=None, json={})
        assert (method, path, status) == (method, path, 401)
        assert body["code"] == 40100
        assert reply.headers["WWW-Authenticate"] == "Bearer"


async def test_every_v1_route_refuses_a_wrong_key_with_401(gateway: Gateway) -> None:
    for method, path in v1_routes(gateway.app):
        status, body, _ = await gateway.request(method, path, key="not-a-key", json={})
        assert (method, path, status, body["code"]) == (method, path, 401, 40100)


async def test_every_v1_route_lets_a_good_key_through(gateway: Gateway) -> None:
    for method, path in v1_routes(gateway.app):
        status, _, _ = await gateway.request(method, path, json={})
        assert status not in (401, 403, 429), (method, path)
    assert (await gateway.get("/v1/messages"))[0] == 200
    assert (await gateway.get("/v1/apps"))[0] == 200


async def test_a_non_bearer_authorization_is_refused(gateway: Gateway) -> None:
    headers = {"Authorization": f"Basic {API_KEY}"}
    status, _, _ = await gateway.get("/v1/messages", key=None, headers=headers)
    assert status == 401


async def test_each_configured_key_is_accepted(gateway_factory: GatewayFactory) -> None:
    gateway = await gateway_factory(make_settings(keys=(API_KEY, OTHER_KEY)))
    assert (await gateway.get("/v1/messages", key=API_KEY))[0] == 200
    assert (await gateway.get("/v1/messages", key=OTHER_KEY))[0] == 200


async def test_no_configured_keys_leaves_the_api_open(gateway_factory: GatewayFactory) -> None:
    gateway = await gateway_factory(make_settings(keys=()))
    status, _, _ = await gateway.post("/v1/messages", message_body(), key=None)
    assert status == 202


async def test_a_key_over_its_budget_gets_429_with_retry_after(
    gateway_factory: GatewayFactory,
) -> None:
    clock = FakeClock()
    settings = make_settings(
        keys=(API_KEY, OTHER_KEY), rate_limit_per_key_per_s=0.5, rate_limit_burst=3
    )
    gateway = await gateway_factory(settings, clock=clock)
    statuses = [(await gateway.get("/v1/apps"))[0] for _ in range(3)]
    status, body, reply = await gateway.get("/v1/apps")
    assert statuses == [200, 200, 200]
    assert status == 429 and body["code"] == 42900
    assert reply.headers["Retry-After"] == "2"  # one token at 0.5/s
    assert (await gateway.get("/v1/apps", key=OTHER_KEY))[0] == 200  # per key
    clock.advance(2.0)
    assert (await gateway.get("/v1/apps"))[0] == 200


@pytest.mark.parametrize(
    "keys",
    [(API_KEY, API_KEY), (API_KEY, OTHER_KEY), (API_KEY, "not-a-key"), ("not-a-key", API_KEY)],
)
async def test_two_authorization_headers_are_refused_with_401_saying_why(
    gateway_factory: GatewayFactory, keys: tuple[str, str]
) -> None:
    # Which of two keys a proxy and the server each read is anyone's guess: refused whole.
    gateway = await gateway_factory(make_settings(keys=(API_KEY, OTHER_KEY)))
    headers = CIMultiDict([("Authorization", f"Bearer {key}") for key in keys])

    async with gateway.http.get(gateway.url + "/v1/apps", headers=headers) as reply:
        status, body = reply.status, await reply.json()

    assert status == 401 and body["code"] == 40100
    assert "Authorization" in body["msg"] and "one" in body["msg"]
    assert reply.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"])
async def test_operations_and_docs_need_no_key(gateway: Gateway, path: str) -> None:
    status, _, _ = await gateway.get(path, key=None)
    assert status == 200


async def test_metrics_can_be_put_behind_the_key(gateway_factory: GatewayFactory) -> None:
    gateway = await gateway_factory(make_settings(metrics_require_key=True))
    assert (await gateway.get("/metrics", key=None))[0] == 401
    assert (await gateway.get("/metrics"))[0] == 200


async def test_callback_needs_no_api_key(gateway: Gateway) -> None:
    # Refused for its missing signature (403), not for a missing key (401).
    status, body, _ = await gateway.get("/wechat/callback/default", key=None)
    assert status == 403 and body["code"] == 40300
