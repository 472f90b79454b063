"""The web console at /ui over HTTP, on both engines: sign-in through the API's key
check, the session cookie's attributes, refusals without a session or CSRF token, and
that each page shows what storage holds and never a secret. (The browser drives the
same pages in tests/browser/test_console.py.)"""

from __future__ import annotations

import re
import time
from http.cookies import SimpleCookie
from typing import Any

import aiohttp
import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts

from tests.api.conftest import (
    API_KEY,
    OTHER_KEY,
    Gateway,
    GatewayFactory,
    make_settings,
    message_body,
)
from wxgate.api.console.activity import CACHE_S, MINUTES, Activity, ActivityCache, last_hour
from wxgate.api.console.session import SESSION_COOKIE, SIGN_IN_COOKIE
from wxgate.backends.base import Outcome, Pause, PauseReason, Status
from wxgate.clock import FakeClock
from wxgate.wechat.tokenstore import CachedToken

ENGINES = ["sqlite", "redis"]
CSRF_FIELD = re.compile(r'name="csrf" value="([^"]+)"')
FULL_TOKEN = "ACCESS_TOKEN_0123456789_abcdefghijklmnopqrstuvwxyz"


@pytest.fixture(params=ENGINES)
async def gateway(request: pytest.FixtureRequest, gateway_factory: GatewayFactory) -> Gateway:
    return await gateway_factory(engine=request.param)


async def _call(
    gateway: Gateway,
    method: str,
    path: str,
    cookies: dict[str, str] | None = None,
    form: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, str, aiohttp.ClientResponse]:
    """One request with exactly these cookies, redirects not followed (aiohttp's own jar
    keeps no cookie for an IP host, and the test wants to see each Set-Cookie)."""
    sent = dict(headers or {})
    if cookies:
        sent["Cookie"] = "; ".join(f"{name}={value}" for name, value in cookies.items())
    async with (
        aiohttp.ClientSession() as http,
        http.request(
            method, gateway.url + path, data=form, headers=sent, allow_redirects=False
        ) as resp,
    ):
        return resp.status, await resp.text(), resp


def _set_cookies(resp: aiohttp.ClientResponse) -> SimpleCookie:
    jar: SimpleCookie = SimpleCookie()
    for header in resp.headers.getall("Set-Cookie", []):
        jar.load(header)
    return jar


async def sign_in(gateway: Gateway, key: str = API_KEY) -> dict[str, str]:
    """The cookies of a session opened with `key`, and its CSRF token under "csrf"."""
    status, html, resp = await _call(gateway, "GET", "/ui/login")
    assert status == 200
    token = CSRF_FIELD.search(html)
    assert token is not None
    pre = {SIGN_IN_COOKIE: _set_cookies(resp)[SIGN_IN_COOKIE].value}
    form = {"csrf": token.group(1), "api_key": key}
    status, _, resp = await _call(gateway, "POST", "/ui/login", pre, form)
    assert status == 303, "sign-in refused"
    session = {SESSION_COOKIE: _set_cookies(resp)[SESSION_COOKIE].value}
    _, page, _ = await _call(gateway, "GET", "/ui", session)
    found = CSRF_FIELD.search(page)
    assert found is not None
    return {**session, "csrf": found.group(1)}


def _session(cookies: dict[str, str]) -> dict[str, str]:
    return {SESSION_COOKIE: cookies[SESSION_COOKIE]}


CONSOLE_PUBLIC = frozenset({"/ui/login", "/ui/assets"})


