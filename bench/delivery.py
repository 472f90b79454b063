"""Case 3, worker delivery: a `wxgate serve --role worker` process emptying a pre-filled queue.

The driver enqueues N messages through the Backend protocol before the worker
starts; the worker (alone on the measured core, like the ceiling's client)
leases, sends and settles them. The rate runs from the sandbox's first send to
the moment the driver reads all N as durably `sent` in storage, so start-up is
not counted and the last settle is. Given as a ratio to the ceiling, which sends
from the same core to the same sandbox without storing anything.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from bench.case import Bench, Case
from bench.payload import wechat_message
from bench.procs import cpu_seconds
from bench.results import Spec, Target
from wxgate.backends.base import Backend, NewMessage

PREFILL_CHUNK = 1_000
APP = "default"


def _spec(engine: str) -> Spec:
    return Spec(
        f"delivery.{engine}",
        "3 worker",
        f"worker deliveries from a full queue, {engine}",
        "msgs/s",
        Target(">=", 0.6, on_ratio=True),
        ratio_to="ceiling",
    )


def _per_cpu_spec(engine: str) -> Spec:
    return Spec(
        f"delivery.{engine}.per_cpu",
        "3 worker",
        f"worker deliveries per CPU-second, {engine}",
        "msgs/CPU-s",
        Target(">=", 0.6, on_ratio=True),
        ratio_to="ceiling.per_cpu",
        chart="per_cpu",
    )


SPECS = (_spec("sqlite"), _spec("redis"), _per_cpu_spec("sqlite"), _per_cpu_spec("redis"))


def prefill(count: int) -> Callable[[Backend], Awaitable[None]]:
    """`count` messages to the default app, enqueued in chunks, for a worker to empty."""

    async def fill(backend: Backend) -> None:
        for first in range(0, count, PREFILL_CHUNK):
            last = min(count, first + PREFILL_CHUNK)
            batch = [NewMessage(APP, wechat_message(n)) for n in range(first, last)]
            await backend.enqueue(batch, time.time())

    return fill


async def _deliver(bench: Bench, engine: str) -> tuple[float, float]:
    count = bench.sizes.deliveries
    await bench.sandbox.control.reset()
    async with bench.gateway(engine, "worker", prefill=prefill(count)) as (gateway, probe):
        timeout = 60 + count / 500
        started = await bench.sandbox.wait_for_sends(1, timeout, poll_s=0.005)
        cpu_started = cpu_seconds(gateway.pid)
        await bench.sandbox.wait_for_sends(count, timeout)
        finished = await probe.wait_for_sent(count, timeout, poll_s=0.02)
        cpu = cpu_seconds(gateway.pid) - cpu_started
    seconds = finished - started
    bench.note(
        "delivery",
        engine=engine,
        messages=count,
        seconds=seconds,
        gateway_cpu_s=cpu,
        gateway_cpu_ms_per_message=1000 * cpu / count,
    )
    return count / seconds, count / cpu


async def measure(bench: Bench) -> dict[str, float]:
    figures = {}
    for engine in bench.engines:
        rate, per_cpu = await _deliver(bench, engine)
        figures[f"delivery.{engine}"] = rate
        figures[f"delivery.{engine}.per_cpu"] = per_cpu
    return figures


CASE = Case("delivery", SPECS, measure)
