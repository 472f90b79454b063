"""The alert rules, Prometheus' and Alertmanager's configuration, and the compose
`monitoring` profile that runs them: each checked by the tool that will load it.

No Docker engine runs here, so `docker compose config` cannot; the profile is parsed
instead, and every file it mounts must exist.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.monitoring.conftest import (
    ALERTMANAGER_CONFIG,
    ALERTS,
    ALERTS_TEST,
    DASHBOARD,
    DEPLOY,
    PROMETHEUS_CONFIG,
    alert_rules,
    run_tool,
    tool,
)

MONITORING_SERVICES = ("prometheus", "alertmanager", "grafana")
RELAY_SERVICE = "wecom-robot-relay"
REQUIRED_ALERTS = (
    "WxgateAppPausedConfig",
    "WxgateAppPausedQuota",
    "WxgateDeadLettersGrowing",
    "WxgateQueuedMessageTooOld",
    "WxgateTokenFetchStorm",
    "WxgateTokenRefreshedElsewhere",
    "WxgateCallbacksRefused",
    "WxgateWebhooksFailing",
    "WxgateNoDeliveriesWhileMessagesWait",
)


def _compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def _mounts(service: dict[str, Any]) -> list[tuple[Path, str]]:
    """(host file, container path) for every bind mount of a service."""
    mounts = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            mounts.append((DEPLOY / source, target))
    return mounts


def test_promtool_accepts_the_alert_rules() -> None:
    result = run_tool(tool("promtool"), "check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_pass_their_unit_tests() -> None:
    result = run_tool(tool("promtool"), "test", "rules", str(ALERTS_TEST))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_accepts_the_prometheus_config() -> None:
    result = run_tool(tool("promtool"), "check", "config", str(PROMETHEUS_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr


def test_amtool_accepts_the_alertmanager_config() -> None:
    result = run_tool(tool("amtool"), "check-config", str(ALERTMANAGER_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("alert", REQUIRED_ALERTS)
def test_alert_is_defined(alert: str) -> None:
    assert alert in {rule["alert"] for rule in alert_rules()}


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_every_alert_tells_the_operator_what_happened_and_what_to_do(
    rule: dict[str, Any],
) -> None:
    assert rule["labels"]["severity"] in ("warning", "critical")
    assert len(rule["annotations"]["summary"]) > 20
    assert len(rule["annotations"]["description"]) > 150


def test_alertmanager_routes_to_wecom() -> None:
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    receivers = {receiver["name"]: receiver for receiver in config["receivers"]}
    [wecom] = receivers[config["route"]["receiver"]]["wechat_configs"]
    assert config["global"]["wechat_api_url"] == "https://qyapi.weixin.qq.com/cgi-bin/"
    assert {"corp_id", "agent_id", "api_secret"} <= set(wecom)


@pytest.mark.parametrize("service", MONITORING_SERVICES)
def test_monitoring_service_runs_only_in_its_profile(service: str) -> None:
    assert _compose()["services"][service]["profiles"] == ["monitoring"]


def test_robot_relay_runs_only_in_its_own_profile() -> None:
    assert _compose()["services"][RELAY_SERVICE]["profiles"] == ["wecom-robot"]


def test_alertmanager_reaches_the_robot_relay_where_compose_runs_it() -> None:
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    [robot] = [r for r in config["receivers"] if r["name"] == "wecom-group-robot"]
    relay = _compose()["services"][RELAY_SERVICE]
    port = relay["command"][relay["command"].index("--port") + 1]
    assert robot["webhook_configs"][0]["url"] == f"http://{RELAY_SERVICE}:{port}/alertmanager"
    [(source, target)] = _mounts(relay)
    assert source == DEPLOY / "alertmanager" / "wecom_robot_relay.py"
    assert relay["entrypoint"] == ["python", target]


@pytest.mark.parametrize("service", [*MONITORING_SERVICES, RELAY_SERVICE])
def test_every_file_a_monitoring_service_mounts_exists(service: str) -> None:
    mounts = _mounts(_compose()["services"][service])
    assert mounts
    for source, _ in mounts:
        assert source.exists(), source


def test_prometheus_mounts_its_rules_where_its_config_looks() -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    mounts = dict(_mounts(_compose()["services"]["prometheus"]))
    config_dir = Path(mounts[PROMETHEUS_CONFIG]).parent
    for rule_file in config["rule_files"]:
        assert mounts[ALERTS] == str(config_dir / rule_file)


def test_grafana_provisions_the_dashboard_and_the_data_source() -> None:
    mounts = dict(_mounts(_compose()["services"]["grafana"]))
    providers = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/wxgate.yml").read_text())
    [provider] = providers["providers"]
    assert Path(mounts[DASHBOARD]).parent == Path(provider["options"]["path"])
    sources = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    [source] = sources["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    assert "prometheus" in _compose()["services"]


def test_monitoring_ports_listen_on_loopback_only() -> None:
    for service in MONITORING_SERVICES:
        for port in _compose()["services"][service].get("ports", []):
            assert port.startswith("127.0.0.1:"), (service, port)
