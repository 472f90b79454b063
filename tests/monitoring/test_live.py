"""A real Prometheus scrapes a real gateway that has delivered messages; every panel of
the dashboard and every alert evaluates without error, and the main panels show data.

The gateway (role all, SQLite) sends to the sandbox, whose test openids make WeChat's
answers: `invalid_...` is refused with 40003, `busy_...` answers -1 twice and then
succeeds; the sandbox reports deliveries to the gateway's callback URL. Prometheus
scrapes the gateway every second and evaluates deploy/prometheus/alerts.yml. One
gateway and one Prometheus serve the module's tests (starting them takes seconds).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from tests.conftest import free_port
from tests.e2e.conftest import API_KEY, APP, TEMPLATE, e2e_settings, order_data
from tests.monitoring.conftest import (
    Prometheus,
    alert_rules,
    panel_exprs,
    running_prometheus,
    substitute,
)
from wxgate.gateway import Gateway
from wxgate.sandbox.server import SandboxServer
from wxgate.server import serve_in_background

pytestmark = pytest.mark.asyncio(loop_scope="module")

FINE = ("o_monitor_1", "o_monitor_2", "o_monitor_3", "busy_monitor_1")
REFUSED = ("invalid_monitor_1",)
# Panels that show data once messages went through, whatever else is deployed.
PANELS_WITH_DATA = (
    "Throughput by outcome",
    "WeChat errors by category and errcode",
    "Send latency",
    "Queue depth",
    "Token fetches",
    "Pauses",
    "Circuit breakers",
    "Callbacks by result",
    "Intake latency",
    "Sent to WeChat",
    "Queued",
)


async def _send(url: str, tousers: tuple[str, ...]) -> None:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        for touser in tousers:
            body = {"touser": touser, "template_id": TEMPLATE, "data": order_data()}
            async with http.post(f"{url}/v1/messages", json=body) as answer:
                assert answer.status == 202, await answer.text()


async def _gateway(stack: AsyncExitStack, port: int, workdir: Path) -> str:
    callback = f"http://127.0.0.1:{port}/wechat/callback/{APP}"
    sandbox = SandboxServer(host="127.0.0.1", port=0, callback_url=callback)
    await sandbox.start()
    stack.push_async_callback(sandbox.stop)
    settings = e2e_settings(
        port=port, db_path=workdir / "wxgate.db", api_base=sandbox.base_url, safe=False
    )
    gateway = Gateway(settings)
    await gateway.start()
    stack.push_async_callback(gateway.stop)
    assert gateway.app is not None
    server = await serve_in_background(gateway.app, "127.0.0.1", port)
    stack.push_async_callback(server.stop)
    return f"http://127.0.0.1:{port}"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def prometheus(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Prometheus]:
    """Prometheus, once it has scraped the gateway's settled sends and reports."""
    workdir = tmp_path_factory.mktemp("monitoring")
    port = free_port()
    async with AsyncExitStack() as stack:
        url = await _gateway(stack, port, workdir)
        server = await stack.enter_async_context(running_prometheus(f"127.0.0.1:{port}", workdir))
        await server.wait_for('up{job="wxgate"}', at_least=1)
        await _send(url, FINE + REFUSED)
        settled = 'sum(wxgate_messages_total{outcome=~"sent|failed"})'
        await server.wait_for(settled, at_least=len(FINE + REFUSED))
        await server.wait_for('sum(wxgate_callbacks_total{result="applied"})', at_least=1)
        await server.scrapes(2)  # a series that appeared last needs two samples to rate
        yield server


async def test_dashboard_and_alerts_evaluate_on_a_real_prometheus(
    prometheus: Prometheus,
) -> None:
    with_data = set()
    for title, expr in panel_exprs():
        if await prometheus.query(substitute(expr)):  # raises on a PromQL error
            with_data.add(title)
    for rule in alert_rules():
        await prometheus.query(rule["expr"])

    assert set(PANELS_WITH_DATA) - with_data == set()


async def test_throughput_and_errcode_panels_show_what_was_delivered(
    prometheus: Prometheus,
) -> None:
    queries = dict(panel_exprs())

    outcomes = await prometheus.query(substitute(queries["Throughput by outcome"]))
    errors = await prometheus.query(substitute(queries["WeChat errors by category and errcode"]))

    assert {"accepted", "sent", "retry", "failed"} <= {s["metric"]["outcome"] for s in outcomes}
    codes = {(s["metric"]["category"], s["metric"]["errcode"]) for s in errors}
    assert ("RECIPIENT", "40003") in codes
    assert ("TRANSIENT", "-1") in codes


async def test_every_alert_rule_loads_and_evaluates_healthy(prometheus: Prometheus) -> None:
    rules = await prometheus.rules()

    assert {rule["name"] for rule in rules} == {rule["alert"] for rule in alert_rules()}
    assert [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []
