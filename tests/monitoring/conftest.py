"""The monitoring files (deploy/grafana, deploy/prometheus, deploy/alertmanager) as data,
and a real Prometheus on loopback for the tests to query.

Panel and alert expressions are read from the shipped files, never copied, so a test
holds the files themselves to what it checks. Prometheus and promtool come from
Debian's `prometheus` package (`.ci/run` installs it); a test that needs one skips,
saying so, only when it is not installed.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.conftest import free_port

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "wxgate.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ALERTS_TEST = DEPLOY / "prometheus" / "alerts_test.yml"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
ALERTMANAGER_CONFIG = DEPLOY / "alertmanager" / "alertmanager.yml"

# What Grafana puts in place of the dashboard's variables, for a query sent straight
# to Prometheus: every app, and a rate window spanning many 1 s scrapes.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$app": ".*"}
START_DEADLINE_S = 60.0


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels() -> list[dict[str, Any]]:
    return [panel for panel in dashboard()["panels"] if panel["type"] != "row"]


def panel_exprs() -> list[tuple[str, str]]:
    """(panel title, PromQL expression) for every query of every panel."""
    return [(panel["title"], target["expr"]) for panel in panels() for target in panel["targets"]]


def alert_rules() -> list[dict[str, Any]]:
    return [
        rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]
    ]


def substitute(expr: str) -> str:
    """A panel's expression as Grafana would send it (every variable replaced)."""
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    if "$" in expr:
        raise AssertionError(f"a variable the tests do not substitute: {expr}")
    return expr


# Debian's package of each tool the tests run.
PACKAGES = {
    "prometheus": "prometheus",
    "promtool": "prometheus",
    "amtool": "prometheus-alertmanager",
    "prometheus-alertmanager": "prometheus-alertmanager",
}


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        package = PACKAGES[name]
        pytest.skip(f"{name} is not installed (Debian's `{package}`; .ci/run installs it)")
    return found


def run_tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


@dataclass
class Prometheus:
    """A Prometheus server on loopback, spoken to over its HTTP API."""

    url: str
    session: aiohttp.ClientSession

    async def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector (or scalar) `expr` evaluates to; raises on a PromQL error."""
        async with self.session.get(f"{self.url}/api/v1/query", params={"query": expr}) as r:
            answer = await r.json()
        if answer.get("status") != "success":
            raise AssertionError(f"{expr}: {answer.get('errorType')}: {answer.get('error')}")
        result = answer["data"]["result"]
        return result if answer["data"]["resultType"] == "vector" else [{"value": result}]

    async def value(self, expr: str) -> float | None:
        result = await self.query(expr)
        return float(result[0]["value"][1]) if result else None

    async def rules(self) -> list[dict[str, Any]]:
        async with self.session.get(f"{self.url}/api/v1/rules") as r:
            answer = await r.json()
        return [rule for group in answer["data"]["groups"] for rule in group["rules"]]

    async def scrapes(self, count: int) -> None:
        """Wait until `count` more scrapes of the gateway are stored."""
        done = 'count_over_time(up{job="wxgate"}[10m])'
        await self.wait_for(done, at_least=(await self.value(done) or 0) + count)

    async def wait_for(self, expr: str, *, at_least: float, timeout_s: float = 60.0) -> float:
        """Poll until `expr` is at least `at_least` (a scrape or two after the fact)."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = await self.value(expr)
            if value is not None and value >= at_least:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"{expr} = {value}, not {at_least} within {timeout_s} s")
            await asyncio.sleep(0.25)


def _config(target: str, rules: Path) -> str:
    return yaml.safe_dump(
        {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rules)],
            "scrape_configs": [
                {"job_name": "wxgate", "static_configs": [{"targets": [target]}]},
            ],
        }
    )


@asynccontextmanager
async def running_prometheus(target: str, workdir: Path) -> AsyncIterator[Prometheus]:
    """A Prometheus scraping `target` ("host:port") each second and evaluating
    deploy/prometheus/alerts.yml, its TSDB and log under `workdir`; stopped on exit."""
    binary = tool("prometheus")
    config = workdir / "prometheus.yml"
    config.write_text(_config(target, ALERTS))
    port = free_port()
    log = workdir / "prometheus.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            prometheus = Prometheus(f"http://127.0.0.1:{port}", session)
            await _ready(prometheus, process, log)
            yield prometheus
    finally:
        process.terminate()
        process.wait(timeout=30)


async def _ready(prometheus: Prometheus, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_DEADLINE_S
    while True:
        if process.poll() is not None:
            raise AssertionError(f"prometheus exited: {log.read_text()[-2000:]}")
        try:
            async with prometheus.session.get(f"{prometheus.url}/-/ready") as r:
                if r.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"prometheus not ready in {START_DEADLINE_S} s")
        await asyncio.sleep(0.1)
