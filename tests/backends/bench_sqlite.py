"""Throughput and latency of the SQLite engine (not part of the test suite).

    .venv/bin/python -m tests.backends.bench_sqlite [--synchronous FULL|NORMAL]

Prints: enqueue msgs/s in batches of 1000; single-message enqueue msgs/s with
64 concurrent callers; lease+settle msgs/s; intake latency at a paced 2,000
single requests/s. Each figure runs on a fresh file in a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from wxgate.backends.base import Backend, NewMessage, Outcome, Settlement
from wxgate.backends.sqlite import SqliteBackend

PAYLOAD_DATA = {
    "first": {"value": "您的订单已发货"},
    "keyword1": {"value": "SO-2024-000123"},
    "keyword2": {"value": "顺丰速运 SF1234567890"},
    "remark": {"value": "点击查看物流详情", "color": "#173177"},
}


def new_message(n: int) -> NewMessage:
    payload = {
        "touser": f"oUSER{n:022d}",
        "template_id": "ngqIpbwh8bUfcSsECmogfXcV14J0tQlEpBO27izEYtY",
        "url": "https://shop.example.com/orders/123",
        "data": PAYLOAD_DATA,
    }
    return NewMessage("shop", payload, trace_id=f"trace-{n}")


async def open_engine(directory: Path, synchronous: str) -> SqliteBackend:
    engine = SqliteBackend(directory / "bench.db", synchronous=synchronous)  # type: ignore[arg-type]
    await engine.start()
    return engine


async def batches_of_1000(engine: SqliteBackend, total: int = 100_000) -> str:
    started = time.perf_counter()
    for start in range(0, total, 1000):
        await engine.enqueue([new_message(n) for n in range(start, start + 1000)], time.time())
    elapsed = time.perf_counter() - started
    return (
        f"enqueue, batches of 1000: {total / elapsed:,.0f} msgs/s ({engine.stats.commits} commits)"
    )


async def concurrent_singles(engine: SqliteBackend, total: int = 20_000, callers: int = 64) -> str:
    latencies: list[float] = []
    counter = iter(range(total))

    async def caller() -> None:
        for n in counter:
            began = time.perf_counter()
            await engine.enqueue([new_message(n)], time.time())
            latencies.append(time.perf_counter() - began)

    commits = engine.stats.commits
    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    elapsed = time.perf_counter() - started
    return (
        f"enqueue, single messages, {callers} concurrent callers: {total / elapsed:,.0f} msgs/s, "
        f"{_percentiles(latencies)}, {engine.stats.commits - commits} commits"
    )


async def lease_and_settle(engine: Backend, total: int = 50_000, limit: int = 256) -> str:
    """Fill the queue with `total`, then lease `limit` at a time and settle each as sent
    (either engine: bench_redis runs it too)."""
    for start in range(0, total, 1000):
        await engine.enqueue([new_message(n) for n in range(start, start + 1000)], time.time())
    started = time.perf_counter()
    done = 0
    while leases := await engine.lease_batch("bench", limit, 60, time.time()):
        settlements = [
            Settlement(lease, Outcome.SENT, msgid=2**53 + n, errcode=0)
            for n, lease in enumerate(leases, start=done)
        ]
        await engine.settle(settlements, time.time())
        done += len(leases)
    elapsed = time.perf_counter() - started
    return f"lease {limit} + settle sent: {done / elapsed:,.0f} msgs/s"


async def paced_singles(engine: SqliteBackend, rate: int = 2000, seconds: float = 5.0) -> str:
    latencies: list[float] = []
    tasks: list[asyncio.Task[None]] = []

    async def one(n: int) -> None:
        began = time.perf_counter()
        await engine.enqueue([new_message(n)], time.time())
        latencies.append(time.perf_counter() - began)

    started = time.perf_counter()
    for n in range(int(rate * seconds)):
        delay = started + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(n)))
    await asyncio.gather(*tasks)
    return f"enqueue, single messages paced at {rate}/s: {_percentiles(latencies)}"


def _percentiles(latencies: list[float]) -> str:
    cuts = statistics.quantiles(latencies, n=100)
    return f"latency p50 {cuts[49] * 1000:.2f} ms, p99 {cuts[98] * 1000:.2f} ms"


async def main(synchronous: str) -> None:
    print(f"synchronous={synchronous}")
    for bench in (batches_of_1000, concurrent_singles, lease_and_settle, paced_singles):
        with tempfile.TemporaryDirectory() as directory:
            engine = await open_engine(Path(directory), synchronous)
            try:
                print(await bench(engine))
            finally:
                await engine.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--synchronous", default="FULL", choices=["FULL", "NORMAL"])
    asyncio.run(main(parser.parse_args().synchronous))
