"""Case 6, memory: the resident size of a gateway holding 1,000,000 queued messages.

The sandbox is given a daily quota of 0, so the first send is answered 45009 and
the gateway pauses the app until the quota resets, as it would in production;
then 1,000,000 messages arrive through the batch endpoint (10,000 a batch) and
wait. The figure is VmRSS of the `wxgate serve --role all` process (SQLite) once
all are stored; the peak (VmHWM) and the rate the batches were taken in are kept
in the JSON.
"""

from __future__ import annotations

import asyncio
import time

from bench.case import Bench, Case
from bench.payload import wechat_message
from bench.procs import LOAD_CORE, Gateway, memory_bytes, run_child
from bench.results import Spec, Target
from wxgate.backends.base import Status

MB = 1024 * 1024
PAUSE_TIMEOUT_S = 30.0
BATCH_CONCURRENCY = 2

SPECS = (
    Spec(
        "memory.rss",
        "6 memory",
        "gateway RSS, 1,000,000 queued, app paused",
        "MB",
        Target("<", 250),
        chart="memory",
    ),
)


async def _wait_for_pause(gateway: Gateway) -> None:
    deadline = time.monotonic() + PAUSE_TIMEOUT_S
    while time.monotonic() < deadline:
        [app] = (await gateway.get_json("/v1/apps"))["data"]["items"]
        if app["pause"] is not None:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError("the app did not pause on 45009")


async def measure(bench: Bench) -> dict[str, float]:
    sizes = bench.sizes
    count = sizes.memory_messages
    await bench.sandbox.control.reset()
    await bench.sandbox.control.set_faults(daily_quota=0)
    async with bench.gateway("sqlite", "all") as (gateway, probe):
        await gateway.post_json("/v1/messages", wechat_message(-1))
        await _wait_for_pause(gateway)
        idle = memory_bytes(gateway.pid)
        args = ["batch", gateway.url, str(count), str(sizes.memory_batch_size)]
        result, seconds = await run_child(
            bench.workdir, "load", [*args, str(BATCH_CONCURRENCY)], LOAD_CORE, gateway.key
        )
        queued = (await probe.backend.counts())[Status.QUEUED]
        memory = memory_bytes(gateway.pid)
        database = gateway.config.storage.sqlite_path
        on_disk = sum(path.stat().st_size for path in database.parent.glob(f"{database.name}*"))
    if result["errors"] or queued != count + 1:
        raise RuntimeError(f"memory: {queued} queued, {result['errors']} refused")
    bench.note(
        "memory",
        queued=queued,
        rss_before_mb=idle["VmRSS"] / MB,
        rss_mb=memory["VmRSS"] / MB,
        peak_rss_mb=memory["VmHWM"] / MB,
        database_mb=on_disk / MB,
        batch_intake_msgs_per_s=count / result["seconds"],
        seconds=seconds,
    )
    return {"memory.rss": memory["VmRSS"] / MB}


CASE = Case("memory", SPECS, measure)
