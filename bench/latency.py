"""Case 7, latency: how much of its window a sender fills when WeChat answers in tens of ms.

Every other case measures CPU against a sandbox that answers in microseconds. Here
the sandbox holds every send for `--latency-ms` (30 by default: the sandbox's
`latency_ms` fault), so throughput is decided by the sends kept in flight:

- the raw aiohttp client (the ceiling's child) with C sends in flight, for C = 64 and
  512: the most that window can carry on this core;
- a `wxgate serve --role worker` with `concurrency = C` emptying a pre-filled queue,
  on each engine, from the first send until the driver reads every message as
  durably sent; its ratio to the raw client at the same C is taken within the round;
- `concurrency = "auto"` (the default) at 1, 30 and 200 ms against an app limited to
  AUTO_RATE messages/s: the steady rate the sandbox sees, as a share of that limit.

The auto rows are a case of their own (`--cases auto`). Peers (wechatpy, Celery) are
in `bench/latency_peers.py`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from bench.case import Bench, Case
from bench.delivery import prefill
from bench.procs import MEASURED_CORE, cpu_seconds, run_child
from bench.results import Spec, Target

WINDOWS = (64, 512)
AUTO_LATENCIES_MS = (1.0, 30.0, 200.0)
AUTO_RATE = 1_000  # the app's rate_limit_per_s in the auto rows: 200 in flight at 200 ms
RATIO_TARGET = 0.9


def _raw_spec(window: int) -> Spec:
    return Spec(
        f"latency.raw.{window}",
        "7 latency",
        f"raw aiohttp client, {window} sends in flight",
        "sends/s",
        short=f"raw at {window}",
    )


def _wxgate_spec(engine: str, window: int) -> Spec:
    return Spec(
        f"latency.{engine}.{window}",
        "7 latency",
        f"wxgate worker, concurrency = {window}, {engine}",
        "msgs/s",
        ratio_to=f"latency.raw.{window}",
    )


def _ratio_spec(engine: str, window: int) -> Spec:
    return Spec(
        f"latency.{engine}.{window}.vs_raw",
        "7 latency",
        f"wxgate over raw at {window} in flight, {engine}, same round",
        "×",
        Target(">=", RATIO_TARGET),
    )


def _auto_spec(engine: str, latency_ms: float) -> Spec:
    return Spec(
        f"latency.auto.{engine}.{latency_ms:g}ms",
        "7 latency",
        f'wxgate, concurrency = "auto", {latency_ms:g} ms, {engine}: share of the app limit',
        "×",
        Target(">=", RATIO_TARGET),
    )


ENGINES = ("sqlite", "redis")
SPECS = (
    *(_raw_spec(window) for window in WINDOWS),
    *(_wxgate_spec(engine, window) for engine in ENGINES for window in WINDOWS),
    *(_ratio_spec(engine, window) for engine in ENGINES for window in WINDOWS),
)
AUTO_SPECS = tuple(_auto_spec(engine, ms) for engine in ENGINES for ms in AUTO_LATENCIES_MS)


@contextlib.asynccontextmanager
async def delayed(bench: Bench, latency_ms: float) -> AsyncIterator[None]:
    """The sandbox answering every send `latency_ms` late, for the duration."""
    await bench.sandbox.control.reset()
    await bench.sandbox.control.set_faults(latency_ms=latency_ms)
    try:
        yield
    finally:
        await bench.sandbox.control.set_faults(latency_ms=0)


async def _raw(bench: Bench, window: int) -> float:
    seconds = bench.sizes.latency_seconds
    args = ["send", bench.sandbox.url, str(seconds), str(window)]
    async with delayed(bench, bench.latency_ms):
        token = await bench.sandbox.token()
        result, _ = await run_child(bench.workdir, "ceiling", args, MEASURED_CORE, token)
    rate = result["sends"] / seconds
    bench.note("latency", sender="raw", window=window, rate=rate, cpu_s=result["cpu_s"])
    return rate


async def _wxgate(bench: Bench, engine: str, window: int) -> float:
    count = bench.sizes.latency_sends
    delivery = {"concurrency": window}
    async with (
        delayed(bench, bench.latency_ms),
        bench.gateway(engine, "worker", prefill(count), delivery=delivery) as (gateway, probe),
    ):
        timeout = 60 + count / 100
        started = await bench.sandbox.wait_for_sends(1, timeout, poll_s=0.005)
        cpu_started = cpu_seconds(gateway.pid)
        finished = await probe.wait_for_sent(count, timeout, poll_s=0.01)
        cpu = cpu_seconds(gateway.pid) - cpu_started
    rate = count / (finished - started)
    bench.note(
        "latency",
        sender="wxgate",
        engine=engine,
        window=window,
        messages=count,
        rate=rate,
        gateway_cpu_ms_per_message=1000 * cpu / count,
    )
    return rate


async def _auto(bench: Bench, engine: str, latency_ms: float) -> float:
    """The steady send rate of a default-configured worker over the app's limit: the
    sandbox's count between a fifth and four fifths of the queue, so the token bucket's
    first burst and the last sends' tail are left out."""
    count = int(AUTO_RATE * bench.sizes.auto_seconds)
    async with (
        delayed(bench, latency_ms),
        bench.gateway(engine, "worker", prefill(count), app_rate=AUTO_RATE) as (_, probe),
    ):
        timeout = 60 + count / 50
        begin = count // 5
        started = await bench.sandbox.wait_for_sends(begin, timeout, poll_s=0.005)
        finished = await bench.sandbox.wait_for_sends(count - begin, timeout, poll_s=0.005)
        await probe.wait_for_sent(count, timeout)
    rate = (count - 2 * begin) / (finished - started)
    bench.note("latency", sender="auto", engine=engine, latency_ms=latency_ms, rate=rate)
    return rate / AUTO_RATE


async def measure(bench: Bench) -> dict[str, float]:
    figures: dict[str, float] = {}
    for window in WINDOWS:
        raw = figures[f"latency.raw.{window}"] = await _raw(bench, window)
        for engine in bench.engines:
            rate = figures[f"latency.{engine}.{window}"] = await _wxgate(bench, engine, window)
            figures[f"latency.{engine}.{window}.vs_raw"] = rate / raw
    return figures


async def measure_auto(bench: Bench) -> dict[str, float]:
    figures: dict[str, float] = {}
    for engine in bench.engines:
        for latency_ms in AUTO_LATENCIES_MS:
            key = f"latency.auto.{engine}.{latency_ms:g}ms"
            figures[key] = await _auto(bench, engine, latency_ms)
    return figures


CASE = Case("latency", SPECS, measure)
AUTO_CASE = Case("auto", AUTO_SPECS, measure_auto)
