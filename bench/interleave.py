"""Two worker trees side by side: the latency case's runs, alternating, on one sandbox.

`python -m bench.interleave --base OTHER/.venv/bin/wxgate ROUNDS SPEC...` runs each SPEC
once per round with this tree's gateway and once with OTHER's (the order swapped every
round), so both meet the same machine state, then prints the medians. A SPEC is
`auto:ENGINE:MS` (the auto case's share of the limit at MS ms), `lat:ENGINE:C` (the
latency case's msgs/s at concurrency C, at `--latency-ms`, and the gateway's CPU
per message) or `raw:C` (its raw client).
The values go to `--out` as JSON as they come.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import tempfile
from pathlib import Path

from bench import latency, procs
from bench.__main__ import DEFAULT_REDIS_URL
from bench.case import FULL, Bench


async def _one(bench: Bench, spec: str) -> float:
    kind, *args = spec.split(":")
    if kind == "auto":
        return await latency._auto(bench, args[0], float(args[1]))
    if kind == "lat":
        return await latency._wxgate(bench, args[0], int(args[1]))
    if kind == "raw":
        return await latency._raw(bench, int(args[0]))
    raise SystemExit(f"unknown spec {spec!r}")


async def run(args: argparse.Namespace) -> dict[str, dict[str, list[float]]]:
    trees = {"this": procs.wxgate_command(), "base": [args.base]}
    workdir = Path(tempfile.mkdtemp(prefix="wxgate-interleave-"))
    sandbox = await procs.Sandbox.start(workdir)
    bench = Bench(workdir, sandbox, FULL, ("sqlite", "redis"), args.redis_url)
    bench.latency_ms = args.latency_ms
    values: dict[str, dict[str, list[float]]] = {}
    try:
        for n in range(args.rounds):
            order = ("this", "base") if n % 2 == 0 else ("base", "this")
            for spec in args.specs:
                for side in ("raw",) if spec.startswith("raw:") else order:
                    if side != "raw":
                        command = trees[side]
                        procs.wxgate_command = lambda command=command: command
                    value = await _one(bench, spec)
                    values.setdefault(spec, {}).setdefault(side, []).append(value)
                    note = bench.notes["latency"][-1]
                    cpu = note.get("gateway_cpu_ms_per_message")
                    if cpu is not None:
                        values.setdefault(f"{spec}.cpu_ms", {}).setdefault(side, []).append(cpu)
                    extra = "" if cpu is None else f", {cpu:.3f} CPU-ms/msg"
                    load = os.getloadavg()[0]
                    line = f"round {n + 1} {spec} {side}: {value:.3f}{extra} (load {load:.1f})"
                    print(line, flush=True)
                    args.out.write_text(json.dumps(values, indent=1))
    finally:
        await sandbox.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the other tree's wxgate script")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    parser.add_argument("--latency-ms", type=float, default=30.0)
    parser.add_argument("--out", type=Path, default=Path("interleave.json"))
    parser.add_argument("rounds", type=int)
    parser.add_argument("specs", nargs="+")
    args = parser.parse_args()
    values = asyncio.run(run(args))
    for spec, sides in values.items():
        medians = {side: round(statistics.median(v), 3) for side, v in sides.items()}
        print(spec, medians, {side: [round(x, 3) for x in v] for side, v in sides.items()})


if __name__ == "__main__":
    main()
