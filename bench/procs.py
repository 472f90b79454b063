"""The processes of a benchmark: where each runs, how it starts and stops, what /proc says.

Placement on a two-core machine (taskset, when it exists): the sandbox on core 0,
the measured process (the gateway, the ceiling's client, wechatpy) alone on core 1,
and the load generators that feed the gateway on core 0 beside the sandbox, so
what is measured on core 1 is the measured process only. Token races run unpinned,
so their processes really run at the same time.

Load generators are child processes (`python -m bench.<module>`) that speak a
small protocol: they print "ready" once set up, start on a "go" line on stdin
(so start-up is never timed), and print their result as one JSON line. A secret
they need (an access token, an API key) travels in their environment, never in
their command line, which `ps` and the results' JSON show.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from wxgate.backends.base import Backend, Status
from wxgate.clock import SystemClock
from wxgate.config import Settings, hash_api_key, load_settings
from wxgate.gateway import make_backend
from wxgate.sandbox.config import DEFAULT_APPID, DEFAULT_CALLBACK_TOKEN, DEFAULT_SECRET
from wxgate.sandbox.control import SandboxControl

SANDBOX_CORE = 0
MEASURED_CORE = 1
LOAD_CORE = 0
SANDBOX_AHEAD_NICENESS = -10  # Sandbox.ahead(): the sandbox ahead of core 0's other work
SECRET_VARIABLE = "WXGATE_BENCH_SECRET"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
# The bench measures capacity, so the gateway's own brakes are set out of reach:
# the per-app send rate (WeChat publishes none for template messages) and the
# per-key request rate would otherwise cap every figure at their defaults.
UNLIMITED_RATE = 1_000_000_000


def can_pin() -> bool:
    return shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2


def pinned(command: list[str], core: int | None) -> list[str]:
    """`command` run on `core` when taskset exists (and `core` is not None)."""
    if core is None or not can_pin():
        return command
    return ["taskset", "-c", str(core), *command]


def placement() -> dict[str, str]:
    if not can_pin():
        return {"pinning": "none (no taskset or a single core)"}
    return {
        "sandbox": f"core {SANDBOX_CORE}",
        "measured process (gateway, ceiling client, wechatpy)": f"core {MEASURED_CORE}",
        "load generators feeding the gateway": f"core {LOAD_CORE}",
        "token race processes": "unpinned",
        "scale-out: 1 worker": f"core {MEASURED_CORE}",
        "scale-out: 2 workers": f"unpinned, and both on core {MEASURED_CORE}",
    }


def wxgate_command() -> list[str]:
    script = Path(sys.executable).with_name("wxgate")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from wxgate.cli import app; app()"]


# One example of each kind of command a run started (paths under its workdir as $WORK,
# under the repository as ./).
COMMANDS: dict[str, str] = {}
_REPOSITORY = str(Path(__file__).resolve().parent.parent)


def _remember(kind: str, command: list[str], workdir: Path) -> None:
    shown = " ".join(command).replace(str(workdir), "$WORK")
    COMMANDS[kind] = shown.replace(_REPOSITORY + "/", "./")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- /proc ---------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_bytes(pid: int) -> dict[str, int]:
    """VmRSS (resident now) and VmHWM (resident at its peak) of a process, in bytes."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = int(value.split()[0]) * 1024
    return found


# -- child processes ---------------------------------------------------------------------


