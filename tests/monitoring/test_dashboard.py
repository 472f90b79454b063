"""deploy/grafana/wxgate.json is a Grafana dashboard over the metrics the gateway exports.

What its queries return from a real Prometheus is test_live.py; here the file itself:
its variables, its panels, and that every metric and label it names exists.
"""

from __future__ import annotations

import re

import pytest
from prometheus_client.metrics import MetricWrapperBase

from tests.monitoring.conftest import alert_rules, dashboard, panel_exprs, panels
from wxgate.observability import Metrics

# Metrics that work beside this one adds (their names and labels agreed beforehand);
# the dashboard and the alerts use them already. Drop a line once observability.py
# defines the metric: the definition then answers for it.
AGREED_METRICS = {
    "wxgate_callbacks_refused_total": {"app", "reason"},
    "wxgate_token_foreign_refresh_total": {"app"},
}
PROMETHEUS_LABELS = {"job", "instance"}
SERIES_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
}
METRIC_NAME = re.compile(r"\bwxgate_[a-z_]+")
SELECTOR = re.compile(r"\b(wxgate_[a-z_]+)\{([^}]*)\}")
MATCHER_LABEL = re.compile(r"([a-z_]+)\s*(?:=~|!~|!=|=)")
MAIN_PANELS = (
    "Throughput by outcome",
    "WeChat errors by category and errcode",
    "Send latency",
    "Queue depth",
    "Oldest queued message",
    "Token fetches",
    "Pauses",
    "Circuit breakers",
    "Callbacks refused",
    "Webhook backlog",
    "Intake latency",
)


def exported_series() -> dict[str, set[str]]:
    """Every series name the gateway exports, with its label names."""
    series: dict[str, set[str]] = {}
    for metric in vars(Metrics()).values():
        if isinstance(metric, MetricWrapperBase):
            labels = set(metric._labelnames)
            for suffix in SERIES_SUFFIXES[metric._type]:
                extra = {"le"} if suffix == "_bucket" else set()
                series[metric._name + suffix] = labels | extra
    return series


def known_series() -> dict[str, set[str]]:
    return {**AGREED_METRICS, **exported_series()}


def every_expr() -> list[tuple[str, str]]:
    return panel_exprs() + [(rule["alert"], rule["expr"]) for rule in alert_rules()]


def test_dashboard_is_a_current_grafana_dashboard() -> None:
    board = dashboard()
    assert board["schemaVersion"] >= 39
    assert board["uid"] == "wxgate-overview"
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))


def test_dashboard_asks_for_a_prometheus_data_source_and_the_apps() -> None:
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    app = variables["app"]
    assert app["query"] == app["definition"] == "label_values(wxgate_messages_total, app)"
    assert app["multi"] and app["includeAll"] and app["allValue"] == ".*"


def test_every_panel_queries_the_chosen_data_source() -> None:
    for panel in panels():
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


@pytest.mark.parametrize("title", MAIN_PANELS)
def test_dashboard_has_panel(title: str) -> None:
    assert title in {panel["title"] for panel in panels()}


def test_panels_do_not_overlap() -> None:
    cells: set[tuple[int, int]] = set()
    for panel in dashboard()["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        area = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not area & cells, panel["title"]
        cells |= area


@pytest.mark.parametrize(("where", "expr"), every_expr())
def test_every_metric_named_is_exported_or_agreed(where: str, expr: str) -> None:
    unknown = set(METRIC_NAME.findall(expr)) - set(known_series())
    assert not unknown, f"{where}: {sorted(unknown)}"


@pytest.mark.parametrize(("where", "expr"), every_expr())
def test_every_label_matched_belongs_to_its_metric(where: str, expr: str) -> None:
    known = known_series()
    for name, matchers in SELECTOR.findall(expr):
        labels = set(MATCHER_LABEL.findall(matchers))
        assert labels <= known[name] | PROMETHEUS_LABELS, f"{where}: {name} {labels}"


@pytest.mark.parametrize(("title", "expr"), panel_exprs())
def test_panels_filter_by_app_where_the_metric_has_one(title: str, expr: str) -> None:
    known = known_series()
    for name in set(METRIC_NAME.findall(expr)):
        if "app" in known[name]:
            assert re.search(rf'{name}\{{[^}}]*app=~"\$app"', expr), f"{title}: {name}"
