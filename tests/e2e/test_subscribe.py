"""Subscribe notifications (bizsend) and mini-program subscribe messages (subscribe/send)
over real HTTP, on both engines: the sandbox plays WeChat and the user (popups), and
pushes its events to the gateway's callback URL, which keeps the grant ledger and
settles each message by its sent event."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.backends.conftest import REDIS_URL, delete_prefix, redis_prefix, require_redis
from tests.conftest import free_port
from tests.e2e.conftest import API_KEY, QUICK_DELIVERY, ShiftedClock, Stack, eventually
from wxgate.config import Settings, hash_api_key
from wxgate.delivery.template_sync import SYNCED_KINDS
from wxgate.gateway import Gateway
from wxgate.sandbox.config import (
    DEFAULT_APPID,
    DEFAULT_CALLBACK_TOKEN,
    DEFAULT_ENCODING_AES_KEY,
    DEFAULT_MINI_APPID,
    DEFAULT_MINI_SECRET,
    DEFAULT_SECRET,
)
from wxgate.sandbox.control import SandboxControl
from wxgate.sandbox.server import SandboxServer
from wxgate.server import serve_in_background

OA, MINI = "shop", "mini"
APPIDS = {OA: DEFAULT_APPID, MINI: DEFAULT_MINI_APPID}
# Library template 1001 (订单发货通知, one-time) with keywords 1, 2, 3 and 6 (an enum).
ORDER_SHIPPED = b"tid=1001&kidList=1&kidList=2&kidList=3&kidList=6&sceneDesc=shipped"
LONG_TERM = b"tid=1003&kidList=1&kidList=2"  # 预约提醒, a long-term template
DATA = {
    "character_string1": {"value": "XN2024050100123"},
    "thing2": {"value": "无线蓝牙耳机"},
    "time3": {"value": "2024-05-01 15:01"},
    "enum_string6": {"value": "已发货"},
}
SETTLED = frozenset({"delivered", "failed", "unknown", "dead", "rejected"})


@dataclass
class SubscribeStack(Stack):
    """A sandbox and a gateway with an official account (`shop`) and a mini program
    (`mini`), on SQLite or Redis."""

    engine: str = "sqlite"
    prefix: str = ""

    async def start_gateway(self, **overrides: dict[str, Any]) -> None:
        merged = {k: {**self.overrides.get(k, {}), **v} for k, v in overrides.items()}
        self.settings = self.subscribe_settings({**self.overrides, **merged})
        self.gateway = Gateway(self.settings, clock=self.clock)
        await self.gateway.start()
        assert self.gateway.app is not None
        self.server = await serve_in_background(
            self.gateway.app, "127.0.0.1", self.port, settings=self.settings.server
        )
        self._running.append((self.gateway, self.server))
        await self._initial_template_syncs()

    async def _initial_template_syncs(self) -> None:
        """Wait for the template sync a gateway runs at start (a token fetch per app), so
        the sandbox's counters taken next move only for what a test does."""
        assert self.gateway is not None
        if self.gateway.template_sync is None:
            return
        store = self.gateway.backend.template_store()
        deadline = asyncio.get_running_loop().time() + 30.0
        apps = self.settings.apps

        async def synced(app: str) -> bool:
            return len(await store.sync_states(app)) == len(SYNCED_KINDS[apps[app].kind])

        while not all([await synced(app) for app in apps]):
            assert asyncio.get_running_loop().time() < deadline, "no template sync at start"
            await asyncio.sleep(0.05)

    def subscribe_settings(self, overrides: dict[str, dict[str, Any]]) -> Settings:
        common = {
            "api_base": self.sandbox.base_url,
            "callback_token": DEFAULT_CALLBACK_TOKEN,
            "encoding_aes_key": DEFAULT_ENCODING_AES_KEY if self.safe else "",
            "rate_limit_per_s": 5000.0,
            **overrides.get("app", {}),
        }
        storage: dict[str, Any] = {"sqlite_path": str(self.db_path), "sqlite_synchronous": "NORMAL"}
        if self.engine == "redis":
            storage = {"backend": "redis", "redis_url": REDIS_URL, "redis_prefix": self.prefix}
        return Settings(
            server={
                "port": self.port,
                "api_keys": [hash_api_key(API_KEY)],
                "rate_limit_per_key_per_s": 100_000.0,
                "rate_limit_burst": 100_000,
            },
            storage=storage,
            delivery={**QUICK_DELIVERY, **overrides.get("delivery", {})},
            apps={
                OA: {
                    "appid": DEFAULT_APPID,
                    "secret": DEFAULT_SECRET,
                    **common,
                    **overrides.get(OA, {}),
                },
                MINI: {
                    "appid": DEFAULT_MINI_APPID,
                    "secret": DEFAULT_MINI_SECRET,
                    "kind": "miniprogram",
                    **common,
                    **overrides.get(MINI, {}),
                },
            },
        )

    def add_template(self, app: str, form: bytes = ORDER_SHIPPED) -> str:
        """A subscribe template added to the app's account, as its console would."""
        return self.sandbox.wechat.account(APPIDS[app]).subscribe_templates.add(form)

    async def submit(self, app: str, touser: str, template_id: str, **fields: Any) -> str:
        kind = "miniprogram" if app == MINI else "subscribe"
        body = {"app": app, "kind": kind, "touser": touser, "template_id": template_id}
        status, answer = await self.call(
            "POST", "/v1/messages", json={**body, "data": DATA, **fields}
        )
        assert status == 202, answer
        return str(answer["data"]["id"])

    async def grants(self, app: str, touser: str) -> list[dict[str, Any]]:
        status, answer = await self.call("GET", f"/v1/grants?app={app}&touser={touser}")
        assert status == 200, answer
        return list(answer["data"]["items"])

    async def sends(self, kind: str) -> dict[str, int]:
        return dict((await self.stats())["sends_by_kind"][kind])


