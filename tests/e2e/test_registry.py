"""The template registry, the suppression list and MsgID-0 reports over real HTTP,
against the sandbox, on both engines (SQLite file and redis-server)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.backends.conftest import REDIS_URL, delete_prefix, redis_prefix, require_redis
from tests.e2e.conftest import APP, MakeStack, Stack, e2e_settings, eventually
from wxgate.config import StorageSettings
from wxgate.gateway import Gateway
from wxgate.sandbox.config import DEFAULT_CALLBACK_TOKEN
from wxgate.server import serve_in_background
from wxgate.wechat.callback import CallbackCodec, event_xml
from wxgate.wechat.callback_events import FollowEvent

SHIPPED_KEYWORDS = ["订单号", "快递公司", "发货时间"]  # TM00303: character_string1, thing2, time4


def shipped_data() -> dict[str, dict[str, str]]:
    return {
        "character_string1": {"value": "SO0000000001"},
        "thing2": {"value": "顺丰速运"},
        "time4": {"value": "2026-11-29 10:30"},
    }


@pytest.fixture(params=["sqlite", "redis"])
async def stack(
    request: pytest.FixtureRequest, make_stack: MakeStack, tmp_path: Path
) -> AsyncIterator[Stack]:
    """A sandbox and a gateway storing in the engine of the param."""
    e2e = await make_stack(start=False)
    settings = e2e_settings(
        port=e2e.port, db_path=e2e.db_path, api_base=e2e.sandbox.base_url, safe=False
    )
    prefix = None
    if request.param == "redis":
        await require_redis()
        prefix = f"{redis_prefix(tmp_path)}-e2e"
        storage = StorageSettings(backend="redis", redis_url=REDIS_URL, redis_prefix=prefix)
        settings = settings.model_copy(update={"storage": storage})
    e2e.settings = settings
    e2e.gateway = Gateway(settings, clock=e2e.clock)
    await e2e.gateway.start()
    assert e2e.gateway.app is not None
    e2e.server = await serve_in_background(
        e2e.gateway.app, "127.0.0.1", e2e.port, settings=settings.server
    )
    e2e._running.append((e2e.gateway, e2e.server))
    yield e2e
    await e2e.stop_gateway()
    if prefix is not None:
        await delete_prefix(prefix)


async def add_shipped_template(stack: Stack) -> str:
    """Add TM00303 to the sandbox account and sync the registry; its template_id."""
    assert stack.gateway is not None and stack.gateway.template_sync is not None
    template_id = await stack.gateway.clients[APP].add_template("TM00303", SHIPPED_KEYWORDS)
    await stack.gateway.template_sync.sync_app(APP)
    return template_id


async def post(stack: Stack, **body: Any) -> tuple[int, Any]:
    return await stack.call("POST", "/v1/messages", json=body)


def error_locs(answer: dict[str, Any]) -> list[list[Any]]:
    return [error["loc"] for error in answer["data"]["errors"]]


async def test_an_unknown_template_is_refused_naming_template_id(stack: Stack) -> None:
    await add_shipped_template(stack)
    status, answer = await post(
        stack, touser="oUSER1", template_id="tpl_nobody_added", data=shipped_data()
    )
    assert status == 400, answer
    assert error_locs(answer) == [["body", "template_id"]]
    assert "not a template template of this app" in answer["data"]["errors"][0]["msg"]


async def test_an_unknown_key_and_a_missing_key_are_refused_by_name(stack: Stack) -> None:
    template_id = await add_shipped_template(stack)
    data = shipped_data()
    del data["time4"]
    data["thing9"] = {"value": "extra"}
    status, answer = await post(stack, touser="oUSER1", template_id=template_id, data=data)
    assert status == 400, answer
    assert sorted(error_locs(answer)) == [["body", "data", "thing9"], ["body", "data", "time4"]]
    assert (await stack.stats())["sends"] == {}


async def test_a_message_that_fits_its_template_is_delivered(stack: Stack) -> None:
    template_id = await add_shipped_template(stack)
    status, answer = await post(
        stack, touser="oUSER1", template_id=template_id, data=shipped_data()
    )
    assert status == 202, answer
    [record] = await stack.settled([answer["data"]["id"]])
    assert record["status"] == "delivered"


async def test_the_templates_route_lists_the_synced_keys(stack: Stack) -> None:
    template_id = await add_shipped_template(stack)
    status, answer = await stack.call("GET", f"/v1/templates?app={APP}")
    assert status == 200, answer
    [item] = answer["data"]["items"]
    assert item["template_id"] == template_id
    assert [(k["name"], k["type"]) for k in item["keys"]] == [
        ("character_string1", "character_string"),
        ("thing2", "thing"),
        ("time4", "time"),
    ]
    syncs = {sync["kind"]: sync for sync in answer["data"]["syncs"]}
    assert syncs["template"]["last_ok"] and syncs["template"]["count"] == 1


async def test_template_check_off_lets_an_unknown_key_through(make_stack: MakeStack) -> None:
    stack = await make_stack(app={"template_check": "off"})
    template_id = await add_shipped_template(stack)
    data = {**shipped_data(), "thing9": {"value": "extra"}}
    status, answer = await post(stack, touser="oUSER1", template_id=template_id, data=data)
    assert status == 202, answer


async def suppression_of(stack: Stack, openid: str) -> list[dict[str, Any]]:
    status, answer = await stack.call("GET", f"/v1/suppressions?app={APP}&touser={openid}")
    assert status == 200, answer
    return list(answer["data"]["items"])


async def push_follow(stack: Stack, openid: str, followed: bool) -> None:
    """A signed subscribe/unsubscribe event, as WeChat pushes it."""
    event = FollowEvent("gh_sandbox", openid, int(time.time()), followed=followed)
    codec = CallbackCodec(DEFAULT_CALLBACK_TOKEN, "wx-unused", "")
    query, body = codec.seal(event_xml(event), str(int(stack.clock.now())), f"n{time.time_ns()}")
    status, answer = await stack.call(
        "POST", f"/wechat/callback/{APP}", key=None, params=query, data=body
    )
    assert (status, answer) == (200, "success")


async def test_after_43004_the_next_message_ends_suppressed_without_a_send(stack: Stack) -> None:
    openid = "unfollowed_reader"
    [first] = await stack.settled([await stack.send(openid)])
    assert first["last_errcode"] == 43004
    await eventually(lambda: _suppressed(stack, openid), what="the suppression")
    sends_before = (await stack.stats())["sends"]
    status, answer = await post(stack, touser=openid, template_id="tpl_order", data=_order())
    assert status == 202, answer
    assert answer["data"]["status"] == "suppressed"
    record = await stack.record(answer["data"]["id"])
    assert record["status"] == "suppressed"
    assert "not_following" in record["events"][-1]["note"]
    assert (await stack.stats())["sends"] == sends_before
    [entry] = await suppression_of(stack, openid)
    assert (entry["reason"], entry["errcode"]) == ("not_following", 43004)


async def test_a_subscribe_event_lifts_the_suppression(stack: Stack) -> None:
    openid = "unfollowed_returns"
    await stack.settled([await stack.send(openid)])
    await eventually(lambda: _suppressed(stack, openid), what="the suppression")
    await push_follow(stack, openid, followed=True)
    assert await suppression_of(stack, openid) == []
    status, answer = await post(stack, touser=openid, template_id="tpl_order", data=_order())
    assert (status, answer["data"]["status"]) == (202, "queued")


async def test_an_unsubscribe_event_suppresses(stack: Stack) -> None:
    await push_follow(stack, "oLEAVER", followed=False)
    [entry] = await suppression_of(stack, "oLEAVER")
    assert entry["reason"] == "unfollowed"


async def test_a_user_block_report_suppresses_the_recipient(stack: Stack) -> None:
    openid = "blocked_reader"
    [record] = await stack.settled([await stack.send(openid)])
    assert record["status"] == "rejected"
    await eventually(lambda: _suppressed(stack, openid), what="the suppression")
    [entry] = await suppression_of(stack, openid)
    assert entry["reason"] == "user_block"


async def test_an_imported_list_suppresses_and_an_operator_lifts(stack: Stack) -> None:
    status, answer = await stack.call(
        "POST", "/v1/suppressions", json={"app": APP, "openids": ["oA1", "oA2", "oA1"]}
    )
    assert (status, answer["data"]["added"]) == (200, 2), answer
    status, answer = await post(stack, touser="oA2", template_id="tpl_order", data=_order())
    assert answer["data"]["status"] == "suppressed"
    status, answer = await stack.call("DELETE", f"/v1/suppressions/{APP}/oA2")
    assert status == 200, answer
    status, answer = await stack.call("DELETE", f"/v1/suppressions/{APP}/oA2")
    assert status == 404, answer
    status, answer = await stack.call("GET", f"/v1/suppressions?app={APP}")
    assert [item["openid"] for item in answer["data"]["items"]] == ["oA1"]


async def test_a_msgid_0_report_settles_the_one_matching_message(stack: Stack) -> None:
    await stack.control.set_faults(report_zero_msgid=True)
    [record] = await stack.settled([await stack.send("oZERO")])
    assert record["status"] == "delivered"
    metrics = await stack.call("GET", "/metrics")
    assert 'result="matched_by_recipient"' in metrics[1]


async def _suppressed(stack: Stack, openid: str) -> bool:
    return bool(await suppression_of(stack, openid))


def _order() -> dict[str, dict[str, str]]:
    return {"thing2": {"value": "anything"}}
