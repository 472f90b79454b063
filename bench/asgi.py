"""Intake's CPU per request in the ASGI app alone: no server, no sockets.

A gateway (`--role api`) is started in this process on a fresh SQLite file (or Redis
prefix) and `POST /v1/messages` requests are handed to its ASGI app directly, 16 at a
time, after a warm-up; CPU per request is this process's CPU time (every thread: the
SQLite writer's and readers' too) over the requests. `--drop` leaves intake checks
out by class name, to measure what one costs; `--profile` prints cProfile's top.

    .venv/bin/python -m bench.asgi --requests 4000
    .venv/bin/python -m bench.asgi --drop SuppressionCheck
    .venv/bin/python -m bench.asgi --profile tottime

Figures from it vary with the machine's load: compare variants run alternately.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.payload import api_message
from bench.procs import GatewayConfig, Storage, drop_redis_keys
from wxgate.config import load_settings
from wxgate.gateway import Gateway

LANES = 16
WARM_UP = 200


def _scope(headers: list[tuple[bytes, bytes]], body: bytes) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/messages",
        "raw_path": b"/v1/messages",
        "query_string": b"",
        "root_path": "",
        "headers": [*headers, (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "state": {},
    }


async def _post(app: Any, headers: list[tuple[bytes, bytes]], n: int) -> None:
    body = api_message(n)
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if delivered:
            await asyncio.Event().wait()  # no disconnect: the app answers first
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    statuses: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    await app(_scope(headers, body), receive, send)
    if statuses[0] not in (200, 202):
        raise RuntimeError(f"request {n} answered {statuses[0]}")


async def measure(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="wxgate-asgi-"))
    storage = Storage.fresh(workdir, args.engine)
    config = GatewayConfig.write(workdir, "http://127.0.0.1:9", storage)
    gateway = Gateway(load_settings(config.path), role="api")
    await gateway.start()
    try:
        app: Any = gateway.app
        state = app.state.wxgate
        if args.drop:
            dropped = set(args.drop.split(","))
            checks = [c for c in state.intake_checks if type(c).__name__ not in dropped]
            object.__setattr__(state, "intake_checks", checks)
        headers = [
            (b"authorization", f"Bearer {config.key}".encode()),
            (b"content-type", b"application/json"),
            (b"host", b"bench"),
        ]
        for n in range(WARM_UP):
            await _post(app, headers, 10**7 + n)

        async def lane(first: int) -> None:
            for n in range(first, args.requests, LANES):
                await _post(app, headers, n)

        profile = cProfile.Profile() if args.profile else None
        cpu, wall = time.process_time(), time.perf_counter()
        if profile is not None:
            profile.enable()
        await asyncio.gather(*(lane(k) for k in range(LANES)))
        if profile is not None:
            profile.disable()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        checks = [type(c).__name__ for c in state.intake_checks]
        print(
            f"{args.engine}: {args.requests} requests, CPU {1e6 * cpu / args.requests:.0f} µs"
            f" and wall {1e6 * wall / args.requests:.0f} µs a request; checks: {checks}"
        )
        if profile is not None:
            pstats.Stats(profile).sort_stats(args.profile).print_stats(40)
    finally:
        await gateway.stop()
        if args.engine == "redis":
            await drop_redis_keys(storage, gateway.settings.storage.redis_url)
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--engine", choices=("sqlite", "redis"), default="sqlite")
    parser.add_argument("--drop", help="intake checks to leave out, by class name, comma-separated")
    parser.add_argument("--profile", choices=("tottime", "cumulative"), help="cProfile, sorted")
    asyncio.run(measure(parser.parse_args()))


if __name__ == "__main__":
    main()
