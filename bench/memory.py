"""Case 6, memory: the resident size of a gateway holding 1,000,000 queued messages, and
the Redis memory each message costs (queued, and once terminal, kept for retention).

The sandbox is given a daily quota of 0, so the first send is answered 45009 and
the gateway pauses the app until the quota resets, as it would in production;
then 1,000,000 messages arrive through the batch endpoint (10,000 a batch) and
wait. The figure is VmRSS of the `wxgate serve --role all` process (SQLite) once
all are stored; the peak (VmHWM) and the rate the batches were taken in are kept
in the JSON.

The Redis rows (with the redis engine): `redis_count` messages (100,000; 2,000 with
--quick) enqueued through the engine itself, 1,000 per call, each with an idempotency
key, as intake stores them; measured once all are queued, then once all are leased,
settled `sent` (a msgid each) and reported `delivered`. The figure is `used_memory`
growth over the count; MEMORY USAGE (SAMPLES 0, exact) of 200 sampled keys per key
kind, scaled to the kind's key count, says where the bytes go (kept in the JSON).
Run alone, on a redis-server of its own (used_memory is the whole server's):

    .venv/bin/python -m bench.memory redis://127.0.0.1:6391/0 [--messages N]
    .venv/bin/python -m bench.memory --cluster [--messages N]   # three primaries, loopback

On the cluster every key of the queue lives on one primary (the `{q}` hash tag), so a
message costs what it costs on one redis-server, plus the tag in each key's name.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import random
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis

from bench.case import Bench, Case
from bench.payload import wechat_message
from bench.procs import LOAD_CORE, Gateway, memory_bytes, run_child
from bench.results import Spec, Target
from tests.backends.redis_cluster import running_cluster
from wxgate.backends.base import NewMessage, Outcome, Report, Settlement, Status
from wxgate.backends.redis import RedisBackend

MB = 1024 * 1024
PAUSE_TIMEOUT_S = 30.0
BATCH_CONCURRENCY = 2
KB = 1024
REDIS_PREFIX = "wxgate-bench-memory"
REDIS_CHUNK = 1_000  # messages per enqueue call, leases per lease call
SAMPLED_KEYS = 200  # MEMORY USAGE calls per key kind
MSGID_BASE = 10**15
REPORTS_AT_ONCE = 50  # reports applied concurrently (within the client's connection pool)

SPECS = (
    Spec(
        "memory.rss",
        "6 memory",
        "gateway RSS, 1,000,000 queued, app paused",
        "MB",
        Target("<", 250),
        chart="memory",
    ),
    Spec(
        "memory.redis_queued",
        "6 memory",
        "Redis memory per queued message",
        "B",
        Target("<=", KB),
        chart="redis_memory",
    ),
    Spec(
        "memory.redis_terminal",
        "6 memory",
        "Redis memory per terminal record (kept for retention)",
        "B",
        Target("<=", KB // 2),
        chart="redis_memory",
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
    figures = {"memory.rss": memory["VmRSS"] / MB}
    if "redis" in bench.engines:
        redis_count = sizes.memory_messages // 10
        found = await redis_per_message(bench.redis_url, redis_count)
        bench.note("memory.redis", **found)
        figures["memory.redis_queued"] = found["queued"]["bytes_per_message"]
        figures["memory.redis_terminal"] = found["terminal"]["bytes_per_message"]
    return figures


def _kind(key: str, prefix: str) -> str:
    """A key's kind: its first part after the prefix (and hash tag), two for indexes."""
    parts = key[len(prefix) + 1 :].split(":")
    if parts[0].startswith("{"):
        parts = parts[1:]
    return ":".join(parts[:2]) if parts[0] == "idx" else parts[0]


async def _used(nodes: list[Any]) -> int:
    return sum([(await node.info("memory"))["used_memory"] for node in nodes])


