"""`wxgate serve` as real processes: a TOML config in a temporary directory, the
AppSecret in the environment (as the README advises), one log file per process.

Used by the process tests: an API process and worker processes sharing one SQLite
file, killed with SIGKILL or stopped with SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import free_port
from tests.e2e.conftest import API_KEY, APP, QUICK_DELIVERY
from wxgate.config import hash_api_key
from wxgate.sandbox.config import DEFAULT_APPID, DEFAULT_CALLBACK_TOKEN, DEFAULT_SECRET

WXGATE = str(Path(sys.executable).with_name("wxgate"))
TOKEN_SHAPE = re.compile(r"90_[A-Za-z0-9_-]{100,}")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_config(
    path: Path, *, db_path: Path, api_base: str, delivery: dict[str, Any] | None = None
) -> Path:
    """A config for one app (`shop`) on the sandbox's default account; no secret in it."""
    sections: dict[str, dict[str, Any]] = {
        "server": {"host": "127.0.0.1", "port": 0, "api_keys": [hash_api_key(API_KEY)]},
        "storage": {"sqlite_path": str(db_path), "sqlite_synchronous": "NORMAL"},
        "delivery": {**QUICK_DELIVERY, **(delivery or {})},
        "log": {"level": "INFO", "format": "json"},
        f"apps.{APP}": {
            "appid": DEFAULT_APPID,
            "api_base": api_base,
            "callback_token": DEFAULT_CALLBACK_TOKEN,
            "rate_limit_per_s": 5000.0,
        },
    }
    lines = []
    for name, fields in sections.items():
        lines.append(f"[{name}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in fields.items())
        lines.append("")
    path.write_text("\n".join(lines))
    return path


@dataclass
class ServeProcess:
    """One `wxgate serve --role ROLE` process listening on `url`."""

    role: str
    url: str
    log_path: Path
    process: asyncio.subprocess.Process

    async def ready(self, session: aiohttp.ClientSession, timeout_s: float = 60.0) -> None:
        """Wait until /readyz answers 200 (failing at once if the process exits)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.returncode is not None:
                raise AssertionError(f"{self.role} exited: {self.log_tail()}")
            try:
                async with session.get(f"{self.url}/readyz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)
        raise AssertionError(f"{self.role} not ready within {timeout_s} s: {self.log_tail()}")

    def signal(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)

    async def wait(self, timeout_s: float = 30.0) -> int:
        return await asyncio.wait_for(self.process.wait(), timeout_s)

    async def stop(self) -> None:
        """SIGKILL unless it has already exited (test clean-up)."""
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()

    def log_tail(self, lines: int = 20) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def secret_leaks(self) -> list[str]:
        """Log lines holding the AppSecret, the API key, the callback token or a token."""
        secrets = (DEFAULT_SECRET, API_KEY, DEFAULT_CALLBACK_TOKEN)
        text = self.log_path.read_text(errors="replace")
        return [
            line
            for line in text.splitlines()
            if TOKEN_SHAPE.search(line) or any(secret in line for secret in secrets)
        ]


async def start_serve(
    config: Path, role: str, log_dir: Path, port: int | None = None
) -> ServeProcess:
    """Start `wxgate serve` with the AppSecret in WXGATE_APPS__SHOP__SECRET."""
    port = free_port() if port is None else port
    log_path = log_dir / f"{role}-{port}.log"
    env = {**os.environ, f"WXGATE_APPS__{APP.upper()}__SECRET": DEFAULT_SECRET}
    env.pop("WXGATE_API_KEY", None)
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            WXGATE,
            "serve",
            "--config",
            str(config),
            "--role",
            role,
            "--port",
            str(port),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
        )
    return ServeProcess(role, f"http://127.0.0.1:{port}", log_path, process)
