"""A separate process on one Redis store, for test_redis.py (not collected by pytest).

Every mode prints "ready" once its connection works, waits for a line on stdin (so
that all processes start at the same moment), works, and prints one JSON line:

`lease URL PREFIX`: lease (3 at a time) until the queue stays empty; the leased ids.
`budget URL PREFIX APP RATE SECONDS`: take send budget (2 at a time) for SECONDS;
  every [now, granted], those that granted nothing included.
`token URL PREFIX API_BASE APPID SECRET`: a token from cold through its own
  TokenManager on the Redis token store; the token's SHA-256.

Run as `python -m tests.backends.redis_child MODE ...` from the repository root.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
import time
from typing import Any

import orjson

from wxgate.backends.redis import RedisBackend


async def lease_all(backend: RedisBackend) -> list[str]:
    leased: list[str] = []
    empty = 0
    while empty < 3:
        leases = await backend.lease_batch(f"child-{os.getpid()}", 3, 3600, time.time())
        leased += [lease.id for lease in leases]
        empty = 0 if leases else empty + 1
    return leased


async def take_budget(backend: RedisBackend, app: str, rate: str, seconds: str) -> list[Any]:
    grants = []
    ends = time.monotonic() + float(seconds)
    while time.monotonic() < ends:
        now = time.time()
        grants.append([now, await backend.take_send_budget(app, float(rate), 2, now)])
        await asyncio.sleep(0.002)
    return grants


async def fetch_token(backend: RedisBackend, api_base: str, appid: str, secret: str) -> str:
    from wxgate.wechat.client import TokenFetcher, WeChatHttp
    from wxgate.wechat.token import TokenManager

    async with WeChatHttp() as http:
        store = backend.token_store()
        tokens = TokenManager("default", appid, secret, store, TokenFetcher(http, api_base))
        try:
            token = await tokens.get()
        finally:
            await tokens.close()
    return hashlib.sha256(token.encode()).hexdigest()


async def main(mode: str, url: str, prefix: str, *args: str) -> None:
    backend = RedisBackend(url, prefix=prefix)
    await backend.start()
    try:
        assert await backend.ping()
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        if mode == "lease":
            result: Any = await lease_all(backend)
        elif mode == "budget":
            result = await take_budget(backend, *args)
        else:
            result = await fetch_token(backend, *args)
        print(orjson.dumps(result).decode(), flush=True)
    finally:
        await backend.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
