"""`python -m bench` (`make bench`): every case, several rounds, one table, JSON and a chart.

Starts the sandbox (pinned to core 0), then runs round after round of the cases
in order, so the figures a ratio compares are measured side by side, minutes
apart, against the same sandbox. Prints the table of medians and ratios and
writes `latest.json` and `latest.png` (to bench/results/, or bench/results/quick/
with --quick, so a smoke run never replaces the committed figures).

    .venv/bin/python -m bench                      # the full run, 3 rounds (~9 min)
    .venv/bin/python -m bench --quick              # small counts, 1 round (< 60 s)
    .venv/bin/python -m bench --cases ceiling,delivery --rounds 5
    .venv/bin/python -m bench --cases ceiling,scale --out /tmp/scale  # 1 and 2 workers on Redis
    .venv/bin/python -m bench --profile            # py-spy profiles of every gateway
    .venv/bin/python -m bench --cases latency --latency-ms 30  # filling the window at 30 ms
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from rich.console import Console

from bench import (
    ceiling,
    delivery,
    end_to_end,
    latency,
    latency_peers,
    memory,
    peer,
    scale,
    schedule,
    tokens,
)
from bench.case import FULL, QUICK, Bench, Case
from bench.chart import draw
from bench.procs import COMMANDS, Sandbox, placement
from bench.results import Run, machine, markdown, print_table, summarise, to_json

CASES: tuple[Case, ...] = (
    ceiling.CASE,
    peer.CASE,
    delivery.CASE,
    scale.CASE,
    end_to_end.CASE,
    tokens.CASE,
    memory.CASE,
    schedule.CASE,
    latency.CASE,
    latency.AUTO_CASE,
    latency_peers.CASE,
)
RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

# Wide enough for the table when the output is a file or a pipe.
console = Console(width=None if sys.stdout.isatty() else 160)


async def _redis_answers(url: str) -> str | None:
    """None when the Redis engine can run here, else why not."""
    if importlib.util.find_spec("wxgate.backends.redis") is None:
        return "wxgate/backends/redis.py is not there"
    import redis.asyncio as redis

    client = redis.from_url(url)
    try:
        await client.ping()
    except (OSError, redis.RedisError) as exc:
        return f"no Redis at {url}: {exc}"
    finally:
        await client.aclose()
    return None


def _selected(names: str | None) -> list[Case]:
    if names is None:
        return list(CASES)
    wanted = [name.strip() for name in names.split(",") if name.strip()]
    known = {case.name: case for case in CASES}
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise SystemExit(f"unknown case(s) {unknown}; known: {', '.join(known)}")
    return [case for case in CASES if case.name in wanted]


async def _engines(args: argparse.Namespace) -> tuple[str, ...]:
    if args.engines is not None:
        return tuple(args.engines.split(","))
    why_not = await _redis_answers(args.redis_url)
    if why_not is None:
        return ("sqlite", "redis")
    console.print(f"[yellow]Redis rows skipped: {why_not}[/yellow]")
    return ("sqlite",)


async def _rounds(bench: Bench, cases: list[Case], rounds: int) -> dict[str, list[float]]:
    values: dict[str, list[float]] = defaultdict(list)
    for number in range(1, rounds + 1):
        for case in cases:
            bench.case = case.name
            started = time.monotonic()
            figures = await case.measure(bench)
            shown = ", ".join(f"{key} {value:,.4g}" for key, value in figures.items())
            took = time.monotonic() - started
            console.print(f"round {number}/{rounds} {case.name} ({took:.0f} s): {shown}")
            for key, value in figures.items():
                values[key].append(value)
    return values


async def run(args: argparse.Namespace) -> Run:
    cases = _selected(args.cases)
    sizes = QUICK if args.quick else FULL
    rounds = args.rounds or (1 if args.quick else 3)
    engines = await _engines(args)
    started, host = time.monotonic(), machine()
    workdir = Path(tempfile.mkdtemp(prefix="wxgate-bench-"))
    sandbox = await Sandbox.start(workdir)
    profile_dir = args.out / "profiles" if args.profile else None
    bench = Bench(workdir, sandbox, sizes, engines, args.redis_url, profile_dir, args.latency_ms)
    try:
        values = await _rounds(bench, cases, rounds)
    finally:
        await sandbox.stop()
        if args.keep:
            console.print(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    specs = [spec for case in cases for spec in case.specs]
    return Run(
        rows=summarise(specs, values),
        rounds=rounds,
        quick=args.quick,
        command=[Path(sys.executable).name, "-m", "bench", *sys.argv[1:]],
        machine={**host, "load_average_at_end": os.getloadavg()},
        placement=placement(),
        commands=dict(COMMANDS),
        details=bench.notes,
        seconds=time.monotonic() - started,
    )


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, help="rounds per case (default 3; 1 with --quick)")
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    parser.add_argument("--cases", help=f"comma-separated subset of {[c.name for c in CASES]}")
    parser.add_argument("--engines", help="comma-separated storage engines (default: all here)")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    parser.add_argument("--out", type=Path, help="results directory")
    parser.add_argument(
        "--latency-ms", type=float, default=30.0, help="the latency case's answer delay"
    )
    parser.add_argument("--profile", action="store_true", help="py-spy every gateway process")
    parser.add_argument("--markdown", action="store_true", help="also print the Markdown table")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    if args.out is None:
        args.out = RESULTS / "quick" if args.quick else RESULTS
    return args


def main() -> None:
    import uvloop

    from wxgate.observability import configure_logging

    args = _arguments()
    configure_logging("WARNING", "console")
    outcome = uvloop.run(run(args))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.json").write_text(json.dumps(to_json(outcome), indent=2) + "\n")
    with contextlib.suppress(ImportError):  # matplotlib is in the bench extra
        draw(outcome, args.out / "latest.png")
    print_table(outcome, console)
    if args.markdown:
        print(markdown(outcome))
    console.print(f"written: {args.out / 'latest.json'}, {args.out / 'latest.png'}")


if __name__ == "__main__":
    main()