@pytest.fixture(params=["sqlite", "redis"])
async def make_subscribe_stack(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Any]:
    engine = request.param
    if engine == "redis":
        await require_redis()
    async with AsyncExitStack() as stack:

        async def make(
            *,
            callbacks: bool = True,
            safe: bool = False,
            mini_format: str = "xml",
            **overrides: dict[str, Any],
        ) -> SubscribeStack:
            port = free_port()
            clock = ShiftedClock()
            url = f"http://127.0.0.1:{port}/wechat/callback"
            sandbox = SandboxServer(
                port=0,
                callback_url=f"{url}/{OA}" if callbacks else None,
                miniprogram_callback_url=f"{url}/{MINI}" if callbacks else None,
                callback_mode="safe" if safe else "plain",
                miniprogram_callback_format=mini_format,  # type: ignore[arg-type]
                clock=clock,
            )
            await sandbox.start()
            stack.push_async_callback(sandbox.stop)
            control = SandboxControl(sandbox.base_url)
            stack.push_async_callback(control.close)
            session = await stack.enter_async_context(
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
            )
            prefix = f"{redis_prefix(tmp_path)}-e2e"
            if engine == "redis":
                stack.push_async_callback(delete_prefix, prefix)
            built = SubscribeStack(
                url=f"http://127.0.0.1:{port}",
                port=port,
                db_path=tmp_path / "subscribe.db",
                sandbox=sandbox,
                control=control,
                clock=clock,
                session=session,
                safe=safe,
                overrides=overrides,
                engine=engine,
                prefix=prefix,
            )
            stack.push_async_callback(built.stop_gateway)
            await built.start_gateway()
            return built

        yield make


async def test_popup_accept_then_send_then_sent_event_delivers(make_subscribe_stack: Any):
    stack = await make_subscribe_stack()
    template_id = stack.add_template(OA)
    await stack.control.popup(DEFAULT_APPID, "oAnn", template_id)
    await stack.control.wait_for_callbacks()
    [grant] = await stack.grants(OA, "oAnn")
    assert (grant["template_id"], grant["one_time"], grant["long_term"]) == (template_id, 1, False)

    message_id = await stack.submit(OA, "oAnn", template_id, page="https://shop.example.com/o/1")
    [record] = await stack.settled([message_id], {"delivered"})
    assert record["kind"] == "subscribe"
    assert record["msgid"] is None  # bizsend answers none
    assert record["report_status"] == "success"
    [sent] = [event for event in record["events"] if event["kind"] == "sent"]
    assert "grant: one-time" in sent["note"]
    assert await stack.grants(OA, "oAnn") == []  # the one-time grant is used
    [received] = await stack.inbox(kind="subscribe")
    assert received["page"] == "https://shop.example.com/o/1"
    assert stack.gateway is not None
    labels = {"app": OA, "kind": "subscribe", "outcome": "sent"}
    registry = stack.gateway.metrics.registry
    assert registry.get_sample_value("wxgate_messages_by_kind_total", labels) == 1


