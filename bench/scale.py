"""Case 3b, scale-out on Redis: one, then two `wxgate serve --role worker` processes
emptying one pre-filled queue (the same config file, key prefix and consumer group).

One worker runs on the measured core, like case 3; two run unpinned (the OS spreads
them over both cores, beside the sandbox and redis-server) and, to tell an extra core
from extra concurrency, both on the measured core. The rate counts the sends the
sandbox answers from the moment every worker is up and sending until the driver reads
all N as durably `sent`. Each round notes the CPU seconds of every process involved
and of each core, so the table can say what the figure ran out of.

The cluster rows run the same drains (one worker on the measured core, two unpinned)
on a three-primary Redis Cluster started on loopback for the case (`redis_cluster =
true`), with the queue in one partition and in three (`redis_partitions`, one per
primary), noting each primary's CPU seconds and commands per message: the capacity
model of docs/performance.md, "Redis Cluster", is built from them. Skipped, saying why,
without redis-server and redis-cli.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.case import Bench, Case
from bench.delivery import prefill
from bench.procs import (
    MEASURED_CORE,
    GatewayConfig,
    Storage,
    StorageProbe,
    cpu_seconds,
    start_gateways,
)
from bench.results import Spec
from tests.backends.redis_cluster import cluster_missing, running_cluster

ENGINE = "redis"
# figure key suffix -> (what it is, the cores of its workers: None is unpinned)
VARIANTS: dict[str, tuple[str, tuple[int | None, ...]]] = {
    "1": (f"1 worker on core {MEASURED_CORE}", (MEASURED_CORE,)),
    "2": ("2 workers, unpinned", (None, None)),
    "2.core1": (f"2 workers, both on core {MEASURED_CORE}", (MEASURED_CORE, MEASURED_CORE)),
}
CASE_LABEL = "3b scale-out"


CLUSTER = "3-primary Redis Cluster"
# figure key suffix -> (what it is, the cores of its workers, the queue's partitions)
CLUSTER_VARIANTS: dict[str, tuple[str, tuple[int | None, ...], int]] = {
    "1": (f"1 worker on core {MEASURED_CORE}, 1 partition", (MEASURED_CORE,), 1),
    "2": ("2 workers, unpinned, 1 partition", (None, None), 1),
    "1.p3": (f"1 worker on core {MEASURED_CORE}, 3 partitions", (MEASURED_CORE,), 3),
    "2.p3": ("2 workers, unpinned, 3 partitions", (None, None), 3),
}


def _specs(key: str, what: str, where: str, *, one_worker: bool, cluster: bool) -> list[Spec]:
    """The rows of one drain: its rate and per-CPU rate; on the cluster, its rate over
    one Redis's with the same workers and its busiest primary's CPU per message; with
    more than one worker, its rate over one worker's."""
    specs = [
        Spec(key, CASE_LABEL, f"{what}, from a full queue, {where}", "msgs/s", ratio_to="ceiling"),
        Spec(
            f"{key}.per_cpu",
            CASE_LABEL,
            f"{what}, per worker CPU-second, {where}",
            "msgs/CPU-s",
            ratio_to="ceiling.per_cpu",
            chart="per_cpu",
        ),
    ]
    if cluster:
        specs += [
            Spec(f"{key}.vs_redis", CASE_LABEL, f"{what}: cluster over one Redis, same round", "×"),
            Spec(
                f"{key}.busiest_primary",
                CASE_LABEL,
                f"{what}: the busiest primary's CPU per message, {where}",
                "ms",
            ),
        ]
    if not one_worker:
        specs.append(
            Spec(
                f"{key}.vs1",
                CASE_LABEL,
                f"{what} over 1 worker, {where}, same round",
                "×",
                chart="scaling",
            )
        )
    return specs


SPECS = tuple(
    spec
    for variant, (what, cores, *_) in VARIANTS.items()
    for spec in _specs(
        f"scale.{ENGINE}.{variant}", what, ENGINE, one_worker=len(cores) == 1, cluster=False
    )
) + tuple(
    spec
    for variant, (what, cores, _) in CLUSTER_VARIANTS.items()
    for spec in _specs(
        f"scale.cluster.{variant}", what, CLUSTER, one_worker=len(cores) == 1, cluster=True
    )
)


# -- what the machine spent --------------------------------------------------------------


def _core_seconds() -> dict[str, float]:
    """Each core's busy and stolen seconds since boot, from /proc/stat, which counts the
    whole machine: other work on it shows up here and in no process of the run."""
    seconds, tick = {}, os.sysconf("SC_CLK_TCK")
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name != "cpu":
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
            seconds[f"{name}_busy_s"] = (user + nice + system + irq + softirq) / tick
            seconds[f"{name}_steal_s"] = steal / tick
    return seconds


