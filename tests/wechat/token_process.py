"""One process of the shared-store test (run by test_token.py, not collected by pytest).

Usage: token_process.py API_BASE SQLITE_PATH APPID SECRET. It opens the store, prints
"ready", waits for a line on stdin (so every process starts asking at the same moment),
asks its own TokenManager for a token from cold and prints the token's SHA-256.
"""

from __future__ import annotations

import asyncio
import hashlib
import sys

from wxgate.backends.sqlite import SqliteBackend
from wxgate.wechat.client import TokenFetcher, WeChatHttp
from wxgate.wechat.token import TokenManager


async def main(api_base: str, sqlite_path: str, appid: str, secret: str) -> None:
    backend = SqliteBackend(sqlite_path)
    await backend.start()
    store = backend.token_store()
    try:
        async with WeChatHttp() as http:
            tokens = TokenManager("default", appid, secret, store, TokenFetcher(http, api_base))
            await store.load("default")  # the file is open before the start signal
            print("ready", flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            token = await tokens.get()
            print(hashlib.sha256(token.encode()).hexdigest(), flush=True)
    finally:
        await backend.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