async def test_a_mini_program_message_goes_through_subscribe_send(make_subscribe_stack: Any):
    stack = await make_subscribe_stack()
    template_id = stack.add_template(MINI)
    await stack.control.popup(DEFAULT_MINI_APPID, "oBob", template_id)
    await stack.control.wait_for_callbacks()
    message_id = await stack.submit(
        MINI, "oBob", template_id, page="pages/order?id=1", miniprogram_state="trial", lang="en_US"
    )
    [record] = await stack.settled([message_id], {"delivered"})
    assert record["kind"] == "miniprogram" and record["msgid"] is not None
    [received] = await stack.inbox(kind="miniprogram")
    assert (received["msgid"], received["page"]) == (int(record["msgid"]), "pages/order?id=1")
    assert await stack.sends("subscribe") == {}


@pytest.mark.parametrize(("safe", "mini_format"), [(False, "json"), (True, "xml"), (True, "json")])
async def test_a_mini_program_push_in_each_mode_and_encoding_is_applied(
    make_subscribe_stack: Any, safe: bool, mini_format: str
):
    stack = await make_subscribe_stack(safe=safe, mini_format=mini_format)
    template_id = stack.add_template(MINI)
    await stack.control.popup(DEFAULT_MINI_APPID, "oLea", [template_id])
    await stack.control.wait_for_callbacks()
    [grant] = await stack.grants(MINI, "oLea")
    assert grant["one_time"] == 1
    message_id = await stack.submit(MINI, "oLea", template_id)
    [record] = await stack.settled([message_id], {"delivered"})
    assert record["report_status"] == "success"
    callbacks = (await stack.stats())["callbacks"]
    assert callbacks["failed"] == 0 and callbacks["acknowledged"] == callbacks["sent"] == 2


async def test_a_one_time_grant_used_twice_fails_with_43101_and_clears_the_ledger(
    make_subscribe_stack: Any,
):
    stack = await make_subscribe_stack()
    template_id = stack.add_template(OA)
    await stack.control.popup(DEFAULT_APPID, "oCat", template_id)
    await stack.control.wait_for_callbacks()
    first = await stack.submit(OA, "oCat", template_id)
    await stack.settled([first], {"delivered"})
    # The ledger says the grant is spent; put one back as a stale ledger would have it.
    await stack.gateway.backend.grant_store().accept(  # type: ignore[union-attr]
        OA, "oCat", template_id, long_term=False, now=stack.clock.now()
    )
    second = await stack.submit(OA, "oCat", template_id)
    [record] = await stack.settled([second], {"failed"})
    assert record["last_errcode"] == 43101
    assert record["attempts"] == 1  # a RECIPIENT answer: not retried
    assert "grant cleared" in record["events"][-1]["note"]
    assert await stack.grants(OA, "oCat") == []
    assert await stack.sends("subscribe") == {"0": 1, "43101": 1}


async def test_a_long_term_grant_is_marked_and_not_used_up(make_subscribe_stack: Any):
    stack = await make_subscribe_stack(app={"long_term_templates": []})
    template_id = stack.add_template(OA, LONG_TERM)
    assert stack.settings is not None
    stack.settings.apps[OA].long_term_templates.append(template_id)
    await stack.control.popup(DEFAULT_APPID, "oDan", template_id)
    await stack.control.wait_for_callbacks()
    data = {"thing1": {"value": "体检"}, "time2": {"value": "2024-06-01 09:30"}}
    ids = [await stack.submit(OA, "oDan", template_id, data=data) for _ in range(2)]
    records = await stack.settled(ids, {"delivered"})
    assert all("grant: long-term" in r["events"][-2]["note"] for r in records)
    [grant] = await stack.grants(OA, "oDan")
    assert grant["long_term"] is True


