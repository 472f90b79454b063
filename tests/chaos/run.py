"""`python -m tests.chaos.run [--full]`: the chaos campaign from the command line.

Without `--full` it runs the shortened plan `make test` runs (1,000 messages, 2 kills);
with it, `make chaos`'s (10,000 messages, 5 kills), on SQLite, Redis and a
three-primary Redis Cluster unless `--engine` names one, then the scenarios of
tests/chaos/scenarios.py (a half-open probe meeting rotated tokens, on each engine; a
full disk on a small volume, on SQLite), then the API
fuzzing of tests/security/test_fuzz_gateway.py with a few thousand generated requests.
Prints the figures of each run and every problem found; exits 1 if any.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import orjson
from rich.console import Console
from rich.table import Table

from tests.chaos.campaign import Plan, full_plan, run_campaign, short_plan
from tests.chaos.checks import Figures
from tests.chaos.scenarios import ScenarioResult, run_scenarios

ENGINES = ("sqlite", "redis", "redis-cluster")
# Per fuzzing test, instead of `make test`'s 120 s: 200 examples of each operation in
# one mode took over 120 s in a niced run on 2 busy cores, and pytest-timeout failed it.
FUZZ_TIMEOUT_S = 1800
console = Console()


def redis_missing(engine: str = "redis") -> str | None:
    """Why the Redis engine (or, for "redis-cluster", a Redis Cluster) cannot run here,
    or None."""
    if importlib.util.find_spec("wxgate.backends.redis") is None:
        return "wxgate.backends.redis is not available"
    if shutil.which("redis-server") is None:
        return "redis-server is not installed"
    if engine == "redis-cluster" and shutil.which("redis-cli") is None:
        return "redis-cli is not installed"
    return None


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.run", description=__doc__)
    parser.add_argument("--full", action="store_true", help="10,000 messages, 5 kills")
    parser.add_argument("--engine", choices=ENGINES, action="append", help="default: all three")
    parser.add_argument("--messages", type=int, help="override the plan's message count")
    parser.add_argument("--kills", type=int, help="override the plan's worker kills")
    parser.add_argument("--workers", type=int, help="override the worker process count")
    parser.add_argument("--seed", type=int, help="seed for the chaos moments and recipients")
    parser.add_argument("--keep", type=Path, help="keep configs, databases and logs here")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    parser.add_argument(
        "--fuzz", type=int, help="schemathesis examples per operation and mode (--full: 200)"
    )
    parser.add_argument(
        "--scenarios",
        action=argparse.BooleanOptionalAction,
        help="run tests/chaos/scenarios.py too (default: with --full)",
    )
    return parser.parse_args(argv)


def _plan(args: argparse.Namespace, engine: str) -> Plan:
    plan = full_plan(engine) if args.full else short_plan(engine)  # type: ignore[arg-type]
    changes = {
        name: getattr(args, name)
        for name in ("messages", "kills", "seed")
        if getattr(args, name) is not None
    }
    if args.workers is not None:
        changes["stack"] = replace(plan.stack, workers=args.workers)
    return replace(plan, **changes)


def figures_table(figures: Figures) -> Table:
    table = Table(title=f"chaos run: {figures.engine}", show_header=False)
    statuses = ", ".join(f"{k} {v}" for k, v in sorted(figures.statuses.items()))
    rows = [
        ("messages posted / accepted", f"{figures.messages} / {figures.accepted}"),
        ("per status", statuses),
        ("lost / not terminal", f"{figures.lost} / {figures.not_terminal}"),
        ("unexpected outcomes", str(figures.unexpected_outcome)),
        ("stored but never answered", str(figures.stored_never_answered)),
        ("inbox / client_msg_id twice", f"{figures.inbox} / {figures.inbox_duplicates}"),
        ("duplicates absorbed by WeChat", str(figures.duplicates_absorbed)),
        ("sent but not in inbox / msgid differs",
         f"{figures.sent_missing_from_inbox} / {figures.msgid_mismatches}"),
        ("dead or failed without a reason", str(figures.dead_or_failed_without_reason)),
        ("reports lost (API down) / acknowledged, not applied",
         f"{figures.reports_lost} / {figures.reports_acknowledged_not_applied}"),
        ("token fetches (expected at most)",
         f"{figures.token_fetches} ({figures.token_fetches_expected})"),
        ("busiest second of sends (rate limit)",
         f"{figures.busiest_second} ({figures.rate_limit_per_s:g}/s)"),
        ("worker kills / API kills / token storms / redis restarts",
         f"{figures.kills} / {figures.api_kills} / {figures.storms} / {figures.redis_restarts}"),
        ("faults injected", ", ".join(f"{k} {v}" for k, v in figures.faults_injected.items())),
        ("callbacks", ", ".join(f"{k} {v}" for k, v in figures.callbacks.items())),
        ("intake requests / retries / 5xx",
         f"{figures.intake_requests} / {figures.intake_retries} / {figures.answers_5xx or 0}"),
        ("secret or token leaks (bytes scanned)", f"{figures.leaks} ({figures.bytes_scanned})"),
        ("intake / whole run", f"{figures.intake_s:.1f} s / {figures.elapsed_s:.1f} s"),
    ]  # fmt: skip
    for name, value in rows:
        table.add_row(name, value)
    return table


async def _run_all(args: argparse.Namespace) -> list[Figures]:
    results = []
    for engine in args.engine or ENGINES:
        if engine != "sqlite" and (why := redis_missing(engine)) is not None:
            console.print(f"[yellow]{engine} engine skipped: {why}[/yellow]")
            continue
        plan = _plan(args, engine)
        console.print(f"[bold]{engine}[/bold]: seed {plan.seed}, {plan.messages} messages")
        keep = args.keep / engine if args.keep else None
        figures = await run_campaign(plan, keep)
        console.print(figures_table(figures))
        for event in figures.events:
            console.print(f"  {event}")
        for problem in figures.problems:
            console.print(f"[red]PROBLEM[/red] {problem}")
        results.append(figures)
    return results


def print_scenario(result: ScenarioResult) -> None:
    title = f"[bold]scenario[/bold]: {result.name} ({result.engine})"
    if result.skipped is not None:
        console.print(f"{title}: [yellow]skipped[/yellow]: {result.skipped}")
        return
    figures = ", ".join(f"{k} {v}" for k, v in result.figures.items())
    console.print(f"{title} in {result.elapsed_s:.1f} s: {figures}", highlight=False)
    for problem in result.problems:
        console.print(f"[red]PROBLEM[/red] {problem}")


async def _scenarios(args: argparse.Namespace) -> list[ScenarioResult]:
    engines = tuple(
        e for e in (args.engine or ENGINES) if e == "sqlite" or redis_missing(e) is None
    )
    keep = args.keep / "scenarios" if args.keep else None
    results = await run_scenarios(engines, keep)  # type: ignore[arg-type]
    for result in results:
        print_scenario(result)
    return results


def fuzz(examples: int) -> bool:
    """Run the API fuzzing module with `examples` per operation and mode; True if it held."""
    console.print(f"[bold]API fuzzing[/bold]: {examples} examples per operation and mode")
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "fuzz.txt"
        env = {
            **os.environ,
            "WXGATE_FUZZ_EXAMPLES": str(examples),
            "WXGATE_FUZZ_REPORT": str(report),
        }
        module = "tests/security/test_fuzz_gateway.py"
        command = [
            *(sys.executable, "-m", "pytest", module, "-q", "-p", "no:cacheprovider"),
            *("--timeout", str(FUZZ_TIMEOUT_S)),
        ]
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        lines = report.read_text().splitlines() if report.exists() else []
    for line in lines:
        mode, requests, statuses = line.split(" ", 2)
        console.print(f"  {mode}: {requests} requests, answers by status {statuses}")
    output = [line for line in done.stdout.splitlines() if not line.startswith("{")]
    for line in output[-1:] if done.returncode == 0 else output[-40:]:
        console.print(f"  {line}", markup=False)
    return done.returncode == 0


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    started = time.monotonic()
    results = asyncio.run(_run_all(args))
    with_scenarios = args.full if args.scenarios is None else args.scenarios
    scenarios = asyncio.run(_scenarios(args)) if with_scenarios else []
    examples = args.fuzz if args.fuzz is not None else (200 if args.full else 0)
    fuzz_held = fuzz(examples) if examples else True
    elapsed = time.monotonic() - started
    if args.json is not None:
        args.json.write_bytes(
            orjson.dumps(
                [asdict(f) for f in results] + [asdict(s) for s in scenarios],
                option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS,
            )
        )
    failed = [f.engine for f in results if f.problems] + ([] if fuzz_held else ["fuzzing"])
    failed += [f"{s.name} ({s.engine})" for s in scenarios if s.problems]
    verdict = "[red]FAILED[/red] " + ", ".join(failed) if failed else "[green]all held[/green]"
    console.print(f"chaos campaign: {verdict} in {elapsed:.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