class Child:
    """A load generator process: started, then ready, then go, then its JSON result."""

    def __init__(self, process: asyncio.subprocess.Process, log_path: Path, what: str) -> None:
        self.process = process
        self.log_path = log_path
        self.what = what

    @classmethod
    async def start(
        cls,
        workdir: Path,
        module: str,
        args: list[str],
        core: int | None,
        secret: str | None = None,
    ) -> Child:
        log_path = workdir / f"{module}-{secrets.token_hex(3)}.log"
        command = pinned([sys.executable, "-m", f"bench.{module}", *args], core)
        _remember(f"bench.{module} {args[0]}", command, workdir)
        env = {**os.environ, SECRET_VARIABLE: secret} if secret is not None else None
        with log_path.open("wb") as log:
            process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                env=env,
            )
        child = cls(process, log_path, f"bench.{module} {' '.join(args)}")
        line = await asyncio.wait_for(child._line(), START_TIMEOUT_S)
        if line != "ready":
            await child._fail(f"said {line!r} instead of ready")
        return child

    async def _line(self) -> str:
        assert self.process.stdout is not None
        return (await self.process.stdout.readline()).decode().strip()

    def go(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(b"go\n")

    async def result(self, timeout_s: float = 600.0) -> dict[str, Any]:
        out, _ = await asyncio.wait_for(self.process.communicate(), timeout_s)
        lines = out.decode().strip().splitlines()
        if self.process.returncode != 0 or not lines:
            await self._fail(f"exited with {self.process.returncode}")
        return json.loads(lines[-1])

    async def _fail(self, why: str) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        tail = self.log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{self.what} {why}:\n{tail}")


async def run_child(
    workdir: Path, module: str, args: list[str], core: int | None, secret: str | None = None
) -> tuple[dict[str, Any], float]:
    """Start a load generator, let it go, and return its result and the wall time from go."""
    child = await Child.start(workdir, module, args, core, secret)
    started = time.monotonic()
    child.go()
    result = await child.result()
    return result, time.monotonic() - started


def child_secret() -> str:
    """Child side: the secret the driver handed over."""
    return os.environ[SECRET_VARIABLE]


def await_go() -> None:
    """Child side: say ready, then block until the driver says go."""
    print("ready", flush=True)
    sys.stdin.readline()


async def go_signal() -> None:
    """Child side, inside an event loop: say ready, then wait until the driver says go."""
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


def report(result: dict[str, Any]) -> None:
    """Child side: the result, as the last line of stdout."""
    print(json.dumps(result), flush=True)


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            process.kill()
            await process.wait()


# -- the sandbox ---------------------------------------------------------------------------


@dataclass
class Sandbox:
    """`wxgate sandbox` as a process on its own core."""

    process: asyncio.subprocess.Process
    url: str
    control: SandboxControl

    @classmethod
    async def start(cls, workdir: Path) -> Sandbox:
        port_file = workdir / "sandbox.port"
        command = [*wxgate_command(), "sandbox", "--port", "0", "--port-file", str(port_file)]
        command = pinned(command, SANDBOX_CORE)
        _remember("sandbox", command, workdir)
        with (workdir / "sandbox.log").open("wb") as log:
            process = await asyncio.create_subprocess_exec(*command, stdout=log, stderr=log)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not port_file.exists():
            if process.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the sandbox did not start; see {workdir / 'sandbox.log'}")
            await asyncio.sleep(0.05)
        url = f"http://127.0.0.1:{port_file.read_text().strip()}"
        return cls(process, url, SandboxControl(url))

    @property
    def pid(self) -> int:
        return self.process.pid

    async def token(self) -> str:
        """The current access token of the default account (stable_token)."""
        body = {"grant_type": "client_credential", "appid": DEFAULT_APPID, "secret": DEFAULT_SECRET}
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{self.url}/cgi-bin/stable_token", json=body) as answer,
        ):
            return str((await answer.json())["access_token"])

    async def sends(self) -> int:
        return int((await self.control.stats())["sends_total"])

    async def wait_for_sends(self, count: int, timeout_s: float, poll_s: float = 0.02) -> float:
        """Wait until the sandbox has answered `count` sends; the monotonic time it saw them."""
        deadline = time.monotonic() + timeout_s
        while (await self.sends()) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the sandbox saw {await self.sends()} of {count} sends")
            await asyncio.sleep(poll_s)
        return time.monotonic()

    @contextlib.contextmanager
    def ahead(self, niceness: int = SANDBOX_AHEAD_NICENESS) -> Iterator[bool]:
        """The sandbox's scheduling priority raised to `niceness` for a measurement that
        reads its clock (arrival times): WeChat's clock does not stop when this
        machine's core 0 is busy, and a sandbox that waits for the core reads the sends
        of the wait together. Yields whether the priority could be raised (root, or
        CAP_SYS_NICE); restored after."""
        try:
            before = os.getpriority(os.PRIO_PROCESS, self.pid)
            os.setpriority(os.PRIO_PROCESS, self.pid, niceness)
        except OSError:
            yield False
            return
        try:
            yield True
        finally:
            with contextlib.suppress(OSError):  # it may have stopped meanwhile
                os.setpriority(os.PRIO_PROCESS, self.pid, before)

    async def stop(self) -> None:
        await self.control.close()
        await _stop(self.process)


