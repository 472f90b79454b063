"""A subscribe message whose previous lease expired is settled unknown, not sent again
(it has no client_msg_id for WeChat to de-duplicate a second send)."""

from __future__ import annotations

from tests.delivery.conftest import APP, MakeRig
from wxgate.backends.base import NewMessage, Status
from wxgate.delivery.expired_subscribe_lease import EXPIRED_NOTE, ExpiredSubscribeLease
from wxgate.wechat.kinds import MessageKind

PAYLOAD = {
    "touser": "o_sub",
    "template_id": "PRI_tmpl",
    "data": {"thing1": {"value": "parcel 42"}},
}


async def test_a_subscribe_message_after_an_expired_lease_is_unknown_not_resent(
    make_rig: MakeRig,
) -> None:
    rig = await make_rig()
    message = NewMessage(APP, dict(PAYLOAD), kind=MessageKind.SUBSCRIBE)
    await rig.backend.enqueue([message], rig.clock.now())
    [_] = await rig.backend.lease_batch("killed-worker", 10, 5.0, rig.clock.now())
    rig.clock.advance(6.0)
    before = await rig.control.stats()

    worker = rig.new_worker(checks=[ExpiredSubscribeLease(rig.backend)])
    assert await worker.drain() == 1

    record = await rig.record(message.id)
    assert record.status is Status.UNKNOWN
    assert record.events[-1].note == EXPIRED_NOTE
    after = await rig.control.stats()
    assert after["sends_by_kind"] == before["sends_by_kind"]


async def test_a_template_message_after_an_expired_lease_is_sent_again(make_rig: MakeRig) -> None:
    rig = await make_rig()
    [message_id] = await rig.enqueue("o_tpl")
    await rig.backend.lease_batch("killed-worker", 10, 5.0, rig.clock.now())
    rig.clock.advance(6.0)
    worker = rig.new_worker(checks=[ExpiredSubscribeLease(rig.backend)])
    assert await worker.drain() == 1
    assert (await rig.record(message_id)).status is Status.SENT