async def _where(nodes: list[Any], base: int, count: int) -> dict[str, Any]:
    """used_memory growth since `base` (summed over the nodes) per message, and MEMORY
    USAGE per key kind."""
    used = await _used(nodes) - base
    kinds: dict[str, list[tuple[Any, str]]] = collections.defaultdict(list)
    for node in nodes:
        async for key in node.scan_iter(f"{REDIS_PREFIX}:*", count=5_000):
            kinds[_kind(key, REDIS_PREFIX)].append((node, key))
    usage: dict[str, dict[str, Any]] = {}
    for kind, keys in sorted(kinds.items()):
        sample = keys if len(keys) <= SAMPLED_KEYS else random.sample(keys, SAMPLED_KEYS)
        sizes = [await node.memory_usage(key, samples=0) or 0 for node, key in sample]
        encodings = {await node.object("encoding", key) for node, key in sample}
        usage[kind] = {
            "keys": len(keys),
            "bytes_per_message": sum(sizes) / len(sample) * len(keys) / count,
            "encodings": sorted(encodings),
        }
    return {
        "bytes_per_message": used / count,
        "memory_usage_per_message": sum(kind["bytes_per_message"] for kind in usage.values()),
        "keys": sum(kind["keys"] for kind in usage.values()),
        "by_kind": usage,
    }


async def redis_per_message(
    url: str, count: int, node_urls: Sequence[str] = (), cluster: bool = False
) -> dict[str, Any]:
    """Redis memory per message queued, and per record once terminal (delivered). On a
    cluster, `url` is a seed node and `node_urls` are all its primaries."""
    nodes = [aioredis.Redis.from_url(node, decode_responses=True) for node in (node_urls or [url])]
    backend = RedisBackend(url, prefix=REDIS_PREFIX, cluster=cluster)
    await backend.start()
    try:
        await _drop(nodes)
        base = await _used(nodes)
        now = time.time()
        for first in range(0, count, REDIS_CHUNK):
            await backend.enqueue(
                [
                    NewMessage(app="bench", payload=wechat_message(n), idempotency_key=f"k-{n}")
                    for n in range(first, min(count, first + REDIS_CHUNK))
                ],
                now,
            )
        queued = await _where(nodes, base, count)
        sent = 0
        while leases := await backend.lease_batch("bench", REDIS_CHUNK, 600, now):
            await backend.settle(
                [
                    Settlement(lease, Outcome.SENT, msgid=MSGID_BASE + sent + n)
                    for n, lease in enumerate(leases)
                ],
                now + 1,
            )
            sent += len(leases)
        for first in range(0, sent, REPORTS_AT_ONCE):
            await asyncio.gather(
                *(
                    backend.apply_report(
                        Report("bench", MSGID_BASE + n, Status.DELIVERED, "success"), now + 2
                    )
                    for n in range(first, min(sent, first + REPORTS_AT_ONCE))
                )
            )
        delivered = (await backend.counts())[Status.DELIVERED]
        if sent != count or delivered != count:
            raise RuntimeError(f"memory: {sent} sent, {delivered} delivered of {count}")
        terminal = await _where(nodes, base, count)
    finally:
        await _drop(nodes)
        await backend.close()
        for node in nodes:
            await node.aclose()
    return {"messages": count, "cluster": cluster, "queued": queued, "terminal": terminal}


async def _drop(nodes: list[Any]) -> None:
    for node in nodes:
        keys = [key async for key in node.scan_iter(f"{REDIS_PREFIX}:*", count=5_000)]
        for first in range(0, len(keys), 1_000):
            pipe = node.pipeline(transaction=False)
            for key in keys[first : first + 1_000]:  # a cluster node refuses a DEL of
                pipe.delete(key)  # keys of several slots
            await pipe.execute()


def _on_cluster(count: int) -> dict[str, Any]:
    """The same on a three-primary Redis Cluster started on loopback for the run."""
    with tempfile.TemporaryDirectory() as workdir, running_cluster(Path(workdir)) as ports:
        urls = [f"redis://127.0.0.1:{port}/0" for port in ports]
        return asyncio.run(redis_per_message(urls[0], count, urls, cluster=True))


def main() -> None:
    parser = argparse.ArgumentParser(description="Redis memory per message (see the docstring)")
    parser.add_argument("url", nargs="?", help="a redis-server of its own (not with --cluster)")
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--cluster", action="store_true", help="on a cluster started for it")
    args = parser.parse_args()
    if args.cluster:
        found = _on_cluster(args.messages)
    elif args.url:
        found = asyncio.run(redis_per_message(args.url, args.messages))
    else:
        parser.error("give a redis-server's URL, or --cluster")
    print(orjson.dumps(found, option=orjson.OPT_INDENT_2).decode())


CASE = Case("memory", SPECS, measure)

if __name__ == "__main__":
    main()
