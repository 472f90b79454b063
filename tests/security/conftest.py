"""A real gateway process under attack: `wxgate serve` (API and workers) on a SQLite
file, delivering to a sandbox WeChat process, both on loopback.

The gateway holds known secrets (AppSecrets, callback tokens, an AES key, API keys),
passed through WXGATE_* environment variables, so tests can search its answers,
metrics and log file for them. Two apps: `plain` takes plaintext callbacks, `safe`
AES-encrypted ones. The sandbox posts no delivery reports, so sent messages wait in
`sent` for the reports the tests forge, replay or break. The processes live for the
whole session; each test reaches them over HTTP and reads the process's memory from
/proc.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from tests.conftest import free_port
from wxgate.config import hash_api_key
from wxgate.observability import register_secret

WXGATE = (sys.executable, "-c", "from wxgate.cli import app; app()")
REPO = Path(__file__).resolve().parents[2]

API_KEY = "wxg_security_key_5e0c7a9d21b4"
OTHER_KEY = "wxg_security_other_key_0f6a3c"
REVOKED_KEY = "wxg_security_revoked_key_81f3b6"
PLAIN_APPID = "wxsec0000000000001"
SAFE_APPID = "wxsec0000000000002"
FOREIGN_APPID = "wxsec0000000000009"  # another account, never configured in the gateway
PLAIN_SECRET = "security-appsecret-plain-4b7e90a1"
SAFE_SECRET = "security-appsecret-safe-7c21d8e3"
PLAIN_TOKEN = "security-cbtoken-plain-2c8f51"
SAFE_TOKEN = "security-cbtoken-safe-9e04b7"
AES_KEY = "SecurityAesKey0123456789abcdefghijklmnopqrs"
KNOWN_SECRETS = (
    API_KEY, OTHER_KEY, REVOKED_KEY, PLAIN_SECRET, SAFE_SECRET, PLAIN_TOKEN, SAFE_TOKEN, AES_KEY
)  # fmt: skip
TEMPLATE = "TPL_security_notice"
START_TIMEOUT_S = 60.0

for _secret in KNOWN_SECRETS:
    register_secret(_secret)


def _sandbox_accounts() -> str:
    accounts = [(PLAIN_APPID, PLAIN_SECRET, PLAIN_TOKEN), (SAFE_APPID, SAFE_SECRET, SAFE_TOKEN)]
    return "".join(
        f'[[accounts]]\nappid = "{appid}"\nsecret = "{secret}"\n'
        f'callback_token = "{token}"\nencoding_aes_key = "{AES_KEY}"\n\n'
        for appid, secret, token in accounts
    )


def gateway_toml(
    port: int, db: Path, sandbox_url: str, keys: tuple[str, ...], **server: Any
) -> str:
    extra = "".join(f"{name} = {value}\n" for name, value in server.items())
    hashes = ", ".join(f'"{hash_api_key(key)}"' for key in keys)
    apps = "".join(
        f'[apps.{name}]\nappid = "{appid}"\napi_base = "{sandbox_url}"\n\n'
        for name, appid in (("plain", PLAIN_APPID), ("safe", SAFE_APPID))
    )
    return (
        f'[server]\nhost = "127.0.0.1"\nport = {port}\napi_keys = [{hashes}]\n{extra}\n'
        f'[storage]\nsqlite_path = "{db}"\n\n'
        "[delivery]\nbackoff_base_s = 0.05\nbackoff_cap_s = 0.2\nidle_poll_s = 0.02\n"
        "shutdown_grace_s = 1.0\n\n"
        '[log]\nlevel = "DEBUG"\nformat = "json"\n\n' + apps
    )


SECRET_ENV = {
    "WXGATE_APPS__PLAIN__SECRET": PLAIN_SECRET,
    "WXGATE_APPS__PLAIN__CALLBACK_TOKEN": PLAIN_TOKEN,
    "WXGATE_APPS__SAFE__SECRET": SAFE_SECRET,
    "WXGATE_APPS__SAFE__CALLBACK_TOKEN": SAFE_TOKEN,
    "WXGATE_APPS__SAFE__ENCODING_AES_KEY": AES_KEY,
}


@dataclass
class Process:
    """A child process writing to a log file; stopped with SIGTERM, then SIGKILL."""

    name: str
    argv: tuple[str, ...]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=REPO,
                env={**os.environ, **self.env},
            )  # fmt: skip

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def wait_until(self, ready: Any, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ready():
            if not self.alive() or time.monotonic() > deadline:
                log = self.log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{self.name}: no {what}:\n{log}")
            time.sleep(0.05)

    def stop(self) -> int | None:
        if self.popen is None:
            return None
        if self.alive():
            self.popen.terminate()
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode

    def memory_kb(self, field_name: str = "VmRSS") -> int:
        """A memory figure of the process from /proc: VmRSS now, or VmHWM (its peak)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
        raise LookupError(field_name)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as reply:  # noqa: S310 -- loopback http
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class Deployment:
    """The running sandbox and gateway, and where their files are."""

    workdir: Path
    sandbox: Process
    sandbox_url: str
    gateway: Process
    url: str
    db: Path

    def start_gateway(
        self,
        name: str,
        keys: tuple[str, ...],
        role: str = "all",
        db: Path | None = None,
        **server: Any,
    ) -> tuple[Process, str]:
        """Another gateway process with its own config, on the same SQLite file unless
        `db` names another."""
        port = free_port()
        config = self.workdir / f"{name}.toml"
        database = self.db if db is None else db
        config.write_text(gateway_toml(port, database, self.sandbox_url, keys, **server))
        argv = (*WXGATE, "serve", "--config", str(config), "--role", role)
        process = Process(name, argv, self.workdir / f"{name}.log", SECRET_ENV)
        process.start()
        url = f"http://127.0.0.1:{port}"
        process.wait_until(lambda: _answers(url + "/readyz"), "ready answer")
        return process, url

    def logs(self) -> dict[str, bytes]:
        return {path.name: path.read_bytes() for path in self.workdir.glob("*.log")}


