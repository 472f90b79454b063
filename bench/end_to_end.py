"""Case 4, end to end: messages posted to the gateway's API until every one is sent.

A `wxgate serve --role all` process (API and worker in one, the SQLite
deployment) alone on the measured core; the load generator on the other core
beside the sandbox. Three measurements, each on a fresh gateway and file:
- single messages, 64 concurrent clients: messages/s from the first POST to the
  moment all N are durably `sent`, as a ratio to wechatpy sending sequentially
  (what a team without the gateway does);
- the same through the batch endpoint (1,000 recipients a batch); the rate the
  batch endpoint accepted them (all 202s in) is its own figure;
- intake latency of single messages at a fixed offered rate (open loop), p50/p99.
"""

from __future__ import annotations

import time

from bench.case import Bench, Case
from bench.procs import LOAD_CORE, Child, cpu_seconds
from bench.results import Spec, Target

ENGINE = "sqlite"
BATCH_CONCURRENCY = 4
PACED_CONNECTIONS = 64

SPECS = (
    Spec(
        "e2e.singles",
        "4 end to end",
        "POST /v1/messages, 64 clients, until sent",
        "msgs/s",
        Target(">=", 5, on_ratio=True),
        ratio_to="peer.sequential",
    ),
    Spec(
        "e2e.batch",
        "4 end to end",
        "POST /v1/messages/batch ×1,000, until sent",
        "msgs/s",
        Target(">=", 5, on_ratio=True),
        ratio_to="peer.sequential",
    ),
    Spec(
        "e2e.singles.per_cpu",
        "4 end to end",
        "POST /v1/messages until sent, per gateway CPU-second",
        "msgs/CPU-s",
        Target(">=", 5, on_ratio=True),
        ratio_to="peer.sequential.per_cpu",
        chart="per_cpu",
    ),
    Spec(
        "e2e.batch.per_cpu",
        "4 end to end",
        "POST /v1/messages/batch until sent, per gateway CPU-second",
        "msgs/CPU-s",
        Target(">=", 5, on_ratio=True),
        ratio_to="peer.sequential.per_cpu",
        chart="per_cpu",
    ),
    Spec(
        "e2e.batch_intake",
        "4 end to end",
        "batch endpoint intake (202s in)",
        "msgs/s",
        Target(">=", 20_000),
    ),
    Spec("e2e.p50", "4 end to end", "intake p50 at 2,000 req/s, --role api", "ms", chart="latency"),
    Spec(
        "e2e.p99",
        "4 end to end",
        "intake p99 at 2,000 req/s, --role api",
        "ms",
        Target("<", 10),
        chart="latency",
    ),
    Spec(
        "e2e.p50_all",
        "4 end to end",
        "intake p50 at 2,000 req/s, --role all (delivering)",
        "ms",
        chart="latency",
    ),
    Spec(
        "e2e.p99_all",
        "4 end to end",
        "intake p99 at 2,000 req/s, --role all (delivering)",
        "ms",
        chart="latency",
    ),
)


async def _until_sent(
    bench: Bench, kind: str, args: list[str], count: int
) -> tuple[float, float, float]:
    """(messages/s until all sent, messages/s accepted, messages per gateway CPU-second)
    for one load generator run."""
    await bench.sandbox.control.reset()
    async with bench.gateway(ENGINE, "all") as (gateway, probe):
        load_args = [kind, gateway.url, *args]
        child = await Child.start(bench.workdir, "load", load_args, LOAD_CORE, gateway.key)
        cpu_started = cpu_seconds(gateway.pid)
        started = await _go(child)
        result = await child.result()
        timeout = 60 + count / 500
        await bench.sandbox.wait_for_sends(count, timeout)
        finished = await probe.wait_for_sent(count, timeout, poll_s=0.02)
        cpu = cpu_seconds(gateway.pid) - cpu_started
    if result["errors"]:
        raise RuntimeError(f"{kind}: {result['errors']} refused: {result['first_errors']}")
    seconds = finished - started
    bench.note(
        "end_to_end",
        kind=kind,
        messages=count,
        seconds_until_sent=seconds,
        intake_seconds=result["seconds"],
        gateway_cpu_ms_per_message=1000 * cpu / count,
    )
    return count / seconds, count / result["seconds"], count / cpu


async def _go(child: Child) -> float:
    started = time.monotonic()
    child.go()
    return started


async def _paced(bench: Bench, role: str) -> tuple[float, float]:
    """(p50, p99) in ms of single messages posted at the fixed rate to a gateway of `role`."""
    sizes = bench.sizes
    await bench.sandbox.control.reset()
    async with bench.gateway(ENGINE, role) as (gateway, _):
        args = ["paced", gateway.url]
        args += [str(sizes.paced_rate), str(sizes.paced_seconds), str(PACED_CONNECTIONS)]
        child = await Child.start(bench.workdir, "load", args, LOAD_CORE, gateway.key)
        cpu_started = cpu_seconds(gateway.pid)
        await _go(child)
        result = await child.result()
        cpu = cpu_seconds(gateway.pid) - cpu_started
    if result["errors"]:
        raise RuntimeError(f"paced: {result['errors']} refused: {result['first_errors']}")
    result.pop("first_errors")
    bench.note(
        "end_to_end",
        kind=f"paced, --role {role}",
        **result,
        gateway_cpu_ms_per_request=1000 * cpu / result["requests"],
    )
    return result["p50_ms"], result["p99_ms"]


async def measure(bench: Bench) -> dict[str, float]:
    sizes = bench.sizes
    singles, _, singles_per_cpu = await _until_sent(
        bench, "post", [str(sizes.posts), str(sizes.concurrency)], sizes.posts
    )
    batch_args = [str(sizes.batch_messages), str(sizes.batch_size), str(BATCH_CONCURRENCY)]
    batch, intake, batch_per_cpu = await _until_sent(
        bench, "batch", batch_args, sizes.batch_messages
    )
    figures = {
        "e2e.singles": singles,
        "e2e.batch": batch,
        "e2e.batch_intake": intake,
        "e2e.singles.per_cpu": singles_per_cpu,
        "e2e.batch.per_cpu": batch_per_cpu,
    }
    figures["e2e.p50"], figures["e2e.p99"] = await _paced(bench, "api")
    figures["e2e.p50_all"], figures["e2e.p99_all"] = await _paced(bench, "all")
    return figures


CASE = Case("end_to_end", SPECS, measure)
