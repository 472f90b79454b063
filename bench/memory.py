"""Case 6, memory: the resident size of a gateway holding 1,000,000 queued messages, and
the Redis memory each message costs (queued, and once terminal, kept for retention).

The sandbox is given a daily quota of 0, so the first send is answered 45009 and
the gateway pauses the app until the quota resets, as it would in production;
then 1,000,000 messages arrive through the batch endpoint (10,000 a batch) and
wait. The figure is VmRSS of the `wxgate serve --role all` process (SQLite) once
all are stored; the peak (VmHWM) and the rate the batches were taken in are kept
in the JSON.

The Redis rows (with the redis engine): `redis_count` messages (100,000; 20,000 with
--quick) enqueued through the engine itself, 1,000 per call, each with an idempotency
key, as intake stores them; measured once all are queued, then once all are leased,
settled `sent` (a msgid each) and reported `delivered`. The figure is `used_memory`
growth over the count; MEMORY USAGE (SAMPLES 0, exact) of 200 sampled keys per key
kind, scaled to the kind's key count, says where the bytes go (kept in the JSON).
Run alone, on a redis-server of its own (used_memory is the whole server's):

    .venv/bin/python -m bench.memory redis://127.0.0.1:6391/0 [--messages N]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import random
import time
from typing import Any

import orjson
import redis.asyncio as aioredis

from bench.case import Bench, Case
from bench.payload import wechat_message
from bench.procs import LOAD_CORE, Gateway, memory_bytes, run_child
from bench.results import Spec, Target
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


async def _where(client: Any, prefix: str, base: int, count: int) -> dict[str, Any]:
    """used_memory growth since `base` per message, and MEMORY USAGE per key kind."""
    used = (await client.info("memory"))["used_memory"] - base
    kinds: dict[str, list[str]] = collections.defaultdict(list)
    async for key in client.scan_iter(f"{prefix}:*", count=5_000):
        kinds[_kind(key, prefix)].append(key)
    usage: dict[str, dict[str, Any]] = {}
    for kind, keys in sorted(kinds.items()):
        sample = keys if len(keys) <= SAMPLED_KEYS else random.sample(keys, SAMPLED_KEYS)
        pipe = client.pipeline(transaction=False)
        for key in sample:
            pipe.memory_usage(key, samples=0)
            pipe.object("encoding", key)
        answers = await pipe.execute()
        sizes = [size or 0 for size in answers[::2]]
        usage[kind] = {
            "keys": len(keys),
            "bytes_per_message": sum(sizes) / len(sample) * len(keys) / count,
            "encodings": sorted(set(answers[1::2])),
        }
    return {
        "bytes_per_message": used / count,
        "memory_usage_per_message": sum(kind["bytes_per_message"] for kind in usage.values()),
        "keys": sum(kind["keys"] for kind in usage.values()),
        "by_kind": usage,
    }


async def redis_per_message(url: str, count: int) -> dict[str, Any]:
    """Redis memory per message queued, and per record once terminal (delivered)."""
    client = aioredis.Redis.from_url(url, decode_responses=True)
    backend = RedisBackend(url, prefix=REDIS_PREFIX)
    await backend.start()
    try:
        await _drop(client)
        base = (await client.info("memory"))["used_memory"]
        now = time.time()
        for first in range(0, count, REDIS_CHUNK):
            await backend.enqueue(
                [
                    NewMessage(app="bench", payload=wechat_message(n), idempotency_key=f"k-{n}")
                    for n in range(first, min(count, first + REDIS_CHUNK))
                ],
                now,
            )
        queued = await _where(client, REDIS_PREFIX, base, count)
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
        terminal = await _where(client, REDIS_PREFIX, base, count)
    finally:
        await _drop(client)
        await backend.close()
        await client.aclose()
    return {"messages": count, "queued": queued, "terminal": terminal}


async def _drop(client: Any) -> None:
    keys = [key async for key in client.scan_iter(f"{REDIS_PREFIX}:*", count=5_000)]
    for first in range(0, len(keys), 1_000):
        await client.delete(*keys[first : first + 1_000])


def main() -> None:
    parser = argparse.ArgumentParser(description="Redis memory per message (see the docstring)")
    parser.add_argument("url", help="a redis-server of its own: used_memory is the server's")
    parser.add_argument("--messages", type=int, default=100_000)
    args = parser.parse_args()
    found = asyncio.run(redis_per_message(args.url, args.messages))
    print(orjson.dumps(found, option=orjson.OPT_INDENT_2).decode())


CASE = Case("memory", SPECS, measure)

if __name__ == "__main__":
    main()