@pytest.fixture(scope="session")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    workdir = tmp_path_factory.mktemp("security")
    accounts = workdir / "sandbox-accounts.toml"
    accounts.write_text(_sandbox_accounts())
    port_file = workdir / "sandbox.port"
    sandbox = Process(
        "sandbox",
        (
            *WXGATE,
            "sandbox",
            "--port",
            "0",
            "--port-file",
            str(port_file),
            "--config",
            str(accounts),
        ),
        workdir / "sandbox.log",
    )
    sandbox.start()
    sandbox.wait_until(port_file.exists, "port file")
    sandbox_url = f"http://127.0.0.1:{int(port_file.read_text())}"
    stack = Deployment(workdir, sandbox, sandbox_url, sandbox, "", workdir / "gateway.db")
    try:
        stack.gateway, stack.url = stack.start_gateway(
            "gateway", (API_KEY, OTHER_KEY, REVOKED_KEY), rate_limit_per_key_per_s=100000,
            rate_limit_burst=100000, max_body_bytes=1048576,
        )  # fmt: skip
        yield stack
    finally:
        stack.gateway.stop()
        sandbox.stop()


@dataclass
class Client:
    """HTTP to one gateway, as a business system (or an attacker) speaks it."""

    url: str
    http: aiohttp.ClientSession

    async def call(
        self, method: str, path: str, *, key: str | None = API_KEY, **kwargs: Any
    ) -> tuple[int, Any, Mapping[str, str]]:
        headers = {
            **({"Authorization": f"Bearer {key}"} if key else {}),
            **kwargs.pop("headers", {}),
        }
        async with self.http.request(method, self.url + path, headers=headers, **kwargs) as reply:
            raw = await reply.read()
            body: Any = raw
            if reply.content_type == "application/json" and raw:
                body = orjson.loads(raw)
            return reply.status, body, reply.headers

    async def send(self, app: str, touser: str, **extra: Any) -> str:
        """Post one message; its id."""
        body = {
            "app": app,
            "touser": touser,
            "template_id": TEMPLATE,
            "data": {"thing1": {"value": "ok"}},
            **extra,
        }
        status, answer, _ = await self.call("POST", "/v1/messages", json=body)
        assert status == 202, answer
        return str(answer["data"]["id"])

    async def record(self, message_id: str) -> dict[str, Any]:
        status, answer, _ = await self.call("GET", f"/v1/messages/{message_id}")
        assert status == 200, answer
        return dict(answer["data"])

    async def until_status(
        self, message_id: str, *statuses: str, timeout_s: float = 20.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            record = await self.record(message_id)
            if record["status"] in statuses or time.monotonic() > deadline:
                return record
            await asyncio.sleep(0.05)

    async def snapshot(self) -> dict[str, tuple[str, float, Any]]:
        """(status, updated_at, report_status) of every stored message: any change to a
        message changes its updated_at."""
        state: dict[str, tuple[str, float, Any]] = {}
        cursor = None
        while True:
            params = {"limit": "500", **({"cursor": cursor} if cursor else {})}
            status, answer, _ = await self.call("GET", "/v1/messages", params=params)
            assert status == 200, answer
            for item in answer["data"]["items"]:
                state[item["id"]] = (item["status"], item["updated_at"], item["report_status"])
            cursor = answer["data"]["next_cursor"]
            if cursor is None:
                return state


async def raw_request(url: str, request: bytes, timeout_s: float = 10.0) -> tuple[int, bytes]:
    """Send `request` byte for byte (no client normalising its path or headers); the
    answer's status and body. Status 0 when the server closed without answering."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        with contextlib.suppress(ConnectionError):  # the server may answer and close early
            await writer.drain()
        return await asyncio.wait_for(_read_answer(reader), timeout_s)
    except (ConnectionError, asyncio.IncompleteReadError):
        return 0, b""
    finally:
        writer.close()


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines if ": " in line)
    length = int(headers.get("content-length", headers.get("Content-Length", "0")))
    return int(status_line.split(" ")[1]), await reader.readexactly(length)


@pytest.fixture
async def client(deployment: Deployment) -> AsyncIterator[Client]:
    async with aiohttp.ClientSession() as http:
        yield Client(deployment.url, http)
