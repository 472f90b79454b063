"""A new user's first hour, as real `wxgate` processes on this host.

README's "Running it", step by step: `config init --sandbox`, `config check`, the
sandbox, `serve`, `send`, and the message ends delivered. The README's fixed ports
(8000, 8081) could be taken on a shared machine, so the test moves them to free ones
the documented way: WXGATE_* variables over the file and `sandbox --port`.

Then ports: one config file serving an API process and two worker processes on one
host (Redis), each worker's health listener on a port of its own; `--port` for every
role; a worker with no listener; and a taken port, named in one line with exit 3.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.conftest import free_port

WXGATE = str(Path(sys.executable).with_name("wxgate"))
API_KEY_SHAPE = re.compile(r"wxg_[A-Za-z0-9_-]{40,}")
REDIS_URL = "redis://127.0.0.1:6379/0"
TEMPLATE = "tmpl_order_shipped"
START_DEADLINE_S = 60.0
DELIVERY_DEADLINE_S = 60.0


def cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`wxgate ARGS`, run to completion in `cwd`."""
    return subprocess.run(
        [WXGATE, *args],
        cwd=cwd,
        env=_environment(env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _environment(extra: dict[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WXGATE_")}
    return env | {"COLUMNS": "200"} | (extra or {})


def http(method: str, url: str, key: str | None = None, body: Any = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = None if body is None else json.dumps(body).encode()
    assert url.startswith("http://127.0.0.1:")  # loopback http only, hence the noqa
    request = urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
            raw = answer.read()
            status = answer.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def answers(url: str) -> bool:
    try:
        return http("GET", url)[0] == 200
    except OSError:
        return False


def wait_until(check: Callable[[], bool], what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s")
        time.sleep(0.1)


@dataclass
class Process:
    """One long-running `wxgate` command, its output in a log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def listening_url(self) -> str:
        """The URL of its "listening" log line (a JSON log: stderr is not a terminal)."""

        def logged() -> bool:
            assert self.popen.poll() is None, f"{self.name} exited: {self.log()[-2000:]}"
            return '"listening"' in self.log()

        wait_until(logged, f"{self.name} logs where it listens", START_DEADLINE_S)
        [line] = [line for line in self.log().splitlines() if '"listening"' in line]
        return str(json.loads(line)["url"])

    def wait_ready(self, url: str) -> None:
        def ready() -> bool:
            assert self.popen.poll() is None, f"{self.name} exited: {self.log()[-2000:]}"
            return answers(url)

        wait_until(ready, f"{self.name} answers {url}", START_DEADLINE_S)


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Process]]:
    """start(name, *args, cwd=, env=) -> a running `wxgate ARGS`; all killed afterwards."""
    started: list[Process] = []

    def run(name: str, *args: str, cwd: Path, env: dict[str, str] | None = None) -> Process:
        log_path = tmp_path / f"{name}.log"
        with log_path.open("wb") as log:
            popen = subprocess.Popen(
                [WXGATE, *args],
                cwd=cwd,
                env=_environment(env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        started.append(Process(name, popen, log_path))
        return started[-1]

    yield run
    for process in started:
        if process.popen.poll() is None:
            process.popen.kill()
            process.popen.wait()


def init_sandbox_config(workdir: Path) -> str:
    """`wxgate config init --sandbox` in `workdir`; the API key it printed."""
    done = cli("config", "init", "--sandbox", cwd=workdir)
    assert done.returncode == 0, done.stderr
    [key] = API_KEY_SHAPE.findall(done.stdout)
    return key


def start_sandbox(
    start: Callable[..., Process], workdir: Path, port: int, gateway_port: int
) -> Process:
    """`wxgate sandbox --port P --callback-url ...`, as README says, once it answers."""
    callback_url = f"http://127.0.0.1:{gateway_port}/wechat/callback/default"
    sandbox = start(
        "sandbox", "sandbox", "--port", str(port), "--callback-url", callback_url, cwd=workdir
    )
    sandbox.wait_ready(f"http://127.0.0.1:{port}/sandbox/stats")
    return sandbox


def wait_delivered(url: str, key: str, what: str) -> None:
    def delivered() -> bool:
        status, answer = http("GET", url, key)
        assert status == 200, answer
        data = answer["data"]
        counts = data.get("counts")
        if counts is None:
            return bool(data["status"] == "delivered")
        return counts.get("delivered", 0) == data["total"]

    wait_until(delivered, what, DELIVERY_DEADLINE_S)


# -- README, "Running it" -----------------------------------------------------------------------


def test_the_readme_steps_take_a_message_from_config_init_to_delivered(
    tmp_path: Path, start: Callable[..., Process]
) -> None:
    key = init_sandbox_config(tmp_path)
    checked = cli("config", "check", cwd=tmp_path)
    gateway_port, sandbox_port = free_port(), free_port()
    moved = {
        "WXGATE_SERVER__PORT": str(gateway_port),
        "WXGATE_APPS__DEFAULT__API_BASE": f"http://127.0.0.1:{sandbox_port}",
    }
    start_sandbox(start, tmp_path, sandbox_port, gateway_port)
    gateway = start("serve", "serve", cwd=tmp_path, env=moved)
    gateway.wait_ready(f"http://127.0.0.1:{gateway_port}/readyz")

    sent = cli(
        "send", "--touser", "oFirstHour", "--template-id", TEMPLATE, "-d", "thing2=Shipped",
        cwd=tmp_path, env=moved | {"WXGATE_API_KEY": key},
    )  # fmt: skip

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert key not in (tmp_path / "wxgate.toml").read_text()  # only its hash is kept
    assert sent.returncode == 0, sent.stdout + sent.stderr
    message_id = json.loads(sent.stdout.partition("\n")[2])["data"]["id"]
    url = f"http://127.0.0.1:{gateway_port}/v1/messages/{message_id}"
    wait_delivered(url, key, f"message {message_id} delivered")
    shown = cli("messages", "show", message_id, cwd=tmp_path)
    assert '"status": "delivered"' in shown.stdout
    assert key not in gateway.log() and "sandbox-secret" not in gateway.log()


# -- ports: any number of workers on one host -----------------------------------------------


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test's own on the local redis-server, deleted afterwards."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        pytest.skip(f"no redis-server answers at {REDIS_URL}: {exc}")
    prefix = f"wxgate-first-hour-{uuid.uuid4().hex[:12]}"
    yield prefix
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def test_an_api_and_two_workers_share_one_config_file_on_one_host(
    tmp_path: Path, start: Callable[..., Process], redis_prefix: str
) -> None:
    key = init_sandbox_config(tmp_path)
    config = tmp_path / "wxgate.toml"
    text = config.read_text()
    assert 'backend = "sqlite"' in text and "worker_port = 0" in text
    config.write_text(
        text.replace(
            'backend = "sqlite"',
            f'backend = "redis"\nredis_url = "{REDIS_URL}"\nredis_prefix = "{redis_prefix}"',
        )
    )
    api_port, sandbox_port = free_port(), free_port()
    moved = {
        "WXGATE_SERVER__PORT": str(api_port),
        "WXGATE_APPS__DEFAULT__API_BASE": f"http://127.0.0.1:{sandbox_port}",
    }
    start_sandbox(start, tmp_path, sandbox_port, api_port)
    api = start("api", "serve", "--role", "api", cwd=tmp_path, env=moved)
    workers = [
        start(f"worker-{n}", "serve", "--role", "worker", cwd=tmp_path, env=moved) for n in (1, 2)
    ]
    api.wait_ready(f"http://127.0.0.1:{api_port}/readyz")
    worker_urls = [worker.listening_url() for worker in workers]
    for worker, url in zip(workers, worker_urls, strict=True):
        worker.wait_ready(f"{url}/readyz")

    status, answer = http(
        "POST",
        f"http://127.0.0.1:{api_port}/v1/messages/batch",
        key,
        {
            "template_id": TEMPLATE,
            "data": {"thing2": {"value": "Shipped"}},
            "recipients": [f"oWorkers_{n:03d}" for n in range(40)],
        },
    )

    assert status == 202, answer
    assert len(set(worker_urls)) == 2 and f":{api_port}" not in " ".join(worker_urls)
    batch_url = f"http://127.0.0.1:{api_port}/v1/batches/{answer['data']['batch_id']}"
    wait_delivered(batch_url, key, "the batch delivered")
    for process in (api, *workers):
        assert process.popen.poll() is None, process.log()[-2000:]


@pytest.mark.parametrize("role", ["all", "api", "worker"])
def test_serve_port_sets_where_every_role_listens(
    tmp_path: Path, start: Callable[..., Process], role: str
) -> None:
    init_sandbox_config(tmp_path)
    port = free_port()

    gateway = start(role, "serve", "--role", role, "--port", str(port), cwd=tmp_path)

    gateway.wait_ready(f"http://127.0.0.1:{port}/healthz")
    assert gateway.listening_url() == f"http://127.0.0.1:{port}"


def test_a_worker_with_worker_port_minus_1_serves_no_http_and_stops_cleanly(
    tmp_path: Path, start: Callable[..., Process]
) -> None:
    init_sandbox_config(tmp_path)

    worker = start(
        "worker", "serve", "--role", "worker", cwd=tmp_path,
        env={"WXGATE_SERVER__WORKER_PORT": "-1"},
    )  # fmt: skip
    wait_until(lambda: '"serving no HTTP"' in worker.log(), "the worker started", START_DEADLINE_S)
    worker.popen.send_signal(signal.SIGTERM)

    assert worker.popen.wait(timeout=30) == 0, worker.log()[-2000:]
    assert '"listening"' not in worker.log() and '"gateway stopped"' in worker.log()


# -- a port that is taken -------------------------------------------------------------------


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port another process listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


@pytest.mark.parametrize(
    ("role", "variable", "setting"),
    [
        ("all", "WXGATE_SERVER__PORT", "[server] port"),
        ("api", "WXGATE_SERVER__PORT", "[server] port"),
        ("worker", "WXGATE_SERVER__WORKER_PORT", "[server] worker_port"),
    ],
)
def test_a_taken_port_is_one_line_naming_the_port_and_the_setting_with_exit_3(
    tmp_path: Path, taken_port: int, role: str, variable: str, setting: str
) -> None:
    init_sandbox_config(tmp_path)

    done = cli("serve", "--role", role, cwd=tmp_path, env={variable: str(taken_port)})

    assert done.returncode == 3
    [line] = (done.stdout + done.stderr).strip().splitlines()
    assert f"127.0.0.1:{taken_port}" in line and "address already in use" in line
    assert setting in line and "--port" in line
