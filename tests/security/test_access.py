"""Access to the API: every route is either behind an API key or on a short public list,
so a new route cannot slip through; no key, a wrong key, a revoked key and odd
spellings of a path are 401 on a running gateway; the per-key rate limit holds under
concurrent load; a presented key is compared with every configured hash in constant
time.

tests/api/test_auth.py covers the /v1 routes of an in-process app; these tests look
at every route and at a real `wxgate serve` process.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts

from tests.api.conftest import make_settings
from wxgate.api.app import create_app
from wxgate.api.auth import PROTECTED_PREFIX, ApiKeys
from wxgate.backends.sqlite import SqliteBackend
from wxgate.config import hash_api_key
from wxgate.observability import Metrics
from wxgate.server import serve_in_background
from wxgate.wechat.callback import CallbackCodec, sign, template_finish_xml
from wxgate.wechat.errors import CallbackSignatureError

from .conftest import API_KEY, OTHER_KEY, REVOKED_KEY, Client, Deployment, raw_request

# Routes anyone may call: probes, Prometheus, the API's own documentation (with the
# scripts and styles it loads), and WeChat's callback URL (WeChat signs those requests
# with the app's callback token instead).
PUBLIC = frozenset(
    {
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/docs",
        "/docs/assets",
        "/redoc",
        "/wechat/callback/{app}",
    }
)
# The web console checks a session of its own on every route but its sign-in page and
# assets (tests/api/test_console.py::test_every_console_route_wants_a_session).
CONSOLE_PREFIX = "/ui"


def the_app() -> FastAPI:
    """The app `wxgate serve` builds, for its routes (no storage is touched)."""
    return create_app(make_settings(), None, metrics=Metrics())  # type: ignore[arg-type]


def routes(app: FastAPI) -> Iterator[tuple[str, str]]:
    """(method, path template) of every route the app serves."""
    for route in iter_route_contexts(app.routes):
        for method in sorted(route.methods or {"GET"}):
            yield method, route.path


def protected_calls(app: FastAPI) -> list[tuple[str, str]]:
    """(method, concrete path) of every route outside the public list."""
    calls = [
        (m, re.sub(r"\{[^}]+\}", "x", p))
        for m, p in routes(app)
        if p not in PUBLIC and not p.startswith(CONSOLE_PREFIX)
    ]
    return [(m, p) for m, p in calls if m != "HEAD"]


def test_every_route_is_behind_the_key_or_on_the_public_list() -> None:
    unguarded = [
        (method, path)
        for method, path in routes(the_app())
        if path not in PUBLIC
        and not path.startswith(PROTECTED_PREFIX)
        and not path.startswith(CONSOLE_PREFIX)
    ]
    assert unguarded == []


def test_the_protected_routes_are_enumerated() -> None:
    # Guards the tests below against passing vacuously if routes moved.
    calls = set(protected_calls(the_app()))
    assert {
        ("POST", "/v1/messages"),
        ("GET", "/v1/messages/x"),
        ("POST", "/v1/apps/x/resume"),
    } <= calls
    assert len(calls) >= 9


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        f"Basic {API_KEY}",
        f"Token {API_KEY}",
        f"Bearer {API_KEY[:-1]}",
        f"Bearer {API_KEY}x",
        f"Bearer {API_KEY} {API_KEY}",
        f"Bearer {hash_api_key(API_KEY)}",  # the configured hash is not a key
        "Bearer wrong-key",
    ],
)
async def test_every_protected_route_refuses_a_missing_or_wrong_key(
    client: Client, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    for method, path in protected_calls(the_app()):
        status, body, reply = await client.call(method, path, key=None, headers=headers, json={})
        assert (method, path, status, body["code"]) == (method, path, 401, 40100)
        assert reply["WWW-Authenticate"] == "Bearer"


async def test_a_revoked_key_is_refused_on_every_protected_route(
    deployment: Deployment, client: Client
) -> None:
    assert (await client.call("GET", "/v1/apps", key=REVOKED_KEY))[0] == 200
    # Revoking is taking the key's hash out of the config and restarting.
    process, url = deployment.start_gateway("revoked", (API_KEY,), role="api")
    try:
        revoked = Client(url, client.http)
        for method, path in protected_calls(the_app()):
            status, body, _ = await revoked.call(method, path, key=REVOKED_KEY, json={})
            assert (method, path, status, body["code"]) == (method, path, 401, 40100)
        assert (await revoked.call("GET", "/v1/apps", key=API_KEY))[0] == 200
    finally:
        process.stop()


@pytest.mark.parametrize(
    "path",
    [
        b"/v1/messages/",
        b"/v1//messages",
        b"//v1/messages",
        b"/V1/messages",
        b"/v1/%6Dessages",
        b"/%761/messages",
        b"/v1/messages%2F",
        b"/v1%2Fmessages",
        b"/./v1/messages",
        b"/v1/./messages",
        b"/v1/apps/../messages",
        b"/wechat/callback/../../v1/messages",
        b"/v1/messages;x=1",
        b"/v1/messages%00",
        b"http://127.0.0.1/v1/messages",
    ],
)
async def test_odd_spellings_of_a_protected_path_never_answer_without_a_key(
    deployment: Deployment, path: bytes
) -> None:
    for method in (b"GET", b"POST"):
        request = method + b" " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
        status, _ = await raw_request(deployment.url, request + b"Connection: close\r\n\r\n{}")
        assert status in (400, 401, 404, 405), (method, path, status)


async def test_every_http_method_on_a_protected_path_needs_the_key(client: Client) -> None:
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"):
        status, _, _ = await client.call(method, "/v1/messages", key=None)
        assert status == 401, method


# -- the per-key rate limit -------------------------------------------------------------

RATE, BURST = 2.0, 5


async def test_the_per_key_rate_limit_holds_under_concurrent_requests(
    deployment: Deployment, client: Client
) -> None:
    process, url = deployment.start_gateway(
        "limited", (API_KEY, OTHER_KEY), role="api", rate_limit_per_key_per_s=RATE,
        rate_limit_burst=BURST,
    )  # fmt: skip
    try:
        limited = Client(url, client.http)
        started = time.monotonic()
        answers = await asyncio.gather(*(limited.call("GET", "/v1/apps") for _ in range(60)))
        elapsed = time.monotonic() - started
        statuses = Counter(status for status, _, _ in answers)
        assert 0 < statuses[200] <= BURST + RATE * elapsed + 1
        assert statuses[200] + statuses[429] == 60
        refused = [(body, reply) for status, body, reply in answers if status == 429]
        assert all(
            body["code"] == 42900 and int(reply["Retry-After"]) >= 1 for body, reply in refused
        )
        # Per key: the other key still has its whole burst.
        other = await asyncio.gather(
            *(limited.call("GET", "/v1/apps", key=OTHER_KEY) for _ in range(BURST))
        )
        assert [status for status, _, _ in other] == [200] * BURST
    finally:
        process.stop()


async def test_requests_with_wrong_keys_do_not_spend_a_real_keys_budget(
    deployment: Deployment, client: Client
) -> None:
    process, url = deployment.start_gateway(
        "guessed", (API_KEY,), role="api", rate_limit_per_key_per_s=0.1, rate_limit_burst=BURST
    )
    try:
        guessed = Client(url, client.http)
        wrong = await asyncio.gather(
            *(guessed.call("GET", "/v1/apps", key=f"guess-{n}") for n in range(50))
        )
        assert {status for status, _, _ in wrong} == {401}
        real = await asyncio.gather(*(guessed.call("GET", "/v1/apps") for _ in range(BURST)))
        assert [status for status, _, _ in real] == [200] * BURST
    finally:
        process.stop()


# -- constant-time comparisons -----------------------------------------------------------


@pytest.fixture
def compare_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, Any]]:
    """Every hmac.compare_digest call (its arguments), the real comparison still made."""
    calls: list[tuple[Any, Any]] = []
    real: Callable[[Any, Any], bool] = hmac.compare_digest

    def counting(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    return calls


KEYS = [f"configured-key-{n}" for n in range(5)]


@pytest.mark.parametrize("presented", [KEYS[0], KEYS[-1], "not-a-key", "", "x" * 10_000])
def test_a_presented_key_is_compared_with_every_configured_hash(
    compare_calls: list[tuple[Any, Any]], presented: str
) -> None:
    keys = ApiKeys([hash_api_key(key) for key in KEYS], rate_per_s=1.0, burst=1)
    keys.identify(presented)
    assert len(compare_calls) == len(KEYS)  # no early exit on a match or a mismatch
    # Hashes of one length: the time cannot depend on the presented key's length either.
    assert {len(a) for a, _ in compare_calls} == {len(b) for _, b in compare_calls} == {71}


async def test_a_request_compares_its_key_with_every_hash_through_the_middleware(
    compare_calls: list[tuple[Any, Any]], sqlite_path: Path
) -> None:
    backend = SqliteBackend(sqlite_path)
    await backend.start()
    server = await serve_in_background(
        create_app(make_settings(keys=tuple(KEYS)), backend, metrics=Metrics())
    )
    try:
        async with aiohttp.ClientSession() as http:
            client = Client(f"http://127.0.0.1:{server.port}", http)
            for presented, expected in ((KEYS[2], 200), ("wrong", 401)):
                compare_calls.clear()
                status, _, _ = await client.call("GET", "/v1/apps", key=presented)
                assert (status, len(compare_calls)) == (expected, len(KEYS))
    finally:
        await server.stop()
        await backend.close()


def test_callback_signatures_are_compared_in_constant_time(
    compare_calls: list[tuple[Any, Any]],
) -> None:
    codec = CallbackCodec("callback-token", "wx0000000000000001", "a" * 43)
    xml = template_finish_xml("gh_0123456789ab", "oA", 1714037059, 1, "success")
    query, body = codec.seal(xml, "1714037059", "1")
    codec.open(query, body)
    assert len(compare_calls) == 2  # signature, then msg_signature
    query["signature"] = sign("wrong-token", "1714037059", "1")
    with pytest.raises(CallbackSignatureError):
        codec.open(query, body)
    assert len(compare_calls) == 3
