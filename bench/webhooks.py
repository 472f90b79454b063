"""Status webhooks: what they cost delivery, and how fast one worker core posts them.

The sandbox (`wxgate sandbox`) and a webhook receiver (aiohttp, answers 204 without
verifying) run as processes on core 0; the gateway's worker (the delivery worker and
the webhook dispatcher, one event loop) runs in this process on core 1, against a
SQLite file (or Redis with --engine redis) prefilled with N messages. Three runs:

- `delivery`: N messages without webhooks, from the first lease to all `sent`;
- `delivery+webhooks`: the same N with `notify` (one `sent` event each, the sandbox
  sends no reports here): the time to all `sent` (the delivery rate with the
  dispatcher running beside it), then to an empty webhook backlog;
- `webhooks alone`: N events written at intake (messages settled there, notify) and
  posted with no delivery going on: the dispatcher's own rate.

Rates are per wall second and per CPU-second of this process (the worker core).

    .venv/bin/python -m bench.webhooks --count 5000
    .venv/bin/python -m bench.webhooks --count 5000 --engine redis
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import uvloop

from bench.payload import wechat_message
from bench.procs import MEASURED_CORE, SANDBOX_CORE, Sandbox, can_pin, pinned
from wxgate.backends.base import Backend, NewMessage, Status, Verdict
from wxgate.clock import SystemClock
from wxgate.config import Settings
from wxgate.delivery.webhook_signing import new_secret
from wxgate.gateway import Gateway, make_backend
from wxgate.sandbox.config import DEFAULT_APPID, DEFAULT_SECRET

APP = "default"
CHUNK = 1000
RECEIVER = """
import sys
from aiohttp import web
async def take(request):
    await request.read()
    return web.Response(status=204)
app = web.Application()
app.router.add_post("/hooks", take)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


def _settings(workdir: Path, sandbox_url: str, hook_url: str, engine: str) -> Settings:
    storage: dict[str, Any] = {"sqlite_path": str(workdir / f"{uuid.uuid4().hex}.db")}
    if engine == "redis":
        storage = {"backend": "redis", "redis_prefix": f"wxgate-bench-hooks-{uuid.uuid4().hex}"}
    return Settings(
        server={"worker_port": -1},
        storage=storage,
        delivery={"idle_poll_s": 0.01},
        webhooks={"idle_poll_s": 0.01, "concurrency": 64, "backoff_base_s": 0.1},
        apps={
            APP: {
                "appid": DEFAULT_APPID,
                "secret": DEFAULT_SECRET,
                "api_base": sandbox_url,
                "rate_limit_per_s": 1_000_000.0,
                "webhook_url": hook_url,
                "webhook_secret": new_secret(),
            }
        },
    )


async def _fill(backend: Backend, count: int, make: Callable[[int], NewMessage]) -> None:
    for first in range(0, count, CHUNK):
        batch = [make(n) for n in range(first, min(count, first + CHUNK))]
        await backend.enqueue(batch, time.time())


async def _until(check: Callable[[], Awaitable[bool]], timeout_s: float = 600) -> float:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError("the run did not finish")
        await asyncio.sleep(0.01)
    return time.monotonic()


async def _run(
    settings: Settings, count: int, make: Callable[[int], NewMessage]
) -> dict[str, float]:
    """Fill, start a worker, time it to all settled and to an empty webhook backlog."""
    backend = make_backend(settings, SystemClock())
    await backend.start()
    await _fill(backend, count, make)
    gateway = Gateway(settings, role="worker", backend=backend)
    cpu0, start = time.process_time(), time.monotonic()
    await gateway.start()

    async def settled() -> bool:
        counts = await backend.counts()
        return counts[Status.QUEUED] + counts[Status.SENDING] == 0

    async def posted() -> bool:
        [backlog] = await backend.webhook_outbox().backlog([APP])
        return backlog.pending == 0

    sent_at = await _until(settled)
    cpu_sent = time.process_time() - cpu0
    hooked_at = await _until(posted)
    cpu_all = time.process_time() - cpu0
    await gateway.stop()
    if settings.storage.backend == "redis":
        await _delete_prefix(settings.storage.redis_url, settings.storage.redis_prefix)
    return {
        "settled_s": sent_at - start,
        "settled_cpu_s": cpu_sent,
        "all_s": hooked_at - start,
        "all_cpu_s": cpu_all,
    }


async def _delete_prefix(url: str, prefix: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        for first in range(0, len(keys), 1000):
            await client.unlink(*keys[first : first + 1000])
    finally:
        await client.aclose()


def _plain(n: int) -> NewMessage:
    return NewMessage(APP, wechat_message(n))


def _notify(n: int) -> NewMessage:
    return replace(_plain(n), notify=True)


def _decided(n: int) -> NewMessage:
    return replace(_notify(n), verdict=Verdict(Status.SUPPRESSED, "bench"))


async def main(count: int, engine: str) -> None:
    if can_pin():
        os.sched_setaffinity(0, {MEASURED_CORE})
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        sandbox = await Sandbox.start(workdir)
        port = _free_port()
        receiver = await asyncio.create_subprocess_exec(
            *pinned([sys.executable, "-c", RECEIVER, str(port)], SANDBOX_CORE)
        )
        try:
            await _listening(port)
            hook_url = f"http://127.0.0.1:{port}/hooks"

            def fresh() -> Settings:
                return _settings(workdir, sandbox.url, hook_url, engine)

            plain = await _run(fresh(), count, _plain)
            hooked = await _run(fresh(), count, _notify)
            alone = await _run(fresh(), count, _decided)
        finally:
            receiver.terminate()
            await receiver.wait()
            sandbox.process.terminate()
            await sandbox.process.wait()
    print(f"engine {engine}, {count} messages, worker on core {MEASURED_CORE}")
    print(f"{'run':<30}{'msgs/s':>10}{'msgs/CPU-s':>12}{'events/s':>10}{'events/CPU-s':>14}")
    print(
        f"{'delivery, no webhooks':<30}" + _rates(count, plain["settled_s"], plain["settled_cpu_s"])
    )
    print(
        f"{'delivery, webhooks on':<30}"
        + _rates(count, hooked["settled_s"], hooked["settled_cpu_s"])
        + _rates(count, hooked["all_s"], hooked["all_cpu_s"])
    )
    print(f"{'webhooks alone':<30}{'':>22}" + _rates(count, alone["all_s"], alone["all_cpu_s"]))


async def _listening(port: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)
        else:
            writer.close()
            return


def _rates(count: int, wall_s: float, cpu_s: float) -> str:
    return f"{count / wall_s:>10.0f}{count / cpu_s:>12.0f}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--engine", choices=("sqlite", "redis"), default="sqlite")
    args = parser.parse_args()
    uvloop.run(main(args.count, args.engine))
