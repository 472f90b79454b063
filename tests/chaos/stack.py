"""The gateway under test as real processes: a sandbox WeChat, two API processes behind a
load balancer, several worker processes and, for the Redis engine, a redis-server of
its own (for `redis-cluster`, a three-primary Redis Cluster of its own).

Configuration is written to files in the run's directory, except the secrets, which
reach the gateway through WXGATE_* environment variables as an operator would pass
them. The secrets are fixed, known strings, so the run can search every log line,
answer and metric for them afterwards.
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import aiohttp
import redis.asyncio as aioredis

from tests.backends import redis_cluster
from tests.chaos.balancer import Balancer
from tests.chaos.processes import WXGATE, Service
from tests.conftest import free_port
from wxgate.backends.redis_keys import queue_tag
from wxgate.config import hash_api_key
from wxgate.observability import register_secret

Engine = Literal["sqlite", "redis", "redis-cluster"]

APP = "chaos"
# A redis-cluster run spreads its queue over this many partitions (storage.redis_partitions).
CLUSTER_PARTITIONS = 4
APPID = "wxchaos00000000001"
APP_SECRET = "chaos-appsecret-9d2b7e41c0a5"
CALLBACK_TOKEN = "chaos-callback-token-6e1f0b"
AES_KEY = "ChaosAesKey0123456789abcdefghijklmnopqrstuv"
API_KEY = "wxg_chaos_api_key_3c8d5a0f7b12"
KNOWN_SECRETS = (APP_SECRET, CALLBACK_TOKEN, AES_KEY, API_KEY)
# Until a started process answers ready. Seconds on an idle machine; 35-58 s were seen
# for a niced run on 2 cores shared with other busy jobs.
START_TIMEOUT_S = 90.0

for _secret in KNOWN_SECRETS:  # this process's own log lines are checked for them too
    register_secret(_secret)


@dataclass(frozen=True, slots=True)
class StackSettings:
    """How the gateway is configured for a run: short leases, a client read timeout
    well under the sandbox's 60 s hang, quick backoff, attempts enough that 20%
    transient faults almost never exhaust them."""

    engine: Engine = "sqlite"
    apis: int = 2
    workers: int = 3
    lease_s: float = 4.0
    connect_timeout_s: float = 1.0
    read_timeout_s: float = 1.0
    max_attempts: int = 12
    backoff_base_s: float = 0.05
    backoff_cap_s: float = 1.0
    concurrency: int = 64
    rate_limit_per_s: float = 5000.0
    log_level: str = "DEBUG"  # every line a gateway writes is searched for secrets
    breaker_failures: int = 50
    breaker_cooldown_s: float = 1.0
    sqlite_dir: Path | None = None  # where the SQLite file lives (default: the run's directory)


def _sandbox_accounts(callback_url: str) -> str:
    return f"""[[accounts]]
appid = "{APPID}"
secret = "{APP_SECRET}"
callback_token = "{CALLBACK_TOKEN}"
encoding_aes_key = "{AES_KEY}"
callback_url = "{callback_url}"
callback_mode = "safe"
"""


def _gateway_toml(s: StackSettings, api_port: int, storage: str, sandbox_url: str) -> str:
    return f"""[server]
host = "127.0.0.1"
port = {api_port}
api_keys = ["{hash_api_key(API_KEY)}"]
rate_limit_per_key_per_s = 100000
rate_limit_burst = 100000

[storage]
{storage}

[delivery]
max_attempts = {s.max_attempts}
backoff_base_s = {s.backoff_base_s}
backoff_cap_s = {s.backoff_cap_s}
lease_s = {s.lease_s}
concurrency = {s.concurrency}
breaker_failures = {s.breaker_failures}
breaker_cooldown_s = {s.breaker_cooldown_s}
shutdown_grace_s = 2.0
connect_timeout_s = {s.connect_timeout_s}
read_timeout_s = {s.read_timeout_s}

[log]
level = "{s.log_level}"
format = "json"

