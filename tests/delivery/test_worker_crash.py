"""A worker that dies mid-send: its lease expires, another worker takes the message, and
WeChat's client_msg_id de-duplication means the user still receives it once."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from pathlib import Path

from wxgate.backends.base import Status

from .conftest import MakeRig, eventually

HELPER = Path(__file__).with_name("worker_process.py")
REPO = Path(__file__).resolve().parents[2]
LEASE_S = 30.0


async def test_a_lease_of_a_dead_worker_is_taken_again_and_delivered_once(
    make_rig: MakeRig, tmp_path: Path
) -> None:
    rig = await make_rig(delivery={"lease_s": LEASE_S})
    (message_id,) = await rig.enqueue("o_zoe")
    # WeChat takes the message at once but answers late: the worker dies before the answer.
    await rig.control.set_faults(latency_ms=30_000)
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        str(HELPER),
        str(tmp_path / "delivery.db"),
        rig.control.base_url,
        str(LEASE_S),
        cwd=REPO,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:

        async def received() -> bool:
            return len(await rig.inbox(client_msg_id=message_id)) == 1

        await eventually(received, timeout_s=60.0)  # a child starts slowly on busy cores
    finally:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signal.SIGKILL)
        await child.wait()
    leased = await rig.record(message_id)
    assert (leased.status, leased.attempts) == (Status.SENDING, 0)

    await rig.control.set_faults(latency_ms=0)
    rig.clock.advance(time.time() + LEASE_S + 1.0 - rig.clock.now())  # past the dead lease
    assert await rig.worker.drain() == 1

    inbox = await rig.inbox(client_msg_id=message_id)
    assert len(inbox) == 1  # delivered once
    record = await rig.record(message_id)
    assert record.status is Status.SENT
    assert record.msgid == inbox[0]["msgid"]  # the first send's msgid, from the de-duplication
    assert record.attempts == 2  # the expired lease counts as a spent attempt
    assert "lease_expired" in [event.kind for event in record.events]
    assert (await rig.control.stats())["duplicates_absorbed"] == 1
