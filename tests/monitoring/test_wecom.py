"""Alerts reach WeCom (企业微信): the shipped Alertmanager receivers, run by a real
Alertmanager, deliver to a local imitation of WeCom's API.

`wecom` (Alertmanager's wechat_configs) fetches a WeCom token and sends the app
message; `wecom-group-robot` posts to deploy/alertmanager/wecom_robot_relay.py, which
reshapes the notification for a group robot. Only the WeCom host is replaced, by a
server on loopback that answers as WeCom does.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from tests.conftest import free_port
from tests.monitoring.conftest import ALERTMANAGER_CONFIG, DEPLOY, tool

RELAY = DEPLOY / "alertmanager" / "wecom_robot_relay.py"
ROBOT_KEY = "robot-key-5f0e8c1d-2b7a-4c6e"
START_DEADLINE_S = 60.0
DELIVERY_DEADLINE_S = 60.0


def notification(*alerts: dict[str, Any], status: str = "firing") -> dict[str, Any]:
    """Alertmanager's webhook body (version 4) for `alerts`."""
    return {
        "version": "4",
        "status": status,
        "receiver": "wecom-group-robot",
        "alerts": list(alerts),
    }


def alert(name: str = "WxgateAppPausedConfig", description: str = "Fix it.") -> dict[str, Any]:
    return {
        "status": "firing",
        "labels": {"alertname": name, "app": "shop", "severity": "critical"},
        "annotations": {"summary": f"{name} for shop", "description": description},
    }


@dataclass
class FakeWeCom:
    """WeCom's API on loopback: token, app message, group robot; records what it got."""

    robot_errcode: int = 0
    robot_posts: list[dict[str, Any]] = field(default_factory=list)
    app_messages: list[dict[str, Any]] = field(default_factory=list)
    token_requests: list[dict[str, str]] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/cgi-bin/gettoken", self._token)
        app.router.add_post("/cgi-bin/message/send", self._message)
        app.router.add_post("/cgi-bin/webhook/send", self._robot)
        return app

    async def _token(self, request: web.Request) -> web.Response:
        self.token_requests.append(dict(request.query))
        return web.json_response({"errcode": 0, "access_token": "wecom-token", "expires_in": 7200})

    async def _message(self, request: web.Request) -> web.Response:
        self.app_messages.append(await request.json())
        return web.json_response({"errcode": 0, "errmsg": "ok"})

    async def _robot(self, request: web.Request) -> web.Response:
        if request.query.get("key") != ROBOT_KEY:
            return web.json_response({"errcode": 93000, "errmsg": "invalid webhook url"})
        self.robot_posts.append(await request.json())
        return web.json_response({"errcode": self.robot_errcode, "errmsg": "ok"})


@pytest.fixture
async def wecom() -> AsyncIterator[tuple[FakeWeCom, str]]:
    fake = FakeWeCom()
    runner = web.AppRunner(fake.app())
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield fake, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def _wait_listening(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_DEADLINE_S
    async with aiohttp.ClientSession() as http:
        while True:
            if process.poll() is not None:
                raise AssertionError(f"{url}: the process exited with {process.returncode}")
            try:
                async with http.get(url):
                    return
            except aiohttp.ClientError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"{url} did not answer in {START_DEADLINE_S} s") from None
                await asyncio.sleep(0.1)


