"""Case 1, the ceiling: what one raw aiohttp client process sends to the sandbox.

64 concurrent template/send calls with one cached token, keep-alive, each answer
parsed, on the measured core: no storage, no validation, no retries. Whatever a
Python sender on this core does, it does not send faster than this, so the
worker's deliveries are given as a ratio to it.

Child: `python -m bench.ceiling send URL SECONDS CONCURRENCY` (the token in its environment).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from typing import Any

from bench.case import Bench, Case
from bench.payload import template_send_body
from bench.procs import MEASURED_CORE, await_go, child_secret, report, run_child
from bench.results import Spec

SEND_PATH = "/cgi-bin/message/template/send"
WARMUP_S = 0.5

SPECS = (
    Spec(
        "ceiling",
        "1 ceiling",
        "raw aiohttp client, 64 concurrent sends",
        "sends/s",
        short="ceiling",
    ),
    Spec(
        "ceiling.per_cpu",
        "1 ceiling",
        "raw aiohttp client, per CPU-second",
        "sends/CPU-s",
        chart="per_cpu",
        short="ceiling",
    ),
)


async def measure(bench: Bench) -> dict[str, float]:
    await bench.sandbox.control.reset()
    token = await bench.sandbox.token()
    seconds = bench.sizes.seconds
    args = ["send", bench.sandbox.url, str(seconds), str(bench.sizes.concurrency)]
    result, _ = await run_child(bench.workdir, "ceiling", args, MEASURED_CORE, token)
    bench.note("ceiling", errors=result["errors"], cpu_s=result["cpu_s"])
    return {
        "ceiling": result["sends"] / seconds,
        "ceiling.per_cpu": result["all_sends"] / result["cpu_s"],
    }


CASE = Case("ceiling", SPECS, measure)


async def send_for(url: str, token: str, seconds: float, concurrency: int) -> dict[str, Any]:
    """Send for `seconds` after a warm-up; sends answered errcode 0, errors, CPU time."""
    import aiohttp
    import orjson

    counts = {"ok": 0, "errors": 0, "all": 0}
    client = f"a{os.getpid()}"
    cpu_start, start = time.process_time(), time.monotonic()
    counting_from, stop_at = start + WARMUP_S, start + WARMUP_S + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        target = f"{url}{SEND_PATH}?access_token={token}"
        headers = {"Content-Type": "application/json"}

        async def sender(worker: int) -> None:
            n = worker
            while (now := time.monotonic()) < stop_at:
                body = template_send_body(client, n)
                async with session.post(target, data=body, headers=headers) as resp:
                    answer = orjson.loads(await resp.read())
                n += concurrency
                counts["all"] += 1
                if now >= counting_from:
                    counts["ok" if answer.get("errcode") == 0 else "errors"] += 1

        await asyncio.gather(*(sender(i) for i in range(concurrency)))
    return {
        "sends": counts["ok"],
        "errors": counts["errors"],
        "all_sends": counts["all"],
        "cpu_s": time.process_time() - cpu_start,
    }


def main() -> None:
    import uvloop

    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["send"])
    parser.add_argument("url")
    parser.add_argument("seconds", type=float)
    parser.add_argument("concurrency", type=int)
    args = parser.parse_args()
    await_go()
    report(uvloop.run(send_for(args.url, child_secret(), args.seconds, args.concurrency)))


if __name__ == "__main__":
    main()