async def test_a_reject_in_the_settings_clears_the_grant(make_subscribe_stack: Any):
    stack = await make_subscribe_stack()
    template_id = stack.add_template(OA)
    await stack.control.popup(DEFAULT_APPID, "oEve", template_id)
    await stack.control.wait_for_callbacks()
    assert len(await stack.grants(OA, "oEve")) == 1
    await stack.control.unsubscribe(DEFAULT_APPID, "oEve", template_id)
    await stack.control.wait_for_callbacks()
    assert await stack.grants(OA, "oEve") == []


async def test_enforce_refuses_without_a_wechat_call(make_subscribe_stack: Any):
    stack = await make_subscribe_stack(app={"grant_check": "enforce"})
    template_id = stack.add_template(OA)
    before = await stack.stats()
    message_id = await stack.submit(OA, "oFay", template_id)
    record = await stack.record(message_id)
    assert record["status"] == "failed"
    assert record["last_errmsg"] == "no_grant"
    await asyncio.sleep(0.3)  # a worker that would send has had its chance
    after = await stack.stats()
    assert (after["sends_by_kind"], after["token_fetches_total"]) == (
        before["sends_by_kind"],
        before["token_fetches_total"],
    )
    assert (await stack.record(message_id))["status"] == "failed"


async def test_a_hung_send_is_not_resent_and_is_settled_by_its_sent_event(
    make_subscribe_stack: Any,
):
    stack = await make_subscribe_stack(delivery={"read_timeout_s": 1.0})
    template_id = stack.add_template(OA)
    await stack.control.popup(DEFAULT_APPID, "oGil", template_id)
    await stack.control.wait_for_callbacks()
    await stack.control.set_faults(hang_after_send_rate=1.0)
    message_id = await stack.submit(OA, "oGil", template_id)
    [record] = await stack.settled([message_id], {"delivered"}, timeout_s=15)
    kinds = [event["kind"] for event in record["events"]]
    assert kinds == ["accepted", "unknown", "report"], kinds
    assert record["attempts"] == 1
    assert await stack.sends("subscribe") == {"0": 1}  # carried out once, never again
    assert await stack.grants(OA, "oGil") == []  # delivered: its one-time grant was used


async def test_a_hung_send_without_a_sent_event_stays_unknown(make_subscribe_stack: Any):
    stack = await make_subscribe_stack(callbacks=False, delivery={"read_timeout_s": 1.0})
    template_id = stack.add_template(OA)
    stack.sandbox.wechat.account(DEFAULT_APPID).grants.accept("oHal", template_id, long_term=False)
    await stack.control.set_faults(hang_after_send_rate=1.0)
    message_id = await stack.submit(OA, "oHal", template_id)
    [record] = await stack.settled([message_id], {"unknown"}, timeout_s=15)
    assert record["attempts"] == 1
    await asyncio.sleep(0.5)
    assert (await stack.record(message_id))["status"] == "unknown"
    assert await stack.sends("subscribe") == {"0": 1}


async def test_a_rejected_token_is_renewed_and_the_send_goes_out_once(make_subscribe_stack: Any):
    stack = await make_subscribe_stack()
    template_id = stack.add_template(OA)
    await stack.control.popup(DEFAULT_APPID, "oKim", template_id)
    await stack.control.wait_for_callbacks()
    first = await stack.submit(OA, "oKim", template_id)
    await stack.settled([first], {"delivered"})
    await stack.control.popup(DEFAULT_APPID, "oKim", template_id)
    await stack.control.set_faults(expire_tokens=True)
    second = await stack.submit(OA, "oKim", template_id)
    [record] = await stack.settled([second], {"delivered"})
    assert record["attempts"] == 1
    assert (await stack.sends("subscribe"))["0"] == 2