async def _redis_server(url: str) -> tuple[int | None, dict[str, Any]]:
    """redis-server's pid (None unless /proc here can see it) and its INFO."""
    import redis.asyncio as redis

    client = redis.from_url(url)
    try:
        info = await client.info("all")
    finally:
        await client.aclose()
    pid = int(info["process_id"])
    return (pid if _is_redis_server(pid) else None), info


def _is_redis_server(pid: int) -> bool:
    """False when redis-server runs elsewhere (another machine, a container)."""
    comm = Path(f"/proc/{pid}/comm")
    return comm.exists() and comm.read_text().startswith("redis-server")


def _redis_work(before: dict[str, Any], after: dict[str, Any], messages: int) -> dict[str, Any]:
    """Commands per message, and the microseconds per message redis-server spent in each
    of its costliest commands (a script's own commands count in EVALSHA and again alone)."""
    spent = {}
    for name, stats in after.items():
        if name.startswith("cmdstat_"):
            usec = stats["usec"] - before.get(name, {}).get("usec", 0)
            spent[name.removeprefix("cmdstat_")] = round(usec / messages, 2)
    costliest = dict(sorted(spent.items(), key=lambda item: -item[1])[:5])
    commands = after["total_commands_processed"] - before["total_commands_processed"]
    return {
        "redis_commands_per_message": round(commands / messages, 2),
        "redis_us_per_message_by_command": costliest,
    }


def _spent(pids: dict[str, int | None]) -> dict[str, float | None]:
    """CPU seconds so far of each named process (None: not visible), the driver, each core."""
    seconds: dict[str, float | None] = {
        f"{name}_cpu_s": None if pid is None else cpu_seconds(pid) for name, pid in pids.items()
    }
    return seconds | {"driver_cpu_s": time.process_time()} | _core_seconds()


def _used(before: dict[str, float | None], after: dict[str, float | None]) -> dict[str, Any]:
    """What the window cost, and the busy core-seconds none of the run's processes account
    for (other work on the machine, and the kernel's own)."""
    used = {
        name: None if now is None or before[name] is None else round(now - before[name], 3)
        for name, now in after.items()
    }
    processes = sum(value or 0.0 for name, value in used.items() if name.endswith("_cpu_s"))
    busy = sum(value or 0.0 for name, value in used.items() if name.endswith("_busy_s"))
    return used | {"unaccounted_busy_s": round(busy - processes, 3)}


# -- one variant ---------------------------------------------------------------------------


async def _drain(bench: Bench, variant: str, cores: tuple[int | None, ...]) -> tuple[float, float]:
    """Deliveries per second, and per worker CPU-second, of len(cores) workers emptying
    one pre-filled queue."""
    count = bench.sizes.deliveries
    timeout = 60 + count / 500
    await bench.sandbox.control.reset()
    redis_pid, _ = await _redis_server(bench.redis_url)
    async with bench.gateways(ENGINE, "worker", cores, prefill(count)) as (gateways, probe):
        # Every worker is up (healthy) here; the window opens once sends are flowing.
        await bench.sandbox.wait_for_sends(1, timeout, poll_s=0.005)
        before_window = await bench.sandbox.sends()
        started = time.monotonic()
        pids = {f"worker{n}": gateway.pid for n, gateway in enumerate(gateways, 1)}
        pids |= {"sandbox": bench.sandbox.pid, "redis_server": redis_pid}
        spent, (_, info) = _spent(pids), await _redis_server(bench.redis_url)
        await bench.sandbox.wait_for_sends(count, timeout)
        finished = await probe.wait_for_sent(count, timeout, poll_s=0.02)
        used = _used(spent, _spent(pids))
        _, info_after = await _redis_server(bench.redis_url)
    seconds, delivered = finished - started, count - before_window
    workers_cpu = sum(used[f"{name}_cpu_s"] or 0.0 for name in pids if name.startswith("worker"))
    run_cpu = sum(value or 0.0 for name, value in used.items() if name.endswith("_cpu_s"))
    bench.note(
        "scale",
        variant=variant,
        cores=["unpinned" if core is None else core for core in cores],
        messages=count,
        sent_before_window=before_window,
        seconds=round(seconds, 3),
        **used,
        workers_cpu_ms_per_message=round(1000 * workers_cpu / delivered, 4),
        run_cpu_ms_per_message=round(1000 * run_cpu / delivered, 4),
        **_redis_work(info, info_after, delivered),
    )
    return delivered / seconds, delivered / workers_cpu


# -- on a Redis Cluster --------------------------------------------------------------------


async def _primaries(ports: list[int]) -> list[tuple[int | None, dict[str, Any]]]:
    return [await _redis_server(f"redis://127.0.0.1:{port}/0") for port in ports]