# -- the gateway ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Storage:
    """Where a gateway keeps its messages: a fresh SQLite file, or a Redis key prefix
    (on the default redis_url, or on `redis_url`, a Redis Cluster's seed with
    `redis_cluster`, its queue in `redis_partitions` slots)."""

    engine: str  # "sqlite" | "redis"
    sqlite_path: Path
    redis_prefix: str
    redis_url: str = ""  # "": the settings' default
    redis_cluster: bool = False
    redis_partitions: int = 1  # the queue's slots on a cluster

    @classmethod
    def fresh(cls, workdir: Path, engine: str) -> Storage:
        name = f"bench-{os.getpid()}-{secrets.token_hex(4)}"
        return cls(engine, workdir / f"{name}.db", name)

    def lines(self) -> str:
        """The [storage] lines of a config file."""
        text = (
            f'backend = "{self.engine}"\nsqlite_path = "{self.sqlite_path}"\n'
            f'redis_prefix = "{self.redis_prefix}"\n'
        )
        if self.redis_url:
            text += f'redis_url = "{self.redis_url}"\n'
        if self.redis_cluster:
            text += "redis_cluster = true\n"
        if self.redis_partitions != 1:
            text += f"redis_partitions = {self.redis_partitions}\n"
        return text


@dataclass(frozen=True)
class GatewayConfig:
    """A gateway's config file (its own port, API key and storage) and the Settings it holds."""

    path: Path
    url: str
    key: str
    storage: Storage
    settings: Settings

    @classmethod
    def write(
        cls,
        workdir: Path,
        sandbox_url: str,
        storage: Storage,
        delivery: Mapping[str, int | float | str] | None = None,
        app_rate: float = UNLIMITED_RATE,
    ) -> GatewayConfig:
        """`delivery`: [delivery] settings (e.g. concurrency); `app_rate`: the app's
        rate_limit_per_s (out of reach unless a case measures the limit itself)."""
        port, key = free_port(), f"wxg_bench_{secrets.token_hex(16)}"
        path = workdir / f"{storage.redis_prefix}.toml"
        text = _config_text(port, sandbox_url, storage, key, delivery or {}, app_rate)
        path.write_text(text)
        return cls(path, f"http://127.0.0.1:{port}", key, storage, load_settings(path))


def _toml_value(value: int | float | str) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


def _config_text(
    port: int,
    sandbox_url: str,
    storage: Storage,
    key: str,
    delivery: Mapping[str, int | float | str],
    app_rate: float,
) -> str:
    delivery_lines = "".join(f"{name} = {_toml_value(v)}\n" for name, v in delivery.items())
    return f"""[server]
host = "127.0.0.1"
port = {port}
worker_port = {port}
api_keys = ["{hash_api_key(key)}"]
rate_limit_per_key_per_s = {UNLIMITED_RATE}
rate_limit_burst = {UNLIMITED_RATE}
max_body_bytes = {16 * 1024 * 1024}

[storage]
{storage.lines()}
[delivery]
{delivery_lines}
[log]
level = "INFO"
format = "json"

[apps.default]
appid = "{DEFAULT_APPID}"
secret = "{DEFAULT_SECRET}"
api_base = "{sandbox_url}"
callback_token = "{DEFAULT_CALLBACK_TOKEN}"
rate_limit_per_s = {app_rate:g}
"""