[apps.{APP}]
appid = "{APPID}"
api_base = "{sandbox_url}"
token_mode = "stable"
rate_limit_per_s = {s.rate_limit_per_s}
"""


SECRET_ENV = {
    f"WXGATE_APPS__{APP.upper()}__SECRET": APP_SECRET,
    f"WXGATE_APPS__{APP.upper()}__CALLBACK_TOKEN": CALLBACK_TOKEN,
    f"WXGATE_APPS__{APP.upper()}__ENCODING_AES_KEY": AES_KEY,
}


class Stack:
    """Every process of one run, started in order and stopped in reverse."""

    def __init__(self, settings: StackSettings, workdir: Path) -> None:
        if settings.engine == "redis" and shutil.which("redis-server") is None:
            raise RuntimeError("the redis engine needs redis-server on PATH")
        if settings.engine == "redis-cluster" and (why := redis_cluster.cluster_missing()):
            raise RuntimeError(f"the redis-cluster engine cannot run: {why}")
        self.settings = settings
        self.workdir = workdir
        self.api_ports = [free_port() for _ in range(settings.apis)]
        self.balancer = Balancer(self.api_ports)
        self.sandbox_url = ""
        self.redis: Service | None = None
        self.redis_port = free_port()
        self.cluster_ports: list[int] = []
        self.cluster: list[Service] = []  # the nodes of a redis-cluster run
        self.sandbox = Service("sandbox", (), workdir / "sandbox.log")
        self.apis: list[Service] = []
        self.workers: list[Service] = []
        self.worker_ports: list[int] = []

    @property
    def api_url(self) -> str:
        """The API as clients and WeChat reach it: through the load balancer."""
        return self.balancer.url

    def api_process_url(self, index: int) -> str:
        return f"http://127.0.0.1:{self.api_ports[index]}"

    def worker_url(self, index: int) -> str:
        return f"http://127.0.0.1:{self.worker_ports[index]}"

    def services(self) -> list[Service]:
        services = (self.redis, *self.cluster, self.sandbox, *self.apis, *self.workers)
        return [s for s in services if s is not None]

    async def start(self, http: aiohttp.ClientSession) -> None:
        if self.settings.engine == "redis":
            await self._start_redis()
        elif self.settings.engine == "redis-cluster":
            await self._start_cluster()
        await self.balancer.start()
        await self._start_sandbox()
        config = self.workdir / "wxgate.toml"
        config.write_text(
            _gateway_toml(self.settings, self.api_ports[0], self._storage(), self.sandbox_url)
        )
        for index, port in enumerate(self.api_ports):
            self.apis.append(self._gateway(f"api-{index}", "api", port, config))
        for index in range(self.settings.workers):
            port = free_port()
            self.worker_ports.append(port)
            self.workers.append(self._gateway(f"worker-{index}", "worker", port, config))
        await asyncio.gather(*(self.restart_api(http, i) for i in range(len(self.apis))))
        await asyncio.gather(*(self.restart_worker(http, i) for i in range(len(self.workers))))

    async def stop(self) -> dict[str, int | None]:
        """Gateway processes first (they hand back their leases), then the sandbox and Redis;
        the exit code of each."""
        codes = {}
        for service in (*self.workers, *self.apis):
            codes[service.name] = await service.stop()
        await self.balancer.stop()
        for last in (self.sandbox, self.redis, *self.cluster):
            if last is not None:
                codes[last.name] = await last.stop()
        return codes

    async def restart_worker(self, http: aiohttp.ClientSession, index: int) -> None:
        await self.workers[index].start()
        await self._until_ready(http, self.workers[index], self.worker_url(index))

    async def restart_api(self, http: aiohttp.ClientSession, index: int) -> None:
        await self.apis[index].start()
        await self._until_ready(http, self.apis[index], self.api_process_url(index))

    async def restart_redis(self, down_s: float) -> None:
        """SIGKILL redis-server (a crash, not a clean shutdown), wait, start it again on
        the same port and directory, and wait until it answers."""
        if self.cluster:
            await self._restart_primary(down_s)
            return
        assert self.redis is not None
        await self.redis.kill()
        await asyncio.sleep(down_s)
        await self.redis.start()
        await self.redis.until(self._redis_answers, START_TIMEOUT_S, "PING answer")

    async def _restart_primary(self, down_s: float) -> None:
        """On a cluster: SIGKILL the primary serving the queue's first partition, wait, start
        it again (its AOF and nodes.conf bring back its data and its slots), and wait until
        every node says cluster_state:ok."""
        tag = queue_tag(0, CLUSTER_PARTITIONS)
        index = await asyncio.to_thread(redis_cluster.owner_of, self.cluster_ports, tag)
        node = self.cluster[index]
        await node.kill()
        await asyncio.sleep(down_s)
        await node.start()

        async def cluster_ok() -> bool:
            return await asyncio.to_thread(redis_cluster.cluster_ok, self.cluster_ports)

        await node.until(cluster_ok, START_TIMEOUT_S, "cluster_state:ok")

    # -- pieces ----------------------------------------------------------------------

    def _storage(self) -> str:
        if self.settings.engine == "redis-cluster":
            return (
                f'backend = "redis"\nredis_url = "redis://127.0.0.1:{self.cluster_ports[0]}/0"\n'
                f"redis_cluster = true\nredis_partitions = {CLUSTER_PARTITIONS}\n"
                'redis_prefix = "chaos"'
            )
        if self.settings.engine == "redis":
            return (
                f'backend = "redis"\nredis_url = "redis://127.0.0.1:{self.redis_port}/0"\n'
                'redis_prefix = "chaos"'
            )
        directory = self.settings.sqlite_dir or self.workdir
        return f'backend = "sqlite"\nsqlite_path = "{directory / "chaos.db"}"'

    def _gateway(self, name: str, role: str, port: int, config: Path) -> Service:
        argv = (*WXGATE, "serve", "--config", str(config), "--role", role, "--port", str(port))
        return Service(name, argv, self.workdir / f"{name}.log", env=SECRET_ENV)

    async def _start_sandbox(self) -> None:
        accounts = self.workdir / "sandbox-accounts.toml"
        accounts.write_text(_sandbox_accounts(f"{self.api_url}/wechat/callback/{APP}"))
        port_file = self.workdir / "sandbox.port"
        argv = (*WXGATE, "sandbox", "--port", "0", "--port-file", str(port_file))
        self.sandbox = Service(
            "sandbox", (*argv, "--config", str(accounts)), self.workdir / "sandbox.log"
        )
        await self.sandbox.start()

        async def listening() -> bool:
            return port_file.exists()

        await self.sandbox.until(listening, START_TIMEOUT_S, "port file")
        self.sandbox_url = f"http://127.0.0.1:{int(port_file.read_text())}"

    async def _start_redis(self) -> None:
        data = self.workdir / "redis"
        data.mkdir(exist_ok=True)
        argv = (
            "redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
            "--dir", str(data), "--appendonly", "yes", "--appendfsync", "always",
            "--save", "", "--protected-mode", "no", "--daemonize", "no",
        )  # fmt: skip
        self.redis = Service("redis", argv, self.workdir / "redis.log")
        await self.redis.start()
        await self.redis.until(self._redis_answers, START_TIMEOUT_S, "PING answer")

    async def _start_cluster(self) -> None:
        self.cluster_ports = redis_cluster.free_node_ports()
        for port in self.cluster_ports:
            argv = redis_cluster.node_argv(port, self.workdir / f"redis-{port}")
            node = Service(f"redis-{port}", argv, self.workdir / f"redis-{port}.log")
            await node.start()
            self.cluster.append(node)
        await asyncio.to_thread(redis_cluster.create, self.cluster_ports)

    async def _redis_answers(self) -> bool:
        client = aioredis.Redis(port=self.redis_port, socket_connect_timeout=0.5)
        try:
            return bool(await client.ping())
        except (aioredis.ConnectionError, aioredis.TimeoutError, OSError):
            return False
        finally:
            await client.aclose()

    async def _until_ready(self, http: aiohttp.ClientSession, service: Service, url: str) -> None:
        async def ready() -> bool:
            try:
                async with http.get(f"{url}/readyz") as response:
                    return response.status == 200
            except aiohttp.ClientError:
                return False

        await service.until(ready, START_TIMEOUT_S, "ready answer on /readyz")