@pytest.fixture
async def relay(wecom: tuple[FakeWeCom, str], tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    """The relay as a process, pointed at the fake robot; its URL and its log file."""
    _, base = wecom
    port = free_port()
    log = tmp_path / "relay.log"
    env = {"WECOM_ROBOT_URL": f"{base}/cgi-bin/webhook/send?key={ROBOT_KEY}", "PATH": ""}
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, str(RELAY), "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        await _wait_listening(f"http://127.0.0.1:{port}/", process)
        yield f"http://127.0.0.1:{port}/alertmanager", log
    finally:
        process.terminate()
        process.wait(timeout=10)


async def _post(url: str, body: dict[str, Any]) -> int:
    async with aiohttp.ClientSession() as http, http.post(url, json=body) as answer:
        return answer.status


async def test_relay_posts_each_alert_to_the_robot_as_markdown(
    wecom: tuple[FakeWeCom, str], relay: tuple[str, Path]
) -> None:
    fake, _ = wecom
    status = await _post(
        relay[0], notification(alert(description="Run `wxgate apps resume shop`."))
    )

    assert status == 200
    [post] = fake.robot_posts
    assert post["msgtype"] == "markdown"
    content = post["markdown"]["content"]
    assert "WxgateAppPausedConfig" in content and "(critical) app=shop" in content
    assert "> WxgateAppPausedConfig for shop" in content
    assert "Run `wxgate apps resume shop`." in content


async def test_relay_cuts_a_long_notification_to_the_robots_limit(
    wecom: tuple[FakeWeCom, str], relay: tuple[str, Path]
) -> None:
    fake, _ = wecom
    many = [alert(f"WxgateAlert{n}", description="告警说明 " * 40) for n in range(30)]

    assert await _post(relay[0], notification(*many)) == 200

    content = fake.robot_posts[0]["markdown"]["content"]
    assert len(content.encode()) <= 4096
    assert content.endswith("more in Alertmanager")
    assert "WxgateAlert0" in content


async def test_relay_answers_502_when_the_robot_refuses_so_alertmanager_retries(
    wecom: tuple[FakeWeCom, str], relay: tuple[str, Path]
) -> None:
    fake, _ = wecom
    fake.robot_errcode = 45009  # the robot's own rate limit

    assert await _post(relay[0], notification(alert())) == 502


async def test_relay_never_logs_the_robot_key(
    wecom: tuple[FakeWeCom, str], relay: tuple[str, Path]
) -> None:
    fake, _ = wecom
    fake.robot_errcode = 93000
    await _post(relay[0], notification(alert()))

    log = relay[1].read_text()
    assert "not relayed" in log
    assert ROBOT_KEY not in log


def _alertmanager_config(receiver: str, wecom_base: str, relay_url: str) -> str:
    """The shipped alertmanager.yml, sending everything to `receiver` at once, with
    WeCom's host and the relay's address replaced by the local ones."""
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    config["global"]["wechat_api_url"] = f"{wecom_base}/cgi-bin/"
    config["route"] = {**config["route"], "receiver": receiver, "group_wait": "0s", "routes": []}
    receivers = {r["name"]: r for r in config["receivers"]}
    receivers["wecom-group-robot"]["webhook_configs"][0]["url"] = relay_url
    return yaml.safe_dump(config, allow_unicode=True)


@pytest.fixture
async def start_alertmanager(tmp_path: Path) -> AsyncIterator[Any]:
    binary = tool("prometheus-alertmanager")
    processes: list[subprocess.Popen[bytes]] = []

    async def start(config: str) -> str:
        path = tmp_path / "alertmanager.yml"
        path.write_text(config)
        port = free_port()
        with (tmp_path / "alertmanager.log").open("wb") as log:
            processes.append(
                subprocess.Popen(
                    [
                        binary,
                        f"--config.file={path}",
                        f"--storage.path={tmp_path / 'alertmanager'}",
                        f"--web.listen-address=127.0.0.1:{port}",
                        "--cluster.listen-address=",  # no gossip port: one instance
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        url = f"http://127.0.0.1:{port}"
        await _wait_listening(f"{url}/-/ready", processes[-1])
        return url

    try:
        yield start
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=10)


async def _fire(alertmanager: str) -> None:
    body = [{"labels": alert()["labels"], "annotations": alert()["annotations"]}]
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{alertmanager}/api/v2/alerts", json=body) as answer,
    ):
        assert answer.status == 200, await answer.text()


async def _eventually(what: str, check: Any) -> None:
    deadline = time.monotonic() + DELIVERY_DEADLINE_S
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {DELIVERY_DEADLINE_S} s")
        await asyncio.sleep(0.1)


async def test_alertmanager_sends_a_firing_alert_as_a_wecom_app_message(
    wecom: tuple[FakeWeCom, str], start_alertmanager: Any
) -> None:
    fake, base = wecom
    alertmanager = await start_alertmanager(_alertmanager_config("wecom", base, "http://unused"))

    await _fire(alertmanager)
    await _eventually("an app message", lambda: fake.app_messages)

    [message] = fake.app_messages
    assert fake.token_requests[0]["corpsecret"] == "REPLACE_WITH_APP_SECRET"
    assert message["msgtype"] == "markdown"
    assert message["toparty"] == "REPLACE_WITH_DEPARTMENT_ID"
    content = message["markdown"]["content"]
    assert "告警: WxgateAppPausedConfig** (critical)" in content
    assert "> WxgateAppPausedConfig for shop" in content


async def test_alertmanager_sends_a_firing_alert_to_the_group_robot_through_the_relay(
    wecom: tuple[FakeWeCom, str], relay: tuple[str, Path], start_alertmanager: Any
) -> None:
    fake, base = wecom
    alertmanager = await start_alertmanager(
        _alertmanager_config("wecom-group-robot", base, relay[0])
    )

    await _fire(alertmanager)
    await _eventually("a robot post", lambda: fake.robot_posts)

    content = fake.robot_posts[0]["markdown"]["content"]
    assert "WxgateAppPausedConfig" in content and "> WxgateAppPausedConfig for shop" in content