@dataclass
class Gateway:
    """`wxgate serve --config F --role R [--port P]` as a process."""

    process: asyncio.subprocess.Process
    config: GatewayConfig
    log_path: Path
    port: int | None = None  # overrides the config's port, so processes can share a config

    @classmethod
    async def start(
        cls, config: GatewayConfig, role: str, core: int | None, port: int | None = None
    ) -> Gateway:
        command = [*wxgate_command(), "serve", "--config", str(config.path), "--role", role]
        kind, suffix = f"gateway --role {role}", f".{role}.log"
        if port is not None:
            command += ["--port", str(port)]
            kind, suffix = f"{kind} --port", f".{role}-{port}.log"
        log_path = config.path.with_suffix(suffix)
        command = pinned(command, core)
        _remember(kind, command, config.path.parent)
        with log_path.open("ab") as log:
            process = await asyncio.create_subprocess_exec(*command, stdout=log, stderr=log)
        gateway = cls(process, config, log_path, port)
        await gateway._wait_until_healthy()
        return gateway

    @property
    def url(self) -> str:
        return self.config.url if self.port is None else f"http://127.0.0.1:{self.port}"

    @property
    def key(self) -> str:
        return self.config.key

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    async def _wait_until_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.process.returncode is not None:
                    break
                try:
                    async with session.get(f"{self.url}/healthz") as answer:
                        if answer.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
        await _stop(self.process)
        raise RuntimeError(f"the gateway did not start:\n{self.log_path.read_text()[-3000:]}")

    async def get_json(self, path: str) -> Any:
        async with (
            aiohttp.ClientSession(headers=self.headers) as session,
            session.get(f"{self.url}{path}") as answer,
        ):
            return await answer.json()

    async def post_json(self, path: str, body: Any) -> Any:
        async with (
            aiohttp.ClientSession(headers=self.headers) as session,
            session.post(f"{self.url}{path}", json=body) as answer,
        ):
            return await answer.json()

    async def stop(self) -> None:
        await _stop(self.process)


async def start_gateways(
    config: GatewayConfig, role: str, cores: Sequence[int | None]
) -> list[Gateway]:
    """One gateway per entry of `cores`, started at once on one config: the first on the
    config's port, the others on ports of their own. If one fails, the others are stopped."""
    ports = [None, *(free_port() for _ in cores[1:])]
    started = await asyncio.gather(
        *(Gateway.start(config, role, core, port) for core, port in zip(cores, ports, strict=True)),
        return_exceptions=True,
    )
    gateways = [gateway for gateway in started if isinstance(gateway, Gateway)]
    failures = [failure for failure in started if isinstance(failure, BaseException)]
    if failures:
        await asyncio.gather(*(gateway.stop() for gateway in gateways))
        raise failures[0]
    return gateways


# -- reading a gateway's storage from the driver --------------------------------------------


class StorageProbe:
    """The driver's own connection to a gateway's storage (through the Backend protocol)."""

    def __init__(self, settings: Settings) -> None:
        self.backend: Backend = make_backend(settings, SystemClock())

    async def __aenter__(self) -> StorageProbe:
        await self.backend.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.backend.close()

    async def sent(self) -> int:
        """Messages WeChat accepted (sent, or already reported delivered)."""
        counts = await self.backend.counts()
        return counts[Status.SENT] + counts[Status.DELIVERED]

    async def wait_for_sent(self, count: int, timeout_s: float, poll_s: float = 0.05) -> float:
        """Wait until `count` messages are durably sent; the monotonic time that was seen."""
        deadline = time.monotonic() + timeout_s
        while (await self.sent()) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{await self.sent()} of {count} messages sent in time")
            await asyncio.sleep(poll_s)
        return time.monotonic()


async def drop_redis_keys(storage: Storage, redis_url: str) -> int:
    """Delete every key a Redis gateway left under its (unique) prefix; how many."""
    import redis.asyncio as redis

    client = redis.from_url(redis_url)
    deleted = 0
    try:
        batch: list[bytes] = []
        async for key in client.scan_iter(match=f"{storage.redis_prefix}:*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += await client.delete(*batch)
                batch.clear()
        if batch:
            deleted += await client.delete(*batch)
    finally:
        await client.aclose()
    return deleted
