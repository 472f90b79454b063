"""A worker in a process of its own, for the crash test (run by test_worker_crash.py,
not collected by pytest).

Usage: worker_process.py SQLITE_PATH API_BASE LEASE_S. It delivers from the SQLite file
to the sandbox on the system clock until it is killed.
"""

from __future__ import annotations

import asyncio
import sys

from wxgate.backends.sqlite import SqliteBackend
from wxgate.config import AppSettings, DeliverySettings
from wxgate.delivery.worker import AppRuntime, Worker
from wxgate.sandbox.config import DEFAULT_APPID, DEFAULT_SECRET
from wxgate.wechat.client import AccountClient, TokenFetcher, WeChatHttp
from wxgate.wechat.token import TokenManager

APP = "shop"


async def main(sqlite_path: str, api_base: str, lease_s: str) -> None:
    backend = SqliteBackend(sqlite_path)
    await backend.start()
    app = AppSettings(appid=DEFAULT_APPID, secret=DEFAULT_SECRET, api_base=api_base)
    async with WeChatHttp(read_timeout_s=60.0) as http:
        tokens = TokenManager(
            APP, app.appid, app.secret, backend.token_store(), TokenFetcher(http, api_base)
        )
        runtime = AppRuntime(APP, app, AccountClient(http, tokens, api_base))
        settings = DeliverySettings(lease_s=float(lease_s))
        await Worker(backend, {APP: runtime}, settings, worker_id="doomed").run()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
