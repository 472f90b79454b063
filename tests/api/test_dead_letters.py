"""POST /v1/dead-letters/replay and the apps resource."""

from __future__ import annotations

import time

from wxgate.backends.base import Outcome, Pause, Status

from .conftest import CALLBACK_TOKEN, Gateway, message_body


async def accepted(gateway: Gateway, touser: str) -> str:
    _, body, _ = await gateway.post("/v1/messages", message_body(touser=touser))
    message_id: str = body["data"]["id"]
    return message_id


async def statuses(gateway: Gateway, ids: list[str]) -> list[Status]:
    records = [await gateway.backend.get(message_id) for message_id in ids]
    return [record.status for record in records if record is not None]


async def test_replay_moves_every_dead_letter_back_to_queued(gateway: Gateway) -> None:
    dead = [await accepted(gateway, f"oD{n}") for n in range(2)]
    failed = await accepted(gateway, "oF")
    for message_id in dead:
        await gateway.settle(message_id, Outcome.DEAD, errcode=-1)
    await gateway.settle(failed, Outcome.FAILED, errcode=43004)
    status, body, _ = await gateway.post("/v1/dead-letters/replay", {})
    assert status == 200 and body["data"]["replayed"] == 2
    assert await statuses(gateway, [*dead, failed]) == [Status.QUEUED, Status.QUEUED, Status.FAILED]


async def test_replay_filters_by_errcode(gateway: Gateway) -> None:
    config = await accepted(gateway, "oC")
    transient = await accepted(gateway, "oT")
    await gateway.settle(config, Outcome.DEAD, errcode=48001)
    await gateway.settle(transient, Outcome.DEAD, errcode=-1)
    _, body, _ = await gateway.post("/v1/dead-letters/replay", {"errcode": 48001})
    assert body["data"]["replayed"] == 1
    assert await statuses(gateway, [config, transient]) == [Status.QUEUED, Status.DEAD]


async def test_replay_resumes_an_app_paused_for_config(gateway: Gateway) -> None:
    now = time.time()
    await gateway.backend.pause_app(Pause("default", "CONFIG", since=now, errcode=48001))
    _, body, _ = await gateway.post("/v1/dead-letters/replay", {"app": "default"})
    assert body["data"]["resumed"] == ["default"]
    assert await gateway.backend.pauses(time.time()) == {}


async def test_replay_leaves_a_quota_pause_alone(gateway: Gateway) -> None:
    now = time.time()
    await gateway.backend.pause_app(Pause("default", "QUOTA", since=now, until=now + 3600))
    _, body, _ = await gateway.post("/v1/dead-letters/replay", {})
    assert body["data"]["resumed"] == []
    assert "default" in await gateway.backend.pauses(time.time())


async def test_replay_for_an_unknown_app_is_400(gateway: Gateway) -> None:
    status, body, _ = await gateway.post("/v1/dead-letters/replay", {"app": "nope"})
    assert status == 400 and body["data"]["errors"][0]["loc"] == ["body", "app"]


async def test_apps_show_config_and_pause_but_no_secret(gateway: Gateway) -> None:
    await gateway.backend.pause_app(Pause("default", "CONFIG", since=time.time(), errcode=48001))
    status, body, reply = await gateway.get("/v1/apps")
    assert status == 200
    [app] = body["data"]["items"]
    assert app["app"] == "default" and app["token_mode"] == "stable"
    assert app["rate_limit_per_s"] == 200.0
    assert app["pause"]["reason"] == "CONFIG" and app["pause"]["errcode"] == 48001
    assert b"app-secret-for-tests" not in reply.raw and CALLBACK_TOKEN.encode() not in reply.raw


async def test_resume_lifts_a_pause_once(gateway: Gateway) -> None:
    await gateway.backend.pause_app(Pause("default", "CONFIG", since=time.time()))
    _, first, _ = await gateway.post("/v1/apps/default/resume")
    _, second, _ = await gateway.post("/v1/apps/default/resume")
    assert (first["data"]["resumed"], second["data"]["resumed"]) == (True, False)


async def test_resume_of_an_unknown_app_is_404(gateway: Gateway) -> None:
    status, _, _ = await gateway.post("/v1/apps/nope/resume")
    assert status == 404
