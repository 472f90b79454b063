"""What a benchmark run found: figures with their targets, as a table, JSON and a chart.

A case declares its figures (`Spec`: unit, target, the figure it is a ratio to);
each round gives one value per figure; the run reports medians with min–max, and
ratios of medians measured side by side in the same run.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sqlite3
import statistics
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

_OPS = {
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    "==": lambda a, b: a == b,
}
_SHOWN_OP = {">=": "≥", "<": "<", "<=": "≤", "==": "="}
VERSIONS_OF = (
    "wxgate", "fastapi", "starlette", "pydantic", "uvicorn", "uvloop", "httptools",
    "aiohttp", "orjson", "redis", "wechatpy", "requests", "matplotlib",
)  # fmt: skip


@dataclass(frozen=True)
class Target:
    """What a figure should reach: its value (or its ratio, `on_ratio`) `op` `bound`."""

    op: str
    bound: float
    on_ratio: bool = False

    def met(self, value: float, ratio: float | None) -> bool | None:
        measured = ratio if self.on_ratio else value
        return None if measured is None else _OPS[self.op](measured, self.bound)

    def text(self, unit: str, reference: str | None) -> str:
        if self.on_ratio:
            return f"{_SHOWN_OP[self.op]} {self.bound:g}× {reference}"
        return f"{_SHOWN_OP[self.op]} {self.bound:,.10g} {unit}"


@dataclass(frozen=True)
class Spec:
    """One figure a case measures."""

    key: str
    case: str
    name: str
    unit: str
    target: Target | None = None
    ratio_to: str | None = None  # the key of the figure this one is divided by
    chart: str = "throughput"  # the chart panel: throughput, latency, tokens, memory
    short: str = ""  # how a ratio to this figure names it


@dataclass
class Row:
    spec: Spec
    values: list[float]
    median: float
    low: float
    high: float
    ratio: float | None = None
    met: bool | None = None


@dataclass
class Run:
    """Every figure of one run, with how and where it was measured."""

    rows: list[Row]
    rounds: int
    quick: bool
    command: list[str]
    machine: dict[str, Any]
    placement: dict[str, str]
    commands: dict[str, str]
    details: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    seconds: float = 0.0


def summarise(specs: list[Spec], values: dict[str, list[float]]) -> list[Row]:
    """Medians, ranges, ratios and verdicts of the figures that were measured."""
    rows = {}
    for spec in specs:
        measured = values.get(spec.key)
        if measured:
            rows[spec.key] = Row(
                spec, measured, statistics.median(measured), min(measured), max(measured)
            )
    for row in rows.values():
        reference = rows.get(row.spec.ratio_to or "")
        if reference is not None and reference.median:
            row.ratio = row.median / reference.median
        if row.spec.target is not None:
            row.met = row.spec.target.met(row.median, row.ratio)
    return list(rows.values())


def machine() -> dict[str, Any]:
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for name in VERSIONS_OF:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "sqlite": sqlite3.sqlite_version,
        "load_average_at_start": os.getloadavg(),
        "versions": versions,
    }


# -- output ----------------------------------------------------------------------------------


def _number(value: float, unit: str) -> str:
    if unit in ("ms", "MB") or abs(value) < 10:
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    return f"{value:,.0f}"


def _reference_name(rows: list[Row], key: str | None) -> str | None:
    for row in rows:
        if row.spec.key == key:
            return row.spec.short or row.spec.name
    return key


def table(run: Run) -> Table:
    title = f"wxgate benchmarks: medians of {run.rounds} round(s)"
    if run.quick:
        title += " (quick mode: small counts, not comparable)"
    grid = Table(title=title, title_justify="left")
    for column in ("case", "figure", "unit", "median", "min–max", "ratio", "target", "met?"):
        grid.add_column(column, justify="right" if column in ("median", "ratio") else "left")
    for row in run.rows:
        spec = row.spec
        unit = spec.unit
        reference = _reference_name(run.rows, spec.ratio_to)
        ratio = "" if row.ratio is None else f"{row.ratio:.2f}× {reference}"
        target = "" if spec.target is None else spec.target.text(unit, reference)
        verdict = {True: "[green]yes[/green]", False: "[red]no[/red]", None: ""}[row.met]
        span = f"{_number(row.low, unit)}–{_number(row.high, unit)}"
        grid.add_row(
            spec.case, spec.name, unit, _number(row.median, unit), span, ratio, target, verdict
        )
    return grid


def print_table(run: Run, console: Console) -> None:
    console.print(table(run))
    console.print(
        f"{run.seconds:,.0f} s; placement: "
        + "; ".join(f"{what}: {where}" for what, where in run.placement.items())
    )


def markdown(run: Run) -> str:
    """The table as Markdown, for docs/performance.md."""
    lines = [
        "| case | figure | unit | median | min–max | ratio | target | met? |",
        "|---|---|---|---:|---|---:|---|---|",
    ]
    for row in run.rows:
        spec = row.spec
        reference = _reference_name(run.rows, spec.ratio_to)
        ratio = "" if row.ratio is None else f"{row.ratio:.2f}× {reference}"
        target = "" if spec.target is None else spec.target.text(spec.unit, reference)
        met = {True: "yes", False: "**no**", None: ""}[row.met]
        span = f"{_number(row.low, spec.unit)}–{_number(row.high, spec.unit)}"
        median = _number(row.median, spec.unit)
        lines.append(
            f"| {spec.case} | {spec.name} | {spec.unit} | {median} | {span} | {ratio} |"
            f" {target} | {met} |"
        )
    return "\n".join(lines) + "\n"


def to_json(run: Run) -> dict[str, Any]:
    figures = []
    for row in run.rows:
        spec = asdict(row.spec)
        figures.append(
            {
                **spec,
                "values": row.values,
                "median": row.median,
                "min": row.low,
                "max": row.high,
                "ratio": row.ratio,
                "met": row.met,
            }
        )
    return {
        "rounds": run.rounds,
        "quick": run.quick,
        "seconds": round(run.seconds, 1),
        "command": run.command,
        "machine": run.machine,
        "placement": run.placement,
        "commands": run.commands,
        "figures": figures,
        "details": run.details,
    }