async def test_a_busy_answer_is_retried(make_subscribe_stack: Any):
    # Attempts enough that a loaded machine cannot spend them all before the fault ends.
    stack = await make_subscribe_stack(delivery={"max_attempts": 1000})
    template_id = stack.add_template(OA)
    await stack.control.popup(DEFAULT_APPID, "oIvy", template_id)
    await stack.control.wait_for_callbacks()
    await stack.control.set_faults(errcode_rates={"-1": 1.0})
    message_id = await stack.submit(OA, "oIvy", template_id)

    async def answered_busy() -> bool:
        return (await stack.sends("subscribe")).get("-1", 0) >= 2

    await eventually(answered_busy, 10, "two busy answers")
    await stack.control.set_faults(errcode_rates={})
    [record] = await stack.settled([message_id], {"delivered"})
    assert record["attempts"] >= 3
    assert (await stack.sends("subscribe"))["0"] == 1


@pytest.mark.parametrize(
    ("app", "account", "errcode"),
    [
        # A mini program's section holding an official account's appid and secret: its
        # token is of the wrong kind for subscribe/send (45103)...
        (MINI, {"appid": DEFAULT_APPID, "secret": DEFAULT_SECRET}, 45103),
        # ...and an official account's holding a mini program's, for bizsend (48001).
        (OA, {"appid": DEFAULT_MINI_APPID, "secret": DEFAULT_MINI_SECRET}, 48001),
    ],
)
async def test_a_token_of_the_wrong_kind_pauses_the_app_as_config(
    make_subscribe_stack: Any, app: str, account: dict[str, str], errcode: int
):
    stack = await make_subscribe_stack(**{app: account})
    template_id = stack.add_template(OA)
    message_id = await stack.submit(app, "oJon", template_id)
    [record] = await stack.settled([message_id], {"dead"})
    assert record["last_errcode"] == errcode
    pause = await stack.pause_of(app)
    assert pause is not None and pause["reason"] == "CONFIG"
    assert await stack.pause_of(MINI if app == OA else OA) is None


RATE = 1000.0
BATCH = 10_000


@pytest.mark.soak  # a minute of sends: make chaos runs it
async def test_ten_thousand_subscribe_notifications_at_the_rate_limit_with_one_token_fetch(
    make_subscribe_stack: Any,
):
    stack = await make_subscribe_stack(
        app={"rate_limit_per_s": RATE, "grant_check": "off"},
        delivery={"concurrency": 128, "batch_size": 512},
    )
    template_id = stack.add_template(OA)
    # One token per account, fetched at start by the template sync (start_gateway
    # waited for it): the 10,000 sends must fetch none of their own.
    fetched_at_start = (await stack.stats())["token_fetches_total"]
    assert fetched_at_start == len(stack.settings.apps)
    openids = [f"oBatch{n:06d}" for n in range(BATCH)]
    grants = stack.sandbox.wechat.account(DEFAULT_APPID).grants
    for openid in openids:
        grants.accept(openid, template_id, long_term=False)
    body = {"app": OA, "kind": "subscribe", "template_id": template_id, "data": DATA}
    started = time.monotonic()
    status, answer = await stack.call(
        "POST", "/v1/messages/batch", json={**body, "recipients": openids}
    )
    assert status == 202, answer
    batch_id = answer["data"]["batch_id"]

    async def counts() -> dict[str, int]:
        _, shown = await stack.call("GET", f"/v1/batches/{batch_id}")
        return dict(shown["data"]["counts"])

    deadline = time.monotonic() + 300  # generous: a loaded CI host is several times slower
    while (await stack.sends("subscribe")).get("0", 0) < BATCH:
        assert time.monotonic() < deadline, await counts()
        await asyncio.sleep(0.2)
    sending_s = time.monotonic() - started
    while (await counts()).get("delivered", 0) < BATCH:
        assert time.monotonic() < deadline, await counts()
        await asyncio.sleep(0.5)
    elapsed = time.monotonic() - started
    stats = await stack.stats()
    assert stats["token_fetches_total"] == fetched_at_start
    assert stats["sends_by_kind"]["subscribe"] == {"0": BATCH}
    assert sending_s >= BATCH / RATE * 0.9
    rate = await stack.control.send_rate(1.0, DEFAULT_APPID)
    busiest = rate["accounts"][DEFAULT_APPID]["busiest"]["sends"]
    assert busiest <= RATE * 1.1, rate
    print(
        f"\n{BATCH} subscribe notifications sent in {sending_s:.1f} s, delivered in "
        f"{elapsed:.1f} s; busiest 1 s: {busiest} (limit {RATE:.0f}/s)"
    )
