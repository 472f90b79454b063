"""Load generators against the gateway's API, run as child processes.

- `post`: closed loop, N single messages over C keep-alive connections, each
  connection sending its next message as soon as the previous one is answered;
- `batch`: the same with POST /v1/messages/batch, bodies built before the start;
- `paced`: open loop at a fixed offered rate: request i is due at start + i/rate
  whatever happened to the others, and its latency runs from that due time, so
  a stalled server is charged for every request that had to wait (no
  coordinated omission). Requests wait for a free connection of a fixed pool.

    python -m bench.load post URL COUNT CONCURRENCY
    python -m bench.load batch URL COUNT BATCH_SIZE CONCURRENCY
    python -m bench.load paced URL RATE SECONDS CONNECTIONS

with the API key in the environment (procs.SECRET_VARIABLE).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

from bench.http import Connection
from bench.payload import api_batch, api_message
from bench.procs import child_secret, go_signal, report

MESSAGES_PATH = b"/v1/messages"
BATCH_PATH = b"/v1/messages/batch"
ACCEPTED = (200, 202)
ERRORS_KEPT = 5


async def _connections(url: str, key: str, count: int) -> list[Connection]:
    headers = {"Authorization": f"Bearer {key}"}
    return list(await asyncio.gather(*(Connection.open(url, headers) for _ in range(count))))


class _Tally:
    def __init__(self) -> None:
        self.accepted = 0
        self.errors = 0
        self.first_errors: list[str] = []

    def count(self, status: int, body: bytes) -> None:
        if status in ACCEPTED:
            self.accepted += 1
        else:
            self.errors += 1
            if len(self.first_errors) < ERRORS_KEPT:
                self.first_errors.append(f"{status} {body[:200].decode(errors='replace')}")


async def _closed_loop(
    connections: list[Connection], path: bytes, bodies: Iterator[bytes]
) -> dict[str, Any]:
    """Every connection posts the next body as soon as its previous one is answered."""
    tally = _Tally()

    async def run(connection: Connection) -> None:
        for body in bodies:  # one shared iterator: each body is posted once
            answer = await connection.request(b"POST", path, body)
            tally.count(answer.status, answer.body)

    started = time.monotonic()
    await asyncio.gather(*(run(connection) for connection in connections))
    seconds = time.monotonic() - started
    return {
        "requests": tally.accepted + tally.errors,
        "accepted": tally.accepted,
        "errors": tally.errors,
        "first_errors": tally.first_errors,
        "seconds": seconds,
    }


def _percentile(ordered: list[float], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def _open_loop(
    connections: list[Connection], rate: float, seconds: float, body: Callable[[int], bytes]
) -> dict[str, Any]:
    # time.monotonic(), not loop.time(): uvloop's clock moves in whole milliseconds.
    clock = time.monotonic
    loop = asyncio.get_running_loop()
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    for connection in connections:
        idle.put_nowait(connection)
    tally, latencies = _Tally(), []

    async def one(n: int, due: float) -> None:
        connection = await idle.get()
        answer = await connection.request(b"POST", MESSAGES_PATH, body(n))
        latencies.append(clock() - due)
        idle.put_nowait(connection)
        tally.count(answer.status, answer.body)

    tasks = []
    start = clock() + 0.01
    for n in range(int(rate * seconds)):
        due = start + n / rate
        if (wait := due - clock()) > 0:
            await asyncio.sleep(wait)
        tasks.append(loop.create_task(one(n, due)))
    await asyncio.gather(*tasks)
    ordered = sorted(latencies)
    return {
        "requests": len(latencies),
        "accepted": tally.accepted,
        "errors": tally.errors,
        "first_errors": tally.first_errors,
        "offered_per_s": rate,
        "achieved_per_s": len(latencies) / (clock() - start),
        "p50_ms": _percentile(ordered, 0.50) * 1000,
        "p90_ms": _percentile(ordered, 0.90) * 1000,
        "p99_ms": _percentile(ordered, 0.99) * 1000,
        "p999_ms": _percentile(ordered, 0.999) * 1000,
        "max_ms": ordered[-1] * 1000,
        "mean_ms": statistics.fmean(ordered) * 1000,
    }


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    if args.role == "post":
        connections = await _connections(args.url, child_secret(), args.concurrency)
        await go_signal()
        bodies = (api_message(n) for n in range(args.count))
        result = await _closed_loop(connections, MESSAGES_PATH, bodies)
    elif args.role == "batch":
        connections = await _connections(args.url, child_secret(), args.concurrency)
        size = args.batch_size
        firsts = range(0, args.count, size)
        batches = [api_batch(first, min(size, args.count - first)) for first in firsts]
        await go_signal()
        result = await _closed_loop(connections, BATCH_PATH, iter(batches))
        result["messages"] = args.count
    else:
        connections = await _connections(args.url, child_secret(), args.connections)
        await go_signal()
        result = await _open_loop(connections, args.rate, args.seconds, api_message)
    for connection in connections:
        connection.close()
    return result


def main() -> None:
    import uvloop

    # A full collection in the generator (measured: ~25 ms, once a few seconds into
    # a paced run) would hold back requests that are due and be charged to the server
    # as latency; a short-lived generator can live without the cyclic collector.
    gc.disable()
    parser = argparse.ArgumentParser()
    roles = parser.add_subparsers(dest="role", required=True)
    post = roles.add_parser("post")
    batch = roles.add_parser("batch")
    paced = roles.add_parser("paced")
    for role in (post, batch, paced):
        role.add_argument("url")
    post.add_argument("count", type=int)
    post.add_argument("concurrency", type=int)
    batch.add_argument("count", type=int)
    batch.add_argument("batch_size", type=int)
    batch.add_argument("concurrency", type=int)
    paced.add_argument("rate", type=float)
    paced.add_argument("seconds", type=float)
    paced.add_argument("connections", type=int)
    report(uvloop.run(_main(parser.parse_args())))


if __name__ == "__main__":
    main()