def console_routes(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path with its parameters filled in) of every console route but sign-in."""
    found = []
    for route in iter_route_contexts(app.routes):
        if route.path.startswith("/ui") and route.path not in CONSOLE_PUBLIC:
            for method in sorted(route.methods or {"GET"}):
                found.append((method, re.sub(r"\{[^}]+\}", "default", route.path)))
    return found


async def test_every_console_route_wants_a_session(gateway: Gateway) -> None:
    calls = console_routes(gateway.app)
    assert {("GET", "/ui"), ("POST", "/ui/apps/default/resume")} <= set(calls)
    assert len(calls) >= 10
    for method, path in calls:
        status, _, resp = await _call(gateway, method, path, None, {"csrf": "x"})
        if method == "GET":
            assert (path, status, resp.headers["Location"]) == (path, 303, "/ui/login")
        else:
            assert (path, status) == (path, 403)


async def test_a_page_without_a_session_sends_to_sign_in(gateway: Gateway) -> None:
    status, _, resp = await _call(gateway, "GET", "/ui/messages")
    assert status == 303
    assert resp.headers["Location"] == "/ui/login"


async def test_sign_in_sets_a_strict_httponly_session_cookie_without_the_key(
    gateway: Gateway,
) -> None:
    status, html, resp = await _call(gateway, "GET", "/ui/login")
    token = CSRF_FIELD.search(html)
    assert status == 200 and token is not None
    pre = {SIGN_IN_COOKIE: _set_cookies(resp)[SIGN_IN_COOKIE].value}
    form = {"csrf": token.group(1), "api_key": API_KEY}
    status, _, resp = await _call(gateway, "POST", "/ui/login", pre, form)

    assert status == 303
    morsel = _set_cookies(resp)[SESSION_COOKIE]
    assert morsel["httponly"] is True
    assert morsel["samesite"].lower() == "strict"
    assert not morsel["secure"]  # plain http: a Secure cookie would never come back
    assert morsel["path"] == "/ui"
    assert API_KEY not in morsel.value
    assert API_KEY.encode().hex() not in morsel.value


async def test_the_cookie_is_secure_behind_tls(gateway: Gateway) -> None:
    https = {"X-Forwarded-Proto": "https"}
    status, html, resp = await _call(gateway, "GET", "/ui/login", headers=https)
    token = CSRF_FIELD.search(html)
    assert status == 200 and token is not None
    pre = {SIGN_IN_COOKIE: _set_cookies(resp)[SIGN_IN_COOKIE].value}
    assert _set_cookies(resp)[SIGN_IN_COOKIE]["secure"] is True
    form = {"csrf": token.group(1), "api_key": API_KEY}
    _, _, resp = await _call(gateway, "POST", "/ui/login", pre, form, headers=https)
    assert _set_cookies(resp)[SESSION_COOKIE]["secure"] is True


async def test_a_wrong_key_is_refused_and_opens_no_session(gateway: Gateway) -> None:
    status, html, resp = await _call(gateway, "GET", "/ui/login")
    token = CSRF_FIELD.search(html)
    assert token is not None
    pre = {SIGN_IN_COOKIE: _set_cookies(resp)[SIGN_IN_COOKIE].value}
    form = {"csrf": token.group(1), "api_key": "not-a-key"}
    status, html, resp = await _call(gateway, "POST", "/ui/login", pre, form)

    assert status == 401
    assert "not accepted" in html
    assert SESSION_COOKIE not in _set_cookies(resp)


async def test_sign_in_without_the_forms_csrf_cookie_is_refused(gateway: Gateway) -> None:
    form = {"csrf": "made-up", "api_key": API_KEY}
    status, _, resp = await _call(gateway, "POST", "/ui/login", None, form)
    assert status == 403
    assert SESSION_COOKIE not in _set_cookies(resp)


async def test_a_session_works_on_another_process_with_the_same_config(
    gateway: Gateway, gateway_factory: GatewayFactory
) -> None:
    other = await gateway_factory(settings=gateway.settings)
    cookies = await sign_in(gateway)
    status, html, _ = await _call(other, "GET", "/ui", _session(cookies))
    assert status == 200
    assert "Overview" in html


async def test_a_session_ends_when_its_key_leaves_the_config(
    gateway_factory: GatewayFactory,
) -> None:
    both = make_settings(keys=(API_KEY, OTHER_KEY), console_secret="one-secret-for-both")
    gateway = await gateway_factory(settings=both)
    cookies = await sign_in(gateway)
    without = await gateway_factory(
        settings=make_settings(keys=(OTHER_KEY,), console_secret="one-secret-for-both")
    )
    status, _, _ = await _call(without, "GET", "/ui", _session(await sign_in(gateway, OTHER_KEY)))
    assert status == 200  # the same secret: the other key's session holds
    status, _, resp = await _call(without, "GET", "/ui", _session(cookies))
    assert status == 303
    assert resp.headers["Location"] == "/ui/login"


async def test_a_forged_session_cookie_is_refused(gateway: Gateway) -> None:
    cookies = await sign_in(gateway)
    body, mac = cookies[SESSION_COOKIE].split(".")
    forged = {SESSION_COOKIE: f"{body}.{mac[:-2]}AA"}
    status, _, _ = await _call(gateway, "GET", "/ui", forged)
    assert status == 303


async def _pause(gateway: Gateway) -> None:
    now = gateway.clock.now()
    await gateway.backend.pause_app(
        Pause("default", PauseReason.CONFIG, now, errcode=48001, note="api unauthorized")
    )


async def test_an_action_without_a_session_is_refused_and_changes_nothing(
    gateway: Gateway,
) -> None:
    await _pause(gateway)
    status, html, _ = await _call(gateway, "POST", "/ui/apps/default/resume", None, {"csrf": "x"})
    assert status == 403
    assert "not signed in" in html
    assert "default" in await gateway.backend.pauses(gateway.clock.now())


async def test_an_action_with_a_bad_csrf_token_is_refused_and_changes_nothing(
    gateway: Gateway,
) -> None:
    await _pause(gateway)
    cookies = await sign_in(gateway)
    for form in ({"csrf": cookies["csrf"] + "x"}, {}):
        status, html, _ = await _call(
            gateway, "POST", "/ui/apps/default/resume", _session(cookies), form
        )
        assert status == 403
        assert "CSRF" in html
    assert "default" in await gateway.backend.pauses(gateway.clock.now())


async def test_resume_lifts_the_pause_shown_on_the_overview(gateway: Gateway) -> None:
    await _pause(gateway)
    cookies = await sign_in(gateway)
    _, html, _ = await _call(gateway, "GET", "/ui", _session(cookies))
    assert "paused: CONFIG" in html
    assert "api unauthorized" in html

    status, _, resp = await _call(
        gateway, "POST", "/ui/apps/default/resume", _session(cookies), {"csrf": cookies["csrf"]}
    )
    assert status == 303
    assert await gateway.backend.pauses(gateway.clock.now()) == {}
    [entry] = await gateway.backend.audit_log().entries(5)
    assert (entry.actor, entry.action, entry.target) == ("console:config-1", "resume", "default")
    _, html, _ = await _call(gateway, "GET", resp.headers["Location"], _session(cookies))
    assert "App default resumed." in html
    assert "paused: CONFIG" not in html


async def _accept(gateway: Gateway, **overrides: Any) -> str:
    status, body, _ = await gateway.post("/v1/messages", message_body(**overrides))
    assert status == 202, body
    return str(body["data"]["id"])


async def test_overview_shows_queue_depth_oldest_age_and_the_last_hour(gateway: Gateway) -> None:
    first = await _accept(gateway, touser="oFIRST_00000000000000000001")
    await _accept(gateway, touser="oSECOND_0000000000000000001")
    await gateway.settle(first, Outcome.SENT, msgid=77, errcode=0)
    cookies = await sign_in(gateway)

    _, html, _ = await _call(gateway, "GET", "/ui", _session(cookies))

    assert re.search(r'id="queue-depth">1<', html)
    assert re.search(r'id="oldest-age">\d+ s<', html)
    assert re.search(r"accepted <strong>2</strong>", html)
    assert re.search(r"sent <strong>1</strong>", html)


async def test_message_page_shows_its_events_as_a_timeline(gateway: Gateway) -> None:
    message_id = await _accept(gateway)
    await gateway.settle(
        message_id,
        Outcome.RETRY,
        errcode=-1,
        errmsg="system busy",
        next_attempt_at=gateway.clock.now(),
    )
    await gateway.settle(message_id, Outcome.SENT, msgid=99, errcode=0)
    cookies = await sign_in(gateway)

    _, html, _ = await _call(gateway, "GET", f"/ui/messages/{message_id}", _session(cookies))

    kinds = re.findall(r'class="event e-(\w+)"', html)
    assert kinds == ["accepted", "retry", "sent"]
    assert "errcode -1" in html


async def test_messages_filter_by_touser(gateway: Gateway) -> None:
    wanted = await _accept(gateway, touser="oWANTED_0000000000000000001")
    other = await _accept(gateway, touser="oOTHER_00000000000000000001")
    cookies = await sign_in(gateway)

    _, html, _ = await _call(
        gateway, "GET", "/ui/messages?touser=oWANTED_0000000000000000001", _session(cookies)
    )
    assert wanted in html
    assert other not in html


async def test_replay_all_matching_dead_letters(gateway: Gateway) -> None:
    dead = await _accept(gateway)
    await gateway.settle(dead, Outcome.DEAD, errcode=40001, errmsg="invalid credential")
    cookies = await sign_in(gateway)
    _, html, _ = await _call(gateway, "GET", "/ui/dead-letters?errcode=40001", _session(cookies))
    assert dead in html

    status, _, resp = await _call(
        gateway,
        "POST",
        "/ui/dead-letters/replay",
        _session(cookies),
        {"csrf": cookies["csrf"], "app": "default", "errcode": "40001"},
    )
    assert status == 303
    record = await gateway.backend.get(dead)
    assert record is not None and record.status is Status.QUEUED
    _, html, _ = await _call(gateway, "GET", resp.headers["Location"], _session(cookies))
    assert "1 message(s) queued again." in html
    [entry] = await gateway.backend.audit_log().entries(5, action="replay")
    assert entry.actor == "console:config-1"
    assert (entry.target, entry.detail) == ("dead letters app=default errcode=40001", "1 replayed")


async def test_no_page_shows_a_secret_or_a_full_token(gateway: Gateway) -> None:
    now = gateway.clock.now()
    store = gateway.backend.token_store()
    assert await store.save("default", CachedToken(FULL_TOKEN, now + 7200, now - 600, fence=1))
    message_id = await _accept(gateway)
    cookies = await sign_in(gateway)
    secrets = [FULL_TOKEN, API_KEY, "app-secret-for-tests", "callback-token-for-tests"]
    pages = ("", "/messages", f"/messages/{message_id}", "/dead-letters", "/batches", "/tokens")
    for path in pages:
        status, html, _ = await _call(gateway, "GET", "/ui" + path, _session(cookies))
        assert status == 200, path
        for secret in secrets:
            assert secret not in html, (path, secret)
    _, html, _ = await _call(gateway, "GET", "/ui/tokens", _session(cookies))
    assert "ACCE…(50 chars)" in html
    assert "10 min" in html  # fetched ten minutes ago


async def test_batches_show_their_progress(gateway: Gateway) -> None:
    body = {
        "template_id": "TPL_order_shipped",
        "recipients": [{"touser": f"oBATCH_{i:020d}"} for i in range(3)],
        "data": message_body()["data"],
    }
    status, answer, _ = await gateway.post("/v1/messages/batch", body)
    assert status == 202, answer
    batch_id = answer["data"]["batch_id"]
    first = answer["data"]["ids"][0]
    await gateway.settle(first, Outcome.SENT, msgid=5, errcode=0)
    cookies = await sign_in(gateway)

    _, html, _ = await _call(gateway, "GET", "/ui/batches", _session(cookies))

    assert batch_id in html
    assert '<progress max="3" value="1">' in html


def test_activity_counts_each_record_in_the_minute_of_each_timestamp() -> None:
    from wxgate.backends.base import MessageRecord

    now = 1_700_000_000.0
    activity = Activity(now)
    record = MessageRecord(
        "m1",
        "shop",
        "o1",
        "t",
        {},
        Status.DELIVERED,
        created_at=now - 125,
        sent_at=now - 65,
        delivered_at=now - 5,
        updated_at=now - 5,
    )
    activity.count(record)
    assert activity.minutes["accepted"][MINUTES - 3] == 1
    assert activity.minutes["sent"][MINUTES - 2] == 1
    assert activity.minutes["delivered"][MINUTES - 1] == 1
    assert activity.total("failed") == 0


async def test_last_hour_stops_reading_at_the_hours_start(gateway: Gateway) -> None:
    await _accept(gateway)
    activity = await last_hour(gateway.backend, gateway.clock.now() + 7200)
    assert activity.scanned == 1
    assert activity.total("accepted") == 0
    assert not activity.truncated


async def test_the_activity_scan_is_shared_for_a_few_seconds(gateway: Gateway) -> None:
    cache = ActivityCache()
    await _accept(gateway)
    now = gateway.clock.now()
    first = await cache.last_hour(gateway.backend, now)
    await _accept(gateway)

    assert await cache.last_hour(gateway.backend, now + CACHE_S / 2) is first
    later = await cache.last_hour(gateway.backend, now + CACHE_S + 1)
    assert (first.total("accepted"), later.total("accepted")) == (1, 2)


@pytest.mark.parametrize("engine", ENGINES)
async def test_dead_letters_filter_by_when_they_went_dead(
    gateway_factory: GatewayFactory, engine: str
) -> None:
    clock = FakeClock(time.time())
    gateway = await gateway_factory(clock=clock, engine=engine)
    old = await _accept(gateway)
    await gateway.settle(old, Outcome.DEAD, errcode=40001, errmsg="invalid credential")
    clock.advance(2 * 3600)
    recent = await _accept(gateway)
    await gateway.settle(recent, Outcome.DEAD, errcode=40001, errmsg="invalid credential")
    cookies = await sign_in(gateway)

    _, html, _ = await _call(gateway, "GET", "/ui/dead-letters?within_h=1", _session(cookies))
    assert recent in html and old not in html
    assert 'name="within_h" value="1"' in html  # replay-all sends the same filter

    status, _, _ = await _call(
        gateway,
        "POST",
        "/ui/dead-letters/replay",
        _session(cookies),
        {"csrf": cookies["csrf"], "within_h": "1"},
    )
    assert status == 303
    statuses = [(await gateway.backend.get(i)).status for i in (old, recent)]  # type: ignore[union-attr]
    assert statuses == [Status.DEAD, Status.QUEUED]
