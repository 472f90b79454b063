"""The template sync against the sandbox, and the worker's 40037 asking for an early one."""

from __future__ import annotations

import asyncio
from typing import Any

from wxgate.delivery.template_sync import RESYNC_AFTER_40037_S, TemplateSync
from wxgate.wechat.kinds import MessageKind

from .conftest import APP, MakeRig, Rig

KEYWORDS = ["订单号", "快递公司", "发货时间"]


def _sync(rig: Rig) -> TemplateSync:
    return TemplateSync(
        rig.backend.template_store(), {APP: rig.runtime.client}, {APP: rig.app}, rig.clock
    )


async def test_a_sync_stores_each_template_with_its_keys(make_rig: MakeRig) -> None:
    rig = await make_rig()
    template_id = await rig.runtime.client.add_template("TM00303", KEYWORDS)
    results = await _sync(rig).sync_app(APP)
    assert {(r.kind, r.count) for r in results} >= {(MessageKind.TEMPLATE, 1)}
    [template] = [
        t for t in await rig.backend.template_store().templates(APP) if t.template_id == template_id
    ]
    assert [key.name for key in template.keys] == ["character_string1", "thing2", "time4"]
    assert template.title == "订单发货提醒"


async def test_a_failed_sync_keeps_the_templates_and_says_why(
    make_rig: MakeRig, sandbox: Any
) -> None:
    rig = await make_rig()
    await rig.runtime.client.add_template("TM00303", KEYWORDS)
    sync = _sync(rig)
    await sync.sync_app(APP)
    await sandbox.stop()
    [result, *_] = await sync.sync_app(APP)
    assert result.count is None and result.error
    store = rig.backend.template_store()
    assert len(await store.templates(APP)) == 1
    state = (await store.sync_states(APP))[MessageKind.TEMPLATE]
    assert not state.last_ok and state.count == 1


async def test_a_40037_asks_for_one_early_sync(make_rig: MakeRig) -> None:
    rig = await make_rig()
    sync = _sync(rig)
    rig.worker = rig.new_worker(listeners=[sync])
    runner = asyncio.create_task(sync.run())
    try:
        await asyncio.sleep(0.2)  # the start-up sync
        first = (await rig.backend.template_store().sync_states(APP))[MessageKind.TEMPLATE]
        rig.clock.advance(1.0)
        await rig.enqueue("oUSER", template_id="bad_retired")
        await rig.worker.drain()
        for _ in range(100):
            states = await rig.backend.template_store().sync_states(APP)
            if states[MessageKind.TEMPLATE].attempt_at > first.attempt_at:
                break
            await asyncio.sleep(0.02)
        assert states[MessageKind.TEMPLATE].attempt_at == first.attempt_at + 1.0
        sync.request(APP)  # a second 40037 within the minute: no second sync
        assert not sync._wanted
        rig.clock.advance(RESYNC_AFTER_40037_S)
        sync.request(APP)
        assert sync._wanted == {APP}
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def test_a_process_skips_a_periodic_sync_another_one_just_made(make_rig: MakeRig) -> None:
    rig = await make_rig(app={"template_sync_s": 100})
    counted: list[object] = []
    mine = TemplateSync(
        rig.backend.template_store(),
        {APP: rig.runtime.client},
        {APP: rig.app},
        rig.clock,
        on_synced=counted.append,
    )
    runner = asyncio.create_task(mine.run())
    try:
        for _ in range(100):  # the start-up sync: template and subscribe kinds
            if len(counted) == 2:
                break
            await asyncio.sleep(0.02)
        assert len(counted) == 2
        rig.clock.advance(50.0)
        await _sync(rig).sync_app(APP)  # another process, half an interval later
        rig.clock.advance(50.0)  # this one's interval is up
        await asyncio.sleep(0.3)
        assert len(counted) == 2  # skipped: the other's sync is 50 s old
        rig.clock.advance(100.0)
        for _ in range(100):
            if len(counted) == 4:
                break
            await asyncio.sleep(0.02)
        assert len(counted) == 4
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