async def _drop_cluster_keys(ports: list[int], prefix: str) -> None:
    """Every key under `prefix`, node by node, one UNLINK each (keys of different slots
    cannot share a command on a cluster node)."""
    import redis.asyncio as redis

    for port in ports:
        client = redis.from_url(f"redis://127.0.0.1:{port}/0")
        try:
            keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.unlink(key)
            await pipe.execute()
        finally:
            await client.aclose()


async def _drain_cluster(
    bench: Bench, variant: str, cores: tuple[int | None, ...], partitions: int, ports: list[int]
) -> tuple[float, float, float]:
    """As `_drain`, on the cluster at `ports` with the queue in `partitions` slots; and
    the busiest primary's CPU milliseconds per message."""
    count = bench.sizes.deliveries
    timeout = 60 + count / 500
    seed = f"redis://127.0.0.1:{ports[0]}/0"
    storage = replace(
        Storage.fresh(bench.workdir, ENGINE),
        redis_url=seed,
        redis_cluster=True,
        redis_partitions=partitions,
    )
    config = GatewayConfig.write(bench.workdir, bench.sandbox.url, storage)
    await bench.sandbox.control.reset()
    try:
        async with StorageProbe(config.settings) as probe:
            await prefill(count)(probe.backend)
            gateways = await start_gateways(config, "worker", cores)
            try:
                await bench.sandbox.wait_for_sends(1, timeout, poll_s=0.005)
                before_window = await bench.sandbox.sends()
                started = time.monotonic()
                primaries = await _primaries(ports)
                pids = {f"worker{n}": gateway.pid for n, gateway in enumerate(gateways, 1)}
                pids |= {"sandbox": bench.sandbox.pid}
                pids |= {f"primary{n}": pid for n, (pid, _) in enumerate(primaries, 1)}
                spent = _spent(pids)
                await bench.sandbox.wait_for_sends(count, timeout)
                finished = await probe.wait_for_sent(count, timeout, poll_s=0.02)
                used = _used(spent, _spent(pids))
                after = await _primaries(ports)
            finally:
                for gateway in gateways:
                    await gateway.stop()
    finally:
        await _drop_cluster_keys(ports, storage.redis_prefix)
    seconds, delivered = finished - started, count - before_window
    workers_cpu = sum(used[f"{name}_cpu_s"] or 0.0 for name in pids if name.startswith("worker"))
    per_primary = {
        f"primary{n}": {
            "cpu_ms_per_message": round(1000 * (used[f"primary{n}_cpu_s"] or 0.0) / delivered, 4),
            **_redis_work(before[1], later[1], delivered),
        }
        for n, (before, later) in enumerate(zip(primaries, after, strict=True), 1)
    }
    bench.note(
        "scale",
        variant=f"cluster.{variant}",
        cores=["unpinned" if core is None else core for core in cores],
        partitions=partitions,
        messages=count,
        sent_before_window=before_window,
        seconds=round(seconds, 3),
        **used,
        workers_cpu_ms_per_message=round(1000 * workers_cpu / delivered, 4),
        primaries=per_primary,
    )
    busiest = max(primary["cpu_ms_per_message"] for primary in per_primary.values())
    return delivered / seconds, delivered / workers_cpu, busiest


async def _cluster_figures(bench: Bench, single: dict[str, float]) -> dict[str, float]:
    if (why := cluster_missing()) is not None:
        print(f"scale: cluster rows skipped: {why}")
        return {}
    figures: dict[str, float] = {}
    one_worker: dict[int, float] = {}  # partitions -> one worker's rate, this round
    directory = bench.workdir / f"cluster-{time.monotonic_ns()}"
    directory.mkdir()
    with running_cluster(directory) as ports:
        for variant, (_, cores, partitions) in CLUSTER_VARIANTS.items():
            rate, per_cpu, busiest = await _drain_cluster(bench, variant, cores, partitions, ports)
            key = f"scale.cluster.{variant}"
            figures[key], figures[f"{key}.per_cpu"] = rate, per_cpu
            figures[f"{key}.busiest_primary"] = busiest
            figures[f"{key}.vs_redis"] = rate / single[f"scale.{ENGINE}.{len(cores)}"]
            if len(cores) == 1:
                one_worker[partitions] = rate
            else:
                figures[f"{key}.vs1"] = rate / one_worker[partitions]
    return figures


async def measure(bench: Bench) -> dict[str, float]:
    if ENGINE not in bench.engines:
        print(f"scale: skipped: it needs the {ENGINE} engine, which this run does not have")
        return {}
    figures, one_worker = {}, 0.0
    for variant, (_, cores) in VARIANTS.items():
        rate, per_cpu = await _drain(bench, variant, cores)
        key = f"scale.{ENGINE}.{variant}"
        figures[key], figures[f"{key}.per_cpu"] = rate, per_cpu
        if variant == "1":
            one_worker = rate
        else:
            figures[f"{key}.vs1"] = rate / one_worker
    return figures | await _cluster_figures(bench, figures)


CASE = Case("scale", SPECS, measure)
