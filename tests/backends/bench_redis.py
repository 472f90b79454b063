"""Throughput of the Redis engine (not part of the test suite).

    .venv/bin/python -m tests.backends.bench_redis [--url redis://127.0.0.1:6379/0]

Prints: enqueue msgs/s in batches of 1000 (and one call of 10,000); single-message
enqueue msgs/s with 64 concurrent callers; lease+settle msgs/s. Each figure runs
under a fresh key prefix, deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import statistics
import time
import uuid

import redis.asyncio as aioredis

from tests.backends.bench_sqlite import lease_and_settle, new_message
from wxgate.backends.redis import RedisBackend


async def batches_of_1000(engine: RedisBackend, total: int = 50_000) -> str:
    started = time.perf_counter()
    for start in range(0, total, 1000):
        await engine.enqueue([new_message(n) for n in range(start, start + 1000)], time.time())
    elapsed = time.perf_counter() - started
    return f"enqueue, batches of 1000: {total / elapsed:,.0f} msgs/s"


async def one_call_of_10000(engine: RedisBackend) -> str:
    messages = [new_message(n) for n in range(10_000)]
    started = time.perf_counter()
    await engine.enqueue(messages, time.time())
    elapsed = time.perf_counter() - started
    return f"enqueue, one call of 10,000 (one MULTI/EXEC): {elapsed * 1000:,.0f} ms"


async def concurrent_singles(engine: RedisBackend, total: int = 20_000, callers: int = 64) -> str:
    latencies: list[float] = []
    counter = iter(range(total))

    async def caller() -> None:
        for n in counter:
            began = time.perf_counter()
            await engine.enqueue([new_message(n)], time.time())
            latencies.append(time.perf_counter() - began)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    elapsed = time.perf_counter() - started
    cuts = statistics.quantiles(latencies, n=100)
    return (
        f"enqueue, single messages, {callers} concurrent callers: {total / elapsed:,.0f} msgs/s, "
        f"latency p50 {cuts[49] * 1000:.2f} ms, p99 {cuts[98] * 1000:.2f} ms"
    )


async def delete_prefix(url: str, prefix: str) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        for start in range(0, len(keys), 1000):
            await client.unlink(*keys[start : start + 1000])
    finally:
        await client.aclose()


async def main(url: str) -> None:
    settle = functools.partial(lease_and_settle, total=30_000)
    for bench in (batches_of_1000, one_call_of_10000, concurrent_singles, settle):
        prefix = f"wxgate-bench-{uuid.uuid4().hex[:12]}"
        engine = RedisBackend(url, prefix=prefix)
        await engine.start()
        try:
            print(await bench(engine), flush=True)
        finally:
            await engine.close()
            await delete_prefix(url, prefix)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    asyncio.run(main(parser.parse_args().url))
